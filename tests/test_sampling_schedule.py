"""A model's own time grid: recorded in config.json, followed by the reference sampler and the engine."""

from __future__ import annotations

import json
import math

import pytest
import torch

import shallowpi.infer.engine as engine_module
import shallowpi.model.pi as pi_module
from lerobot_helpers import save_tiny_student
from shallowpi.infer.engine import InferenceEngine
from shallowpi.lerobot_export import export_lerobot
from shallowpi.model import load_model, save_model
from shallowpi.model.checkpoint import CheckpointError, read_config
from shallowpi.model.config import check_time_grid, euler_steps, tiny, uniform_time_grid
from shallowpi.model.pi import PiModel
from shallowpi.observation import Observation

GRID = [1.0, 0.7, 0.2, 0.0]  # deliberately non-uniform


def _f32(ts: list[float]) -> list[float]:
    """t as the samplers hold it: a float32 tensor."""
    return torch.tensor(ts, dtype=torch.float32).tolist()


def _model(variant: str = "pi05", grid: list[float] | None = GRID) -> PiModel:
    torch.manual_seed(0)
    model = PiModel(tiny(variant).with_sampling(grid)).eval()
    with torch.no_grad():  # non-trivial weights: adaRMS dense and norms start at zero otherwise
        for p in model.parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.1)
    return model


def _inputs(cfg, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    return {
        "images": [torch.rand(1, 3, s, s, generator=g) * 2 - 1 for _ in cfg.cameras],
        "img_masks": [torch.ones(1, dtype=torch.bool) for _ in cfg.cameras],
        "tokens": torch.randint(0, cfg.vocab_size, (1, cfg.tokenizer_max_length), generator=g),
        "token_masks": torch.arange(cfg.tokenizer_max_length)[None] < 7,
        "state": torch.randn(1, 5, generator=g),
        "noise": torch.randn(1, cfg.chunk_size, cfg.max_action_dim, generator=g),
    }


def _args(x: dict) -> tuple[Observation]:
    return (Observation.from_lists(x["images"], x["img_masks"], x["tokens"], x["token_masks"], x["state"]),)


def _record_times(monkeypatch, module) -> list[float]:
    """Every t the module's time embedding is computed at (the t the velocity is evaluated at)."""
    seen: list[float] = []
    real = module.sincos_time_embedding

    def spy(t, *a, **kw):
        seen.extend(float(v) for v in t.flatten())
        return real(t, *a, **kw)

    monkeypatch.setattr(module, "sincos_time_embedding", spy)
    return seen


def test_time_grid_accessor_default_recorded_and_override() -> None:
    assert tiny().time_grid() == uniform_time_grid(10)
    assert uniform_time_grid(10)[:3] == [1.0, 1.0 - 0.1, 1.0 + 2 * -0.1]  # LeRobot's floats, then 0.0
    cfg = tiny().with_sampling(GRID)
    assert cfg.num_inference_steps == 3
    assert cfg.time_grid() == GRID and cfg.time_grid(3) == GRID  # its own schedule
    assert cfg.time_grid(2) == [1.0, 0.5, 0.0]  # an explicit other step count: naive uniform Euler
    assert cfg.time_grid(1) == [1.0, 0.0]
    # uniform Euler steps with exactly -1/steps (bit-identical to LeRobot), a recorded grid with its gaps
    assert [dt for _, dt in euler_steps(uniform_time_grid(10))] == [-0.1] * 10
    assert euler_steps(GRID) == [(1.0, 0.7 - 1.0), (0.7, 0.2 - 0.7), (0.2, -0.2)]


@pytest.mark.parametrize(
    ("grid", "problem"),
    [
        ([1.0, 0.5, 0.6, 0.0], "strictly decreasing"),
        ([1.0, 0.5, 0.5, 0.0], "strictly decreasing"),
        ([0.9, 0.5, 0.0], "start at 1.0 and end at 0.0"),
        ([1.0, 0.5, 0.1], "start at 1.0 and end at 0.0"),
        ([1.0, math.nan, 0.0], "finite"),
        ([1.0, math.inf, 0.0], "finite"),
        ([1.0], "at least 2"),
        (["a", 0.0], "list of numbers"),
    ],
)
def test_bad_time_grid_is_one_clear_error(grid, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        check_time_grid(grid)
    with pytest.raises(ValueError, match=problem):
        tiny().with_sampling(grid)


def test_recorded_grid_must_match_step_count() -> None:
    cfg = tiny().with_sampling(GRID)
    cfg.num_inference_steps = 5
    with pytest.raises(ValueError, match="has 3 steps but num_inference_steps is 5"):
        cfg.validate()


def test_reference_sampler_follows_the_recorded_grid(monkeypatch) -> None:
    model = _model()
    x = _inputs(model.config)
    seen = _record_times(monkeypatch, pi_module)
    trace = model.sample_trace(*_args(x), noise=x["noise"])
    assert trace.t == GRID[:-1]
    assert seen == _f32(GRID[:-1])  # the velocity is evaluated at exactly these t
    # Euler with the grid's own gaps: x_{k+1} = x_k + (t_{k+1} - t_k) v_k
    xk = x["noise"]
    for k, v in enumerate(trace.v_t):
        assert torch.equal(trace.x_t[k], xk)
        xk = xk + (GRID[k + 1] - GRID[k]) * v
    assert torch.equal(trace.actions, xk)
    # and it is not the uniform 3-step answer
    uniform = _model(grid=None)
    assert not torch.allclose(uniform.sample_actions(*_args(x), noise=x["noise"], num_steps=3), trace.actions)


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_engine_follows_the_recorded_grid_and_equals_reference(monkeypatch, variant: str) -> None:
    model = _model(variant)
    x = _inputs(model.config)
    ref = model.sample_actions(*_args(x), noise=x["noise"])
    engine = InferenceEngine(model, batch_size=1)
    seen = _record_times(monkeypatch, engine_module)
    out = engine.sample_actions(*_args(x), noise=x["noise"])
    assert seen == _f32(GRID[:-1])
    assert (out - ref).abs().max() < 1e-5
    # explicit num_steps overrides the recorded grid in both samplers (the naive baseline)
    naive_ref = model.sample_actions(*_args(x), noise=x["noise"], num_steps=2)
    naive = engine.sample_actions(*_args(x), noise=x["noise"], num_steps=2)
    assert seen[len(GRID) - 1 :] == [1.0, 0.5]  # uncached: the naive grid's conditioning is new
    assert (naive - naive_ref).abs().max() < 1e-5
    assert (naive - out).abs().max() > 1e-3


def test_k_step_student_round_trips_with_its_schedule(tmp_path) -> None:
    model = _model(grid=[1.0, 0.6, 0.0])
    x = _inputs(model.config)
    save_model(model, tmp_path / "student")
    raw = json.loads((tmp_path / "student" / "config.json").read_text())
    assert raw["num_inference_steps"] == 2  # LeRobot samples the same step count
    assert raw["shallowpi"]["sampling"] == {"num_steps": 2, "time_grid": [1.0, 0.6, 0.0]}
    loaded = load_model(tmp_path / "student")
    assert loaded.config.sampling_grid == [1.0, 0.6, 0.0]
    assert loaded.config.time_grid() == [1.0, 0.6, 0.0]
    a = model.sample_actions(*_args(x), noise=x["noise"])
    assert torch.equal(loaded.sample_actions(*_args(x), noise=x["noise"]), a)
    # a model without a recorded grid writes none (LeRobot's uniform sampler, config.json unchanged)
    save_model(_model(grid=None), tmp_path / "teacher")
    raw = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert "sampling" not in raw["shallowpi"] and raw["num_inference_steps"] == 10
    assert load_model(tmp_path / "teacher").config.sampling_grid is None


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda raw: raw.update(num_inference_steps=10), "num_inference_steps is 10; all three must agree"),
        (lambda raw: raw["shallowpi"]["sampling"].update(num_steps=3), "num_steps 3"),
        (lambda raw: raw["shallowpi"]["sampling"].update(time_grid=[1.0, 0.7, 0.8]), "time_grid"),
        (lambda raw: raw["shallowpi"].update(sampling=[1.0, 0.0]), "shallowpi.sampling must be"),
    ],
)
@pytest.mark.parametrize("layout", ["shallowpi", "plugin"])
def test_inconsistent_sampling_in_config_json_is_one_clear_error(tmp_path, edit, problem, layout) -> None:
    """shallowpi's folder and `to-lerobot`'s (the plugin's config.json, which LeRobot's policy build reads
    through the same check; e.g. a --policy.num_inference_steps override that disagrees with the grid)."""
    save_model(_model(grid=[1.0, 0.6, 0.0]), tmp_path / "s")
    folder = tmp_path / "s"
    if layout == "plugin":
        student = save_tiny_student(tmp_path / "student", sampling_grid=[1.0, 0.6, 0.0])
        folder = export_lerobot(student, tmp_path / "lerobot")
        assert json.loads((folder / "config.json").read_text())["type"] == "shallowpi"
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises((ValueError, CheckpointError), match=problem):
        read_config(folder)


