"""Bad inputs to sample_actions / loss raise one ValueError that names the problem."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shallowpi.model import PiModel
from shallowpi.model.config import PiConfig, tiny
from shallowpi.observation import Observation


def _inputs(cfg: PiConfig, b: int = 2) -> Observation:
    n = cfg.vision.image_size
    return Observation(
        images=torch.zeros(b, len(cfg.cameras), 3, n, n),
        image_masks=torch.ones(b, len(cfg.cameras), dtype=torch.bool),
        tokens=torch.full((b, 8), 5),
        token_masks=torch.ones(b, 8, dtype=torch.bool),
        state=torch.zeros(b, 8) if cfg.variant == "pi0" else None,
    )


@pytest.fixture(scope="module", params=["pi05", "pi0"])
def model(request):
    torch.manual_seed(0)
    return PiModel(tiny(request.param, depth=2)).eval()


def test_good_inputs_give_chunk(model):
    out = model.sample_actions(_inputs(model.config), num_steps=2)
    assert out.shape == (2, model.config.chunk_size, model.config.max_action_dim)
    assert torch.isfinite(out).all()


def test_wrong_image_size(model):
    inp = dataclasses.replace(_inputs(model.config), images=torch.zeros(2, 3, 3, 64, 64))
    with pytest.raises(ValueError, match=r"images: expected \[B=2, 3, 3, 56, 56\]"):
        model.sample_actions(inp)


def test_missing_camera(model):
    inp = _inputs(model.config)
    inp = dataclasses.replace(inp, images=inp.images[:, :2], image_masks=inp.image_masks[:, :2])
    with pytest.raises(ValueError, match="expected 3 camera images"):
        model.sample_actions(inp)


def test_token_mask_length_mismatch(model):
    inp = dataclasses.replace(_inputs(model.config), token_masks=torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="token_masks shape"):
        model.sample_actions(inp)


def test_per_camera_lists_are_refused_with_the_conversion(model):
    n = model.config.vision.image_size
    lists = ([torch.zeros(2, 3, n, n)] * 3, [torch.ones(2, dtype=torch.bool)] * 3)
    with pytest.raises(TypeError, match=r"Observation.from_lists"):
        model.sample_actions(lists[0])
    inp = _inputs(model.config)
    same = Observation.from_lists(*lists, inp.tokens, inp.token_masks, inp.state)
    assert torch.equal(same.images, inp.images) and torch.equal(same.image_masks, inp.image_masks)


def test_action_dim_above_max(model):
    inp = _inputs(model.config)
    actions = torch.zeros(2, model.config.chunk_size, model.config.max_action_dim + 1)
    with pytest.raises(ValueError, match="action dim 33 is above max_action_dim 32"):
        model.loss(inp, actions)


def test_wrong_chunk_length(model):
    with pytest.raises(ValueError, match="actions: expected"):
        model.loss(_inputs(model.config), torch.zeros(2, 3, 7))


def test_real_action_dim_is_padded(model):
    losses = model.loss(_inputs(model.config), torch.zeros(2, model.config.chunk_size, 7))
    assert losses.shape == (2, model.config.chunk_size, 32)


def test_state_missing_for_pi0():
    model = PiModel(tiny("pi0", depth=1))
    inp = dataclasses.replace(_inputs(model.config), state=None)
    with pytest.raises(ValueError, match="state is required for pi0"):
        model.sample_actions(inp)


def test_pi05_ignores_the_state_field():
    """π0.5 reads the state through its prompt: the observation's state (the processor fills it) is unused."""
    torch.manual_seed(0)
    model = PiModel(tiny("pi05", depth=1)).eval()
    inp, noise = _inputs(model.config), torch.randn(2, model.config.chunk_size, 32)
    with_state = dataclasses.replace(inp, state=torch.randn(2, 32))
    assert torch.equal(model.sample_actions(with_state, noise=noise), model.sample_actions(inp, noise=noise))


def test_token_ids_out_of_vocab(model):
    inp = _inputs(model.config)
    inp.tokens[0, 0] = model.config.vocab_size
    with pytest.raises(ValueError, match="tokens: ids must be in"):
        model.sample_actions(inp)


def test_noise_shape(model):
    with pytest.raises(ValueError, match="noise: expected shape"):
        model.sample_actions(_inputs(model.config), noise=torch.zeros(1, 2, 3))


def test_masked_camera_skipping_keeps_outputs(model):
    """A camera slot masked for the whole batch is skipped; valid outputs do not change."""
    inp = _inputs(model.config)
    g = torch.Generator().manual_seed(1)
    images = torch.stack([torch.rand(2, 3, 56, 56, generator=g) * 2 - 1 for _ in model.config.cameras], dim=1)
    inp = dataclasses.replace(inp, images=images)
    inp.image_masks[:, 2] = False
    inp.token_masks[:, 5:] = False
    noise = torch.randn(2, model.config.chunk_size, 32, generator=g)
    full = model.sample_trace(inp, noise=noise, compact=False).actions
    fast = model.sample_trace(inp, noise=noise, compact=True).actions
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
