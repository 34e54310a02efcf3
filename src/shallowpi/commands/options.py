"""Flags several commands share, spelled, defaulted, parsed and checked once (one CLI dialect).

--out PATH        every output path (a file or a folder)
--num-steps K     Euler denoising steps (sampling); --steps means optimizer steps (train, distill, demo)
--batch-size N    batch size
--device DEV      torch device; unset: cuda if torch sees a GPU, else cpu (`shallowpi.device`)
--policy PATH     a pretrained folder; --dataset PATH a dataset (no positional paths)
--demos-per-task N         scripted demonstrations collected per task (collect, demo)
--episodes-per-task N      evaluation episodes per task (eval, demo)
--workers N       simulator worker processes (collect, eval, demo); --num-workers N: DataLoader workers

Older spellings (positional paths, `collect metaworld`, `--demos`, `--episodes`, collect's
`--episodes-per-task`, distill's `--vlm-layers`) are still accepted for one release, hidden from --help
(`add_old_positional`, `add_old_flag`).

A flag's value is checked as early as it can be: its syntax and bounds by the argparse `type=` functions
below (a bad value is one line, `shallowpi CMD: error: argument --flag: ...`, exit 2, before anything is
loaded), what needs a file or the model where it is read (a `UserError`, also one line and exit 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from shallowpi.errors import MissingFileError, UserError

DEVICE_HELP = "torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)"
NUM_STEPS_HELP = "Euler denoising steps (default: the model config's)"
SIM_WORKERS_HELP = "simulator worker processes"
DATA_WORKERS_HELP = "DataLoader worker processes (0: load in the main process)"

T = TypeVar("T")


def flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` from a parser that raises UserError: argparse then prints that message (argparse
    replaces a plain ValueError's message by 'invalid ... value')."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (refuses nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = nonnegative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in [0, 65535], got {value}")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers, e.g. '0,3,7' (layer lists)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 0,3,7, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,3,7, got {text!r}")
    return values


def parse_camera_map(text: str) -> dict[str, str]:
    """'KEY=SLOT,KEY=SLOT' -> {KEY: SLOT}: the one --camera-map syntax (train, distill, to-lerobot).

    KEY is the camera a dataset or robot sends (e.g. observation.images.image), SLOT the model's camera slot
    it feeds (e.g. observation.images.base_0_rgb); whether the slots exist is checked against the model."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, slot = (s.strip() for s in part.partition("="))
        if not sep or not key or not slot:
            raise UserError(
                f"bad --camera-map entry {part!r}; expected CAMERA_KEY=MODEL_SLOT,... "
                "(e.g. observation.images.image=observation.images.base_0_rgb)"
            )
        if key in out:
            raise UserError(f"--camera-map maps camera {key!r} twice")
        out[key] = slot
    if not out:
        raise UserError(f"--camera-map {text!r} maps no camera; expected CAMERA_KEY=MODEL_SLOT,...")
    return out


camera_map = flag_type(parse_camera_map)  # argparse type


def check_out_folder(path: str | None, flag: str = "--out") -> None:
    """An output folder: new or an existing folder; a file there is refused before any work, not after it."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UserError(f"{flag} {path}: exists and is not a folder")


def check_out_file(path: str | None, flag: str = "--out", suffixes: tuple[str, ...] | None = None) -> None:
    """An output file: not an existing folder, and one of `suffixes` (lower case, with the dot) if given."""
    if path is None:
        return
    if Path(path).is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file path")
    if suffixes is not None and Path(path).suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: expected a file ending in {', '.join(suffixes)}")


def check_input_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise MissingFileError(f"{flag}: file not found: {path}")


def add_old_positional(parser: argparse.ArgumentParser, dest: str) -> None:
    """The positional form a flag replaced (`inspect PATH`, now `inspect --policy PATH`): still accepted,
    hidden from --help and usage. It fills the flag's `dest`; unset, it leaves the flag's value alone."""
    parser.add_argument(dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_old_flag(parser: argparse.ArgumentParser, old: str, dest: str, type: Callable = int) -> None:
    """An old spelling of a flag (`--demos` for `--demos-per-task`): still accepted, hidden from --help."""
    parser.add_argument(old, dest=dest, type=type, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def require(args: argparse.Namespace, dest: str) -> str:
    """A flag that is required unless its old positional form gave the value (argparse cannot say so)."""
    value = getattr(args, dest, None)
    if value is None:
        raise UserError(f"--{dest.replace('_', '-')} is required")
    return value


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--device, None when unset: `check_device` applies the one default rule (`shallowpi.device`)."""
    parser.add_argument("--device", default=None, help=DEVICE_HELP)


def check_device(device: str | None) -> str:
    """--device resolved by the default rule and checked: a device torch knows and that this machine has.
    Imports torch: call it in a command's run(), not at parse time (the onnxruntime server runs without it)."""
    import torch

    from shallowpi.device import resolve_device

    name = resolve_device(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name!r}: MPS is not available on this machine")
    return name


def add_num_steps_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str = NUM_STEPS_HELP
) -> None:
    parser.add_argument("--num-steps", type=positive_int, default=None, help=help)
