"""Capturing attention probabilities must not change the model's outputs, and must carry gradients."""

from __future__ import annotations

import torch

from shallowpi.model import PiModel
from shallowpi.model.config import tiny
from shallowpi.observation import Observation


def _inputs(cfg, b=2, seed=0):
    """-> (observation, x_t, time), forward_joint's inputs."""
    g = torch.Generator().manual_seed(seed)
    n = cfg.vision.image_size
    images = torch.stack([torch.rand(b, 3, n, n, generator=g) * 2 - 1 for _ in cfg.cameras], dim=1)
    masks = torch.ones(b, len(cfg.cameras), dtype=torch.bool)
    masks[1, -1] = False
    tokens = torch.randint(3, cfg.vocab_size, (b, cfg.tokenizer_max_length), generator=g)
    token_masks = torch.ones_like(tokens, dtype=torch.bool)
    token_masks[1, 9:] = False
    x_t = torch.randn(b, cfg.chunk_size, cfg.max_action_dim, generator=g)
    state = torch.randn(b, 8, generator=g) if cfg.variant == "pi0" else None
    return Observation(images, masks, tokens, token_masks, state), x_t, torch.tensor([0.3, 0.9])


def test_capture_on_off_identical_outputs():
    for variant in ("pi05", "pi0"):
        torch.manual_seed(0)
        model = PiModel(tiny(variant)).eval()
        inp = _inputs(model.config)
        plain = model.forward_joint(*inp)
        captured = model.forward_joint(*inp, capture=[0, 2])
        assert torch.equal(plain.v_t, captured.v_t), variant
        assert plain.attn == {} and sorted(captured.attn) == [0, 2]
        probs = captured.attn[2]
        # rows of valid queries sum to 1
        torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_captured_attention_has_gradients():
    torch.manual_seed(0)
    model = PiModel(tiny("pi05"))
    out = model.forward_joint(*_inputs(model.config), capture=[1])
    out.attn[1][:, :, -5:, :20].sum().backward()
    grad = model.expert.layers[1].self_attn.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
