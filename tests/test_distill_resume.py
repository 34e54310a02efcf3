"""A distillation run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from distill_helpers import random_teacher
from shallowpi.model import save_model

STEPS, EVERY = 12, 3


def _cmd(teacher, out, *extra):
    return [
        sys.executable,
        "-m",
        "shallowpi",
        "distill",
        "--teacher",
        str(teacher),
        "--dataset",
        "synthetic:40",
        "--depth",
        "2",
        "--steps",
        str(STEPS),
        "--batch-size",
        "8",
        "--save-every",
        str(EVERY),
        "--log-every",
        "1",
        "--warmup-steps",
        "2",
        "--lr",
        "1e-3",
        "--output",
        str(out),
        "--threads",
        "1",
        "--num-workers",
        "0",
        "--no-progress",
        *extra,
    ]


def _files(ckpt):
    return {
        name: load_file(str(ckpt / name))
        for name in ("pretrained_model/model.safetensors", "training_state/optimizer_state.safetensors")
    }


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    teacher = tmp_path / "teacher"
    save_model(random_teacher("pi05", depth=4), teacher)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    full = tmp_path / "full"
    subprocess.run(_cmd(teacher, full), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(teacher, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = killed / "checkpoints" / f"{EVERY:06d}"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last = (killed / "checkpoints" / "last").resolve().name
    assert int(last) < STEPS, "the run finished before it could be killed; the test proves nothing"

    subprocess.run(_cmd(teacher, killed, "--resume"), check=True, env=env, capture_output=True)
    a = _files(full / "checkpoints" / f"{STEPS:06d}")
    b = _files(killed / "checkpoints" / f"{STEPS:06d}")
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert a[name][k].equal(b[name][k]), f"{name}:{k} differs after resume"
    assert not list((killed / "checkpoints").glob(".tmp-*")), "a partial checkpoint was left behind"
    steps = [
        int(line.split('"step": ')[1].split(",")[0])
        for line in (killed / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps[-1] == STEPS
