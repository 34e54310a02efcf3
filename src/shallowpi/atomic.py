"""Atomic writes: a temp file or folder beside the target, then rename, so readers never see half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


def temp_dir_beside(out: str | Path, prefix: str | None = None, suffix: str | None = None) -> Path:
    """A new empty hidden folder in `out`'s parent (same file system, so a rename can publish it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix or f".{out.name}.", suffix=suffix, dir=out.parent))


def publish_dir(tmp: str | Path, out: str | Path) -> Path:
    """Rename the finished folder `tmp` to `out`, made readable by all (mkdtemp makes 0700). An earlier `out`
    is moved aside first and removed once the new one is in place; it is put back if the rename fails."""
    tmp, out = Path(tmp), Path(out)
    os.chmod(tmp, 0o755)
    if not out.exists():
        os.replace(tmp, out)
        return out
    old = temp_dir_beside(out, prefix=f".{out.name}.old-")
    os.replace(out, old / "x")
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / "x", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return out


@contextlib.contextmanager
def atomic_dir(out: str | Path, prefix: str | None = None) -> Iterator[Path]:
    """Yield an empty temp folder beside `out` to build it in: published as `out` (`publish_dir`) when the block
    finishes, removed when it raises (`out` is then untouched)."""
    tmp = temp_dir_beside(out, prefix)
    try:
        yield tmp
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
