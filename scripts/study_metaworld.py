#!/usr/bin/env python3
"""The Meta-World study, end to end, resumable: regenerates results/metaworld.md and results/pareto.png.

    python scripts/study_metaworld.py --work outputs/study                 # full size (hours on a 2-core CPU)
    python scripts/study_metaworld.py --work outputs/study --smoke         # every stage at toy sizes, minutes
    python scripts/study_metaworld.py --work outputs/study --stages eval,bench,report --teacher PATH

Stages (each skips what is already finished; training resumes from its last checkpoint):
  collect   MT10 scripted demonstrations, seed 0                          -> WORK/data
  teacher   `shallowpi train --preset testbed` (18 + 18 layers)           -> WORK/train/teacher, WORK/policies/teacher
  students  L9/L6/L4/L3 task+KD+attn; L6 loss ablation (task; task+KD; task+KD+attn) x --seeds training
            seeds; attention at the initial / late layer; λ_attn 0.1 / 10; baselines L6 layer skipping (no
            training), L6 from scratch (task loss, same steps) and the authors' released initialisation
            (backbone keeps its first layers, only the expert subsampled, task + KD; x --seeds); the schedule
            sweep (L6 task+KD+attn at each of --schedule-steps)
  eval      every policy on the held-out setups (seed 1000)               -> WORK/eval/<name>/eval_info.json
            and a copy in RESULTS/evals/<name>.json (small, committed: a later session resumes from it)
  bench     CPU latency + FLOPs of every depth in ONE process, same inputs -> WORK/bench.json
  report    results/metaworld.md (+ .json), results/pareto.png, results/schedule.png

Few-step students (issue 16: L6 sampled with 2 / 1 steps, naive and step-distilled) are made and evaluated by
scripts/study_steps.py; this study reads their evaluations from RESULTS/steps/evals, times their
architectures in its one bench process and reports them with the rest.

A policy whose evaluation is already in RESULTS/evals (same settings) is neither trained nor evaluated again,
so the study can be spread over several machines or sessions: commit RESULTS/evals as evaluations land.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from shallowpi.atomic import write_json_atomic, write_text_atomic
from shallowpi.paths import portable_path
from shallowpi.study.workspace import add_stage_args, eval_spec, finish_study_args, run_stages, without_stages

STAGES = ("collect", "teacher", "students", "eval", "bench", "report")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One policy of the study: how it is made and where it goes in the tables."""

    name: str
    label: str
    depth: int
    kind: str  # teacher | student | ablation | skip | scratch | released | schedule | steps
    weights: str | None = None  # distillation loss weights; None: not distilled
    attn: str | None = None  # "initial" | "late" | None (middle, the default pair)
    seed: int = 1000  # training seed
    group: str | None = None  # seed group: the report pools the group's runs under this name
    attn_weight: float | None = None  # λ_attn; None: --attn-weight
    steps: int | None = None  # distillation steps; None: --student-steps
    vlm_layers: str | None = None  # backbone's own teacher layers (the released-initialisation baseline)
    num_steps: int | None = None  # denoising steps of a few-step student (kind "steps")
    eval_name: str | None = None  # its evaluation's file name, when not `name` (study_steps.py's names)


