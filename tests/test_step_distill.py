"""Step distillation: the K-step loss, its exact zero, its training through the shared trainer and CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from distill_helpers import random_teacher, synthetic_batch
from shallowpi.distill.data import SyntheticSource
from shallowpi.distill.step_distill import StepDistillConfig, StepDistillLoss
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import TrainConfig, train
from shallowpi.model import load_model, save_model
from shallowpi.model.config import uniform_time_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss(student, teacher, batch, **kw) -> torch.Tensor:
    cfg = StepDistillConfig(**{"grid": [1.0, 0.5, 0.0], **kw})
    fn = StepDistillLoss(student, teacher, cfg)
    total, terms = fn(fn.forward_module(student), batch)
    assert torch.equal(total, terms["trajectory"])
    return total


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
@pytest.mark.parametrize("states", ["student", "target"])
def test_loss_is_exactly_zero_for_a_student_equal_to_its_target(variant: str, states: str) -> None:
    teacher = random_teacher(variant)
    batch = synthetic_batch(teacher)
    twin = copy.deepcopy(teacher)
    # one target sub-step per interval: the target's step IS the student's step
    assert _loss(twin, teacher, batch, target_steps=2, states=states).item() == 0.0
    assert _loss(twin, teacher, batch, grid=[1.0, 0.7, 0.2, 0.0], target_steps=1, states=states).item() == 0.0
    # several sub-steps: the target's average velocity differs from its first one
    assert _loss(twin, teacher, batch, target_steps=10, states=states).item() > 1e-6
    # a student that is not its target
    with torch.no_grad():
        twin.expert.layers[0].mlp.down_proj.weight.add_(0.05)
    assert _loss(twin, teacher, batch, target_steps=2, states=states).item() > 1e-6


def test_sub_grids_reproduce_the_targets_sampler() -> None:
    cfg = StepDistillConfig(grid=[1.0, 0.5, 0.0], target_steps=10)
    assert [round(t, 12) for t in cfg.sub_grid(0)] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert [round(t, 12) for t in cfg.sub_grid(1)] == [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    one = StepDistillConfig(grid=[1.0, 0.0], target_steps=10)
    assert one.sub_grid(0) == uniform_time_grid(10)  # K = 1: exactly the frozen 10-step sampler
    assert (
        len(StepDistillConfig(grid=[1.0, 0.75, 0.5, 0.25, 0.0], target_steps=10).sub_grid(0)) == 4
    )  # ceil 2.5


def test_bad_step_config_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="strictly decreasing"):
        StepDistillConfig(grid=[1.0, 0.2, 0.5, 0.0])
    with pytest.raises(ValueError, match="target_steps"):
        StepDistillConfig(grid=[1.0, 0.0], target_steps=0)
    with pytest.raises(ValueError, match="states"):
        StepDistillConfig(grid=[1.0, 0.0], states="data")
    teacher = random_teacher("pi05")
    with pytest.raises(ValueError, match="differ in variant"):
        StepDistillLoss(random_teacher("pi0"), teacher, StepDistillConfig(grid=[1.0, 0.0]))
    with pytest.raises(ValueError, match="teacher or the L-layer student"):
        StepDistillLoss(teacher, None, StepDistillConfig(grid=[1.0, 0.0]))


def test_unsupported_trainer_options_fail_before_anything_is_written(tmp_path) -> None:
    teacher = random_teacher()
    source = SyntheticSource(teacher.config, num_samples=8, seed=0)
    for option in ("fsdp", "gradient_checkpointing"):
        cfg = TrainConfig(output_dir=str(tmp_path / option), steps=1, batch_size=4, progress=False)
        setattr(cfg, option, True)
        with pytest.raises(ValueError, match="does not support --fsdp or --gradient-checkpointing"):
            train(copy.deepcopy(teacher), source, cfg, StepDistillConfig(grid=[1.0, 0.0]), teacher=teacher)
        assert not (tmp_path / option).exists()


def test_gradient_reaches_expert_backbone_and_vision() -> None:
    teacher = random_teacher()
    student = make_student(teacher, depth=2).train()
    _loss(student, teacher, synthetic_batch(teacher), target_steps=10).backward()
    for name in (
        "expert.layers.0.mlp.down_proj.weight",
        "vlm.layers.0.mlp.down_proj.weight",
        "projector.weight",
    ):
        grad = dict(student.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def _gap(student, teacher, action_dim: int, steps=None) -> float:
    """Mean squared distance of the student's actions (its own schedule unless `steps`) to the target's
    10-step actions, over the dataset's action dims (the only ones trained), on fresh noise."""
    batch = synthetic_batch(teacher, batch=8, seed=0)
    with torch.no_grad():
        ref = teacher.sample_actions(batch.observation, noise=batch.noise)
        out = student.eval().sample_actions(batch.observation, noise=batch.noise, num_steps=steps)
    return float((out - ref)[..., :action_dim].pow(2).mean())


