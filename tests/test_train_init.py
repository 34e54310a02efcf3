"""`train --init` fine-tunes a policy on another dataset: its processor travels, or with `--dataset-stats`
its cameras / tokenizer / prompt travel and the dataset's stats and state dims replace its own."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from paths import find_reference
from shallowpi.cli import main
from shallowpi.data.lerobot_dataset import LeRobotDataset
from shallowpi.data.processor_files import save_processor
from shallowpi.pretrained import load_processor


@pytest.fixture
def dataset(tmp_path):
    """The LeRobot-written v3.0 sample (cameras front/wrist, state 8, action 7)."""
    dst = tmp_path / "data"
    shutil.copytree(find_reference() / "lerobot_dataset_v3_small", dst)
    return dst


def _train(data, out, *extra) -> int:
    args = ["train", "--dataset", str(data), "--steps", "1", "--batch-size", "2", "--out", str(out)]
    return main([*args, "--num-workers", "0", "--no-progress", *extra])


def _policy_of_another_dataset(tmp_path, data):
    """A policy whose processor was fitted to a 6-dim state (as if trained on another robot's data)."""
    assert _train(data, tmp_path / "base", "--preset", "tiny", "--variant", "pi0") == 0
    policy = tmp_path / "base" / "checkpoints" / "last" / "pretrained_model"
    pre, _ = load_processor(policy)
    key = pre.config.state_key
    stats = {k: dict(v) for k, v in pre.raw_stats.items()}
    stats[key] = {name: np.asarray(v)[..., :6] if np.ndim(v) else v for name, v in stats[key].items()}
    stats[key]["mean"] = stats[key]["mean"] + 5.0  # other data, other stats
    save_processor(policy, dataclasses.replace(pre.config, state_dim=6), stats, pre.tokenizer)
    return policy, pre.config.camera_map


def test_init_keeps_its_processor_and_names_a_state_dim_mismatch(tmp_path, dataset, capsys):
    policy, _ = _policy_of_another_dataset(tmp_path, dataset)
    assert _train(dataset, tmp_path / "ft", "--init", str(policy)) == 2
    err = capsys.readouterr().err
    assert "state dim: the model's processor expects 6, the dataset has 8" in err, err
    assert not (tmp_path / "ft" / "checkpoints").exists()


def test_dataset_stats_refits_the_normalisation_and_keeps_cameras(tmp_path, dataset):
    policy, camera_map = _policy_of_another_dataset(tmp_path, dataset)
    assert _train(dataset, tmp_path / "ft", "--init", str(policy), "--dataset-stats") == 0
    pre, _ = load_processor(tmp_path / "ft" / "checkpoints" / "last" / "pretrained_model")
    want = LeRobotDataset(dataset, chunk_size=10).stats()[pre.config.state_key]["mean"]
    assert pre.state_dim == 8 and pre.config.camera_map == camera_map
    np.testing.assert_allclose(np.asarray(pre.raw_stats[pre.config.state_key]["mean"]), want, rtol=1e-6)


def test_dataset_stats_needs_init(tmp_path, dataset, capsys):
    assert _train(dataset, tmp_path / "new", "--preset", "tiny", "--variant", "pi0", "--dataset-stats") == 2
    assert "--dataset-stats goes with --init" in capsys.readouterr().err
