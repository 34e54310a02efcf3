"""Study results -> markdown tables (like the paper's) and a success-vs-latency Pareto plot.

Input is plain data (`PolicyResult`s plus the run's settings and commands), so the same writer serves the
full study (`scripts/study_metaworld.py`), the demo (`shallowpi demo`) and tests with synthetic numbers.
Files are written to a temp file and renamed: a crash never leaves half a report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shallowpi.atomic import save_figure_atomic
from shallowpi.paths import portable_command

# Targets of the study (issue 11; paper: L6 within 1-2 pts of the teacher at > 2x speed).
L6_MAX_DROP_PTS = 1.0
L6_MIN_GAIN_OVER_SCRATCH_PTS = 20.0
L6_MAX_LATENCY_RATIO = 0.40
# Targets of few-step students (issue 16).
STEP_MAX_DROP_PTS = 2.0  # L6@2 step-distilled within 2 pts of the teacher@10
STEP_MIN_GAIN_OVER_NAIVE_PTS = 5.0  # and >= 5 pts above L6@2 sampled naively
STEP_MAX_LATENCY_RATIO = 0.30  # L6@2 end to end <= 0.30 x teacher@10 (stated for the mid config)


@dataclass
class PolicyResult:
    name: str  # stable id, e.g. "L6_task_kd_attn"
    label: str  # table label, e.g. "L6 task+KD+attn"
    depth: int
    kind: str  # "teacher" | "student" | "skip" (no training) | "scratch" | "ablation" | "steps" (few-step)
    success: dict[str, float] = field(default_factory=dict)  # task -> % success
    episodes_per_task: int = 0
    latency_ms: float | None = None  # median CPU latency of one sample_actions call
    latency_p90_ms: float | None = None
    flops: float | None = None  # FLOPs of one call
    speedup: float | None = None  # teacher latency / this latency
    outcomes: dict[str, list[bool]] = field(default_factory=dict)  # task -> per-episode success, seed order
    runs: int = 1  # training seeds pooled in this result (outcomes hold `runs` evaluations back to back)
    pooled_in: str | None = None  # name of the pooled result this run is part of (shown there, not alone)
    num_steps: int | None = None  # denoising steps it samples with; None: its config's default (10)
    stages_ms: dict | None = None  # median ms of vision / prefix / denoise, from the bench

    @property
    def mean(self) -> float:
        vals = list(self.success.values())
        return sum(vals) / len(vals) if vals else math.nan

    @property
    def ci95(self) -> float:
        """Half-width (pts) of the normal-approximation 95 % interval of `mean`: each task a binomial of
        `episodes_per_task` trials. Says which differences between policies the evaluation can resolve."""
        n, vals = self.episodes_per_task, [v / 100 for v in self.success.values()]
        if not vals or n <= 0:
            return math.nan
        var = sum(p * (1 - p) / n for p in vals) / len(vals) ** 2  # variance of the mean of task rates
        return 100 * 1.96 * math.sqrt(var)


@dataclass
class Target:
    text: str
    met: bool | None  # None: not measured in this run
    detail: str


def _fmt(x: float | None, spec: str = ".1f", none: str = "–") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _short(task: str) -> str:
    return task.removesuffix("-v3")


def by_name(results: list[PolicyResult]) -> dict[str, PolicyResult]:
    return {r.name: r for r in results}


def pool_runs(name: str, label: str, runs: list[PolicyResult]) -> PolicyResult:
    """Several training seeds of one recipe as one result: per-task success is the mean over seeds, and the
    per-episode outcomes are the runs' concatenated in run order (each run saw the same setups), so a
    paired comparison pairs every run's episode with the other policy's same setup."""
    if not runs:
        raise ValueError(f"no runs to pool for {name}")
    tasks = sorted(runs[0].success)
    return PolicyResult(
        name,
        label,
        runs[0].depth,
        runs[0].kind,
        {t: sum(r.success[t] for r in runs) / len(runs) for t in tasks},
        sum(r.episodes_per_task for r in runs),
        outcomes={t: [x for r in runs for x in r.outcomes.get(t, [])] for t in tasks},
        runs=sum(r.runs for r in runs),
    )


def _per_setup(outcomes: list[bool], runs: int) -> list[float] | None:
    """Run-major outcomes of `runs` evaluations on the same setups -> each setup's mean success."""
    if runs < 1 or len(outcomes) % runs:
        return None
    n = len(outcomes) // runs
    return [sum(float(outcomes[r * n + e]) for r in range(runs)) / runs for e in range(n)]


