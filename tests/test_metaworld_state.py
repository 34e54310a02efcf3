"""Meta-World state layouts: what the policy's state vector holds, and that eval picks the right one."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco
pytest.importorskip("metaworld")

from shallowpi.sim import metaworld_env as mw  # noqa: E402


def test_hand_goal_state_is_hand_then_goal_position():
    env = mw.MetaWorldEnv("push-v3", cameras=[], state_layout="hand_goal")
    try:
        goals = []
        for episode in (0, 1):
            obs = env.reset(episode)
            state = env.state(obs)  # [7]
            assert state.shape == (7,) and state.dtype == np.float32
            np.testing.assert_allclose(state[:4], obs[:4], rtol=0, atol=1e-6)
            # The goal the env scores success against, not a copy of some other obs entry.
            np.testing.assert_allclose(state[4:], env.env._target_pos, rtol=0, atol=1e-6)
            goals.append(state[4:])
        assert not np.allclose(goals[0], goals[1]), "configurations 0 and 1 should have different goals"
    finally:
        env.close()


@pytest.mark.parametrize("task", ["push-v3", "drawer-close-v3"])
def test_hand_task_goal_gives_the_goal_only_where_it_does_not_locate_the_object(task):
    env = mw.MetaWorldEnv(task, cameras=[], state_layout="hand_task_goal")
    try:
        obs = env.reset(0)
        state = env.state(obs)  # [8]
        assert state.shape == (8,) and state.dtype == np.float32
        np.testing.assert_allclose(state[:4], obs[:4], rtol=0, atol=1e-6)
        if task in mw.GOAL_FREE_TASKS:  # push: the goal is sampled apart from the puck
            np.testing.assert_allclose(state[4:7], env.env._target_pos, rtol=0, atol=1e-6)
            assert state[7] == 1.0
        else:  # drawer-close: the goal sits at a fixed offset from the drawer, so it would locate it
            assert not np.allclose(env.env._target_pos, 0)
            np.testing.assert_array_equal(state[4:], np.zeros(4, np.float32))
    finally:
        env.close()


def test_goal_free_tasks_are_tasks():
    assert set(mw.MT50) >= mw.GOAL_FREE_TASKS
    assert {"reach-v3", "push-v3", "pick-place-v3"} <= mw.GOAL_FREE_TASKS
    assert not {"door-open-v3", "drawer-open-v3", "button-press-topdown-v3"} & mw.GOAL_FREE_TASKS


def test_hand_state_is_lerobot_agent_pos():
    env = mw.MetaWorldEnv("reach-v3", cameras=[], state_layout="hand")
    try:
        obs = env.reset(0)
        np.testing.assert_array_equal(env.state(obs), obs[:4].astype(np.float32))
    finally:
        env.close()


def test_layout_from_policy_state_dim():
    assert mw.state_layout_for_dim(4) == "hand"
    assert mw.state_layout_for_dim(7) == "hand_goal"
    assert mw.state_layout_for_dim(8) == "hand_task_goal"
    with pytest.raises(ValueError, match="no Meta-World state layout has 5 dims"):
        mw.state_layout_for_dim(5)
    with pytest.raises(ValueError, match="unknown Meta-World state layout 'goal'"):
        mw.MetaWorldEnv("reach-v3", cameras=[], state_layout="goal")


class _RecordingPolicy:
    """A ChunkPolicy that records what it was shown and holds still."""

    cameras = ["corner4"]
    state_layout = "hand_goal"

    def __init__(self) -> None:
        self.seen: list[tuple[dict, np.ndarray]] = []

    def __call__(self, images, state, task, seed):
        self.seen.append(({c: v.copy() for c, v in images.items()}, state.copy()))
        return np.zeros((5, 4), dtype=np.float32)


@pytest.mark.parametrize("blank", [False, True])
def test_eval_feeds_the_policy_its_layout_and_optionally_blank_images(blank):
    from shallowpi.sim.evaluate import EvalConfig, run_episode

    policy = _RecordingPolicy()
    env = mw.MetaWorldEnv("reach-v3", image_size=32, cameras=policy.cameras, state_layout=policy.state_layout)
    try:
        cfg = EvalConfig(policy="unused", tasks=["reach-v3"], max_steps=6, blank_images=blank)
        result = run_episode(env, policy, cfg, episode=0)
    finally:
        env.close()
    assert result.policy_calls == 2 and len(policy.seen) == 2
    for images, state in policy.seen:
        assert state.shape == (7,)
        assert (images["corner4"].max() == 0) == blank  # a real render is never all black
