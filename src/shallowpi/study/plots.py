"""The study's plots: success against latency (one marker per family, a key table beside it) and L6 success
against distillation steps. Written atomically; without matplotlib (the `plot` extra) they are skipped."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from shallowpi.atomic import save_figure_atomic
from shallowpi.study.results import PolicyResult
from shallowpi.study.targets import L6_MAX_DROP_PTS


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


# One marker and one legend entry per family; the order is the legend's and the labels' priority.
FAMILIES = {
    "teacher": ("*", "tab:red", "teacher"),
    "student": ("o", "tab:blue", "Shallow-π students"),
    "steps": ("D", "tab:purple", "fewer denoising steps"),
    "schedule": ("v", "tab:cyan", "distillation length"),
    "ablation": ("s", "tab:gray", "loss / attention ablations"),
    "released": ("P", "tab:brown", "released init"),
    "scratch": ("^", "tab:green", "from scratch"),
    "skip": ("X", "tab:orange", "no training"),
}
_OTHER = ("o", "black", "other")
OUTLIER_GAP_PTS = (
    20.0  # a point this far below all others is drawn on the floor, not allowed to set the range
)


def _pareto_points(results: list[PolicyResult]) -> list[PolicyResult]:
    pts = [r for r in results if r.latency_ms is not None and not math.isnan(r.mean) and r.pooled_in is None]
    # A few-step table's reference row (say L6 @10) is often a policy plotted already: one point, not two.
    seen_at = {(r.latency_ms, r.mean) for r in pts if r.kind != "steps"}
    pts = [r for r in pts if r.kind != "steps" or (r.latency_ms, r.mean) not in seen_at]
    order = list(FAMILIES)
    return sorted(pts, key=lambda r: (order.index(r.kind) if r.kind in order else len(order), r.latency_ms))


def _floor(means: list[float]) -> float:
    """The lowest success the axis shows: outliers far below the rest sit on the floor instead."""
    xs = sorted(means)
    while len(xs) > 1 and xs[1] - xs[0] > OUTLIER_GAP_PTS:
        xs.pop(0)
    return max(-3.0, xs[0] - 6.0)


def _overlaps(box, boxes) -> bool:
    return any(box.overlaps(b) for b in boxes)


def plot_pareto(
    results: list[PolicyResult], path: str | Path, title: str = "", log: Callable[[str], None] = print
) -> Path | None:
    """Mean success vs median CPU latency: one marker per family, the teacher and the Shallow-π students
    joined as the Pareto line, a label beside a point only where it collides with nothing, and a numbered key
    table beside the plot that names every point. Needs the `plot` extra; without matplotlib it logs why
    and returns None (the markdown is still written)."""
    plt = _pyplot("pareto", log)
    if plt is None:
        return None
    pts = _pareto_points(results)
    if not pts:
        log("pareto plot skipped: no policy has both a success rate and a latency")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax, key) = plt.subplots(
        1, 2, figsize=(12.0, 5.2), gridspec_kw={"width_ratios": [3, 2.3]}, constrained_layout=True
    )
    lo, hi = _floor([r.mean for r in pts]), min(103.0, max(r.mean for r in pts) + 6.0)
    ax.set_ylim(lo, hi)
    ax.set_xlim(0, max(r.latency_ms for r in pts) * 1.12)
    line = sorted((r for r in pts if r.kind in ("teacher", "student")), key=lambda r: r.latency_ms)
    if len(line) > 1:
        ax.plot(
            [r.latency_ms for r in line], [r.mean for r in line], "-", color="tab:blue", alpha=0.4, zorder=1
        )
    # Where each point is drawn: an outlier sits on the floor; the key table holds its value.
    at = [(r.latency_ms, max(r.mean, lo + 1.5)) for r in pts]
    shown = set()
    for r, xy in zip(pts, at, strict=True):
        marker, color, family = FAMILIES.get(r.kind, _OTHER)
        ax.scatter(
            *xy,
            marker=marker,
            color=color,
            s=60,
            zorder=2,
            alpha=0.85,
            label=None if family in shown else family,
        )
        shown.add(family)
    ax.set_xlabel("CPU latency per action chunk, ms (median)")
    ax.set_ylabel("mean success on held-out setups, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    # Numbers beside the points, placed only where they collide with no other number or marker.
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = [ax.get_legend().get_window_extent(renderer)]
    for xy in at:
        x, y = ax.transData.transform(xy)
        taken.append(type(taken[0]).from_bounds(x - 5, y - 5, 10, 10))
    for i, (r, xy) in enumerate(zip(pts, at, strict=True), 1):
        for dx, dy, ha in ((6, 3, "left"), (6, -11, "left"), (-6, 3, "right"), (-6, -11, "right")):
            t = ax.annotate(
                f"{i}↓" if r.mean < lo else str(i),
                xy,
                textcoords="offset points",
                xytext=(dx, dy),
                ha=ha,
                fontsize=7,
            )
            box = t.get_window_extent(renderer).expanded(1.1, 1.1)
            if (
                not _overlaps(box, taken)
                and ax.bbox.contains(box.x0, box.y0)
                and ax.bbox.contains(box.x1, box.y1)
            ):
                taken.append(box)
                break
            t.remove()
    key.axis("off")
    rows = [[str(i), r.label, f"{r.mean:.1f}", f"{r.latency_ms:.1f}"] for i, r in enumerate(pts, 1)]
    table = key.table(
        cellText=rows,
        colLabels=["#", "policy", "success %", "ms"],
        loc="upper center",
        cellLoc="left",
        colLoc="left",
        colWidths=[0.06, 0.69, 0.14, 0.11],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.0 if len(rows) <= 24 else 24 / len(rows))
    for (row, _), cell in table.get_celld().items():
        cell.set_linewidth(0)
        if row > 0:
            cell.get_text().set_color(FAMILIES.get(pts[row - 1].kind, _OTHER)[1])
    return save_figure_atomic(fig, path)


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
    ax.minorticks_off()  # the log axis's own minor labels (2×10³ …) would sit between the schedules' ticks
    ax.set_xlabel("distillation steps (each a full schedule)")
    return _finish(fig, ax, title, path)
