"""A compressed prefix in the config and the reference model: merged image tokens (pixel shuffle before the
projector) and a shallower vision tower; shapes, a strict config round trip, and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from shallowpi.errors import UserError
from shallowpi.model import CheckpointError, PiModel, load_model, save_model
from shallowpi.model.config import tiny
from shallowpi.model.siglip import merge_groups, merge_tokens
from shallowpi.testing import random_observation


def test_merge_tokens_concatenates_each_block_in_row_major_order():
    grid, w = 4, 3
    x = torch.randn(2, grid * grid, w)
    y = merge_tokens(x, grid, 2)  # (2, 4, 12)
    assert y.shape == (2, 4, 12)
    groups = merge_groups(grid, 2)
    for token in range(4):
        members = [p for p in range(grid * grid) if groups[p] == token]
        assert len(members) == 4
        assert torch.equal(y[:, token], torch.cat([x[:, p] for p in members], dim=-1))
    assert merge_tokens(x, grid, 1) is x


def test_prefix_length_and_projector_follow_the_merge():
    cfg = tiny("pi05").with_prefix(merge=2)
    assert cfg.vision.num_patches == 16 and cfg.vision.num_tokens == 4
    assert cfg.prefix_len == len(cfg.cameras) * 4 + cfg.tokenizer_max_length
    model = PiModel(cfg)
    assert model.projector.in_features == 4 * cfg.vision.width
    obs = random_observation(cfg, batch=2)
    embs, valid = model.embed_prefix(obs)
    assert embs.shape[:2] == valid.shape == (2, cfg.prefix_len)
    assert model.sample_actions(obs).shape == (2, cfg.chunk_size, cfg.max_action_dim)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"merge": 3}, "does not divide the 4x4 patch grid"),
        ({"merge": 0}, "merge must be an integer >= 1"),
        (
            {"vision_depth": 1, "vision_layer_map": [0, 1]},
            "vision_layer_map has 2 entries for vision depth 1",
        ),
        ({"vision_depth": 0}, "vision depth must be >= 1"),
    ],
)
def test_bad_prefix_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(UserError, match=message):
        tiny("pi05").with_prefix(**kwargs)


def test_compressed_student_round_trips_strictly(tmp_path):
    cfg = tiny("pi0").with_prefix(merge=2, vision_depth=1, vision_layer_map=[1])
    model = PiModel(cfg)
    save_model(model, tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "config.json").read_text())
    assert raw["shallowpi"]["vision"]["merge"] == 2 and raw["shallowpi"]["vision_layer_map"] == [1]
    loaded = load_model(tmp_path / "s")
    assert loaded.config.vision == cfg.vision and loaded.config.vision_layer_map == [1]
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # A reader that drops the merge (an older shallowpi, or a hand-edited config) must not run the weights
    # on an unmerged prefix: the projector's shape refuses them.
    del raw["shallowpi"]["vision"]["merge"]
    (tmp_path / "s" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="projector"):
        load_model(tmp_path / "s")


def test_config_without_prefix_settings_is_written_as_before():
    raw = tiny("pi05").to_dict()
    assert raw["vision"]["merge"] == 1 and raw["vision_layer_map"] is None
    from shallowpi.model.lerobot_config import config_to_lerobot

    ours = config_to_lerobot(tiny("pi05"))["shallowpi"]
    assert "merge" not in ours["vision"] and "vision_layer_map" not in ours
