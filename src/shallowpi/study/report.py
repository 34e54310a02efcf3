"""Study results -> markdown tables (like the paper's): success per task, latency and FLOPs, ablations,
schedule, few-step students and the targets' verdicts.

Input is plain data (`PolicyResult`s plus the run's settings and commands), so the same writer serves the
full study (`scripts/study_metaworld.py`), the demo (`shallowpi demo`) and tests with synthetic numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from shallowpi.paths import portable_command
from shallowpi.study.results import PolicyResult, by_name, paired_difference, seed_difference, seed_means
from shallowpi.study.targets import (
    L6_MAX_DROP_PTS,
    Target,
    check_step_targets,
    check_targets,
    long_schedule,
)


def _fmt(x: float | None, spec: str = ".1f", none: str = "–") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _diff_cell(
    a: PolicyResult | None,
    b: PolicyResult | None,
    diff: Callable[[PolicyResult, PolicyResult], tuple[float, float] | None],
) -> str:
    d = diff(a, b) if a is not None and b is not None and a is not b else None
    return "–" if d is None else f"{d[0]:+.1f} ± {d[1]:.1f}"


def paired_cell(a: PolicyResult | None, b: PolicyResult | None) -> str:
    """A table cell with the paired difference a - b (pts) and its 95 % half-width; – where there is none."""
    return _diff_cell(a, b, paired_difference)


def seed_cell(a: PolicyResult | None, b: PolicyResult | None) -> str:
    """A table cell with a - b (pts) and its 95 % interval over training seeds; – with fewer than two each."""
    return _diff_cell(a, b, seed_difference)


def target_lines(targets: list[Target]) -> list[str]:
    """One markdown bullet per target: its text, the verdict in bold, the numbers behind it."""
    verdicts = {True: "**met**", False: "**missed**", None: "not measured"}
    return [f"- {t.text}: {verdicts[t.met]} ({t.detail})" for t in targets]


def chunk_execution(horizons: dict[str, int | None]) -> str:
    """How the evaluations ran each action chunk, from each policy's `actions_per_call` (its eval_info
    settings; None: the whole chunk): one phrase when all agree, else the policies grouped by horizon."""

    def phrase(n: int | None) -> str:
        return (
            "whole chunk executed open-loop"
            if n is None
            else f"first {n} actions of each chunk, then re-plan"
        )

    groups: dict[int | None, list[str]] = {}
    for name, n in horizons.items():
        groups.setdefault(n, []).append(name)
    if len(groups) <= 1:
        return phrase(next(iter(groups), None))
    return "; ".join(f"{phrase(n)} ({', '.join(names)})" for n, names in groups.items())


def _short(task: str) -> str:
    return task.removesuffix("-v3")


def steps_table(results: list[PolicyResult]) -> list[str]:
    """Teacher + few-step policies: success, paired difference, latency and its vision / prefix / denoise
    split (so the next bottleneck is visible)."""
    r = by_name(results)
    teacher = r.get("teacher")
    out = [
        "| policy | layers | steps | success % | 95 % CI ± | paired vs teacher (pts) | latency ms | × teacher "
        "| vision ms | prefix ms | denoise ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = ([teacher] if teacher else []) + [x for x in results if x.kind == "steps"]
    for x in rows:
        ratio = (
            x.latency_ms / teacher.latency_ms
            if teacher is not None and teacher.latency_ms and x.latency_ms
            else None
        )
        st = x.stages_ms or {}
        split = " | ".join(_fmt(st.get(k)) for k in ("vision", "prefix", "denoise"))
        out.append(
            f"| {x.label} | {x.depth} | {x.num_steps or 10} | {_fmt(x.mean)} | {_fmt(x.ci95)} | "
            f"{paired_cell(x, teacher)} | {_fmt(x.latency_ms)} | "
            f"{_fmt(ratio, '.2f')} | {split} |"
        )
    return out


def success_table(results: list[PolicyResult], tasks: list[str]) -> list[str]:
    """Rows = policies, columns = tasks + mean (% success on the held-out setups)."""
    head = "| policy | layers | " + " | ".join(_short(t) for t in tasks) + " | **mean** | 95 % CI ± |"
    rule = "|---|---:|" + "---:|" * len(tasks) + "---:|---:|"
    rows = [head, rule]
    for r in (x for x in results if x.pooled_in is None):
        cells = [_fmt(r.success.get(t), ".0f") for t in tasks]
        rows.append(
            f"| {r.label} | {r.depth} | " + " | ".join(cells) + f" | **{_fmt(r.mean)}** | {_fmt(r.ci95)} |"
        )
    return rows


def efficiency_table(results: list[PolicyResult]) -> list[str]:
    """One row per depth (students of one depth share an architecture, hence latency and FLOPs)."""
    rows = [
        "| policy | layers | mean success % | latency ms (median) | p90 ms | GFLOPs / call | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (x for x in results if x.pooled_in is None):
        gflops = None if r.flops is None else r.flops / 1e9
        speed = None if r.speedup is None else r.speedup
        rows.append(
            f"| {r.label} | {r.depth} | {_fmt(r.mean)} | {_fmt(r.latency_ms)} | {_fmt(r.latency_p90_ms)} "
            f"| {_fmt(gflops, '.3f')} | {_fmt(speed, '.2f')}{'' if speed is None else '×'} |"
        )
    return rows


def _lookup(r: dict[str, PolicyResult], names: str | tuple[str, ...]) -> PolicyResult | None:
    """The first of `names` present (a tuple names the seed-1000 run, then the older single-run name)."""
    for n in (names,) if isinstance(names, str) else names:
        if n in r:
            return r[n]
    return None


def ablation_table(
    results: list[PolicyResult],
    rows_spec: list[tuple[str | tuple[str, ...], str]],
    title: str,
    reference: str | None = None,
    seed_reference: str | None = None,
) -> list[str]:
    """Mean success of named variants (paper's ablations); missing ones shown as –. With `reference` (a
    result name), each row also gets its paired difference to that result; with `seed_reference` (a pooled
    result), each seed's mean and the difference to it with an interval over training seeds."""
    r = by_name(results)
    ref = r.get(reference) if reference else None
    sref = r.get(seed_reference) if seed_reference else None
    head = f"| {title} | L6 mean success % | 95 % CI ± |"
    head += f" paired vs {ref.label} (pts) |" if ref else ""
    head += f" seeds (% each) | vs {sref.label} over seeds (pts) |" if sref else ""
    out = [head, "|---|---:|---:|" + ("---:|" if ref else "") + ("---:|---:|" if sref else "")]
    for names, label in rows_spec:
        x = _lookup(r, names)
        row = f"| {label} | {_fmt(x.mean) if x else '–'} | {_fmt(x.ci95) if x else '–'} |"
        if ref:
            row += f" {paired_cell(x, ref)} |"
        if sref:
            each = seed_means(x) if x else None
            row += f" {', '.join(f'{m:.1f}' for m in each) if each else '–'} | {seed_cell(x, sref)} |"
        out.append(row)
    return out


