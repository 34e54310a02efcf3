"""Video frames by timestamp with PyAV, plus PNG bytes decoding (images stored inside parquet).

LeRobot concatenates many episodes in one mp4 (v3.0) or writes one mp4 per episode (v2.1); either way a frame
is addressed by its presentation time in seconds. `VideoDecoder` keeps a few containers open per process (an
LRU cache) and remembers where it stopped, so reading consecutive frames of one file does not seek again.
It never uses open containers across a fork/pickle: DataLoader workers each open their own (decoders are
not shareable between processes).

Fork safety: FFmpeg objects made in a parent must be neither used nor freed in a forked child (freeing runs
FFmpeg's thread-pool teardown on locks copied mid-state and can hang the DataLoader worker forever). So
decoding and RGB conversion run single-threaded, and a forked child keeps the parent's handles referenced
(never freed: workers leave through os._exit) and opens its own.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from shallowpi.errors import UserError

# PyAV >= 17 converts frames with swscale slice threads by default (`threads=0`, auto); older versions have
# neither the threads nor the option.
_TO_RGB = (
    {"format": "rgb24", "threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {"format": "rgb24"}
)
_INHERITED: list = []  # FFmpeg handles a forked child got from its parent: kept alive, never freed there


class VideoDecodeError(UserError, RuntimeError):
    """A video file is missing, corrupt, or has no frame at the requested time."""


@dataclass
class _OpenVideo:
    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    time_base: Fraction
    frame_dur_s: float  # 1/fps, used to decide between "continue decoding" and "seek"
    frames: object | None = None  # live decode iterator after the last read
    last_time: float = -1.0  # presentation time (s) of the last frame pulled from `frames`
    last_rgb: np.ndarray | None = None


class VideoDecoder:
    """Decode RGB frames (uint8 HWC) at given timestamps; one instance per process is enough."""

    def __init__(self, max_open: int = 16, tolerance_s: float = 1e-4):
        self.max_open = max_open
        # LeRobot's default tolerance: the decoded frame must sit within 1e-4 s of the asked time.
        self.tolerance_s = tolerance_s
        self._open: OrderedDict[str, _OpenVideo] = OrderedDict()
        self._pid = os.getpid()

    # -- pickling / forking: never carry open containers to another process --------------------------
    def __getstate__(self):
        return {"max_open": self.max_open, "tolerance_s": self.tolerance_s}

    def __setstate__(self, state):
        self.__init__(**state)

    def close(self) -> None:
        for v in self._open.values():
            v.container.close()
        self._open.clear()

    def _get(self, path: str) -> _OpenVideo:
        if os.getpid() != self._pid:  # forked after opening: set the parent's handles aside, open our own
            _INHERITED.append(self._open)
            self._open = OrderedDict()
            self._pid = os.getpid()
        v = self._open.get(path)
        if v is not None:
            self._open.move_to_end(path)
            return v
        if not Path(path).is_file():
            raise VideoDecodeError(f"video file not found: {path}")
        try:
            container = av.open(path)
            stream = container.streams.video[0]
        except (av.FFmpegError, IndexError) as e:
            raise VideoDecodeError(f"cannot open video {path}: {e}") from e
        # One decoding thread: frames are small, and FFmpeg worker threads alive in a process that a
        # DataLoader then forks can deadlock the forked workers.
        stream.codec_context.thread_count = 1
        rate = stream.average_rate or stream.guessed_rate or 30
        v = _OpenVideo(container, stream, stream.time_base, 1.0 / float(rate))
        self._open[path] = v
        if len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            old.container.close()
        return v

    def frame_at(self, path: str | Path, timestamp: float) -> np.ndarray:
        """The frame of `path` shown at `timestamp` seconds, as uint8 [H, W, 3] RGB."""
        path = str(path)
        v = self._get(path)
        tol = self.tolerance_s
        # Continue the current decode when the wanted frame is just ahead; otherwise seek to the keyframe before.
        ahead = v.frames is not None and v.last_time - tol < timestamp <= v.last_time + 4 * v.frame_dur_s
        if v.frames is not None and abs(v.last_time - timestamp) <= tol and v.last_rgb is not None:
            return v.last_rgb
        if not ahead:
            try:
                v.container.seek(
                    int(timestamp / v.time_base), stream=v.stream, backward=True, any_frame=False
                )
            except av.FFmpegError as e:
                raise VideoDecodeError(f"cannot seek to {timestamp:.4f}s in {path}: {e}") from e
            v.frames = v.container.decode(v.stream)
            v.last_time, v.last_rgb = -1.0, None
        best: tuple[float, np.ndarray] | None = None
        try:
            for frame in v.frames:
                t = float(frame.pts * v.time_base)
                v.last_time, v.last_rgb = t, None
                if t < timestamp - tol:
                    continue  # before the target: skip without converting to RGB
                v.last_rgb = frame.to_ndarray(**_TO_RGB)
                best = (t, v.last_rgb)
                break
        except av.FFmpegError as e:
            v.frames = None
            raise VideoDecodeError(f"corrupt video {path} near {timestamp:.4f}s: {e}") from e
        if best is None or abs(best[0] - timestamp) > tol:
            v.frames = None
            found = "no frame" if best is None else f"nearest frame at {best[0]:.4f}s"
            raise VideoDecodeError(
                f"no frame at {timestamp:.4f}s (tolerance {tol}s) in {path}: {found}; "
                "the episode table and the video disagree"
            )
        return best[1]


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, 3] RGB, through FFmpeg's PNG decoder (no Pillow dependency)."""
    try:
        ctx = av.CodecContext.create("png", "r")
        frames = ctx.decode(av.Packet(data))
    except av.FFmpegError as e:
        raise VideoDecodeError(f"corrupt PNG image ({len(data)} bytes): {e}") from e
    if not frames:
        raise VideoDecodeError(f"corrupt PNG image ({len(data)} bytes): nothing decoded")
    return frames[0].to_ndarray(format="rgb24")


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] RGB -> PNG bytes (lossless)."""
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    ctx.time_base = Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts = 0
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)
