"""Policies and datasets named by a Hugging Face hub id (`org/name[@revision]`), resolved by huggingface_hub
itself from an offline cache this test lays out as the library does: `models--org--name/` with `blobs/`
(content-addressed files), `snapshots/<commit>/` (relative symlinks into blobs) and `refs/<branch or tag>`
(the commit), datasets as `datasets--org--name/` in LeRobot 0.6's `$HF_LEROBOT_HOME/hub` or in
LeRobot 0.4's `$HF_LEROBOT_HOME/org/name` folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill_helpers import random_teacher
from paths import find_reference
from shallowpi.cli import main
from shallowpi.hub import parse_hub_id, resolve_dataset, resolve_policy
from shallowpi.model import save_model

MAIN, OLD = "a1" * 20, "b2" * 20  # commit hashes
DATASET_COMMIT = "c3" * 20


def add_snapshot(cache: Path, repo_id: str, src: Path, commit: str, *, repo_type="model", refs=("main",)):
    """`src`'s files as one commit of `repo_id` in a huggingface_hub cache, laid out as the library lays it."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """An offline Hugging Face home: lab/teacher (main: a π0 teacher; tag v0.1: an older π0.5 one) in its hub
    cache, the LeRobot v3.0 sample as dataset lerobot/v3_small in LeRobot 0.6's dataset cache."""
    home = tmp_path / "hf"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_LEROBOT_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model(random_teacher("pi0", depth=2), tmp_path / "pi0")
    save_model(random_teacher("pi05", depth=2), tmp_path / "pi05")
    add_snapshot(home / "hub", "lab/teacher", tmp_path / "pi0", MAIN)
    add_snapshot(home / "hub", "lab/teacher", tmp_path / "pi05", OLD, refs=("v0.1",))
    data = find_reference() / "lerobot_dataset_v3_small"
    add_snapshot(home / "lerobot" / "hub", "lerobot/v3_small", data, DATASET_COMMIT, repo_type="dataset")
    return home


def test_parse_hub_id():
    ref = parse_hub_id("lerobot/pi05_base@v1.0")
    assert (ref.repo_id, ref.revision) == ("lerobot/pi05_base", "v1.0")
    assert parse_hub_id("lerobot/pi05_base").revision is None
    for path in ("/abs/folder", "./rel", "a/b/c", "../x/y", "folder", "synthetic:8", "a/b@"):
        assert parse_hub_id(path) is None, path


def test_policy_ids_resolve_from_the_offline_cache(hf_home, tmp_path, monkeypatch):
    repo = hf_home / "hub" / "models--lab--teacher" / "snapshots"
    assert resolve_policy("lab/teacher") == repo / MAIN  # refs/main
    assert resolve_policy(f"lab/teacher@{OLD}") == repo / OLD  # a commit hash
    assert resolve_policy("lab/teacher@v0.1") == repo / OLD  # a tag
    assert resolve_policy(tmp_path / "pi0") == tmp_path / "pi0"  # a folder stays a folder
    local = tmp_path / "lab" / "teacher"  # a folder that exists wins over the hub id it spells
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_policy("lab/teacher") == Path("lab/teacher")


def test_dataset_ids_resolve_from_lerobot_caches(hf_home, tmp_path, monkeypatch):
    snap = hf_home / "lerobot" / "hub" / "datasets--lerobot--v3_small" / "snapshots" / DATASET_COMMIT
    assert resolve_dataset("lerobot/v3_small") == snap  # LeRobot 0.6: a dataset snapshot in its hub cache
    assert resolve_dataset(f"lerobot/v3_small@{DATASET_COMMIT}") == snap
    # LeRobot <= 0.5: a plain folder $HF_LEROBOT_HOME/<repo_id> (no revision), e.g. left by --dataset.root
    home = tmp_path / "lerobot_home"
    monkeypatch.setenv("HF_LEROBOT_HOME", str(home))
    (home / "local" / "mine" / "meta").mkdir(parents=True)
    (home / "local" / "mine" / "meta" / "info.json").write_text("{}")
    assert resolve_dataset("local/mine") == home / "local" / "mine"
    with pytest.raises(FileNotFoundError) as e:  # $HF_LEROBOT_HOME moved: its hub cache went with it
        resolve_dataset("lerobot/v3_small")
    msg = str(e.value)
    assert "lerobot/v3_small" in msg and str(home / "hub") in msg and "\n" not in msg


def test_commands_take_hub_ids(hf_home, tmp_path, capsys):
    """distill's --teacher and --dataset, inspect's path, all by id; the student trains on the snapshot."""
    out = tmp_path / "out"
    args = ["--depth", "1", "--steps", "1", "--batch-size", "2", "--out", str(out), "--num-workers", "0"]
    assert main(["distill", "--teacher", "lab/teacher", "--dataset", "lerobot/v3_small", *args]) == 0
    assert (out / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["inspect", "lab/teacher@v0.1"]) == 0
    text = capsys.readouterr().out
    assert f"snapshots/{OLD}: pi05, depth 2" in text


def test_missing_id_offline_is_one_line(hf_home, capsys):
    """A missing id (or revision) offline: one line naming the id and the cache folder, exit 2. Once in a
    fresh process, where huggingface_hub reads HF_HUB_OFFLINE and the cache folder at import."""
    proc = subprocess.run(
        [sys.executable, "-m", "shallowpi", "inspect", "lerobot/pi05_base"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "lerobot/pi05_base" in lines[0] and str(hf_home / "hub") in lines[0]
    assert "HF_HUB_OFFLINE" in lines[0]
    assert main(["eval", "--policy", "lab/teacher@v9", "--tasks", "reach-v3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lab/teacher@v9" in err and str(hf_home / "hub") in err


def test_python_api_loads_a_policy_by_hub_id(hf_home):
    import shallowpi

    assert shallowpi.load_model("lab/teacher").config.variant == "pi0"  # refs/main
    assert shallowpi.load_model("lab/teacher@v0.1").config.variant == "pi05"  # the tag's older commit
    with pytest.raises(shallowpi.errors.UserError, match="lab/missing"):
        shallowpi.load_model("lab/missing")
