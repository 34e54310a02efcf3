#!/usr/bin/env python3
"""Real-time chunking on Meta-World: success and chunk-boundary jump of the bundled teacher and its L6 student
at several inference delays, with and without RTC, on held-out setups (seed 1000) -> results/rtc/rtc.md (+ .json).

    python scripts/rtc_study.py                                    # MT10 x 10 episodes, delays 0, 2, 4
    python scripts/rtc_study.py --tasks reach --episodes-per-task 1 --max-steps 12 --work outputs/rtc_toy  # a toy run

Every run is `shallowpi eval --inference-delay D [--rtc]` with the same number of actions per chunk
(--n-action-steps, default chunk - max delay - 1, so that the old chunk always has a next action to compare
the new chunk's first one with). Finished runs (WORK/<policy>/d<D>_<rtc|plain>/eval_info.json) are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shallowpi.atomic import write_json_atomic, write_text_atomic
from shallowpi.cli import main as shallowpi
from shallowpi.paths import portable_argv, portable_path
from shallowpi.study.results import PolicyResult, paired_difference

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "shallowpi" / "assets"
POLICIES = {"teacher": ASSETS / "teacher_metaworld", "L6": ASSETS / "student_metaworld"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", action="append", default=None, metavar="NAME=DIR", help="default: teacher, L6")
    p.add_argument("--delays", default="0,2,4", help="comma-separated inference delays (control steps)")
    p.add_argument("--tasks", default="mt10")
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--n-action-steps", type=int, default=None, help="default: chunk - max delay - 1")
    p.add_argument("--seed", type=int, default=1000, help="held-out MT1 setups (demos use 0)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="outputs/rtc", help="eval folders (not in git)")
    p.add_argument("--results", default="results/rtc", help="the table: rtc.md and rtc.json")
    return p.parse_args(argv)


def _policies(args: argparse.Namespace) -> dict[str, Path]:
    if not args.policy:
        return dict(POLICIES)
    out = {}
    for item in args.policy:
        name, _, path = item.partition("=")
        if not name or not path:
            sys.exit(f"--policy expects NAME=DIR, got {item!r}")
        out[name] = Path(path)
    return out


def _chunk(policy: Path) -> int:
    return int(json.loads((policy / "config.json").read_text())["chunk_size"])


def _result(name: str, eval_info: dict) -> PolicyResult:
    """Per-episode outcomes of one eval, in setup order, for the paired comparison."""
    outcomes = {t["task_id"]: list(t["metrics"]["successes"]) for t in eval_info["per_task"]}
    success = {t: 100 * sum(o) / len(o) for t, o in outcomes.items()}
    return PolicyResult(
        name, name, 0, "student", success, min(map(len, outcomes.values())), outcomes=outcomes
    )


def _paired(rows: list[dict], results: dict[tuple, PolicyResult]) -> None:
    """On each RTC row: success with RTC minus without, at the same delay, paired over the same setups."""
    for r in rows:
        plain = results.get((r["policy"], r["inference_delay"], False))
        if r["rtc"] and plain is not None:
            diff = paired_difference(results[(r["policy"], r["inference_delay"], True)], plain)
            r["rtc_minus_plain"] = None if diff is None else {"mean": diff[0], "ci95": diff[1]}


def run(args: argparse.Namespace) -> list[dict]:
    delays = [int(d) for d in args.delays.split(",")]
    rows, results = [], {}
    for name, policy in _policies(args).items():
        n = args.n_action_steps or _chunk(policy) - max(delays) - 1
        for d in delays:
            for rtc in (False, True):
                out = Path(args.work) / name / f"d{d}_{'rtc' if rtc else 'plain'}"
                if not (out / "eval_info.json").is_file():
                    argv = ["eval", "--policy", str(policy), "--tasks", args.tasks]
                    argv += [
                        "--episodes-per-task",
                        str(args.episodes_per_task),
                        "--max-steps",
                        str(args.max_steps),
                    ]
                    argv += [
                        "--n-action-steps",
                        str(n),
                        "--inference-delay",
                        str(d),
                        "--seed",
                        str(args.seed),
                    ]
                    argv += ["--workers", str(args.workers), "--device", args.device, "--no-progress"]
                    argv += ["--out", str(out), *(["--rtc"] if rtc else [])]
                    if shallowpi(argv) != 0:
                        raise SystemExit(f"eval failed: {' '.join(argv)}")
                info = json.loads((out / "eval_info.json").read_text())
                o = info["overall"]
                results[(name, d, rtc)] = _result(name, info)
                rows.append(
                    {
                        "policy": name,
                        "inference_delay": d,
                        "rtc": rtc,
                        "actions_per_chunk": n,
                        "pc_success": o["pc_success"],
                        "avg_chunk_jump": o["avg_chunk_jump"],
                        "max_chunk_jump": o["max_chunk_jump"],
                        "n_chunk_switches": o["n_chunk_switches"],
                        "n_episodes": o["n_episodes"],
                        "eval_info": portable_path(str(out / "eval_info.json")),
                    }
                )
    _paired(rows, results)
    return rows


def report(rows: list[dict], args: argparse.Namespace, argv: list[str]) -> Path:
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    command = "python scripts/rtc_study.py " + " ".join(portable_argv(argv))
    lines = [
        "# Real-time chunking on Meta-World",
        "",
        f"Held-out setups (seed {args.seed}), tasks {args.tasks}, {args.episodes_per_task} episodes per task, "
        f"at most {args.max_steps} steps. Jump: max|a_first(k+1) - a_next(k)| at each chunk switch (env units, "
        "clipped to the box), averaged over switches; max over all switches. RTC - plain: success with RTC minus "
        "without at the same delay, paired over the same setups, with its 95 % half-width.",
        "",
        f"    {command.strip()}",
        "",
        "| policy | delay | RTC | actions/chunk | success % | RTC - plain (pts) | avg jump | max jump | switches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = r.get("rtc_minus_plain")
        paired = f"{diff['mean']:+.1f} ± {diff['ci95']:.1f}" if diff else ""
        lines.append(
            f"| {r['policy']} | {r['inference_delay']} | {'yes' if r['rtc'] else 'no'} | {r['actions_per_chunk']} "
            f"| {r['pc_success']:.1f} | {paired} | {r['avg_chunk_jump']:.4f} | {r['max_chunk_jump']:.4f} "
            f"| {r['n_chunk_switches']} |"
        )
    write_text_atomic(results / "rtc.md", "\n".join(lines) + "\n")
    write_json_atomic(results / "rtc.json", {"command": command.strip(), "rows": rows})
    return results / "rtc.md"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    path = report(run(args), args, argv)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
