"""Real-time chunking: the prefix weights and guidance weight, the guided chunk joins the previous one, and
the engine equals the reference path (fp32, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from shallowpi.infer.engine import InferenceEngine
from shallowpi.model.rtc import RTCConfig, RTCGuidance, guidance_weight, prefix_weights
from test_infer_engine import _inputs, _model, _obs

TOL = 1e-5
TOL_JACOBIAN = 2e-5  # the VJP term amplifies the folded prefix cache's rounding (measured 1.1e-5)


def test_prefix_weights_per_schedule():
    assert prefix_weights("ZEROS", 2, 6, 10).tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert prefix_weights("ONES", 2, 6, 10).tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    lin = prefix_weights("LINEAR", 2, 6, 10)
    torch.testing.assert_close(lin, torch.tensor([1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0, 0, 0]))
    ramp = torch.tensor([0.8, 0.6, 0.4, 0.2])
    exp = torch.cat([torch.ones(2), ramp * torch.expm1(ramp) / (math.e - 1), torch.zeros(4)])
    torch.testing.assert_close(prefix_weights("EXP", 2, 6, 10), exp)
    # a delay past the horizon freezes up to the horizon; a horizon past the chunk ramps to its end
    assert prefix_weights("LINEAR", 7, 4, 10).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    torch.testing.assert_close(prefix_weights("LINEAR", 0, 20, 4), torch.tensor([0.8, 0.6, 0.4, 0.2]))


def test_guidance_weight_is_clipped():
    assert guidance_weight(1.0, 10.0) == 10.0  # t = 1 (pure noise): infinite, clipped
    assert guidance_weight(0.5, 10.0) == pytest.approx(2.0)  # τ = 0.5: 1 · (0.25 + 0.25) / 0.25
    assert guidance_weight(0.95, 10.0) == 10.0  # 19 · 1.003, clipped
    assert guidance_weight(0.9, 100.0) == pytest.approx(9 * (0.81 + 0.01) / 0.81)
    assert guidance_weight(0.0, 10.0) == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"inference_delay": 5}, "past the previous chunk"),
        ({"inference_delay": -1}, "inference_delay"),
        ({"prev": torch.zeros(2, 11, 4)}, "prev_chunk"),
        ({"prev": torch.zeros(2, 3, 40)}, "prev_chunk"),
        ({"prev": torch.full((2, 3, 4), math.nan)}, "non-finite"),
        ({"config": RTCConfig(prefix_attention_schedule="COSINE")}, "prefix_attention_schedule"),
        ({"config": RTCConfig(max_guidance_weight=0)}, "max_guidance_weight"),
    ],
)
def test_guidance_rejects_bad_values(kwargs, match):
    prev = kwargs.pop("prev", torch.zeros(2, 3, 4))
    config = kwargs.pop("config", RTCConfig())
    args = {"inference_delay": 2, "chunk_size": 10, "action_dim": 32, **kwargs}
    with pytest.raises(ValueError, match=match):
        RTCGuidance.build(config, prev, **args)


def _case(variant: str, jacobian: bool, delay: int = 2):
    """A chunk sampled from one observation; 3 of its actions executed; the next chunk is requested from another
    observation with the tail as `prev` (5 real action dims), `delay` more executed while it is sampled."""
    model = _model(variant)
    c = model.config
    first = _inputs(c, batch=2)
    chunk = model.sample_actions(_obs(first), noise=first["noise"])
    prev = chunk[:, 3:, :5]
    cfg = RTCConfig(execution_horizon=6, jacobian=jacobian)
    guide = RTCGuidance.build(
        cfg, prev, inference_delay=delay, chunk_size=c.chunk_size, action_dim=c.max_action_dim
    )
    return model, _inputs(c, batch=2, seed=7), prev, guide


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_guided_chunk_continues_the_previous_one(variant):
    model, x, prev, guide = _case(variant, jacobian=False)
    d = guide.inference_delay
    plain = model.sample_actions(_obs(x), noise=x["noise"])
    guided = model.sample_actions(_obs(x), noise=x["noise"], guidance=guide)
    frozen_plain = (plain[:, :d, :5] - prev[:, :d]).abs().max()
    frozen = (guided[:, :d, :5] - prev[:, :d]).abs().max()
    assert frozen_plain > 1.0  # another observation and noise: without RTC the chunks do not meet
    assert frozen < 0.05 * frozen_plain
    # the jump at the switch: the new chunk's row d against the old chunk's next action
    jump_plain = (plain[:, d, :5] - prev[:, d]).abs().max()
    jump = (guided[:, d, :5] - prev[:, d]).abs().max()
    assert jump < 0.2 * jump_plain


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
@pytest.mark.parametrize("jacobian", [False, True])
@pytest.mark.parametrize("fold", [True, False])
def test_engine_equals_reference_with_guidance(variant, jacobian, fold):
    model, x, _, guide = _case(variant, jacobian)
    ref = model.sample_actions(_obs(x), noise=x["noise"], guidance=guide)
    engine = InferenceEngine(model, batch_size=2, fold=fold)
    out = engine.sample_actions(_obs(x), noise=x["noise"], guidance=guide)
    assert (out - ref).abs().max() < (TOL_JACOBIAN if jacobian else TOL)
    # the unguided call after a guided one is the plain chunk again (no state left behind)
    plain = model.sample_actions(_obs(x), noise=x["noise"])
    assert (engine.sample_actions(_obs(x), noise=x["noise"]) - plain).abs().max() < TOL


@pytest.mark.parametrize("fold", [True, False])
def test_guided_engine_follows_a_recorded_time_grid(fold):
    """A step-distilled student's non-uniform grid: the guided engine equals the guided reference on it, and
    the grid matters (the same weights guided over 2 uniform steps give another chunk)."""
    model, x, _, guide = _case("pi05", jacobian=False)
    uniform = model.sample_actions(_obs(x), noise=x["noise"], num_steps=2, guidance=guide)
    model.config = model.config.with_sampling([1.0, 0.6, 0.0])
    ref = model.sample_actions(_obs(x), noise=x["noise"], guidance=guide)
    out = InferenceEngine(model, batch_size=2, fold=fold).sample_actions(
        _obs(x), noise=x["noise"], guidance=guide
    )
    assert (out - ref).abs().max() < TOL
    assert (ref - uniform).abs().max() > 1e-3


def test_jacobian_guidance_differs_from_lerobots():
    """jacobian=True adds the expert's VJP term (∂v/∂x_t)ᵀ e: other actions than J = e."""
    model, x, _, guide = _case("pi05", jacobian=True)
    _, _, _, plain_guide = _case("pi05", jacobian=False)
    a = model.sample_actions(_obs(x), noise=x["noise"], guidance=guide)
    b = model.sample_actions(_obs(x), noise=x["noise"], guidance=plain_guide)
    assert (a - b).abs().max() > 1e-3


