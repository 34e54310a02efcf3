"""Read a LeRobotDataset (layouts v3.0 and v2.1) from disk, without the lerobot package.

One sample (dataset position i, 0 <= i < len(ds)):

    {"images": {camera_key: uint8 [3, H, W]},      # RGB, channels first
     "state": float32 [S],                          # observation.state
     "actions": float32 [chunk_size, A],            # action[i : i + chunk_size] within the episode
     "action_is_pad": bool [chunk_size],            # True past the episode's last frame
     "task": str, "episode_index": int, "frame_index": int, "index": int, "timestamp": float}

Past the end of an episode the chunk repeats the episode's last action and marks it padded, as LeRobot's
`delta_timestamps` query does. Low-dimensional columns are read into memory once (a few MB even for
273k-frame datasets); video frames and PNG images are decoded on access, with decoders opened lazily in each
process so the dataset is safe to use with DataLoader workers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from shallowpi.data.stats import Stats, load_stats
from shallowpi.data.video import VideoDecoder, decode_png
from shallowpi.errors import MissingFileError, UserError

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
CAMERA_DTYPES = ("video", "image")


class DatasetFormatError(UserError):
    """The files on disk do not form a readable LeRobotDataset (corrupt or inconsistent)."""


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise MissingFileError(f"missing parquet file: {path}")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise DatasetFormatError(f"corrupt parquet file {path}: {e}") from e


def _column_array(table: pa.Table, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars -> [N], fixed/variable lists -> [N, D]."""
    col = table.column(name).combine_chunks()
    if (
        pa.types.is_fixed_size_list(col.type)
        or pa.types.is_list(col.type)
        or pa.types.is_large_list(col.type)
    ):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


