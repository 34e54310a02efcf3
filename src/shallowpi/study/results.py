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


def _split_runs(outcomes: list[bool], runs: int) -> list[list[bool]] | None:
    """Run-major outcomes of `runs` evaluations on the same setups -> one list per run; None when they do not
    split into `runs` equal, non-empty evaluations."""
    if runs < 1 or not outcomes or len(outcomes) % runs:
        return None
    n = len(outcomes) // runs
    return [outcomes[k * n : (k + 1) * n] for k in range(runs)]


def _per_setup(outcomes: list[bool], runs: int) -> list[float] | None:
    """Run-major outcomes of `runs` evaluations on the same setups -> each setup's mean success."""
    split = _split_runs(outcomes, runs)
    return None if split is None else [sum(map(float, setup)) / runs for setup in zip(*split, strict=True)]


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


# Two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom; beyond, a Cornish-Fisher expansion.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with `df` degrees of freedom (within 0.005 for df > 10)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def seed_means(r: PolicyResult) -> list[float] | None:
    """Mean success (%) of each training seed pooled in `r`, from its run-major per-episode outcomes; None
    when the outcomes do not split into `r.runs` equal evaluations."""
    if not r.outcomes:
        return None
    per_task = []  # (tasks, runs): each run's success rate on each task
    for outcomes in r.outcomes.values():
        split = _split_runs(outcomes, r.runs)
        if split is None:
            return None
        per_task.append([sum(run) / len(run) for run in split])
    return [100 * sum(t[k] for t in per_task) / len(per_task) for k in range(r.runs)]


def seed_difference(a: PolicyResult, b: PolicyResult) -> tuple[float, float] | None:
    """Mean success of recipe a minus recipe b (pts) with a 95 % interval over training seeds: each seed's
    mean is one sample of the recipe (training noise and evaluation noise together), the two recipes'
    seeds independent: Welch's t, its Welch-Satterthwaite degrees of freedom rounded down.
    This is the interval that says whether a recipe helps; the paired one (`paired_difference`) holds the
    trained weights fixed. None unless both pool at least two seeds."""
    ma, mb = seed_means(a), seed_means(b)
    if not ma or not mb or len(ma) < 2 or len(mb) < 2:
        return None

    def mean_var(x: list[float]) -> tuple[float, float]:
        m = sum(x) / len(x)
        return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)

    (xa, va), (xb, vb) = mean_var(ma), mean_var(mb)
    qa, qb = va / len(ma), vb / len(mb)  # squared standard errors of the two means
    se = math.sqrt(qa + qb)
    if se == 0:
        return xa - xb, 0.0
    df = (qa + qb) ** 2 / (qa**2 / (len(ma) - 1) + qb**2 / (len(mb) - 1))
    return xa - xb, t95(max(1, math.floor(df + 1e-9))) * se


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
