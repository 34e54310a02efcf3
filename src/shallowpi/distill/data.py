"""Training data for the trainer: examples keyed by their position in a seeded stream, so that any split of
a global batch (ranks, accumulation steps) and any resume point sees exactly the same samples and randomness.

Stream: position k (0, 1, 2, ...) -> epoch k // N -> dataset index perm_epoch[k % N], with perm_epoch a
permutation seeded by (seed, epoch). Optimizer step s owns positions [s·G, (s+1)·G) for global batch G;
micro-batch m of rank r takes the slice [(m·W + r)·b, (m·W + r + 1)·b) of it (b = G / (W·A)).
Per-sample randomness (augmentation, flow-matching noise ε and time t) comes from a generator seeded by
(seed, k), never from a global RNG: DataLoader workers need no seeding and resume needs only the step.

Example contract (shallowpi.data.processor's; a micro-batch of them is collated into a `Batch`):
    images float [n_slots, 3, S, S] in [-1, 1], image_masks bool [n_slots], tokens long [L],
    token_masks bool [L], state float [max_state_dim], actions float [chunk, max_action_dim],
    action_is_pad bool [chunk].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from shallowpi.data.processor import collate, collate_actions
from shallowpi.errors import UserError
from shallowpi.model import PiConfig
from shallowpi.model.pi import sample_time
from shallowpi.observation import Observation


class ExampleSource(Protocol):
    """What the trainer needs from a dataset: preprocessed training examples by index."""

    action_dim: int  # real action dims (the loss ignores the zero padding up to max_action_dim)

    def __len__(self) -> int: ...

    def example(self, index: int, generator: torch.Generator) -> dict:
        """Preprocessed, augmented (train=True) example; draw augmentation randomness from `generator`."""
        ...


def sample_generator(seed: int, position: int) -> torch.Generator:
    """A generator for one stream position, well mixed from (seed, position)."""
    state = np.random.SeedSequence([seed, position]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class StreamPlan:
    num_samples: int
    global_batch: int
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1
    seed: int = 0
    _perms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise UserError("the dataset is empty")
        per = self.world_size * self.grad_accum
        if self.global_batch < per or self.global_batch % per:
            raise UserError(
                f"global batch {self.global_batch} must be a multiple of world size × accumulation steps "
                f"({self.world_size} × {self.grad_accum} = {per})"
            )

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.world_size * self.grad_accum)

    def dataset_index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_samples)
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 0x5EED])))
            perm = self._perms[epoch] = rng.permutation(self.num_samples)
            self._perms.pop(epoch - 2, None)  # keep memory bounded
        return int(perm[offset])

    def positions(self, step: int, micro: int) -> range:
        b = self.micro_batch
        start = step * self.global_batch + (micro * self.world_size + self.rank) * b
        return range(start, start + b)


class _TimeSampler:
    """The model's flow-matching time distribution from its config alone (workers do not pickle weights)."""

    def __init__(self, config: PiConfig) -> None:
        self.config = config

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        return sample_time(self.config, 1, "cpu", generator)[0]


class MicroBatches(Dataset):
    """Item j = the j-th micro-batch of this rank from `start_step` on, collated (picklable for workers)."""

    def __init__(
        self, source: ExampleSource, plan: StreamPlan, config: PiConfig, start_step: int, steps: int
    ):
        self.source, self.plan, self.start_step = source, plan, start_step
        self.length = (steps - start_step) * plan.grad_accum
        self.noise_shape = (config.chunk_size, config.max_action_dim)
        self.sample_time = _TimeSampler(config)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, j: int) -> Batch:
        step, micro = divmod(j, self.plan.grad_accum)
        examples, noise, time = [], [], []
        for k in self.plan.positions(self.start_step + step, micro):
            g = sample_generator(self.plan.seed, k)
            examples.append(self.source.example(self.plan.dataset_index(k), g))
            noise.append(torch.randn(self.noise_shape, generator=g))  # ε, (chunk, max_action_dim)
            time.append(self.sample_time(g))  # t, ()
        actions, action_is_pad = collate_actions(examples)
        return Batch(collate(examples), actions, action_is_pad, torch.stack(noise), torch.stack(time))


