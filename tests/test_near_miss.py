"""Closest approach of failed reach episodes from their maximum reward: the inversion of Meta-World's reach
reward, checked against the simulator's own distances, and the command's output and bad-input errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco
pytest.importorskip("metaworld")

from shallowpi.sim import metaworld_env as mw  # noqa: E402
from shallowpi.study import near_miss  # noqa: E402


def _stop_short(episode: int, seed: int, steps: int) -> tuple[float, float]:
    """Drive the hand toward the target for `steps` steps; (best raw env reward, true closest distance m)."""
    env = mw.MetaWorldEnv("reach-v3", seed=seed, cameras=[])
    try:
        env.reset(episode)
        best_reward, closest = 0.0, np.inf
        for _ in range(steps):
            direction = env.env._target_pos - env.env.tcp_center  # [3]
            action = np.append(np.clip(direction * 10, -1, 1), 0.0).astype(np.float32)  # [4]
            _, reward, _, _, _ = env.env.step(action)
            best_reward = max(best_reward, float(reward))
            closest = min(closest, float(np.linalg.norm(env.env.tcp_center - env.env._target_pos)))
        return best_reward, closest
    finally:
        env.close()


def _info(seed: int, successes: list[bool], max_rewards: list[float]) -> dict:
    return {
        "per_task": [
            {"task_group": "push-v3", "metrics": {"successes": [False], "max_rewards": [0.0]}},
            {"task_group": "reach-v3", "metrics": {"successes": successes, "max_rewards": max_rewards}},
        ],
        "settings": {"seed": seed},
    }


def test_failed_episodes_get_the_distance_the_simulator_measured():
    seed = 1000
    # Episodes 1 and 2 stopped short after a few steps (each with its own start-to-target margin);
    # episode 0 succeeded and is not reported.
    runs = {1: _stop_short(1, seed, 3), 2: _stop_short(2, seed, 6)}
    for _, closest in runs.values():
        assert closest > near_miss.RADIUS_M, "the scripted approach should stop outside the radius"
    info = _info(seed, [True, False, False], [10.0, runs[1][0], runs[2][0]])
    misses = near_miss.reach_misses_mm(info)
    expected = [1000 * runs[e][1] for e in (1, 2)]
    np.testing.assert_allclose(misses, expected, rtol=1e-4)


def test_inside_the_radius_is_the_radius():
    assert near_miss.closest_m(10.0, 0.3) == pytest.approx(near_miss.RADIUS_M)


def test_no_reach_task_reports_nothing():
    info = {"per_task": [{"task_group": "push-v3", "metrics": {}}], "settings": {"seed": 1000}}
    assert near_miss.reach_misses_mm(info) == []


def test_command_prints_each_policy(tmp_path, capsys):
    good = tmp_path / "student.json"
    good.write_text(json.dumps(_info(1000, [False, True], [9.9, 10.0])))
    clean = tmp_path / "teacher.json"
    clean.write_text(json.dumps(_info(1000, [True, True], [10.0, 10.0])))
    assert near_miss.main([str(good), str(clean)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("student: 1 failed reach episodes; closest approach median 5")
    assert out[1] == "teacher: no failed reach episode"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no file"),
        ("not json", "is not valid JSON"),
        (b"\xff\xfe{", "is not valid JSON"),
        (json.dumps({"overall": {}}), "not an eval_info.json"),
        (json.dumps(_info(1000, [False, False], [9.0])), "2 successes but 1 max_rewards"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "eval.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert near_miss.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
