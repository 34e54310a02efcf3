"""PiPolicy on a tiny random π0.5: the server's model path (map -> preprocess -> sample -> unnormalise)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from shallowpi.data import transforms
from shallowpi.data.processor import collate
from shallowpi.serve.obs_mapping import ObservationError
from shallowpi.serve.policy import PiPolicy
from shallowpi.testing import save_tiny_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> PiPolicy:
    path = save_tiny_policy(tmp_path_factory.mktemp("tiny"), state_dim=8, action_dim=7)
    return PiPolicy.from_pretrained(path, device="cpu", num_steps=2)


def obs(seed: int = 0, prompt: str = "open the drawer") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": prompt,
    }


def test_actions_are_the_models_output_unnormalised_and_cropped(policy):
    o = obs()
    got = policy.infer(o)
    assert got["actions"].shape == (10, 7) and got["actions"].dtype == np.float32
    assert got["policy_timing"]["infer_ms"] > 0
    # The same thing by hand: processor inputs, the reference model path (the policy runs the fast engine)
    # with the policy's noise, then the action stats.
    sample = policy.mapping.extract(o, policy.cameras)
    observation = collate([policy.pre(sample)])
    with torch.inference_mode():
        raw = policy.model.sample_actions(observation, noise=policy.predictor.noise(policy.seed), num_steps=2)
    by_hand = transforms.unnormalize(raw[0, :, :7], policy.post.action_stats, policy.post.config.action_norm)
    np.testing.assert_allclose(got["actions"], by_hand.numpy(), rtol=0, atol=1e-5)
    assert not np.allclose(got["actions"], raw[0, :, :7].numpy(), atol=1e-3)  # stats really were applied


def test_inputs_reach_the_model_and_same_input_gives_same_actions(policy):
    a = policy.infer(obs(0))["actions"]
    np.testing.assert_array_equal(a, policy.infer(obs(0))["actions"])  # seeded noise: reproducible
    assert not np.allclose(a, policy.infer(obs(0, prompt="close the drawer"))["actions"])
    assert not np.allclose(a, policy.infer(obs(1))["actions"])


def test_wrong_state_size_names_the_key(policy):
    bad = obs()
    bad["observation/state"] = np.zeros(7, np.float32)
    with pytest.raises(ObservationError, match=r"'observation/state' must have shape \(8,\)"):
        policy.infer(bad)


def test_metadata_describes_the_model(policy):
    m = policy.metadata
    assert (m["variant"], m["action_chunk"], m["action_dim"], m["state_dim"], m["num_steps"]) == (
        "pi05",
        10,
        7,
        8,
        2,
    )
    assert m["obs_mapping"]["images"] == {
        "observation.images.image": "observation/image",
        "observation.images.wrist_image": "observation/wrist_image",
    }


def test_mapping_that_does_not_fit_the_model_fails_at_start_up(policy):
    with pytest.raises(ValueError, match="no camera feeds model slot 2"):
        PiPolicy(policy.model, policy.pre, policy.post, obs_mapping="aloha")  # slot 2 has no camera here


def test_a_prefix_compressed_student_serves(tmp_path):
    """Merged image tokens and a shallower SigLIP tower: the served actions are the model's (the policy
    runs the engine, checked here against the reference path), and the metadata says what it sees."""
    path = save_tiny_policy(tmp_path / "student", state_dim=8, action_dim=7, prefix_student=True)
    student = PiPolicy.from_pretrained(path, device="cpu", num_steps=2)
    assert (student.config.vision.num_tokens, student.config.vision.depth) == (4, 2)
    got = student.infer(obs(3))["actions"]
    observation = collate([student.pre(student.mapping.extract(obs(3), student.cameras))])
    with torch.inference_mode():
        raw = student.model.sample_actions(
            observation, noise=student.predictor.noise(student.seed), num_steps=2
        )
    by_hand = transforms.unnormalize(
        raw[0, :, :7], student.post.action_stats, student.post.config.action_norm
    )
    np.testing.assert_allclose(got, by_hand.numpy(), rtol=0, atol=1e-5)
    assert (student.metadata["image_tokens"], student.metadata["vision_depth"]) == (4, 2)


def test_a_step_distilled_student_serves_on_its_time_grid(policy):
    """A recorded non-uniform grid: the metadata says it, and the replies are sampled on it (the reference path
    on the model's own grid), not on the fixture's 2 uniform steps."""
    model = copy.deepcopy(policy.model)
    model.config = model.config.with_sampling([1.0, 0.6, 0.0])
    student = PiPolicy(model, policy.pre, policy.post)
    assert (student.metadata["num_steps"], student.metadata["time_grid"]) == (2, [1.0, 0.6, 0.0])
    got = student.infer(obs(4))["actions"]
    observation = collate([student.pre(student.mapping.extract(obs(4), student.cameras))])
    with torch.inference_mode():
        raw = model.sample_actions(observation, noise=student.predictor.noise(student.seed))
    by_hand = transforms.unnormalize(
        raw[0, :, :7], student.post.action_stats, student.post.config.action_norm
    )
    np.testing.assert_allclose(got, by_hand.numpy(), rtol=0, atol=1e-5)
    assert np.abs(got - policy.infer(obs(4))["actions"]).max() > 1e-3  # uniform 2 steps: other actions
