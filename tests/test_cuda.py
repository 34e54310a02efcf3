"""The CUDA code paths: bf16 autocast training, the engine compiled and captured as a CUDA graph, DDP over
NCCL and FSDP2, the last two in a one-GPU process group (world size 1 runs every wrapping, hook and
collective of the multi-GPU code). `cuda` marker: deselected, with a line saying so, where torch sees no
GPU; benchmarks/gpu_check.sh runs them (junit XML) on a GPU machine."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from distill_helpers import random_teacher
from shallowpi.bench.inputs import BenchInputs
from shallowpi.distill.data import SyntheticSource
from shallowpi.distill.losses import DistillLossConfig
from shallowpi.distill.schedule import ScheduleConfig
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import TrainConfig, train
from shallowpi.infer.engine import InferenceEngine
from shallowpi.model import load_model
from shallowpi.study.pipeline import bundled_teacher_path
from test_engine_bf16 import ACTION_DIM, BF16_MAX, BF16_MEAN

pytestmark = pytest.mark.cuda

STEPS = 5  # Euler steps in the engine checks: a smaller graph to compile and capture, same code paths
# fp32 on CUDA against fp32 on CUDA through other kernels (SDPA backends, fused ops): rounding only.
FP32_TOL = 1e-3


@pytest.fixture(scope="module", autouse=True)
def exact_fp32():
    """TF32 off (cuDNN allows it for convolutions by default): fp32 comparisons then mean fp32. Module scope,
    so that it is on before the module-scoped reference is computed."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# engine ----------------------------------------------------------------------------------------------------


def _inputs(model, seed: int) -> BenchInputs:
    from shallowpi.bench import make_inputs

    return make_inputs(model.config, batch=2, cameras=2, lang_tokens=20, device="cuda", seed=seed)


def _actions(runner, x: BenchInputs) -> torch.Tensor:
    out = runner.sample_actions(x.observation, noise=x.noise, num_steps=STEPS)
    assert out.dtype == torch.float32 and out.device.type == "cuda" and torch.isfinite(out).all()
    return out[..., :ACTION_DIM]


@pytest.fixture(scope="module")
def reference() -> list[tuple[BenchInputs, torch.Tensor]]:
    """(inputs, fp32 reference-sampler actions) for two different inputs, on the GPU."""
    model = load_model(bundled_teacher_path(), device="cuda")
    return [(x, _actions(model, x)) for x in (_inputs(model, 0), _inputs(model, 1))]


@pytest.mark.parametrize(
    "mode,dtype",
    [
        ("eager", "float32"),
        ("cuda_graph", "float32"),
        ("eager", "bfloat16"),
        ("compiled", "bfloat16"),
        ("cuda_graph", "bfloat16"),
        ("cuda_graph_unfolded", "bfloat16"),
    ],
)
def test_engine_on_cuda_matches_the_fp32_reference(mode: str, dtype: str, reference) -> None:
    """Every engine mode the bench times gives the reference actions (fp32: rounding; bf16: the stated bf16
    tolerance), on the call that compiles / captures and on a later call with other inputs (the captured
    graph replays over the new inputs, not the ones it was recorded with)."""
    model = load_model(bundled_teacher_path(), device="cuda")
    engine = InferenceEngine(
        model,
        batch_size=2,
        device="cuda",
        dtype=dtype,
        compile=mode == "compiled",
        cuda_graph=mode.startswith("cuda_graph"),
        fold=not mode.endswith("unfolded"),
    )
    for x, ref in reference:
        err = (_actions(engine, x) - ref).abs()
        if dtype == "float32":
            assert err.max() <= FP32_TOL, err.max().item()
        else:
            assert err.max() <= BF16_MAX and err.mean() <= BF16_MEAN, (err.max().item(), err.mean().item())
    if mode.startswith("cuda_graph"):
        (buf,) = engine._buffers.values()
        assert len(buf.graphs) == 1  # captured once, replayed for the second input


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_folded_and_unfolded_cuda_graphs_agree(dtype: str) -> None:
    """The folded graph captured on the GPU gives the unfolded engine's actions (fp32: rounding; bf16: the
    folded engine rounds where the model rounds, so well inside the bf16 tolerance), π0.5 and π0."""
    from shallowpi.bench import make_inputs
    from test_engine_fold import _model

    for variant in ("pi05", "pi0"):
        model = _model(variant).cuda()
        x = make_inputs(model.config, batch=2, cameras=2, lang_tokens=9, device="cuda", seed=0)
        out = {}
        for fold in (True, False):
            engine = InferenceEngine(
                model, batch_size=2, device="cuda", dtype=dtype, cuda_graph=True, fold=fold
            )
            out[fold] = _actions(engine, x)
        tol = FP32_TOL if dtype == "float32" else BF16_MAX / 6
        assert (out[True] - out[False]).abs().max() <= tol


