"""Gradient checkpointing trades memory for compute without changing the gradients."""

from __future__ import annotations

import torch

from shallowpi.model import PiModel
from shallowpi.model.config import tiny
from shallowpi.observation import Observation


def _grads(model, inp):
    model.zero_grad()
    model.loss(**inp).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = PiModel(tiny("pi0", depth=3)).train()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(2, 3, 56, 56, generator=g) * 2 - 1 for _ in range(3)]
    tokens = torch.randint(3, 1024, (2, 6), generator=g)
    actions = torch.randn(2, 10, 7, generator=g)
    state = torch.randn(2, 8, generator=g)
    inp = dict(
        obs=Observation(
            torch.stack(images, dim=1),
            torch.ones(2, 3, dtype=torch.bool),
            tokens,
            torch.ones(2, 6, dtype=torch.bool),
            state,
        ),
        actions=actions,
        noise=torch.randn(2, 10, 32, generator=g),
        time=torch.tensor([0.2, 0.7]),
    )
    plain = _grads(model, inp)
    model.set_gradient_checkpointing(True)
    ckpt = _grads(model, inp)
    assert plain.keys() == ckpt.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
