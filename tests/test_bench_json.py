"""`shallowpi bench` on a small CPU config: one JSON with every field, ratios, a plot, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shallowpi.bench import MODES, SCHEMA
from shallowpi.cli import main


def test_bench_json_has_every_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--preset",
        "tiny",
        "--compare",
        "1,2",
        "--modes",
        "reference,engine,engine_nocompact",
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
    assert r["schema"] == SCHEMA
    for key in ("created", "environment", "settings", "timing", "memory_method", "runs", "ratios", "plot"):
        assert key in r, key
    assert r["settings"]["cameras_valid"] == 2 and r["settings"]["camera_slots"] == 3
    assert {(x["depth"], x["mode"]) for x in r["runs"]} == {
        (d, m) for d in (1, 2) for m in ("reference", "engine", "engine_nocompact")
    }
    for run in r["runs"]:
        lat = run["latency_ms"]
        assert lat["n"] == 20 and 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
        assert set(run["flops"]) == {"vision", "prefix", "denoise", "total"}
        assert run["memory"]["peak_mb"] > 0 and run["memory"]["delta_mb"] >= 0
        assert run["params"] > 0 and run["weights_mb"] > 0
        if run["mode"].startswith("engine"):
            assert set(run["stages_ms"]) == {"vision", "prefix", "denoise"}
            assert run["flops_counted"] == run["flops"]  # torch's counter agrees with the config count
            assert run["max_abs_diff_vs_first_mode"] < 1e-5  # same answer as the reference path
        else:
            assert run["stages_ms"] is None
    by = {(x["depth"], x["mode"]): x for x in r["runs"]}
    # skipping the masked slot and padding does less work
    assert by[(2, "engine")]["flops"]["total"] < by[(2, "engine_nocompact")]["flops"]["total"]
    model_ratios = [x for x in r["ratios"] if x["kind"] == "model"]
    assert {x["baseline"] for x in model_ratios} == {
        "tiny_d2/reference",
        "tiny_d2/engine",
        "tiny_d2/engine_nocompact",
    }
    for x in model_ratios:
        assert 0 < x["flops_ratio"] < 1 and x["latency_median_ratio"] > 0
    if r["plot"]:  # matplotlib installed (the `plot` extra)
        assert Path(r["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_bench_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", "--preset", "tiny", "--iters", "5", "--out", str(out)]) == 2
    assert "--iters must be >= 20" in capsys.readouterr().err
    assert main(["bench", "--preset", "tiny", "--modes", "turbo", "--out", str(out)]) == 2
    assert "unknown mode 'turbo'" in capsys.readouterr().err
    assert main(["bench", "--preset", "tiny", "--modes", "cuda_graph", "--out", str(out)]) == 2
    assert "cuda_graph modes need --device cuda" in capsys.readouterr().err
    assert main(["bench", "--preset", "tiny", "--cameras", "4", "--modes", "engine", "--out", str(out)]) == 2
    assert "cameras must be in [1, 3]" in capsys.readouterr().err
    assert not out.exists()


def test_all_modes_are_documented() -> None:
    import shallowpi.bench as bench

    for mode in MODES:
        assert mode in bench.__doc__


@pytest.mark.slow
def test_bench_compiled_mode_on_cpu(tmp_path: Path) -> None:
    """torch.compile of the Euler loop (needs a C++ compiler): same answer as the reference path."""
    out = tmp_path / "c.json"
    assert (
        main(
            ["bench", "--preset", "tiny", "--modes", "reference,compiled", "--iters", "20", "--out", str(out)]
        )
        == 0
    )
    runs = json.loads(out.read_text())["runs"]
    assert runs[1]["mode"] == "compiled" and runs[1]["max_abs_diff_vs_first_mode"] < 1e-5
