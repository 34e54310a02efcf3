"""`shallowpi demo --quick` end to end with a teacher the test builds: every stage runs, the bench stage reports
both latencies and their ratio, both policies give finite actions in the env's range, and the report holds
the table."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from shallowpi.cli import main
from shallowpi.data.processor import ProcessorConfig
from shallowpi.data.processor_files import save_processor
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.model import PiModel, save_model
from shallowpi.model import config as model_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")

CAMERAS = ("corner4", "gripperPOV")  # the study's cameras


def save_testbed_teacher(path: Path, depth: int = 18) -> Path:
    """Random-weight test-bed teacher (18 layers, like the real one) with a Meta-World processor. Action
    stats are Meta-World's Box(-1, 1), as a teacher trained on the scripted demos would carry."""
    torch.manual_seed(0)
    cfg = model_config.testbed(depth=depth)
    save_model(PiModel(cfg).eval(), path)
    proc = ProcessorConfig(
        variant=cfg.variant,
        camera_map={f"observation.images.{cam}": cfg.cameras[i] for i, cam in enumerate(CAMERAS)},
        cameras=cfg.cameras,
        image_size=cfg.vision.image_size,
        chunk_size=cfg.chunk_size,
        tokenizer_max_length=cfg.tokenizer_max_length,
    )
    vec = {"mean": np.zeros(4), "std": np.full(4, 0.5), "q01": -np.ones(4), "q99": np.ones(4)}
    state = {
        "mean": np.zeros(4),
        "std": np.full(4, 0.3),
        "q01": np.array([-0.5, 0.3, 0.0, 0.0]),
        "q99": np.array([0.5, 0.9, 0.3, 1.0]),
    }
    save_processor(path, proc, {"observation.state": state, "action": vec}, load_tokenizer())
    return path


def test_demo_quick_student_faster_and_actions_sane(tmp_path: Path, capsys) -> None:
    teacher = save_testbed_teacher(tmp_path / "teacher")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--teacher", str(teacher), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in (
        "[1/6] teacher",
        "[2/6] collect",
        "[3/6] distill",
        "[4/6] eval",
        "[5/6] bench",
        "[6/6] report",
    ):
        assert stage in printed

    res = json.loads((out / "demo_results.json").read_text())
    pol = {p["name"]: p for p in res["policies"]}
    t, s = pol["teacher"], pol["student_L6"]
    assert (t["depth"], s["depth"]) == (18, 6)
    # Latency is reported, not asserted: timings belong to benchmarks (the ratio is in the bench JSON).
    for p in (t, s):
        assert p["latency_ms"] > 0 and math.isfinite(p["latency_ms"])
    assert s["speedup"] == pytest.approx(t["latency_ms"] / s["latency_ms"], rel=1e-2)
    for name in ("teacher", "student_L6"):
        probe = res["probe"][name]
        assert probe["shape"] == [10, 4]
        assert probe["finite"], f"{name} produced non-finite actions"
        assert -1.0 <= probe["executed_min"] <= probe["executed_max"] <= 1.0
        assert 0.0 <= pol[name]["mean"] <= 100.0

    md = (out / "demo.md").read_text()
    assert "| policy | layers | reach |" in md
    assert "| teacher L18 | 18 |" in md and "| L6 task+KD+attn" in md
    assert "speed-up" in md
    assert str(out / "demo.md") in printed
    # The student is a real, loadable policy folder with the teacher's processor.
    assert (out / "policies" / "student_L6" / "model.safetensors").is_file()
    assert (out / "policies" / "student_L6" / "tokenizer.model").is_file()


def test_demo_without_teacher_says_so_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from shallowpi.study import pipeline

    monkeypatch.setattr(pipeline, "bundled_teacher_path", lambda: tmp_path / "no_teacher")
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bundled teacher" in err[0] and "--teacher" in err[0]
    assert not (tmp_path / "demo").exists()  # nothing half-written


def test_demo_with_the_bundled_teacher_evaluates_its_shipped_student(tmp_path: Path, capsys) -> None:
    """No --teacher: the bundled teacher, the student the demo distils, and the shipped full-schedule student
    on the same held-out episodes, in the results and the report."""
    from shallowpi.study import pipeline

    shipped = pipeline.bundled_student_path()
    assert shipped is not None, "the package ships the bundled teacher's full-schedule student"
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "demo_results.json").read_text())
    pol = {p["name"]: p for p in res["policies"]}
    assert set(pol) == {"teacher", "student_L6", "shipped_student"}
    assert pol["shipped_student"]["depth"] == 6
    assert pol["shipped_student"]["latency_ms"] == pol["student_L6"]["latency_ms"]  # one L6 architecture
    for name in pol:
        assert res["probe"][name]["finite"]
    setups = {}
    for name in pol:
        settings = json.loads((out / "eval" / name / "eval_info.json").read_text())["settings"]
        setups[name] = [settings[k] for k in ("tasks", "episodes_per_task", "seed", "max_steps")]
    assert (
        setups["shipped_student"] == setups["teacher"] == setups["student_L6"]
    )  # the same held-out episodes
    assert "L6 shipped (full schedule)" in (out / "demo.md").read_text()
