"""Steps shared by `shallowpi demo` and `scripts/study_metaworld.py`, built on the project's own APIs.

Every step that produces a folder is idempotent: a finished output is detected and reused, training
resumes from its last checkpoint, and exported policies are written to a temp folder and renamed.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shallowpi.atomic import atomic_dir
from shallowpi.errors import MissingFileError, UserError
from shallowpi.jsonfile import read_json
from shallowpi.study.results import PolicyResult

BUNDLED_TEACHER = "teacher_metaworld"  # src/shallowpi/assets/<this>: a pretrained_model folder
BUNDLED_STUDENT = "student_metaworld"  # the bundled teacher's full-schedule L6 student, same layout
HELD_OUT_SEED = 1000  # eval configurations: MT1(task, 1000); demos use seed 0


# teacher ----------------------------------------------------------------------------------------------------


def bundled_teacher_path() -> Path:
    return Path(str(importlib.resources.files("shallowpi") / "assets" / BUNDLED_TEACHER))


def bundled_student_path() -> Path | None:
    """The shipped full-schedule student of the bundled teacher; None when this install has none."""
    p = Path(str(importlib.resources.files("shallowpi") / "assets" / BUNDLED_STUDENT))
    return p if (p / "config.json").is_file() else None


def resolve_teacher(path: str | Path | None) -> Path:
    """--teacher PATH, or the teacher shipped in the package; one clear error when neither exists."""
    if path is None:
        p = bundled_teacher_path()
        if not (p / "config.json").is_file():
            raise MissingFileError(
                f"no bundled teacher in this install ({p} is missing); pass --teacher PATH "
                "(a pretrained_model folder: config.json, model.safetensors, processor files)"
            )
        return p
    p = Path(path)
    if not (p / "config.json").is_file():
        raise MissingFileError(f"--teacher {p}: not a pretrained_model folder (no config.json)")
    return p


def policy_digest(path: str | Path) -> str:
    """sha256 of a policy folder's config.json and weights: which model a study's outputs come from."""
    import hashlib

    from shallowpi.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(Path(path) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class TeacherInfo:
    path: Path
    depth: int
    variant: str
    cameras: list[str]  # Meta-World camera names feeding the model's slots, in slot order
    image_size: int  # the model's input size (demos are rendered at this size)
    state_layout: str = "hand"  # metaworld_env.STATE_LAYOUTS key, from the policy's state dim


def teacher_info(path: Path) -> TeacherInfo:
    from shallowpi.model.checkpoint import read_config
    from shallowpi.pretrained import load_processor
    from shallowpi.sim import metaworld_env as mw

    cfg = read_config(path)
    pre, _ = load_processor(path)
    prefix = mw.camera_key("")
    by_slot = {slot: key for key, slot in pre.config.camera_map.items()}
    cams = [by_slot[s].removeprefix(prefix) for s in cfg.cameras if s in by_slot]
    bad = [c for c in cams if c not in mw.CAMERAS]
    if not cams or bad:
        raise UserError(
            f"the teacher in {path} is not a Meta-World policy: its cameras are {list(pre.config.camera_map)}"
        )
    layout = mw.state_layout_for_dim(pre.state_dim)
    return TeacherInfo(path, cfg.depth, cfg.variant, cams, cfg.vision.image_size, layout)


# training outputs -------------------------------------------------------------------------------------------


def trained_step(train_out: str | Path) -> int:
    """Step of the last complete checkpoint in a `shallowpi train/distill --out` folder (0: none)."""
    from shallowpi.distill import checkpointing as ckpt

    last = ckpt.last_checkpoint(train_out)
    if last is None:
        return 0
    return int(json.loads((last / ckpt.TRAINING_STATE / "training_step.json").read_text())["step"])


def export_pretrained(train_out: str | Path, dest: str | Path) -> Path:
    """Copy the last checkpoint's pretrained_model to `dest` (temp + rename), a stable, small policy folder."""
    from shallowpi.distill import checkpointing as ckpt

    last = ckpt.last_checkpoint(train_out)
    if last is None:
        raise MissingFileError(f"no checkpoint in {train_out}")
    return copy_folder(last / ckpt.PRETRAINED, dest)


def copy_horizon(reference: str | Path, policy: str | Path) -> int | None:
    """Give `policy` the re-planning horizon (`n_action_steps` in config.json) of `reference`, so a baseline
    trained from scratch runs its chunks as the teacher and its students do (a horizon is chosen for the
    teacher after training; a fresh run's config runs the whole chunk). Returns the horizon (None: the
    reference has none and `policy` is left as it is)."""
    from shallowpi.model.checkpoint import CONFIG_NAME

    horizon = read_json(Path(reference) / CONFIG_NAME).get("n_action_steps")
    if horizon is not None:
        write_horizon(policy, horizon)
    return horizon


