"""Analytic FLOPs per call agree with torch's FLOP counter, for the engine and the reference path."""

from __future__ import annotations

import pytest
import torch

from shallowpi.bench import make_inputs
from shallowpi.infer.engine import InferenceEngine
from shallowpi.infer.flops import call_flops, count_engine_flops, count_flops
from shallowpi.model.config import mid, tiny
from shallowpi.model.pi import PiModel


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_analytic_flops_match_torch_counter_per_stage(variant: str) -> None:
    cfg = tiny(variant)
    torch.manual_seed(0)
    model = PiModel(cfg).eval()
    x = make_inputs(cfg, batch=2, cameras=2, lang_tokens=9, device="cpu")
    engine = InferenceEngine(model, batch_size=2)
    counted = count_engine_flops(engine, x.observation, x.noise)
    assert counted == call_flops(cfg, batch=2, cameras=2, lang_tokens=9)


def test_reference_path_costs_at_least_the_engine_count() -> None:
    """The reference recomputes the time conditioning every step and the last layer's queries."""
    cfg = tiny("pi05")
    model = PiModel(cfg).eval()
    x = make_inputs(cfg, batch=1, cameras=2, lang_tokens=9, device="cpu")
    ref = count_flops(lambda: model.sample_actions(x.observation))
    uncached = call_flops(cfg, cameras=2, lang_tokens=9, cached_conditioning=False)["total"]
    assert uncached > call_flops(cfg, cameras=2, lang_tokens=9)["total"]
    assert ref >= uncached and ref < 1.1 * uncached


def test_flops_scale_with_depth_cameras_and_steps() -> None:
    d18, d6 = (
        call_flops(mid(depth=18), cameras=2, lang_tokens=20),
        call_flops(mid(depth=6), cameras=2, lang_tokens=20),
    )
    assert d18["vision"] == d6["vision"]  # the vision tower does not depend on depth
    assert 0.33 < d6["total"] / d18["total"] < 0.35
    three = call_flops(mid(depth=6), cameras=3, lang_tokens=20)
    assert three["vision"] == pytest.approx(1.5 * d6["vision"])
    assert call_flops(mid(depth=6), cameras=2, lang_tokens=20, steps=5)["denoise"] == pytest.approx(
        d6["denoise"] / 2, rel=1e-3
    )
    with pytest.raises(ValueError, match="cameras must be in"):
        call_flops(mid(), cameras=4)


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_prefix_student_flops_match_torch_counter_per_stage(variant: str) -> None:
    """Merged tokens and a shallower tower: SigLIP at its depth, projector and backbone over merged tokens."""
    from shallowpi.testing import tiny_prefix_student

    model = tiny_prefix_student(variant)
    cfg = model.config
    x = make_inputs(cfg, batch=2, cameras=2, lang_tokens=9, device="cpu")
    counted = count_engine_flops(InferenceEngine(model, batch_size=2), x.observation, x.noise)
    assert counted == call_flops(cfg, batch=2, cameras=2, lang_tokens=9)


def test_full_size_prefix_compression_flops() -> None:
    """π0.5, 2 cameras: merge 2 divides the backbone's image tokens by 4 (256 -> 64 per camera) and leaves
    SigLIP alone but for the projector; 14 of 27 SigLIP layers cut the tower's layer FLOPs by 14 / 27."""
    from shallowpi.model.config import pi05

    base = pi05().with_depth(6)
    merged = base.with_prefix(merge=2)
    shallow = base.with_prefix(vision_depth=14)
    full, m, s = (call_flops(c, cameras=2, lang_tokens=20, steps=2) for c in (base, merged, shallow))
    v = base.vision
    proj = 2 * 2 * 256 * v.width * base.vlm.width  # 2 cameras, 256 tokens of width W
    assert m["vision"] == full["vision"]  # the same projector FLOPs: 4x fewer tokens, each 4x wider
    assert m["prefix"] < 0.3 * full["prefix"] and m["denoise"] < full["denoise"]
    layers = full["vision"] - proj - 2 * 2 * 256 * v.width * 3 * v.patch_size**2
    assert full["vision"] - s["vision"] == pytest.approx(layers * 13 / 27)
    assert s["prefix"] == full["prefix"] and s["denoise"] == full["denoise"]
