"""LeRobotDataset reader: LeRobot's own v3.0 reference dataset, a v2.1 fixture, workers, clear errors."""

from __future__ import annotations

import json
import shutil
from argparse import Namespace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from paths import find_reference
from shallowpi.data.lerobot_dataset import DatasetFormatError, LeRobotDataset
from shallowpi.data.stats import load_stats
from shallowpi.data.video import VideoDecodeError, encode_png

REF = find_reference() / "lerobot_dataset_v3_small"


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((REF / "expected_values.json").read_text())


def test_reference_v3_matches_lerobot(expected):
    ds = LeRobotDataset(REF, chunk_size=5)
    assert len(ds) == 60 and ds.num_episodes == 3
    tol = (
        8  # u8 units at quadrant centres vs the written values (lossy AV1), as expected_values.json suggests
    )
    locs = expected["pixel_locations_(row,col)"]
    for s in expected["samples"]:
        x = ds[s["index"]]
        assert (x["episode_index"], x["frame_index"], x["index"]) == (
            s["episode_index"],
            s["frame_index"],
            s["index"],
        )
        assert x["task"] == s["task"]
        assert x["timestamp"] == pytest.approx(s["timestamp"])
        assert x["state"].tolist() == s["observation.state"]  # bit-exact
        assert x["actions"][0].tolist() == s["action"]
        for cam, quads in s["images"].items():
            img = x["images"][cam]
            assert img.dtype == torch.uint8 and img.shape == (3, 64, 64)
            for name, (r, c) in locs.items():
                got = np.array(img[:, r, c].tolist())
                assert np.abs(got - quads[name]["written_u8_rgb"]).max() <= tol, (cam, name)
                assert (
                    np.abs(got - quads[name]["decoded_u8_rgb"]).max() <= 1
                )  # same decoder output as LeRobot
            # The synthetic content names its own episode and frame: the right frame was decoded.
            mean = img.float().mean(0)
            assert round((mean[16, 16].item() - 30) / 80) == s["episode_index"]
            assert round((mean[16, 48].item() - 5) / 10) == s["frame_index"]


def test_reference_episode_table_and_tasks(expected):
    ds = LeRobotDataset(REF)
    for e in expected["episodes"]:
        assert ds.episode_bounds(e["episode_index"]) == (e["dataset_from_index"], e["dataset_to_index"])
    assert sorted(set(ds.tasks.values())) == sorted({"pick up the red cube", "open the top drawer"})
    assert "q01" in load_stats(REF)["action"]


def test_action_chunk_padded_past_episode_end():
    ds = LeRobotDataset(REF, chunk_size=8)
    start, end = ds.episode_bounds(0)
    x = ds[end - 3]  # 3 real actions left in episode 0
    assert x["action_is_pad"].tolist() == [False] * 3 + [True] * 5
    last = ds.column("action")[end - 1]
    assert torch.equal(x["actions"][3:], torch.from_numpy(np.tile(last, (5, 1))))  # repeats, never episode 1
    assert torch.equal(x["actions"][:3], torch.from_numpy(ds.column("action")[end - 3 : end]))


def test_dataloader_workers_give_the_same_samples():
    ds = LeRobotDataset(REF, chunk_size=4)
    # Decode in this process first: forked workers inherit open decoders and must neither use nor free
    # them (freeing FFmpeg state copied mid-use hung workers). The timeout turns such a hang into an error.
    for i in (0, 25, 50):
        ds[i]
    loader = torch.utils.data.DataLoader(ds, batch_size=6, num_workers=2, shuffle=False, timeout=60)
    batch = next(iter(loader))
    for j in range(6):
        direct = ds[j]
        assert torch.equal(
            batch["images"]["observation.images.front"][j], direct["images"]["observation.images.front"]
        )
        assert torch.equal(batch["actions"][j], direct["actions"])
    # Random order access is deterministic (seek path) and equals sequential access.
    a = [ds[i]["images"]["observation.images.wrist"] for i in (50, 3, 31, 3)]
    assert torch.equal(a[1], a[3]) and torch.equal(a[0], ds[50]["images"]["observation.images.wrist"])


# --------------------------------------------------------------------------------------------- v2.1
def _frame(ep: int, k: int, cam: int) -> np.ndarray:
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :24] = 30 + 80 * ep
    img[:16, 24:] = 5 + 10 * k
    img[16:] = (60, 200)[cam]
    return img


