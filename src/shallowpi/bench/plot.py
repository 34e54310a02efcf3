"""Latency against depth, one line per mode, as a PNG (needs the `plot` extra)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shallowpi.atomic import save_figure_atomic


def plot_latency(result: dict, path: str | Path, log: Callable[[str], None] = print) -> Path | None:
    """Median latency (p90 as the error bar) against depth, one line per mode. Needs the `plot` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot skipped: matplotlib is not installed (pip install 'shallowpi[plot]')")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in dict.fromkeys(r["mode"] for r in result["runs"]):
        group = sorted((r for r in result["runs"] if r["mode"] == mode), key=lambda r: r["depth"])
        xs = [r["depth"] for r in group]
        med = [r["latency_ms"]["median"] for r in group]
        err = [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in group]
        ax.errorbar(xs, med, yerr=[[0] * len(err), err], marker="o", capsize=3, label=mode)
    st = result["settings"]
    ax.set_xlabel("depth (layers per stack)")
    ax.set_ylabel("sample_actions latency, ms (median, bar to p90)")
    ax.set_title(f"{st['preset'] or 'policies'} on {st['device']} ({st['dtype']}, batch {st['batch_size']})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure_atomic(fig, path)
