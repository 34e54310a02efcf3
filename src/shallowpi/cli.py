"""`shallowpi` command line: one sub-command per job.

Each sub-command lives in `shallowpi/commands/<name>.py` and exposes `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `shallowpi inspect` does not pay
for importing the simulator or the server.
Flags several commands share are spelled once in `commands/options.py` (and `commands/training_args.py`
for train / distill).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from shallowpi.errors import UserError

COMMANDS: dict[str, str] = {
    "inspect": "show a checkpoint: variant, depths, layer map, parameters per component",
    "collect": "collect scripted demonstrations into a LeRobotDataset",
    "compute-stats": "add quantile statistics to a LeRobotDataset that lacks them",
    "train": "train a policy with the flow-matching loss only",
    "distill": "distil a shallow student from a teacher (Shallow-pi)",
    "eval": "evaluate a policy in simulation",
    "bench": "measure latency, FLOPs and memory",
    "serve": "serve a policy over openpi's websocket protocol",
    "export": "export a policy to ONNX (prefix + denoise graphs, manifest) for onnxruntime / TensorRT",
    "demo": "teacher -> data -> L6 student -> eval -> bench, in one command",
    "to-lerobot": "rewrite a policy folder for LeRobot's lerobot_policy_shallowpi plugin",
}


def _module(name: str):
    return importlib.import_module(f"shallowpi.commands.{name.replace('-', '_')}")


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, like a UserError's: `shallowpi CMD: error: MESSAGE`, exit 2
    (argparse's own prints the usage first, several lines)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line_text(message)} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    # No abbreviated flags: one spelling per flag (`--batch` is not `--batch-size`), and a script's flags
    # keep their meaning when a command gains a flag with the same prefix.
    parser = Parser(prog="shallowpi", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        # Only the chosen command's module is imported (and only if it exists yet).
        if name == wanted:
            module = _module(name)
            module.add_arguments(p)
            for action in p._actions:  # say in --help which arguments take a hub id too
                hidden = action.help == argparse.SUPPRESS
                if action.dest in getattr(module, "HUB_IDS", {}) and action.help and not hidden:
                    action.help += ", or a Hugging Face hub id org/name[@revision]"
    return parser


def resolve_hub_ids(module, args: argparse.Namespace) -> None:
    """Each argument a command lists in its HUB_IDS ({dest: "policy" | "dataset"}) may name a Hugging Face
    hub id (`org/name[@revision]`) as well as a folder; replace it by the local folder (shallowpi.hub)."""
    hub_ids = getattr(module, "HUB_IDS", {})
    if not hub_ids:
        return
    from shallowpi.hub import resolve_dataset, resolve_policy

    for dest, kind in hub_ids.items():
        resolve = resolve_policy if kind == "policy" else resolve_dataset
        value = getattr(args, dest, None)
        if isinstance(value, list):
            setattr(args, dest, [str(resolve(v)) for v in value])
        elif value is not None:
            setattr(args, dest, str(resolve(value)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        module = _module(args.command)
        resolve_hub_ids(module, args)
        return int(module.run(args) or 0)
    except UserError as e:  # bad input, bad file, mismatch: one line, no traceback; anything else is a bug
        print(f"shallowpi {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(e: BaseException) -> str:
    """A user error as one line (multi-line messages, e.g. lists of bad checkpoint keys, joined by '; ')."""
    return one_line_text(str(e))


def one_line_text(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":
    raise SystemExit(main())
