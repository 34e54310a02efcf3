"""NaN never reaches a robot: non-finite weights / statistics are refused at load, non-finite actions are
never served (error reply + server log), and evaluation stops the episode and reports it."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
import websockets
from safetensors.torch import load_file, save_file
from websockets.sync.client import connect

from shallowpi.errors import UserError
from shallowpi.infer.actions import UnsafeActionError
from shallowpi.model import CheckpointError, load_model
from shallowpi.pretrained import load_processor
from shallowpi.serve import msgpack_numpy
from shallowpi.serve.policy import PiPolicy
from shallowpi.serve.server import ServerThread
from shallowpi.testing import DummyPolicy, save_tiny_policy

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")
TIMEOUT = 60
BAD_KEY = "model.action_out_proj.weight"


@pytest.fixture
def tiny_dir(tmp_path):
    return save_tiny_policy(tmp_path / "tiny", state_dim=8, action_dim=7)


def obs(prompt: str = "open the drawer") -> dict:
    rng = np.random.default_rng(0)
    return {
        "observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": prompt,
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_refused_naming_the_tensor(tiny_dir, value):
    weights = tiny_dir / "model.safetensors"
    sd = load_file(str(weights))
    sd[BAD_KEY][0, 0] = value
    save_file(sd, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{BAD_KEY}.*non-finite"):
        load_model(tiny_dir)


@pytest.mark.parametrize("stat", ["observation.state.q01", "action.q99"])
def test_non_finite_statistics_refused_naming_the_stat(tiny_dir, stat):
    for name in (
        "policy_preprocessor_step_2_normalizer_processor.safetensors",
        "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
    ):
        f = tiny_dir / name
        stats = load_file(str(f))
        if stat in stats:
            stats[stat][3] = float("nan")
            save_file(stats, str(f))
    with pytest.raises(UserError, match=rf"{stat}.*non-finite"):
        load_processor(tiny_dir)


def _nan_policy(path) -> PiPolicy:
    """A policy whose model went bad after loading (a numerical blow-up, a corrupted GPU buffer)."""
    policy = PiPolicy.from_pretrained(path, device="cpu", num_steps=2)
    with torch.no_grad():
        policy.model.action_out_proj.weight[0, 0] = float("nan")
    return policy


def test_policy_never_returns_non_finite_actions(tiny_dir):
    with pytest.raises(UnsafeActionError, match="non-finite"):
        _nan_policy(tiny_dir).infer(obs())


class NanDummy(DummyPolicy):
    def infer(self, obs):  # a policy without its own check: the server's check is the last line
        out = super().infer(obs)
        out["actions"][2, 1] = np.inf
        return out


@pytest.mark.parametrize("which", ["model", "server check"])
def test_server_answers_an_error_and_logs_never_the_actions(tiny_dir, which, caplog):
    policy = _nan_policy(tiny_dir) if which == "model" else NanDummy()
    caplog.set_level(logging.ERROR, logger="shallowpi.serve.server")
    with (
        ServerThread(policy, port=0) as srv,
        connect(srv.url, compression=None, max_size=None, open_timeout=TIMEOUT) as ws,
    ):
        ws.recv(timeout=TIMEOUT)
        ws.send(msgpack_numpy.packb(obs()))
        reply = ws.recv(timeout=TIMEOUT)
        assert isinstance(reply, str), "non-finite actions were sent to the client"
        assert "UnsafeActionError" in reply and "non-finite" in reply
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd.code == 1011
    assert any("unsafe actions" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")
def test_eval_stops_the_episode_and_reports_it(tmp_path):
    from shallowpi.sim.evaluate import EvalConfig, PretrainedPolicy, evaluate
    from test_eval_metaworld import save_random_metaworld_policy

    path = save_random_metaworld_policy(tmp_path / "mw")

    def factory(cfg):
        policy = PretrainedPolicy(cfg.policy, num_steps=2)
        with torch.no_grad():
            policy.model.action_out_proj.weight[0, 0] = float("nan")
        return policy

    cfg = EvalConfig(policy=str(path), tasks=["reach-v3"], episodes_per_task=2, max_steps=10, workers=1)
    run = evaluate(cfg, tmp_path / "eval", progress=False, policy_factory=factory)
    assert [r.stopped is not None for r in run.results] == [True, True]
    assert all(r.steps == 0 and not r.success for r in run.results), "a NaN action reached the env"
    assert "non-finite" in run.results[0].stopped
    assert run.info["overall"]["n_stopped"] == 2 and run.info["per_group"]["reach-v3"]["n_stopped"] == 2
    assert run.info["per_task"][0]["metrics"]["stopped"][0].startswith("unsafe actions at step 0")