class _ParquetImages:
    """PNG images stored in parquet columns: reads one row group at a time, cached per process."""

    def __init__(self, files: list[Path]):
        self.files = files
        self._cache: tuple[int, int, pa.Table] | None = None  # (file id, row group, table)
        self._offsets: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {"files": self.files}

    def __setstate__(self, state):
        self.__init__(state["files"])

    def get(self, file_id: int, row: int, column: str) -> np.ndarray:
        path = self.files[file_id]
        if file_id not in self._offsets:
            meta = pq.ParquetFile(path).metadata
            self._offsets[file_id] = np.cumsum(
                [0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            )
        offsets = self._offsets[file_id]
        group = int(np.searchsorted(offsets, row, side="right") - 1)
        if self._cache is None or self._cache[:2] != (file_id, group):
            try:
                table = pq.ParquetFile(path).read_row_group(group)
            except (pa.ArrowException, OSError) as e:
                raise DatasetFormatError(f"corrupt parquet file {path}: {e}") from e
            self._cache = (file_id, group, table)
        cell = self._cache[2].column(column)[row - int(offsets[group])].as_py()
        data = cell["bytes"] if isinstance(cell, dict) else cell
        if not data:
            raise DatasetFormatError(f"image {column!r} row {row} of {path} holds no bytes")
        return decode_png(data)


class LeRobotDataset(Dataset):
    """Random access to a LeRobotDataset folder. Deterministic: the same index always gives the same sample."""

    def __init__(
        self,
        root: str | Path,
        *,
        chunk_size: int = 50,
        cameras: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        load_images: bool = True,
        state_key: str = "observation.state",
        action_key: str = "action",
        tolerance_s: float = 1e-4,
    ):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise MissingFileError(f"not a LeRobotDataset: {info_path} is missing")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"corrupt {info_path}: {e}") from e
        self.version = self.info.get("codebase_version")
        if self.version not in SUPPORTED_VERSIONS:
            raise DatasetFormatError(
                f"unsupported codebase_version {self.version!r} in {info_path}; "
                f"supported: {SUPPORTED_VERSIONS}"
            )
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        self.chunk_size = chunk_size
        self.state_key, self.action_key = state_key, action_key
        all_cams = [k for k, f in self.features.items() if f["dtype"] in CAMERA_DTYPES]
        if cameras is not None:
            unknown = [c for c in cameras if c not in all_cams]
            if unknown:
                raise UserError(f"unknown camera {unknown[0]!r}; this dataset has cameras {all_cams}")
        self.camera_keys = list(all_cams if cameras is None else cameras) if load_images else []
        if state_key not in self.features:
            raise DatasetFormatError(
                f"dataset has no {state_key!r} feature (features: {sorted(self.features)})"
            )
        self.has_actions = action_key in self.features

        if self.version == "v3.0":
            self._load_v3(episodes)
        else:
            self._load_v2(episodes)
        self._check_videos_exist()
        self.decoder = VideoDecoder(tolerance_s=tolerance_s)

    # ---------------------------------------------------------------------------------- loading meta + data
    def _low_dim_columns(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] not in CAMERA_DTYPES]

    def _load_v3(self, episodes: Sequence[int] | None) -> None:
        meta = self.root / "meta"
        tasks = read_parquet(meta / "tasks.parquet")
        names = tasks.column_names
        task_col = "task" if "task" in names else next(c for c in names if c != "task_index")
        self.tasks = dict(
            zip(tasks.column("task_index").to_pylist(), tasks.column(task_col).to_pylist(), strict=True)
        )
        ep_files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise MissingFileError(f"missing episode table: no {meta}/episodes/chunk-*/file-*.parquet")
        keep = [c for c in read_parquet(ep_files[0]).column_names if not c.startswith("stats/")]
        ep_rows = []
        for f in ep_files:
            ep_rows += read_parquet(f, columns=keep).to_pylist()
        ep_rows.sort(key=lambda r: r["episode_index"])
        if episodes is not None:
            wanted = set(episodes)
            ep_rows = [r for r in ep_rows if r["episode_index"] in wanted]
        self.episode_table = ep_rows
        # Data files holding the kept episodes, in order.
        data_files = sorted({(r["data/chunk_index"], r["data/file_index"]) for r in ep_rows})
        paths = [
            self.root / self.info["data_path"].format(chunk_index=c, file_index=f) for c, f in data_files
        ]
        self._video_loc = {}  # (episode, camera) -> (path, from_timestamp)
        for r in ep_rows:
            for cam in self.camera_keys:
                if self.features[cam]["dtype"] != "video":
                    continue
                path = self.root / self.info["video_path"].format(
                    video_key=cam,
                    chunk_index=r[f"videos/{cam}/chunk_index"],
                    file_index=r[f"videos/{cam}/file_index"],
                )
                self._video_loc[(r["episode_index"], cam)] = (
                    str(path),
                    float(r[f"videos/{cam}/from_timestamp"]),
                )
        self._read_data(paths, {r["episode_index"] for r in ep_rows})

    def _load_v2(self, episodes: Sequence[int] | None) -> None:
        meta = self.root / "meta"
        for name in ("tasks.jsonl", "episodes.jsonl"):
            if not (meta / name).is_file():
                raise MissingFileError(f"missing {meta / name}")
        self.tasks = {}
        for line in (meta / "tasks.jsonl").read_text().splitlines():
            if line.strip():
                t = json.loads(line)
                self.tasks[t["task_index"]] = t["task"]
        ep_rows = [
            json.loads(line) for line in (meta / "episodes.jsonl").read_text().splitlines() if line.strip()
        ]
        ep_rows.sort(key=lambda r: r["episode_index"])
        if episodes is not None:
            wanted = set(episodes)
            ep_rows = [r for r in ep_rows if r["episode_index"] in wanted]
        self.episode_table = ep_rows
        chunks_size = int(self.info.get("chunks_size", 1000))
        paths, self._video_loc = [], {}
        for r in ep_rows:
            ep = r["episode_index"]
            fmt = {"episode_chunk": ep // chunks_size, "episode_index": ep}
            paths.append(self.root / self.info["data_path"].format(**fmt))
            for cam in self.camera_keys:
                if self.features[cam]["dtype"] == "video":
                    path = self.root / self.info["video_path"].format(video_key=cam, **fmt)
                    self._video_loc[(ep, cam)] = (str(path), 0.0)  # one mp4 per episode, starting at t=0
        self._read_data(paths, {r["episode_index"] for r in ep_rows})

    def _read_data(self, paths: list[Path], episodes: set[int]) -> None:
        cols = self._low_dim_columns()
        arrays: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        file_ids, rows = [], []
        for fid, path in enumerate(paths):
            table = read_parquet(path)
            missing = [c for c in cols if c not in table.column_names]
            if missing:
                raise DatasetFormatError(f"{path} lacks columns {missing} listed in meta/info.json")
            ep = table.column("episode_index").to_numpy()
            keep = np.isin(ep, list(episodes))
            for c in cols:
                arrays[c].append(_column_array(table, c)[keep])
            file_ids.append(np.full(int(keep.sum()), fid))
            rows.append(np.nonzero(keep)[0])
        if not paths:
            raise DatasetFormatError(f"no episodes selected in {self.root}")
        data = {c: np.concatenate(v) for c, v in arrays.items()}
        order = np.lexsort((data["frame_index"], data["episode_index"]))  # sort by episode, then frame
        self._data = {c: v[order] for c, v in data.items()}
        self._image_file = np.concatenate(file_ids)[order]
        self._image_row = np.concatenate(rows)[order]
        self._images = _ParquetImages(paths)
        ep = self._data["episode_index"]
        # Episode bounds [start, end) in dataset positions; check them against the episode table.
        starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
        ends = np.r_[starts[1:], len(ep)]
        self._bounds = {int(ep[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
        for r in self.episode_table:
            s, e = self._bounds.get(r["episode_index"], (0, 0))
            if e - s != r["length"]:
                raise DatasetFormatError(
                    f"episode {r['episode_index']}: episode table says {r['length']} frames, data files hold {e - s}"
                )
        self._ep_end = np.array(
            [self._bounds[int(x)][1] for x in ep]
        )  # [N] end position of each row's episode
        self._state = self._data[self.state_key].astype(np.float32).reshape(len(ep), -1)
        if self.has_actions:
            self._action = self._data[self.action_key].astype(np.float32).reshape(len(ep), -1)

    def _check_videos_exist(self) -> None:
        for path, _ in set(self._video_loc.values()):
            if not Path(path).is_file():
                raise MissingFileError(f"missing video file: {path}")

    # ------------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._state)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_table)

    @property
    def state_dim(self) -> int:
        return self._state.shape[1]

    @property
    def action_dim(self) -> int:
        return self._action.shape[1] if self.has_actions else 0

    def episode_bounds(self, episode_index: int) -> tuple[int, int]:
        """[start, end) dataset positions of an episode."""
        return self._bounds[episode_index]

    def column(self, name: str) -> np.ndarray:
        """A low-dimensional feature for every frame, [N, D] (used for stats)."""
        if name not in self._data:
            raise UserError(f"no low-dimensional column {name!r}; have {sorted(self._data)}")
        return self._data[name].reshape(len(self), -1)

    def stats(self) -> Stats:
        return load_stats(self.root)

    def image(self, i: int, camera: str) -> torch.Tensor:
        """uint8 [3, H, W] frame of `camera` at dataset position i."""
        if camera not in self.features or self.features[camera]["dtype"] not in CAMERA_DTYPES:
            cams = [k for k, f in self.features.items() if f["dtype"] in CAMERA_DTYPES]
            raise UserError(f"unknown camera {camera!r}; this dataset has cameras {cams}")
        if self.features[camera]["dtype"] == "video":
            path, from_ts = self._video_loc[(int(self._data["episode_index"][i]), camera)]
            hwc = self.decoder.frame_at(path, from_ts + float(self._data["timestamp"][i]))
        else:
            hwc = self._images.get(int(self._image_file[i]), int(self._image_row[i]), camera)
        return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)  # [3, H, W]

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} frames")
        i = int(i) % n
        d = self._data
        sample = {
            "images": {cam: self.image(i, cam) for cam in self.camera_keys},
            "state": torch.from_numpy(self._state[i].copy()),  # [S]
            "task": self.tasks[int(d["task_index"][i])],
            "episode_index": int(d["episode_index"][i]),
            "frame_index": int(d["frame_index"][i]),
            "index": int(d["index"][i]),
            "timestamp": float(d["timestamp"][i]),
        }
        if self.has_actions:
            idx = i + np.arange(self.chunk_size)  # [chunk]
            end = self._ep_end[i]
            sample["action_is_pad"] = torch.from_numpy(idx >= end)  # [chunk]
            sample["actions"] = torch.from_numpy(self._action[np.minimum(idx, end - 1)])  # [chunk, A]
        return sample
