"""scripts/study_prefix.py end to end at toy sizes on the bundled teacher (1 task, 1 demo, 1 training step per
student, 1 short episode, 2 bench calls): every stage runs, the table has the nine policies with their paired
columns, the compressed students keep their prefix through step distillation, the bench times each
student's architecture, a second run reuses everything, and a work folder of another teacher is refused."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from shallowpi.errors import UserError
from shallowpi.model.checkpoint import read_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

TOY = ["--smoke", "--tasks", "reach", "--demos-per-task", "1", "--depth-steps", "1", "--step-steps", "1"]
TOY += ["--batch-size", "2", "--save-every", "1", "--bench-iters", "2", "--workers", "1", "--threads", "1"]
TOY += ["--in-process"]  # no interpreter start-up per shallowpi command
NAMES = ["teacher", "L6", "L6_m2", "L6_v2", "L6_m2_v2", "L6_K2", "L6_m2_K2", "L6_v2_K2", "L6_m2_v2_K2"]


def _outputs(work: Path) -> dict[Path, int]:
    """What a rerun must leave alone: the command log, the bench, every evaluation and trained checkpoint."""
    files = [work / "commands.log", work / "bench.json", *work.glob("eval/*/eval_info.json")]
    files += [
        *(work / "results" / "evals").glob("*.json"),
        *work.glob("train/*/checkpoints/*/pretrained_model/*"),
    ]
    return {f: f.stat().st_mtime_ns for f in files}


def test_prefix_study_end_to_end_resumes_and_keeps_the_prefix(tmp_path: Path, one_thread) -> None:
    import study_prefix

    work = tmp_path / "work"
    argv = ["--work", str(work), *TOY]
    assert study_prefix.main(argv) == 0
    report = json.loads((work / "results" / "prefix.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == NAMES
    # the bundled teacher: 64 tokens per camera (8 x 8), 4 SigLIP layers; merge 2 x 2 leaves 16, the tower
    # default is half of it
    shape = {n: (r["image_tokens"], r["vision_depth"], r["steps"]) for n, r in rows.items()}
    assert shape == {
        "teacher": (64, 4, 10),
        "L6": (64, 4, 10),
        "L6_m2": (16, 4, 10),
        "L6_v2": (64, 2, 10),
        "L6_m2_v2": (16, 2, 10),
        "L6_K2": (64, 4, 2),
        "L6_m2_K2": (16, 4, 2),
        "L6_v2_K2": (64, 2, 2),
        "L6_m2_v2_K2": (16, 2, 2),
    }

    # Step distillation keeps each student's prefix: its config.json has the merge and the tower's map.
    for name in ("L6_m2", "L6_v2", "L6_m2_v2"):
        base, two = read_config(work / "policies" / name), read_config(work / "policies" / f"{name}_K2")
        assert (two.vision, two.vision_layer_map, two.layer_map) == (
            base.vision,
            base.vision_layer_map,
            base.layer_map,
        )
        assert two.time_grid() == [1.0, 0.5, 0.0] and base.num_inference_steps == 10
    assert read_config(work / "policies" / "L6_m2_v2_K2").vision_layer_map == [0, 3]

    # Paired columns: every student against the teacher, each compressed one against plain L6 at its steps.
    assert rows["teacher"]["vs_teacher"] is None and rows["teacher"]["vs_plain"] is None
    assert rows["L6"]["vs_plain"] is None and rows["L6_K2"]["vs_plain"] is None
    for name in NAMES[1:]:
        assert set(rows[name]["vs_teacher"]) == {"mean", "ci95"}
    for name, ref in (("L6_m2", "L6"), ("L6_v2_K2", "L6_K2"), ("L6_m2_v2_K2", "L6_K2")):
        assert rows[name]["vs_plain"]["reference"] == ref
    md = (work / "results" / "prefix.md").read_text()
    assert "| policy | image tokens / camera | SigLIP layers | steps | success % | paired vs teacher | " in md
    assert "| L6 + merge 2 + tower 2 @2 | 16 | 2 | 2 | " in md and "| teacher L18 @10 | 64 | 4 | 10 | " in md
    texts = [t["text"] for t in report["targets"]]
    assert texts[0] == "L6 + merge 2 + tower 2 @2 within 2 pts of teacher L18 @10"
    assert "L6 + tower 2 @2 costs less than 2 pts against L6 @2" in texts and len(texts) == 5
    assert all(t["met"] is not None for t in report["targets"])
    assert "python scripts/study_prefix.py --work" in md and "--stages" not in report["command"]

    # Cost: all nine benched in one process; FLOPs at full size as benchmarks/prefix_cost.py counts them.
    assert all(
        r["latency_ms"] > 0 and set(r["stages_ms"]) == {"vision", "prefix", "denoise"} for r in rows.values()
    )
    assert len({r["pid"] for r in json.loads((work / "bench.json").read_text())["runs"]}) == 1
    # Each student is timed on the untrained student of its config: the trained one's architecture and steps.
    for name in NAMES[1:]:
        timed, trained = read_config(work / "bench_models" / name), read_config(work / "policies" / name)
        assert (timed.vision, timed.vision_layer_map, timed.layer_map, timed.time_grid()) == (
            trained.vision,
            trained.vision_layer_map,
            trained.layer_map,
            trained.time_grid(),
        ), name
    full = rows["L6_m2_v2_K2"]["flops"]
    assert full["full_shape"] == {"depth": 6, "image_tokens": 64, "vision_depth": 14, "steps": 2}
    measured = json.loads((REPO / "benchmarks" / "results" / "prefix_cost.json").read_text())["rows"]
    by_name = {r["name"]: r["flops"]["total"] for r in measured}
    assert full["full"]["total"] == by_name["L6_K2_merge2_vision14"]
    assert rows["L6_m2_v2_K2"]["flops_ratio_full"] == pytest.approx(
        by_name["L6_K2_merge2_vision14"] / by_name["teacher_L18_K10"]
    )
    assert rows["L6_m2_v2_K2"]["flops_ratio_testbed"] < rows["L6_K2"]["flops_ratio_testbed"] < 1

    # A second run trains, evaluates and benches nothing again.
    before = _outputs(work)
    assert study_prefix.main(argv) == 0
    assert _outputs(work) == before

    # Another teacher's study must not resume from this folder.
    other = shutil.copytree(REPO / "src" / "shallowpi" / "assets" / "teacher_metaworld", tmp_path / "other")
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    with pytest.raises(UserError, match="another teacher"):
        study_prefix.Study(study_prefix.parse_args(["--work", str(work), "--smoke", "--teacher", str(other)]))


def test_prefix_study_only_runs_the_named_policies(tmp_path: Path, one_thread) -> None:
    """--only trains (and evaluates) just the named policies, so a session can finish the one that matters
    first; a misspelt name is refused before anything runs."""
    import study_prefix

    work = tmp_path / "work"
    argv = ["--work", str(work), *TOY, "--stages", "collect,students,steps", "--only", "L6_v2,L6_v2_K2"]
    assert study_prefix.main(argv) == 0
    trained = sorted(p.name for p in (work / "policies").iterdir() if p.name != "teacher")
    assert trained == ["L6_v2", "L6_v2_K2"]
    assert read_config(work / "policies" / "L6_v2_K2").vision_layer_map == [0, 3]

    with pytest.raises(UserError, match=r"--only: unknown policy name\(s\) \['L6_m3'\]"):
        study_prefix.Study(study_prefix.parse_args(["--work", str(work), "--smoke", "--only", "L6,L6_m3"]))
