"""The one exception type for user errors: bad input, a bad file, a mismatch between files.

`shallowpi.cli` catches `UserError` (and nothing else): one line on stderr, exit status 2. Any other
exception is a bug and keeps its traceback. `UserError` subclasses ValueError, so code (and tests) that
catch ValueError keep working; `MissingFileError` is also a FileNotFoundError and `OutputExistsError` a
FileExistsError for the same reason.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user gave (argument, file, observation) is wrong; the message names it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or lacks a file it must hold)."""


class OutputExistsError(UserError, FileExistsError):
    """An output path the user named exists and may not be replaced (the message names the flag that would)."""


__all__ = ["MissingFileError", "OutputExistsError", "UserError"]
