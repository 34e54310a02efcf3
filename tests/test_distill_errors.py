"""Bad setups fail before training, naming the problem; a non-finite loss stops the run cleanly."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from distill_helpers import random_teacher
from paths import find_reference
from shallowpi.cli import main
from shallowpi.data.lerobot_dataset import LeRobotDataset
from shallowpi.data.processor import ProcessorConfig
from shallowpi.distill.data import SyntheticSource
from shallowpi.distill.dataset_fit import DatasetMismatchError, check_dataset_fits
from shallowpi.distill.losses import DistillLossConfig, LossWeights
from shallowpi.distill.student import make_student
from shallowpi.distill.trainer import NonFiniteLossError, TrainConfig, train
from shallowpi.model import save_model


@pytest.fixture
def dataset(tmp_path):
    """A copy of the LeRobot-written v3.0 sample (2 cameras front/wrist, state 8, action 7, 60 frames)."""
    dst = tmp_path / "data"
    shutil.copytree(find_reference() / "lerobot_dataset_v3_small", dst)
    return dst


def _Pre(action_dim):  # noqa: N802 - a stand-in Preprocessor
    cfg = ProcessorConfig(
        variant="pi05",
        cameras=random_teacher().config.cameras,
        image_size=56,
        chunk_size=10,
        tokenizer_max_length=16,
        camera_map={
            "observation.images.front": "observation.images.base_0_rgb",
            "observation.images.wrist": "observation.images.left_wrist_0_rgb",
        },
    )
    return SimpleNamespace(
        config=cfg, action_dim=action_dim, state_dim=8, tokenizer=SimpleNamespace(vocab_size=1024)
    )


def _teacher(tmp_path, variant="pi0", action_shape=None):
    model = random_teacher(variant, depth=2)
    if action_shape is not None:  # what a LeRobot-trained teacher records about its data
        model.config.lerobot["output_features"] = {"action": {"type": "ACTION", "shape": [action_shape]}}
    return save_model(model, tmp_path / "teacher")


def _distill(teacher, data, out, *extra):
    return main(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--dataset",
            str(data),
            "--depth",
            "1",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--num-workers",
            "0",
            "--no-progress",
            *extra,
        ]
    )


def test_real_dataset_runs_and_the_processor_travels_with_the_student(tmp_path, dataset):
    assert _distill(_teacher(tmp_path), dataset, tmp_path / "out") == 0
    saved = tmp_path / "out" / "checkpoints" / "last" / "pretrained_model"
    assert (saved / "shallowpi_processor.json").is_file() and (saved / "tokenizer.model").is_file()
    assert json.loads((saved / "config.json").read_text())["shallowpi"]["layer_map"] == [0]


def _fails_with(capsys, message, *args):
    assert _distill(*args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (args[2] / "checkpoints").exists(), "training started despite the mismatch"


def test_action_dim_mismatch_is_named(tmp_path, dataset, capsys):
    _fails_with(
        capsys,
        "action dim 6, the dataset has 7",
        _teacher(tmp_path, action_shape=6),
        dataset,
        tmp_path / "out",
    )
    with pytest.raises(DatasetMismatchError, match="action dim"):  # the same error for library users
        check_dataset_fits(
            random_teacher().config, _Pre(action_dim=6), LeRobotDataset(dataset, chunk_size=10)
        )


def test_missing_camera_is_named(tmp_path, dataset, capsys):
    cams = "observation.images.front=observation.images.base_0_rgb,observation.images.top=observation.images.left_wrist_0_rgb"
    _fails_with(
        capsys,
        r"reads \['observation.images.top'\], which the dataset lacks",
        _teacher(tmp_path),
        dataset,
        tmp_path / "out",
        "--camera-map",
        cams,
    )


def test_missing_stats_are_named(tmp_path, dataset, capsys):
    stats_file = dataset / "meta" / "stats.json"
    stats = json.loads(stats_file.read_text())
    del stats["action"]["q01"]  # π0.5 normalises actions by quantiles
    stats_file.write_text(json.dumps(stats))
    _fails_with(
        capsys,
        "missing stats.*'action'.*'q01'",
        _teacher(tmp_path, variant="pi05"),
        dataset,
        tmp_path / "out",
    )
    stats_file.unlink()
    _fails_with(capsys, "missing stats", _teacher(tmp_path), dataset, tmp_path / "out")


class _PoisonedSource(SyntheticSource):
    """NaN actions at one dataset index: the task loss of the step that draws it becomes NaN."""

    def example(self, index, generator):
        ex = super().example(index, generator)
        if index == self.bad_index:
            ex["actions"] = torch.full_like(ex["actions"], float("nan"))
        return ex


def test_non_finite_loss_stops_naming_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    teacher = random_teacher("pi05", depth=2)
    source = _PoisonedSource(teacher.config, num_samples=8, seed=0)
    # With batch 2 and 8 samples, step 4 (positions 6, 7) draws the 4th epoch-0 pair.
    from shallowpi.distill.data import StreamPlan

    plan = StreamPlan(8, 2, seed=0)
    source.bad_index = plan.dataset_index(6)
    cfg = TrainConfig(
        output_dir=str(tmp_path / "out"),
        steps=6,
        batch_size=2,
        save_every=2,
        seed=0,
        progress=False,
        device="cpu",
        num_workers=0,  # batches in this process (DataLoader workers: test_distill_resume)
    )
    with pytest.raises(NonFiniteLossError, match=r"loss term 'task' = nan at step 4.*000002"):
        train(make_student(teacher, depth=1), source, cfg, DistillLossConfig(weights=LossWeights(1, 0, 0)))
    _assert_only_the_good_checkpoint(tmp_path / "out")
    cfg.output_dir = str(tmp_path / "kd")
    with pytest.raises(
        NonFiniteLossError, match=r"'attn' = nan, term 'kd' = nan, term 'task' = nan at step 4.*000002"
    ):
        train(make_student(teacher, depth=1), source, cfg, DistillLossConfig(), teacher=teacher)
    _assert_only_the_good_checkpoint(tmp_path / "kd")


def _assert_only_the_good_checkpoint(out):
    """Step 2 saved, nothing after it, `last` points there and holds finite weights."""
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["000002", "last"]
    assert (out / "checkpoints" / "last").resolve().name == "000002"
    weights = load_file(str(out / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_resume_with_another_batch_size_is_refused(tmp_path):
    teacher = random_teacher("pi05", depth=2)
    source = SyntheticSource(teacher.config, num_samples=8)
    cfg = TrainConfig(
        output_dir=str(tmp_path / "out"), steps=2, batch_size=2, progress=False, device="cpu", num_workers=0
    )
    train(make_student(teacher, depth=1), source, cfg, DistillLossConfig(), teacher=teacher)
    cfg.batch_size, cfg.steps = 4, 4
    with pytest.raises(ValueError, match="global_batch=2, this run has 4"):
        train(make_student(teacher, depth=1), source, cfg, DistillLossConfig(), teacher=teacher, resume=True)