def test_engine_rejects_guidance_of_another_batch():
    model, x, prev, guide = _case("pi05", jacobian=False)
    engine = InferenceEngine(model, batch_size=1)
    obs1 = _obs({k: v[:1] if torch.is_tensor(v) else [t[:1] for t in v] for k, v in x.items()})
    with pytest.raises(ValueError, match="guidance"):
        engine.sample_actions(obs1, noise=x["noise"][:1], guidance=guide)


def test_jacobian_guidance_after_calls_in_inference_mode():
    """Jacobian guidance differentiates outside inference mode: it gets static tensors of its own after calls
    in inference mode made theirs; with weights made under inference mode it is one clear error."""
    model, x, _, guide = _case("pi05", jacobian=True)
    ref = model.sample_actions(_obs(x), noise=x["noise"], guidance=guide)
    engine = InferenceEngine(model, batch_size=2)
    with torch.inference_mode():
        engine.sample_actions(_obs(x), noise=x["noise"])
        out = engine.sample_actions(_obs(x), noise=x["noise"], guidance=guide)  # a caller inside it
    assert (out - ref).abs().max() < TOL_JACOBIAN
    with torch.inference_mode():
        frozen = _model("pi05")
    with pytest.raises(ValueError, match="weights made under torch.inference_mode cannot take part"):
        InferenceEngine(frozen, batch_size=2).sample_actions(_obs(x), noise=x["noise"], guidance=guide)
