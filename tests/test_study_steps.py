"""scripts/study_steps.py end to end at toy sizes on the bundled teacher (1 task, 1 demo, 1 training step per
student, 1 short episode, 2 bench calls): every stage runs, the report lists teacher, L6 and each K's naive
and step-distilled students in order, the naive ones sample K uniform steps with L6's weights while the
distilled ones carry their own time grid, every policy is evaluated, and a second run reuses everything."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from shallowpi.model.checkpoint import read_config
from shallowpi.model.config import uniform_time_grid
from shallowpi.paths import portable_argv

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

TOY = ["--smoke", "--tasks", "reach", "--demos-per-task", "1", "--depth-steps", "1", "--step-steps", "1"]
TOY += ["--batch-size", "2", "--save-every", "1", "--bench-iters", "2", "--workers", "1", "--threads", "1"]
TOY += ["--ks", "2,1", "--in-process"]  # two step counts: the order is per K; no interpreter per command
NAMES = ["teacher", "L6", "L6_K2_naive", "L6_K2_distilled", "L6_K1_naive", "L6_K1_distilled"]


def _outputs(work: Path) -> dict[Path, int]:
    """What a rerun must leave alone: the command log, the bench, every evaluation and trained checkpoint."""
    files = [work / "commands.log", work / "bench.json", *work.glob("eval/*/eval_info.json")]
    files += [
        *(work / "results" / "evals").glob("*.json"),
        *work.glob("train/*/checkpoints/*/pretrained_model/*"),
    ]
    return {f: f.stat().st_mtime_ns for f in files}


def test_steps_study_end_to_end_lists_naive_and_distilled_students_and_resumes(
    tmp_path: Path, one_thread
) -> None:
    import study_steps

    work = tmp_path / "work"
    argv = ["--work", str(work), *TOY]
    assert study_steps.main(argv) == 0
    results = work / "results"  # --smoke: toy numbers never land in results/steps
    report = json.loads((results / "steps.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == NAMES
    assert {n: r["steps"] for n, r in rows.items()} == dict(zip(NAMES, [10, 10, 2, 2, 1, 1], strict=True))
    assert {n: r["kind"] for n, r in rows.items()} == {
        "teacher": "teacher",
        "L6": "student",
        "L6_K2_naive": "skip",
        "L6_K2_distilled": "student",
        "L6_K1_naive": "skip",
        "L6_K1_distilled": "student",
    }
    assert {r["depth"] for n, r in rows.items() if n != "teacher"} == {6}

    # Naive: L6's weights sampled with K uniform Euler steps; distilled: K steps on its own recorded grid.
    l6 = work / "policies" / "L6"
    for k in (2, 1):
        naive = read_config(work / "policies" / f"L6_K{k}_naive")
        assert naive.depth == 6 and naive.num_inference_steps == k and naive.sampling_grid is None
        assert naive.time_grid() == uniform_time_grid(k)
        weights = (work / "policies" / f"L6_K{k}_naive" / "model.safetensors").read_bytes()
        assert weights == (l6 / "model.safetensors").read_bytes()
        distilled = read_config(work / "policies" / f"L6_K{k}_distilled")
        grid = distilled.time_grid()
        assert distilled.depth == 6 and distilled.num_inference_steps == k
        assert distilled.sampling_grid == grid and len(grid) == k + 1 and grid[0] == 1.0 and grid[-1] == 0.0
    assert read_config(l6).num_inference_steps == 10

    # Every policy evaluated, on the held-out setups, with a kept copy of its evaluation beside the report.
    for name in NAMES:
        info = json.loads((work / "eval" / name / "eval_info.json").read_text())
        kept = json.loads((results / "evals" / f"{name}.json").read_text())
        assert info["settings"]["episodes_per_task"] == kept["settings"]["episodes_per_task"] == 1
        assert [t["task_group"] for t in kept["per_task"]] == ["reach-v3"]
        assert rows[name]["success"].keys() == {"reach-v3"}
    assert all(
        r["latency_ms"] > 0 and set(r["stages_ms"]) == {"vision", "prefix", "denoise"} for r in rows.values()
    )
    assert len({r["pid"] for r in json.loads((work / "bench.json").read_text())["runs"]}) == 1

    md = (results / "steps.md").read_text()
    labels = [f"teacher L{read_config(work / 'policies' / 'teacher').depth} @10", "L6 @10"]
    labels += ["L6 @2 naive", "L6 @2 distilled", "L6 @1 naive", "L6 @1 distilled"]
    table = [line.split(" | ")[0].removeprefix("| ") for line in md.splitlines() if line.startswith("| ")]
    assert table == ["policy", *labels]  # the header, then one row per policy in order
    assert len(report["targets"]) == 3 and all(t["met"] is not None for t in report["targets"])
    # The command quoted is this call's arguments (main(argv)), not the test runner's sys.argv.
    command = "python " + shlex.join(["scripts/study_steps.py", *portable_argv(argv)])
    assert f"Regenerate: `{command}`" in md.splitlines()

    # A second run trains, evaluates and benches nothing again.
    before = _outputs(work)
    assert study_steps.main(argv) == 0
    assert _outputs(work) == before

    # The report alone, redone: the same table, and its command still regenerates every stage (no --stages).
    assert study_steps.main([*argv, "--stages", "report"]) == 0
    assert (results / "steps.md").read_text() == md and _outputs(work) == before

    # On another machine (WORK's evaluations gone, the kept copies committed) the report is the same.
    shutil.rmtree(work / "eval")
    assert study_steps.main([*argv, "--stages", "report"]) == 0
    assert (results / "steps.md").read_text() == md
