#!/usr/bin/env python3
"""A cheaper prefix on top of fewer layers and steps, end to end, resumable: results/prefix_study/prefix.md (+ .json).

    python scripts/study_prefix.py --work outputs/prefix --teacher TEACHER_DIR            # full size (hours)
    python scripts/study_prefix.py --work outputs/prefix --smoke                         # every stage, toy sizes
    python scripts/study_prefix.py --work outputs/prefix --teacher TEACHER_DIR --l6 L6_DIR --data DATA

Policies: teacher@10; four L6 students distilled from --teacher with the same schedule and losses
(task+KD+attn; the vision loss's default applies): plain, image tokens merged M x M (--image-merge), a
shallower SigLIP tower (--vision-layers, default half the teacher's, rounded up) and both; and each of them
step-distilled to K denoising steps (--ks, default 2). Paired comparisons: every student against the
teacher@10, and each compressed one against the plain L6 at the same steps.

Stages (each skips what is already finished; training resumes from its last checkpoint):
  collect   MT10 scripted demonstrations, seed 0, unless --data gives them   -> WORK/data
  students  L6, L6_m<M>, L6_v<N>, L6_m<M>_v<N> (--l6 gives the plain one)    -> WORK/policies/<name>
  steps     `shallowpi distill --student <name> --num-steps K` for each      -> WORK/policies/<name>_K<k>
            (checks that each keeps its student's prefix: merge, tower and layer map in config.json)
  eval      every policy on the held-out setups (seed 1000), its own schedule -> WORK/eval/<name>/eval_info.json
            and a copy in RESULTS/evals/<name>.json (small, committed: reused by a later run)
  bench     CPU latency of every policy in ONE process, same inputs, with the vision / prefix / denoise split
  report    RESULTS/prefix.md (+ .json): success, paired differences, the targets, latency, and FLOPs at the
            test bed's shapes and at full-size π0.5 shapes (--full-preset: same depth, merge, tower
            fraction and steps)

WORK and RESULTS record the teacher they were made with (study_teacher.json) and refuse another.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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

STAGES = ("collect", "students", "steps", "eval", "bench", "report")
REPO = Path(__file__).resolve().parents[1]
FULL_CAMERAS, FULL_LANG_TOKENS = 2, 20  # full-size shapes as benchmarks/prefix_cost.py counts them


@dataclass(frozen=True)
class Variant:
    """One policy of the study: how it is made and where it goes in the tables."""

    name: str  # folder name under WORK/policies (bench names runs by it) and of its kept evaluation
    label: str
    depth: int
    steps: int  # denoising steps it samples with
    kind: str  # teacher | student (depth + prefix distilled) | distilled (step-distilled from `base`)
    reduction: str = "plain"  # plain | merge | tower | both
    merge: int | None = None  # --image-merge (None: the teacher's image tokens)
    vision_layers: int | None = None  # --vision-layers (None: the teacher's tower)
    base: str | None = None  # the 10-step student a step-distilled one starts from


def variants(teacher_depth: int, depth: int, merge: int, vision_layers: int, ks: list[int]) -> list[Variant]:
    """Teacher, the four 10-step students, then the four K-step students for each K (table order)."""
    d = f"L{depth}"
    prefixes = [
        ("plain", None, None, "", ""),
        ("merge", merge, None, f"_m{merge}", f" + merge {merge}"),
        ("tower", None, vision_layers, f"_v{vision_layers}", f" + tower {vision_layers}"),
        ("both", merge, vision_layers, f"_m{merge}_v{vision_layers}", f" + merge {merge} + tower {vision_layers}"),
    ]  # fmt: skip
    out = [Variant("teacher", f"teacher L{teacher_depth} @10", teacher_depth, 10, "teacher")]
    for reduction, m, v, suffix, words in prefixes:
        out.append(Variant(d + suffix, f"{d}{words} @10", depth, 10, "student", reduction, m, v))
    for k in ks:
        for reduction, m, v, suffix, words in prefixes:
            name = f"{d}{suffix}_K{k}"
            out.append(Variant(name, f"{d}{words} @{k}", depth, k, "distilled", reduction, m, v, d + suffix))
    return out


def plain_of(v: Variant, vs: list[Variant]) -> Variant | None:
    """The plain student at `v`'s steps: the reference each compressed student is paired with."""
    if v.kind == "teacher":
        return None
    return next((x for x in vs if x.kind == v.kind and x.steps == v.steps and x.reduction == "plain"), None)