def write_horizon(policy: str | Path, horizon: int) -> None:
    """Save `horizon` as the policy's re-planning default (`n_action_steps` in its config.json, LeRobot's
    field), checked against its chunk size."""
    from shallowpi.atomic import write_json_atomic
    from shallowpi.model.checkpoint import CONFIG_NAME

    path = Path(policy) / CONFIG_NAME
    raw = read_json(path)
    chunk = raw.get("chunk_size", horizon)
    if horizon < 1:
        raise UserError(f"n_action_steps {horizon} for {path} must be at least 1")
    if horizon > chunk:
        raise UserError(f"n_action_steps {horizon} exceeds {path}'s chunk_size {chunk}")
    if raw.get("n_action_steps") != horizon:
        raw["n_action_steps"] = horizon
        write_json_atomic(path, raw, indent=4)


def copy_folder(src: str | Path, dest: str | Path) -> Path:
    with atomic_dir(dest) as build:
        shutil.copytree(src, build, dirs_exist_ok=True)
    return Path(dest)


def save_layer_skip_student(
    teacher: str | Path,
    depth: int,
    dest: str | Path,
    *,
    merge: int | None = None,
    vision_depth: int | None = None,
) -> Path:
    """The subsampled student with no training (the layer-skipping baseline), saved with the teacher's
    processor (same stats, tokenizer, cameras). `merge` / `vision_depth` compress its prefix as
    `shallowpi distill --image-merge / --vision-layers` would before training."""
    from shallowpi.distill.student import make_student
    from shallowpi.model import load_model, save_model

    with atomic_dir(dest) as build:
        teacher_model = load_model(teacher, dtype="float32")
        student = make_student(teacher_model, depth=depth, merge=merge, vision_depth=vision_depth).eval()
        save_model(student, build)
        for f in Path(teacher).iterdir():  # the processor files travel unchanged
            if f.is_file() and f.name not in ("config.json", "model.safetensors", "train_config.json"):
                shutil.copyfile(f, build / f.name)
    return Path(dest)


# evaluation -------------------------------------------------------------------------------------------------


@dataclass
class EvalSpec:
    tasks: list[str]
    episodes_per_task: int
    image_size: int
    max_steps: int = 200
    n_action_steps: int | None = None
    workers: int = 1
    threads: int | None = None  # torch threads of the whole eval, shared by the workers (None: the cores)
    seed: int = HELD_OUT_SEED

    def matches(self, info: dict, policy: str | Path | None = None) -> bool:
        """True when an existing eval_info.json was produced with these settings (so it can be reused).
        With `policy` (a folder that exists) the evaluation must also have run its chunks as the policy
        would now: a horizon written into the policy's config after it was evaluated makes it stale."""
        s = info.get("settings", {})
        return (
            list(s.get("tasks", [])) == list(self.tasks)
            and s.get("episodes_per_task") == self.episodes_per_task
            and s.get("seed") == self.seed
            and s.get("max_steps") == self.max_steps
            and s.get("n_action_steps") == self.n_action_steps
            and s.get("image_size") == self.image_size
            and not s.get("blank_images", False)
            and (policy is None or self._same_horizon(s, Path(policy)))
        )

    def _same_horizon(self, settings: dict, policy: Path) -> bool:
        """The recorded actions per call equal what `policy` runs now (--n-action-steps, else its config's
        n_action_steps, else the whole chunk). An evaluation that recorded none predates the field: kept."""
        from shallowpi.model.checkpoint import CONFIG_NAME
        from shallowpi.sim.eval_config import policy_horizon

        if "actions_per_call" not in settings or not (policy / CONFIG_NAME).is_file():
            return True
        horizon, chunk = policy_horizon(policy)
        return (settings["actions_per_call"] or chunk) == (self.n_action_steps or horizon or chunk)


