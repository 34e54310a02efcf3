"""Defaults live once, in the config dataclasses; the commands' options read them. A default changed in the
dataclass changes the CLI with it, and the CLI cannot drift from the Python API (it once trained with 2
DataLoader workers while TrainConfig said 0)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from shallowpi.commands import collect, distill, train
from shallowpi.commands import eval as eval_command
from shallowpi.commands.training_args import train_config
from shallowpi.device import resolve_device
from shallowpi.distill.step_distill import StepDistillConfig
from shallowpi.distill.trainer import TrainConfig
from shallowpi.sim.collect import CollectConfig
from shallowpi.sim.evaluate import EvalConfig


def _defaults(module) -> argparse.Namespace:
    """The namespace a command gets when the user gives only its required options (each set to "3")."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    required = [a for a in parser._actions if a.required or (a.nargs is None and not a.option_strings)]
    values = {a.dest: (a.type or str)("3") for a in required}
    # old spellings kept as hidden aliases have no default of their own (argparse.SUPPRESS)
    defaults = {
        a.dest: a.default for a in parser._actions if a.dest != "help" and a.default != argparse.SUPPRESS
    }
    return argparse.Namespace(**defaults | values)


@pytest.mark.parametrize("module", [train, distill], ids=["train", "distill"])
def test_training_options_default_to_train_config(module) -> None:
    args = _defaults(module)
    assert train_config(args) == TrainConfig(output_dir="3", steps=3)
    assert train_config(args).num_workers == 2  # the CLI's value, the one a user expects


def test_step_distillation_start_states_default_to_the_config() -> None:
    assert _defaults(distill).states == StepDistillConfig.states


@pytest.mark.parametrize(
    "module, config",
    [
        (eval_command, EvalConfig(policy="3", tasks=["reach-v3"])),
        (collect, CollectConfig(tasks=["reach-v3"])),
    ],
    ids=["eval", "collect"],
)
def test_sim_options_default_to_their_config(module, config) -> None:
    args = vars(_defaults(module))
    if "cameras" in args:
        args["cameras"] = args["cameras"].split(",")  # comma-separated on the command line
    if "task_demos" in args:
        args["task_demos"] = collect.parse_task_demos(args["task_demos"])  # TASK=N,... on the command line
    if "device" in args:  # unset (None) on the command line; EvalConfig records it resolved by the same rule
        args["device"] = resolve_device(args["device"])
    # --truncate-prompt is a flag whose absence means "the policy's processor decides" (None in EvalConfig)
    shared = sorted(
        {f.name for f in dataclasses.fields(config)} & set(args) - {"policy", "tasks", "truncate_prompt"}
    )
    per_task = "demos_per_task" if module is collect else "episodes_per_task"
    assert {per_task, "seed", "max_steps", "workers"} <= set(shared)
    assert {n: args[n] for n in shared} == {n: getattr(config, n) for n in shared}
