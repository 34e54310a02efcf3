"""The one study pipeline: a work folder whose stages (collect, train, evaluate, bench) are run by
`scripts/study_metaworld.py`, `scripts/study_steps.py`, `scripts/study_prefix.py` and
`shallowpi demo` alike.

Every stage is idempotent: finished outputs are detected and reused, training resumes from its last
checkpoint, and each `shallowpi` command is written to WORK/commands.log (the reports quote it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shallowpi.errors import UserError
from shallowpi.paths import portable_path, without_option
from shallowpi.study import pipeline


@dataclass
class Schedule:
    """Optimizer schedule of one training run: peak lr, cosine to lr * end_ratio, warmup a tenth of the run
    (at most `max_warmup` steps)."""

    steps: int
    lr: float
    end_ratio: float | None = 0.1  # None: the CLI's default end lr
    max_warmup: int = 1000

    def argv(self) -> list[str]:
        out = ["--steps", str(self.steps), "--lr", f"{self.lr:g}"]
        if self.end_ratio is not None:
            out += ["--end-lr", f"{self.lr * self.end_ratio:g}"]
        return out + ["--warmup-steps", str(max(1, min(self.max_warmup, self.steps // 10)))]


def collect_argv(
    data: Path,
    *,
    tasks: str,
    demos_per_task: int,
    image_size: int,
    cameras: Sequence[str],
    state: str,
    workers: int,
) -> list[str]:
    """`shallowpi collect --env metaworld` argv of a study's demonstrations (MT1 seed 0)."""
    argv = ["collect", "--env", "metaworld", "--tasks", tasks, "--demos-per-task", str(demos_per_task)]
    argv += ["--seed", "0", "--image-size", str(image_size), "--cameras", ",".join(cameras)]
    return argv + ["--state", state, "--workers", str(workers), "--no-progress", "--out", str(data)]


