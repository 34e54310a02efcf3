"""The folded graph (issue 27): the engine's folded weights give the reference path's actions (fp32, 1e-5),
for π0 and π0.5, grouped-query heads, a step-distilled schedule, unfolded and compiled modes; the ONNX export
of the same folded graph gives the engine's actions; the fold leaves the model untouched."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shallowpi.infer.engine import InferenceEngine
from shallowpi.infer.fold import FoldedPi
from shallowpi.model.config import tiny
from shallowpi.model.pi import PiModel

TOL = 1e-5


def _model(variant: str, **changes) -> PiModel:
    torch.manual_seed(0)
    cfg = tiny(variant)
    for stack, fields in changes.items():
        setattr(cfg, stack, dataclasses.replace(getattr(cfg, stack), **fields))
    model = PiModel(cfg).eval()
    with torch.no_grad():  # non-trivial weights: adaRMS dense and norms start at zero otherwise
        for p in model.parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.1)
    return model


def _inputs(cfg, batch: int, seed: int = 1, masked: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = [torch.rand(batch, 3, s, s, generator=g) * 2 - 1 for _ in cfg.cameras]
    masks = [
        torch.ones(batch, dtype=torch.bool),
        torch.arange(batch) == 0,
        torch.zeros(batch, dtype=torch.bool),
    ]
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.tokenizer_max_length), generator=g)
    lengths = torch.tensor([9, 5, 12][:batch]) if masked else torch.full((batch,), cfg.tokenizer_max_length)
    return {
        "images": images,
        "img_masks": masks,
        "tokens": tokens,
        "token_masks": torch.arange(cfg.tokenizer_max_length)[None] < lengths[:, None],
        "state": torch.randn(batch, 5, generator=g),
        "noise": torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g),
    }


def _args(x: dict) -> tuple:
    """The model's and the engine's positional input: one Observation."""
    from shallowpi.observation import Observation

    return (Observation.from_lists(x["images"], x["img_masks"], x["tokens"], x["token_masks"], x["state"]),)


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
@pytest.mark.parametrize("batch", [1, 2])
def test_folded_engine_equals_reference_and_unfolded_engine(variant: str, batch: int) -> None:
    model = _model(variant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs(model.config, batch)
    ref = model.sample_actions(*_args(x), noise=x["noise"])
    folded = InferenceEngine(model, batch_size=batch).sample_actions(*_args(x), noise=x["noise"])
    unfolded = InferenceEngine(model, batch_size=batch, fold=False).sample_actions(
        *_args(x), noise=x["noise"]
    )
    assert (folded - ref).abs().max() < TOL and (unfolded - ref).abs().max() < TOL
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the engine folds its own copies


def test_folded_engine_with_grouped_query_heads_equals_reference() -> None:
    """Two KV heads (every Gemma here has one): the general attention path instead of the one-head one."""
    model = _model("pi05", vlm={"num_kv_heads": 2}, expert={"num_kv_heads": 2})
    x = _inputs(model.config, 1)
    ref = model.sample_actions(*_args(x), noise=x["noise"])
    out = InferenceEngine(model, batch_size=1).sample_actions(*_args(x), noise=x["noise"])
    assert (out - ref).abs().max() < TOL


def test_folded_engine_follows_a_step_distilled_schedule() -> None:
    model = _model("pi0")
    model.config.sampling_grid = [1.0, 0.6, 0.25, 0.0]
    x = _inputs(model.config, 1)
    ref = model.sample_actions(*_args(x), noise=x["noise"])
    out = InferenceEngine(model, batch_size=1).sample_actions(*_args(x), noise=x["noise"])
    assert (out - ref).abs().max() < TOL


def test_fold_is_exact_math() -> None:
    """The folded weights are a rearrangement: (1 + w) times the projection rows, q scaled by hd^-0.5."""
    model = _model("pi0")
    f = FoldedPi(model)
    layer, fl = model.vlm.layers[0], f.vlm[0]
    hd, q = model.config.vlm.head_dim, model.config.vlm.num_heads * model.config.vlm.head_dim
    w_q = layer.self_attn.q_proj.weight * (1 + layer.input_layernorm.weight)[None] * hd**-0.5
    assert torch.allclose(fl.qkv[:, :q], w_q.t(), atol=1e-7)
    assert fl.qkv.shape[1] == q + 2 * model.config.vlm.head_dim  # [q | k | v], one KV head
    assert f.vlm[-1].qkv.shape[1] == 2 * hd and not hasattr(f.vlm[-1], "o")  # last layer: K and V only


needs_ort = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")), reason="needs the export extra"
)


@needs_ort
@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_export_of_the_folded_graph_equals_the_engine(variant: str, tmp_path: Path) -> None:
    from shallowpi.export.onnx_export import ExportOptions, export_onnx
    from shallowpi.onnx_runtime.runner import OnnxRunner

    model = _model(variant)
    cfg = model.config
    x = _inputs(cfg, 1, masked=True)
    slots = tuple(cfg.cameras[:2])  # slot 2 is masked: not exported, as the engine skips it
    runner = OnnxRunner(export_onnx(model, tmp_path / "onnx", ExportOptions(cameras=slots)))
    out = runner.sample(
        np.stack([i.numpy() for i in x["images"][:2]], axis=1),
        np.stack([m.numpy() for m in x["img_masks"][:2]], axis=1),
        x["tokens"].numpy(),
        x["token_masks"].numpy(),
        torch.nn.functional.pad(x["state"], (0, cfg.max_state_dim - 5)).numpy() if variant == "pi0" else None,
        noise=x["noise"].numpy(),
    )
    ref = InferenceEngine(model, batch_size=1).sample_actions(*_args(x), noise=x["noise"]).numpy()
    assert np.abs(out - ref).max() < TOL


CHILD = """
import json, sys, time, torch
sys.path.insert(0, {tests!r})
from test_engine_fold import _model, _inputs, _args
from shallowpi.infer.engine import InferenceEngine
torch.set_num_threads(1)
model = _model("pi05")
x = _inputs(model.config, 1)
ref = model.sample_actions(*_args(x), noise=x["noise"])
engine = InferenceEngine(model, batch_size=1, compile=True)
t = time.perf_counter()
out = engine.sample_actions(*_args(x), noise=x["noise"])
first = time.perf_counter() - t
x2 = _inputs(model.config, 1, seed=2)
out2 = engine.sample_actions(*_args(x2), noise=x2["noise"])
ref2 = model.sample_actions(*_args(x2), noise=x2["noise"])
print(json.dumps({{"first_s": first, "diff": float(max((out - ref).abs().max(), (out2 - ref2).abs().max()))}}))
"""


@pytest.mark.slow
def test_compiled_engine_equals_reference_and_reuses_its_disk_cache(tmp_path: Path) -> None:
    """torch.compile of the prefix and the Euler step (needs a C++ compiler): the reference's actions; a
    second process with the same cache directory loads the compiled code instead of compiling again."""
    env = os.environ | {"SHALLOWPI_COMPILE_CACHE": str(tmp_path / "cache")}
    code = CHILD.format(tests=str(Path(__file__).parent))
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert all(r["diff"] < TOL for r in runs)
    assert any((tmp_path / "cache").rglob("*"))  # compiled artifacts on disk
    assert runs[1]["first_s"] < runs[0]["first_s"] / 2  # cached: no code generation, no C++ build


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_cpu_fast_paths_equal_reference(monkeypatch, variant: str) -> None:
    """The CPU fp32 kernels the sizes here do not reach by default: the 4-pass sigmoid GELU and SDPA in place of
    the written-out attention."""
    import shallowpi.infer.eager as eager

    model = _model(variant)
    x = _inputs(model.config, 2)
    ref = model.sample_actions(*_args(x), noise=x["noise"])
    monkeypatch.setattr(eager, "SIGMOID_GELU_MIN", 1)
    monkeypatch.setattr(eager, "MANUAL_ATTENTION_MAX", 1)
    engine = InferenceEngine(model, batch_size=2)
    out = engine.sample_actions(*_args(x), noise=x["noise"])
    views = next(iter(engine._buffers.values())).views
    assert views.actions.act is not None and not views.actions.manual
    assert (out - ref).abs().max() < TOL