def paired_difference(a: PolicyResult, b: PolicyResult) -> tuple[float, float] | None:
    """Mean success of a minus b (pts) and its 95 % half-width, pairing episodes: every policy is evaluated on
    the same held-out setups, so the per-episode difference cancels most of the setup-to-setup variance.
    A pooled result (several training seeds) enters with each setup's success averaged over its runs, so the
    interval is over setups and covers the seeds' spread on each setup without counting a setup twice.
    None when the per-episode outcomes are missing or the runs' evaluations do not line up."""
    tasks = sorted(a.outcomes)
    if not tasks or sorted(b.outcomes) != tasks:
        return None
    means, var = [], 0.0
    for t in tasks:
        xs, ys = _per_setup(a.outcomes[t], a.runs), _per_setup(b.outcomes[t], b.runs)
        if not xs or not ys or len(xs) != len(ys):
            return None
        d = [x - y for x, y in zip(xs, ys, strict=True)]  # (setups,)
        m = sum(d) / len(d)
        means.append(m)
        if len(d) > 1:
            var += sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d)
    var /= len(tasks) ** 2
    return 100 * sum(means) / len(means), 100 * 1.96 * math.sqrt(var)


def _paired(a: PolicyResult, b: PolicyResult, word: str) -> str:
    pd = paired_difference(a, b)
    return "" if pd is None else f"; paired 95 % CI of the {word}: {pd[0]:+.1f} ± {pd[1]:.1f} pts"


def _l6_targets(
    teacher: PolicyResult | None, l6: PolicyResult | None, scratch: PolicyResult | None, where: str = ""
) -> list[Target]:
    """L6 within the drop of the teacher, and above scratch by the gain; `where` names the schedule."""
    out = []
    text = f"L6 within {L6_MAX_DROP_PTS:g} pts of the teacher{where}"
    if teacher and l6 and teacher.success and l6.success:
        drop = teacher.mean - l6.mean
        out.append(
            Target(
                text,
                drop <= L6_MAX_DROP_PTS,
                f"teacher {teacher.mean:.1f} %, L6 {l6.mean:.1f} % (drop {drop:+.1f} pts"
                + _paired(teacher, l6, "drop")
                + ")",
            )
        )
    else:
        out.append(Target(text, None, "not evaluated"))
    text = f"L6 >= scratch L6 + {L6_MIN_GAIN_OVER_SCRATCH_PTS:g} pts{where}"
    if l6 and scratch and l6.success and scratch.success:
        gain = l6.mean - scratch.mean
        out.append(
            Target(
                text,
                gain >= L6_MIN_GAIN_OVER_SCRATCH_PTS,
                f"L6 {l6.mean:.1f} %, scratch {scratch.mean:.1f} % (gain {gain:+.1f} pts"
                + _paired(l6, scratch, "gain")
                + ")",
            )
        )
    else:
        out.append(Target(text, None, "not evaluated"))
    return out


def _loss_ordering(chain: list[PolicyResult | None], where: str = "") -> Target:
    """task < task+KD < task+KD+attn, with the paired gain of each added loss."""
    text = f"task < task+KD < task+KD+attn (L6){where}"
    if not all(c is not None and c.success for c in chain):
        return Target(text, None, "not evaluated")
    m = [c.mean for c in chain]
    return Target(
        text,
        m[0] < m[1] < m[2],
        " < ".join(f"{x:.1f}" for x in m)
        + " %"
        + _paired(chain[1], chain[0], "KD gain")
        + _paired(chain[2], chain[1], "attention gain"),
    )


def long_schedule(results: list[PolicyResult]) -> int | None:
    """Steps of the longest schedule with both an L6 (`L6_steps<N>`) and a scratch L6 (`L6_scratch_steps<N>`)."""
    r = by_name(results)
    both = [int(n[len("L6_steps") :]) for n in r if n.startswith("L6_steps") and f"L6_scratch_{n[3:]}" in r]
    return max(both, default=None)


