"""Small models and data shared by the distillation tests."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from shallowpi.distill.checkpointing import CHECKPOINTS, LAST, PRETRAINED, TRAINING_STATE, step_name
from shallowpi.distill.data import Batch, MicroBatches, StreamPlan, SyntheticSource
from shallowpi.distill.losses import DistillLossConfig
from shallowpi.distill.schedule import ScheduleConfig
from shallowpi.distill.step_distill import StepDistillConfig
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import TrainConfig, train
from shallowpi.model import PiModel
from shallowpi.model.config import tiny
from shallowpi.model.gemma import GemmaLayer


def random_teacher(variant: str = "pi05", depth: int = 4, seed: int = 0) -> PiModel:
    """A tiny model with every tensor random (zero-initialised norms/adaRMS included, so layers differ)."""
    torch.manual_seed(seed)
    model = PiModel(tiny(variant, depth))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def synthetic_batch(model: PiModel, batch: int = 4, seed: int = 0) -> Batch:
    src = SyntheticSource(model.config, num_samples=16, seed=seed)
    return MicroBatches(src, StreamPlan(16, batch, seed=seed), model.config, 0, 1)[0]


# Data-parallel runs (DDP / FSDP2 over gloo on CPU) --------------------------------------------------------

TINY_STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny(rank: int, world: int, port: int, out: str, opts: dict) -> None:
    """One rank of a tiny distillation run (a torch.multiprocessing target; `world` 1: no process group).

    opts: variant ("pi0"), fsdp, gradient_checkpointing, grad_accum (1), step_distill (the step-distillation
    stage), prefix (a student with merged image tokens and one SigLIP layer: pooled attention KD and the
    vision loss), resume_at (also resume from the checkpoint of that step into OUT/resumed, which must end as
    OUT/run ends). Writes OUT/run (and OUT/resumed) and OUT/rank<r>.json: the student's parameter elements
    held by this rank and in all, and how often each student Gemma layer was entered through `qkv` (forward
    passes plus gradient checkpointing's recomputations)."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    out = Path(out)
    variant, resume_at = opts.get("variant", "pi0"), opts.get("resume_at")
    entries: Counter[int] = Counter()
    qkv = GemmaLayer.qkv

    @functools.wraps(qkv)
    def counted_qkv(self, *args, **kwargs):
        entries[id(self)] += 1
        return qkv(self, *args, **kwargs)

    def run(folder: str, resume: bool = False) -> PiModel:
        teacher = random_teacher(variant, depth=4)
        prefix = {"merge": 2, "vision_depth": 1} if opts.get("prefix") else {}
        student = make_student(teacher, depth=2, **prefix)
        cfg = TrainConfig(
            output_dir=str(out / folder),
            steps=TINY_STEPS,
            batch_size=8,
            grad_accum=opts.get("grad_accum", 1),
            seed=3,
            schedule=ScheduleConfig(peak_lr=1e-3, warmup_steps=1),
            save_every=resume_at or TINY_STEPS,
            log_every=1,
            progress=False,
            device="cpu",
            fsdp=opts.get("fsdp", False),
            gradient_checkpointing=opts.get("gradient_checkpointing", False),
            num_workers=0,  # batches in each rank's process (DataLoader workers: test_distill_resume)
        )
        # step_distill: the step-distillation stage (its own DDP-wrapped student pass), 2-step student
        loss = (
            StepDistillConfig(grid=[1.0, 0.5, 0.0], target_steps=4)
            if opts.get("step_distill")
            else DistillLossConfig()
        )
        train(student, SyntheticSource(teacher.config, 24), cfg, loss, teacher=teacher, resume=resume)
        return student

    GemmaLayer.qkv = counted_qkv
    try:
        student = run("run")
        params = list(student.parameters())
        report = {
            "local": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params),
            "full": sum(p.numel() for p in params),
            "sharded": sum(isinstance(p, DTensor) for p in params),
            "params": len(params),
            "qkv_entries": [entries[id(layer)] for s in (student.vlm, student.expert) for layer in s.layers],
        }
        (out / f"rank{rank}.json").write_text(json.dumps(report))
        if resume_at is not None:
            if rank == 0:
                src = out / "run" / CHECKPOINTS / step_name(resume_at)
                dst = out / "resumed" / CHECKPOINTS
                shutil.copytree(src, dst / src.name)
                (dst / LAST).symlink_to(src.name)
            if world > 1:
                torch.distributed.barrier()
            run("resumed", resume=True)
    finally:
        GemmaLayer.qkv = qkv
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# Weights after the tiny runs' 3 AdamW steps, N processes vs one (the why: tests/test_distill_ddp.py).
WEIGHT_ATOL = 2e-5


def assert_weights_close(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = WEIGHT_ATOL
) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < atol, f"largest weight difference {worst}"


def last_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / CHECKPOINTS / LAST / PRETRAINED / "model.safetensors"))


def last_optimizer_state(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / CHECKPOINTS / LAST / TRAINING_STATE / "optimizer_state.safetensors"))


def run_in_process(out: Path, opts: dict) -> Path:
    """The one-process reference, in this process: one thread like the ranks, RNG state left as it was."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            train_tiny(0, 1, 0, str(out), opts)
    finally:
        torch.set_num_threads(threads)
    return out / "run"


def run_two_processes(out: Path, opts: dict) -> Path:
    """`train_tiny` on two ranks -> OUT/run. The ranks are forked from a forkserver that imported torch and
    shallowpi once per test session (a fresh interpreter per rank spends seconds importing them); it ran no
    torch op, so each rank starts with no thread pool, like a spawned one."""
    # this module imports torch and the trainer; torch._dynamo is imported lazily by the first model built
    torch.multiprocessing.set_forkserver_preload([__name__, "torch._dynamo"])
    torch.multiprocessing.start_processes(
        train_tiny, args=(2, free_port(), str(out), opts), nprocs=2, join=True, start_method="forkserver"
    )
    return out / "run"
