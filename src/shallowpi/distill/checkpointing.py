"""Training checkpoints in LeRobot's layout, written atomically, with a `last` pointer.

    <output>/checkpoints/000300/
        pretrained_model/   config.json, model.safetensors, train_config.json (+ processor files)
        training_state/     optimizer_state.safetensors, optimizer_param_groups.json, scheduler_state.json,
                            rng_state.safetensors, training_step.json (step + data position)
    <output>/checkpoints/last -> 000300

A checkpoint is built in `checkpoints/.tmp-*` and renamed into place; `last` is a symlink replaced by rename.
A run killed at any moment leaves either the previous complete checkpoint or the new complete one.
Tensors are stored bit-exactly (safetensors), floats in JSON by repr, so resume continues bit-identically.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from shallowpi.atomic import atomic_dir
from shallowpi.model import PiConfig, PiModel, save_model

CHECKPOINTS = "checkpoints"
PRETRAINED = "pretrained_model"
TRAINING_STATE = "training_state"
LAST = "last"


def step_name(step: int) -> str:
    return f"{step:06d}"


# RNG states -----------------------------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """torch (CPU + CUDA), numpy and python RNG states as tensors + string metadata."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, py_gauss = random.getstate()
    tensors["python.state"] = torch.tensor(py_state, dtype=torch.int64)
    meta = {
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(gauss)]),
        "python": json.dumps([version, py_gauss]),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [
        tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))
    ]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_gauss = json.loads(meta["python"])
    random.setstate((version, tuple(int(x) for x in tensors["python.state"].tolist()), py_gauss))


# optimizer state (full, keyed by parameter name) ------------------------------------------------------------


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}/{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for flat, t in tensors.items():
        name, key = flat.rsplit("/", 1)
        state.setdefault(name, {})[key] = t
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


# write / read -----------------------------------------------------------------------------------------------


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    config: PiConfig,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    training_step: dict,
    train_config: dict,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoints/<step>/ atomically and point `last` at it. `model_state` is the full (gathered)
    state dict with internal names; `optimizer_state` the full one keyed by parameter name."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    with atomic_dir(final, prefix=f".tmp-{step_name(step)}-") as tmp:  # clean_partial removes leftovers
        with torch.device("meta"):
            model = PiModel(copy.deepcopy(config))
        model.load_state_dict(model_state, strict=True, assign=True)
        pre = save_model(model, tmp / PRETRAINED)
        (pre / "train_config.json").write_text(json.dumps(train_config, indent=2) + "\n")
        if write_extra is not None:
            write_extra(pre)
        ts = tmp / TRAINING_STATE
        ts.mkdir()
        opt_tensors, groups = _flatten_optimizer(optimizer_state)
        save_file(opt_tensors, str(ts / "optimizer_state.safetensors"))
        (ts / "optimizer_param_groups.json").write_text(json.dumps(groups, indent=2) + "\n")
        (ts / "scheduler_state.json").write_text(json.dumps(scheduler_state, indent=2) + "\n")
        rng_t, rng_meta = rng_state()
        save_file(rng_t, str(ts / "rng_state.safetensors"), metadata=rng_meta)
        (ts / "training_step.json").write_text(json.dumps(training_step, indent=2) + "\n")
        for d in (pre, ts):
            os.chmod(d, 0o755)  # checkpoints are meant to be shared (atomic_dir opens the top folder)
    link_tmp = root / f".{LAST}.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, root / LAST)
    return final


def clean_partial(output_dir: str | Path) -> None:
    """Remove temp folders a killed run left behind (never a complete checkpoint)."""
    root = Path(output_dir) / CHECKPOINTS
    for p in root.glob(".tmp-*") if root.is_dir() else ():
        shutil.rmtree(p, ignore_errors=True)


def last_checkpoint(output_dir: str | Path) -> Path | None:
    root = Path(output_dir) / CHECKPOINTS
    link = root / LAST
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
        if (target / TRAINING_STATE / "training_step.json").is_file():
            return target
    steps = sorted(p for p in root.glob("[0-9]*") if (p / TRAINING_STATE / "training_step.json").is_file())
    return steps[-1] if steps else None


def load_training_state(ckpt: Path) -> dict:
    ts = ckpt / TRAINING_STATE
    tensors = load_file(str(ts / "optimizer_state.safetensors"))
    groups = json.loads((ts / "optimizer_param_groups.json").read_text())
    from safetensors import safe_open

    with safe_open(str(ts / "rng_state.safetensors"), framework="pt") as f:
        rng_meta = f.metadata()
        rng_t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return {
        "optimizer": _unflatten_optimizer(tensors, groups),
        "scheduler": json.loads((ts / "scheduler_state.json").read_text()),
        "rng": (rng_t, rng_meta),
        "training_step": json.loads((ts / "training_step.json").read_text()),
    }