def check_targets(results: list[PolicyResult]) -> list[Target]:
    """The issue's targets, met / missed / not measured, with the numbers behind each verdict: at the study's
    main schedule, and again at the longest schedule that has a from-scratch L6 of the same length."""
    r = by_name(results)
    teacher = r.get("teacher")
    out = _l6_targets(teacher, r.get("L6_task_kd_attn"), r.get("L6_scratch"))
    n = long_schedule(results)
    if n is not None:
        out += _l6_targets(teacher, r[f"L6_steps{n}"], r[f"L6_scratch_steps{n}"], f" (both {n} steps)")
    out.append(_loss_ordering([r.get(n) for n in ("L6_task", "L6_task_kd", "L6_task_kd_attn")]))
    if n is not None and f"L6_task_steps{n}" in r and f"L6_task_kd_steps{n}" in r:
        chain = [r[f"L6_task_steps{n}"], r[f"L6_task_kd_steps{n}"], r[f"L6_steps{n}"]]
        out.append(_loss_ordering(chain, f" ({n} steps)"))
    l6 = r.get("L6_task_kd_attn")
    if teacher and l6 and teacher.latency_ms and l6.latency_ms:
        ratio = l6.latency_ms / teacher.latency_ms
        out.append(
            Target(
                f"CPU latency L6 / L{teacher.depth} <= {L6_MAX_LATENCY_RATIO:.2f}",
                ratio <= L6_MAX_LATENCY_RATIO,
                f"{l6.latency_ms:.1f} / {teacher.latency_ms:.1f} ms = {ratio:.3f}",
            )
        )
    else:
        out.append(Target(f"CPU latency L6 / teacher <= {L6_MAX_LATENCY_RATIO:.2f}", None, "not benchmarked"))
    return out


# tables -----------------------------------------------------------------------------------------------------


def check_step_targets(
    results: list[PolicyResult],
    teacher: str = "teacher",
    distilled: str = "L6_K2_distilled",
    naive: str = "L6_K2_naive",
) -> list[Target]:
    """Issue 16's targets for the 2-step student, with paired intervals where the outcomes allow."""
    r = by_name(results)
    t, d2, n2 = r.get(teacher), r.get(distilled), r.get(naive)
    drop_text = f"L6@2 distilled within {STEP_MAX_DROP_PTS:g} pts of teacher@10"
    gain_text = f"L6@2 distilled >= {STEP_MIN_GAIN_OVER_NAIVE_PTS:g} pts above L6@2 naive"
    lat_text = f"L6@2 latency <= {STEP_MAX_LATENCY_RATIO:g} x teacher@10 (issue states it for the mid config)"
    out = []
    if t and d2:
        drop = t.mean - d2.mean
        detail = f"{d2.mean:.1f} vs {t.mean:.1f} %" + _paired(d2, t, "difference")
        out.append(Target(drop_text, drop <= STEP_MAX_DROP_PTS, detail))
    else:
        out.append(Target(drop_text, None, "not evaluated"))
    if d2 and n2:
        gain = d2.mean - n2.mean
        detail = f"{gain:+.1f} pts ({d2.mean:.1f} vs {n2.mean:.1f} %)" + _paired(d2, n2, "gain")
        out.append(Target(gain_text, gain >= STEP_MIN_GAIN_OVER_NAIVE_PTS, detail))
    else:
        out.append(Target(gain_text, None, "not evaluated"))
    if t and d2 and t.latency_ms and d2.latency_ms:
        ratio = d2.latency_ms / t.latency_ms
        detail = f"{d2.latency_ms:.1f} / {t.latency_ms:.1f} ms = {ratio:.2f} on the test bed"
        out.append(Target(lat_text, ratio <= STEP_MAX_LATENCY_RATIO, detail))
    else:
        out.append(Target(lat_text, None, "not benched"))
    return out


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
        pd = paired_difference(x, teacher) if teacher is not None and x is not teacher else None
        ratio = (
            x.latency_ms / teacher.latency_ms
            if teacher is not None and teacher.latency_ms and x.latency_ms
            else None
        )
        st = x.stages_ms or {}
        split = " | ".join(_fmt(st.get(k)) for k in ("vision", "prefix", "denoise"))
        out.append(
            f"| {x.label} | {x.depth} | {x.num_steps or 10} | {_fmt(x.mean)} | {_fmt(x.ci95)} | "
            f"{'–' if pd is None else f'{pd[0]:+.1f} ± {pd[1]:.1f}'} | {_fmt(x.latency_ms)} | "
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
) -> list[str]:
    """Mean success of named variants (paper's ablations); missing ones shown as –. With `reference` (a
    result name), each row also gets its paired difference to that result."""
    r = by_name(results)
    ref = r.get(reference) if reference else None
    head = f"| {title} | L6 mean success % | 95 % CI ± |"
    out = [
        head + (f" paired vs {ref.label} (pts) |" if ref else ""),
        "|---|---:|---:|" + ("---:|" if ref else ""),
    ]
    for names, label in rows_spec:
        x = _lookup(r, names)
        row = f"| {label} | {_fmt(x.mean) if x else '–'} | {_fmt(x.ci95) if x else '–'} |"
        if ref:
            pd = paired_difference(x, ref) if x is not None and x is not ref else None
            row += f" {'–' if pd is None else f'{pd[0]:+.1f} ± {pd[1]:.1f}'} |"
        out.append(row)
    return out


