"""scripts/study_metaworld.py builds each variant's training command from the teacher it is given: the
from-scratch baseline must be the students' architecture (the teacher's variant), not the preset's default."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

from shallowpi.model.checkpoint import read_config

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "src" / "shallowpi" / "assets" / "teacher_metaworld"


def _study_module():
    spec = importlib.util.spec_from_file_location("study_metaworld", REPO / "scripts" / "study_metaworld.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("only", ["L6_scratch", "L6_task_kd", "L6_released_seed1001"])
def test_training_commands_use_the_teachers_architecture(tmp_path, only):
    mod = _study_module()
    args = mod.parse_args(
        ["--work", str(tmp_path / "w"), "--results", str(tmp_path / "r"), "--teacher", str(TEACHER)]
        + ["--only", only]
    )
    assert args.state == "hand_task_goal"  # read from the bundled teacher's 8-dim state
    study = mod.Study(args)
    calls = []
    fresh = {"chunk_size": 10, "n_action_steps": 10}  # what a fresh training run's config.json says

    def train(name, argv, steps, lr):
        calls.append((name, argv, steps))
        policy = tmp_path / "policies" / name
        policy.mkdir(parents=True)
        (policy / "config.json").write_text(json.dumps(fresh))
        return policy

    study.train = train
    study.students()
    assert [c[0] for c in calls] == [only]
    horizon = json.loads((tmp_path / "policies" / only / "config.json").read_text())["n_action_steps"]
    argv = calls[0][1]
    if only == "L6_scratch":
        assert argv[:2] == ["train", "--preset"]
        variant = read_config(TEACHER).variant
        assert argv[argv.index("--variant") + 1] == variant == "pi0"
        # The baseline re-plans as the teacher does (its chosen horizon), not after the whole chunk.
        assert horizon == json.loads((TEACHER / "config.json").read_text())["n_action_steps"] == 5
    else:  # a distilled student inherits everything from --teacher (its config too: left as training wrote it)
        assert argv[0] == "distill" and argv[argv.index("--teacher") + 1] == str(TEACHER)
        assert horizon == 10
    if only == "L6_released_seed1001":  # the released baseline's second training seed, same recipe
        assert argv[argv.index("--seed") + 1] == "1001"
        assert argv[argv.index("--backbone-layers") + 1] == "0,1,2,3,4,5"
        assert argv[argv.index("--weights") + 1] == "task=1,kd=1,attn=0"
    assert argv[argv.index("--depth") + 1] == "6"


def test_few_step_students_come_from_the_step_study_and_are_timed_with_their_steps(tmp_path):
    """L6_K2_* / L6_K1_* are made by scripts/study_steps.py: never trained or evaluated here, their evaluations
    read from RESULTS/steps/evals, their architecture benched as L6 sampled with K steps."""
    import json

    mod = _study_module()
    only = "L6_K2_naive,L6_K2_distilled,L6_K1_distilled"
    args = mod.parse_args(
        ["--work", str(tmp_path / "w"), "--results", str(tmp_path / "r"), "--teacher", str(TEACHER)]
        + ["--only", only]
    )
    study = mod.Study(args)
    calls = []
    study.train = lambda *a: calls.append(("train", a))
    study.ws.evaluate = lambda *a, **k: calls.append(("eval", a))
    benched = []
    study.ws.bench = lambda paths, **k: benched.extend(paths)
    study.students()
    study.eval()
    assert [c for c in calls if c[1][0] != "teacher"] == []  # the teacher is always evaluated
    v = next(v for v in study.selected() if v.name == "L6_K2_distilled")
    assert study.kept_eval_path(v) == tmp_path / "r" / "steps" / "evals" / "L6_K2_distilled.json"
    study.bench()
    names = [Path(p).name for p in benched]
    assert names == ["teacher", "L6", "L6_K2", "L6_K1"]
    for p, k in ((benched[2], 2), (benched[3], 1)):
        assert json.loads((Path(p) / "config.json").read_text())["num_inference_steps"] == k
        assert read_config(p).depth == 6


def _eval_info(successes: list[bool], episodes: int = 4) -> dict:
    """A minimal eval_info.json of one task (reach-v3) made with the settings the test's study asks for."""
    return {
        "per_task": [
            {
                "task_group": "reach-v3",
                "metrics": {
                    "successes": successes,
                    "seeds": [1000] * episodes,
                    "config_indices": list(range(episodes)),
                },
            }
        ],
        "per_group": {"reach-v3": {"pc_success": 100.0 * sum(successes) / episodes}},
        "overall": {"pc_success": 100.0 * sum(successes) / episodes},
        "settings": {
            "tasks": ["reach-v3"],
            "episodes_per_task": episodes,
            "seed": 1000,
            "max_steps": 200,
            "n_action_steps": None,
            "image_size": 64,
        },
    }


