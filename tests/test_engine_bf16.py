"""bf16 numerics on CPU: the engine in bf16 (LeRobot's bf16 policy) against fp32, on the bundled Meta-World
teacher (trained weights, so the numbers are those a user of the test bed sees)."""

from __future__ import annotations

import torch

from shallowpi.bench import make_inputs
from shallowpi.bench.inputs import BenchInputs
from shallowpi.infer.engine import InferenceEngine
from shallowpi.model import load_model
from shallowpi.study.pipeline import bundled_teacher_path

ACTION_DIM = 4  # the teacher's Meta-World actions; the other output dims are padding
# Tolerance in normalised action units (the teacher's actions reach about ±1.7). Measured on CPU (torch
# 2.13, batch 4, 10 Euler steps) on the bundled π0-variant teacher: max 0.093, mean 0.0068 (the earlier
# π0.5 teacher: 0.030 / 0.0045); the bounds leave about 2x headroom. The error is the bf16 matmuls', so this
# bounds what a user sees and catches bf16 breakage beyond rounding (a model left in fp32, wrong casts or
# masks), not which small tensors stay fp32.
BF16_MAX, BF16_MEAN = 0.18, 0.014


def teacher_inputs(model, batch: int = 4, device="cpu") -> BenchInputs:
    """Two valid cameras, a 20-token prompt (the whole prompt budget where it is shorter), fixed noise."""
    lang = min(20, model.config.tokenizer_max_length)
    return make_inputs(model.config, batch=batch, cameras=2, lang_tokens=lang, device=device, seed=0)


def actions(runner, x: BenchInputs) -> torch.Tensor:
    # π0 reads the observation's state as a token; π0.5 reads it as text and ignores the field
    out = runner.sample_actions(x.observation, noise=x.noise)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    return out[..., :ACTION_DIM]


def test_engine_bf16_is_within_the_stated_tolerance_of_fp32(one_thread) -> None:
    fp32 = load_model(bundled_teacher_path())
    bf16 = load_model(bundled_teacher_path())
    x = teacher_inputs(fp32)
    ref = actions(InferenceEngine(fp32, batch_size=4), x)
    engine = InferenceEngine(bf16, batch_size=4, dtype="bfloat16")
    # LeRobot's policy: the layers in bf16, norms (π0.5's adaRMS dense included) and vision embeddings in fp32.
    assert bf16.expert.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.expert.layers[0].input_layernorm.parameters())
    out = actions(engine, x)
    err = (out - ref).abs()
    assert err.max() > 0, "bf16 gave the fp32 answer bit for bit: the model did not run in bf16"
    assert err.max() <= BF16_MAX and err.mean() <= BF16_MEAN, (err.max().item(), err.mean().item())
    # In bf16 the engine and the reference sampler agree far more closely than bf16 and fp32 do.
    assert (out - actions(bf16, x)).abs().max() <= BF16_MAX / 6
