"""Committed results (results/, the bundled teacher, benchmarks/results/) name no absolute path of the machine
that wrote them (they are read on other machines), and what writes them (train_config.json, eval_info.json,
bench JSON, the study / demo reports, the benchmark scripts) records paths relative to the working directory
(`shallowpi.paths`)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from paths import REPO
from shallowpi import cli
from shallowpi.paths import portable_argv, portable_command, portable_path

SCANNED = ("results", "src/shallowpi/assets", "benchmarks/results")
# An absolute path into a machine's own folders: a '/' that starts a path (not inside a relative path or a
# URL) followed by a home, work or temp root. System tools (/usr/bin/time) are not a machine's data.
MACHINE_PATH = re.compile(r"(?<![\w.~/:-])/(?:work|root|home|tmp|Users|mnt|scratch|private/var)/[\w.~-]")
BINARY = (".safetensors", ".png", ".mp4", ".parquet", ".model", ".pt", ".onnx", ".data")


def _tracked(folders: tuple[str, ...]) -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *folders], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout
        files = [REPO / f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # no git (an unpacked archive): what is there
        files = [p for f in folders for p in (REPO / f).rglob("*")]
    return [p for p in files if p.is_file() and not p.name.endswith(BINARY)]


def test_committed_results_hold_no_absolute_path_of_this_machine():
    files = _tracked(SCANNED)
    names = {p.relative_to(REPO).as_posix() for p in files}
    # what the issue names is scanned (a test that reads nothing must not pass)
    assert {"results/demo/demo.md", "src/shallowpi/assets/teacher_metaworld/train_config.json"} <= names
    assert "benchmarks/results/steps_latency.json" in names
    assert any(n.endswith("eval_info.json") for n in names) and any(n.endswith("steps.md") for n in names)
    bad = []
    for path in files:
        text = path.read_bytes()
        if b"\0" in text[:8192]:
            continue  # binary
        for n, line in enumerate(text.decode("utf-8", errors="replace").splitlines(), 1):
            bad += [f"{path.relative_to(REPO)}:{n}: {m.group(0)}..." for m in MACHINE_PATH.finditer(line)]
    assert not bad, "absolute paths of the machine that wrote them:\n" + "\n".join(bad[:20])


@pytest.mark.parametrize(
    "text,flagged",
    [
        ('"policy": "/work/runs/study3/policies/L6"', True),
        ("--out /tmp/x/out --no-progress", True),
        ("teacher: /root/.cache/x", True),
        ("`/home/me/data`", True),
        ("--out=/Users/me/out", True),
        ('"policy": "outputs/study/policies/L6"', False),
        ("--out ../../runs/l6", False),
        ("4 min 51 s wall (`/usr/bin/time`)", False),
        ("see https://example.org/home/docs", False),
        ("src/work/x and data/tmp/y", False),
    ],
)
def test_the_scan_flags_machine_paths_only(text, flagged):
    assert bool(MACHINE_PATH.search(text)) is flagged


def test_portable_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "out" / "l6") == "out/l6"
    assert portable_path("out/l6") == "out/l6" and portable_path(None) is None
    assert portable_path("/elsewhere/x", start="/a/b") == "../../elsewhere/x"
    assert portable_argv(["eval", "--policy", str(tmp_path / "p"), f"--out={tmp_path}/o", "--x", "y"]) == [
        "eval", "--policy", "p", "--out=o", "--x", "y",
    ]  # fmt: skip
    assert (
        portable_command(f"shallowpi eval --policy '{tmp_path}/my policy'")
        == "shallowpi eval --policy 'my policy'"
    )


def test_a_training_run_records_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "t"  # absolute on the command line
    argv = ["train", "--preset", "tiny", "--depth", "1", "--dataset", "synthetic:2", "--steps", "1",
            "--batch-size", "2", "--num-workers", "0", "--no-progress", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    cfg = json.loads((out / "checkpoints" / "last" / "pretrained_model" / "train_config.json").read_text())
    assert cfg["train"]["output_dir"] == "runs/t"
    assert (cfg["dataset"], cfg["init"]) == ("synthetic:2", None)


def test_eval_info_and_reports_record_relative_paths(tmp_path, monkeypatch):
    from shallowpi.sim.evaluate import EvalConfig, eval_info
    from shallowpi.study.report import render_markdown

    monkeypatch.chdir(tmp_path)
    cfg = EvalConfig(
        policy=str(tmp_path / "policies" / "L6"), tasks=["reach-v3"], video_dir=str(tmp_path / "v")
    )
    settings = eval_info([], cfg, 1.0)["settings"]
    assert (settings["policy"], settings["video_dir"]) == ("policies/L6", "v")
    md = render_markdown(
        "t", [], ["reach-v3"], commands=[f"shallowpi eval --policy {tmp_path}/policies/L6"], ablations=False,
        regenerate=f"python scripts/study_metaworld.py --work {tmp_path}/w",
    )  # fmt: skip
    assert str(tmp_path) not in md
    assert "shallowpi eval --policy policies/L6" in md and "--work w" in md