LOSS_ABLATION = [("L6_task", "task"), ("L6_task_kd", "task + KD"), ("L6_task_kd_attn", "task + KD + attn")]
_L6_MAIN = ("L6_task_kd_attn_seed1000", "L6_task_kd_attn")  # one seed: compares like with like below
ATTN_ABLATION = [("L6_attn_initial", "initial"), (_L6_MAIN, "middle"), ("L6_attn_late", "late")]
LAMBDA_ABLATION = [("L6_attn_w0.1", "λ_attn 0.1"), (_L6_MAIN, "λ_attn 1"), ("L6_attn_w10", "λ_attn 10")]
BASELINES = [
    (_L6_MAIN, "Shallow-π L6 (both stacks subsampled, task + KD + attn)"),
    ("L6_released", "released initialisation (backbone layers 0-5, expert subsampled, task + KD)"),
    ("L6_scratch", "same architecture from scratch (task loss, same steps)"),
    ("L6_skip", "layer skipping, no training"),
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
        pd = paired_difference(x, teacher) if teacher else None
        out.append(
            f"| {n} | {_fmt(x.mean)} | {_fmt(x.ci95)} | {'–' if pd is None else f'{pd[0]:+.1f} ± {pd[1]:.1f}'} |"
        )
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
    lines = [f"# {title}", ""]
    commands = [portable_command(c) for c in commands] if commands else commands  # no paths of this machine
    regenerate = portable_command(regenerate) if regenerate else regenerate
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
        pooled = r.get("L6_task_kd_attn")
        seeds = f" ({pooled.runs} training seeds each, pooled)" if pooled and pooled.runs > 1 else ""
        lines += [f"## Loss ablation (L6){seeds}", ""]
        lines += ablation_table(results, LOSS_ABLATION, "losses", reference="teacher") + [""]
        lines += ["## Attention-KD layer ablation (L6, task + KD + attn, one seed)", ""]
        lines += ablation_table(results, ATTN_ABLATION, "attention layer") + [""]
        if any(_lookup(r, n) for n, _ in LAMBDA_ABLATION if n != _L6_MAIN):
            lines += ["## Attention-KD weight (L6, middle layer, one seed)", ""]
            lines += ablation_table(results, LAMBDA_ABLATION, "weight") + [""]
        lines += ["## Baselines at L6 (same data, same steps)", ""]
        lines += ablation_table(results, BASELINES, "initialisation / training", reference="teacher") + [""]
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
                "## Fewer denoising steps (L6, issue 16)",
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
        for t in targets:
            verdict = {True: "**met**", False: "**missed**", None: "not measured"}[t.met]
            lines.append(f"- {t.text}: {verdict} ({t.detail})")
        lines.append("")
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


# files ------------------------------------------------------------------------------------------------------


def _pyplot(what: str, log: Callable[[str], None]):
    """matplotlib.pyplot on the Agg backend, or None (logged) without the `plot` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"{what} plot skipped: matplotlib is not installed (pip install 'shallowpi[plot]')")
        return None
    return plt


def _finish(fig, ax, title: str, path: Path) -> Path:
    """The success axis every study plot shares, then an atomic PNG write."""
    ax.set_ylabel("mean success on held-out setups, %")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_pareto(
    results: list[PolicyResult], path: str | Path, title: str = "", log: Callable[[str], None] = print
) -> Path | None:
    """Mean success vs median CPU latency; teacher + main students joined as the Pareto line. Needs the
    `plot` extra; without matplotlib it logs why and returns None (the markdown is still written)."""
    plt = _pyplot("pareto", log)
    if plt is None:
        return None
    pts = [r for r in results if r.latency_ms is not None and not math.isnan(r.mean) and r.pooled_in is None]
    # A few-step table's reference row (say L6 @10) is often a policy plotted already: one point, not two.
    seen_at = {(r.latency_ms, r.mean) for r in pts if r.kind != "steps"}
    pts = [r for r in pts if r.kind != "steps" or (r.latency_ms, r.mean) not in seen_at]
    if not pts:
        log("pareto plot skipped: no policy has both a success rate and a latency")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    style = {
        "teacher": ("*", "tab:red"),
        "student": ("o", "tab:blue"),
        "ablation": ("s", "tab:gray"),
        "skip": ("x", "tab:orange"),
        "scratch": ("^", "tab:green"),
        "steps": ("D", "tab:purple"),
    }
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    line = sorted((r for r in pts if r.kind in ("teacher", "student")), key=lambda r: r.latency_ms)
    if len(line) > 1:
        ax.plot(
            [r.latency_ms for r in line], [r.mean for r in line], "-", color="tab:blue", alpha=0.5, zorder=1
        )
    seen = set()
    for r in pts:
        marker, color = style.get(r.kind, ("o", "black"))
        ax.scatter(
            r.latency_ms,
            r.mean,
            marker=marker,
            color=color,
            s=70,
            zorder=2,
            label=None if r.kind in seen else r.kind,
        )
        seen.add(r.kind)
    # Points of one depth share a latency and often a success rate: the main policy is labelled on the right,
    # the others of that depth are stacked on the left with a leader line so no label covers another.
    stacked: dict[float, int] = {}
    for r in sorted(pts, key=lambda r: (r.kind not in ("teacher", "student"), -r.mean)):
        key = round(r.latency_ms, 1)
        i = stacked.get(key, 0)
        stacked[key] = i + 1
        if i == 0:
            ax.annotate(
                r.label, (r.latency_ms, r.mean), textcoords="offset points", xytext=(5, 4), fontsize=7
            )
        else:
            ax.annotate(
                r.label,
                (r.latency_ms, r.mean),
                textcoords="offset points",
                xytext=(-14, 30 - 9 * i),
                ha="right",
                fontsize=7,
                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5},
            )
    ax.set_xlabel("CPU latency per action chunk, ms (median)")
    ax.set_xlim(left=0)
    return _finish(fig, ax, title, path)


def plot_schedule(
    rows: list[tuple[int, PolicyResult]],
    teacher: PolicyResult | None,
    path: str | Path,
    title: str = "",
    log: Callable[[str], None] = print,
) -> Path | None:
    """L6 success (with its 95 % interval) against distillation steps, the teacher as a line."""
    plt = _pyplot("schedule", log)
    if plt is None:
        return None
    if not rows:
        log("schedule plot skipped: no schedule run was evaluated")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    xs, ys, es = [n for n, _ in rows], [x.mean for _, x in rows], [x.ci95 for _, x in rows]
    ax.errorbar(xs, ys, yerr=es, fmt="o-", color="tab:blue", capsize=3, label="L6 task+KD+attn")
    if teacher is not None:
        ax.axhline(teacher.mean, color="tab:red", ls="--", label=f"{teacher.label} ({teacher.mean:.1f} %)")
        ax.axhspan(teacher.mean - L6_MAX_DROP_PTS, teacher.mean, color="tab:red", alpha=0.1)
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(n) for n in xs])
    ax.set_xlabel("distillation steps (each a full schedule)")
    return _finish(fig, ax, title, path)


def attach_bench(results: list[PolicyResult], bench: dict) -> None:
    """Copy latency / FLOPs from a `shallowpi.bench` result into results, matched by depth (all models
    of one depth share an architecture) and, for few-step results, by step count; speed-up is against the
    teacher (the deepest benched model)."""
    runs, by_steps = {}, {}
    for run in bench["runs"]:
        runs.setdefault(run["depth"], run)  # first mode of each depth (the bench lists the 10-step one first)
        by_steps.setdefault((run["depth"], run.get("steps")), run)
    if not runs:
        return
    base = runs[max(runs)]["latency_ms"]["median"]
    for r in results:
        run = runs.get(r.depth) if r.num_steps is None else by_steps.get((r.depth, r.num_steps))
        if run is None:
            continue
        r.stages_ms = {k: v["median"] for k, v in (run.get("stages_ms") or {}).items()} or None
        r.latency_ms = run["latency_ms"]["median"]
        r.latency_p90_ms = run["latency_ms"]["p90"]
        r.flops = float(run["flops"]["total"])
        r.speedup = base / r.latency_ms
