"""`shallowpi distill --image-merge 2 --vision-layers 1` on a tiny teacher: the prefix-compressed student is
trained, saved, reloaded strictly, resumed exactly, and then step-distilled from its folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import torch

from distill_helpers import last_weights, random_teacher
from shallowpi.distill.checkpointing import CHECKPOINTS, LAST, PRETRAINED, step_name
from shallowpi.model import load_model, save_model


def _distill(*argv: str) -> subprocess.CompletedProcess:
    common = ["--dataset", "synthetic:16", "--batch-size", "4", "--threads", "1", "--num-workers", "0"]
    common += ["--no-progress", "--warmup-steps", "1", "--log-every", "1", "--lr", "1e-3"]
    cmd = [sys.executable, "-m", "shallowpi", "distill", *common, *argv]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_prefix_student_trains_saves_resumes_and_step_distills(tmp_path):
    teacher = tmp_path / "teacher"
    save_model(random_teacher("pi05", depth=4), teacher)  # 4x4 patch grid, 2 SigLIP layers
    prefix = ["--teacher", str(teacher), "--depth", "2", "--image-merge", "2", "--vision-layers", "1"]

    r = _distill(*prefix, "--steps", "2", "--save-every", "1", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    final = tmp_path / "run" / CHECKPOINTS / LAST / PRETRAINED
    student = load_model(final)  # strict: the merged projector and one SigLIP layer match the config
    c = student.config
    assert (c.vision.merge, c.vision.depth, c.vision_layer_map, c.layer_map) == (2, 1, [0], [0, 3])
    assert student.projector.in_features == 4 * c.vision.width
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in records] == [1, 2]
    assert all(x["vision"] > 0 for x in records)  # on by default: the tower is shallower
    assert all(abs(x["loss"] - (x["task"] + x["kd"] + x["attn"] + x["vision"])) < 1e-5 for x in records)
    train_config = json.loads((final / "train_config.json").read_text())
    assert train_config["loss"]["weights"]["vision"] == 1.0
    assert train_config["image_merge"] == 2 and train_config["vision_layer_map"] == [0]

    # Resume from step 1's checkpoint in another folder: the same flags rebuild the student, the weights
    # load strictly, and the run ends where the uninterrupted one did.
    resumed = tmp_path / "resumed" / CHECKPOINTS
    shutil.copytree(tmp_path / "run" / CHECKPOINTS / step_name(1), resumed / step_name(1))
    (resumed / LAST).symlink_to(step_name(1))
    r = _distill(*prefix, "--steps", "2", "--save-every", "1", "--out", str(tmp_path / "resumed"), "--resume")
    assert r.returncode == 0, r.stderr
    a, b = last_weights(tmp_path / "run"), last_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # Step distillation composes: the prefix student, from its folder, against its own 10-step sampler.
    out = tmp_path / "steps"
    r = _distill(
        "--teacher",
        str(final),
        "--student",
        str(final),
        "--num-steps",
        "2",
        "--steps",
        "1",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    two_step = load_model(out / CHECKPOINTS / LAST / PRETRAINED)
    assert two_step.config.time_grid() == [1.0, 0.5, 0.0]
    assert two_step.config.vision == c.vision and two_step.config.vision_layer_map == [0]