def write_v21(root: Path, lengths=(6, 9), fps=10) -> None:
    """A LeRobot v2.1 dataset: one parquet + one mp4 per episode, a PNG-in-parquet camera, jsonl meta."""
    (root / "meta").mkdir(parents=True)
    feats = {
        "observation.images.top": {
            "dtype": "video",
            "shape": [32, 48, 3],
            "names": ["height", "width", "channels"],
        },
        "observation.images.hand": {
            "dtype": "image",
            "shape": [32, 48, 3],
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": [3], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        **{
            k: {"dtype": "int64", "shape": [1], "names": None}
            for k in ("frame_index", "episode_index", "index", "task_index")
        },
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    }
    info = {
        "codebase_version": "v2.1",
        "fps": fps,
        "chunks_size": 1000,
        "total_episodes": len(lengths),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": feats,
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text(
        '{"task_index": 0, "task": "stack the cups"}\n{"task_index": 1, "task": "wipe the table"}\n'
    )
    (root / "meta/episodes.jsonl").write_text(
        "".join(
            json.dumps(
                {"episode_index": e, "tasks": ["stack the cups" if e == 0 else "wipe the table"], "length": n}
            )
            + "\n"
            for e, n in enumerate(lengths)
        )
    )
    stats_lines, index = [], 0
    for e, n in enumerate(lengths):
        k = np.arange(n)
        state = np.stack([k + 100.0 * e, -k, np.full(n, e)], 1).astype(np.float32)
        action = np.stack([k * 0.5, k + e], 1).astype(np.float32)
        table = pa.table(
            {
                "observation.images.hand": pa.array(
                    [{"bytes": encode_png(_frame(e, i, 1)), "path": None} for i in k]
                ),
                "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 3),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), 2),
                "timestamp": pa.array((k / fps).astype(np.float32)),
                "frame_index": pa.array(k),
                "episode_index": pa.array(np.full(n, e)),
                "index": pa.array(index + k),
                "task_index": pa.array(np.full(n, e)),
            }
        )
        index += n
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        vpath = root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4"
        vpath.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(vpath), "w") as c:
            s = c.add_stream("libx264", rate=fps, options={"crf": "18", "g": "2", "bf": "0"})
            s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
            s.codec_context.time_base = Fraction(1, fps)
            for i in k:
                f = av.VideoFrame.from_ndarray(_frame(e, i, 0), format="rgb24")
                f.pts = int(i)
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        st = {
            "observation.state": {
                "min": state.min(0).tolist(),
                "max": state.max(0).tolist(),
                "mean": state.mean(0).tolist(),
                "std": state.std(0).tolist(),
                "count": [n],
            },
            "action": {
                "min": action.min(0).tolist(),
                "max": action.max(0).tolist(),
                "mean": action.mean(0).tolist(),
                "std": action.std(0).tolist(),
                "count": [n],
            },
        }
        stats_lines.append(json.dumps({"episode_index": e, "stats": st}))
    (root / "meta/episodes_stats.jsonl").write_text("\n".join(stats_lines) + "\n")


@pytest.fixture()
def v21(tmp_path) -> Path:
    write_v21(tmp_path / "v21")
    return tmp_path / "v21"


def test_v21_reads_like_v3(v21):
    ds = LeRobotDataset(v21, chunk_size=4)
    assert len(ds) == 15 and ds.version == "v2.1"
    for i, (e, k) in enumerate([(0, f) for f in range(6)] + [(1, f) for f in range(9)]):
        x = ds[i]
        assert (x["episode_index"], x["frame_index"], x["index"]) == (e, k, i)
        assert x["task"] == ("stack the cups" if e == 0 else "wipe the table")
        assert x["state"].tolist() == [k + 100.0 * e, -k, e]
        for cam, c in (("observation.images.top", 0), ("observation.images.hand", 1)):
            img = x["images"][cam]
            assert img.shape == (3, 32, 48)
            want = torch.from_numpy(_frame(e, k, c)).permute(2, 0, 1).int()
            err = (img.int() - want).abs()[:, [8, 8, 24], [12, 36, 24]].max()  # quadrant centres
            assert err <= (0 if c == 1 else 6), cam  # PNG is lossless, H.264 is not
    end = ds[5]
    assert end["action_is_pad"].tolist() == [False, True, True, True]
    stats = load_stats(v21)  # aggregated from episodes_stats.jsonl
    all_state = ds.column("observation.state")
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], all_state.std(0), rtol=1e-5)


def test_compute_stats_adds_exact_quantiles(v21):
    from shallowpi.commands import compute_stats

    assert compute_stats.run(Namespace(dataset=str(v21), features=None, overwrite=False)) == 0
    stats = load_stats(v21)
    action = LeRobotDataset(v21, load_images=False).column("action")
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(action, 0.01, axis=0))
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(action, 0.99, axis=0))
    assert "q50" in stats["observation.state"]


# ------------------------------------------------------------------------------------------- errors
@pytest.fixture()
def ref_copy(tmp_path) -> Path:
    dst = tmp_path / "ref"
    shutil.copytree(REF, dst)
    return dst


def test_missing_files_are_named(ref_copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="info.json"):
        LeRobotDataset(tmp_path / "nowhere")
    video = ref_copy / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    video.unlink()
    with pytest.raises(FileNotFoundError, match="file-000.mp4"):
        LeRobotDataset(ref_copy)
    (ref_copy / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="data/chunk-000/file-000.parquet"):
        LeRobotDataset(ref_copy)


def test_corrupt_parquet_is_named(ref_copy):
    path = ref_copy / "data/chunk-000/file-000.parquet"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DatasetFormatError, match="corrupt parquet file .*file-000.parquet"):
        LeRobotDataset(ref_copy)


def test_corrupt_video_is_named(ref_copy):
    path = ref_copy / "videos/observation.images.front/chunk-000/file-000.mp4"
    path.write_bytes(b"\x00" * 64 + path.read_bytes()[64:200])
    ds = LeRobotDataset(ref_copy)
    with pytest.raises(VideoDecodeError, match="file-000.mp4"):
        ds[10]


def test_unknown_camera_is_named():
    with pytest.raises(ValueError, match="unknown camera 'observation.images.top'"):
        LeRobotDataset(REF, cameras=["observation.images.top"])
    ds = LeRobotDataset(REF, cameras=["observation.images.front"])
    assert list(ds[0]["images"]) == ["observation.images.front"]
