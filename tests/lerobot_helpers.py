"""Tiny policies for the LeRobot interop tests, and running Python inside a LeRobot venv (0.4.4 or 0.6.1)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shallowpi.data.processor import ProcessorConfig
from shallowpi.data.processor_files import save_processor
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.distill.student import make_student
from shallowpi.model import PiModel, save_model
from shallowpi.model.config import tiny

SCRIPTS = Path(__file__).resolve().parent / "lerobot_scripts"
META_WORLD_CAMERA = "observation.image"  # LeRobot's Meta-World env: corner2 as observation.image


# the plugin's processor pipelines, step by step: LeRobot's normaliser steps take lerobot-train's overrides
PLUGIN_PIPELINES = (
    [
        "rename_observations_processor",
        "to_batch_processor",
        "normalizer_processor",
        "shallowpi_preprocessor",
        "device_processor",
    ],
    ["unnormalizer_processor", "device_processor"],
)


def pipeline_steps(folder: Path) -> tuple[list[str], list[str]]:
    """The registry names of a saved policy's preprocessor and postprocessor steps, in order."""
    return tuple(
        [s.get("registry_name") for s in json.loads((folder / name).read_text())["steps"]]
        for name in ("policy_preprocessor.json", "policy_postprocessor.json")
    )


def vec_stats(dim: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    i = np.arange(dim, dtype=np.float64)
    return {
        "mean": 0.1 * i * scale,
        "std": 1.0 + 0.1 * i,
        "q01": -1.0 - 0.1 * i,
        "q99": 1.0 + 0.3 * i,
        "min": -2.0 - i,
        "max": 2.0 + i,
    }


def save_tiny_student(
    path: Path,
    *,
    variant: str = "pi05",
    camera: str = META_WORLD_CAMERA,
    state_dim: int = 4,
    action_dim: int = 4,
    merge: int | None = None,
    vision_depth: int | None = None,
    sampling_grid: list[float] | None = None,
) -> Path:
    """A depth-2 student (layer map [0, 3]) of a random depth-4 tiny teacher, as `shallowpi distill` saves it:
    one camera fed (`camera` -> slot 0; the other slots masked), Meta-World's state 4 / action 4. `merge` /
    `vision_depth`: its prefix compressed (image tokens merged, SigLIP layers kept), as --image-merge /
    --vision-layers do. `sampling_grid`: its Euler time grid recorded, as a step-distilled student's is."""
    torch.manual_seed(0)
    tcfg = tiny(variant, depth=4)
    tcfg.tokenizer_max_length = 48  # a Meta-World prompt with its 4 state bins fits: nothing is cut
    teacher = PiModel(tcfg).eval()
    student = make_student(teacher, depth=2, merge=merge, vision_depth=vision_depth)
    if sampling_grid is not None:
        student.config = student.config.with_sampling(sampling_grid)
    cfg = student.config
    save_model(student, path)
    proc = ProcessorConfig(
        variant=variant,
        camera_map={camera: cfg.cameras[0]},
        cameras=cfg.cameras,
        image_size=cfg.vision.image_size,
        chunk_size=cfg.chunk_size,
        tokenizer_max_length=cfg.tokenizer_max_length,
    )
    stats = {"observation.state": vec_stats(state_dim), "action": vec_stats(action_dim, scale=-0.5)}
    save_processor(path, proc, stats, load_tokenizer())
    return path


def venv_run(
    python: Path,
    args: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict | None = None,
    pythonpath: list[Path] | None = None,
):
    """Run `python args...` (or a console script beside it) in the LeRobot venv; raise with its output on failure.
    `pythonpath`: folders the run may import from besides the venv (test doubles LeRobot loads as plugins)."""
    full_env = {
        **os.environ,
        "MUJOCO_GL": "egl",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    full_env.pop("PYTHONPATH", None)  # the venv runs the editable installs of this checkout, nothing else
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    proc = subprocess.run(
        [str(python), *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@dataclass(frozen=True)
class LeRobot:
    """One LeRobot release's venv: its python, its console scripts, and the flags that differ by release."""

    version: str
    python: Path

    def bin(self, name: str) -> Path:
        return self.python.parent / name

    @property
    def eval_freq_flag(self) -> str:
        """lerobot-train's evaluation period: --eval_freq (0.4.4), --env_eval_freq (0.5+)."""
        return "--eval_freq" if self.version == "0.4.4" else "--env_eval_freq"

    def run(self, args: list, *, timeout: float, script: str | None = None, **kw):
        """`python args...`, or the console script `script` with `args`, in this venv."""
        exe = self.bin(script) if script else self.python
        return venv_run(exe, args, timeout=timeout, **kw)
