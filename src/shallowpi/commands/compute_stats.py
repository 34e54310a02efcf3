"""`shallowpi compute-stats --dataset DATASET`: add quantile stats (q01, q10, q50, q90, q99) to meta/stats.json.

π0.5 normalises state and actions with q01/q99 (QUANTILES); datasets written by LeRobot before quantiles
existed lack them. Quantiles are exact over all frames; existing stats are kept (use --overwrite to
recompute every stat of the chosen features).
"""

from __future__ import annotations

import argparse

from shallowpi.commands.options import add_old_positional, require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None, help="LeRobotDataset folder (v3.0 or v2.1)")
    add_old_positional(parser, "dataset")  # `compute-stats DATASET`, the spelling before --dataset
    parser.add_argument(
        "--features",
        default=None,
        help="comma-separated features (default: every float feature, e.g. observation.state,action)",
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute stats that are already present")


def run(args: argparse.Namespace) -> int:
    from shallowpi.data.quantiles import add_quantiles

    dataset = require(args, "dataset")
    features = [f.strip() for f in args.features.split(",")] if args.features else None
    updated = add_quantiles(dataset, features, overwrite=args.overwrite)
    if updated:
        print(f"added quantiles for {', '.join(updated)} to {dataset}/meta/stats.json")
    else:
        print("quantiles already present; nothing to do (use --overwrite to recompute)")
    return 0
