"""LeRobotDatasetWriter: data and video files roll over at their size budgets, and the reader reads every
frame back from the right file (episodes split across data files and video files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from shallowpi.data.lerobot_dataset import LeRobotDataset
from shallowpi.data.stats import load_stats
from shallowpi.data.writer import LeRobotDatasetWriter

CAMERAS = ("observation.images.top", "observation.images.hand")
LENGTHS = (7, 5, 9, 6, 8)
# State 3 + action 2 floats and 5 index columns: 56 bytes a row in the writer's estimate, so a 500-byte
# budget closes a data file after the episode that passes 9 rows: files hold episodes [0, 1], [2], [3, 4].
DATA_MB = 0.0005
DATA_FILES = [[0, 1], [2], [3, 4]]


def _frame(ep: int, k: int, cam: int) -> np.ndarray:
    """Flat quadrants that name the episode, the frame and the camera (survive lossy coding)."""
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :24] = 30 + 40 * ep
    img[:16, 24:] = 5 + 20 * k
    img[16:] = (60, 200)[cam]
    return img


def _episode(ep: int, n: int) -> tuple[dict, np.ndarray, np.ndarray]:
    k = np.arange(n)
    images = {cam: np.stack([_frame(ep, i, c) for i in k]) for c, cam in enumerate(CAMERAS)}
    state = np.stack([k + 100.0 * ep, -k, np.full(n, ep)], 1).astype(np.float32)
    actions = np.stack([k * 0.5, k + 10.0 * ep], 1).astype(np.float32)
    return images, state, actions


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("writer") / "ds"
    # Video budget 0: every episode starts a new mp4 (the on-disk size of a file being encoded lags the
    # encoder by its look-ahead, so a small positive budget would roll only as the file header allows).
    with LeRobotDatasetWriter(
        root,
        fps=10,
        cameras={cam: (32, 48) for cam in CAMERAS},
        state_names=["a", "b", "c"],
        action_names=["x", "y"],
        data_files_size_in_mb=DATA_MB,
        video_files_size_in_mb=0,
    ) as w:
        for ep, n in enumerate(LENGTHS):
            w.add_episode(*_episode(ep, n), task=f"task {ep % 2}")
    return root


def test_files_roll_over_at_their_budgets(written):
    data = sorted(p.relative_to(written).as_posix() for p in written.glob("data/*/*.parquet"))
    assert data == [f"data/chunk-000/file-{i:03d}.parquet" for i in range(len(DATA_FILES))]
    for cam in CAMERAS:
        videos = sorted(p.name for p in (written / "videos" / cam).glob("*/*.mp4"))
        assert videos == [f"file-{i:03d}.mp4" for i in range(len(LENGTHS))]
    episodes = pq.read_table(written / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [
        [e["episode_index"] for e in episodes if e["data/file_index"] == f] for f in range(3)
    ] == DATA_FILES
    for e in episodes:  # each episode opens its own mp4, at time 0
        assert e[f"videos/{CAMERAS[0]}/file_index"] == e["episode_index"]
        assert e[f"videos/{CAMERAS[0]}/from_timestamp"] == 0.0
    info = json.loads((written / "meta" / "info.json").read_text())
    assert (info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (DATA_MB, 0)
    assert info["total_frames"] == sum(LENGTHS) and info["total_episodes"] == len(LENGTHS)


def test_every_frame_reads_back_from_the_rolled_files(written):
    ds = LeRobotDataset(written, chunk_size=4)
    assert len(ds) == sum(LENGTHS) and ds.num_episodes == len(LENGTHS)
    i = 0
    for ep, n in enumerate(LENGTHS):
        images, state, actions = _episode(ep, n)
        assert ds.episode_bounds(ep) == (i, i + n)
        for k in range(n):
            x = ds[i]
            assert (x["episode_index"], x["frame_index"], x["index"]) == (ep, k, i)
            assert x["task"] == f"task {ep % 2}"
            assert torch.equal(x["state"], torch.from_numpy(state[k]))  # bit-exact
            # The chunk stops at the episode end, even where the next episode sits in the same data file.
            real = min(4, n - k)
            assert torch.equal(x["actions"][:real], torch.from_numpy(actions[k : k + real]))
            assert x["action_is_pad"].tolist() == [False] * real + [True] * (4 - real)
            for cam in CAMERAS:
                want = torch.from_numpy(images[cam][k]).permute(2, 0, 1).int()  # (3, H, W)
                got = x["images"][cam].int()
                err = (got - want).abs()[:, [8, 8, 24], [12, 36, 24]].max()  # quadrant centres
                assert err <= 8, (ep, k, cam)  # H.264 (crf 23) is lossy; a wrong frame is off by >= 20
            i += 1


def test_stats_cover_every_rolled_data_file(written):
    """stats.json is computed from all written rows (flushed files re-read), not the last file only."""
    stats = load_stats(written)
    state = np.concatenate([_episode(ep, n)[1] for ep, n in enumerate(LENGTHS)])
    actions = np.concatenate([_episode(ep, n)[2] for ep, n in enumerate(LENGTHS)])
    for key, x in (("observation.state", state), ("action", actions)):
        np.testing.assert_allclose(stats[key]["mean"], x.mean(0), rtol=1e-6)
        np.testing.assert_array_equal(stats[key]["min"], x.min(0))
        np.testing.assert_array_equal(stats[key]["max"], x.max(0))
