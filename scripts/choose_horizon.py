"""Choose a policy's re-planning horizon (`n_action_steps`: actions run open-loop per chunk) on TRAINING setups,
never on the held-out ones the results are reported on, and optionally save it as the policy's default.

    python scripts/choose_horizon.py --policy outputs/teacher_v3/runs/teacher_fine/checkpoints/last/pretrained_model \
        --horizons 5,10 --episodes-per-task 20 --out results/testbed_attempts/fine_grid/horizon [--write]

Training setups: Meta-World's MT1(task, 0) configurations, the ones `shallowpi collect --seed 0` demonstrated
(held-out evaluations use seed 1000). Each horizon is evaluated on the same episodes with the same noise; the
best MT10 mean wins, a tie goes to the longer horizon (fewer policy calls). `--write` stores the choice in the
policy folder's config.json as `n_action_steps` (LeRobot's field: LeRobot's action queue and `shallowpi eval`
both follow it). Writes OUT/horizon_<n>.json (eval_info.json of each) and OUT/choice.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shallowpi.atomic import write_json_atomic
from shallowpi.errors import UserError
from shallowpi.paths import portable_path
from shallowpi.sim import metaworld_env as mw
from shallowpi.sim.evaluate import EvalConfig, evaluate
from shallowpi.study.pipeline import write_horizon

TRAINING_SEED = 0  # the demonstrations' setups


def choose(success: dict[int, float]) -> int:
    """The horizon with the best success; ties go to the longer horizon (fewer calls, less compute)."""
    return max(success, key=lambda h: (success[h], h))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--horizons", default="5,10", help="comma-separated n_action_steps to compare")
    ap.add_argument("--tasks", default="mt10")
    ap.add_argument("--episodes-per-task", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--write", action="store_true", help="save the choice in the policy's config.json")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        horizons = sorted({int(h) for h in args.horizons.split(",") if h.strip()})
        if not horizons or min(horizons) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --horizons must be positive integers, got {args.horizons!r}", file=sys.stderr)
        return 2
    out, policy = Path(args.out), Path(args.policy)
    try:
        success: dict[int, float] = {}
        for h in horizons:
            cfg = EvalConfig(
                policy=str(policy),
                tasks=mw.resolve_tasks(args.tasks),
                episodes_per_task=args.episodes_per_task,
                seed=TRAINING_SEED,
                max_steps=args.max_steps,
                n_action_steps=h,
                workers=args.workers,
            )
            cfg.validate()
            info = evaluate(cfg, out / f"horizon_{h}", progress=not args.no_progress).info
            success[h] = float(info["overall"]["pc_success"])
            print(f"n_action_steps {h:>3}: {success[h]:.1f} % on training setups (seed {TRAINING_SEED})")
        best = choose(success)
        write_json_atomic(
            out / "choice.json",
            {
                "policy": portable_path(str(policy)),
                "seed": TRAINING_SEED,
                "episodes_per_task": args.episodes_per_task,
                "pc_success": {str(h): s for h, s in success.items()},
                "chosen": best,
                "written": bool(args.write),
            },
        )
        if args.write:
            write_horizon(policy, best)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"chosen: n_action_steps {best}" + (f" (written to {policy / 'config.json'})" if args.write else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
