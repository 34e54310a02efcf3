"""`shallowpi compute-stats`: exact quantiles of a dataset's numeric features, added to its meta/stats.json."""

from __future__ import annotations

from pathlib import Path

from shallowpi.atomic import write_json_atomic
from shallowpi.data.lerobot_dataset import LeRobotDataset
from shallowpi.data.stats import has_quantiles, load_stats, stats_to_json, vector_stats
from shallowpi.errors import UserError


def add_quantiles(root: str | Path, features: list[str] | None = None, overwrite: bool = False) -> list[str]:
    """Compute quantiles of the numeric features in the data parquet files and write them into meta/stats.json.

    Returns the features that were updated. Existing stats are kept; only missing quantiles are added unless
    `overwrite`. Image/video features are skipped (the π models use IDENTITY for images).
    """
    ds = LeRobotDataset(root, load_images=False)
    try:
        stats = load_stats(root)
    except FileNotFoundError:
        stats = {}
    wanted = features or [k for k, f in ds.features.items() if f["dtype"] in ("float32", "float64")]
    updated = []
    for feat in wanted:
        if feat not in ds.features:
            raise UserError(f"unknown feature {feat!r}; dataset has {sorted(ds.features)}")
        if has_quantiles(stats, feat) and not overwrite:
            continue
        column = ds.column(feat)  # [N, D]
        computed = vector_stats(column)
        stats.setdefault(feat, {})
        for k, v in computed.items():
            if overwrite or k not in stats[feat]:
                stats[feat][k] = v
        updated.append(feat)
    if updated:
        write_json_atomic(Path(root) / "meta" / "stats.json", stats_to_json(stats))
    return updated
