"""Real-time chunking against LeRobot 0.6.1's own (its RTCProcessor in PI0Policy / PI05Policy): the same tiny
weights, observation, noise, left-over and delay give the same guided chunk, for every prefix schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lerobot_helpers import SCRIPTS, save_tiny_student
from paths import find_reference
from reference_bundle import load_bundle
from shallowpi.data.tokenizer import TESTBED_TOKENIZER
from shallowpi.infer.predictor import ActionPredictor, RTCRequest
from shallowpi.lerobot_export import export_lerobot
from shallowpi.model import load_model
from shallowpi.model.rtc import SCHEDULES, RTCConfig
from shallowpi.pretrained import load_processor
from test_lerobot_plugin import NOISE_SEED, _with_sizes, libero_sample

ATOL = 1e-4


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_rtc_matches_lerobot(variant, tmp_path, lerobot061):
    d, io_path = tmp_path / variant, tmp_path / "io.safetensors"
    sizes = load_bundle(find_reference(), f"{variant}_tiny").config_json["shallowpi"]
    (tmp_path / "sizes.json").write_text(json.dumps(sizes))
    args = [variant, d, TESTBED_TOKENIZER, io_path, "--sizes", tmp_path / "sizes.json", "--rtc"]
    lerobot061.run([SCRIPTS / "write_pi_folder.py", *args], timeout=900)
    _with_sizes(d, sizes)
    io = load_file(str(io_path))
    pre, post = load_processor(d, tokenizer=TESTBED_TOKENIZER)
    predictor = ActionPredictor(load_model(d), pre, post)
    sample = libero_sample(io)
    plain = predictor.predict(sample, seed=NOISE_SEED)
    np.testing.assert_allclose(plain, io["chunk"][0].numpy(), atol=1e-5, rtol=0)
    prev = post(io["rtc_prev"]).numpy()  # LeRobot's left-over is normalised; a client sends robot units
    for schedule in SCHEDULES:
        cfg = RTCConfig(prefix_attention_schedule=schedule, execution_horizon=6)
        guided = predictor.predict(sample, seed=NOISE_SEED, rtc=RTCRequest(prev, 2, cfg))
        expected = io[f"chunk_rtc_{schedule}"][0].numpy()
        assert np.abs(expected - plain).max() > 1e-2, schedule  # LeRobot's guidance did change the chunk
        np.testing.assert_allclose(guided, expected, atol=ATOL, rtol=0, err_msg=schedule)


def test_plugin_runs_rtc_in_lerobot(tmp_path, lerobot061):
    """A shallowpi student through the plugin in LeRobot 0.6.1: its RTC rollout accepts the policy, and the
    guided chunk (left-over in the normalised space LeRobot passes it in) equals shallowpi's own."""
    student = save_tiny_student(tmp_path / "student")
    folder = export_lerobot(student, tmp_path / "lerobot")
    g = torch.Generator().manual_seed(5)
    image, state = torch.rand(3, 480, 480, generator=g), torch.tensor([0.05, 0.6, 0.2, 0.4])
    prev_norm = torch.randn(7, 4, generator=g)
    ours = ActionPredictor.from_pretrained(student, device="cpu")
    sample = {
        "images": {"observation.image": image},
        "state": state.numpy(),
        "task": "Reach the goal position",
    }
    prev = ours.post(prev_norm).numpy()
    expected = ours.predict(sample, seed=11, rtc=RTCRequest(prev, 2))
    io_in, io_out = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors"
    save_file({"image": image, "state": state, "noise": ours.noise(11), "rtc_prev": prev_norm}, str(io_in))
    (tmp_path / "task.txt").write_text(sample["task"])
    lerobot061.run([SCRIPTS / "policy_chunk.py", folder, io_in, io_out], timeout=600)
    got = load_file(str(io_out))
    assert got["supports_rtc"].item()
    np.testing.assert_allclose(got["chunk_rtc"][0].numpy(), expected, atol=1e-5, rtol=0)
    assert np.abs(expected - got["chunk"][0].numpy()).max() > 1e-2  # the guidance changed the chunk
    # lerobot-rollout pads the left-over with zeros to the execution horizon, past the chunk if the horizon
    # is: those rows change nothing (the chunk has no rows there to guide)
    past, padded = got["chunk_rtc_past"][0].numpy(), got["chunk_rtc_padded"][0].numpy()
    assert np.isfinite(past).all()
    np.testing.assert_allclose(past, padded, atol=1e-6, rtol=0)
