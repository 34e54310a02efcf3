"""Distributed setup (torchrun env), DDP / FSDP2 wrapping and gradient checkpointing of a PiModel.

The model's training pass is `forward_joint`, and inside it each Gemma layer is used through `qkv` and
`finish`, not `forward`. DDP and FSDP2 hook `forward`, so the joint pass is wrapped in `JointForward`, and
for FSDP2 the layer methods are registered as forward methods.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist
from torch import nn

from shallowpi.model import PiModel


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: bool = False  # a process group is in use (DDP / FSDP2 wrap the model, ranks synchronise)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.group


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...); a no-op without it
    and for a single torchrun process. A process group the caller already made is used whatever its size
    (one GPU with NCCL runs the DDP / FSDP2 code paths)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, group=True)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, group=True)


class JointForward(nn.Module):
    """`forward` = the model's joint training pass, so DDP / FSDP2 see a normal forward call."""

    def __init__(self, model: PiModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs, capture=()):
        out = self.model.forward_joint(*inputs, capture=capture)
        return out.v_t, out.attn, out.prefix_pad


def never_trained(model: PiModel) -> list[str]:
    """Parameters that never reach the actions: the backbone's final norm and the last backbone layer's
    q_proj / o_proj / post-attention norm / MLP (only that layer's K and V are read by the action tokens;
    its prefix stream is discarded). They get no (or an exactly zero) gradient, so they are frozen: DDP then
    needs no search for unused parameters and weight decay leaves them as the teacher had them."""
    last = f"vlm.layers.{model.config.depth - 1}."
    dead = (
        "vlm.norm.",
        last + "self_attn.q_proj.",
        last + "self_attn.o_proj.",
        last + "post_attention_layernorm.",
        last + "mlp.",
    )
    return [n for n, _ in model.named_parameters() if n.startswith(dead)]


def freeze(model: PiModel, *, vision: bool) -> None:
    names = set(never_trained(model))
    for n, p in model.named_parameters():
        if n in names or (vision and n.startswith("vision.")):
            p.requires_grad_(False)


def without_gradient(model: PiModel, loss_fn, batch) -> list[str]:
    """Trainable parameters this loss gives no gradient (one probe backward, gradients cleared after).
    Frozen like `never_trained`, so DDP needs no unused-parameter search and one process equals N."""
    total, _ = loss_fn(JointForward(model), batch)
    total.backward()
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    return names


def enable_gradient_checkpointing(model: PiModel) -> None:
    """Recompute each joint layer (attention included) and each SigLIP layer in backward."""
    model.set_gradient_checkpointing(True)


def shard_fsdp(model: PiModel, *, frozen: bool = False) -> None:
    """FSDP2: shard every Gemma / SigLIP layer, then the rest (root). Each Gemma layer is entered through
    `qkv` and `finish`; both are registered so the layer's parameters are gathered when they run."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for stack in (model.vlm, model.expert):
        for layer in stack.layers:
            fully_shard(layer)
            register_fsdp_forward_method(layer, "qkv")
            register_fsdp_forward_method(layer, "finish")
    for layer in model.vision.encoder.layers if hasattr(model.vision, "encoder") else ():
        fully_shard(layer)
    fully_shard(model)
    register_fsdp_forward_method(model, "forward_joint")
    if frozen:
        model.requires_grad_(False)
