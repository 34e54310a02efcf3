"""Flags several commands share, spelled, defaulted and explained once (one CLI dialect).

--out PATH        every output path (a file or a folder)
--num-steps K     Euler denoising steps (sampling); --steps means optimizer steps (train, distill, demo)
--batch-size N    batch size
--device DEV      torch device; unset: cuda if torch sees a GPU, else cpu (`shallowpi.device`)
"""

from __future__ import annotations

import argparse

DEVICE_HELP = "torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)"
NUM_STEPS_HELP = "Euler denoising steps (default: the model config's)"


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--device, None when unset: `shallowpi.device.resolve_device` applies the one default rule."""
    parser.add_argument("--device", default=None, help=DEVICE_HELP)


def add_num_steps_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str = NUM_STEPS_HELP
) -> None:
    parser.add_argument("--num-steps", type=int, default=None, help=help)
