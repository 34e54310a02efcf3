"""Paths as results record them: relative to the working directory, never an absolute path of the machine
that wrote them (results are committed and read elsewhere). What a path points to is unchanged: a relative
path means the same file to a process started in the same directory.

    portable_path("/home/me/shallowpi/outputs/l6")    # run from /home/me/shallowpi -> "outputs/l6"
    portable_path("/data/runs/l6")                     # run from /home/me/shallowpi -> "../../../data/runs/l6"
    portable_path("outputs/l6")                        # a relative path is kept as given
    portable_command("shallowpi eval --policy /home/me/shallowpi/outputs/l6")  # "shallowpi eval --policy outputs/l6"

train_config.json, eval_info.json, bench JSON and the study / demo reports record paths through these.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence


def portable_path(path: str | os.PathLike | None, start: str | os.PathLike | None = None) -> str | None:
    """`path` relative to `start` (default: the working directory) when it is absolute; as given otherwise."""
    if path is None:
        return None
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    return os.path.relpath(text, os.getcwd() if start is None else start)


def portable_argv(argv: Sequence[str]) -> list[str]:
    """A command's arguments with every absolute path (also in `--flag=/path`) made portable."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if eq and flag.startswith("-") and os.path.isabs(value):
            out.append(f"{flag}={portable_path(value)}")
        else:
            out.append(portable_path(arg) if os.path.isabs(arg) else arg)
    return out


def without_option(argv: Sequence[str], flag: str) -> list[str]:
    """`argv` less `flag` and its value (`--flag V` or `--flag=V`): e.g. a recorded command without where
    its output went, or without the stages one call ran."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == flag:
            skip = True
        elif not x.startswith(flag + "="):
            out.append(x)
    return out


def portable_command(command: str) -> str:
    """A shell command line (as `shlex.join` writes it) with its absolute paths made portable."""
    return shlex.join(portable_argv(shlex.split(command)))


__all__ = ["portable_argv", "portable_command", "portable_path"]
