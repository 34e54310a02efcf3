"""`shallowpi eval --inference-delay D [--rtc]` on a tiny random Meta-World policy: the chunk-boundary jump is
recorded in eval_info.json, and real-time chunking lowers it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from shallowpi.cli import main
from test_eval_metaworld import save_random_metaworld_policy

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    return save_random_metaworld_policy(tmp_path_factory.mktemp("policy") / "tiny_mw")


def _eval(policy_dir: Path, out: Path, *flags: str) -> dict:
    argv = ["eval", "--policy", str(policy_dir), "--tasks", "reach-v3", "--episodes-per-task", "1"]
    argv += ["--max-steps", "24", "--n-action-steps", "5", "--workers", "1", "--device", "cpu"]
    assert main([*argv, "--no-progress", "--out", str(out), *flags]) == 0
    return json.loads((out / "eval_info.json").read_text())


def test_delay_and_rtc_record_the_boundary_jump(policy_dir: Path, tmp_path: Path) -> None:
    plain = _eval(policy_dir, tmp_path / "plain", "--inference-delay", "2")
    rtc = _eval(policy_dir, tmp_path / "rtc", "--inference-delay", "2", "--rtc")
    for info in (plain, rtc):
        o = info["overall"]
        # 24 steps, 5 actions per chunk: switches at steps 5, 10, 15, 20; requests 2 steps earlier (3, 8, 13,
        # 18, 23: the last one's chunk never runs) and the first at step 0
        assert o["n_chunk_switches"] == 4 and o["policy_calls"] == 6
        assert len(info["per_task"][0]["metrics"]["chunk_jumps"][0]) == 4
        assert info["settings"]["inference_delay"] == 2
    assert rtc["settings"]["rtc"] and not plain["settings"]["rtc"]
    assert rtc["overall"]["avg_chunk_jump"] < 0.5 * plain["overall"]["avg_chunk_jump"]


def test_zero_delay_without_rtc_is_todays_rollout(policy_dir: Path, tmp_path: Path) -> None:
    """Without the flags the rollout runs as before: 5 actions per chunk, a request when they ran out."""
    a = _eval(policy_dir, tmp_path / "a")
    b = _eval(policy_dir, tmp_path / "b", "--inference-delay", "0")
    ma, mb = a["per_task"][0]["metrics"], b["per_task"][0]["metrics"]
    assert ma["sum_rewards"] == mb["sum_rewards"] and ma["chunk_jumps"] == mb["chunk_jumps"]
    assert a["overall"]["policy_calls"] == 5 and a["overall"]["n_chunk_switches"] == 4