def test_trained_one_step_student_is_closer_to_the_10_step_target_than_naive_euler(
    tmp_path, one_thread
) -> None:
    """Through the shared trainer: a copy of the target trained for 1 step ends far nearer the target's
    10-step actions than the same weights sampled with 1 naive Euler step; checkpoints record the schedule."""
    teacher = random_teacher()
    student = copy.deepcopy(teacher)
    source = SyntheticSource(teacher.config, num_samples=16, seed=0)
    naive = _gap(copy.deepcopy(student), teacher, source.action_dim, steps=1)
    cfg = TrainConfig(
        output_dir=str(tmp_path / "run"),
        steps=40,
        batch_size=8,
        save_every=20,
        log_every=10,
        progress=False,
        num_workers=0,  # batches in this process (DataLoader workers: test_distill_resume)
    )
    cfg.schedule.peak_lr, cfg.schedule.warmup_steps, cfg.schedule.end_lr = 3e-3, 2, 3e-4
    final = train(student, source, cfg, StepDistillConfig(grid=[1.0, 0.0], target_steps=10), teacher=teacher)
    raw = json.loads((final / "pretrained_model" / "config.json").read_text())
    assert raw["shallowpi"]["sampling"] == {"num_steps": 1, "time_grid": [1.0, 0.0]}
    loaded = load_model(final / "pretrained_model")
    assert loaded.config.time_grid() == [1.0, 0.0]
    distilled = _gap(loaded, teacher, source.action_dim)  # its own (1-step) schedule by default
    assert distilled < 0.3 * naive, (distilled, naive)  # measured 0.0023 vs 0.0246
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30, 40]
    assert lines[-1]["trajectory"] < lines[0]["trajectory"] and lines[-1]["loss"] == lines[-1]["trajectory"]


def _cli(*argv, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shallowpi", "distill", *argv], capture_output=True, text=True, cwd=cwd
    )


def test_cli_step_distills_a_saved_student(tmp_path) -> None:
    teacher = random_teacher()
    save_model(teacher, tmp_path / "teacher")
    save_model(make_student(teacher, depth=2), tmp_path / "l2")
    common = ["--teacher", str(tmp_path / "teacher"), "--dataset", "synthetic:8", "--batch-size", "4"]
    common += ["--threads", "1", "--num-workers", "0", "--no-progress", "--warmup-steps", "1"]
    r = _cli(
        *common,
        "--student",
        str(tmp_path / "l2"),
        "--num-steps",
        "2",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 0, r.stderr
    out = load_model(tmp_path / "o" / "checkpoints" / "last" / "pretrained_model")
    assert out.config.depth == 2 and out.config.time_grid() == [1.0, 0.5, 0.0]
    r = _cli(
        *common,
        "--student",
        str(tmp_path / "l2"),
        "--time-grid",
        "1,0.6,0.7,0",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "bad"),
    )
    assert r.returncode != 0 and "strictly decreasing" in r.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()
    r = _cli(*common, "--student", str(tmp_path / "l2"), "--steps", "1", "--out", str(tmp_path / "bad2"))
    assert r.returncode != 0 and "--num-steps" in r.stderr
