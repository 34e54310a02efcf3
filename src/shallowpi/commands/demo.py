"""`shallowpi demo`: the whole Shallow-π story on a CPU in one command.

    shallowpi demo                      # bundled Meta-World teacher, minutes on a CPU
    shallowpi demo --quick              # CI size
    shallowpi demo --teacher PATH --out outputs/demo --tasks reach,drawer-close --episodes-per-task 5 \
        --steps 400

Stages: teacher -> collect demonstrations (seed 0) -> distil an L6 student (task + KD + attention) -> evaluate
teacher and student on held-out setups (seed 1000; with the bundled teacher also its shipped full-schedule L6
student, on the same episodes) -> benchmark both in one process -> table + report
(<out>/demo.md, numbers in <out>/demo_results.json).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from shallowpi.atomic import write_json_atomic, write_text_atomic
from shallowpi.commands.options import SIM_WORKERS_HELP, add_old_flag, check_out_folder, positive_float
from shallowpi.errors import UserError

# Three tasks the bundled teacher solves (100 / 100 / 100 % on 100 held-out episodes each): the demo shows what
# distillation keeps, not a weak teacher. button-press-topdown was a default before.
DEFAULT_TASKS = "reach,drawer-close,window-close"
SHIPPED = "shipped_student"  # the bundled teacher's full-schedule student, evaluated beside the demo's


@dataclass
class DemoSizes:
    """Defaults: sized for a 2-core CPU within the demo's time limit (README, "The Meta-World study and the
    demo", has the measured time and success rates); `quick` for CI."""

    tasks: str = DEFAULT_TASKS
    demos_per_task: int = 10  # collected demonstrations per task
    steps: int = 600  # distillation steps
    batch_size: int = 16
    episodes_per_task: int = 10  # held-out eval episodes per task and policy
    max_steps: int = 200
    bench_iters: int = 30
    workers: int = 2
    threads: int | None = None  # torch threads (None: torch's default, the core count)


QUICK = DemoSizes(
    tasks="reach",
    demos_per_task=1,
    steps=2,
    batch_size=4,
    episodes_per_task=1,
    max_steps=10,
    bench_iters=20,
    workers=1,
    threads=1,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoSizes()
    p.add_argument(
        "--teacher", default=None, help="teacher pretrained_model folder (default: the bundled one)"
    )
    p.add_argument("--out", default="outputs/demo", help="output folder (data, student, evals, report)")
    p.add_argument("--quick", action="store_true", help="CI size: 1 task, 1 demo, 2 steps, 1 short episode")
    p.add_argument("--tasks", default=None, help=f"Meta-World tasks (default {d.tasks}; mt10 for all ten)")
    p.add_argument(
        "--demos-per-task",
        type=int,
        default=None,
        help=f"demonstrations collected per task (default {d.demos_per_task})",
    )
    p.add_argument(
        "--episodes-per-task",
        type=int,
        default=None,
        help=f"eval episodes per task and policy (default {d.episodes_per_task})",
    )
    add_old_flag(p, "--demos", "demos_per_task")
    add_old_flag(p, "--episodes", "episodes_per_task")
    p.add_argument("--steps", type=int, default=None, help=f"distillation steps (default {d.steps})")
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"distillation batch (default {d.batch_size})"
    )
    p.add_argument("--max-steps", type=int, default=None, help=f"eval episode cap (default {d.max_steps})")
    p.add_argument("--depth", type=int, default=6, help="student layers in both stacks (default 6)")
    p.add_argument(
        "--lr", type=positive_float, default=2e-4, help="peak distillation learning rate (the study's)"
    )
    p.add_argument("--workers", type=int, default=None, help=f"{SIM_WORKERS_HELP} (default 2; --quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: cores; --quick 1)")


def _sizes(args: argparse.Namespace) -> DemoSizes:
    from shallowpi.sim.metaworld_env import MAX_PATH_LENGTH

    s = QUICK if args.quick else DemoSizes()
    s = DemoSizes(**vars(s))
    for name in (
        "tasks",
        "demos_per_task",
        "episodes_per_task",
        "steps",
        "batch_size",
        "max_steps",
        "workers",
        "threads",
    ):
        v = getattr(args, name)
        if v is not None:
            setattr(s, name, v)
    for name in ("demos_per_task", "episodes_per_task", "steps", "batch_size", "max_steps", "workers"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(s, name)}")
    if s.max_steps > MAX_PATH_LENGTH:  # checked by eval too, but only after collecting and distilling
        raise UserError(f"--max-steps must be <= {MAX_PATH_LENGTH} (Meta-World's limit), got {s.max_steps}")
    return s


