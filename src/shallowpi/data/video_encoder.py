"""MP4 encoding with PyAV, the one encoder of datasets (`data/writer.py`) and evaluation videos (`sim`).

`VideoEncoder` grows one file frame by frame (a dataset camera concatenates its episodes); `write_mp4` writes
a list of frames as a file of its own, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from shallowpi.atomic import write_atomic

ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}


@dataclass
class VideoSpec:
    codec: str = "h264"  # "h264" (libx264) or "av1" (libsvtav1)
    crf: int = 23
    # Keyframe every `gop` frames, no B-frames: a random read decodes at most `gop` frames (datasets).
    # None: the encoder's defaults, for videos that are only played (evaluation).
    gop: int | None = 2
    pix_fmt: str = "yuv420p"


PLAYBACK = VideoSpec(gop=None)


def _options(spec: VideoSpec) -> dict[str, str]:
    options = {"crf": str(spec.crf)}
    if spec.gop is not None:
        options["g"] = str(spec.gop)
        if spec.codec == "h264":
            options["bf"] = "0"
    if spec.codec == "av1":
        options["preset"] = "12"
    return options


class VideoEncoder:
    """One growing mp4; frame n is shown at n / fps seconds. Width and height must be even (yuv420p)."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int, spec: VideoSpec | None = None):
        spec = spec or VideoSpec()
        self.path, self.n = Path(path), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), "w", format="mp4")
        self.stream = self.container.add_stream(ENCODERS[spec.codec], rate=fps, options=_options(spec))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, spec.pix_fmt
        self.stream.codec_context.time_base = Fraction(1, fps)

    def write(self, frames) -> None:  # frames: uint8 [T, H, W, 3] (an array or a list of [H, W, 3])
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.n
            self.n += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6 if self.path.exists() else 0.0

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: int, spec: VideoSpec = PLAYBACK) -> Path:
    """uint8 [H, W, 3] frames -> one MP4 (a temp file, then renamed); odd sizes lose their last row/column."""
    h, w = frames[0].shape[:2]
    h, w = h - h % 2, w - w % 2

    def write(tmp: str) -> None:
        encoder = VideoEncoder(tmp, w, h, fps, spec)
        try:
            encoder.write(rgb[:h, :w] for rgb in frames)
        finally:
            encoder.close()

    return write_atomic(path, write, suffix=".mp4")