LOSS_ABLATION = [("L6_task", "task"), ("L6_task_kd", "task + KD"), ("L6_task_kd_attn", "task + KD + attn")]
_L6_MAIN = ("L6_task_kd_attn_seed1000", "L6_task_kd_attn")  # one seed: compares like with like below
ATTN_ABLATION = [("L6_attn_initial", "initial"), (_L6_MAIN, "middle"), ("L6_attn_late", "late")]
LAMBDA_ABLATION = [("L6_attn_w0.1", "λ_attn 0.1"), (_L6_MAIN, "λ_attn 1"), ("L6_attn_w10", "λ_attn 10")]
BASELINES = [
    (_L6_MAIN, "Shallow-π L6 (both stacks subsampled, task + KD + attn)"),
    (
        ("L6_released_seed1000", "L6_released"),
        "released initialisation (backbone layers 0-5, expert subsampled, task + KD)",
    ),
    ("L6_scratch", "same architecture from scratch (task loss, same steps)"),
    ("L6_skip", "layer skipping, no training"),
]
INITIALISATION = [  # the same recipe (task + KD) and seeds; only the backbone's initial layers differ
    ("L6_task_kd", "both stacks subsampled"),
    ("L6_released", "released (backbone layers 0-5)"),
]


def schedule_rows(results: list[PolicyResult], steps_of: dict[str, int]) -> list[tuple[int, PolicyResult]]:
    """(steps, result) of the schedule sweep, shortest first; `steps_of` maps result names to their steps."""
    r = by_name(results)
    return sorted(((n, r[name]) for name, n in steps_of.items() if name in r), key=lambda x: x[0])


def schedule_table(rows: list[tuple[int, PolicyResult]], teacher: PolicyResult | None) -> list[str]:
    out = [
        "| distillation steps | L6 mean success % | 95 % CI ± | paired vs teacher (pts) |",
        "|---:|---:|---:|---:|",
    ]
    for n, x in rows:
        out.append(f"| {n} | {_fmt(x.mean)} | {_fmt(x.ci95)} | {paired_cell(x, teacher)} |")
    return out


def shortest_schedule(
    rows: list[tuple[int, PolicyResult]], teacher: PolicyResult, within: float
) -> int | None:
    """The fewest steps whose L6 mean is within `within` pts of the teacher (point estimate), or None."""
    for n, x in rows:
        if teacher.mean - x.mean <= within:
            return n
    return None


