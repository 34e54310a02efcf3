"""Errors one way: a UserError is one line on stderr and exit 2 (every command, distill included);
anything else is a bug and keeps its traceback. Small refusals: num_steps=0, all-zero loss weights."""

from __future__ import annotations

import pytest

from distill_helpers import random_teacher, synthetic_batch
from shallowpi import cli
from shallowpi.distill.losses import DistillLoss, DistillLossConfig, LossWeights
from shallowpi.distill.student import make_student
from shallowpi.errors import UserError
from shallowpi.infer.engine import InferenceEngine
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.testing import save_tiny_policy


def test_distill_without_depth_exits_2_with_one_line(tmp_path, capsys):
    argv = ["distill", "--teacher", str(tmp_path), "--dataset", "synthetic:4", "--steps", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "shallowpi distill: error: give --depth N or --layers i,j,..."


def test_multi_line_user_error_is_one_line(monkeypatch, capsys):
    def run(args):
        raise UserError("checkpoint does not match:\n  missing keys (2):\n    a\n    b")

    monkeypatch.setattr("shallowpi.commands.inspect.run", run)
    assert cli.main(["inspect", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "shallowpi inspect: error: checkpoint does not match:; missing keys (2):; a; b\n"


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_other_exceptions_keep_their_traceback(monkeypatch, exc):
    def run(args):
        raise exc

    monkeypatch.setattr("shallowpi.commands.inspect.run", run)
    with pytest.raises(type(exc)):
        cli.main(["inspect", "x"])


def test_bench_argument_errors_are_user_errors(tmp_path, capsys):
    assert cli.main(["bench", "--preset", "tiny", "--iters", "5", "--out", str(tmp_path / "b.json")]) == 2
    assert capsys.readouterr().err.startswith("shallowpi bench: error: --iters must be >= 20")


def test_num_steps_zero_is_refused_not_the_default(tmp_path):
    path = save_tiny_policy(tmp_path / "tiny")
    with pytest.raises(UserError, match="num_steps must be >= 1, got 0"):
        ActionPredictor.from_pretrained(path, device="cpu", num_steps=0)
    model = random_teacher("pi05", depth=2)
    b = synthetic_batch(model, batch=1)
    with pytest.raises(ValueError, match="got 0"):
        model.sample_actions(b.observation, num_steps=0)
    with pytest.raises(ValueError, match="got 0"):
        InferenceEngine(model, batch_size=1).sample_actions(b.observation, num_steps=0)


def test_eval_num_steps_zero_refused():
    from shallowpi.sim.evaluate import EvalConfig

    cfg = EvalConfig(policy=".", tasks=["reach-v3"], num_steps=0)
    with pytest.raises(UserError, match="num-steps must be >= 1"):
        cfg.validate()


def test_all_zero_loss_weights_refused():
    teacher = random_teacher("pi05", depth=2)
    student = make_student(teacher, depth=1)
    with pytest.raises(UserError, match="every loss weight is 0"):
        DistillLoss(student, teacher, DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=0)))
    with pytest.raises(UserError, match="every loss weight is 0"):
        DistillLoss(student, teacher, DistillLossConfig(weights=LossWeights.parse("task=0,kd=0,attn=0")))
    DistillLoss(student, teacher, DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=1)))
