"""Config rules: any depth >= 1, equal depths in both stacks, presets with LeRobot's sizes."""

from __future__ import annotations

import pytest
import torch

from shallowpi.model import PiModel
from shallowpi.model.config import GemmaConfig, PiConfig, mid, pi0, pi05, preset, tiny
from shallowpi.model.config import testbed as coarse_testbed
from shallowpi.observation import Observation


def test_unequal_depths_rejected():
    with pytest.raises(ValueError, match="backbone depth 6 != expert depth 4"):
        PiConfig(vlm=GemmaConfig(depth=6), expert=GemmaConfig(width=1024, mlp_dim=4096, depth=4))


def test_depth_zero_rejected():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        tiny().with_depth(0)


@pytest.mark.parametrize("depth", [1, 3, 7])
def test_any_depth_builds_and_samples(depth):
    torch.manual_seed(0)
    model = PiModel(tiny("pi05", depth=depth))
    assert len(model.vlm.layers) == len(model.expert.layers) == depth
    cfg = model.config
    obs = Observation(
        torch.zeros(1, 3, 3, 56, 56),
        torch.ones(1, 3, dtype=torch.bool),
        torch.ones(1, 4, dtype=torch.long),
        torch.ones(1, 4, dtype=torch.bool),
    )
    out = model.sample_actions(obs, num_steps=2)
    assert out.shape == (1, cfg.chunk_size, cfg.max_action_dim)


def test_presets_have_lerobot_sizes():
    assert (pi0().vlm.width, pi0().expert.width, pi0().tokenizer_max_length) == (2048, 1024, 48)
    assert pi05().tokenizer_max_length == 200 and pi05().uses_adarms and not pi0().uses_adarms
    assert pi05().prefix_len == 3 * 256 + 200 and pi0().suffix_len == 51
    assert mid().vision.num_patches == 196
    assert preset("mid", depth=6).depth == 6
    with pytest.raises(ValueError, match="unknown preset"):
        preset("pi1")


def test_bf16_mode_runs_and_tracks_fp32():
    torch.manual_seed(0)
    model = PiModel(tiny("pi05", depth=2)).eval()
    obs = Observation(
        torch.stack([torch.rand(1, 3, 56, 56) * 2 - 1] * 3, dim=1),
        torch.ones(1, 3, dtype=torch.bool),
        torch.ones(1, 4, dtype=torch.long),
        torch.ones(1, 4, dtype=torch.bool),
    )
    noise = torch.randn(1, 10, 32)
    ref = model.sample_actions(obs, noise=noise)
    model.to_bfloat16()
    assert model.vlm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.expert.layers[0].input_layernorm.dense.weight.dtype == torch.float32
    assert model.vision.embeddings.patch_embedding.weight.dtype == torch.float32
    assert model.action_in_proj.weight.dtype == torch.float32
    out = model.sample_actions(obs, noise=noise)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_fine_grid_testbed_has_64_tokens_per_camera_and_survives_a_checkpoint(tmp_path):
    from shallowpi.model import load_model, save_model

    cfg = preset("testbed_fine")
    coarse = coarse_testbed("pi0")
    assert (cfg.vision.num_patches, coarse.vision.num_patches) == (64, 16)
    assert cfg.variant == "pi0" and cfg.cameras == coarse.cameras and cfg.vision.image_size == 64
    assert cfg.prefix_len == coarse.prefix_len + 2 * (64 - 16)
    torch.manual_seed(0)
    save_model(PiModel(cfg.with_depth(2)), tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.vision.patch_size == 8 and loaded.config.vision.num_patches == 64
