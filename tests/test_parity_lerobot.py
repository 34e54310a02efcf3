"""Numerical parity with LeRobot 0.4.4 (reference bundles in shared/reference), fp32, atol 1e-4."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from reference_bundle import load_bundle
from shallowpi.model import PiModel, load_model, load_state_dict

ATOL = 1e-4
BUNDLES = ["pi05_tiny", "pi0_tiny"]


@pytest.fixture(scope="module", params=BUNDLES)
def bundle(request, reference_dir):
    return load_bundle(reference_dir, request.param)


def _from_folder(bundle, tmp_path) -> PiModel:
    """LeRobot naming, through a pretrained folder (config.json + model.safetensors)."""
    (tmp_path / "config.json").write_text(json.dumps(bundle.config_json))
    save_file(bundle.weights, str(tmp_path / "model.safetensors"))
    return load_model(tmp_path)


def _from_openpi_names(bundle) -> PiModel:
    model = PiModel(bundle.config)
    load_state_dict(model, {k.removeprefix("model."): v for k, v in bundle.weights.items()})
    return model.eval()


@pytest.fixture(params=["lerobot_folder", "openpi_names"])
def model(request, bundle, tmp_path):
    return _from_folder(bundle, tmp_path) if request.param == "lerobot_folder" else _from_openpi_names(bundle)


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, valid: torch.Tensor | None = None):
    diff = (actual - expected).abs()
    if valid is not None:
        diff = diff * valid
    assert diff.max().item() <= ATOL, f"{what}: max abs diff {diff.max().item():.3g}"


def test_sampling_trajectory_and_kv_cache(bundle, model):
    io = bundle.io
    trace = model.sample_trace(bundle.observation(), noise=io["inputs.noise"], compact=False)
    _close(trace.actions, io["sample.actions_padded"], "sampled actions")
    steps = io["sample.traj.v_t"].shape[0]
    assert len(trace.v_t) == steps
    torch.testing.assert_close(torch.tensor(trace.t), io["sample.traj.t"][:, 0], rtol=0, atol=0)
    _close(torch.stack(trace.x_t), io["sample.traj.x_t"], "Euler x_t")
    _close(torch.stack(trace.v_t), io["sample.traj.v_t"], "Euler v_t")
    assert torch.equal(trace.prefix_valid, io["sample.prefix_pad_mask"])
    # padding rows of the cache are irrelevant (shared/reference/pi05_tiny/README.md §2)
    valid = trace.prefix_valid[:, None, :, None]
    assert len(trace.kv) == bundle.config.depth
    for i, (k, v) in enumerate(trace.kv):
        _close(k, io[f"sample.prefix_kv.layer{i}.key"], f"layer {i} cached K", valid)
        _close(v, io[f"sample.prefix_kv.layer{i}.value"], f"layer {i} cached V", valid)


def test_default_sampling_path_matches(bundle, model):
    """The public sample_actions (prefix compaction on) gives the same actions."""
    io = bundle.io
    actions = model.sample_actions(bundle.observation(), noise=io["inputs.noise"])
    _close(actions, io["sample.actions_padded"], "sample_actions")


def test_training_loss_elementwise(bundle, model):
    io = bundle.io
    losses = model.loss(
        bundle.observation(),
        io["inputs.train_actions"],
        noise=io["inputs.train_noise"],
        time=io["inputs.train_time"],
    )
    assert losses.shape == io["train.losses"].shape
    _close(losses, io["train.losses"], "elementwise loss")
    # LeRobot's policy-level loss crops to the real action dim, then averages.
    torch.testing.assert_close(losses[..., :7].mean(), io["train.loss_mean"], atol=ATOL, rtol=0)


def test_attention_probabilities_every_layer(bundle, model):
    io = bundle.io
    x_t, _ = model.interpolate(io["inputs.train_actions"], io["inputs.train_noise"], io["inputs.train_time"])
    depth = bundle.config.depth
    out = model.forward_joint(
        bundle.observation(), x_t, io["inputs.train_time"], capture=range(depth), compact=False
    )
    _close(out.v_t, io["train.v_t"], "training v_t")
    assert sorted(out.attn) == list(range(depth))
    for i in range(depth):
        ref = io[f"attn_probs.layer{i}"]
        assert out.attn[i].shape == ref.shape
        _close(out.attn[i], ref, f"attention probabilities layer {i}")