def variants(teacher_depth: int, seeds: int = 3, schedule_steps: tuple[int, ...] = ()) -> list[Variant]:
    kd_attn = "task=1,kd=1,attn={attn}"
    out = [Variant("teacher", f"teacher L{teacher_depth}", teacher_depth, "teacher")]
    out += [
        Variant(f"L{d}_task_kd_attn", f"L{d} task+KD+attn", d, "student", kd_attn, group=main_group(d))
        for d in (9, 6, 4, 3)
    ]
    # The loss ablation over training seeds; seed 1000 of task+KD+attn is the main L6 student above.
    for name, label, weights in (
        ("L6_task", "L6 task", "task=1,kd=0,attn=0"),
        ("L6_task_kd", "L6 task+KD", "task=1,kd=1,attn=0"),
        ("L6_task_kd_attn", "L6 task+KD+attn", kd_attn),
    ):
        out += [v for v in seed_group(name, label, seeds, "ablation", weights) if v.name != "L6_task_kd_attn"]
    out += [
        Variant("L6_attn_initial", "L6 attn@initial", 6, "ablation", kd_attn, "initial"),
        Variant("L6_attn_late", "L6 attn@late", 6, "ablation", kd_attn, "late"),
        Variant("L6_attn_w0.1", "L6 λ_attn 0.1", 6, "ablation", kd_attn, attn_weight=0.1),
        Variant("L6_attn_w10", "L6 λ_attn 10", 6, "ablation", kd_attn, attn_weight=10.0),
        Variant("L6_skip", "L6 layer skipping (no training)", 6, "skip"),
        Variant("L6_scratch", "L6 from scratch (task loss)", 6, "scratch"),
    ]
    # The released initialisation over the same training seeds: one seed cannot tell its cost from seed noise.
    out += seed_group(
        "L6_released",
        "L6 released init, backbone 0-5, task+KD",
        seeds,
        "released",
        "task=1,kd=1,attn=0",
        vlm_layers=",".join(str(j) for j in range(6)),
    )
    out += [
        Variant(f"L6_steps{n}", f"L6 task+KD+attn, {n} steps", 6, "schedule", kd_attn, steps=n)
        for n in schedule_steps
    ]
    if schedule_steps:  # the loss ablation and the scratch baseline again at the sweep's longest schedule
        n = max(schedule_steps)
        out += [
            Variant(f"L6_task_steps{n}", f"L6 task, {n} steps", 6, "ablation", "task=1,kd=0,attn=0", steps=n),
            Variant(
                f"L6_task_kd_steps{n}", f"L6 task+KD, {n} steps", 6, "ablation", "task=1,kd=1,attn=0", steps=n
            ),
            Variant(f"L6_scratch_steps{n}", f"L6 from scratch (task loss), {n} steps", 6, "scratch", steps=n),
        ]
    # Made by scripts/study_steps.py (its variant names): read from RESULTS/steps/evals, never trained here.
    out.append(Variant("L6_K10", "L6 @10 (the step study's start)", 6, "steps", num_steps=10, eval_name="L6"))
    for k in FEW_STEPS:
        out += [
            Variant(f"L6_K{k}_naive", f"L6 @{k} steps, naive (no step training)", 6, "steps", num_steps=k),
            Variant(f"L6_K{k}_distilled", f"L6 @{k} steps, step-distilled", 6, "steps", num_steps=k),
        ]
    return out


def seed_group(name: str, label: str, seeds: int, kind: str, weights: str, **fields) -> list[Variant]:
    """An L6 recipe over training seeds 1000, 1001, ...: seed 1000 keeps the recipe's name, the others get
    `_seed<N>`; the report pools them under `name`. `fields`: further Variant fields."""
    return [
        Variant(
            name if i == 0 else f"{name}_seed{1000 + i}",
            f"{label} (seed {1000 + i})",
            6,
            kind,
            weights,
            seed=1000 + i,
            group=name,
            **fields,
        )
        for i in range(seeds)
    ]


FEW_STEPS = (2, 1)  # denoising steps of the few-step students study_steps.py makes


def main_group(depth: int) -> str | None:
    """The main L6 student is seed 1000 of the task+KD+attn seed group; the other depths have one seed."""
    return "L6_task_kd_attn" if depth == 6 else None


# arguments --------------------------------------------------------------------------------------------------

