"""Pretrained folders in LeRobot's own layout (no shallowpi_processor.json, no tokenizer file) work in every
command; the LeRobot 0.5+ layout (new config fields, a relative-actions step before the normaliser) is read or
refused by name; `shallowpi to-lerobot` writes a folder shallowpi reads back to the same actions.

The 0.4.4 folders written by LeRobot itself are checked in test_lerobot_plugin.py (they need LeRobot's venv);
here the 0.5+ one is made by hand from LeRobot 0.6.1's source (configuration_pi05.py, processor_pi05.py,
relative_action_processor.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lerobot_helpers import PLUGIN_PIPELINES, pipeline_steps, save_tiny_student, vec_stats
from shallowpi.data.lerobot_processor import ProcessorFormatError
from shallowpi.data.tokenizer import TESTBED_TOKENIZER, Tokenizer
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.lerobot_export import export_lerobot
from shallowpi.model import PiModel, load_model, save_model
from shallowpi.model.config import tiny
from shallowpi.pretrained import load_processor

SLOTS = ("observation.images.base_0_rgb", "observation.images.left_wrist_0_rgb")


def _flat(stats: dict) -> dict[str, torch.Tensor]:
    return {f"{f}.{n}": torch.tensor(v, dtype=torch.float32) for f, d in stats.items() for n, v in d.items()}


def write_lerobot05_folder(d: Path, *, relative: bool = False, extra_config: dict | None = None) -> Path:
    """What LeRobot 0.6.1 saves for a fine-tuned π0.5 (tiny sizes in the "shallowpi" object)."""
    torch.manual_seed(0)
    cfg = tiny("pi05", depth=2)
    cfg.cameras = SLOTS
    cfg.tokenizer_max_length = 64
    save_model(PiModel(cfg).eval(), d)
    raw = json.loads((d / "config.json").read_text())
    raw["input_features"] = {s: {"type": "VISUAL", "shape": [3, 56, 56]} for s in SLOTS} | {
        "observation.state": {"type": "STATE", "shape": [6]}
    }
    raw["output_features"] = {"action": {"type": "ACTION", "shape": [6]}}
    raw.update(
        use_relative_actions=relative,
        relative_exclude_joints=["gripper"],
        action_feature_names=[f"joint_{i}" for i in range(5)] + ["gripper"],
        pretrained_revision=None,
        **(extra_config or {}),
    )
    (d / "config.json").write_text(json.dumps(raw, indent=2))
    stats = {"observation.state": vec_stats(6), "action": vec_stats(6, scale=-1.0)}
    feats = raw["input_features"] | raw["output_features"]
    norm_cfg = {"eps": 1e-08, "features": feats, "norm_map": raw["normalization_mapping"]}
    rel = {"enabled": relative, "exclude_joints": ["gripper"], "action_names": raw["action_feature_names"]}
    pre = {
        "name": "policy_preprocessor",
        "steps": [
            {
                "registry_name": "rename_observations_processor",
                "config": {
                    "rename_map": {"observation.images.front": SLOTS[0], "observation.images.wrist": SLOTS[1]}
                },
            },
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "relative_actions_processor", "config": rel},
            {
                "registry_name": "normalizer_processor",
                "config": norm_cfg,
                "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors",
            },
            {"registry_name": "pi05_prepare_state_tokenizer_processor_step", "config": {}},
            {
                "registry_name": "tokenizer_processor",
                "config": {
                    "max_length": 64,
                    "task_key": "task",
                    "padding_side": "right",
                    "padding": "max_length",
                    "truncation": True,
                    "tokenizer_name": "google/paligemma-3b-pt-224",
                },
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {
                    "eps": 1e-08,
                    "features": raw["output_features"],
                    "norm_map": raw["normalization_mapping"],
                },
                "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
            },
            {"registry_name": "absolute_actions_processor", "config": {"enabled": relative}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    (d / "policy_preprocessor.json").write_text(json.dumps(pre, indent=2))
    (d / "policy_postprocessor.json").write_text(json.dumps(post, indent=2))
    save_file(_flat(stats), str(d / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    save_file(
        _flat({"action": stats["action"]}),
        str(d / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"),
    )
    return d


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """A local Hugging Face cache holding a 'PaliGemma' tokenizer (the shipped test-bed SentencePiece file)."""
    home = tmp_path / "hf"
    snap = home / "hub" / "models--google--paligemma-3b-pt-224" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copyfile(TESTBED_TOKENIZER, snap / "tokenizer.model")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SHALLOWPI_TOKENIZER", raising=False)
    return snap / "tokenizer.model"


def _sample(state_dim: int = 6) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "images": {
            "observation.images.front": torch.rand(3, 56, 56, generator=g),
            "observation.images.wrist": torch.rand(3, 56, 56, generator=g),
        },
        "state": (torch.randn(state_dim, generator=g) * 0.5).numpy(),
        "task": "open the drawer",
    }


def test_lerobot05_folder_reads_with_tokenizer_from_hf_cache(tmp_path, hf_cache):
    d = write_lerobot05_folder(tmp_path / "pi05_v06")
    pre, post = load_processor(d)  # no --tokenizer: found in the Hugging Face cache
    c = pre.config
    assert Path(pre.tokenizer.path) == hf_cache
    assert c.camera_map == {"observation.images.front": SLOTS[0], "observation.images.wrist": SLOTS[1]}
    assert (c.state_norm, c.action_norm, c.tokenizer_max_length) == ("QUANTILES", "QUANTILES", 64)
    # 0.5+ bins the unpadded state: the prompt holds 6 numbers, not max_state_dim = 32
    ex = pre(_sample())
    prompt = Tokenizer(hf_cache).decode(ex["tokens"][ex["token_masks"]])
    assert len(prompt.split("State: ")[1].split(";")[0].split()) == 6
    # the postprocessor unnormalises with the unnormaliser's stats
    lo, hi = vec_stats(6, -1.0)["q01"], vec_stats(6, -1.0)["q99"]
    out = post(torch.zeros(1, 10, 32))
    np.testing.assert_allclose(out[0, 0].numpy(), (lo + hi) / 2, atol=1e-6)
    model = load_model(d)
    chunk = ActionPredictor(model, pre, post).predict(_sample(), seed=0)
    assert chunk.shape == (10, 6) and np.isfinite(chunk).all()


def test_missing_tokenizer_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SHALLOWPI_TOKENIZER", raising=False)
    d = write_lerobot05_folder(tmp_path / "f")
    with pytest.raises(FileNotFoundError) as e:
        load_processor(d)
    msg = str(e.value)
    assert "--tokenizer PATH" in msg and str(tmp_path / "empty_hf" / "hub") in msg
    assert "google/paligemma-3b-pt-224" in msg
    pre, _ = load_processor(d, tokenizer=TESTBED_TOKENIZER)  # an explicit path wins
    assert Path(pre.tokenizer.path) == TESTBED_TOKENIZER


def test_relative_actions_and_unknown_fields_refused_by_name(tmp_path, hf_cache):
    d = write_lerobot05_folder(tmp_path / "rel", relative=True)
    with pytest.raises(ValueError, match="use_relative_actions"):
        load_model(d)
    raw = json.loads((d / "config.json").read_text())
    raw["use_relative_actions"] = False
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ProcessorFormatError, match="relative_actions_processor step is enabled"):
        load_processor(d)

    d2 = write_lerobot05_folder(
        tmp_path / "mem", extra_config={"memory_length": 4, "rtc_training_max_delay": 3}
    )
    with pytest.raises(ValueError, match="memory_length=4"):
        load_model(d2)
    d3 = write_lerobot05_folder(
        tmp_path / "rtc", extra_config={"memory_length": 0, "rtc_training_max_delay": 3}
    )
    assert load_model(d3).config.depth == 2  # training-only field: accepted

    steps = json.loads((d3 / "policy_preprocessor.json").read_text())
    steps["steps"].insert(2, {"registry_name": "my_custom_step", "config": {}})
    (d3 / "policy_preprocessor.json").write_text(json.dumps(steps))
    with pytest.raises(ProcessorFormatError, match="'my_custom_step'"):
        load_processor(d3)


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "shallowpi", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_inspect_and_eval_read_a_lerobot_folder(tmp_path, monkeypatch):
    """inspect describes the processor; eval runs a LeRobot-layout folder given --tokenizer."""
    import os

    d = write_lerobot05_folder(tmp_path / "f")
    out = _cli("inspect", d)
    assert out.returncode == 0, out.stderr
    assert "processor LeRobot 0.5+" in out.stdout
    # a Meta-World-shaped LeRobot folder (state 4, action 4, corner4 camera) for `shallowpi eval`
    mw = tmp_path / "mw"
    student = save_tiny_student(tmp_path / "student", camera="observation.images.corner4")
    shutil.copytree(student, mw)
    for name in ("shallowpi_processor.json", "tokenizer.model"):
        (mw / name).unlink()  # as LeRobot would have it: its processor files only
    pre = json.loads((mw / "policy_preprocessor.json").read_text())
    tok = next(s for s in pre["steps"] if s["registry_name"] == "tokenizer_processor")["config"]
    tok.pop("tokenizer_file")
    tok["tokenizer_name"] = "google/paligemma-3b-pt-224"
    (mw / "policy_preprocessor.json").write_text(json.dumps(pre))
    env = {k: v for k, v in os.environ.items() if k != "SHALLOWPI_TOKENIZER"} | {
        "HF_HOME": str(tmp_path / "no_hf"),
        "MUJOCO_GL": "egl",
    }
    args = (
        "eval",
        "--policy",
        mw,
        "--tasks",
        "reach-v3",
        "--episodes-per-task",
        "1",
        "--max-steps",
        "3",
        "--workers",
        "1",
        "--no-progress",
        "--out",
        tmp_path / "ev",
    )
    bad = _cli(*args, env=env)
    assert bad.returncode == 2 and "--tokenizer PATH" in bad.stderr, bad.stderr
    good = _cli(*args, "--tokenizer", TESTBED_TOKENIZER, env=env)
    assert good.returncode == 0, good.stderr
    info = json.loads((tmp_path / "ev" / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 1


def test_to_lerobot_export_reads_back_to_the_same_actions(tmp_path):
    src = save_tiny_student(tmp_path / "student")
    out = export_lerobot(src, tmp_path / "lr")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["type"] == "shallowpi" and cfg["variant"] == "pi05"
    assert cfg["shallowpi"]["layer_map"] == [0, 3] and list(cfg["input_features"]) == [
        "observation.image",
        "observation.state",
    ]
    assert not (out / "shallowpi_processor.json").exists() and not (out / "tokenizer.model").exists()
    sample = {
        "images": {
            "observation.image": np.random.default_rng(0).integers(0, 255, (480, 480, 3), dtype=np.uint8)
        },
        "state": np.array([0.1, -0.2, 0.3, 0.5], dtype=np.float32),
        "task": "reach the goal",
    }
    a = ActionPredictor.from_pretrained(src, device="cpu").predict(sample, seed=3)
    b = ActionPredictor.from_pretrained(out, device="cpu").predict(sample, seed=3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError):
        export_lerobot(src, out)
    with pytest.raises(ValueError, match="camera_map targets unknown model slot"):
        export_lerobot(src, tmp_path / "bad", camera_map={"observation.image": "observation.images.nope"})
    assert not (tmp_path / "bad").exists()


def _first_plugin_layout(new: Path, old: Path) -> Path:
    """`new` as to-lerobot wrote it before the stats moved into LeRobot's normaliser steps: the plugin's own
    steps normalised, with the stats in their state files."""
    from safetensors.torch import load_file

    shutil.copytree(new, old)
    steps = json.loads((old / "policy_preprocessor.json").read_text())["steps"]
    norm, plugin = steps[2], steps[3]
    stats, tok = load_file(str(old / norm["state_file"])), load_file(str(old / plugin["state_file"]))
    proc = plugin["config"]["processor"]
    proc["state_norm"], proc["action_norm"] = (
        norm["config"]["norm_map"]["STATE"],
        norm["config"]["norm_map"]["ACTION"],
    )
    for f in old.glob("policy_*"):
        f.unlink()
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    pre_state, post_state = (
        "policy_preprocessor_step_2_shallowpi_preprocessor.safetensors",
        "policy_postprocessor_step_0_shallowpi_postprocessor.safetensors",
    )
    pre = [
        steps[0],
        steps[1],
        {"registry_name": "shallowpi_preprocessor", "config": {"processor": proc}, "state_file": pre_state},
        device,
    ]
    post = [
        {"registry_name": "shallowpi_postprocessor", "config": {"processor": proc}, "state_file": post_state}
    ]
    for name, pipeline in (("policy_preprocessor", pre), ("policy_postprocessor", [*post, device])):
        (old / f"{name}.json").write_text(json.dumps({"name": name, "steps": pipeline}))
    save_file(stats | tok, str(old / pre_state))
    save_file({k: v for k, v in stats.items() if k.startswith("action.")}, str(old / post_state))
    return old


def test_first_plugin_layout_reads_and_re_exports(tmp_path):
    """A folder of the first plugin layout (stats inside the plugin's steps, no LeRobot normaliser steps to
    take lerobot-train's overrides) reads to the same actions, and to-lerobot rewrites it in today's layout;
    a plugin step that would normalise after LeRobot's normaliser is refused by name."""
    src = save_tiny_student(tmp_path / "student")
    new = export_lerobot(src, tmp_path / "new")
    assert pipeline_steps(new) == PLUGIN_PIPELINES
    old = _first_plugin_layout(new, tmp_path / "old")
    sample = {
        "images": {
            "observation.image": np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
        },
        "state": np.array([0.4, -0.1, 0.2, 0.9], dtype=np.float32),
        "task": "reach the goal",
    }
    want = ActionPredictor.from_pretrained(new, device="cpu").predict(sample, seed=5)
    np.testing.assert_array_equal(
        ActionPredictor.from_pretrained(old, device="cpu").predict(sample, seed=5), want
    )
    again = export_lerobot(old, tmp_path / "again")
    assert pipeline_steps(again) == PLUGIN_PIPELINES
    np.testing.assert_array_equal(
        ActionPredictor.from_pretrained(again, device="cpu").predict(sample, seed=5), want
    )

    pre = json.loads((new / "policy_preprocessor.json").read_text())
    pre["steps"][3]["config"]["processor"]["state_norm"] = "QUANTILES"
    (new / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(ProcessorFormatError, match="would be normalised twice"):
        load_processor(new)


def test_to_lerobot_refuses_what_the_plugin_could_not_load(tmp_path):
    """to-lerobot runs the loader's checks first: a folder the plugin would refuse is refused here, and
    nothing is written."""
    from safetensors.torch import load_file

    from shallowpi.model.checkpoint import LM_HEAD, CheckpointError

    src = save_tiny_student(tmp_path / "student")
    weights = load_file(str(src / "model.safetensors"))
    weights["model." + LM_HEAD] = weights["model." + LM_HEAD][:-1]  # a head of another vocabulary
    save_file(weights, str(src / "model.safetensors"))
    with pytest.raises(CheckpointError, match="wrongly shaped keys"):
        export_lerobot(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
