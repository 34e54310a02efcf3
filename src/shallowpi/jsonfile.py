"""Reading a JSON file the user gave: one error naming the file when it is missing or does not parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shallowpi.errors import MissingFileError, UserError


def read_json(path: Path, error: type[UserError] = UserError) -> Any:
    """The parsed contents of `path`; `MissingFileError` when it is not a file, `error` (one line) when it is
    not UTF-8 JSON."""
    if not path.is_file():
        raise MissingFileError(f"no file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON: {e}") from None