SMOKE = {  # every stage at toy sizes: proves the pipeline end to end in a few minutes
    "tasks": "reach,drawer-close",
    "demos_per_task": 2,
    "teacher_steps": 4,
    "teacher_batch_size": 4,
    "student_steps": 2,
    "student_batch_size": 4,
    "episodes_per_task": 1,
    "max_steps": 10,
    "bench_iters": 20,
    "save_every": 2,
    "seeds": 2,
    "schedule_steps": "1,2",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", default="outputs/study", help="big outputs (data, checkpoints, evals); not in git"
    )
    p.add_argument("--results", default=None, help="report folder (default results/; --smoke: WORK/results)")
    add_stage_args(p, STAGES, SMOKE)
    p.add_argument("--teacher", default=None, help="use this teacher folder (skips the teacher stage)")
    p.add_argument("--preset", default="testbed", help="model preset of the teacher and the scratch baseline")
    p.add_argument("--teacher-depth", type=int, default=18)
    p.add_argument("--tasks", default="mt10")
    p.add_argument("--demos-per-task", type=int, default=50)
    p.add_argument("--image-size", type=int, default=64, help="render size for demos and eval")
    p.add_argument("--cameras", default="corner4,gripperPOV")
    from shallowpi.sim.metaworld_env import STATE_LAYOUTS

    p.add_argument(
        "--state",
        default=None,
        choices=sorted(STATE_LAYOUTS),
        help="demo state layout (default: the --teacher's, else hand_goal)",
    )
    p.add_argument("--teacher-steps", type=int, default=30000)
    p.add_argument("--teacher-batch-size", type=int, default=32)
    p.add_argument("--teacher-lr", type=float, default=3e-4, help="also the scratch baseline's (same recipe)")
    p.add_argument(
        "--student-steps",
        type=int,
        default=4800,
        help="the schedule of every student; 4800 is the shortest of the sweep with L6 within 1 pt of the "
        "bundled teacher (results/metaworld.md, whose ablations ran at 1200 to fit a 2-core CPU)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="training seeds of the L6 loss ablation and the released initialisation",
    )
    p.add_argument(
        "--schedule-steps",
        default="300,600,1200,2400,4800",
        help="L6 task+KD+attn distillation lengths of the schedule sweep ('' for none)",
    )
    p.add_argument("--student-batch-size", type=int, default=32)
    p.add_argument("--student-lr", type=float, default=2e-4, help="peak lr, cosine to a tenth (the study's)")
    p.add_argument("--attn-weight", type=float, default=1.0, help="λ_attn of the +attn students")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--episodes-per-task", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="sim worker processes (collect, eval)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training and bench")
    p.add_argument("--bench-iters", type=int, default=50)
    p.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    args = p.parse_args(argv)
    finish_study_args(p, args, stages=STAGES, smoke=SMOKE, argv=argv, default_results=REPO / "results")
    if args.state is None:
        from shallowpi.study.pipeline import teacher_info

        args.state = teacher_info(Path(args.teacher)).state_layout if args.teacher else "hand_goal"
    args.schedule_steps = tuple(int(x) for x in str(args.schedule_steps).split(",") if x.strip())
    if any(n < 1 for n in args.schedule_steps):
        p.error(f"--schedule-steps must be positive, got {args.schedule_steps}")
    return args