def test_bench_samples_each_policy_with_its_own_schedule(tmp_path) -> None:
    """A 10-step teacher and a 2-step student benched in one process: each run records (and is timed and
    FLOP-counted with) its own schedule; an explicit step count applies to both."""
    from shallowpi.bench import BenchSettings, run_bench

    save_model(_model(grid=None), tmp_path / "teacher")
    save_model(_model(grid=[1.0, 0.6, 0.0]), tmp_path / "student")
    s = BenchSettings(
        preset=None, policies=[str(tmp_path / "teacher"), str(tmp_path / "student")], modes=["engine"]
    )
    s.warmup, s.iters, s.threads = 1, 3, 1
    runs = {r["name"].split("/")[0]: r for r in run_bench(s, log=lambda m: None)["runs"]}
    assert (runs["teacher"]["steps"], runs["student"]["steps"]) == (10, 2)
    assert runs["student"]["time_grid"] == [1.0, 0.6, 0.0]
    assert runs["student"]["flops"]["denoise"] * 5 == runs["teacher"]["flops"]["denoise"]
    assert runs["student"]["flops_counted"]["denoise"] * 5 == runs["teacher"]["flops_counted"]["denoise"]
    s.num_steps = 1
    runs = {r["name"].split("/")[0]: r for r in run_bench(s, log=lambda m: None)["runs"]}
    assert runs["teacher"]["steps"] == runs["student"]["steps"] == 1
    assert runs["student"]["time_grid"] == [1.0, 0.0]