def evaluate_policy(
    policy: str | Path, spec: EvalSpec, out_dir: str | Path, *, progress: bool = True
) -> dict:
    """eval_info.json of `policy` on the held-out setups; reused when it exists with the same settings."""
    from shallowpi.sim.evaluate import EvalConfig, evaluate

    path = Path(out_dir) / "eval_info.json"
    if path.is_file():
        info = json.loads(path.read_text())
        if spec.matches(info, policy):
            return info
    cfg = EvalConfig(
        policy=str(policy),
        tasks=list(spec.tasks),
        episodes_per_task=spec.episodes_per_task,
        seed=spec.seed,
        max_steps=spec.max_steps,
        n_action_steps=spec.n_action_steps,
        workers=spec.workers,
        image_size=spec.image_size,
        # the callers' thread budget is for the machine: one per worker each would oversubscribe the cores
        threads_per_worker=None if spec.threads is None else max(1, spec.threads // spec.workers),
    )
    return evaluate(cfg, out_dir, progress=progress).info


def success_by_task(info: dict) -> dict[str, float]:
    return {task: float(g["pc_success"]) for task, g in info["per_group"].items()}


def policy_result(info: dict, name: str, label: str, depth: int, kind: str, **fields) -> PolicyResult:
    """An evaluated policy (its eval_info) as a PolicyResult: success per task, and the per-episode outcomes
    that paired comparisons need. `fields`: further PolicyResult fields (num_steps, pooled_in, ...)."""
    return PolicyResult(
        name,
        label,
        depth,
        kind,
        success_by_task(info),
        info["settings"]["episodes_per_task"],
        outcomes=outcomes_by_task(info),
        **fields,
    )


def outcomes_by_task(info: dict) -> dict[str, list[bool]]:
    """Per-episode successes of each task, ordered by setup (MT1 seed, configuration index) for paired
    comparisons between policies. Past 50 episodes a task's configurations repeat under the next MT1 seed,
    so the index alone does not name a setup."""
    out: dict[str, list[tuple[int, int, bool]]] = {}
    for t in info["per_task"]:
        m = t["metrics"]
        n = len(m["successes"])
        setups = zip(m.get("seeds", [0] * n), m.get("config_indices", range(n)), strict=True)
        out.setdefault(t["task_group"], []).extend(
            (seed, idx, bool(s)) for (seed, idx), s in zip(setups, m["successes"], strict=True)
        )
    return {task: [s for _, _, s in sorted(eps, key=lambda e: e[:2])] for task, eps in out.items()}


# benchmark --------------------------------------------------------------------------------------------------


def bench_policies(
    policies: list[str | Path], *, iters: int = 30, warmup: int = 3, threads: int | None = None, log=print
) -> dict:
    """CPU latency + FLOPs of several policy folders in ONE process, same inputs, calls interleaved.
    Folder names must differ (they name the runs)."""
    from shallowpi.bench import BenchSettings, run_bench

    names = [Path(p).name for p in policies]
    if len(set(names)) != len(names):
        raise UserError(f"benchmarked policy folders need distinct names, got {names}")
    from shallowpi.model.checkpoint import read_config

    settings = BenchSettings(
        preset=None,
        policies=[str(p) for p in policies],
        device="cpu",  # the study reports CPU latency, whatever GPU the machine has
        # Every camera slot of these policies is fed in Meta-World, so none is masked in the timing.
        cameras=len(read_config(policies[0]).cameras),
        modes=["engine"],  # the runtime the server and eval use
        warmup=warmup,
        iters=iters,
        threads=threads,
        count_flops=False,  # analytic FLOPs suffice here; the counter is cross-checked in the bench tests
    )
    return run_bench(settings, log=log)


# action probe -----------------------------------------------------------------------------------------------


def probe_actions(
    policies: dict[str, str | Path],
    tasks: list[str],
    image_size: int,
    seed: int = HELD_OUT_SEED,
    threads: int | None = None,
) -> dict[str, dict]:
    """Call each policy once on the first held-out observation of every task (the same observations for
    all policies) and summarise the raw action chunks: finite, range, and the share the env's Box(-1, 1)
    would clip. -> name -> {"shape", "finite", "min", "max", "clipped_fraction", "executed_min/max"}."""
    from shallowpi.sim import metaworld_env as mw
    from shallowpi.sim.policy import PretrainedPolicy

    mw.setup_rendering()
    if threads:
        import torch

        torch.set_num_threads(threads)
    loaded = {name: PretrainedPolicy(path) for name, path in policies.items()}
    first = next(iter(loaded.values()))
    cams, layout = first.cameras, first.state_layout
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in loaded}
    for task in tasks:
        env = mw.MetaWorldEnv(task, seed=seed, image_size=image_size, cameras=cams, state_layout=layout)
        try:
            obs = env.reset(0)
            images, state = env.render(), env.state(obs)
            for name, pol in loaded.items():
                chunks[name].append(np.asarray(pol(images, state, env.instruction, 0), dtype=np.float64))
        finally:
            env.close()
    out = {}
    for name, cs in chunks.items():
        a = np.stack(cs)  # (tasks, chunk, 4)
        executed = np.clip(a, -1.0, 1.0)  # what the rollout sends to the env (sim/rollout.py clips too)
        out[name] = {
            "shape": list(a.shape[1:]),
            "finite": bool(np.isfinite(a).all()),
            "min": float(np.nanmin(a)),
            "max": float(np.nanmax(a)),
            "clipped_fraction": float(np.mean(np.abs(a) > 1.0)),
            "executed_min": float(np.nanmin(executed)),
            "executed_max": float(np.nanmax(executed)),
        }
    return out


# naive few-step copies --------------------------------------------------------------------------------------


def save_with_steps(policy: str | Path, steps: int, dest: str | Path) -> Path:
    """A copy of `policy` that samples `steps` uniform Euler steps, weights unchanged (no recorded time grid):
    the naive few-step baseline of step distillation."""
    from shallowpi.model.checkpoint import CONFIG_NAME

    with atomic_dir(dest) as build:
        shutil.copytree(policy, build, dirs_exist_ok=True)
        raw = json.loads((build / CONFIG_NAME).read_text())
        raw["num_inference_steps"] = steps
        raw.get("shallowpi", {}).pop("sampling", None)
        (build / CONFIG_NAME).write_text(json.dumps(raw, indent=4) + "\n")
    return Path(dest)
