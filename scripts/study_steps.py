#!/usr/bin/env python3
"""Fewer steps on top of fewer layers (issue 16), end to end, resumable: results/steps/steps.md (+ .json, plot).

    python scripts/study_steps.py --work outputs/steps --l6 L6_DIR            # full size (hours on 2 CPUs)
    python scripts/study_steps.py --work outputs/steps --smoke                # every stage at toy sizes
    python scripts/study_steps.py --work outputs/steps --stages eval,bench,report --l6 L6_DIR

Policies: teacher@10, L6@10 (the depth-distilled student), and for every K in --ks the same L6 sampled
naively with K Euler steps (no training) and L6 step-distilled to K steps (docs/step-distillation.md).

Stages (each skips what is already finished; training resumes from its last checkpoint):
  collect   MT10 scripted demonstrations, seed 0 (observations for distillation) -> WORK/data
  depth     the L6 student (task+KD+attn), unless --l6 gives one             -> WORK/policies/L6
  steps     `shallowpi distill --student L6 --num-steps K` for each K         -> WORK/policies/L6_K<k>_distilled
  naive     L6 copies whose config samples K uniform Euler steps              -> WORK/policies/L6_K<k>_naive
  eval      every policy on the held-out setups (seed 1000), its own schedule -> WORK/eval/<name>/eval_info.json
            and a copy in RESULTS/evals/<name>.json (small, committed: reused by a later run and read by
            scripts/study_metaworld.py, which reports these students when RESULTS is its results/steps)
  bench     CPU latency of every policy in ONE process, same inputs, with the vision / prefix / denoise split
  report    results/steps/steps.md (+ .json), steps_pareto.png and evals/ (--results; --smoke: WORK/results)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from shallowpi.atomic import write_json_atomic, write_text_atomic
from shallowpi.paths import portable_argv, portable_command, portable_path
from shallowpi.study.workspace import (
    DISTILL_SMOKE,
    add_distill_args,
    add_stage_args,
    eval_spec,
    finish_study_args,
    run_stages,
    step_counts,
)

STAGES = ("collect", "depth", "steps", "naive", "eval", "bench", "report")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    name: str  # folder name under WORK/policies (bench names runs by it)
    label: str
    depth: int
    steps: int
    kind: str  # teacher | student | naive | distilled


def variants(teacher_depth: int, ks: list[int]) -> list[Variant]:
    out = [Variant("teacher", f"teacher L{teacher_depth} @10", teacher_depth, 10, "teacher")]
    out.append(Variant("L6", "L6 @10", 6, 10, "student"))
    for k in ks:
        out.append(Variant(f"L6_K{k}_naive", f"L6 @{k} naive", 6, k, "naive"))
        out.append(Variant(f"L6_K{k}_distilled", f"L6 @{k} distilled", 6, k, "distilled"))
    return out


SMOKE = DISTILL_SMOKE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", default="outputs/steps", help="big outputs (data, checkpoints, evals); not in git"
    )
    p.add_argument(
        "--results",
        default=None,
        help="report folder (default results/steps, read by study_metaworld.py; --smoke: WORK/results)",
    )
    add_stage_args(p, STAGES, SMOKE)
    add_distill_args(p)
    p.add_argument("--l6", default=None, help="depth-distilled L6 folder (skips the depth stage)")
    p.add_argument("--ks", default="2,1", help="student step counts")
    p.add_argument(
        "--target",
        choices=("teacher", "l6"),
        default="teacher",
        help="frozen target of step distillation: the teacher's or the L6 student's own 10 steps",
    )
    p.add_argument("--depth-steps", type=int, default=3600, help="L6 depth-distillation steps")
    p.add_argument("--step-steps", type=int, default=1500, help="step-distillation steps per K")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the shallowpi commands in this process (no interpreter start-up each: tests)",
    )
    args = p.parse_args(argv)

    finish_study_args(
        p, args, stages=STAGES, smoke=SMOKE, argv=argv, default_results=REPO / "results" / "steps"
    )
    args.ks = step_counts(p, args.ks)
    if any(k < 1 for k in args.ks):
        p.error("--ks: every step count must be >= 1")
    return args


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        from shallowpi.model.checkpoint import read_config
        from shallowpi.study import pipeline
        from shallowpi.study.workspace import Workspace

        self.args = args
        self.ws = Workspace(args.work, tag="steps", in_process=args.in_process)
        self.work, self.policies = self.ws.work, self.ws.policies
        self.teacher_path = pipeline.resolve_teacher(args.teacher)
        self.teacher_depth = read_config(self.teacher_path).depth
        self.data = Path(args.data) if args.data else self.work / "data"

    def say(self, msg: str) -> None:
        self.ws.say(msg)

    def policy_dir(self, v: Variant) -> Path:
        if v.kind == "teacher":
            return self.policies / "teacher"  # a link to the teacher: bench names runs by folder
        if v.kind == "student" and self.args.l6:
            return Path(self.args.l6)
        return self.policies / v.name

    def train(self, name: str, argv: list[str], steps: int, lr: float) -> None:
        from shallowpi.study.workspace import Schedule

        a = self.args
        argv = [*argv, "--batch-size", str(a.batch_size), "--seed", "1000"]
        self.ws.train(
            name, argv, Schedule(steps, lr, max_warmup=steps), save_every=a.save_every, threads=a.threads
        )

    # stages ---------------------------------------------------------------------------------------------------

    def collect(self) -> None:
        from shallowpi.study import pipeline

        info = pipeline.teacher_info(self.teacher_path)
        self.ws.collect(
            self.data,
            tasks=self.args.tasks,
            demos_per_task=self.args.demos_per_task,
            image_size=info.image_size,
            cameras=info.cameras,
            state=info.state_layout,
            workers=self.args.workers,
        )

    def depth(self) -> None:
        if self.args.l6:
            self.say(f"depth: using {self.args.l6}")
            return
        argv = ["distill", "--teacher", str(self.teacher_path), "--dataset", str(self.data), "--depth", "6"]
        self.train(
            "L6", [*argv, "--weights", "task=1,kd=1,attn=1"], self.args.depth_steps, self.args.depth_lr
        )

    def steps(self) -> None:
        l6 = self.policy_dir(Variant("L6", "", 6, 10, "student"))
        target = self.teacher_path if self.args.target == "teacher" else l6
        for v in variants(self.teacher_depth, self.args.ks):
            if v.kind != "distilled":
                continue
            argv = ["distill", "--teacher", str(target), "--student", str(l6), "--dataset", str(self.data)]
            argv += ["--num-steps", str(v.steps), "--states", self.args.states]
            self.train(v.name, argv, self.args.step_steps, self.args.step_lr)

    def naive(self) -> None:
        """L6 with num_inference_steps = K and no recorded grid: plain uniform Euler, the weights unchanged."""
        from shallowpi.study import pipeline

        l6 = self.policy_dir(Variant("L6", "", 6, 10, "student"))
        for v in variants(self.teacher_depth, self.args.ks):
            if v.kind == "naive":
                pipeline.save_with_steps(l6, v.steps, self.policy_dir(v))
                self.say(f"naive: {v.name} = {l6} sampled with {v.steps} Euler steps")

    def eval_spec(self):
        from shallowpi.study import pipeline

        return eval_spec(self.args, pipeline.teacher_info(self.teacher_path).image_size)

    def _available(self) -> list[tuple[Variant, Path]]:
        self.ws.link("teacher", self.teacher_path)
        out = []
        for v in variants(self.teacher_depth, self.args.ks):
            path = self.policy_dir(v)
            if (path / "config.json").is_file():
                out.append((v, path))
            else:
                self.say(f"{v.name}: no policy at {path} (run its stage first), left out")
        return out

    def eval(self) -> None:
        spec = self.eval_spec()
        for v, path in self._available():
            self.ws.evaluate(v.name, path, spec, keep_in=Path(self.args.results) / "evals")

    def bench(self) -> None:
        paths = [p for _, p in self._available()]
        self.ws.bench(paths, iters=self.args.bench_iters, threads=self.args.threads)

    def report(self) -> None:
        from shallowpi.study import pipeline
        from shallowpi.study import plots as study_plots
        from shallowpi.study import report as study_report
        from shallowpi.study import results as study_results

        a, spec = self.args, self.eval_spec()
        bench_path = self.work / "bench.json"
        runs = study_results.runs_by_policy(
            json.loads(bench_path.read_text()) if bench_path.is_file() else None
        )
        rows, results = [], {}
        for v, path in self._available():
            # The kept copy the eval stage writes beside the report: WORK/eval is gone on another machine,
            # and an evaluation reused from a kept copy (the teacher's, the L6's) never wrote one there.
            info = self.ws.kept_eval(v.name, spec, Path(a.results) / "evals")
            if info is None:
                self.say(f"report: no eval for {v.name}; left out")
                continue
            kind = {"naive": "skip", "distilled": "student"}.get(v.kind, v.kind)
            r = pipeline.policy_result(info, v.name, v.label, v.depth, kind)
            run = runs.get(path.name)
            if run is not None:
                study_results.attach_run(r, run)
            results[v.name] = r
            rows.append((v, r, run))
        teacher = results.get("teacher")
        for r in results.values():
            if teacher is not None and teacher.latency_ms and r.latency_ms:
                r.speedup = teacher.latency_ms / r.latency_ms
        lines = [
            "# Fewer steps on top of fewer layers (Meta-World test bed)",
            "",
            "Success on the held-out setups (mean over tasks ± 95 % interval), CPU latency of one action chunk "
            "(engine, batch 1, all models in one process, calls interleaved) and its vision / prefix / denoise "
            "split. Each policy samples with its own schedule (its config's step count and time grid).",
            "",
            "| policy | layers | steps | success % | Δ vs teacher (paired) | latency ms | × teacher | vision | prefix | denoise |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v, r, run in rows:
            pd = (
                study_results.paired_difference(r, teacher)
                if teacher is not None and r is not teacher
                else None
            )
            st = (run or {}).get("stages_ms") or {}
            ratio = (
                None
                if not (teacher and teacher.latency_ms and r.latency_ms)
                else r.latency_ms / teacher.latency_ms
            )
            lines.append(
                f"| {v.label} | {v.depth} | {v.steps} | {r.mean:.1f} ± {r.ci95:.1f} | "
                + (f"{pd[0]:+.1f} ± {pd[1]:.1f}" if pd else "–")
                + f" | {study_report._fmt(r.latency_ms)} | {study_report._fmt(ratio, '.2f')} | "
                + " | ".join(
                    study_report._fmt(st[k]["median"]) if k in st else "–"
                    for k in ("vision", "prefix", "denoise")
                )
                + " |"
            )
        targets = self.targets(results)
        lines += ["", "## Targets (issue 16)", ""]
        lines += [
            f"- {'met' if t.met else 'not met' if t.met is False else 'not measured'}: {t.text} — {t.detail}"
            for t in targets
        ]
        commands = [portable_command(c) for c in self.ws.commands()]  # no paths of this machine
        settings = {
            "teacher": portable_path(self.teacher_path),
            "L6": portable_path(self.policy_dir(Variant("L6", "", 6, 10, "student"))),
            "step distillation": f"target {a.target} @10, states {a.states}, {a.step_steps} steps x batch "
            f"{a.batch_size}, lr {a.step_lr}",
            "eval": f"{spec.episodes_per_task} episodes per task, tasks {','.join(spec.tasks)}, MT1 seed "
            f"{spec.seed}, <= {spec.max_steps} steps",
            "bench": f"{a.bench_iters} interleaved calls per policy, threads {a.threads or 'default'}",
            "smoke run (toy sizes, numbers meaningless)": "yes" if a.smoke else "no",
        }
        lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in settings.items()]
        lines += ["", "## Commands", "", "```"] + commands + ["```", ""]
        lines += ["Regenerate: `" + self.regenerate() + "`", ""]
        results_dir = Path(a.results)
        png = study_plots.plot_pareto(
            list(results.values()),
            results_dir / "steps_pareto.png",
            title="Meta-World: layers x steps, CPU",
            log=self.say,
        )
        if png:
            lines.insert(4, f"![success vs latency]({png.name})\n")
        out = write_text_atomic(results_dir / "steps.md", "\n".join(lines))
        write_json_atomic(
            obj={
                "results": [
                    {k: val for k, val in asdict(r).items() if k != "outcomes"}
                    | {
                        "mean": r.mean,
                        "ci95": r.ci95,
                        "steps": v.steps,
                        "stages_ms": (run or {}).get("stages_ms"),
                    }
                    for v, r, run in rows
                ],
                "targets": [asdict(t) for t in targets],
                "settings": settings,
            },
            path=results_dir / "steps.json",
        )
        self.say(f"report: {out}" + (f" and {png}" if png else ""))

    def regenerate(self) -> str:
        from shallowpi.study.workspace import without_stages

        # main(argv)'s own arguments, not sys.argv: called in-process (tests), sys.argv is the caller's.
        argv = self.args.argv if self.args.argv is not None else sys.argv[1:]
        return "python " + shlex.join(["scripts/study_steps.py", *portable_argv(without_stages(argv))])

    def targets(self, results: dict) -> list:
        from shallowpi.study import targets as study_targets

        return study_targets.check_step_targets(list(results.values()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv  # the report's command: this call's arguments (sys.argv when run as a script)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return run_stages(Study(args), args, STAGES)


if __name__ == "__main__":
    raise SystemExit(main())
