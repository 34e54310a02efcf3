"""scripts/rtc_study.py on a toy run: a tiny random Meta-World policy, delays 0 and 2, with and without RTC."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from test_eval_metaworld import save_random_metaworld_policy

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def test_rtc_study_writes_its_table(tmp_path: Path) -> None:
    import rtc_study

    policy = save_random_metaworld_policy(tmp_path / "tiny_mw")
    argv = [
        "--policy",
        f"tiny={policy}",
        "--delays",
        "0,2",
        "--tasks",
        "reach-v3",
        "--episodes-per-task",
        "1",
    ]
    argv += ["--max-steps", "12", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    assert rtc_study.main(argv) == 0
    rows = json.loads((tmp_path / "results" / "rtc.json").read_text())["rows"]
    assert [(r["inference_delay"], r["rtc"]) for r in rows] == [(0, False), (0, True), (2, False), (2, True)]
    assert all(r["actions_per_chunk"] == 7 and r["n_chunk_switches"] == 1 for r in rows)  # chunk 10 - 2 - 1
    # each RTC row carries its paired difference against the plain run at the same delay
    for plain, rtc in zip(rows[::2], rows[1::2], strict=True):
        diff = rtc["rtc_minus_plain"]
        assert "rtc_minus_plain" not in plain and diff["ci95"] == 0.0  # one episode: no spread
        assert diff["mean"] == 100.0 * (int(rtc["pc_success"] == 100.0) - int(plain["pc_success"] == 100.0))
    table = (tmp_path / "results" / "rtc.md").read_text()
    assert table.count("| tiny |") == 4 and "--delays 0,2" in table
    # a second run reuses the finished evals
    before = (tmp_path / "work" / "tiny" / "d2_rtc" / "eval_info.json").stat().st_mtime_ns
    assert rtc_study.main(argv) == 0
    assert (tmp_path / "work" / "tiny" / "d2_rtc" / "eval_info.json").stat().st_mtime_ns == before
