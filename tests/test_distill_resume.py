"""A distillation run killed (SIGKILL, or a crash with DataLoader workers running) and resumed ends
bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from distill_helpers import random_teacher
from paths import find_reference
from shallowpi.data.lerobot_dataset import LeRobotDataset
from shallowpi.distill.data import ProcessedSource, StreamPlan
from shallowpi.distill.dataset_fit import build_preprocessor
from shallowpi.distill.losses import DistillLossConfig
from shallowpi.distill.schedule import ScheduleConfig
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import TrainConfig, train
from shallowpi.model import PiModel, save_model
from shallowpi.model.config import tiny

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
        "--out",
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
    # The `last` link, not the step folder: between the folder's rename and the link the run has no `last`.
    first = killed / "checkpoints" / "last"
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


# --------------------------------------------------------------------------- DataLoader workers (CLI default)
class _Interrupt(RuntimeError):
    """Stands for a crash: raised in a DataLoader worker, re-raised in the trainer when it reaches that batch."""


class _CrashingSource(ProcessedSource):
    """The LeRobot sample through the training Preprocessor; drawing `crash_index` raises (a worker dies)."""

    crash_index: int | None = None

    def example(self, index, generator):
        if index == self.crash_index:
            raise _Interrupt(f"crash while loading dataset index {index}")
        return super().example(index, generator)


def test_workers_interrupted_and_resumed_equal_one_run_without_workers(tmp_path, one_thread):
    """Real dataset (video decoding in the workers), num_workers=2 as the CLI defaults to: a run that dies
    mid-way and resumes ends bit-identical to an uninterrupted run that loads in the main process."""
    torch.manual_seed(0)
    cfg = tiny("pi05", 2)
    cfg.tokenizer_max_length = 64  # the sample's π0.5 prompt (task + 6 state bins) must fit: no truncation
    teacher = PiModel(cfg).eval()
    dataset = LeRobotDataset(
        find_reference() / "lerobot_dataset_v3_small", chunk_size=teacher.config.chunk_size
    )
    pre = build_preprocessor(teacher.config, dataset)
    steps, batch = 6, 4

    def run(out, workers, *, crash_index=None, resume=False):
        source = _CrashingSource(dataset, pre)
        source.crash_index = crash_index
        cfg = TrainConfig(
            output_dir=str(out),
            steps=steps,
            batch_size=batch,
            seed=7,
            schedule=ScheduleConfig(peak_lr=1e-3, warmup_steps=2),
            save_every=2,
            num_workers=workers,
            progress=False,
            device="cpu",
        )
        student = make_student(teacher, depth=1)
        return train(student, source, cfg, DistillLossConfig(), teacher=teacher, resume=resume)

    full = run(tmp_path / "full", 0)
    # Optimizer step 4 (positions 12..15 of epoch 0) draws the crashing index; step 2 was saved.
    crash = StreamPlan(len(dataset), batch, seed=7).dataset_index(13)
    with pytest.raises(_Interrupt):
        run(tmp_path / "resumed", 2, crash_index=crash)
    assert (tmp_path / "resumed" / "checkpoints" / "last").resolve().name == "000002"
    resumed = run(tmp_path / "resumed", 2, resume=True)
    assert full.name == resumed.name == f"{steps:06d}"
    a, b = _files(full), _files(resumed)
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert a[name][k].equal(b[name][k]), f"{name}:{k} differs (workers + resume vs one run)"
