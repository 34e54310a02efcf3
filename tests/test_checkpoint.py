"""Checkpoints: round trip, both namings, tied embedding forms, strict errors that name the keys."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from shallowpi.model import CheckpointError, PiModel, load_model, load_state_dict, save_model
from shallowpi.model.checkpoint import EMBED, EXPERT_LM_HEAD, LM_HEAD, lerobot_state_dict
from shallowpi.model.config import tiny


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PiModel(tiny("pi05", depth=3))


def test_save_load_bit_identical(model, tmp_path):
    model.config.layer_map = [0, 5, 11]
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config.layer_map == [0, 5, 11]
    strip = lambda d: {k: v for k, v in d.items() if k != "lerobot"}
    assert strip(loaded.config.to_dict()) == strip(model.config.to_dict())
    save_model(loaded, tmp_path / "again")  # a LeRobot config survives load -> save unchanged
    assert (tmp_path / "again" / "config.json").read_text() == (tmp_path / "ckpt" / "config.json").read_text()
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["type"] == "pi05" and cfg["shallowpi"]["vlm"]["depth"] == 3
    keys = load_file(str(tmp_path / "ckpt" / "model.safetensors")).keys()
    assert all(k.startswith("model.") for k in keys)
    # the tied embedding is stored once, under the name LeRobot's save_pretrained keeps
    assert "model." + LM_HEAD in keys and "model." + EMBED not in keys
    # no temp folders left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "ckpt"]


def test_bf16_round_trip(model, tmp_path):
    model.to_bfloat16()
    save_model(model, tmp_path / "bf16")
    loaded = load_model(tmp_path / "bf16")
    assert loaded.config.dtype == "bfloat16"
    for k, v in model.state_dict().items():
        assert loaded.state_dict()[k].dtype == v.dtype and torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize(
    "form", ["embed_only", "lm_head_only", "both", "with_expert_lm_head", "both_differ", "head_misshaped"]
)
def test_tied_embedding_forms(model, form, caplog):
    """embed_tokens, its tied lm_head, or both. Both and different (LeRobot 0.6.1 unties them and never
    trains the head): embed_tokens, as LeRobot loads it, with a one-line note."""
    sd = lerobot_state_dict(model)
    sd = {k: v.clone() for k, v in sd.items()}
    if form == "embed_only":
        sd.pop("model." + LM_HEAD)
    elif form == "lm_head_only":
        sd.pop("model." + EMBED)
    elif form == "with_expert_lm_head":
        sd["model." + EXPERT_LM_HEAD] = torch.zeros(model.config.vocab_size, model.config.expert.width)
    elif form == "both_differ":
        sd["model." + LM_HEAD] = torch.randn_like(sd["model." + LM_HEAD])
    elif form == "head_misshaped":
        sd["model." + LM_HEAD] = sd["model." + LM_HEAD][:-1]
    fresh = PiModel(tiny("pi05", depth=3))
    if form == "head_misshaped":
        with pytest.raises(CheckpointError, match="lm_head.weight has shape"):
            load_state_dict(fresh, sd)
        return
    with caplog.at_level("WARNING", logger="shallowpi.model.checkpoint"):
        load_state_dict(fresh, sd)
    assert torch.equal(fresh.vlm.embed_tokens.weight, model.vlm.embed_tokens.weight)
    notes = [r.getMessage() for r in caplog.records]
    if form == "both_differ":
        assert len(notes) == 1 and "using embed_tokens" in notes[0] and "\n" not in notes[0]
    else:
        assert notes == []


def test_strict_errors_name_keys(model):
    sd = {k: v.clone() for k, v in lerobot_state_dict(model).items()}
    sd.pop("model.action_in_proj.bias")
    sd["model.some.extra.weight"] = torch.zeros(2)
    sd["model.action_out_proj.weight"] = torch.zeros(5, 5)
    fresh = PiModel(tiny("pi05", depth=3))
    before = fresh.action_in_proj.weight.clone()
    with pytest.raises(CheckpointError) as err:
        load_state_dict(fresh, sd)
    msg = str(err.value)
    assert "missing keys (1)" in msg and "action_in_proj.bias" in msg
    assert "unexpected keys (1)" in msg and "some.extra.weight" in msg
    assert "wrongly shaped keys (1)" in msg and "action_out_proj.weight" in msg
    assert torch.equal(fresh.action_in_proj.weight, before), "nothing may be copied when loading fails"


def test_depth_mismatch_names_layers(model):
    deeper = PiModel(tiny("pi05", depth=4))
    with pytest.raises(CheckpointError, match=r"layers\.3\."):
        load_state_dict(deeper, lerobot_state_dict(model))


def test_pi0_checkpoint_into_pi05_config(tmp_path):
    pi0_model = PiModel(tiny("pi0", depth=2))
    save_model(pi0_model, tmp_path / "pi0")
    cfg = json.loads((tmp_path / "pi0" / "config.json").read_text())
    cfg["type"] = "pi05"
    (tmp_path / "pi0" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="pi0 checkpoint .* config is pi05"):
        load_model(tmp_path / "pi0")
    with pytest.raises(CheckpointError, match="pi05 checkpoint .* config is pi0"):
        load_state_dict(pi0_model, lerobot_state_dict(PiModel(tiny("pi05", depth=2))))


def test_missing_and_corrupt_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    save_model(model, tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "c")


def test_loads_plain_safetensors_with_openpi_names(model, tmp_path):
    sd = {
        k.removeprefix("model."): v.contiguous()
        for k, v in lerobot_state_dict(model).items()
        if LM_HEAD not in k
    }
    save_file(sd, str(tmp_path / "w.safetensors"))
    fresh = PiModel(tiny("pi05", depth=3))
    load_state_dict(fresh, tmp_path / "w.safetensors")
    assert torch.equal(fresh.expert.layers[2].mlp.up_proj.weight, model.expert.layers[2].mlp.up_proj.weight)
