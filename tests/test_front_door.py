"""The README's Python front door runs as written (sizes shrunk to seconds): load the bundled teacher, make an
L6 student, distil it on a dataset, predict from a raw observation, evaluate it in Meta-World and export
it to ONNX, all with names exported at the top of `shallowpi`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import shallowpi
from shallowpi.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- front-door example: tests/test_front_door.py runs it -->"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")


def readme_example() -> str:
    text = README.read_text()
    assert MARK in text, "the README's front-door example lost its marker"
    block = text.split(MARK, 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_every_exported_name_resolves():
    assert sorted(shallowpi.__all__) == shallowpi.__all__
    for name in shallowpi.__all__:
        assert getattr(shallowpi, name) is not None


def test_readme_front_door_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    code = readme_example()
    data = tmp_path / "data"
    assert (
        main(
            [
                "collect",
                "--env",
                "metaworld",
                "--tasks",
                "reach",
                "--demos-per-task",
                "1",
                "--seed",
                "0",
                "--image-size",
                "64",
                "--cameras",
                "corner4,gripperPOV",
                "--state",
                "hand_task_goal",
                "--max-steps",
                "60",
                "--workers",
                "1",
                "--no-progress",
                "--out",
                str(data),
            ]
        )
        == 0
    )
    shrink = {  # what the example writes -> seconds-sized runs; each must be present
        '"data/mt10"': f'"{data}"',
        '"src/shallowpi/assets/teacher_metaworld"': f'"{README.parent / "src/shallowpi/assets/teacher_metaworld"}"',
        "steps=4800": "steps=2, num_workers=0, progress=False",
        "batch_size=32": "batch_size=2",
        "save_every=4800": "save_every=2",
        "episodes_per_task=10": "episodes_per_task=1, max_steps=5, workers=1",
    }
    for old, new in shrink.items():
        assert old in code, f"the README example no longer says {old}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)  # the example writes under out/
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own example

    folder, chunk, run = scope["folder"], scope["chunk"], scope["run"]
    assert (folder / "config.json").is_file() and (folder / "policy_preprocessor.json").is_file()
    assert scope["student"].config.depth == 6 and scope["student"].config.layer_map == [0, 3, 7, 10, 14, 17]
    assert chunk.shape == (10, 4) and np.isfinite(chunk).all()
    assert 0.0 <= run.info["overall"]["pc_success"] <= 100.0
    assert (tmp_path / "out" / "l6_onnx" / "manifest.json").is_file()
