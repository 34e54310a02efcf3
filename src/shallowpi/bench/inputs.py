"""The deterministic random inputs every runner of one benchmark gets (same images, prompt and noise)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shallowpi.errors import UserError
from shallowpi.model.config import PiConfig
from shallowpi.observation import Observation


@dataclass(frozen=True)
class BenchInputs:
    observation: Observation
    noise: torch.Tensor  # (B, chunk, max_action_dim)


def make_inputs(
    cfg: PiConfig, *, batch: int, cameras: int, lang_tokens: int, device, seed: int = 0
) -> BenchInputs:
    """Deterministic random inputs: `cameras` valid slots (the others masked, image -1), `lang_tokens` valid."""
    if not 1 <= cameras <= len(cfg.cameras):
        raise UserError(f"cameras must be in [1, {len(cfg.cameras)}] (the model's slots), got {cameras}")
    if not 1 <= lang_tokens <= cfg.tokenizer_max_length:
        raise UserError(f"lang_tokens must be in [1, {cfg.tokenizer_max_length}], got {lang_tokens}")
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images, masks = [], []
    for i in range(len(cfg.cameras)):
        valid = i < cameras
        img = torch.rand(batch, 3, s, s, generator=g) * 2 - 1 if valid else -torch.ones(batch, 3, s, s)
        images.append(img)  # (B, 3, S, S) in [-1, 1]
        masks.append(torch.full((batch,), valid, dtype=torch.bool))
    tokens = torch.randint(1, min(cfg.vocab_size, 1000), (batch, cfg.tokenizer_max_length), generator=g)
    token_masks = torch.arange(cfg.tokenizer_max_length)[None].expand(batch, -1) < lang_tokens
    tokens = torch.where(token_masks, tokens, 0)
    state = torch.rand(batch, cfg.max_state_dim, generator=g) * 2 - 1  # π0's state token; π0.5 ignores it
    obs = Observation.from_lists(images, masks, tokens, token_masks, state)  # (B, n_slots, 3, S, S), ...
    noise = torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g)
    return BenchInputs(obs.to(device), noise.to(device))
