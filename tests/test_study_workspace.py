"""The one study pipeline (`shallowpi.study.workspace`) that the study scripts and the demo share: a run's
schedule flags, the teacher link, reuse of kept evaluations only under the same settings, the logged
commands, and an unfinished training run restarted or resumed as asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shallowpi.errors import UserError
from shallowpi.study import pipeline
from shallowpi.study.workspace import Schedule, Workspace, smoke_defaults


def test_schedule_flags_follow_the_run_length():
    assert Schedule(2400, 1e-4).argv() == ["--steps", "2400", "--lr", "0.0001", "--end-lr", "1e-05"] + [
        "--warmup-steps",
        "240",
    ]
    assert Schedule(30000, 3e-4).argv()[-1] == "1000"  # warmup capped
    assert Schedule(3, 2e-4, end_ratio=None).argv() == [
        "--steps",
        "3",
        "--lr",
        "0.0002",
        "--warmup-steps",
        "1",
    ]


def test_link_points_at_the_target_and_refuses_a_real_folder(tmp_path):
    ws = Workspace(tmp_path / "w")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    link = ws.link("teacher", a)
    assert link.resolve() == a.resolve()
    assert ws.link("teacher", b).resolve() == b.resolve()  # re-pointed, not left stale
    (ws.policies / "student").mkdir()
    with pytest.raises(UserError, match="not a link"):
        ws.link("student", a)


def _info(spec: pipeline.EvalSpec, success: float) -> dict:
    settings = {
        "tasks": spec.tasks,
        "episodes_per_task": spec.episodes_per_task,
        "seed": spec.seed,
        "max_steps": spec.max_steps,
        "n_action_steps": spec.n_action_steps,
        "image_size": spec.image_size,
    }
    return {"settings": settings, "overall": {"pc_success": success}}


def test_kept_evaluation_is_reused_only_with_the_same_settings(tmp_path):
    spec = pipeline.EvalSpec(tasks=["reach-v3"], episodes_per_task=5, image_size=64)
    keep = tmp_path / "evals"
    keep.mkdir()
    (keep / "L6.json").write_text(json.dumps(_info(spec, 42.0)))
    ws = Workspace(tmp_path / "w")
    assert ws.evaluate("L6", tmp_path / "no-policy", spec, keep_in=keep)["overall"]["pc_success"] == 42.0
    other = pipeline.EvalSpec(tasks=["reach-v3"], episodes_per_task=6, image_size=64)
    assert ws.kept_eval("L6", other, keep) is None  # 6 episodes were asked: the kept 5 do not count


def test_kept_evaluation_of_another_horizon_is_stale(tmp_path):
    """A horizon written into a policy's config after its evaluation (a scratch baseline given the teacher's
    re-planning horizon) makes the kept evaluation stale: it ran the chunks differently. An evaluation that
    predates the recorded field, or whose policy is not here, is kept."""
    spec = pipeline.EvalSpec(tasks=["reach-v3"], episodes_per_task=5, image_size=64)
    keep, policy = tmp_path / "evals", tmp_path / "L6"
    keep.mkdir()
    policy.mkdir()
    config = {"chunk_size": 10}
    (policy / "config.json").write_text(json.dumps(config))
    info = _info(spec, 42.0)
    info["settings"]["actions_per_call"] = None  # ran the whole chunk
    (keep / "L6.json").write_text(json.dumps(info))
    assert Workspace.kept_eval("L6", spec, keep, policy) is not None  # the policy still runs whole chunks
    config["n_action_steps"] = 5
    (policy / "config.json").write_text(json.dumps(config))
    assert Workspace.kept_eval("L6", spec, keep, policy) is None  # now it re-plans after 5
    assert Workspace.kept_eval("L6", spec, keep, tmp_path / "gone") is not None  # nothing to compare with
    info["settings"]["actions_per_call"] = 5
    (keep / "L6.json").write_text(json.dumps(info))
    assert Workspace.kept_eval("L6", spec, keep, policy) is not None
    forced = pipeline.EvalSpec(tasks=["reach-v3"], episodes_per_task=5, image_size=64, n_action_steps=10)
    info["settings"]["n_action_steps"], info["settings"]["actions_per_call"] = 10, 10
    (keep / "L6.json").write_text(json.dumps(info))
    assert Workspace.kept_eval("L6", forced, keep, policy) is not None  # the spec's flag wins over the config
    del info["settings"]["actions_per_call"]  # an evaluation from before the field was recorded
    info["settings"]["n_action_steps"] = None
    (keep / "L6.json").write_text(json.dumps(info))
    assert Workspace.kept_eval("L6", spec, keep, policy) is not None


def test_commands_are_logged_and_a_failure_raises(tmp_path):
    ws = Workspace(tmp_path / "w", in_process=True)
    with pytest.raises(SystemExit):
        ws.shallowpi(["inspect", str(tmp_path / "missing")])  # one-line error, exit 2
    assert ws.commands() == [f"shallowpi inspect {tmp_path / 'missing'}"]
    assert ws.ran == ws.commands()


def _fake_checkpoint(out: Path, step: int) -> None:
    from shallowpi.distill import checkpointing as ckpt

    folder = out / "checkpoints" / f"{step:06d}"
    (folder / ckpt.TRAINING_STATE).mkdir(parents=True)
    (folder / ckpt.PRETRAINED).mkdir()
    (folder / ckpt.PRETRAINED / "config.json").write_text("{}")
    (folder / ckpt.TRAINING_STATE / "training_step.json").write_text(json.dumps({"step": step}))
    (out / "checkpoints" / "last").symlink_to(folder.name)


def test_unfinished_run_resumes_or_restarts(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "w")
    out = ws.work / "train" / "L6"
    _fake_checkpoint(out, 2)
    calls: list[list[str]] = []

    def fake_cli(argv):  # records what would run; writes the finished checkpoint the CLI would
        calls.append(list(argv))
        if out.exists() and "--resume" not in argv:
            raise AssertionError("a fresh run must start in an empty folder")
        if "--resume" not in argv:
            _fake_checkpoint(out, 4)

    monkeypatch.setattr(ws, "shallowpi", fake_cli)
    ws.train("L6", ["distill"], Schedule(4, 1e-4), save_every=2, resume=False)
    assert "--resume" not in calls[-1] and pipeline.trained_step(out) == 4
    assert (ws.policies / "L6" / "config.json").is_file()

    ws.train("L6", ["distill"], Schedule(4, 1e-4), save_every=2)  # finished: nothing runs
    assert len(calls) == 1
    ws.train("L6", ["distill"], Schedule(8, 1e-4), save_every=2)  # longer: resumes
    assert calls[-1][-1] == "--resume"


def test_smoke_defaults_keep_what_the_command_line_gave():
    class A:
        steps = 100
        tasks = "mt10"

    a = A()
    smoke_defaults(a, {"steps": 2, "tasks": "reach"}, ["--steps", "50"])
    assert (a.steps, a.tasks) == (100, "reach")


def test_study_args_refuse_an_unknown_stage_and_keep_smoke_results_out_of_git(tmp_path):
    import argparse

    from shallowpi.study.workspace import finish_study_args

    p = argparse.ArgumentParser()
    for flag in ("--work", "--results", "--stages"):
        p.add_argument(flag, default=None)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--steps", type=int, default=100)
    argv = ["--work", str(tmp_path), "--stages", "eval, report", "--smoke"]
    args = p.parse_args(argv)
    finish_study_args(
        p, args, stages=("eval", "report"), smoke={"steps": 2}, argv=argv, default_results=Path("r")
    )
    assert (args.stages, args.steps, args.results) == (["eval", "report"], 2, str(tmp_path / "results"))
    bad = p.parse_args(["--work", str(tmp_path), "--stages", "eval,trian"])
    with pytest.raises(SystemExit):
        finish_study_args(p, bad, stages=("eval", "report"), smoke={}, argv=[], default_results=Path("r"))
