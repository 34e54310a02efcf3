"""The one default-device rule of every command and loader: the CUDA GPU when torch sees one, else the CPU."""

from __future__ import annotations


def default_device() -> str:
    """ "cuda" if torch sees a GPU, else "cpu" (under torchrun the trainer maps "cuda" to its rank's GPU)."""
    import torch  # here, not at import: the torch-free serve path imports the CLI helpers

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """`device` as given, or the default rule when None (a flag left unset)."""
    return default_device() if device is None else device
