"""Atomic file writes: a temp file in the same folder, then rename, so readers never see half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """`write(tmp_path)` fills a temp file beside `path`, which then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and datasets are read like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path: str | Path, obj, indent: int | None = 4) -> Path:  # LeRobot writes indent 4
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def save_figure_atomic(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure (then close it); the suffix tells matplotlib the format."""
    import matplotlib.pyplot as plt

    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi), suffix=Path(path).suffix)
    finally:
        plt.close(fig)
