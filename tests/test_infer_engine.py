"""InferenceEngine equals the reference sampling path (fp32, CPU) and keeps its static-shape contract."""

from __future__ import annotations

import pytest
import torch

from shallowpi.infer.engine import InferenceEngine
from shallowpi.model.config import tiny
from shallowpi.model.pi import PiModel
from shallowpi.observation import Observation

TOL = 1e-5


def _model(variant: str) -> PiModel:
    torch.manual_seed(0)
    model = PiModel(tiny(variant)).eval()
    with torch.no_grad():  # non-trivial weights: adaRMS dense and norms start at zero otherwise
        for p in model.parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.1)
    return model


def _inputs(cfg, batch: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = [torch.rand(batch, 3, s, s, generator=g) * 2 - 1 for _ in cfg.cameras]
    # slot 0 valid, slot 1 valid for sample 0 only, slot 2 masked for the whole batch
    masks = [
        torch.ones(batch, dtype=torch.bool),
        torch.arange(batch) == 0,
        torch.zeros(batch, dtype=torch.bool),
    ]
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.tokenizer_max_length), generator=g)
    lengths = torch.tensor([9, 5, 12, 3][:batch])
    token_masks = torch.arange(cfg.tokenizer_max_length)[None] < lengths[:, None]
    return {
        "images": images,
        "img_masks": masks,
        "tokens": tokens,
        "token_masks": token_masks,
        "state": torch.randn(batch, 5, generator=g),
        "noise": torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g),
    }


def _obs(x: dict, state: bool = True) -> Observation:
    s = x["state"] if state else None
    return Observation.from_lists(x["images"], x["img_masks"], x["tokens"], x["token_masks"], s)


def _reference(model: PiModel, x: dict, steps: int | None = None) -> torch.Tensor:
    return model.sample_trace(
        _obs(x), noise=x["noise"], num_steps=steps, compact=False, keep_trace=False
    ).actions


def _engine(engine: InferenceEngine, x: dict, steps: int | None = None) -> torch.Tensor:
    return engine.sample_actions(_obs(x), noise=x["noise"], num_steps=steps)


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
@pytest.mark.parametrize("compact", [True, False])
def test_engine_equals_reference_path(variant: str, compact: bool) -> None:
    model = _model(variant)
    x = _inputs(model.config, batch=3)
    ref = _reference(model, x)
    engine = InferenceEngine(model, batch_size=3, compact=compact)
    out = _engine(engine, x)
    assert out.shape == ref.shape == (3, model.config.chunk_size, model.config.max_action_dim)
    assert (out - ref).abs().max() < TOL
    # second call reuses the static buffers and cached conditioning: same answer
    assert torch.equal(_engine(engine, x), out)


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_engine_follows_inputs_across_calls_and_step_counts(variant: str) -> None:
    """Static buffers must not leak one call's prefix or masks into the next."""
    model = _model(variant)
    engine = InferenceEngine(model, batch_size=1)
    for seed, steps in ((1, None), (2, 3), (3, None), (4, 3)):
        x = {
            k: (v[:1] if torch.is_tensor(v) else [t[:1] for t in v])
            for k, v in _inputs(model.config, 2, seed).items()
        }
        assert (_engine(engine, x, steps) - _reference(model, x, steps)).abs().max() < TOL


def test_engine_all_valid_prefix_drops_the_mask_and_stays_equal() -> None:
    """Batch 1, every kept key valid: the engine runs SDPA without a mask (fast path)."""
    model = _model("pi05")
    x = _inputs(model.config, batch=1)
    x["token_masks"][:] = True
    engine = InferenceEngine(model, batch_size=1)
    out = _engine(engine, x)
    (buf,) = engine._buffers.values()
    assert not buf.use_mask
    assert (out - _reference(model, x)).abs().max() < TOL


def test_engine_static_prefix_mode_equals_reference() -> None:
    """What CUDA-graph mode runs (prompt padding kept, masks always applied), checked on CPU."""
    model = _model("pi05")
    x = _inputs(model.config, batch=2)
    engine = InferenceEngine(model, batch_size=2)
    engine.trim_language, engine.cuda_graph = False, True  # the graph path, minus the capture itself
    obs = engine.check(_obs(x, state=False))
    assert obs.tokens.shape[1] == model.config.tokenizer_max_length  # static length
    buf = engine.prefill(*engine.encode(obs), obs.state)
    assert buf.use_mask
    buf.noise.copy_(x["noise"])
    out = engine._denoise_loop(buf, engine._conditioning(model.config.num_inference_steps))
    assert (out - _reference(model, x)).abs().max() < TOL


def test_engine_marks_stages_in_order() -> None:
    model = _model("pi05")
    x = _inputs(model.config, batch=1)
    seen: list[str] = []
    engine = InferenceEngine(model, batch_size=1)
    engine.sample_actions(_obs(x, state=False), marks=seen.append)
    assert seen == ["vision", "prefix", "denoise"]


def test_engine_rejects_bad_setup_and_inputs() -> None:
    model = _model("pi05")
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        InferenceEngine(model, cuda_graph=True, device="cpu")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        InferenceEngine(model, batch_size=0)
    engine = InferenceEngine(model, batch_size=1)
    x = _inputs(model.config, batch=2)
    with pytest.raises(ValueError, match="built for batch_size=1"):
        _engine(engine, x)
    x1 = {k: (v[:1] if torch.is_tensor(v) else [t[:1] for t in v]) for k, v in x.items()}
    with pytest.raises(ValueError, match="noise: expected shape"):
        engine.sample_actions(_obs(x1, state=False), noise=x["noise"])
    x1["images"], x1["img_masks"] = x1["images"][:2], x1["img_masks"][:2]
    with pytest.raises(ValueError, match="expected 3 camera images"):
        engine.sample_actions(_obs(x1, state=False))


def test_engine_refresh_picks_up_new_weights() -> None:
    model = _model("pi05")
    x = _inputs(model.config, batch=1)
    engine = InferenceEngine(model, batch_size=1)
    _engine(engine, x)
    with torch.no_grad():
        model.time_mlp_in.weight.mul_(1.5)  # changes the cached adaRMS conditioning
    engine.refresh()
    assert (_engine(engine, x) - _reference(model, x)).abs().max() < TOL


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_engine_of_a_model_built_under_inference_mode(variant: str) -> None:
    """A model built and sampled under `torch.inference_mode` (its weights inference tensors, which have no
    version counter) samples the reference's actions in and out of inference mode, in either order (static
    tensors made in inference mode cannot be written outside it); a weight given new storage is still seen."""
    x = _inputs(tiny(variant), batch=2)
    ref = _reference(_model(variant), x)
    with torch.inference_mode():
        model = _model(variant)
        assert next(model.parameters()).is_inference()
        engine = InferenceEngine(model, batch_size=2)
        inside = _engine(engine, x)
    outside = _engine(engine, x)
    with torch.inference_mode():
        again = _engine(engine, x)
    for out in (inside, outside, again):
        assert (out - ref).abs().max() < TOL
    if variant == "pi05":
        with torch.inference_mode():
            w = model.time_mlp_in.weight
            w.data = w.data * 1.5  # new storage (an in-place write to an inference tensor is not seen)
            changed = _engine(engine, x)
            assert torch.equal(changed, _engine(InferenceEngine(model, batch_size=2), x))
        assert (changed - ref).abs().max() > 1e-3
