"""Write a LeRobotDataset v3.0 (video cameras, state, action, one task per episode) without lerobot.

Layout and schema follow what LeRobot 0.4.4 writes (see shared/reference/lerobot_dataset_v3_small):
meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-XXX/file-XXX.parquet (with per-episode
`stats/...` columns), data/chunk-XXX/file-XXX.parquet and videos/<camera>/chunk-XXX/file-XXX.mp4 with the
episodes of a camera concatenated. Everything is written into a hidden temp folder next to `root` and renamed
into place by `finalize()`, so an interrupted run leaves no half-written dataset behind.

Video: H.264 (libx264, yuv420p, GOP 2, no B-frames) by default: it encodes several times faster than AV1
(LeRobot's default) and GOP 2 keeps random access cheap. `codec="av1"` uses libsvtav1 like LeRobot.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shallowpi.atomic import publish_dir, temp_dir_beside, write_json_atomic
from shallowpi.data.stats import aggregate_stats, image_stats, stats_to_json, vector_stats
from shallowpi.data.video_encoder import ENCODERS, VideoEncoder, VideoSpec
from shallowpi.errors import OutputExistsError, UserError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _chunk_file(n: int) -> tuple[int, int]:
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def _vector_feature(names: list[str]) -> dict:
    return {"dtype": "float32", "shape": [len(names)], "names": list(names)}


def _list_array(x: np.ndarray) -> pa.Array:
    """[N, D] float32 -> parquet fixed_size_list<float>[D] like LeRobot's data files."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _hf_metadata(features: dict) -> bytes:
    """The `huggingface` schema metadata LeRobot's data parquet files carry (datasets' Features JSON)."""
    out = {}
    for k, f in features.items():
        if f["dtype"] in ("video", "image"):
            continue
        if f["shape"] == [1]:
            out[k] = {"dtype": f["dtype"], "_type": "Value"}
        else:
            out[k] = {
                "feature": {"dtype": f["dtype"], "_type": "Value"},
                "length": f["shape"][0],
                "_type": "List",
            }
    return json.dumps({"info": {"features": out}}).encode()


