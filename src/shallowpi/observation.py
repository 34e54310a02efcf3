"""`Observation`: the one input type of the model, the engine, the losses and the policies (base layer).

The processor's `collate` returns one; `PiModel.sample_actions` / `loss` / `forward_joint`,
`InferenceEngine.sample_actions`, the distillation losses (through `Batch`), the predictor and the LeRobot
plugin take one. `shallowpi.model.inputs.check_inputs` checks it against a model's config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Observation:
    """A batch of preprocessed observations (what `shallowpi.data.processor.collate` returns).

        images       (B, n_slots, 3, H, W) float in [-1, 1], slots in the model's camera order
                     (`PiConfig.cameras`); a missing camera is an all -1 image with its mask False
        image_masks  (B, n_slots) bool
        tokens       (B, L) int64 prompt ids, right-padded
        token_masks  (B, L) bool
        state        (B, S) float, S <= max_state_dim, normalised: π0's state token. None is allowed for
                     π0.5, which reads the state through its prompt and ignores this field.

    Images are one stacked tensor, not a list per camera: that is what the processor produces, what the ONNX
    prefix graph takes and what SigLIP runs on (all slots as one batch), so no caller splits or re-stacks.
    Frozen: a checked or compacted observation is a new one (`dataclasses.replace`), never an edited one.
    """

    images: torch.Tensor
    image_masks: torch.Tensor
    tokens: torch.Tensor
    token_masks: torch.Tensor
    state: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_slots(self) -> int:
        return self.images.shape[1]

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Observation:
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Observation:
        """Page-locked copies (the DataLoader calls this with pin_memory=True)."""
        return self._map(lambda x: x.pin_memory())

    def _map(self, fn) -> Observation:
        return dataclasses.replace(
            self,
            **{
                f.name: None if (x := getattr(self, f.name)) is None else fn(x)
                for f in dataclasses.fields(self)
            },
        )

    @classmethod
    def from_lists(
        cls,
        images: Sequence[torch.Tensor],
        img_masks: Sequence[torch.Tensor],
        tokens: torch.Tensor,
        token_masks: torch.Tensor,
        state: torch.Tensor | None = None,
    ) -> Observation:
        """From per-camera lists (n_slots x (B, 3, H, W) images, n_slots x (B,) masks), the layout
        shallowpi's model API took before this type and LeRobot's π models still use."""
        if len(images) != len(img_masks):
            raise ValueError(f"{len(images)} camera images but {len(img_masks)} image masks")
        return cls(
            torch.stack(list(images), dim=1), torch.stack(list(img_masks), dim=1), tokens, token_masks, state
        )
