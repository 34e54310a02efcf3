"""The one input type: per-camera lists convert to it, it moves as a whole, the training batch carries it,
and the LeRobot plugin's transition keys carry it there and back unchanged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distill_helpers import random_teacher, synthetic_batch
from shallowpi import Observation
from shallowpi.data.lerobot_processor import (
    PLUGIN_OBSERVATION_KEYS,
    observation_from_plugin,
    plugin_observation,
)
from shallowpi.data.processor import Preprocessor, collate
from shallowpi.data.tokenizer import load_tokenizer
from test_data_transforms import make_config, make_sample, make_stats


def _observation(b: int = 2, slots: int = 3) -> Observation:
    g = torch.Generator().manual_seed(0)
    return Observation(
        images=torch.rand(b, slots, 3, 8, 8, generator=g) * 2 - 1,
        image_masks=torch.arange(slots)[None].expand(b, -1) < 2,
        tokens=torch.randint(0, 100, (b, 6), generator=g),
        token_masks=torch.ones(b, 6, dtype=torch.bool),
        state=torch.randn(b, 32, generator=g),
    )


def test_from_lists_stacks_cameras_in_slot_order() -> None:
    obs = _observation()
    lists = Observation.from_lists(
        list(obs.images.unbind(1)), list(obs.image_masks.unbind(1)), obs.tokens, obs.token_masks, obs.state
    )
    for f in dataclasses.fields(Observation):
        assert torch.equal(getattr(lists, f.name), getattr(obs, f.name)), f.name
    assert (obs.batch_size, obs.num_slots) == (2, 3)
    with pytest.raises(ValueError, match="3 camera images but 2 image masks"):
        Observation.from_lists(
            list(obs.images.unbind(1)), list(obs.image_masks.unbind(1))[:2], obs.tokens, obs.token_masks
        )


def test_observation_is_frozen_and_moves_as_a_whole() -> None:
    obs = dataclasses.replace(_observation(), state=None)  # π0.5 may leave the state out
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.tokens = obs.tokens[:1]
    moved = obs.to(torch.device("cpu"))
    assert moved.state is None and torch.equal(moved.images, obs.images)


def test_training_batch_is_an_observation_plus_targets() -> None:
    teacher = random_teacher("pi0", depth=1)
    batch = synthetic_batch(teacher, batch=4)
    assert isinstance(batch.observation, Observation) and len(batch) == 4
    assert batch.observation.images.shape[:2] == (4, len(teacher.config.cameras))
    c = teacher.config
    assert batch.actions.shape == batch.noise.shape == (4, c.chunk_size, c.max_action_dim)
    assert batch.time.shape == (4,) and batch.action_is_pad.shape == (4, c.chunk_size)
    moved = batch.to("cpu")
    assert torch.equal(moved.observation.tokens, batch.observation.tokens)


def test_plugin_keys_carry_the_processors_observation_there_and_back() -> None:
    """What the plugin's preprocessor step writes into LeRobot's transition, and its policy reads back."""
    pre = Preprocessor(make_config("pi0"), make_stats(), load_tokenizer())
    obs = collate([pre(make_sample(0)), pre(make_sample(1))])
    keys = plugin_observation(obs)
    assert set(keys) == set(PLUGIN_OBSERVATION_KEYS.values())
    assert keys["observation.shallowpi.images"].shape == (2, 3, 3, 32, 32)
    back = observation_from_plugin(keys)
    for f in dataclasses.fields(Observation):
        assert getattr(back, f.name) is getattr(obs, f.name), f.name
    del keys["observation.shallowpi.tokens"]
    with pytest.raises(KeyError, match="observation.shallowpi.tokens"):
        observation_from_plugin(keys)
