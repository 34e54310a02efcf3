"""The study's report writer from synthetic results: success / efficiency / ablation tables, targets marked
met or missed with their numbers, the Pareto PNG when matplotlib is installed, and a bench result mapped
onto policies by depth."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shallowpi.study import plots as study_plots
from shallowpi.study import report as study_report
from shallowpi.study import results as study_results
from shallowpi.study import targets as study_targets

TASKS = ["reach-v3", "push-v3"]


def _results(
    l6_task=60.0, l6_task_kd=70.0, l6=80.0, scratch=50.0, teacher=81.0
) -> list[study_results.PolicyResult]:
    def pr(name, label, depth, kind, mean, lat):
        return study_results.PolicyResult(
            name,
            label,
            depth,
            kind,
            {"reach-v3": mean + 10, "push-v3": mean - 10},
            50,
            latency_ms=lat,
            latency_p90_ms=lat * 1.1,
            flops=depth * 1e8,
            speedup=90.0 / lat,
        )

    return [
        pr("teacher", "teacher L18", 18, "teacher", teacher, 90.0),
        pr("L9_task_kd_attn", "L9 task+KD+attn", 9, "student", 80.0, 50.0),
        pr("L6_task_kd_attn", "L6 task+KD+attn", 6, "student", l6, 33.0),
        pr("L6_task", "L6 task", 6, "ablation", l6_task, 33.0),
        pr("L6_task_kd", "L6 task+KD", 6, "ablation", l6_task_kd, 33.0),
        pr("L6_attn_initial", "L6 attn@initial", 6, "ablation", 75.0, 33.0),
        pr("L6_attn_late", "L6 attn@late", 6, "ablation", 77.0, 33.0),
        pr("L6_scratch", "L6 from scratch (task loss)", 6, "scratch", scratch, 33.0),
    ]


def test_markdown_has_paper_tables_and_marks_targets(tmp_path: Path) -> None:
    md = study_report.render_markdown(
        "study",
        _results(),
        TASKS,
        settings={"eval": "50 episodes"},
        commands=["shallowpi collect metaworld ..."],
        regenerate="python scripts/study_metaworld.py",
    )
    assert "| policy | layers | reach | push | **mean** | 95 % CI ± |" in md
    # per task, mean, and 1.96 * sqrt((.91*.09 + .71*.29) / 50) / 2 = 7.4 pts
    assert "| teacher L18 | 18 | 91 | 71 | **81.0** | 7.4 |" in md
    assert "| L6 task+KD+attn | 6 | 80.0 | 33.0 | 36.3 | 0.600 | 2.73× |" in md  # latency, FLOPs, speed-up
    assert "| task + KD + attn | 80.0 |" in md and "| task | 60.0 |" in md  # loss ablation
    assert "| initial | 75.0 |" in md and "| middle | 80.0 |" in md and "| late | 77.0 |" in md
    assert "- L6 within 1 pts of the teacher: **met** (teacher 81.0 %, L6 80.0 % (drop +1.0 pts))" in md
    assert "- L6 >= scratch L6 + 20 pts: **met**" in md
    assert "- task < task+KD < task+KD+attn (L6): **met** (60.0 < 70.0 < 80.0 %)" in md
    assert "- CPU latency L6 / L18 <= 0.40: **met** (33.0 / 90.0 ms = 0.367)" in md
    assert "python scripts/study_metaworld.py" in md and "shallowpi collect metaworld ..." in md


def test_missed_and_unmeasured_targets_are_reported_honestly() -> None:
    res = _results(l6_task=75.0, l6_task_kd=70.0, l6=70.0, scratch=68.0)
    verdicts = {t.text: t.met for t in study_targets.check_targets(res)}
    assert verdicts["L6 within 1 pts of the teacher"] is False
    assert verdicts["L6 >= scratch L6 + 20 pts"] is False
    assert verdicts["task < task+KD < task+KD+attn (L6)"] is False
    only_teacher = [r for r in res if r.name == "teacher"]
    md = study_report.render_markdown("study", only_teacher, TASKS)
    assert md.count("not measured") == 4
    assert "| task + KD | – |" in md  # missing variants shown as dashes, not invented


def test_attach_bench_maps_latency_by_depth() -> None:
    res = [
        study_results.PolicyResult("teacher", "t", 18, "teacher"),
        study_results.PolicyResult("L6_task", "a", 6, "ablation"),
        study_results.PolicyResult("L4_task_kd_attn", "s", 4, "student"),
    ]
    bench = {
        "runs": [
            {"depth": 18, "latency_ms": {"median": 60.0, "p90": 70.0}, "flops": {"total": 6e8}},
            {"depth": 6, "latency_ms": {"median": 20.0, "p90": 25.0}, "flops": {"total": 2e8}},
        ]
    }
    study_results.attach_bench(res, bench)
    assert (res[1].latency_ms, res[1].flops, res[1].speedup) == (20.0, 2e8, 3.0)
    assert res[0].speedup == 1.0
    assert res[2].latency_ms is None  # not benchmarked: left empty, not guessed


def _bench_run(depth, steps, ms, denoise):
    return {
        "depth": depth,
        "steps": steps,
        "latency_ms": {"median": ms, "p90": ms},
        "flops": {"total": 1e8},
        "stages_ms": {"vision": {"median": 1.0}, "prefix": {"median": 2.0}, "denoise": {"median": denoise}},
    }


def test_attach_bench_times_few_step_students_by_their_step_count() -> None:
    res = [
        study_results.PolicyResult("teacher", "t", 18, "teacher"),
        study_results.PolicyResult("L6_task_kd_attn", "s", 6, "student"),
        study_results.PolicyResult("L6_K2_distilled", "d2", 6, "steps", num_steps=2),
        study_results.PolicyResult("L6_K1_naive", "n1", 6, "steps", num_steps=1),
        study_results.PolicyResult("L6_K4_naive", "n4", 6, "steps", num_steps=4),
    ]
    bench = {
        "runs": [
            _bench_run(18, 10, 80.0, 70.0),
            _bench_run(6, 10, 30.0, 25.0),
            _bench_run(6, 2, 10.0, 5.0),
            _bench_run(6, 1, 8.0, 3.0),
        ]
    }
    study_results.attach_bench(res, bench)
    assert [r.latency_ms for r in res] == [80.0, 30.0, 10.0, 8.0, None]  # K=4 was not benched: left empty
    assert res[2].stages_ms == {"vision": 1.0, "prefix": 2.0, "denoise": 5.0}
    assert res[2].speedup == 8.0


def _step_results(distilled: float, naive: float) -> list[study_results.PolicyResult]:
    def pr(name, depth, kind, mean, k, lat, outcomes):
        return study_results.PolicyResult(
            name,
            name,
            depth,
            kind,
            {"reach-v3": mean, "push-v3": mean},
            10,
            latency_ms=lat,
            outcomes={"reach-v3": outcomes, "push-v3": outcomes},
            num_steps=k,
        )

    def hits(mean):  # 10 episodes per task, the first mean/10 of them succeed
        return [i < round(mean / 10) for i in range(10)]

    return [
        pr("teacher", 18, "teacher", 80.0, None, 80.0, hits(80.0)),
        pr("L6_K2_naive", 6, "steps", naive, 2, 10.0, hits(naive)),
        pr("L6_K2_distilled", 6, "steps", distilled, 2, 10.0, hits(distilled)),
    ]


def test_step_targets_and_the_few_step_section() -> None:
    met = {t.text.split(" (")[0]: t for t in study_targets.check_step_targets(_step_results(80.0, 70.0))}
    assert [t.met for t in met.values()] == [True, True, True]
    assert (
        "+10.0 pts (80.0 vs 70.0 %); paired 95 % CI of the gain: +10.0"
        in met["L6@2 distilled >= 5 pts above L6@2 naive"].detail
    )
    missed = study_targets.check_step_targets(_step_results(70.0, 70.0))
    assert [t.met for t in missed] == [False, False, True]
    md = study_report.render_markdown("study", _step_results(70.0, 60.0), TASKS)
    assert "## Fewer denoising steps (L6)" in md
    assert "| L6_K2_distilled | 6 | 2 | 70.0 |" in md and "| -10.0 ± " in md and "| 10.0 | 0.12 |" in md
    assert "- L6@2 distilled >= 5 pts above L6@2 naive: **met**" in md
    assert "- L6@2 distilled within 2 pts of teacher@10: **missed**" in md
    assert "Fewer denoising steps" not in study_report.render_markdown("study", _results(), TASKS)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")
def test_pareto_png_written(tmp_path: Path) -> None:
    path = study_plots.plot_pareto(_results(), tmp_path / "sub" / "pareto.png", title="t")
    assert path == tmp_path / "sub" / "pareto.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_pareto_without_matplotlib_logs_and_skips(tmp_path: Path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    logs: list[str] = []
    assert study_plots.plot_pareto(_results(), tmp_path / "p.png", log=logs.append) is None
    assert not (tmp_path / "p.png").exists() and "matplotlib is not installed" in logs[0]


def test_paired_difference_pairs_episodes_and_reports_its_interval() -> None:
    a = study_results.PolicyResult("teacher", "t", 18, "teacher", {"reach-v3": 75.0}, 4)
    b = study_results.PolicyResult("L6_task_kd_attn", "s", 6, "student", {"reach-v3": 50.0}, 4)
    assert study_results.paired_difference(a, b) is None  # no per-episode outcomes: no paired claim
    a.outcomes = {"reach-v3": [True, True, True, False]}
    b.outcomes = {"reach-v3": [True, False, True, False]}
    diff, half = study_results.paired_difference(a, b)
    # d = [0, 1, 0, 0]: mean 0.25, sample variance 0.25, se = sqrt(0.25 / 4) = 0.25
    assert diff == pytest.approx(25.0) and half == pytest.approx(1.96 * 25.0)
    b.outcomes = {"reach-v3": [True, False]}  # episodes that do not line up are not paired
    assert study_results.paired_difference(a, b) is None
    b.outcomes = {"reach-v3": [True, False, True, False]}
    text = {t.text: t.detail for t in study_targets.check_targets([a, b])}["L6 within 1 pts of the teacher"]
    assert "paired 95 % CI of the drop: +25.0 ± 49.0 pts" in text


def test_pooled_seeds_pair_per_setup_with_a_single_run() -> None:
    def one(name, outcomes):
        return study_results.PolicyResult(
            name,
            name,
            6,
            "ablation",
            {"reach-v3": 100 * sum(outcomes) / 4},
            4,
            outcomes={"reach-v3": outcomes},
        )

    s0, s1 = one("s0", [True, True, False, False]), one("s1", [True, False, False, False])
    pooled = study_results.pool_runs("L6", "L6 (2 seeds)", [s0, s1])
    assert pooled.runs == 2 and pooled.success == {"reach-v3": 37.5} and pooled.episodes_per_task == 8
    teacher = one("teacher", [True, True, True, False])
    diff, half = study_results.paired_difference(teacher, pooled)
    # per setup: teacher [1, 1, 1, 0], pooled [1, .5, 0, 0] -> d = [0, .5, 1, 0]: mean .375,
    # sample variance (0.140625 + 0.015625 + 0.390625 + 0.140625) / 3 = 0.229167, se = sqrt(0.229167 / 4)
    assert diff == pytest.approx(37.5) and half == pytest.approx(100 * 1.96 * (0.229167 / 4) ** 0.5, rel=1e-4)
    # A single 8-episode eval is not two seeds of 4: lengths per run differ, so nothing is paired.
    assert study_results.paired_difference(one("long", [True] * 8), teacher) is None


def _seeds(name: str, label: str, runs: list[list[bool]]) -> study_results.PolicyResult:
    """Training seeds of one recipe (one task, each seed's episodes on the same setups), pooled."""
    each = [
        study_results.PolicyResult(
            f"{name}_seed{1000 + k}",
            label,
            6,
            "ablation",
            {"reach-v3": 100 * sum(o) / len(o)},
            len(o),
            outcomes={"reach-v3": o},
        )
        for k, o in enumerate(runs)
    ]
    return study_results.pool_runs(name, label, each)


def test_seed_difference_is_welch_over_each_seeds_mean() -> None:
    task = _seeds("L6_task", "task", [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])  # 50, 75, 25 %
    full = _seeds("L6_task_kd_attn", "full", [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])  # 100, 75, 50 %
    assert study_results.seed_means(task) == pytest.approx([50.0, 75.0, 25.0])
    diff, half = study_results.seed_difference(full, task)
    # means 75 and 50, each seed variance 625: se = sqrt(625/3 + 625/3); Welch-Satterthwaite df 4, t 2.776
    assert diff == pytest.approx(25.0) and half == pytest.approx(2.776 * (1250 / 3) ** 0.5)
    # The paired interval (weights fixed, over setups) is much narrower than the one over seeds.
    assert study_results.paired_difference(full, task)[1] < half
    one_seed = _seeds("L6_task_kd", "kd", [[1, 1, 0, 0]])
    assert study_results.seed_difference(one_seed, task) is None  # one seed says nothing about seeds
    assert study_results.t95(2) == 4.303 and study_results.t95(30) == pytest.approx(2.042, abs=0.005)
    assert study_results.t95(200) == pytest.approx(1.972, abs=0.005)


def test_loss_ablation_shows_each_seed_and_the_interval_over_seeds() -> None:
    teacher = study_results.PolicyResult(
        "teacher", "teacher L18", 18, "teacher", {"reach-v3": 75.0}, 4, outcomes={"reach-v3": [1, 1, 1, 0]}
    )
    res = [
        teacher,
        _seeds("L6_task", "L6 task (3 seeds)", [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]),
        _seeds("L6_task_kd", "L6 task+KD (3 seeds)", [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]]),
        _seeds("L6_task_kd_attn", "L6 task+KD+attn (3 seeds)", [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]),
    ]
    md = study_report.render_markdown("study", res, ["reach-v3"])
    assert "## Loss ablation (L6) (3 training seeds each, pooled)" in md
    assert "seeds (% each) | vs L6 task (3 seeds) over seeds (pts) |" in md
    half = 2.776 * (1250 / 3) ** 0.5
    assert "| task + KD + attn | 75.0 |" in md and f"| 100.0, 75.0, 50.0 | +25.0 ± {half:.1f} |" in md
    assert "| task | 50.0 |" in md and "| 50.0, 75.0, 25.0 | – |" in md  # the reference against itself: none
    ordering = next(t for t in study_targets.check_targets(res) if t.text.startswith("task < task+KD"))
    # KD 66.7 - task 50: seeds (75, 50, 75) vs (50, 75, 25), variances 208.3 and 625: df 3.2 -> 3, t 3.182
    kd_half = 3.182 * ((625 / 3 / 3) + 625 / 3) ** 0.5
    assert f"over training seeds, the KD gain: +16.7 ± {kd_half:.1f} pts" in ordering.detail


