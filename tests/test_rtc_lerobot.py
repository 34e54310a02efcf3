"""Real-time chunking against LeRobot 0.6.1's own (its RTCProcessor in PI0Policy / PI05Policy): the same tiny
weights, observation, noise, left-over and delay give the same guided chunk, for every prefix schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from lerobot_helpers import SCRIPTS
from paths import find_reference
from reference_bundle import load_bundle
from shallowpi.data.tokenizer import TESTBED_TOKENIZER
from shallowpi.infer.predictor import ActionPredictor, RTCRequest
from shallowpi.model import load_model
from shallowpi.model.rtc import SCHEDULES, RTCConfig
from shallowpi.pretrained import load_processor
from test_lerobot_plugin import NOISE_SEED, _with_sizes

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
    sample = {
        "images": {
            "observation.images.image": io["image"],
            "observation.images.wrist_image": io["wrist_image"],
        },
        "state": io["state_raw"],
        "task": "pick_up the red cube",
    }
    plain = predictor.predict(sample, seed=NOISE_SEED)
    np.testing.assert_allclose(plain, io["chunk"][0].numpy(), atol=1e-5, rtol=0)
    prev = post(io["rtc_prev"]).numpy()  # LeRobot's left-over is normalised; a client sends robot units
    for schedule in SCHEDULES:
        cfg = RTCConfig(prefix_attention_schedule=schedule, execution_horizon=6)
        guided = predictor.predict(sample, seed=NOISE_SEED, rtc=RTCRequest(prev, 2, cfg))
        expected = io[f"chunk_rtc_{schedule}"][0].numpy()
        assert np.abs(expected - plain).max() > 1e-2, schedule  # LeRobot's guidance did change the chunk
        np.testing.assert_allclose(guided, expected, atol=ATOL, rtol=0, err_msg=schedule)
