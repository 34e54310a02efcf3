"""`shallowpi export --format onnx`: onnxruntime (CPU) gives shallowpi's actions (fp32, same noise), the
numpy processor equals the torch one, and bad exports / inputs get one clear error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lerobot_helpers import META_WORLD_CAMERA, save_tiny_student
from onnx_helpers import ACTION_NORM, PROMPT_LENGTH, STATE_DIM, TEACHER, metaworld_sample
from reference_bundle import load_bundle
from shallowpi.cli import main
from shallowpi.data.processor import collate
from shallowpi.data.tokenizer import TESTBED_TOKENIZER
from shallowpi.distill.student import make_student
from shallowpi.export import onnx_export
from shallowpi.export.graphs import prefix_inputs
from shallowpi.export.onnx_export import ExportOptions, export_onnx, random_model
from shallowpi.infer.engine import InferenceEngine
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.model import PiModel, load_model
from shallowpi.model.checkpoint import load_state_dict
from shallowpi.model.config import pi05
from shallowpi.onnx_runtime import ManifestError, OnnxRunner, ProcessorError
from shallowpi.pretrained import load_processor
from test_lerobot_layout import write_lerobot05_folder

TOL = 1e-4


def _same_noise(predictor: ActionPredictor, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    noise = predictor.noise(seed)
    return noise, noise.numpy()


def test_teacher_actions_equal_engine(teacher_onnx):
    """Raw observation -> unnormalised actions: onnxruntime + numpy processor vs the torch predictor."""
    predictor = ActionPredictor.from_pretrained(TEACHER, device="cpu")
    runner = OnnxRunner(teacher_onnx)
    for seed in (0, 1):
        sample = metaworld_sample(seed)
        _, noise = _same_noise(predictor, seed)
        ref = predictor.predict(sample, seed=seed)
        out = runner.predict(sample, noise=noise)
        assert out.shape == ref.shape == (10, 4) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)
    assert not np.allclose(
        runner.predict(metaworld_sample(0), seed=0), runner.predict(metaworld_sample(1), seed=0)
    )


def test_l6_student_actions_equal_engine(tmp_path):
    teacher = load_model(TEACHER)
    student = make_student(teacher, depth=6).eval()
    pre, post = load_processor(TEACHER)
    out_dir = export_onnx(student, tmp_path / "l6", processor=(pre, post))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["model"]["depth"] == 6 and manifest["model"]["layer_map"] == [0, 3, 7, 10, 14, 17]
    assert manifest["graphs"]["prefix"]["outputs"][0]["shape"][0] == 6  # stacked per-layer K cache
    predictor = ActionPredictor(student, pre, post)
    sample = metaworld_sample(3, height=64, width=100)
    _, noise = _same_noise(predictor, 5)
    np.testing.assert_allclose(
        OnnxRunner(out_dir).predict(sample, noise=noise), predictor.predict(sample, seed=5), rtol=0, atol=TOL
    )


def test_step_distilled_student_exports_its_time_grid(tmp_path):
    """A student with a non-uniform 2-step grid: the manifest's schedule is that grid (not 2 uniform steps)
    and onnxruntime's actions equal the engine's on it."""
    student = save_tiny_student(tmp_path / "student", sampling_grid=[1.0, 0.6, 0.0])
    out_dir = onnx_export.export_policy(student, tmp_path / "onnx")
    schedule = json.loads((out_dir / "manifest.json").read_text())["schedule"]
    assert schedule == {"num_steps": 2, "times": [1.0, 0.6], "dts": [0.6 - 1.0, 0.0 - 0.6]}
    predictor = ActionPredictor.from_pretrained(student, device="cpu")
    rng = np.random.default_rng(2)
    sample = {
        "images": {META_WORLD_CAMERA: rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)},
        "state": rng.normal(size=4).astype(np.float32),
        "task": "reach the goal",
    }
    _, noise = _same_noise(predictor, 5)
    np.testing.assert_allclose(
        OnnxRunner(out_dir).predict(sample, noise=noise), predictor.predict(sample, seed=5), rtol=0, atol=TOL
    )


@pytest.mark.parametrize("name", ["pi05_tiny", "pi0_tiny"])
def test_reference_bundles_equal_engine_and_lerobot(reference_dir, tmp_path, name):
    """LeRobot 0.4.4's bundles at batch 2 (sample 1's third camera masked; π0 with its state token)."""
    bundle = load_bundle(reference_dir, name)
    model = PiModel(bundle.config).eval()
    load_state_dict(model, bundle.weights)
    obs = bundle.observation()
    noise = bundle.io["inputs.noise"]
    out_dir = export_onnx(model, tmp_path / name, ExportOptions(batch_size=2))
    ref = InferenceEngine(model, batch_size=2).sample_actions(obs, noise=noise).numpy()
    out = OnnxRunner(out_dir).sample(
        *(t.numpy() for t in prefix_inputs(obs)),
        None if obs.state is None else obs.state.numpy(),
        noise=noise.numpy(),
    )
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(out, bundle.io["sample.actions_padded"].numpy(), rtol=0, atol=TOL)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    denoise_inputs = [s["name"] for s in manifest["graphs"]["denoise"]["inputs"]]
    assert ("state" in denoise_inputs) == (name == "pi0_tiny")


def test_numpy_processor_equals_torch_processor(teacher_onnx):
    pre, _ = load_processor(TEACHER)
    proc = OnnxRunner(teacher_onnx).processor
    for sample in (metaworld_sample(7), metaworld_sample(8, height=50, width=64)):
        ref = pre(sample)
        out = proc(sample)
        np.testing.assert_allclose(out["images"], ref["images"].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out["tokens"], ref["tokens"].numpy())
        np.testing.assert_array_equal(out["token_masks"], ref["token_masks"].numpy())
        np.testing.assert_allclose(out["state"], ref["state"].numpy(), rtol=0, atol=1e-6)
    obs = collate([pre(metaworld_sample(7))])
    assert out["images"].shape == obs.images.shape[1:]


def test_export_cli_flags_and_manifest(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "shallowpi", "export", "--policy", str(TEACHER), "--format", "onnx",
           "--out", str(out), "--prompt-length", "32", "--num-steps", "4",
           "--cameras", "observation.images.base_0_rgb"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["cameras"]["exported"] == ["observation.images.base_0_rgb"]
    assert m["cameras"]["masked"] == ["observation.images.left_wrist_0_rgb"]
    assert m["model"]["prompt_length"] == 32 and m["processor"]["tokenizer_max_length"] == 32
    assert m["schedule"] == {"num_steps": 4, "times": [1.0, 0.75, 0.5, 0.25], "dts": [-0.25] * 4}
    spec = {s["name"]: s for s in m["graphs"]["prefix"]["inputs"]}
    assert spec["images"]["shape"] == [1, 1, 3, 64, 64] and spec["tokens"]["shape"] == [1, 32]
    action_norm = m["normalization"]["action"]
    low = "q01" if ACTION_NORM == "QUANTILES" else "mean"
    assert action_norm["mode"] == ACTION_NORM and len(action_norm[low]) == 4
    assert sorted(p.name for p in out.iterdir()) == [
        "denoise.onnx", "denoise.onnx.data", "manifest.json", "prefix.onnx", "prefix.onnx.data", "tokenizer.model"
    ]  # fmt: skip
    # The camera the export dropped is not needed any more; the exported one still is.
    runner = OnnxRunner(out)
    sample = metaworld_sample(0)
    del sample["images"]["observation.images.gripperPOV"]
    assert runner.predict(sample, seed=0).shape == (10, 4)


def _lerobot_pi0_folder(d):
    """A π0 folder as LeRobot 0.4.4 writes it: its processor files only (pi0_new_line_processor: the task is
    not cleaned), no shallowpi_processor.json, no tokenizer file (the tokenizer step names a Hub id)."""
    save_tiny_student(d, variant="pi0")
    for name in ("shallowpi_processor.json", "tokenizer.model"):
        (d / name).unlink()
    pre = json.loads((d / "policy_preprocessor.json").read_text())
    tok = next(s for s in pre["steps"] if s["registry_name"] == "tokenizer_processor")["config"]
    tok.pop("tokenizer_file")
    tok["tokenizer_name"] = "google/paligemma-3b-pt-224"
    (d / "policy_preprocessor.json").write_text(json.dumps(pre))
    return d


LEROBOT_FOLDERS = {  # name: (write the folder, a raw sample for it)
    "pi05 LeRobot 0.5+": (
        write_lerobot05_folder,
        {"images": {"observation.images.front": (56, 56), "observation.images.wrist": (40, 56)}, "state": 6},
    ),
    "pi0 LeRobot 0.4.4": (_lerobot_pi0_folder, {"images": {META_WORLD_CAMERA: (48, 64)}, "state": 4}),
}


@pytest.mark.parametrize("name", list(LEROBOT_FOLDERS))
def test_lerobot_layout_folder_exports_with_its_processor(tmp_path, monkeypatch, capsys, name):
    """`shallowpi export` of a folder with LeRobot's processor files only: the manifest carries that processor
    and the runner gives the torch engine's actions on raw samples (π0: LeRobot's uncleaned task)."""
    monkeypatch.delenv("SHALLOWPI_TOKENIZER", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no_hf"))  # the tokenizer comes from --tokenizer only
    write, shape = LEROBOT_FOLDERS[name]
    d = write(tmp_path / "policy")
    assert not (d / "shallowpi_processor.json").exists()
    argv = ["export", "--policy", str(d), "--format", "onnx", "--out", str(tmp_path / "onnx")]
    assert main(argv) == 2 and "--tokenizer PATH" in capsys.readouterr().err
    assert main([*argv, "--tokenizer", str(TESTBED_TOKENIZER)]) == 0

    pre, post = load_processor(d, tokenizer=TESTBED_TOKENIZER)
    runner = OnnxRunner(tmp_path / "onnx")
    assert runner.processor is not None, "exported without its processor"
    assert (
        runner.processor.config.clean_pi0_task == pre.config.clean_pi0_task == (name != "pi0 LeRobot 0.4.4")
    )
    predictor = ActionPredictor(load_model(d), pre, post)
    rng = np.random.default_rng(0)
    for i, task in enumerate(["open_the_drawer", "  pick up the cube\n"]):
        sample = {
            "images": {
                k: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for k, hw in shape["images"].items()
            },
            "state": rng.normal(size=shape["state"]).astype(np.float32),
            "task": task,
        }
        _, noise = _same_noise(predictor, i)
        ref = predictor.predict(sample, seed=i)
        np.testing.assert_allclose(runner.predict(sample, noise=noise), ref, rtol=0, atol=TOL)


# bad input ---------------------------------------------------------------------------------------------------


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_graph_is_one_clear_error(teacher_onnx, tmp_path):
    d = _copy(teacher_onnx, tmp_path / "no_graph")
    (d / "denoise.onnx").unlink()
    with pytest.raises(ManifestError, match=r"graph 'denoise' file 'denoise.onnx' is missing"):
        OnnxRunner(d)
    d = _copy(teacher_onnx, tmp_path / "no_data")
    (d / "prefix.onnx.data").unlink()
    with pytest.raises(ManifestError, match=r"'prefix.onnx.data' is missing"):
        OnnxRunner(d)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        OnnxRunner(tmp_path)


def test_manifest_disagreeing_with_graphs_is_one_clear_error(teacher_onnx, tmp_path):
    d = _copy(teacher_onnx, tmp_path / "bad_manifest")
    m = json.loads((d / "manifest.json").read_text())
    tokens = [i for i, s in enumerate(m["graphs"]["prefix"]["inputs"]) if s["name"] == "tokens"][0]
    m["graphs"]["prefix"]["inputs"][tokens]["shape"] = [1, PROMPT_LENGTH - 1]
    m["graphs"]["denoise"]["outputs"][0]["name"] = "v_t"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        ManifestError,
        match=rf"input 'tokens': manifest \[1, {PROMPT_LENGTH - 1}\] int64, graph \[1, {PROMPT_LENGTH}\] int64",
    ):
        OnnxRunner(d)
    m["graphs"]["prefix"]["inputs"][tokens]["shape"] = [1, PROMPT_LENGTH]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"output 'v_t' is in the manifest but not in the graph"):
        OnnxRunner(d)


def test_wrong_observation_shape_is_one_clear_error(teacher_onnx):
    runner = OnnxRunner(teacher_onnx)
    good = runner.processor(metaworld_sample(0))
    batch = {k: v[None] for k, v in good.items()}
    with pytest.raises(
        ProcessorError, match=r"images: expected shape \[1, 2, 3, 64, 64\].*got \[1, 2, 3, 56, 56\]"
    ):
        runner.sample(**{**batch, "images": np.zeros((1, 2, 3, 56, 56), np.float32)})
    with pytest.raises(ProcessorError, match=r"noise: expected shape \[1, 10, 32\]"):
        runner.sample(**batch, noise=np.zeros((1, 10, 4), np.float32))
    bad_state = {**metaworld_sample(0), "state": np.zeros(STATE_DIM + 1, np.float32)}
    with pytest.raises(
        ProcessorError, match=rf"state must have shape \({STATE_DIM},\), got \({STATE_DIM + 1},\)"
    ):
        runner.predict(bad_state)
    bad_image = metaworld_sample(0)
    bad_image["images"]["observation.images.corner4"] = np.zeros((64, 64), np.uint8)
    with pytest.raises(ProcessorError, match="camera 'observation.images.corner4': expected an RGB image"):
        runner.predict(bad_image)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    teacher = load_model(TEACHER)
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(args[2].name)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    real = onnx_export._export_graph
    monkeypatch.setattr(onnx_export, "_export_graph", fail_second)
    with pytest.raises(RuntimeError, match="disk full"):
        export_onnx(teacher, tmp_path / "out")
    assert calls == ["prefix.onnx", "denoise.onnx"]
    assert list(tmp_path.iterdir()) == []  # no out folder, no staging folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    with pytest.raises(ValueError, match="is not an earlier export"):
        export_onnx(teacher, tmp_path / "mine")


# full size ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_pi05_depth6_exports_in_float16_and_loads(tmp_path):
    """Real π0.5 sizes (SigLIP So400m, Gemma 2B + 300M widths, 257k vocabulary) at depth 6, random weights."""
    torch.manual_seed(0)
    model = random_model(pi05().with_depth(6))
    out = export_onnx(model, tmp_path / "pi05_l6_fp16", ExportOptions(dtype="float16"), inplace=True)
    del model
    data = sum(p.stat().st_size for p in out.glob("*.onnx.data"))
    assert data > 3e9  # ~1.7 B parameters in fp16: above the 2 GB protobuf limit, hence external data
    runner = OnnxRunner(out)
    m = runner.manifest
    keys = m.spec("prefix", "outputs", "prefix_keys")
    assert keys.shape == (6, 1, 1, 3 * 256 + 200, 256) and keys.dtype == "float16"
    shape = m.spec("prefix", "inputs", "images").shape
    rng = np.random.default_rng(0)
    actions = runner.sample(
        rng.uniform(-1, 1, shape).astype(np.float32),
        np.ones(shape[:2], dtype=bool),
        rng.integers(0, 257152, (1, 200)),
        np.arange(200)[None] < 30,
        seed=0,
    )
    assert actions.shape == (1, 50, 32) and np.isfinite(actions).all()


# TensorRT build script (no TensorRT here: a stand-in trtexec checks what the script asks of it) ------------

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [[ "$1" == "--help" ]]; then echo "  --stronglyTyped  Create a strongly typed network"; exit 0; fi
echo "$@" >> "$(dirname "$0")/calls.txt"
for a in "$@"; do case "$a" in --loadInputs=*) IFS=, read -ra specs <<< "${a#--loadInputs=}";
  for s in "${specs[@]}"; do [[ -f "${s#*:}" ]] || { echo "missing input ${s#*:}"; exit 1; }; done;; esac; done
echo "[I] GPU Compute Time: min = 0.5 ms, max = 0.9 ms, mean = 0.6 ms, median = 0.55 ms, percentile(90%) = 0.8 ms"
"""


def test_trt_build_script(tmp_path):
    script = TEACHER.parents[3] / "benchmarks" / "trt_build.sh"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": sys.executable}
    skipped = subprocess.run([str(script), str(tmp_path / "none")], capture_output=True, text=True, env=env)
    assert skipped.returncode == 0 and "trtexec not found" in skipped.stdout
    assert not (tmp_path / "none").exists()

    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    out = tmp_path / "trt"
    proc = subprocess.run(
        [str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**env, "TRTEXEC": str(fake), "TRT_MODELS": "teacher"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    calls = (fake.parent / "calls.txt").read_text().splitlines()
    assert len(calls) == 4  # prefix + denoise, fp32 + fp16
    fp16 = [c for c in calls if "teacher_float16" in c]
    assert len(fp16) == 2 and all("--stronglyTyped" in c for c in fp16)
    assert all("--stronglyTyped" not in c and "--fp16" not in c for c in calls if "teacher_float32" in c)
    timing = json.loads((out / "trt_timing.json").read_text())
    assert timing["teacher_float16"]["fp16"]["policy_ms"] == pytest.approx(0.55 + 10 * 0.55)
    assert set(timing) == {"teacher_float16", "teacher_float32"}