def render_markdown(
    title: str,
    results: list[PolicyResult],
    tasks: list[str],
    *,
    settings: dict | None = None,
    commands: list[str] | None = None,
    regenerate: str | None = None,
    plot: str | None = None,
    notes: list[str] | None = None,
    ablations: bool = True,
    schedule: dict[str, int] | None = None,
    schedule_plot: str | None = None,
) -> str:
    commands = [portable_command(c) for c in commands] if commands else commands  # no paths of this machine
    regenerate = portable_command(regenerate) if regenerate else regenerate
    lines = [f"# {title}", ""]
    if regenerate:
        lines += [
            "Regenerate everything (data, models, numbers, this file and the plot):",
            "",
            "```",
            regenerate,
            "```",
            "",
        ]
    for n in notes or []:
        lines += [n, ""]
    eps = sorted({r.episodes_per_task for r in results if r.episodes_per_task})
    lines += [
        "## Success on held-out setups",
        "",
        f"Percent of episodes that succeed; {'/'.join(map(str, eps)) or '?'} episodes per task. The last "
        "column is the half-width of the mean's 95 % interval (binomial per task): differences smaller than "
        "about that are within evaluation noise.",
        "",
    ]
    lines += success_table(results, tasks) + [""]
    lines += [
        "## Latency, FLOPs, speed-up",
        "",
        "One `sample_actions` call (vision + prefix + all denoising steps), batch 1, all models timed in "
        "one process on the same inputs with calls interleaved; speed-up = teacher latency / latency. "
        "Students of one depth share an architecture, so they share its latency.",
        "",
    ]
    lines += efficiency_table(results) + [""]
    if plot:
        lines += [f"![success vs latency]({plot})", ""]
    if ablations:
        r = by_name(results)
        runs = {x.runs for x in (_lookup(r, n) for n, _ in LOSS_ABLATION) if x is not None}
        pooled = max(runs, default=1) > 1
        seeds = ""
        if pooled:
            seeds = (
                f" ({runs.pop()} training seeds each, pooled)"
                if len(runs) == 1
                else " (training seeds pooled)"
            )
        lines += [f"## Loss ablation (L6){seeds}", ""]
        lines += ablation_table(
            results, LOSS_ABLATION, "losses", reference="teacher", seed_reference="L6_task"
        )
        if pooled:
            lines += [
                "",
                "The paired column holds each recipe's trained weights fixed (its interval is over setups); the "
                "last column is the one that says whether a loss term helps: each training seed's mean is one "
                "sample of its recipe, the interval Welch's t over seeds.",
            ]
        lines += [""]
        lines += ["## Attention-KD layer ablation (L6, task + KD + attn, one seed)", ""]
        lines += ablation_table(results, ATTN_ABLATION, "attention layer") + [""]
        if any(_lookup(r, n) for n, _ in LAMBDA_ABLATION if n != _L6_MAIN):
            lines += ["## Attention-KD weight (L6, middle layer, one seed)", ""]
            lines += ablation_table(results, LAMBDA_ABLATION, "weight") + [""]
        lines += ["## Baselines at L6 (same data, same steps)", ""]
        lines += ablation_table(results, BASELINES, "initialisation / training", reference="teacher") + [""]
        released = r.get("L6_released")
        if released is not None and released.runs > 1:
            lines += ["## Released initialisation over training seeds (L6, task + KD)", ""]
            lines += ablation_table(
                results, INITIALISATION, "initialisation", reference="teacher", seed_reference="L6_task_kd"
            ) + [""]
        n = long_schedule(results)
        if n is not None:
            lines += [
                f"## Loss ablation and scratch baseline at the longest schedule (L6, {n} steps, one seed)",
                "",
            ]
            rows_spec = [
                (f"L6_task_steps{n}", "task"),
                (f"L6_task_kd_steps{n}", "task + KD"),
                (f"L6_steps{n}", "task + KD + attn (Shallow-π)"),
                (f"L6_scratch_steps{n}", "same architecture from scratch (task loss)"),
            ]
            lines += ablation_table(results, rows_spec, "losses / training", reference="teacher") + [""]
        if schedule:
            rows = schedule_rows(results, schedule)
            teacher = r.get("teacher")
            lines += ["## How long to distil (L6, task + KD + attn, one seed)", ""]
            lines += schedule_table(rows, teacher) + [""]
            if schedule_plot:
                lines += [f"![L6 success vs distillation steps]({schedule_plot})", ""]
            best = shortest_schedule(rows, teacher, L6_MAX_DROP_PTS) if teacher and rows else None
            lines += [
                f"Shortest schedule with L6 within {L6_MAX_DROP_PTS:g} pt of the teacher: "
                + (f"**{best} steps**." if best else "none of those run."),
                "",
            ]
        if any(x.kind == "steps" for x in results):
            lines += [
                "## Fewer denoising steps (L6)",
                "",
                "Few-step students made and evaluated by `scripts/study_steps.py` (its report, "
                "`steps/steps.md`, has its commands); timed in this study's bench process with the others. "
                "Each samples with its own schedule.",
                "",
            ]
            lines += steps_table(results) + [""]
        lines += ["## Targets", ""]
        targets = check_targets(results)
        if any(x.kind == "steps" for x in results):
            targets += check_step_targets(results)
        lines += target_lines(targets) + [""]
    if settings:
        lines += ["## Settings", ""] + [f"- {k}: {v}" for k, v in settings.items()] + [""]
    if commands:
        lines += [
            "## Commands",
            "",
            "The `shallowpi` commands that made the data and the policies above.",
            "",
        ]
        lines += ["```"] + commands + ["```", ""]
    return "\n".join(lines)