@pytest.mark.parametrize("same_teacher", [True, False])
def test_report_shows_few_step_students_only_from_a_step_study_on_this_teacher(tmp_path, same_teacher):
    import json

    mod = _study_module()
    results = tmp_path / "r"
    args = mod.parse_args(
        ["--work", str(tmp_path / "w"), "--results", str(results), "--teacher", str(TEACHER)]
        + ["--tasks", "reach-v3", "--episodes-per-task", "4", "--only", "L6_K2_naive,L6_K2_distilled"]
    )
    teacher = [True, True, True, False]
    files = {
        results / "evals" / "teacher.json": teacher,
        results / "steps" / "evals" / "teacher.json": teacher
        if same_teacher
        else [True, False, False, False],
        results / "steps" / "evals" / "L6_K2_naive.json": [True, False, False, False],
        results / "steps" / "evals" / "L6_K2_distilled.json": [True, True, True, False],
    }
    for path, successes in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_eval_info(successes)))
    mod.Study(args).report()
    md = (results / "metaworld.md").read_text()
    assert ("## Fewer denoising steps (L6)" in md) is same_teacher
    assert ("| L6 @2 steps, step-distilled | 6 | 2 | 75.0 |" in md) is same_teacher
    assert "| teacher L18 | 18 | 75 | **75.0** |" in md


def test_report_lists_the_command_of_every_trained_policy_without_a_commands_log(tmp_path, monkeypatch):
    """The policies in a report may come from an earlier session (kept evaluations, no WORK/commands.log):
    its command list is rebuilt from the variants, the same argv the students stage runs."""
    mod = _study_module()
    only = "L6_task,L6_scratch,L6_skip"
    args = mod.parse_args(
        ["--work", str(tmp_path / "w"), "--results", str(tmp_path / "r"), "--teacher", str(TEACHER)]
        + ["--only", only, "--save-every", "400", "--threads", "2"]
    )
    study = mod.Study(args)
    ran = []
    study.ws.shallowpi = lambda argv: ran.append("shallowpi " + shlex.join(argv))
    study.ws.kept_eval = lambda *a, **k: None
    monkeypatch.setattr("shallowpi.study.workspace.pipeline.export_pretrained", lambda out, dst: dst)
    monkeypatch.setattr("shallowpi.study.pipeline.copy_horizon", lambda reference, policy: 5)
    study.students()  # runs (here: records) L6_task and L6_scratch; L6_skip needs no training
    shown = study.selected()
    cmds = study.commands(shown)
    assert cmds[0].startswith("shallowpi collect --env metaworld ") and "--out " + str(study.data) in cmds[0]
    assert cmds[1:] == ran
    assert len(ran) == 2 and ran[0].startswith("shallowpi distill ") and ran[1].startswith("shallowpi train ")


def test_the_reports_regenerate_command_runs_every_stage():
    mod = _study_module()
    argv = ["--work", "w", "--stages", "bench,report", "--threads", "2", "--stages=report"]
    assert mod.without_stages(argv) == ["--work", "w", "--threads", "2"]


def test_copy_horizon_gives_the_teachers_horizon_or_leaves_the_policy(tmp_path):
    from shallowpi.errors import UserError
    from shallowpi.study.pipeline import copy_horizon

    def folder(name, **cfg):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        return tmp_path / name

    def horizon(path):
        return json.loads((path / "config.json").read_text())["n_action_steps"]

    teacher, plain = folder("teacher", chunk_size=10, n_action_steps=5), folder("plain", chunk_size=10)
    student = folder("student", chunk_size=10, n_action_steps=10)
    assert copy_horizon(plain, student) is None and horizon(student) == 10
    assert copy_horizon(teacher, student) == 5 and horizon(student) == 5
    short = folder("short", chunk_size=4, n_action_steps=4)
    with pytest.raises(UserError, match="exceeds .* chunk_size 4"):
        copy_horizon(teacher, short)
    assert horizon(short) == 4
