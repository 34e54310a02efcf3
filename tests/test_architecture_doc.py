"""docs/architecture.md's data-flow picture names real calls: every `shallowpi.module:Qualified.name` in it
resolves, so a rename or removal that leaves the picture stale fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
CALL = re.compile(r"\b(shallowpi(?:\.\w+)+):(\w+(?:\.\w+)*)")


def test_every_call_in_the_data_flow_picture_exists():
    picture = DOC.read_text().split("# The data flow in one picture", 1)[1]
    calls = CALL.findall(picture)
    assert len(calls) >= 15, "the picture lost its calls"
    missing = []
    for module, qualname in calls:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"{module}:{qualname}")
                break
        else:
            if not callable(obj):
                missing.append(f"{module}:{qualname} (not callable)")
    assert not missing, missing
