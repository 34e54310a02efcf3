"""Normalisation statistics: read meta/stats.json (v3.0) or meta/episodes_stats.jsonl (v2.1), compute them.

Stats are `{feature: {stat_name: np.ndarray}}` with stat names as LeRobot writes them: min, max, mean, std,
count and, when computed, q01, q10, q50, q90, q99. Quantiles we compute are exact (`np.quantile` over every
frame, linear interpolation); LeRobot's are approximations from per-episode histograms, so the two differ
slightly on the same data. Nothing here opens a dataset: `add_quantiles`, which does, is in quantiles.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shallowpi.errors import MissingFileError, UserError

Stats = dict[str, dict[str, np.ndarray]]

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def stats_from_json(obj: dict) -> Stats:
    return {feat: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()} for feat, d in obj.items()}


def stats_to_json(stats: Stats) -> dict:
    return {feat: {k: np.asarray(v).tolist() for k, v in d.items()} for feat, d in stats.items()}


def load_stats(root: str | Path) -> Stats:
    """Dataset-wide stats from `meta/stats.json`, else aggregated from v2.1's `meta/episodes_stats.jsonl`."""
    meta = Path(root) / "meta"
    if (meta / "stats.json").is_file():
        try:
            return stats_from_json(json.loads((meta / "stats.json").read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"corrupt stats file {meta / 'stats.json'}: {e}") from e
    if (meta / "episodes_stats.jsonl").is_file():
        episodes = [
            json.loads(line)["stats"]
            for line in (meta / "episodes_stats.jsonl").read_text().splitlines()
            if line
        ]
        return aggregate_stats([stats_from_json(e) for e in episodes])
    raise MissingFileError(f"no normalisation stats in {meta}: expected stats.json or episodes_stats.jsonl")


def aggregate_stats(per_episode: list[Stats]) -> Stats:
    """Combine per-episode stats into dataset stats: pooled mean/variance, min/max, weighted quantiles."""
    out: Stats = {}
    for feat in per_episode[0]:
        eps = [e[feat] for e in per_episode if feat in e]
        counts = np.array([float(np.asarray(e["count"]).reshape(-1)[0]) for e in eps])
        w = counts / counts.sum()
        means = np.stack([e["mean"] for e in eps])
        mean = np.tensordot(w, means, axes=1)
        var = np.tensordot(w, np.stack([e["std"] ** 2 for e in eps]) + (means - mean) ** 2, axes=1)
        out[feat] = {
            "min": np.min(np.stack([e["min"] for e in eps]), axis=0),
            "max": np.max(np.stack([e["max"] for e in eps]), axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([counts.sum()]),
        }
        # Quantiles cannot be pooled exactly; like LeRobot, take the count-weighted mean of per-episode ones.
        for q in QUANTILES:
            if all(q in e for e in eps):
                out[feat][q] = np.tensordot(w, np.stack([e[q] for e in eps]), axes=1)
    return out


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of a [N, D] array over N, quantiles included."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    s = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([x.shape[0]]),
    }
    for name, q in QUANTILES.items():
        s[name] = np.quantile(x, q, axis=0)
    return s


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of uint8 [N, H, W, 3] frames in [0, 1], shaped (3, 1, 1) like LeRobot's."""
    x = frames.astype(np.float64) / 255.0
    per_channel = x.reshape(-1, 3)
    s = vector_stats(per_channel)
    s = {k: (v.reshape(3, 1, 1) if k != "count" else np.array([frames.shape[0]])) for k, v in s.items()}
    return s


def has_quantiles(stats: Stats, feature: str) -> bool:
    return feature in stats and "q01" in stats[feature] and "q99" in stats[feature]
