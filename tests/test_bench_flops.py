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
