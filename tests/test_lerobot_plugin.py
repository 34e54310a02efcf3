"""Both ways with the real LeRobot 0.4.4 (its own virtualenv, default dependencies, built once and cached by
tests/lerobot_venv.py): folders LeRobot writes are read by shallowpi, and shallowpi students run inside
LeRobot through the `lerobot_policy_shallowpi` plugin (lerobot-eval, lerobot-train, its policy API).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lerobot_helpers import SCRIPTS, save_tiny_student, venv_run
from paths import find_reference
from reference_bundle import load_bundle
from shallowpi.data.tokenizer import TESTBED_TOKENIZER
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.lerobot_export import export_lerobot
from shallowpi.model import load_model
from shallowpi.pretrained import load_processor


def _bin(python: Path, name: str) -> Path:
    return python.parent / name


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_folder_written_by_lerobot_is_read_by_shallowpi(variant, tmp_path, lerobot_python):
    """LeRobot's config save_pretrained + its own make_pi0(5)_pre_post_processors pipelines' save_pretrained
    (tokenizer step over a local tokenizer; it still names google/paligemma-3b-pt-224). shallowpi gives the
    same prompt tokens, normalised state and unnormalised actions as LeRobot's pipelines."""
    d, io_path = tmp_path / variant, tmp_path / "io.safetensors"
    venv_run(
        lerobot_python, [SCRIPTS / "write_pi_folder.py", variant, d, TESTBED_TOKENIZER, io_path], timeout=600
    )
    assert not (d / "tokenizer.model").exists() and not (d / "shallowpi_processor.json").exists()
    # tiny sizes LeRobot's config cannot state + weights from LeRobot 0.4.4's own PI0(5)Policy state_dict
    bundle = load_bundle(find_reference(), f"{variant}_tiny")
    raw = json.loads((d / "config.json").read_text())
    raw["shallowpi"] = bundle.config_json["shallowpi"]
    (d / "config.json").write_text(json.dumps(raw))
    shutil.copyfile(find_reference() / f"{variant}_tiny" / "weights.safetensors", d / "model.safetensors")

    io = load_file(str(io_path))
    pre, post = load_processor(d, tokenizer=TESTBED_TOKENIZER)
    assert pre.config.pad_state_in_prompt == (variant == "pi05")  # LeRobot 0.4.4 bins the padded state
    sample = {
        "images": {"observation.images.image": io["image"], "observation.images.wrist_image": io["wrist"]},
        "state": io["state_raw"],
        "task": "pick_up the red cube",
    }
    ex = pre(sample)
    assert torch.equal(ex["tokens"], io["tokens"][0])
    assert torch.equal(ex["token_masks"], io["token_mask"][0])
    torch.testing.assert_close(ex["state"][:8], io["state_norm"][0].reshape(-1)[:8], atol=1e-6, rtol=0)
    padded = torch.nn.functional.pad(io["action_norm"], (0, 32 - 7))
    torch.testing.assert_close(post(padded), io["action"], atol=1e-5, rtol=1e-6)
    assert ex["image_masks"].tolist() == [True, True, False]  # right wrist: nothing renamed onto it

    chunk = ActionPredictor(load_model(d), pre, post).predict(sample, seed=0)
    assert chunk.shape == (10, 7) and np.isfinite(chunk).all()


def test_lerobot_policy_matches_shallowpi(tmp_path, lerobot_python):
    """One fixed observation and noise: the chunk from LeRobot's loaded policy (factory, processors,
    predict_action_chunk) equals shallowpi's within 1e-5; select_action's first action is its first row."""
    student = save_tiny_student(tmp_path / "student")
    folder = export_lerobot(student, tmp_path / "lerobot")
    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 480, 480, generator=g)  # what LeRobot's Meta-World env gives: corner2 480 x 480
    state = torch.tensor([0.05, 0.6, 0.2, 0.4])
    task = "Reach the goal position"
    ours = ActionPredictor.from_pretrained(student, device="cpu")
    seed = 11
    noise = ours.noise(seed)
    expected = ours.predict(
        {"images": {"observation.image": image}, "state": state.numpy(), "task": task}, seed=seed
    )
    io_in, io_out = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors"
    save_file({"image": image, "state": state, "noise": noise.contiguous()}, str(io_in))
    (tmp_path / "task.txt").write_text(task)
    out = venv_run(lerobot_python, [SCRIPTS / "policy_chunk.py", folder, io_in, io_out], timeout=600)
    assert "ShallowPiPolicy" in out.stdout
    got = load_file(str(io_out))
    assert got["chunk"].shape == (1, 10, 4)
    np.testing.assert_allclose(got["chunk"][0].numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["first_action"][0].numpy(), expected[0], atol=1e-5, rtol=0)


def test_lerobot_eval_metaworld(tmp_path, lerobot_python):
    """`lerobot-eval --policy.path=<student> --env.type=metaworld` runs to the end (2 episodes of 500 steps;
    renders made cheap by the venv's fast-render hook) and writes its eval_info.json."""
    student = save_tiny_student(tmp_path / "student")
    folder = export_lerobot(student, tmp_path / "lerobot")
    out_dir = tmp_path / "eval"
    venv_run(
        _bin(lerobot_python, "lerobot-eval"),
        [
            f"--policy.path={folder}",
            "--env.type=metaworld",
            "--env.task=reach-v3",
            "--eval.n_episodes=2",
            "--eval.batch_size=1",
            "--policy.device=cpu",
            f"--output_dir={out_dir}",
        ],
        timeout=1800,
        env={"SHALLOWPI_FAST_RENDER": "1"},
    )
    info = json.loads((out_dir / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2
    assert 0.0 <= info["overall"]["pc_success"] <= 100.0


def test_lerobot_train_checkpoint_loads_in_shallowpi(tmp_path, lerobot_python):
    """`lerobot-train --policy.type=shallowpi` on a LeRobotDataset written by LeRobot completes a few steps;
    shallowpi loads the checkpoint it saved (weights, processor, tokenizer) and samples from it."""
    root = tmp_path / "data"
    venv_run(lerobot_python, [SCRIPTS / "make_dataset.py", root], timeout=600)
    out_dir = tmp_path / "train"
    venv_run(
        _bin(lerobot_python, "lerobot-train"),
        [
            "--dataset.repo_id=local/shallowpi_tiny",
            f"--dataset.root={root}",
            "--policy.type=shallowpi",
            "--policy.preset=tiny",
            "--policy.depth=2",
            "--policy.device=cpu",
            "--policy.push_to_hub=false",
            f"--output_dir={out_dir}",
            "--steps=3",
            "--batch_size=2",
            "--num_workers=0",
            "--save_freq=3",
            "--log_freq=1",
            "--eval_freq=0",
            "--wandb.enable=false",
        ],
        timeout=1200,
    )
    ckpt = out_dir / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file()
    model = load_model(ckpt)
    assert model.config.depth == 2 and model.config.cameras == ("observation.image",)
    pre, post = load_processor(ckpt)
    assert pre.state_dim == 4 and post.action_dim == 4
    stats = json.loads((root / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(pre.state_stats["q01"].numpy(), stats["observation.state"]["q01"], rtol=1e-6)
    sample = {
        "images": {"observation.image": np.zeros((56, 56, 3), np.uint8)},
        "state": np.zeros(4, np.float32),
        "task": "reach the goal",
    }
    chunk = ActionPredictor(model, pre, post).predict(sample, seed=0)
    assert chunk.shape == (10, 4) and np.isfinite(chunk).all()