def test_released_initialisation_over_seeds_is_compared_with_its_recipe_over_seeds() -> None:
    teacher = study_results.PolicyResult(
        "teacher", "teacher L18", 18, "teacher", {"reach-v3": 75.0}, 4, outcomes={"reach-v3": [1, 1, 1, 0]}
    )
    kd = _seeds("L6_task_kd", "L6 task+KD (3 seeds)", [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    one = _seeds("L6_released", "L6 released", [[1, 1, 0, 0]])
    md = study_report.render_markdown("study", [teacher, kd, one], ["reach-v3"])
    assert "over training seeds (L6, task + KD)" not in md  # one seed: no interval over seeds to give
    assert "| released initialisation (backbone layers 0-5, expert subsampled, task + KD) | 50.0 |" in md
    two = _seeds("L6_released", "L6 released (2 seeds)", [[1, 1, 0, 0], [1, 0, 0, 0]])  # 50, 25 %
    md = study_report.render_markdown("study", [teacher, kd, two], ["reach-v3"])
    assert "## Released initialisation over training seeds (L6, task + KD)" in md
    # 37.5 - 66.7: variances 312.5 (2 seeds) and 208.3 (3 seeds); Welch-Satterthwaite df 1.9 -> 1, t 12.706
    half = 12.706 * (312.5 / 2 + 625 / 3 / 3) ** 0.5
    assert "| released (backbone layers 0-5) | 37.5 |" in md and f"| 50.0, 25.0 | -29.2 ± {half:.1f} |" in md


def test_outcomes_follow_setup_order_across_worker_chunks() -> None:
    from shallowpi.study.pipeline import outcomes_by_task

    info = {
        "per_task": [
            {"task_group": "reach-v3", "metrics": {"config_indices": [2, 3], "successes": [True, False]}},
            {"task_group": "reach-v3", "metrics": {"config_indices": [0, 1], "successes": [False, True]}},
        ]
    }
    assert outcomes_by_task(info) == {"reach-v3": [False, True, True, False]}


def test_outcomes_pair_setups_past_fifty_episodes() -> None:
    """With 100 episodes a task's configuration indices repeat under MT1 seed 1001; (seed, index) names the
    setup. Sorting by index alone would interleave the two seeds and break the pairing."""
    from shallowpi.study.pipeline import outcomes_by_task

    info = {
        "per_task": [
            {
                "task_group": "reach-v3",
                "metrics": {"seeds": [1001, 1000], "config_indices": [0, 0], "successes": [True, False]},
            },
            {
                "task_group": "reach-v3",
                "metrics": {"seeds": [1001, 1000], "config_indices": [1, 1], "successes": [False, True]},
            },
        ]
    }
    # setups in order (1000, 0), (1000, 1), (1001, 0), (1001, 1)
    assert outcomes_by_task(info) == {"reach-v3": [False, True, True, False]}


def test_eval_thread_budget_is_shared_by_the_workers(tmp_path: Path, monkeypatch) -> None:
    """`--threads 2` with 2 sim workers must give each worker 1 torch thread, not 2 (4 on 2 cores ran > 3x
    slower in the study)."""
    import shallowpi.sim.evaluate as sim_evaluate
    from shallowpi.study.pipeline import EvalSpec, evaluate_policy

    seen = []

    class _Done:
        info = {"overall": {}}

    monkeypatch.setattr(sim_evaluate, "evaluate", lambda cfg, out, progress: seen.append(cfg) or _Done())
    for threads, workers, per_worker in [(2, 2, 1), (4, 2, 2), (1, 2, 1), (None, 2, None)]:
        spec = EvalSpec(["reach-v3"], 1, 64, workers=workers, threads=threads)
        evaluate_policy("p", spec, tmp_path / f"{threads}_{workers}", progress=False)
        assert seen[-1].threads_per_worker == per_worker


def test_targets_are_checked_again_at_the_longest_schedule_with_a_scratch_baseline() -> None:
    """The main L6 (short schedule) may miss what the long one meets: both verdicts are reported, each
    against a from-scratch L6 trained for the same number of steps."""
    res = _results(l6=60.0, scratch=50.0, teacher=81.0)
    long_l6 = study_results.PolicyResult(
        "L6_steps4800", "L6, 4800 steps", 6, "schedule", {"reach-v3": 90.0, "push-v3": 72.0}, 50
    )
    long_scratch = study_results.PolicyResult(
        "L6_scratch_steps4800", "scratch, 4800 steps", 6, "scratch", {"reach-v3": 70.0, "push-v3": 50.0}, 50
    )
    assert (
        study_targets.long_schedule(res + [long_l6]) is None
    )  # no scratch of that length: no second verdict
    verdicts = {t.text: t.met for t in study_targets.check_targets(res + [long_l6, long_scratch])}
    assert verdicts["L6 within 1 pts of the teacher"] is False
    assert verdicts["L6 within 1 pts of the teacher (both 4800 steps)"] is True  # 81.0 vs 81.0
    assert verdicts["L6 >= scratch L6 + 20 pts (both 4800 steps)"] is True  # 81.0 vs 60.0
    md = study_report.render_markdown("study", res + [long_l6, long_scratch], TASKS)
    assert "## Loss ablation and scratch baseline at the longest schedule (L6, 4800 steps, one seed)" in md
    assert "| same architecture from scratch (task loss) | 60.0 |" in md
    assert "| task + KD | – |" in md.split("longest schedule")[1]  # not run at that length: a dash
    assert "task < task+KD < task+KD+attn (L6) (4800 steps)" not in md  # no ordering without all three
    task = study_results.PolicyResult(
        "L6_task_steps4800", "t", 6, "ablation", {"reach-v3": 80.0, "push-v3": 60.0}, 50
    )
    kd = study_results.PolicyResult(
        "L6_task_kd_steps4800", "k", 6, "ablation", {"reach-v3": 85.0, "push-v3": 65.0}, 50
    )
    verdicts = {t.text: t.met for t in study_targets.check_targets(res + [long_l6, long_scratch, task, kd])}
    assert verdicts["task < task+KD < task+KD+attn (L6) (4800 steps)"] is True  # 70 < 75 < 81


def test_pareto_axis_shows_where_the_points_are_and_floors_a_far_outlier() -> None:
    from shallowpi.study.plots import _floor

    assert _floor([57.0, 61.0, 69.0, 74.0]) == 51.0  # the lowest point, 6 pts of margin
    assert _floor([5.9, 49.0, 61.0, 69.0]) == 43.0  # 5.9 is 43 pts below the rest: drawn on the floor
    assert _floor([0.0, 2.0]) == -3.0  # never below the plot's usual floor


def test_pareto_key_lists_each_plotted_policy_once_in_family_order() -> None:
    from shallowpi.study.plots import _pareto_points

    rs = _results()
    pts = _pareto_points(rs)
    assert [r.kind for r in pts][0] == "teacher"
    assert len({r.name for r in pts}) == len(pts)
    assert {r.name for r in pts} == {r.name for r in rs if r.latency_ms is not None and r.pooled_in is None}


def _paired_result(name: str, outcomes: list[bool]) -> study_results.PolicyResult:
    """One task, per-episode outcomes in setup order (what paired differences read)."""
    pc = 100.0 * sum(outcomes) / len(outcomes)
    return study_results.PolicyResult(
        name, name, 6, "student", {"reach-v3": pc}, len(outcomes), outcomes={"reach-v3": outcomes}
    )


def test_prefix_targets_read_the_paired_difference_and_say_whether_its_interval_settles_it() -> None:
    teacher = _paired_result("teacher", [True] * 80 + [False] * 20)
    both = _paired_result("both", [True] * 79 + [False] * 21)  # one setup lost: -1 pt
    plain = _paired_result("plain", [True] * 80 + [False] * 20)
    merge = _paired_result("merge", [True] * 60 + [False] * 40)  # twenty setups lost: -20 pts
    tower = _paired_result("tower", [True] * 78 + [False] * 22)  # exactly -2: "less than 2" fails
    same = _paired_result("same", [True] * 80 + [False] * 20)
    missing = study_targets.check_prefix_targets([teacher], "both", [("merge", "plain")])
    assert [t.met for t in missing] == [None, None]
    out = study_targets.check_prefix_targets(
        [teacher, both, plain, merge, tower, same],
        "both",
        [("merge", "plain"), ("tower", "plain"), ("same", "plain")],
    )
    assert [t.text for t in out] == [
        "both within 2 pts of teacher",
        "merge costs less than 2 pts against plain",
        "tower costs less than 2 pts against plain",
        "same costs less than 2 pts against plain",
    ]
    assert [t.met for t in out] == [True, False, False, True]
    # one lost setup in 100: -1 ± 1.96 * sqrt(0.99 / 99) * 10 = -1 ± 2.0 pts, which reaches past -2
    assert (
        out[0].detail
        == "79.0 vs 80.0 %, difference -1.0 pts, paired 95 % CI -3.0 to +1.0 (the interval straddles -2)"
    )
    assert out[1].detail.startswith("60.0 vs 80.0 %, difference -20.0 pts") and "settles it" in out[1].detail
    assert out[3].detail.endswith("paired 95 % CI +0.0 to +0.0 (the interval settles it)")


def test_settings_say_how_each_chunk_ran() -> None:
    # A policy that re-plans every 5 actions must not be reported as running its whole chunk open-loop.
    assert (
        study_report.chunk_execution({"teacher": 5, "L6": 5}) == "first 5 actions of each chunk, then re-plan"
    )
    assert study_report.chunk_execution({"teacher": None}) == "whole chunk executed open-loop"
    mixed = study_report.chunk_execution({"teacher": 5, "L6": 5, "old": None})
    assert mixed == (
        "first 5 actions of each chunk, then re-plan (teacher, L6); whole chunk executed open-loop (old)"
    )


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")
def test_schedule_axis_labels_only_the_schedules_run(tmp_path: Path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(study_plots, "save_figure_atomic", lambda fig, path: figures.append(fig) or path)
    r = study_results.by_name(_results())
    rows = [(1200, r["L6_task_kd_attn"]), (2400, r["L6_task_kd_attn"]), (4800, r["L6_task_kd_attn"])]
    study_plots.plot_schedule(rows, r["teacher"], tmp_path / "s.png")
    ax = figures[0].axes[0]
    figures[0].canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
    assert shown == ["1200", "2400", "4800"]
