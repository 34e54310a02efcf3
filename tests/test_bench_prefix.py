"""`shallowpi bench --image-merge M --vision-depth N`: the preset's students get a compressed prefix, timed
with the teacher in one process; the JSON records each run's image tokens and SigLIP depth."""

from __future__ import annotations

import json
from pathlib import Path

from shallowpi.cli import main


def test_compare_compresses_the_students_prefix_not_the_teachers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--preset", "tiny", "--compare", "4,2", "--image-merge", "2", "--vision-depth", "1"]
    argv += [
        "--modes",
        "reference,engine",
        "--iters",
        "20",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    assert (r["settings"]["image_merge"], r["settings"]["vision_depth"]) == (2, 1)
    by = {(x["depth"], x["mode"]): x for x in r["runs"]}
    for mode in ("reference", "engine"):
        teacher, student = by[(4, mode)], by[(2, mode)]
        assert (teacher["image_merge"], teacher["image_tokens"], teacher["vision_depth"]) == (1, 16, 2)
        assert teacher["vision_layer_map"] is None and teacher["name"] == f"tiny_d4/{mode}"
        assert (student["image_merge"], student["image_tokens"], student["vision_depth"]) == (2, 4, 1)
        assert student["vision_layer_map"] == [0] and student["name"] == f"tiny_d2_m2_v1/{mode}"
    engine = by[(2, "engine")]
    assert engine["flops_counted"] == engine["flops"]  # torch's counter agrees with the compressed count
    assert engine["max_abs_diff_vs_first_mode"] < 1e-5  # the engine equals the reference on the student
    assert by[(2, "engine")]["flops"]["vision"] < by[(4, "engine")]["flops"]["vision"]
    ratio = next(x for x in r["ratios"] if x["run"] == "tiny_d2_m2_v1/engine")
    assert ratio["baseline"] == "tiny_d4/engine" and 0 < ratio["flops_ratio"] < 1


def test_a_single_depth_is_compressed_itself(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--preset", "tiny", "--depth", "2", "--image-merge", "4", "--modes", "engine"]
    argv += ["--iters", "20", "--warmup", "0", "--threads", "1", "--no-count-flops", "--out", str(out)]
    assert main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert (run["image_merge"], run["image_tokens"], run["vision_depth"]) == (4, 1, 2)
