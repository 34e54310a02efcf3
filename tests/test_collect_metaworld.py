"""`shallowpi collect --env metaworld`: scripted demos written as a LeRobotDataset v3.0 our reader loads."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("metaworld")
os.environ.setdefault("MUJOCO_GL", "egl")

from paths import find_reference  # noqa: E402
from shallowpi.commands import collect as collect_cmd  # noqa: E402
from shallowpi.data.lerobot_dataset import LeRobotDataset  # noqa: E402
from shallowpi.data.stats import load_stats  # noqa: E402
from shallowpi.sim.metaworld_env import INSTRUCTIONS  # noqa: E402

REF = find_reference() / "lerobot_dataset_v3_small"
TASKS = ["reach-v3", "drawer-close-v3"]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    collect_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mw") / "demo"
    args = _args(
        "--env",
        "metaworld",
        "--tasks",
        ",".join(TASKS),
        "--demos-per-task",
        "2",
        "--task-demos",
        "drawer-close=3",  # the short name, as --tasks takes it
        "--seed",
        "0",
        "--image-size",
        "64",
        "--cameras",
        "corner4,gripperPOV",
        "--workers",
        "2",
        "--no-progress",
        "--out",
        str(out),
    )
    assert collect_cmd.run(args) == 0
    return out


def test_collected_dataset_loads_and_is_sane(dataset):
    ds = LeRobotDataset(dataset, chunk_size=10)
    assert ds.num_episodes == 5 and ds.state_dim == 4 and ds.action_dim == 4
    assert sorted(set(ds.tasks.values())) == sorted(INSTRUCTIONS[t] for t in TASKS)
    # --task-demos gives drawer-close 3 episodes where --demos-per-task gives reach 2.
    episode_tasks = [
        t for ts in pq.read_table(dataset / "meta/episodes").column("tasks").to_pylist() for t in ts
    ]
    assert episode_tasks.count(INSTRUCTIONS["reach-v3"]) == 2
    assert episode_tasks.count(INSTRUCTIONS["drawer-close-v3"]) == 3
    actions = ds.column("action")
    assert np.abs(actions).max() <= 1.0
    for i in (0, len(ds) // 2, len(ds) - 1):
        x = ds[i]
        for cam in ("observation.images.corner4", "observation.images.gripperPOV"):
            img = x["images"][cam]
            assert img.shape == (3, 64, 64) and img.float().mean() > 10  # not black
        # State is hand xyz + gripper: the hand stays in Meta-World's workspace.
        assert x["state"].shape == (4,) and x["state"][:3].abs().max() < 2
    stats = load_stats(dataset)
    for key in ("observation.state", "action"):
        assert {"mean", "std", "q01", "q99", "min", "max"} <= set(stats[key])
        assert len(stats[key]["q01"]) == 4
    # Consecutive frames differ: the video holds a moving scene, decoded at the right timestamps.
    a, b = ds[0]["images"]["observation.images.corner4"], ds[20]["images"]["observation.images.corner4"]
    assert not torch.equal(a, b)


def test_layout_follows_lerobot_schema(dataset):
    info = json.loads((dataset / "meta/info.json").read_text())
    ref = json.loads((REF / "meta/info.json").read_text())
    assert set(info) == set(ref)
    assert (info["data_path"], info["video_path"]) == (ref["data_path"], ref["video_path"])
    ref_cam = ref["features"]["observation.images.front"]
    cam = info["features"]["observation.images.corner4"]
    assert set(cam) == set(ref_cam) and set(cam["info"]) == set(ref_cam["info"])
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert info["features"][k] == ref["features"][k]
    ref_cols = {
        c.replace("front", "corner4")
        for c in pq.read_schema(REF / "meta/episodes/chunk-000/file-000.parquet").names
        if "wrist" not in c and not c.startswith("stats/")
    }
    cols = set(pq.read_schema(dataset / "meta/episodes/chunk-000/file-000.parquet").names)
    assert ref_cols <= cols
    assert (
        pq.read_schema(dataset / "meta/tasks.parquet").names
        == pq.read_schema(REF / "meta/tasks.parquet").names
    )
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 5
    assert info["features"]["observation.images.corner4"]["info"]["video.codec"] == "h264"
    assert (dataset / "videos/observation.images.gripperPOV/chunk-000/file-000.mp4").is_file()
    assert not list(dataset.parent.glob(".*.tmp"))  # the temp folder was renamed, nothing left behind


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown Meta-World camera 'topview'"):
        collect_cmd.run(_args("metaworld", "--cameras", "topview", "--out", str(tmp_path / "x")))
    with pytest.raises(ValueError, match="unknown Meta-World task 'fly'"):
        collect_cmd.run(_args("metaworld", "--tasks", "fly", "--out", str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()