class LeRobotDatasetWriter:
    """Add whole episodes, then `finalize()`. Use as a context manager to clean up on errors."""

    def __init__(
        self,
        root: str | Path,
        *,
        fps: int,
        cameras: dict[str, tuple[int, int]],  # camera key -> (height, width)
        state_names: list[str],
        action_names: list[str],
        robot_type: str = "unknown",
        video: VideoSpec | None = None,
        overwrite: bool = False,
        data_files_size_in_mb: int = 100,
        video_files_size_in_mb: int = 200,
    ):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise OutputExistsError(
                f"output folder already exists: {self.root} (pass overwrite to replace it)"
            )
        if (video or VideoSpec()).codec not in ENCODERS:
            raise UserError(
                f"unknown video codec {(video or VideoSpec()).codec!r}; choose from {sorted(ENCODERS)}"
            )
        self.tmp = temp_dir_beside(self.root, suffix=".tmp")  # published by finalize()
        self.fps, self.cameras, self.video = int(fps), dict(cameras), video or VideoSpec()
        self.robot_type = robot_type
        self.data_mb, self.video_mb = data_files_size_in_mb, video_files_size_in_mb
        self.features: dict[str, dict] = {}
        for cam, (h, w) in self.cameras.items():
            self.features[cam] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": self.video.codec,
                    "video.pix_fmt": self.video.pix_fmt,
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        self.features["observation.state"] = _vector_feature(state_names)
        self.features["action"] = _vector_feature(action_names)
        self.features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for k in _INDEX_COLUMNS[1:]:
            self.features[k] = {"dtype": "int64", "shape": [1], "names": None}
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.total_frames = 0
        self._data_file = 0
        self._data_rows: list[dict[str, np.ndarray]] = []
        self._video_file = dict.fromkeys(self.cameras, 0)
        self._videos: dict[str, VideoEncoder] = {}
        self._finished = False

    # --------------------------------------------------------------------------------------- episodes
    def add_episode(
        self, images: dict[str, np.ndarray], state: np.ndarray, actions: np.ndarray, task: str
    ) -> int:
        """Append one episode: images {camera: uint8 [T, H, W, 3]}, state [T, S], actions [T, A]. Returns its index."""
        T = len(state)
        if T == 0:
            raise UserError("empty episode")
        if set(images) != set(self.cameras):
            raise UserError(
                f"episode cameras {sorted(images)} differ from the dataset's {sorted(self.cameras)}"
            )
        for cam, frames in images.items():
            h, w = self.cameras[cam]
            if frames.shape != (T, h, w, 3) or frames.dtype != np.uint8:
                raise UserError(
                    f"camera {cam!r}: expected uint8 {(T, h, w, 3)}, got {frames.dtype} {frames.shape}"
                )
        state = np.asarray(state, np.float32).reshape(T, -1)
        actions = np.asarray(actions, np.float32).reshape(T, -1)
        if state.shape[1] != self.features["observation.state"]["shape"][0]:
            raise UserError(f"state dim {state.shape[1]} != {self.features['observation.state']['shape'][0]}")
        if actions.shape[1] != self.features["action"]["shape"][0]:
            raise UserError(f"action dim {actions.shape[1]} != {self.features['action']['shape'][0]}")
        ep = len(self.episodes)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        cols = {
            "observation.state": state,
            "action": actions,
            "timestamp": (np.arange(T) / self.fps).astype(np.float32),
            "frame_index": np.arange(T, dtype=np.int64),
            "episode_index": np.full(T, ep, dtype=np.int64),
            "index": np.arange(self.total_frames, self.total_frames + T, dtype=np.int64),
            "task_index": np.full(T, task_index, dtype=np.int64),
        }
        row: dict = {"episode_index": ep, "tasks": [task], "length": T}
        chunk, file = _chunk_file(self._data_file)
        row.update(
            {
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": self.total_frames,
                "dataset_to_index": self.total_frames + T,
            }
        )
        for cam, frames in images.items():
            video = self._open_video(cam)
            chunk, file = _chunk_file(self._video_file[cam])
            start = video.n
            video.write(frames)
            row.update(
                {
                    f"videos/{cam}/chunk_index": chunk,
                    f"videos/{cam}/file_index": file,
                    f"videos/{cam}/from_timestamp": start / self.fps,
                    f"videos/{cam}/to_timestamp": video.n / self.fps,
                }
            )
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        ep_stats = {k: vector_stats(v) for k, v in cols.items()}
        # Image stats from at most ~20 frames per episode: enough for per-channel mean/std, cheap to compute.
        step = max(1, T // 20)
        ep_stats.update({cam: image_stats(frames[::step]) for cam, frames in images.items()})
        for cam in images:
            ep_stats[cam]["count"] = np.array([T])
        row["_stats"] = ep_stats
        self.episodes.append(row)
        self._data_rows.append(cols)
        self.total_frames += T
        self._roll_files()
        return ep

    def _open_video(self, cam: str) -> VideoEncoder:
        if cam not in self._videos:
            chunk, file = _chunk_file(self._video_file[cam])
            path = self.tmp / VIDEO_PATH.format(video_key=cam, chunk_index=chunk, file_index=file)
            h, w = self.cameras[cam]
            self._videos[cam] = VideoEncoder(path, w, h, self.fps, self.video)
        return self._videos[cam]

    def _roll_files(self) -> None:
        """Start new data/video files once the current ones pass their size budget (LeRobot's file sizes)."""
        for cam, video in list(self._videos.items()):
            if video.size_mb() >= self.video_mb:
                video.close()
                del self._videos[cam]
                self._video_file[cam] += 1
        rows = sum(len(c["index"]) for c in self._data_rows)
        row_bytes = (
            4 * (self.features["observation.state"]["shape"][0] + self.features["action"]["shape"][0]) + 36
        )
        if rows * row_bytes / 1e6 >= self.data_mb:
            self._flush_data()

    def _flush_data(self) -> None:
        if not self._data_rows:
            return
        cols = {k: np.concatenate([c[k] for c in self._data_rows]) for k in self._data_rows[0]}
        arrays = [_list_array(cols["observation.state"]), _list_array(cols["action"])]
        arrays += [pa.array(cols[k]) for k in _INDEX_COLUMNS]
        names = ["observation.state", "action", *_INDEX_COLUMNS]
        table = pa.Table.from_arrays(arrays, names=names)
        table = table.replace_schema_metadata({"huggingface": _hf_metadata(self.features)})
        chunk, file = _chunk_file(self._data_file)
        path = self.tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        self._data_rows = []
        self._data_file += 1

    # ---------------------------------------------------------------------------------------- finish
    def _write_meta(self) -> None:
        meta = self.tmp / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        names = list(self.tasks)
        tasks = pa.Table.from_arrays(
            [pa.array([self.tasks[t] for t in names], pa.int64()), pa.array(names, pa.large_string())],
            names=["task_index", "__index_level_0__"],
        )
        # pandas metadata makes `pd.read_parquet` (LeRobot's reader) index the table by task string.
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [
                {
                    "name": None,
                    "field_name": None,
                    "pandas_type": "unicode",
                    "numpy_type": "str",
                    "metadata": {"encoding": "UTF-8"},
                }
            ],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": None,
                    "field_name": "__index_level_0__",
                    "pandas_type": "object",
                    "numpy_type": "str",
                    "metadata": None,
                },
            ],
            "attributes": {},
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.3",
        }
        pq.write_table(
            tasks.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), meta / "tasks.parquet"
        )

        rows = []
        for ep in self.episodes:
            r = {k: v for k, v in ep.items() if k != "_stats"}
            for feat, st in ep["_stats"].items():
                for name, val in st.items():
                    r[f"stats/{feat}/{name}"] = np.asarray(val).tolist()
            rows.append(r)
        path = self.tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)

        stats = aggregate_stats([ep["_stats"] for ep in self.episodes])
        # Low-dimensional features: exact stats over every frame (cheap), not the weighted per-episode mean.
        for feat in ("observation.state", "action", *_INDEX_COLUMNS):
            stats[feat] = vector_stats(
                np.concatenate(
                    [
                        np.asarray(ep_cols[feat]).reshape(len(ep_cols["index"]), -1)
                        for ep_cols in self._all_cols
                    ]
                )
            )
        write_json_atomic(meta / "stats.json", stats_to_json(stats))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self.episodes),
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": self.data_mb,
            "video_files_size_in_mb": self.video_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.cameras else None,
            "features": self.features,
        }
        write_json_atomic(meta / "info.json", info)

    def finalize(self) -> Path:
        """Close files, write meta/, and move the finished dataset to `root`."""
        if not self.episodes:
            self.abort()
            raise UserError(f"no episodes were added; nothing written to {self.root}")
        for video in self._videos.values():
            video.close()
        self._videos.clear()
        self._all_cols = list(self._data_rows_all())
        self._flush_data()
        self._write_meta()
        publish_dir(self.tmp, self.root)
        self._finished = True
        return self.root

    def _data_rows_all(self):
        # The low-dim columns of every episode, re-read from the written parquet files plus the unflushed rows.
        for path in sorted((self.tmp / "data").glob("chunk-*/file-*.parquet")):
            table = pq.read_table(path)
            yield {
                k: table.column(k).combine_chunks().flatten().to_numpy()
                if k in ("observation.state", "action")
                else table.column(k).to_numpy()
                for k in table.column_names
            }
        yield from self._data_rows

    def abort(self) -> None:
        for video in self._videos.values():
            with contextlib.suppress(Exception):  # best effort while cleaning up after another error
                video.container.close()
        self._videos.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._finished = True

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._finished:
            if exc_type is None:
                self.finalize()
            else:
                self.abort()