# training --------------------------------------------------------------------------------------------------

TRAIN_STEPS = 3


def _train(out, device: str, *, bf16: bool = True, fsdp: bool = False) -> None:
    teacher = random_teacher("pi05", depth=4)
    student = make_student(teacher, depth=2)
    cfg = TrainConfig(
        output_dir=str(out),
        steps=TRAIN_STEPS,
        batch_size=8,
        seed=3,
        schedule=ScheduleConfig(peak_lr=1e-3, warmup_steps=1),
        save_every=TRAIN_STEPS,
        log_every=1,
        progress=False,
        device=device,
        bf16=bf16,
        fsdp=fsdp,
        num_workers=0,
    )
    train(student, SyntheticSource(teacher.config, 24), cfg, DistillLossConfig(), teacher=teacher)


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))


def _run_info(out) -> dict:
    path = out / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    return json.loads(path.read_text())["distributed"]


def _initial_student() -> dict[str, torch.Tensor]:
    return {
        f"model.{k}": v
        for k, v in make_student(random_teacher("pi05", depth=4), depth=2).state_dict().items()
    }


def _update_gap(a: dict, b: dict, init: dict) -> float:
    """||a - b|| / ||a - init|| over all weights: how far two runs' updates differ, relative to the update."""
    keys = [k for k in a if k in init]
    assert keys and a.keys() == b.keys()
    diff = math.sqrt(sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys))
    moved = math.sqrt(sum(float((a[k].double() - init[k].double()).pow(2).sum()) for k in keys))
    assert moved > 0, "training did not change the weights"
    return diff / moved


def test_bf16_autocast_training_runs_and_stays_close_to_fp32(tmp_path) -> None:
    """CUDA fp32 equals CPU fp32 (same losses); bf16 autocast changes them (it is on) by bf16 rounding
    only, and trains: finite losses every step, finite weights that moved."""
    _train(tmp_path / "cpu", "cpu")
    _train(tmp_path / "fp32", "cuda", bf16=False)
    _train(tmp_path / "bf16", "cuda", bf16=True)
    cpu, fp32, bf16 = (_metrics(tmp_path / n) for n in ("cpu", "fp32", "bf16"))
    terms = ("task", "kd", "attn")
    for k in terms:  # step 1: same weights, same batch
        assert fp32[0][k] == pytest.approx(cpu[0][k], rel=1e-3), k
        # CPU bf16 autocast on this setup differs from fp32 by 5e-5 (task), 2e-3 (kd), 1.4e-3 (attn); CUDA
        # autocasts more ops (attention included), hence the room.
        assert bf16[0][k] == pytest.approx(fp32[0][k], rel=5e-2), k
    assert bf16[0]["task"] != fp32[0]["task"], "bf16 autocast did not change the numbers: it was not on"
    assert len(bf16) == TRAIN_STEPS and all(math.isfinite(m[k]) for m in bf16 for k in (*terms, "grad_norm"))
    weights = _weights(tmp_path / "bf16")
    assert all(torch.isfinite(w).all() for w in weights.values())
    # After 3 AdamW steps the bf16 and fp32 updates differ by 2.6 % of the update under CPU autocast.
    assert _update_gap(weights, _weights(tmp_path / "fp32"), _initial_student()) < 0.25
    assert _run_info(tmp_path / "bf16") == {"world_size": 1, "parallel": "none", "device": "cuda:0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, parallel: str, out: str, port: int) -> None:
    """One GPU process: deterministic kernels (so that runs compare tightly), then a plain, DDP or FSDP2 run."""
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.enable_flash_sdp(False)  # math SDPA: a deterministic backward
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    import torch.distributed as dist

    if parallel != "none":
        dist.init_process_group(
            "nccl",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=0,
            world_size=1,
            device_id=torch.device("cuda", 0),
        )
    try:
        _train(Path(out), "cuda", fsdp=parallel == "fsdp2")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(parallel: str, out) -> None:
    mp.spawn(_spawned, args=(parallel, str(out), _free_port()), nprocs=1, join=True)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    _spawn("none", out)
    return out


@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_one_gpu_process_group_equals_a_plain_run(parallel: str, plain_run, tmp_path) -> None:
    """DDP over NCCL and FSDP2 (world size 1, bf16 autocast): the wrapped run is the plain run."""
    out = tmp_path / parallel
    _spawn(parallel, out)
    assert _run_info(out) == {"world_size": 1, "parallel": parallel, "device": "cuda:0"}
    assert _run_info(plain_run)["parallel"] == "none"
    a, b = _metrics(plain_run), _metrics(out)
    for k in ("task", "kd", "attn"):
        assert b[0][k] == pytest.approx(a[0][k], rel=1e-5), k
    assert _update_gap(_weights(plain_run), _weights(out), _initial_student()) < 1e-2
