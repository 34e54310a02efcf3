"""Meta-World state layouts: what the policy's state vector holds, and that eval picks the right one."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("metaworld")
os.environ.setdefault("MUJOCO_GL", "egl")

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
    with pytest.raises(ValueError, match="no Meta-World state layout has 5 dims"):
        mw.state_layout_for_dim(5)
    with pytest.raises(ValueError, match="unknown Meta-World state layout 'goal'"):
        mw.MetaWorldEnv("reach-v3", cameras=[], state_layout="goal")
