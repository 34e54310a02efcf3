"""Study results as plain data: one `PolicyResult` per evaluated policy, seeds pooled into one, paired
differences between two policies evaluated on the same setups, and latency copied in from a bench run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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


def runs_by_policy(bench: dict | None) -> dict[str, dict]:
    """A bench result's runs by the benchmarked policy folder's name (run names are "<folder>/<mode>"; the
    first mode of each folder). Empty for no bench result."""
    out: dict[str, dict] = {}
    for run in (bench or {}).get("runs", []):
        out.setdefault(run["name"].split("/")[0], run)
    return out


def attach_run(r: PolicyResult, run: dict) -> None:
    """Copy one bench run's latency, FLOPs and stage split into `r` (speed-up is left to the caller)."""
    r.stages_ms = {k: v["median"] for k, v in (run.get("stages_ms") or {}).items()} or None
    r.latency_ms = run["latency_ms"]["median"]
    r.latency_p90_ms = run["latency_ms"]["p90"]
    r.flops = float(run["flops"]["total"])


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
        attach_run(r, run)
        r.speedup = base / r.latency_ms
