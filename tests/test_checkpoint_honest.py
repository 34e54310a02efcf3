"""Checkpoints that lie are refused: load casts to the asked dtype, `inspect` validates exactly as
`load_model` does (exit 2, one line), a config depth that disagrees with the weights says so, a truncated
file is one line; the postprocessor's statistics are read and must agree with the preprocessor's; saving
over a folder replaces config and weights as a pair."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from shallowpi.errors import UserError
from shallowpi.model import CheckpointError, PiModel, load_model, save_model
from shallowpi.model import checkpoint as ckpt
from shallowpi.model.config import tiny
from shallowpi.pretrained import load_processor
from shallowpi.serve.policy import PiPolicy
from shallowpi.testing import save_tiny_policy


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    return save_model(PiModel(tiny("pi05", depth=2)), tmp_path / "m")


def _rewrite(path, edit):
    f = path / "model.safetensors"
    sd = load_file(str(f))
    edit(sd)
    save_file(sd, str(f), metadata={"format": "pt"})


def _inspect(path):
    return subprocess.run(
        [sys.executable, "-m", "shallowpi", "inspect", "--policy", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bf16_checkpoint_loads_as_float32_when_asked(tmp_path):
    torch.manual_seed(0)
    model = PiModel(tiny("pi05", depth=2)).to_bfloat16()
    save_model(model, tmp_path / "bf16")
    loaded = load_model(tmp_path / "bf16", dtype="float32")
    assert loaded.config.dtype == "float32"
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}, "config says float32, weights must be"
    again = load_model(tmp_path / "bf16")  # config.json's dtype: LeRobot's bf16 policy
    assert again.compute_dtype == torch.bfloat16 and again.config.dtype == "bfloat16"


def test_fp16_tensors_are_cast_and_the_model_runs(saved, tmp_path):
    _rewrite(saved, lambda sd: sd.update({k: v.half() for k, v in sd.items()}))
    model = load_model(saved)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    from distill_helpers import synthetic_batch

    b = synthetic_batch(model, batch=1)
    out = model.sample_actions(b.observation, num_steps=1)
    assert torch.isfinite(out).all()


def test_integer_tensor_refused(saved):
    _rewrite(saved, lambda sd: sd.update({"model.action_in_proj.bias": torch.zeros(32, dtype=torch.int64)}))
    with pytest.raises(CheckpointError, match="action_in_proj.bias has dtype I64"):
        load_model(saved)


def test_depth_that_disagrees_with_the_weights_says_so(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["shallowpi"]["vlm"]["depth"] = 7
    cfg["shallowpi"]["expert"]["depth"] = 7
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError,
        match="config depth disagrees with the weights.*backbone depth 7 but the weights hold 2 layers",
    ):
        load_model(saved)
    out = _inspect(saved)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "the config depth disagrees with the weights" in out.stderr and "depth 7" not in out.stdout
    assert len(out.stderr.strip().splitlines()) == 1


def _drop_key(path):
    _rewrite(path, lambda sd: sd.pop("model.action_in_proj.bias"))


def _no_weights(path):
    (path / "model.safetensors").unlink()


def _truncate(path):
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _nan(path):
    _rewrite(path, lambda sd: sd["model.action_out_proj.weight"].fill_(float("nan")))


def _empty(path):
    save_file({}, str(path / "model.safetensors"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_drop_key, "missing keys"),
        (_no_weights, "no model.safetensors"),
        (_truncate, "cannot read"),
        (_nan, "non-finite"),
        (_empty, "holds no tensors"),
    ],
)
def test_inspect_validates_like_load_model(saved, damage, message):
    damage(saved)
    with pytest.raises(UserError, match=message):
        load_model(saved)
    out = _inspect(saved)
    assert out.returncode == 2, out.stdout
    assert "Traceback" not in out.stderr and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stdout == ""


def test_inspect_still_describes_a_good_checkpoint(saved):
    out = _inspect(saved)
    assert out.returncode == 0 and "depth 2 (backbone)" in out.stdout


def test_postprocessor_statistics_must_agree(tmp_path):
    path = save_tiny_policy(tmp_path / "tiny")
    post_file = path / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    stats = load_file(str(post_file))
    stats["action.q99"] = stats["action.q99"] * 2
    save_file(stats, str(post_file))
    with pytest.raises(UserError, match=r"postprocessor's statistic action\.q99 .* differs"):
        load_processor(path)
    post_file.unlink()
    with pytest.raises(FileNotFoundError, match="unnormalizer statistics file"):
        load_processor(path)


def test_unnormaliser_uses_the_postprocessor_file(tmp_path):
    path = save_tiny_policy(tmp_path / "tiny")
    _, post = load_processor(path)
    on_disk = load_file(str(path / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    for name, v in post.action_stats.items():
        np.testing.assert_array_equal(v.numpy(), on_disk[f"action.{name}"].numpy())


@pytest.mark.parametrize("crash_at", [1, 2, 3])
@pytest.mark.parametrize("exchange", [True, False])
def test_save_over_a_folder_replaces_the_pair_at_once(tmp_path, monkeypatch, crash_at, exchange):
    """A crash at any rename while saving a depth-3 model over a depth-2 one leaves one whole model."""
    path = tmp_path / "m"
    torch.manual_seed(0)
    old = PiModel(tiny("pi05", depth=2))
    save_model(old, path)
    (path / "notes.txt").write_text("kept")
    if not exchange:
        monkeypatch.setattr(ckpt, "_exchange", lambda a, b: False)
    calls = {"n": 0}
    real_replace, real_rename = os.replace, os.rename

    def crashing(fn):
        def wrapped(*a, **kw):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("simulated crash")
            return fn(*a, **kw)

        return wrapped

    monkeypatch.setattr(os, "replace", crashing(real_replace))
    monkeypatch.setattr(os, "rename", crashing(real_rename))
    with contextlib.suppress(KeyboardInterrupt):
        save_model(PiModel(tiny("pi05", depth=3)), path)
    monkeypatch.undo()
    if not (path / "config.json").exists():
        assert not exchange, "with an exchange the folder never disappears"
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".m.old-")]
        assert leftovers, "the old model must survive beside the folder"
        return
    model = load_model(path)  # a mixed pair would fail strict loading (depth 2 weights, depth 3 config)
    assert model.config.depth in (2, 3)
    assert (path / "notes.txt").read_text() == "kept"


def test_save_over_a_folder_keeps_other_files(tmp_path):
    path = save_tiny_policy(tmp_path / "tiny")
    torch.manual_seed(1)
    cfg = tiny("pi05")
    cfg.tokenizer_max_length = 64
    save_model(PiModel(cfg), path)
    PiPolicy.from_pretrained(path, device="cpu")  # processor files survived the swap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"], "staging folders were left behind"