class Workspace:
    """WORK/{data, train/<name>, policies/<name>, eval/<name>, bench.json, commands.log, timings.json}.

    `in_process=True` runs commands through `shallowpi.cli.main` (the demo: no interpreter start-up per
    stage); otherwise each runs in a fresh process (the studies: memory freed after, a crash isolated).
    `progress=True` lets training show its progress bar (the demo, watched by a person); the studies' logs
    stay free of bars."""

    def __init__(
        self, work: str | Path, *, tag: str = "study", in_process: bool = False, progress: bool = False
    ) -> None:
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag, self.in_process, self.progress = tag, in_process, progress
        self.policies = self.work / "policies"
        self.log_path = self.work / "commands.log"
        self.timings_path = self.work / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}
        self.ran: list[str] = []  # the commands this process ran (the log keeps every session's)

    # plumbing -----------------------------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(f"[{self.tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def commands(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.is_file() else []

    def shallowpi(self, argv: Sequence[str]) -> None:
        """Run one `shallowpi` command and log it; a failure raises (CalledProcessError / SystemExit)."""
        cmd = "shallowpi " + shlex.join(argv)
        self.say(cmd)
        with open(self.log_path, "a") as f:
            f.write(cmd + "\n")
        self.ran.append(cmd)
        if self.in_process:
            from shallowpi.cli import main

            rc = main(list(argv))
            if rc:
                raise SystemExit(rc)
            return
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        subprocess.run([sys.executable, "-m", "shallowpi", *argv], check=True, env=env)

    def timed(self, key: str, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        fn()
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0
        self.timings_path.write_text(json.dumps(self.timings, indent=2) + "\n")

    def wall_times(self) -> str:
        """The reports' "stage wall times" line: minutes per stage run in this WORK (not earlier work folders')."""
        return ", ".join(f"{k} {v / 60:.1f} min" for k, v in self.timings.items()) or "–"

    # stages -------------------------------------------------------------------------------------------------

    def collect(
        self,
        data: Path,
        *,
        tasks: str,
        demos_per_task: int,
        image_size: int,
        cameras: Sequence[str],
        state: str,
        workers: int,
        overwrite: bool = False,
    ) -> Path:
        """Scripted demonstrations (MT1 seed 0) in `data`; an existing dataset is kept unless `overwrite`."""
        if (data / "meta" / "info.json").is_file() and not overwrite:
            self.say(f"collect: {data} exists, skipping")
            return data
        argv = collect_argv(
            data,
            tasks=tasks,
            demos_per_task=demos_per_task,
            image_size=image_size,
            cameras=cameras,
            state=state,
            workers=workers,
        )
        self.shallowpi(argv + (["--overwrite"] if overwrite else []))
        return data

    def train(
        self,
        name: str,
        argv: Sequence[str],
        schedule: Schedule,
        *,
        save_every: int,
        threads: int | None = None,
        resume: bool = True,
    ) -> Path:
        """`shallowpi train|distill ARGV` into WORK/train/NAME, resumed from its last checkpoint (or, with
        `resume=False`, an unfinished run is restarted), then the final pretrained_model copied to
        WORK/policies/NAME (returned)."""
        out = self.work / "train" / name
        done = pipeline.trained_step(out)
        if not resume and done < schedule.steps and out.exists():
            shutil.rmtree(out)
            done = 0
        if done >= schedule.steps:
            self.say(f"{name}: trained ({done} steps), skipping")
        else:
            if done:
                self.say(f"{name}: resuming at step {done}/{schedule.steps}")
            full = self.train_argv(name, argv, schedule, save_every=save_every, threads=threads)
            self.shallowpi(full + (["--resume"] if done else []))
        return pipeline.export_pretrained(out, self.policies / name)

    def train_argv(
        self,
        name: str,
        argv: Sequence[str],
        schedule: Schedule,
        *,
        save_every: int,
        threads: int | None = None,
    ) -> list[str]:
        """The full `shallowpi` argv `train` runs for NAME from scratch (a resumed run adds `--resume`); the
        reports quote it, so a table's policy can be remade without the session's commands.log."""
        return [
            *argv,
            *schedule.argv(),
            "--save-every",
            str(min(save_every, schedule.steps)),
            "--out",
            str(self.work / "train" / name),
            *([] if self.progress else ["--no-progress"]),
            *(["--threads", str(threads)] if threads else []),
        ]

    def link(self, name: str, target: Path) -> Path:
        """WORK/policies/NAME -> target (bench names its runs by folder name; the teacher is linked)."""
        link = self.policies / name
        if link.is_symlink():
            if link.resolve() == target.resolve():
                return link
            link.unlink()
        elif link.exists():
            raise UserError(f"{link} exists and is not a link made by this study; use another work folder")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve())
        return link

    def evaluate(
        self,
        name: str,
        policy: Path,
        spec: pipeline.EvalSpec,
        *,
        keep_in: Path | None = None,
        progress: bool = False,
    ) -> dict:
        """eval_info of `policy` (reused when WORK/eval/NAME or KEEP_IN/NAME.json has the same settings).
        `keep_in` also stores a copy without video paths: small enough to commit, so a later session
        resumes from it."""
        from shallowpi.atomic import write_json_atomic

        kept = self.kept_eval(name, spec, keep_in, policy)
        if kept is not None:
            return kept
        self.say(f"eval: {name} ({len(spec.tasks)} tasks x {spec.episodes_per_task} episodes)")
        info = pipeline.evaluate_policy(policy, spec, self.work / "eval" / name, progress=progress)
        if keep_in is not None:
            small = {k: v for k, v in info.items() if k != "video_paths"}
            write_json_atomic(obj=small, path=Path(keep_in) / f"{name}.json")
        self.say(f"eval: {name} {info['overall']['pc_success']:.1f} %")
        return info

    @staticmethod
    def kept_eval(
        name: str, spec: pipeline.EvalSpec, keep_in: Path | None, policy: Path | None = None
    ) -> dict | None:
        """KEEP_IN/NAME.json when it was made with `spec`'s settings (and, given the policy folder, ran its
        chunks as the policy now does); else None."""
        if keep_in is None or not (Path(keep_in) / f"{name}.json").is_file():
            return None
        info = json.loads((Path(keep_in) / f"{name}.json").read_text())
        return info if spec.matches(info, policy) else None

    def bench(
        self, paths: Sequence[Path], *, iters: int, threads: int | None = None, cache: bool = True
    ) -> dict:
        """CPU latency of every policy in ONE process (pipeline.bench_policies), saved as WORK/bench.json and
        reused while the policies and iteration count are the same."""
        from shallowpi.bench import write_json

        out = self.work / "bench.json"
        if cache and out.is_file():
            old = json.loads(out.read_text())
            s = old["settings"]
            if s["policies"] == [portable_path(p) for p in paths] and s["iters"] == iters:
                self.say(f"bench: {out} is up to date, skipping")
                return old
        self.say(f"bench: {', '.join(Path(p).name for p in paths)} in one process")
        result = pipeline.bench_policies(
            list(paths), iters=iters, threads=threads, log=lambda m: self.say(m.strip())
        )
        write_json(result, out)
        return result


DISTILL_SMOKE = {  # the distilling studies' toy sizes: every stage end to end in a few minutes
    "tasks": "reach,drawer-close",
    "demos_per_task": 2,
    "depth_steps": 2,
    "step_steps": 2,
    "batch_size": 4,
    "episodes_per_task": 1,
    "max_steps": 10,
    "bench_iters": 5,
    "save_every": 2,
}


def add_stage_args(parser, stages: Sequence[str], smoke: dict) -> None:
    """--stages and --smoke, as every study script takes them (finish_study_args checks them)."""
    parser.add_argument(
        "--stages", default=",".join(stages), help=f"comma-separated subset of {','.join(stages)}"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="toy sizes for every stage (" + ", ".join(f"{k}={v}" for k, v in smoke.items()) + ")",
    )