class _Stages:
    """'[i/n] name: what' lines with elapsed time, so a newcomer always sees where the demo is."""

    def __init__(self, n: int) -> None:
        self.n, self.i, self.t0 = n, 0, time.perf_counter()
        self.t_stage = self.t0

    def start(self, name: str, what: str) -> None:
        self.i += 1
        self.t_stage = time.perf_counter()
        print(f"\n[{self.i}/{self.n}] {name}: {what}", flush=True)

    def done(self, what: str) -> None:
        now = time.perf_counter()
        print(f"      {what} ({now - self.t_stage:.0f} s; {now - self.t0:.0f} s total)", flush=True)

    @property
    def total_s(self) -> float:
        return time.perf_counter() - self.t0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shallowpi.paths import portable_path
    from shallowpi.sim import metaworld_env as mw
    from shallowpi.study import pipeline
    from shallowpi.study.workspace import Schedule, Workspace

    sizes = _sizes(args)
    check_out_folder(args.out)
    if sizes.threads is not None and sizes.threads < 1:
        raise UserError(f"--threads must be >= 1, got {sizes.threads}")
    tasks = mw.resolve_tasks(sizes.tasks)
    teacher_path = pipeline.resolve_teacher(args.teacher)  # one clear line when missing (cli.py prints it)
    out = Path(args.out)
    st = _Stages(6)

    st.start("teacher", str(teacher_path))
    teacher = pipeline.teacher_info(teacher_path)
    if not 1 <= args.depth < teacher.depth:
        raise UserError(f"--depth must be in [1, {teacher.depth - 1}] (below the teacher's {teacher.depth})")
    ws = Workspace(
        out, tag="demo", in_process=True, progress=True
    )  # a person watches the demo  # the study's pipeline, run in this process
    teacher_link = ws.link("teacher", teacher_path)  # bench names runs by folder name
    st.done(
        f"{teacher.variant}, {teacher.depth} layers, cameras {','.join(teacher.cameras)}, "
        f"{teacher.image_size} px"
    )

    data = out / "data"
    st.start(
        "collect",
        f"{sizes.demos_per_task} scripted demonstration(s) x {len(tasks)} task(s), seed 0 -> {data}",
    )
    ws.collect(
        data,
        tasks=",".join(tasks),
        demos_per_task=sizes.demos_per_task,
        image_size=teacher.image_size,
        cameras=teacher.cameras,
        state=teacher.state_layout,
        workers=min(sizes.workers, len(tasks) * sizes.demos_per_task),
        overwrite=True,  # the demo's sizes may have changed since the last run in this folder
    )
    info = json.loads((data / "meta" / "info.json").read_text())
    st.done(f"{info['total_episodes']} episodes kept, {info['total_frames']} frames")

    name = f"student_L{args.depth}"
    st.start(
        "distill",
        f"L{args.depth} student from the L{teacher.depth} teacher, task + KD + attention, "
        f"{sizes.steps} steps x batch {sizes.batch_size}",
    )
    argv = ["distill", "--teacher", str(teacher_path), "--dataset", str(data), "--depth", str(args.depth)]
    argv += ["--weights", "task=1,kd=1,attn=1", "--batch-size", str(sizes.batch_size), "--num-workers", "0"]
    schedule = Schedule(sizes.steps, args.lr, end_ratio=None, max_warmup=sizes.steps)
    # a partial run of an earlier demo in this folder may have had other sizes: restart it
    student_path = ws.train(name, argv, schedule, save_every=sizes.steps, threads=sizes.threads, resume=False)
    st.done(f"student saved in {student_path}")

    spec = pipeline.EvalSpec(
        tasks=tasks,
        episodes_per_task=sizes.episodes_per_task,
        image_size=teacher.image_size,
        max_steps=sizes.max_steps,
        workers=sizes.workers,
        threads=sizes.threads,
    )
    st.start(
        "eval",
        f"teacher and student, {sizes.episodes_per_task} held-out episode(s) x {len(tasks)} task(s) "
        f"(seed {spec.seed}, <= {sizes.max_steps} steps)",
    )
    policies = {"teacher": teacher_link, name: student_path}
    # with the bundled teacher, its shipped full-schedule student runs on the same episodes: what a few
    # CPU-minutes buy beside what the method reaches
    shipped = pipeline.bundled_student_path() if args.teacher is None else None
    if shipped is not None:
        shipped_info = pipeline.teacher_info(shipped)
        policies[SHIPPED] = ws.link(SHIPPED, shipped)
    infos = {}
    for label, path in policies.items():
        infos[label] = ws.evaluate(label, path, spec, progress=True)
        print(f"      {label}: {infos[label]['overall']['pc_success']:.1f} % success", flush=True)
    probe = pipeline.probe_actions(policies, tasks, teacher.image_size, threads=sizes.threads)
    st.done(
        "action chunks: "
        + "; ".join(
            f"{k} finite={v['finite']} range [{v['min']:.2f}, {v['max']:.2f}]" for k, v in probe.items()
        )
    )

    st.start("bench", "CPU latency of one action chunk, both models in one process, same inputs")
    benched = [teacher_link, student_path]  # results are matched to bench runs by depth
    if shipped is not None and shipped_info.depth != args.depth:
        benched.append(policies[SHIPPED])
    bench = ws.bench(benched, iters=sizes.bench_iters, threads=sizes.threads, cache=False)
    st.done("done")

    st.start("report", str(out / "demo.md"))
    from shallowpi.study import plots as study_plots
    from shallowpi.study import report as study_report
    from shallowpi.study import results as study_results

    results = [
        study_results.PolicyResult(
            "teacher",
            f"teacher L{teacher.depth}",
            teacher.depth,
            "teacher",
            pipeline.success_by_task(infos["teacher"]),
            sizes.episodes_per_task,
        ),
        study_results.PolicyResult(
            name,
            f"L{args.depth} task+KD+attn ({sizes.steps} steps)",
            args.depth,
            "student",
            pipeline.success_by_task(infos[name]),
            sizes.episodes_per_task,
        ),
    ]
    if shipped is not None:
        results.append(
            study_results.PolicyResult(
                SHIPPED,
                f"L{shipped_info.depth} shipped (full schedule)",
                shipped_info.depth,
                "student",
                pipeline.success_by_task(infos[SHIPPED]),
                sizes.episodes_per_task,
            )
        )
    study_results.attach_bench(results, bench)
    png = study_plots.plot_pareto(results, out / "demo_pareto.png", title="shallowpi demo (CPU)")
    commands = ws.ran
    md = study_report.render_markdown(
        "shallowpi demo",
        results,
        tasks,
        settings={
            "teacher": portable_path(teacher_path),
            "tasks": ",".join(tasks),
            "demonstrations per task": sizes.demos_per_task,
            "distillation": f"{sizes.steps} steps x batch {sizes.batch_size}, lr {args.lr}",
            "eval": f"{sizes.episodes_per_task} episodes per task, seed {spec.seed}, max {sizes.max_steps} steps",
            "bench": f"{bench['environment']['torch_threads']} torch threads, {sizes.bench_iters} calls, "
            f"{bench['settings']['num_steps']} Euler steps",
            "wall time": f"{st.total_s:.0f} s",
        },
        commands=commands,
        plot=png.name if png else None,
        ablations=False,
        notes=[
            "A short demo schedule: the student's success here is not the study's number "
            "(results/v3/README.md has the study's, on 1,000 held-out setups)."
        ]
        + (
            [
                f"`{SHIPPED}` is the bundled teacher's L{shipped_info.depth} student after the study's full "
                "schedule (4,800 steps x batch 32; its README gives the CPU time and held-out MT10 score), "
                "shipped with the package and evaluated on the same episodes: what the method reaches, "
                "beside what a few CPU-minutes buy."
            ]
            if shipped is not None
            else []
        ),
    )
    report = write_text_atomic(out / "demo.md", md)
    from dataclasses import asdict

    write_json_atomic(
        obj={
            "policies": [asdict(r) | {"mean": r.mean} for r in results],
            "probe": probe,
            "bench": bench,
            "sizes": asdict(sizes),
            "wall_s": st.total_s,
        },
        path=out / "demo_results.json",
    )
    st.done("written")

    print(f"\n{'policy':<32} {'success':>8} {'latency':>10} {'speed-up':>9}")
    for r in results:
        print(f"{r.label:<32} {r.mean:7.1f}% {r.latency_ms:8.1f}ms {r.speedup:8.2f}x")
    print(f"\nreport: {report}   ({st.total_s:.0f} s)")
    return 0