SMOKE = DISTILL_SMOKE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", default="outputs/prefix", help="big outputs (data, checkpoints, evals); not in git"
    )
    p.add_argument(
        "--results", default=None, help="report folder (default results/prefix_study; --smoke: WORK/results)"
    )
    add_stage_args(p, STAGES, SMOKE)
    add_distill_args(p)
    p.add_argument("--l6", default=None, help="the plain depth-distilled student (skips its training)")
    p.add_argument("--depth", type=int, default=6, help="student layers")
    p.add_argument("--image-merge", type=int, default=2, help="M: image tokens merged M x M")
    p.add_argument(
        "--vision-layers",
        type=int,
        default=None,
        help="SigLIP layers of the shallow-tower students (default: half the teacher's, rounded up)",
    )
    p.add_argument("--ks", default="2", help="denoising steps of the step-distilled students")
    p.add_argument(
        "--target",
        choices=("teacher", "own"),
        default="teacher",
        help="frozen target of step distillation: the teacher's 10 steps, or each student's own",
    )
    p.add_argument(
        "--depth-steps",
        type=int,
        default=4800,
        help="distillation steps of every 10-step student (results/metaworld.md: the shortest schedule with "
        "L6 within 1 pt of the bundled teacher)",
    )
    p.add_argument(
        "--step-steps", type=int, default=600, help="step-distillation steps per student (results/steps')"
    )
    p.add_argument(
        "--full-preset", default="pi05", help="the preset whose shapes the FLOPs are also counted at"
    )
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated policy names the students, steps and eval stages run (default: all; "
        "bench and report take every policy present)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the shallowpi commands in this process (no interpreter start-up each: tests)",
    )
    args = p.parse_args(argv)

    finish_study_args(
        p, args, stages=STAGES, smoke=SMOKE, argv=argv, default_results=REPO / "results" / "prefix_study"
    )
    args.ks = step_counts(p, args.ks)
    if any(k < 1 or k == 10 for k in args.ks):
        p.error("--ks: every step count must be >= 1 and not 10 (the students' own)")
    for flag in ("depth", "image_merge", "vision_layers"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.image_merge == 1:
        p.error("--image-merge 1 merges nothing: the merged students would be the plain ones")
    return args


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        from shallowpi.errors import MissingFileError, UserError
        from shallowpi.model.checkpoint import read_config
        from shallowpi.model.config import preset
        from shallowpi.study import pipeline
        from shallowpi.study.workspace import Workspace, check_teacher, only_named

        self.args = args
        self.ws = Workspace(args.work, tag="prefix", in_process=args.in_process)
        self.work, self.policies = self.ws.work, self.ws.policies
        self.results = Path(args.results)
        self.teacher_path = pipeline.resolve_teacher(args.teacher)
        self.teacher_cfg = read_config(self.teacher_path)
        v = self.teacher_cfg.vision
        if args.vision_layers is None:
            args.vision_layers = math.ceil(v.depth / 2)
        if args.vision_layers >= v.depth:
            raise UserError(
                f"--vision-layers {args.vision_layers}: must be below the teacher's {v.depth} SigLIP layers"
            )
        if (v.grid // v.merge) % args.image_merge:
            raise UserError(
                f"--image-merge {args.image_merge} does not divide the teacher's {v.grid // v.merge} x "
                f"{v.grid // v.merge} image tokens per camera"
            )
        preset(args.full_preset)  # an unknown name fails now, not after hours of training
        if args.depth >= self.teacher_cfg.depth:
            raise UserError(f"--depth {args.depth}: the teacher has {self.teacher_cfg.depth} layers")
        if args.l6:
            l6 = read_config(args.l6) if (Path(args.l6) / "config.json").is_file() else None
            if l6 is None:
                raise MissingFileError(f"--l6 {args.l6}: not a pretrained_model folder (no config.json)")
            if l6.depth != args.depth or l6.vision != v or l6.vision_layer_map is not None:
                raise UserError(f"--l6 {args.l6}: not a plain L{args.depth} student of this teacher's prefix")
        self.data = Path(args.data) if args.data else self.work / "data"
        self.variants = variants(
            self.teacher_cfg.depth, args.depth, args.image_merge, args.vision_layers, args.ks
        )
        self.chosen = only_named(self.variants, args.only)
        # Outputs of another teacher must not be resumed from (students) or reported (kept evaluations).
        check_teacher(self.work, self.teacher_path)
        check_teacher(self.results, self.teacher_path)
        self.ws.link(
            "teacher", self.teacher_path
        )  # bench names runs by folder: all policies in WORK/policies
        if args.l6:
            self.ws.link(self.by_name(f"L{args.depth}").name, Path(args.l6))

    def say(self, msg: str) -> None:
        self.ws.say(msg)

    def by_name(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def policy_dir(self, v: Variant) -> Path:
        return self.policies / v.name

    def job(self, v: Variant) -> tuple[list[str], object] | None:
        """(argv, Schedule) of the training run that makes `v`; None for the teacher and a given --l6."""
        from shallowpi.study.workspace import Schedule

        a = self.args
        batch = ["--batch-size", str(a.batch_size), "--seed", "1000"]
        if v.kind == "student" and not (v.reduction == "plain" and a.l6):
            argv = ["distill", "--teacher", str(self.teacher_path), "--dataset", str(self.data)]
            argv += ["--depth", str(v.depth), "--weights", "task=1,kd=1,attn=1"]
            if v.merge:
                argv += ["--image-merge", str(v.merge)]
            if v.vision_layers:
                argv += ["--vision-layers", str(v.vision_layers)]
            return [*argv, *batch], Schedule(a.depth_steps, a.depth_lr, max_warmup=a.depth_steps)
        if v.kind == "distilled":
            base = self.policy_dir(self.by_name(v.base))
            target = self.teacher_path if a.target == "teacher" else base
            argv = ["distill", "--teacher", str(target), "--student", str(base), "--dataset", str(self.data)]
            argv += ["--num-steps", str(v.steps), "--states", a.states]
            return [*argv, *batch], Schedule(a.step_steps, a.step_lr, max_warmup=a.step_steps)
        return None

    def train(self, v: Variant) -> None:
        argv, schedule = self.job(v)
        self.ws.train(v.name, argv, schedule, save_every=self.args.save_every, threads=self.args.threads)

    def commands(self) -> list[str]:
        """What makes every policy: the demonstrations (unless --data), then each training run (a stopped
        run is continued by the script with `--resume`). Built from the variants, not a log, so the list is
        whole when the policies were trained in an earlier session."""
        from shallowpi.study.workspace import collect_argv

        a = self.args
        cmds = []
        if not a.data:
            cmds.append(collect_argv(self.data, **self.collect_options()))
        for v in self.variants:
            job = self.job(v)
            if job is not None:
                argv, schedule = job
                cmds.append(
                    self.ws.train_argv(v.name, argv, schedule, save_every=a.save_every, threads=a.threads)
                )
        return [portable_command("shallowpi " + shlex.join(c)) for c in cmds]

    # stages ---------------------------------------------------------------------------------------------------

    def collect_options(self) -> dict:
        from shallowpi.study import pipeline

        info = pipeline.teacher_info(self.teacher_path)
        return {
            "tasks": self.args.tasks,
            "demos_per_task": self.args.demos_per_task,
            "image_size": info.image_size,
            "cameras": info.cameras,
            "state": info.state_layout,
            "workers": self.args.workers,
        }

    def collect(self) -> None:
        if self.args.data:
            self.say(f"collect: using {self.args.data}")
            return
        self.ws.collect(self.data, **self.collect_options())

    def students(self) -> None:
        for v in self.chosen:
            if v.kind != "student":
                continue
            if v.reduction == "plain" and self.args.l6:
                self.say(f"{v.name}: using {self.args.l6}")
                continue
            self.train(v)

    def steps(self) -> None:
        from shallowpi.errors import UserError
        from shallowpi.model.checkpoint import read_config

        for v in self.chosen:
            if v.kind != "distilled":
                continue
            base = self.policy_dir(self.by_name(v.base))
            if not (base / "config.json").is_file():
                self.say(f"{v.name}: no {v.base} at {base} (run the students stage first), skipping")
                continue
            self.train(v)
            # The step-distilled student must sample through its base's compressed prefix.
            a, b = read_config(base), read_config(self.policy_dir(v))
            if (b.vision, b.vision_layer_map, b.depth) != (a.vision, a.vision_layer_map, a.depth):
                raise UserError(f"{v.name} lost the prefix of {v.base}: {b.vision} vs {a.vision}")

    def eval_spec(self):
        from shallowpi.study import pipeline

        return eval_spec(self.args, pipeline.teacher_info(self.teacher_path).image_size)

    def eval(self) -> None:
        spec = self.eval_spec()
        for v in self.chosen:
            path = self.policy_dir(v)
            if (
                self.ws.kept_eval(v.name, spec, self.results / "evals") is None
                and not (path / "config.json").is_file()
            ):
                self.say(f"eval: {v.name} has no policy at {path} (run its stage first), skipping")
                continue
            self.ws.evaluate(v.name, path, spec, keep_in=self.results / "evals")

    def bench(self) -> None:
        """Every policy's CPU latency in one process. Latency does not depend on the weights, so each student
        is timed on the untrained student of its config (the teacher's layers, merge and tower as distillation
        starts from them; a K-step one samples K uniform steps), as study_metaworld times its depths: the
        bench needs no trained student, nor one from an earlier session."""
        from shallowpi.study import pipeline

        paths = [self.policy_dir(self.variants[0])]  # the teacher, linked under its name
        models = self.work / "bench_models"
        for v in self.variants[1:]:
            arch = models / v.name
            if not (arch / "model.safetensors").is_file():
                if v.kind == "distilled":
                    pipeline.save_with_steps(models / v.base, v.steps, arch)
                else:
                    pipeline.save_layer_skip_student(
                        self.teacher_path, v.depth, arch, merge=v.merge, vision_depth=v.vision_layers
                    )
            paths.append(arch)
        self.ws.bench(paths, iters=self.args.bench_iters, threads=self.args.threads)

    # report ---------------------------------------------------------------------------------------------------

    def config_of(self, v: Variant):
        """The policy's own config, or (its folder gone, its evaluation kept) the one its flags give."""
        from shallowpi.bench.students import compress_prefix
        from shallowpi.model.checkpoint import read_config

        path = self.policy_dir(v)
        if (path / "config.json").is_file():
            return read_config(path)
        cfg = compress_prefix(self.teacher_cfg.with_depth(v.depth), v.merge, v.vision_layers)
        return dataclasses.replace(cfg, num_inference_steps=v.steps)

    def flops(self, v: Variant) -> dict:
        """FLOPs of one call at the test bed's shapes (every camera, the bench's prompt length) and at full
        size (`--full-preset`, 2 cameras, 20 prompt tokens), split by stage (the engine's path)."""
        from shallowpi.bench.students import at_preset
        from shallowpi.infer.flops import call_flops

        cfg = self.config_of(v)
        big = at_preset(cfg, self.teacher_cfg, self.args.full_preset)
        lang = min(FULL_LANG_TOKENS, cfg.tokenizer_max_length)  # what pipeline.bench_policies feeds
        return {
            "testbed": call_flops(cfg, cameras=len(cfg.cameras), lang_tokens=lang),
            "full": call_flops(big, cameras=FULL_CAMERAS, lang_tokens=FULL_LANG_TOKENS),
            "full_shape": {
                "depth": big.depth,
                "image_tokens": big.vision.num_tokens,
                "vision_depth": big.vision.depth,
                "steps": big.num_inference_steps,
            },
        }

    def report(self) -> None:
        from shallowpi.study import pipeline
        from shallowpi.study import results as study_results
        from shallowpi.study import targets as study_targets

        spec = self.eval_spec()
        bench_path = self.work / "bench.json"
        bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
        runs = study_results.runs_by_policy(bench)
        results: dict[str, study_results.PolicyResult] = {}
        shown: list[Variant] = []
        for v in self.variants:
            info = self.ws.kept_eval(v.name, spec, self.results / "evals")
            if info is None:
                self.say(f"report: no eval for {v.name} in {self.results / 'evals'}; left out")
                continue
            r = pipeline.policy_result(info, v.name, v.label, v.depth, v.kind, num_steps=v.steps)
            if v.name in runs:
                study_results.attach_run(r, runs[v.name])
            results[v.name] = r
            shown.append(v)
        teacher = results.get("teacher")
        rows = []
        for v in shown:
            r, cfg, flops = results[v.name], self.config_of(v), self.flops(v)
            plain = plain_of(v, self.variants)
            ref = results.get(plain.name) if plain is not None and plain.name != v.name else None
            vs_teacher = study_results.paired_difference(r, teacher) if teacher and r is not teacher else None
            vs_plain = study_results.paired_difference(r, ref) if ref else None
            rows.append(
                {
                    "name": v.name,
                    "label": v.label,
                    "depth": v.depth,
                    "steps": v.steps,
                    "image_merge": cfg.vision.merge,
                    "image_tokens": cfg.vision.num_tokens,
                    "vision_depth": cfg.vision.depth,
                    "vision_layer_map": cfg.vision_layer_map,
                    "success": r.success,
                    "episodes_per_task": r.episodes_per_task,
                    "mean": r.mean,
                    "ci95": r.ci95,
                    "vs_teacher": _paired(vs_teacher),
                    "vs_plain": _paired(vs_plain, ref.name if ref else None),
                    "latency_ms": r.latency_ms,
                    "latency_p90_ms": r.latency_p90_ms,
                    "stages_ms": r.stages_ms,
                    "flops": flops,
                }
            )
        t_lat = teacher.latency_ms if teacher else None
        t_flops = self.flops(self.variants[0])  # from the config: no evaluation needed
        for row in rows:
            row["latency_ratio"] = row["latency_ms"] / t_lat if t_lat and row["latency_ms"] else None
            for shape in ("testbed", "full"):
                row[f"flops_ratio_{shape}"] = row["flops"][shape]["total"] / t_flops[shape]["total"]
        both = next((v.name for v in self.variants if v.reduction == "both" and v.steps == 2), None)
        alone = [
            (v.name, plain_of(v, self.variants).name)
            for v in self.variants
            if v.reduction in ("merge", "tower")
        ]
        targets = study_targets.check_prefix_targets(list(results.values()), both or "", alone)
        lines = self.markdown(rows, targets, results)
        settings = self.settings(spec, bench)
        lines += ["## Settings", ""] + [f"- {k}: {val}" for k, val in settings.items()] + [""]
        commands = self.commands()
        lines += [
            "## Commands",
            "",
            "The `shallowpi` commands that made the data and the policies above (WORK: --work).",
            "",
            "```",
            *commands,
            "```",
            "",
        ]
        out = write_text_atomic(self.results / "prefix.md", "\n".join(lines))
        write_json_atomic(
            obj={
                "command": self.regenerate(),
                "results": rows,
                "targets": [asdict(t) for t in targets],
                "settings": settings,
                "commands": commands,
            },
            path=self.results / "prefix.json",
        )
        self.say(f"report: {out}")

    def regenerate(self) -> str:
        from shallowpi.study.workspace import without_stages

        argv = self.args.argv if self.args.argv is not None else sys.argv[1:]
        return "python " + shlex.join(["scripts/study_prefix.py", *portable_argv(without_stages(argv))])

    def markdown(self, rows: list[dict], targets: list, results: dict) -> list[str]:
        """The report's title, command, success table, targets and cost table (settings and commands follow)."""
        from shallowpi.study import report as study_report

        a, fmt = self.args, study_report._fmt
        ks = "/".join(str(k) for k in a.ks)
        lines = [
            f"# A cheaper prefix on L{a.depth} (Meta-World test bed)",
            "",
            "Regenerate everything (data, students, evaluations, bench, this file; finished stages are reused):",
            "",
            "```",
            self.regenerate(),
            "```",
            "",
            f"Students distilled from the teacher with the same schedule and losses: plain, image tokens merged "
            f"{a.image_merge} × {a.image_merge}, a {a.vision_layers}-layer SigLIP tower, and both; then each "
            f"step-distilled to {ks} denoising steps. Each policy samples with its own schedule.",
            "",
            "## Success on held-out setups",
            "",
            "Mean success over tasks ± the half-width of its 95 % interval (binomial per task). The paired "
            "columns are the difference in points with its 95 % interval over the same setups: against the "
            f"teacher, and against the plain L{a.depth} at the same steps.",
            "",
            f"| policy | image tokens / camera | SigLIP layers | steps | success % | paired vs teacher | "
            f"paired vs plain L{a.depth} |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        teacher = results.get("teacher")
        for row in rows:
            r = results[row["name"]]
            ref = results.get(row["vs_plain"]["reference"]) if row["vs_plain"] else None
            lines.append(
                f"| {row['label']} | {row['image_tokens']} | {row['vision_depth']} | {row['steps']} | "
                f"{fmt(r.mean)} ± {fmt(r.ci95)} | {study_report.paired_cell(r, teacher)} | "
                f"{study_report.paired_cell(r, ref) if ref else '–'} |"
            )
        lines += ["", "## Targets", ""] + study_report.target_lines(targets) + [""]
        full = self.args.full_preset
        lines += [
            "## Cost",
            "",
            "CPU latency of one action chunk (engine, batch 1, every policy in one process on the same inputs, "
            "calls interleaved; median ms; each student timed on the untrained student of its config, since "
            "latency does not depend on the weights) and its vision / prefix / denoise split; FLOPs of one "
            "call at the "
            f"test bed's shapes and at full-size {full} shapes (the same depth, merge, fraction of SigLIP "
            f"layers and steps; {FULL_CAMERAS} cameras, {FULL_LANG_TOKENS} prompt tokens). Ratios are to the "
            "teacher.",
            "",
            "| policy | latency ms | × teacher | vision | prefix | denoise | GFLOP test bed | × teacher | "
            f"GFLOP {full} | × teacher | {full} shape (layers, tokens / camera, SigLIP, steps) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            st = row["stages_ms"] or {}
            f, shape = row["flops"], row["flops"]["full_shape"]
            lines.append(
                f"| {row['label']} | {fmt(row['latency_ms'])} | {fmt(row['latency_ratio'], '.2f')} | "
                + " | ".join(fmt(st.get(k)) for k in ("vision", "prefix", "denoise"))
                + f" | {f['testbed']['total'] / 1e9:.3f} | {row['flops_ratio_testbed']:.3f} | "
                f"{f['full']['total'] / 1e9:,.1f} | {row['flops_ratio_full']:.3f} | "
                f"{shape['depth']}, {shape['image_tokens']}, {shape['vision_depth']}, {shape['steps']} |"
            )
        return lines + [""]

    def settings(self, spec, bench: dict | None) -> dict:
        from shallowpi.study.workspace import TEACHER_RECORD

        a = self.args
        env = (bench or {}).get("environment", {})
        record = json.loads((self.work / TEACHER_RECORD).read_text())
        return {
            "teacher": f"{portable_path(self.teacher_path)} (weights sha256 {record['sha256'][:16]}…)",
            f"L{a.depth}": portable_path(a.l6) if a.l6 else "distilled here",
            "students": f"task+KD+attn (vision loss: its default), {a.depth_steps} steps x batch {a.batch_size}, "
            f"lr {a.depth_lr}, seed 1000",
            "step distillation": f"target {a.target} @10, states {a.states}, {a.step_steps} steps x batch "
            f"{a.batch_size}, lr {a.step_lr}",
            "demonstrations": portable_path(self.data)
            + ("" if a.data else f" ({a.demos_per_task} per task, seed 0)"),
            "eval": f"{spec.episodes_per_task} episodes per task, tasks {','.join(spec.tasks)}, MT1 seed "
            f"{spec.seed}, <= {spec.max_steps} steps",
            "bench": f"{a.bench_iters} interleaved calls per policy, torch {env.get('torch', '?')}, "
            f"{env.get('torch_threads', '?')} threads, {env.get('cpu_count', '?')} CPUs "
            f"({env.get('cpu', env.get('platform', '?'))})",
            "stage wall times (this WORK only)": self.ws.wall_times(),
            "smoke run (toy sizes, numbers meaningless)": "yes" if a.smoke else "no",
        }


def _paired(pd: tuple[float, float] | None, reference: str | None = None) -> dict | None:
    """A paired difference (pts) as the JSON records it."""
    if pd is None:
        return None
    return ({"reference": reference} if reference else {}) | {"mean": pd[0], "ci95": pd[1]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv  # the report's command: this call's arguments (sys.argv when run as a script)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from shallowpi.errors import UserError

    try:
        study = Study(args)
    except UserError as e:  # bad input: one line, as the CLI reports it
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_stages(study, args, STAGES)


if __name__ == "__main__":
    raise SystemExit(main())
