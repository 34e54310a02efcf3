"""Where the shared reference vectors live: `shared/` beside the checkout (CI and developers) or inside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_reference() -> Path:
    for base in (REPO / "shared", REPO.parent / "shared"):
        if (base / "reference").is_dir():
            return base / "reference"
    raise FileNotFoundError(f"shared/reference not found beside or inside {REPO}: the parity tests need it")
