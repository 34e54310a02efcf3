"""benchmarks/prefix_cost.py: the rows it measures, their FLOPs per stage, and a run on the tiny preset
(full size is the user's run); the students it builds share the teacher's tensors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

from paths import REPO
from shallowpi.bench.students import shared_random_models
from shallowpi.model.config import tiny


def _script():
    spec = importlib.util.spec_from_file_location("prefix_cost", REPO / "benchmarks" / "prefix_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_full_size_rows_and_flops_without_building_a_model(tmp_path: Path) -> None:
    out = _script().main(["--flops-only", "--out", str(tmp_path / "flops.json")])
    assert (
        out["command"] == "python benchmarks/prefix_cost.py --flops-only"
    )  # reproduces it; --out is not part
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == [
        "teacher_L18_K10",
        "L6_K10",
        "L6_K2",
        "L6_K2_merge2",
        "L6_K2_vision14",
        "L6_K2_merge2_vision14",
    ]
    teacher, student = rows["teacher_L18_K10"], rows["L6_K2_merge2_vision14"]
    assert (teacher["image_tokens"], teacher["vision_depth"], teacher["steps"]) == (256, 27, 10)
    assert (student["image_tokens"], student["vision_depth"], student["steps"], student["depth"]) == (
        64,
        14,
        2,
        6,
    )
    assert len(student["vision_layer_map"]) == 14 and student["vision_layer_map"][-1] == 26
    assert rows["L6_K2_merge2"]["flops"]["vision"] == rows["L6_K2"]["flops"]["vision"]  # merge: backbone only
    assert rows["L6_K2_vision14"]["flops"]["prefix"] == rows["L6_K2"]["flops"]["prefix"]  # tower: vision only
    assert (
        student["flops"]["total"] < rows["L6_K2_merge2"]["flops"]["total"] < rows["L6_K2"]["flops"]["total"]
    )
    assert out["targets"]["flops_ratio"] == student["flops_ratio"]["total"]
    assert "latency_ratio" not in out["targets"] and "bench" not in out
    assert json.loads((tmp_path / "flops.json").read_text())["rows"] == out["rows"]


def test_tiny_run_times_every_row_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    out = _script().main(["--preset", "tiny", "--threads", "1", "--out", str(path)])
    assert [r["name"] for r in out["rows"]][0] == "teacher_L4_K10" and len(out["rows"]) == 6
    pids = {run["pid"] for run in out["bench"]["runs"]}
    assert len(pids) == 1 and len(out["bench"]["runs"]) == 6
    for r in out["rows"]:
        assert r["latency_ms"]["total"] > 0 and set(r["latency_ms"]) == {
            "total",
            "vision",
            "prefix",
            "denoise",
        }
        assert r["flops_counted"] == r["flops"]  # torch's counter agrees on every compressed row
    assert out["rows"][-1]["image_tokens"] == 4 and out["rows"][-1]["vision_depth"] == 1
    assert out["bench"]["settings"]["iters"] == 3 and "3 timed calls after 1 warm-up" in out["timing_note"]
    assert {"latency_ratio", "latency_met", "flops_met"} <= set(out["targets"])
    text = path.read_text()
    assert str(tmp_path) not in text and str(REPO) not in text  # paths relative, if any


def test_students_share_the_teachers_tensors_where_shapes_match() -> None:
    teacher_cfg = tiny("pi05", 4)
    student_cfg = teacher_cfg.with_depth(2).with_prefix(merge=2, vision_depth=1, vision_layer_map=[0])
    (_, teacher), (_, student) = shared_random_models([("t", teacher_cfg), ("s", student_cfg)])
    assert (
        student.vlm.layers[1] is teacher.vlm.layers[1]
        and student.vlm.embed_tokens is teacher.vlm.embed_tokens
    )
    assert student.vision.encoder.layers[0] is teacher.vision.encoder.layers[0]
    assert student.projector.weight.shape == (64, 4 * 32) and student.projector is not teacher.projector
    assert not any(p.is_meta for p in student.parameters())
    assert student.projector.weight.std() > 0  # its own random weights
    assert torch.equal(student.vlm.layers[0].mlp.down_proj.weight, teacher.vlm.layers[0].mlp.down_proj.weight)
