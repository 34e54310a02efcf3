"""Training edge cases: attention-only loss weights under DDP (parameters without gradients) equal one
process; metrics.jsonl holds each step once after a resume re-runs the steps past the last checkpoint."""

from __future__ import annotations

import json
import os

import torch
import torch.multiprocessing as mp

from distill_helpers import assert_weights_close, free_port, last_weights, random_teacher
from shallowpi.distill.data import SyntheticSource
from shallowpi.distill.losses import DistillLossConfig, LossWeights
from shallowpi.distill.schedule import ScheduleConfig
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import TrainConfig, train

ATTN_ONLY = DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=1))


def _cfg(out, steps: int, save_every: int, **kw) -> TrainConfig:
    return TrainConfig(
        **kw,
        output_dir=str(out),
        steps=steps,
        batch_size=8,
        seed=3,
        schedule=ScheduleConfig(peak_lr=1e-3, warmup_steps=1),
        save_every=save_every,
        log_every=1,
        progress=False,
        device="cpu",
        num_workers=0,  # batches in this process (DataLoader workers: test_distill_resume)
    )


def _perturbed(student):
    """A student copied from the teacher has the teacher's attention at the paired layer (KL = 0, gradients
    are rounding noise that Adam would amplify); move it away so attention KD has something to teach."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return student


def _run_attn_only(rank: int, world: int, port: int, out: str) -> None:
    # Adam eps 1e-4: attention-KD gradients of some weights are ~1e-8, where Adam's g / (|g| + eps) turns
    # the rounding of a different reduction order into a visible update; a larger eps keeps the comparison
    # about DDP, not about fp32 rounding.
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )  # fmt: skip
    teacher = random_teacher("pi0", depth=2)
    student = _perturbed(make_student(teacher, depth=1))
    try:
        train(
            student,
            SyntheticSource(teacher.config, 16),
            _cfg(out, 2, 2, eps=1e-4),
            ATTN_ONLY,
            teacher=teacher,
        )
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_attention_only_weights_under_ddp_match_one_process(tmp_path):
    single = tmp_path / "single"
    p = mp.get_context("spawn").Process(target=_run_attn_only, args=(0, 1, 0, str(single)))
    p.start()
    p.join()
    assert p.exitcode == 0
    ddp = tmp_path / "ddp"
    mp.spawn(_run_attn_only, args=(2, free_port(), str(ddp)), nprocs=2, join=True)
    assert_weights_close(last_weights(single), last_weights(ddp))
    init = _perturbed(make_student(random_teacher("pi0", depth=2), depth=1)).state_dict()
    trained = last_weights(single)
    moved = [
        k
        for k, v in trained.items()
        if k.removeprefix("model.") in init and not torch.equal(init[k.removeprefix("model.")], v)
    ]
    assert moved, "attention KD trained nothing"
    steps = [json.loads(line)["step"] for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_metrics_have_each_step_once_after_resume(tmp_path):
    torch.set_num_threads(1)
    teacher = random_teacher("pi05", depth=2)
    out = tmp_path / "run"
    source = SyntheticSource(teacher.config, 16)
    loss = DistillLossConfig()
    train(make_student(teacher, depth=1), source, _cfg(out, 3, 2), loss, teacher=teacher)
    # As if the run had been killed after logging step 3 but before checkpointing it.
    root = out / "checkpoints"
    (root / "last").unlink()
    os.symlink("000002", root / "last")
    import shutil

    shutil.rmtree(root / "000003")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1.0')  # a line cut short by the kill
    train(make_student(teacher, depth=1), source, _cfg(out, 4, 2), loss, teacher=teacher, resume=True)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