# plumbing ---------------------------------------------------------------------------------------------------


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        from shallowpi.study.workspace import Workspace

        self.args = args
        self.ws = Workspace(args.work, tag="study")
        self.work, self.policies = self.ws.work, self.ws.policies
        self.data = self.work / "data"

    def say(self, msg: str) -> None:
        self.ws.say(msg)

    @property
    def teacher_path(self) -> Path:
        return Path(self.args.teacher) if self.args.teacher else self.policies / "teacher"

    def selected(self) -> list[Variant]:
        a = self.args
        sweep = tuple(n for n in a.schedule_steps if n != a.student_steps)  # that one is the main L6
        from shallowpi.errors import UserError
        from shallowpi.study.workspace import only_named

        try:
            return only_named(
                variants(a.teacher_depth, a.seeds, sweep), a.only, keep=lambda v: v.kind == "teacher"
            )
        except UserError as e:
            raise SystemExit(str(e)) from None

    def policy_dir(self, v: Variant) -> Path:
        return self.teacher_path if v.kind == "teacher" else self.policies / v.name

    def train(self, name: str, argv: list[str], steps: int, lr: float) -> Path:
        from shallowpi.study.workspace import Schedule

        return self.ws.train(
            name, argv, Schedule(steps, lr), save_every=self.args.save_every, threads=self.args.threads
        )

    # stages ---------------------------------------------------------------------------------------------------

    def collect_options(self) -> dict:
        """Keyword arguments of the study's demonstrations (`Workspace.collect`, `collect_argv`)."""
        a = self.args
        return {
            "tasks": a.tasks,
            "demos_per_task": a.demos_per_task,
            "image_size": a.image_size,
            "cameras": a.cameras.split(","),
            "state": a.state,
            "workers": a.workers,
        }

    def collect(self) -> None:
        self.ws.collect(self.data, **self.collect_options())

    def teacher(self) -> None:
        a = self.args
        if a.teacher:
            self.say(f"teacher: using {a.teacher}, skipping training")
            return
        self.train(
            "teacher",
            [
                "train",
                "--preset",
                a.preset,
                "--depth",
                str(a.teacher_depth),
                "--dataset",
                str(self.data),
                "--batch-size",
                str(a.teacher_batch_size),
                "--seed",
                "1000",
            ],
            a.teacher_steps,
            a.teacher_lr,
        )

    def students(self) -> None:
        from shallowpi.study import pipeline

        teacher = str(self.teacher_path)
        for v in self.selected():
            if v.kind == "teacher":
                continue
            if v.kind == "steps":
                if self.kept_eval(v) is None:
                    self.say(
                        f"{v.name}: made by scripts/study_steps.py (no evaluation in {self.kept_eval_path(v)})"
                    )
                continue
            if self.kept_eval(v) is not None:
                self.say(f"{v.name}: evaluated in {self.kept_eval_path(v)}, skipping its training")
                continue
            if v.kind == "skip":
                if not (self.policy_dir(v) / "model.safetensors").is_file():
                    self.say(f"{v.name}: subsampling the teacher, no training")
                    pipeline.save_layer_skip_student(teacher, v.depth, self.policy_dir(v))
                continue
            policy = self.train(v.name, *self.training_job(v))
            if v.kind == "scratch":  # evaluated as the teacher and its students run: the teacher's horizon
                pipeline.copy_horizon(teacher, policy)

    def training_job(self, v: Variant) -> tuple[list[str], int, float] | None:
        """(argv, steps, peak lr) of the run that makes `v`; None for variants this script does not train."""
        from shallowpi.distill.student import default_layer_map
        from shallowpi.study import pipeline

        a = self.args
        if v.kind in ("teacher", "steps", "skip"):
            return None
        steps = v.steps or a.student_steps
        data = ["--dataset", str(self.data), "--depth", str(v.depth)]
        batch = ["--batch-size", str(a.student_batch_size), "--seed", str(v.seed)]
        if v.kind == "scratch":
            # The student's architecture: the teacher's variant (pi0 or pi05), not the preset's default.
            variant = pipeline.teacher_info(self.teacher_path).variant
            return ["train", "--preset", a.preset, "--variant", variant, *data, *batch], steps, a.teacher_lr
        weights = v.weights.format(attn=v.attn_weight if v.attn_weight is not None else a.attn_weight)
        argv = ["distill", "--teacher", str(self.teacher_path), *data, "--weights", weights, *batch]
        if v.vlm_layers is not None:
            argv += ["--backbone-layers", v.vlm_layers]
        if v.attn is not None:
            layer_map = default_layer_map(a.teacher_depth, v.depth)
            s = 0 if v.attn == "initial" else v.depth - 1
            argv += ["--attn-layers", f"{s}:{layer_map[s]}"]
        return argv, steps, a.student_lr

    def commands(self, shown: list[Variant]) -> list[str]:
        """What makes every policy in the tables, in table order: the demonstrations, then each training run
        (a stopped run is continued by the script with `--resume`). Built from the variants, not a log, so the
        list is whole when the policies were trained in an earlier session."""
        from shallowpi.study.workspace import Schedule, collect_argv

        a = self.args
        cmds = [collect_argv(self.data, **self.collect_options())]
        for v in shown:
            job = self.training_job(v)
            if job is not None:
                argv, steps, lr = job
                cmds.append(
                    self.ws.train_argv(
                        v.name, argv, Schedule(steps, lr), save_every=a.save_every, threads=a.threads
                    )
                )
        return ["shallowpi " + shlex.join(c) for c in cmds]

    def eval_spec(self):
        return eval_spec(self.args, self.args.image_size)

    def kept_evals(self, v: Variant) -> Path:
        if v.kind == "steps":  # scripts/study_steps.py's
            return Path(self.args.results) / "steps" / "evals"
        return Path(self.args.results) / "evals"

    def kept_eval_path(self, v: Variant) -> Path:
        return self.kept_evals(v) / f"{v.eval_name or v.name}.json"

    def kept_eval(self, v: Variant) -> dict | None:
        """The committed evaluation of `v` when it was made with this study's settings and, where its policy
        is here, with the horizon the policy runs now."""
        policy = None if v.kind == "steps" else self.policy_dir(v)  # steps: scripts/study_steps.py's folders
        return self.ws.kept_eval(v.eval_name or v.name, self.eval_spec(), self.kept_evals(v), policy)

    def eval(self) -> None:
        spec = self.eval_spec()
        for v in self.selected():
            if v.kind == "steps":  # evaluated by scripts/study_steps.py, which owns the policies
                continue
            path = self.policy_dir(v)
            if self.kept_eval(v) is None and not (path / "config.json").is_file():
                self.say(f"eval: {v.name} has no policy at {path} (run its stage first), skipping")
                continue
            self.ws.evaluate(v.name, path, spec, keep_in=Path(self.args.results) / "evals")

    def bench(self) -> None:
        from shallowpi.study import pipeline

        # One architecture per depth. Latency does not depend on the weights, so each depth is timed on the
        # teacher's layer-skip student: the bench needs no trained student (nor one from an earlier session).
        paths = [self.teacher_path]
        for d in sorted({v.depth for v in self.selected() if v.kind != "teacher"}, reverse=True):
            arch = self.work / "bench_models" / f"L{d}"
            if not (arch / "model.safetensors").is_file():
                pipeline.save_layer_skip_student(str(self.teacher_path), d, arch)
            paths.append(arch)
        # Few-step architectures: the L6 one sampled with K steps (after the 10-step ones: attach_bench
        # matches a depth's first run to the 10-step results).
        for k in sorted(
            {v.num_steps for v in self.selected() if v.kind == "steps" and v.num_steps != 10}, reverse=True
        ):
            arch = self.work / "bench_models" / f"L6_K{k}"
            if not (arch / "model.safetensors").is_file():
                pipeline.save_with_steps(self.work / "bench_models" / "L6", k, arch)
            paths.append(arch)
        if self.teacher_path.name != "teacher":  # bench names runs by folder name
            paths[0] = self.ws.link("teacher", self.teacher_path)
        self.ws.bench(paths, iters=self.args.bench_iters, threads=self.args.threads)

    def step_study_has_this_teacher(self) -> bool:
        """The step study's teacher is this one when its teacher evaluation has the same per-episode
        outcomes (evaluation is deterministic given the setups); else its students are left out."""
        from shallowpi.study import pipeline

        teacher = next(v for v in self.selected() if v.kind == "teacher")
        mine = self.kept_eval(teacher)
        theirs = self.ws.kept_eval("teacher", self.eval_spec(), self.kept_evals(Variant("", "", 6, "steps")))
        if mine is None or theirs is None:
            return False
        same = pipeline.outcomes_by_task(mine) == pipeline.outcomes_by_task(theirs)
        if not same:
            self.say(
                "report: the step study in RESULTS/steps ran on another teacher; its students are left out"
            )
        return same

    def report(self) -> None:
        from shallowpi.study import pipeline
        from shallowpi.study import plots as study_plots
        from shallowpi.study import report as study_report
        from shallowpi.study import results as study_results
        from shallowpi.study import targets as study_targets

        a, spec = self.args, self.eval_spec()
        results, groups, shown, horizons = [], {}, [], {}
        same_teacher = self.step_study_has_this_teacher()
        for v in self.selected():
            info = self.kept_eval(v)
            if info is None:
                path = self.kept_eval_path(v)
                why = (
                    "does not match the study's settings or the policy's horizon"
                    if path.is_file()
                    else "is missing"
                )
                self.say(f"report: {v.name}'s eval {path} {why}; left out")
                continue
            if v.kind == "steps" and not same_teacher:
                continue
            shown.append(v)
            horizons[v.name] = info.get("settings", {}).get("actions_per_call")
            # A seed group's seed-1000 run shares the group's name; the pooled result takes that name.
            name = f"{v.name}_seed{v.seed}" if v.group == v.name else v.name
            run = pipeline.policy_result(
                info, name, v.label, v.depth, v.kind, pooled_in=v.group, num_steps=v.num_steps
            )
            results.append(run)
            if v.group:
                groups.setdefault(v.group, []).append((v, run))
        for group, members in groups.items():
            first = members[0][0]
            label = first.label.split(" (seed")[0] + (f" ({len(members)} seeds)" if len(members) > 1 else "")
            pooled = study_results.pool_runs(group, label, [run for _, run in members])
            pooled.kind = "student" if any(v.kind == "student" for v, _ in members) else first.kind
            results.append(pooled)
        order = {v.name: i for i, v in enumerate(self.selected())}  # table order: the variant list's
        results.sort(key=lambda r: order.get(r.name, order.get(r.name.split("_seed")[0], len(order))))
        bench_path = self.work / "bench.json"
        bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
        if bench:
            study_results.attach_bench(results, bench)
        results_dir = Path(a.results)
        steps_of = {v.name: v.steps for v in self.selected() if v.kind == "schedule"}
        steps_of["L6_task_kd_attn_seed1000"] = a.student_steps  # the main L6 is the sweep's default point
        rows = study_report.schedule_rows(results, steps_of)
        sched_png = study_plots.plot_schedule(
            rows,
            study_results.by_name(results).get("teacher"),
            results_dir / "schedule.png",
            title=f"L6 success vs distillation steps (Meta-World {a.tasks}, held-out seed {spec.seed})",
            log=self.say,
        )
        png = study_plots.plot_pareto(
            results,
            results_dir / "pareto.png",
            title=f"Meta-World {a.tasks}, held-out seed {spec.seed}, CPU latency",
            log=self.say,
        )
        commands = self.commands(shown)
        env = bench["environment"] if bench else {}
        settings = {
            "tasks": ",".join(spec.tasks),
            "demonstrations": f"{a.demos_per_task} per task, seed 0, {a.image_size} px, cameras {a.cameras}",
            "teacher": portable_path(a.teacher)
            or f"`shallowpi train --preset {a.preset} --depth {a.teacher_depth}`, "
            f"{a.teacher_steps} steps x batch {a.teacher_batch_size}, lr {a.teacher_lr}",
            "students": f"{a.student_steps} steps x batch {a.student_batch_size}, lr {a.student_lr}, "
            f"λ_attn {a.attn_weight}; scratch baseline: same steps and batch, lr {a.teacher_lr}",
            "eval": f"{spec.episodes_per_task} episodes per task, MT1 seed {spec.seed}, <= {spec.max_steps} steps, "
            f"{study_report.chunk_execution(horizons)}; paired intervals average each setup over the seeds",
            "seeds": f"L6 loss ablation and released initialisation: {a.seeds} training seeds "
            f"(1000..{999 + a.seeds}), pooled",
            "bench": f"engine runtime, batch 1, {a.bench_iters} interleaved calls per model, torch "
            f"{env.get('torch', '?')}, {env.get('torch_threads', '?')} threads, "
            f"{env.get('cpu_count', '?')} CPUs ({env.get('platform', '?')})",
            "stage wall times (this WORK only)": self.ws.wall_times(),
            "smoke run (toy sizes, numbers meaningless)": "yes" if a.smoke else "no",
        }
        md = study_report.render_markdown(
            "Shallow-π on Meta-World (test bed)",
            results,
            spec.tasks,
            settings=settings,
            commands=commands,
            plot=png.name if png else None,
            schedule=steps_of,
            schedule_plot=sched_png.name if sched_png else None,
            regenerate="python " + shlex.join(["scripts/study_metaworld.py", *without_stages(sys.argv[1:])]),
        )
        out = write_text_atomic(results_dir / "metaworld.md", md)
        write_json_atomic(
            obj={
                # per-episode outcomes stay in each eval_info.json
                "results": [
                    {k: v for k, v in asdict(r).items() if k != "outcomes"} | {"mean": r.mean, "ci95": r.ci95}
                    for r in results
                ],
                "targets": [asdict(t) for t in study_targets.check_targets(results)],
                "settings": settings,
            },
            path=results_dir / "metaworld.json",
        )
        self.say(f"report: {out}" + (f" and {png}" if png else " (no plot)"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = Study(args)
    return run_stages(study, args, STAGES, smoke_word="smoke sizes")


if __name__ == "__main__":
    raise SystemExit(main())
