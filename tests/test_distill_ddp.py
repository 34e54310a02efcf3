"""Data parallel training equals one process on the same global batch (gloo on CPU)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from distill_helpers import random_teacher
from shallowpi.distill.data import SyntheticSource
from shallowpi.distill.losses import DistillLossConfig
from shallowpi.distill.schedule import ScheduleConfig
from shallowpi.distill.steps import StepDistillConfig
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import TrainConfig, train

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(
    rank: int, world: int, port: int, out: str, grad_accum: int, fsdp: bool = False, steps: bool = False
) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    teacher = random_teacher("pi0", depth=4)
    student = make_student(teacher, depth=2)
    cfg = TrainConfig(
        output_dir=out,
        steps=STEPS,
        batch_size=8,
        grad_accum=grad_accum,
        seed=3,
        schedule=ScheduleConfig(peak_lr=1e-3, warmup_steps=1),
        save_every=STEPS,
        log_every=1,
        progress=False,
        device="cpu",
        fsdp=fsdp,
        num_workers=0,  # batches in each rank's process (DataLoader workers: test_distill_resume)
    )
    try:
        # steps: the step-distillation stage (its own DDP-wrapped student pass), 2-step student, 4 sub-steps
        loss = StepDistillConfig(grid=[1.0, 0.5, 0.0], target_steps=4) if steps else DistillLossConfig()
        train(student, SyntheticSource(teacher.config, 24), cfg, loss, teacher=teacher)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 2e-5, f"largest weight difference {worst}"


def _one_process(tmp_path, grad_accum: int = 1, steps: bool = False):
    out = tmp_path / f"single_{grad_accum}_{steps}"
    ctx = mp.get_context("spawn")  # a fresh process: same thread settings as the ranks
    p = ctx.Process(target=_run, args=(0, 1, 0, str(out), grad_accum, False, steps))
    p.start()
    p.join()
    assert p.exitcode == 0
    return out


def test_two_process_ddp_matches_one_process(tmp_path):
    single = _one_process(tmp_path)
    ddp = tmp_path / "ddp"
    mp.spawn(_run, args=(2, _free_port(), str(ddp), 1), nprocs=2, join=True)
    _assert_close(_weights(single), _weights(ddp))
    # Sanity: training moved the weights away from the initial student.
    init = make_student(random_teacher("pi0", depth=4), depth=2).state_dict()
    assert any(
        not torch.equal(init[k.removeprefix("model.")], v)
        for k, v in _weights(single).items()
        if k.removeprefix("model.") in init
    )


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    _assert_close(_weights(_one_process(tmp_path, 1)), _weights(_one_process(tmp_path, 2)))


@pytest.mark.slow
def test_two_process_fsdp2_matches_one_process(tmp_path):
    single = _one_process(tmp_path)
    fsdp = tmp_path / "fsdp"
    mp.spawn(_run, args=(2, _free_port(), str(fsdp), 1, True), nprocs=2, join=True)
    _assert_close(_weights(single), _weights(fsdp))


def test_two_process_ddp_matches_one_process_for_step_distillation(tmp_path):
    single = _one_process(tmp_path, steps=True)
    ddp = tmp_path / "ddp_steps"
    mp.spawn(_run, args=(2, _free_port(), str(ddp), 1, False, True), nprocs=2, join=True)
    _assert_close(_weights(single), _weights(ddp))
