"""One CLI dialect: `--out` for outputs, `--steps` optimizer steps, `--num-steps` Euler steps, `--batch-size`,
and one default-device rule (cuda if torch sees a GPU, else cpu) in every command and config."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

from shallowpi import cli
from shallowpi.bench import BenchSettings
from shallowpi.device import resolve_device
from shallowpi.distill.parallel import DistInfo
from shallowpi.distill.trainer import TrainConfig, _device
from shallowpi.sim.evaluate import EvalConfig

SAMPLING = ("eval", "serve", "bench", "export")  # Euler steps only
TRAINING = ("train", "distill")  # optimizer steps (distill also takes a K-step student's --num-steps)
WITH_DEVICE = ("train", "distill", "eval", "serve", "bench")


def _options(command: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {opt: action for action in sub._actions for opt in action.option_strings}


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_speaks_one_dialect(command: str) -> None:
    opts = _options(command)
    assert not {"--output", "--batch"} & set(opts), "outputs are --out, batches --batch-size"
    if command in SAMPLING:
        assert "--num-steps" in opts and "--steps" not in opts  # --steps means optimizer steps
    if command in TRAINING:
        assert {"--out", "--steps", "--batch-size"} <= set(opts)
    if command in WITH_DEVICE:
        assert opts["--device"].default is None  # resolved by shallowpi.device, the same way everywhere


def test_old_spellings_are_refused(tmp_path, capsys) -> None:
    argv = [
        "train",
        "--preset",
        "tiny",
        "--dataset",
        "synthetic:2",
        "--steps",
        "1",
        "--output",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--preset", "tiny", "--batch", "2", "--out", str(tmp_path / "b.json")])
    assert "--batch" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("cuda", [False, True])
def test_one_default_device_rule(monkeypatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    want = "cuda" if cuda else "cpu"
    assert resolve_device(None) == want and resolve_device("cpu") == "cpu"
    assert BenchSettings().device == want
    assert EvalConfig(policy="p", tasks=["reach"]).device == want  # eval_info.json records it resolved
    if not cuda:  # with a GPU the trainer also binds it (torch.cuda.set_device): not on a CPU machine
        assert _device(TrainConfig(output_dir="o", steps=1), DistInfo()) == torch.device("cpu")


def test_bench_num_steps_and_batch_size_reach_the_run(tmp_path) -> None:
    def bench(batch: int) -> dict:
        out = tmp_path / f"b{batch}.json"
        argv = ["bench", "--preset", "tiny", "--depth", "1", "--modes", "engine", "--num-steps", "2",
                "--batch-size", str(batch), "--iters", "20", "--warmup", "0", "--threads", "1",
                "--no-count-flops", "--device", "cpu", "--out", str(out)]  # fmt: skip
        assert cli.main(argv) == 0
        return json.loads(out.read_text())

    one, two = bench(1), bench(2)
    assert two["settings"]["batch_size"] == 2 and two["settings"]["num_steps"] == 2
    (run1,), (run2,) = one["runs"], two["runs"]
    assert run2["steps"] == 2 and run2["time_grid"] == [1.0, 0.5, 0.0]
    assert run2["flops"]["total"] == 2 * run1["flops"]["total"]  # every counted FLOP scales with the batch


# Old spellings kept for one release as hidden aliases: (old argv, new argv), parsed alike.
DISTILL_ARGS = ["distill", "--teacher", "T", "--dataset", "D", "--out", "o", "--steps", "1"]
OLD_SPELLINGS = [
    (["inspect", "P"], ["inspect", "--policy", "P"]),
    (["compute-stats", "D"], ["compute-stats", "--dataset", "D"]),
    (["collect", "metaworld", "--out", "o"], ["collect", "--env", "metaworld", "--out", "o"]),
    (
        ["collect", "--episodes-per-task", "3", "--out", "o"],
        ["collect", "--demos-per-task", "3", "--out", "o"],
    ),
    (["demo", "--demos", "3"], ["demo", "--demos-per-task", "3"]),
    (["demo", "--episodes", "3"], ["demo", "--episodes-per-task", "3"]),
    ([*DISTILL_ARGS, "--vlm-layers", "0,1"], [*DISTILL_ARGS, "--backbone-layers", "0,1"]),
]


@pytest.mark.parametrize("old,new", OLD_SPELLINGS, ids=[" ".join(o) for o, _ in OLD_SPELLINGS])
def test_old_spellings_still_parse_but_are_hidden(old: list[str], new: list[str], capsys) -> None:
    assert cli.build_parser(old).parse_args(old) == cli.build_parser(new).parse_args(new)
    with pytest.raises(SystemExit):
        cli.build_parser([old[0]]).parse_args([old[0], "--help"])
    shown = capsys.readouterr().out
    assert all(re.search(rf"{t}(?![-\w])", shown) for t in set(new) - set(old) if t.startswith("--"))
    assert not any(re.search(rf"{t}(?![-\w])", shown) for t in set(old) - set(new) if t.startswith("--"))


def test_inspect_with_the_old_positional_path_still_runs(capsys) -> None:
    from shallowpi.study.pipeline import bundled_teacher_path

    assert cli.main(["inspect", str(bundled_teacher_path()), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"]