@dataclass(frozen=True)
class Batch:
    """One (micro-)batch: the observation, its action chunks and the per-sample flow-matching randomness."""

    observation: Observation
    actions: torch.Tensor  # (B, chunk, A) normalised
    action_is_pad: torch.Tensor | None  # (B, chunk) bool
    noise: torch.Tensor  # (B, chunk, max_action_dim)
    time: torch.Tensor  # (B,)

    def to(self, device: torch.device | str) -> Batch:
        def mv(x):
            return None if x is None else x.to(device, non_blocking=True)

        obs = self.observation.to(device, non_blocking=True)
        return Batch(obs, mv(self.actions), mv(self.action_is_pad), mv(self.noise), mv(self.time))

    def pin_memory(self) -> Batch:
        """Page-locked copies (the trainer's DataLoader calls this with pin_memory=True)."""

        def pin(x):
            return None if x is None else x.pin_memory()

        obs = self.observation.pin_memory()
        return Batch(obs, pin(self.actions), pin(self.action_is_pad), pin(self.noise), pin(self.time))

    def __len__(self) -> int:
        return self.observation.batch_size


class SyntheticSource:
    """Random but index-deterministic examples of the right shapes (tests and benchmarks, no dataset).

    Augmentation stand-in: a small generator-drawn brightness shift, so the per-sample RNG path is exercised.
    """

    def __init__(
        self,
        config: PiConfig,
        num_samples: int = 64,
        action_dim: int = 4,
        state_dim: int = 6,
        cameras: int = 2,
        seed: int = 0,
    ) -> None:
        self.config, self.n, self.seed = config, num_samples, seed
        self.action_dim, self.state_dim, self.cameras = action_dim, state_dim, cameras

    def __len__(self) -> int:
        return self.n

    def example(self, index: int, generator: torch.Generator) -> dict:
        c = self.config
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        s, n_slots, length = c.vision.image_size, len(c.cameras), c.tokenizer_max_length
        images = torch.rand(n_slots, 3, s, s, generator=g) * 2 - 1
        images = (images + 0.1 * (torch.rand((), generator=generator) - 0.5)).clamp(-1, 1)
        masks = torch.arange(n_slots) < self.cameras
        images[~masks] = -1.0
        n_tok = int(torch.randint(3, length + 1, (), generator=g))
        tokens = torch.randint(1, c.vocab_size, (length,), generator=g)
        token_masks = torch.arange(length) < n_tok
        tokens[~token_masks] = 0
        state = torch.zeros(c.max_state_dim)
        state[: self.state_dim] = torch.randn(self.state_dim, generator=g)
        actions = torch.zeros(c.chunk_size, c.max_action_dim)
        actions[:, : self.action_dim] = (
            torch.randn(c.chunk_size, self.action_dim, generator=g).cumsum(0) * 0.1
        )
        pad = torch.arange(c.chunk_size) >= c.chunk_size - int(index % 3)  # some episode ends
        return {
            "images": images,
            "image_masks": masks,
            "tokens": tokens,
            "token_masks": token_masks,
            "state": state,
            "actions": actions,
            "action_is_pad": pad,
        }


class ProcessedSource:
    """A LeRobotDataset (raw samples) + the Preprocessor that turns them into model inputs (train mode)."""

    def __init__(self, dataset, preprocessor) -> None:
        self.dataset, self.preprocessor = dataset, preprocessor
        self.action_dim = preprocessor.action_dim

    def __len__(self) -> int:
        return len(self.dataset)

    def example(self, index: int, generator: torch.Generator) -> dict:
        return self.preprocessor(self.dataset[index], train=True, generator=generator)