def add_distill_args(parser) -> None:
    """The options the studies that distil students from a teacher (depth, then steps) share: where the
    teacher and data come from, the demonstrations, both training schedules' lr and sizes, the held-out
    evaluation and the bench."""
    parser.add_argument(
        "--teacher", default=None, help="teacher folder (default: the bundled test-bed teacher)"
    )
    parser.add_argument("--data", default=None, help="LeRobot dataset of demonstrations (skips collect)")
    parser.add_argument("--states", choices=("student", "target"), default="student")
    parser.add_argument("--tasks", default="mt10")
    parser.add_argument("--demos-per-task", type=int, default=50)
    parser.add_argument("--depth-lr", type=float, default=2e-4)
    parser.add_argument("--step-lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--episodes-per-task", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="sim worker processes (collect, eval)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for training, eval and bench"
    )
    parser.add_argument("--bench-iters", type=int, default=50)


def step_counts(parser, text: str) -> list[int]:
    """--ks "2,1" -> [2, 1]; anything else is the parser's one-line error."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        parser.error(f"--ks {text}: expected comma-separated integers, e.g. 2,1")


def eval_spec(args, image_size: int) -> pipeline.EvalSpec:
    """The held-out evaluation a study's options describe (--tasks, --episodes-per-task, --max-steps,
    --workers, --threads), at the teacher's image size."""
    from shallowpi.sim import metaworld_env as mw

    return pipeline.EvalSpec(
        tasks=mw.resolve_tasks(args.tasks),
        episodes_per_task=args.episodes_per_task,
        image_size=image_size,
        max_steps=args.max_steps,
        workers=args.workers,
        threads=args.threads,
    )


def only_named(variants: Sequence, only: str | None, keep: Callable = lambda v: False) -> list:
    """`variants` narrowed to --only's comma-separated names (None or empty: all of them); those `keep` accepts
    stay whatever --only says. A name that is no variant's is refused, with the known ones."""
    if not only:
        return list(variants)
    want = {n.strip() for n in only.split(",")}
    unknown = want - {v.name for v in variants}
    if unknown:
        raise UserError(
            f"--only: unknown policy name(s) {sorted(unknown)}; known: {[v.name for v in variants]}"
        )
    return [v for v in variants if v.name in want or keep(v)]


def run_stages(study, args, stages: Sequence[str], *, smoke_word: str = "smoke") -> int:
    """Run the stages of `stages` that --stages selected, in order, each timed in the study's workspace."""
    study.say(
        f"stages {','.join(args.stages)}; work {study.work}; results {args.results}"
        + (f" ({smoke_word})" if args.smoke else "")
    )
    for stage in stages:
        if stage in args.stages:
            study.say(f"== {stage} ==")
            study.ws.timed(stage, getattr(study, stage))
    study.say("done")
    return 0


def smoke_defaults(args, smoke: dict, argv: Sequence[str] | None) -> None:
    """Apply a script's --smoke sizes to every option the command line did not give."""
    given = {
        a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")
    }
    for k, v in smoke.items():
        if k not in given:
            setattr(args, k, v)


def finish_study_args(
    parser, args, *, stages: Sequence[str], smoke: dict, argv, default_results: Path
) -> None:
    """The options every study script shares: --smoke sizes, --stages checked against `stages`, and
    --results (default `default_results`; with --smoke WORK/results, so toy numbers never land in git)."""
    if args.smoke:
        smoke_defaults(args, smoke, argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in args.stages if s not in stages]
    if bad:
        parser.error(f"unknown stage {bad[0]!r}; choose from {', '.join(stages)}")
    if args.results is None:
        args.results = str(Path(args.work) / "results") if args.smoke else str(default_results)


def without_stages(argv: Sequence[str]) -> list[str]:
    """`argv` less --stages: a report's command regenerates every stage (finished ones are skipped)."""
    return without_option(argv, "--stages")


TEACHER_RECORD = "study_teacher.json"


def check_teacher(folder: Path, teacher: Path) -> None:
    """Record in FOLDER/study_teacher.json which teacher its outputs come from (its weights' digest), and
    refuse a folder made with another teacher: a study resumes from what a folder holds, and students or
    evaluations of an earlier teacher would otherwise enter the tables unnoticed."""
    from shallowpi.atomic import write_json_atomic

    record = Path(folder) / TEACHER_RECORD
    digest = pipeline.policy_digest(teacher)
    if record.is_file():
        old = json.loads(record.read_text())
        if old.get("sha256") != digest:
            raise UserError(
                f"{folder} holds a study of another teacher ({old.get('path')}, weights {old.get('sha256')}; "
                f"now {portable_path(teacher)}, {digest}): give another folder, or empty this one"
            )
        return
    write_json_atomic(obj={"path": portable_path(teacher), "sha256": digest}, path=record)
