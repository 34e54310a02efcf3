"""A prefix-compressed student (image tokens merged 2 x 2, a shallower SigLIP tower) through every engine
mode: the same actions as the reference sampler, `PiModel.sample_actions`."""

from __future__ import annotations

import pytest
import torch

from shallowpi.infer.engine import InferenceEngine
from shallowpi.infer.fold import FoldedPi
from shallowpi.testing import random_observation, tiny_prefix_student

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def _noise(cfg, batch: int) -> torch.Tensor:
    return torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(3))


def test_the_student_is_compressed() -> None:
    cfg = tiny_prefix_student().config
    assert (cfg.vision.merge, cfg.vision.num_patches, cfg.vision.num_tokens) == (2, 16, 4)
    assert cfg.vision.depth == 2 and cfg.vision_layer_map == [0, 2]


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
@pytest.mark.parametrize("batch", [1, 2])
def test_folded_and_unfolded_engines_equal_the_reference(variant: str, batch: int) -> None:
    model = tiny_prefix_student(variant)
    obs = random_observation(model.config, batch=batch, seed=1)  # last camera slot masked
    noise = _noise(model.config, batch)
    ref = model.sample_actions(obs, noise=noise)
    folded = InferenceEngine(model, batch_size=batch).sample_actions(obs, noise=noise)
    unfolded = InferenceEngine(model, batch_size=batch, fold=False).sample_actions(obs, noise=noise)
    assert (folded - ref).abs().max() < TOL and (unfolded - ref).abs().max() < TOL


def test_engine_without_compaction_equals_the_reference() -> None:
    model = tiny_prefix_student("pi05")
    obs = random_observation(model.config, batch=2, seed=2)
    noise = _noise(model.config, 2)
    ref = model.sample_actions(obs, noise=noise)
    out = InferenceEngine(model, batch_size=2, compact=False).sample_actions(obs, noise=noise)
    assert (out - ref).abs().max() < TOL


def test_folded_vision_gives_the_merged_projected_tokens() -> None:
    """The post-LayerNorm's affine folds into a projector that reads m² patches per token."""
    model = tiny_prefix_student("pi0")
    pixels = random_observation(model.config, batch=2).images[:, 0]  # (2, 3, H, W)
    want = model.projector(model.image_features(pixels))  # (2, 4, W_vlm)
    got = FoldedPi(model).vision(pixels)
    assert got.shape == want.shape == (2, 4, model.config.vlm.width)
    assert (got - want).abs().max() < TOL


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_compiled_mode_graph_equals_the_reference(monkeypatch, variant: str) -> None:
    """The compiled mode's prefix and step functions, run eagerly (torch.compile replaced by the identity:
    the C++ build is the slow compiled-engine test's job); they are the graphs torch.compile would trace."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    model = tiny_prefix_student(variant)
    obs = random_observation(model.config, batch=1, seed=4)
    noise = _noise(model.config, 1)
    ref = model.sample_actions(obs, noise=noise)
    engine = InferenceEngine(model, batch_size=1, compile=True)
    assert engine.compiled is not None
    assert (engine.sample_actions(obs, noise=noise) - ref).abs().max() < TOL


def test_bf16_engine_runs_the_student_like_the_bf16_reference() -> None:
    """bf16 keeps the post-LayerNorm's affine unfolded: the other branch of the folded vision."""
    model = tiny_prefix_student("pi05")
    model.to_bfloat16()
    obs = random_observation(model.config, batch=1, seed=5)
    noise = _noise(model.config, 1)
    ref = model.sample_actions(obs, noise=noise)
    engine = InferenceEngine(model, batch_size=1, dtype="bfloat16")
    assert engine.folded.post_ln is not None
    out = engine.sample_actions(obs, noise=noise)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
