"""Distributed setup (torchrun env), DDP / FSDP2 wrapping and gradient checkpointing of a PiModel.

The model's training pass is `forward_joint`, and inside it each Gemma layer is entered through the methods
`GemmaLayer.ENTRY_METHODS` names (`modulation`, `qkv`, `post_attention`), not `forward`. DDP and FSDP2 hook
`forward`, so the joint pass is wrapped in `JointForward`, and for FSDP2 `forward_joint` and the layer
methods are registered as forward methods (each gathers the parameters it reads, then frees them).
"""

from __future__ import annotations

import inspect
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

    def forward(self, *inputs, capture=(), vision=False):
        out = self.model.forward_joint(*inputs, capture=capture, vision=vision)
        return out.v_t, out.attn, out.prefix_valid, out.vision, out.vision_valid


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


def entry_methods(cls: type[nn.Module]) -> tuple[str, ...]:
    """The methods through which a layer of class `cls` is entered: its `ENTRY_METHODS` (default `forward`),
    checked against the class. FSDP2 gathers a sharded layer's parameters only around registered methods, so
    a public method `cls` defines but does not list, or a listed name that is not a method (a rename), stops
    sharding here with a message instead of failing (or reading sharded weights) mid-step."""
    named = tuple(getattr(cls, "ENTRY_METHODS", ("forward",)))
    public = {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}
    unlisted = sorted(public - set(named))
    not_methods = [n for n in named if not inspect.isfunction(getattr(cls, n, None))]
    if unlisted or not_methods:
        raise RuntimeError(
            f"{cls.__name__}.ENTRY_METHODS = {named} does not match the class"
            + (f"; public methods not listed: {unlisted}" if unlisted else "")
            + (f"; listed but not methods of the class: {not_methods}" if not_methods else "")
            + ". List every method the model calls on the layer (FSDP2 gathers its parameters around each) "
            "and make helpers private (_name)."
        )
    return named


def _shard(layer: nn.Module) -> None:
    """fully_shard one layer and register each of its entry methods (`forward` is hooked already)."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    methods = entry_methods(type(layer))  # before fully_shard swaps in its FSDP subclass
    fully_shard(layer)
    for name in methods:
        if name != "forward":
            register_fsdp_forward_method(layer, name)


def shard_fsdp(model: PiModel, *, frozen: bool = False) -> None:
    """FSDP2: shard every Gemma / SigLIP layer, then the rest (root), which is entered through
    `forward_joint` (the trainer's student pass and the teacher's pass). Each layer's entry methods are
    registered, so its parameters are gathered whenever it runs (gradient checkpointing's recompute too).
    Each entry gathers and frees again: an adaRMS expert layer is gathered three times per forward."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for stack in (model.vlm, model.expert):
        for layer in stack.layers:
            _shard(layer)
    for layer in model.vision.encoder.layers:
        _shard(layer)
    fully_shard(model)
    register_fsdp_forward_method(model, "forward_joint")
    if frozen:
        model.requires_grad_(False)
