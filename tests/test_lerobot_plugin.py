"""Both ways with the real LeRobot, 0.4.4 and 0.6.1 (each in its own virtualenv, built once and cached by
tests/lerobot_venv.py; every test taking the `lerobot` fixture runs against both): folders LeRobot writes are
read by shallowpi, and shallowpi students run inside LeRobot through the `lerobot_policy_shallowpi` plugin
(lerobot-eval, lerobot-train, its policy API). LeRobot 0.6.1 also builds its own tiny π policies here, so
shallowpi's actions are checked against its sampled ones, fresh and after LeRobot fine-tuned them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lerobot_helpers import PLUGIN_PIPELINES, SCRIPTS, pipeline_steps, save_tiny_student
from paths import find_reference
from reference_bundle import load_bundle
from serve_process import serving
from shallowpi.cli import main
from shallowpi.data.tokenizer import TESTBED_TOKENIZER
from shallowpi.infer.predictor import ActionPredictor, RTCRequest
from shallowpi.lerobot_export import export_lerobot
from shallowpi.model import load_model
from shallowpi.pretrained import load_processor

NOISE_SEED = 11  # write_pi_folder.py draws LeRobot's noise as ActionPredictor.noise(11) does
ATOL = 1e-5  # shallowpi vs LeRobot's sampled actions (fp32, CPU); measured <= 4.8e-7


def libero_sample(io: dict) -> dict:
    """The raw observation write_pi_folder.py gave LeRobot (two cameras, LIBERO keys), as shallowpi takes it."""
    return {
        "images": {
            "observation.images.image": io["image"],
            "observation.images.wrist_image": io["wrist_image"],
        },
        "state": io["state_raw"],
        "task": "pick_up the red cube",
    }


def _with_sizes(folder: Path, sizes: dict) -> Path:
    """A LeRobot π config.json has no size fields (PaliGemma 3B is implied): add the tiny sizes LeRobot was
    built with, as shallowpi's "shallowpi" object."""
    raw = json.loads((folder / "config.json").read_text())
    raw["shallowpi"] = sizes
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize("variant", ["pi05", "pi0"])
def test_folder_written_by_lerobot_is_read_by_shallowpi(variant, tmp_path, lerobot):
    """LeRobot's config save_pretrained + its own make_pi0(5)_pre_post_processors pipelines' save_pretrained
    (tokenizer step over a local tokenizer; it still names google/paligemma-3b-pt-224). shallowpi gives the
    same prompt tokens, normalised state and unnormalised actions as LeRobot's pipelines. 0.6.1 also writes
    the weights (its own tiny PI0(5)Policy.save_pretrained) and shallowpi's chunk equals its sampled one."""
    d, io_path = tmp_path / variant, tmp_path / "io.safetensors"
    bundle = load_bundle(find_reference(), f"{variant}_tiny")
    sizes = bundle.config_json["shallowpi"]
    (tmp_path / "sizes.json").write_text(json.dumps(sizes))
    builds_policy = lerobot.version != "0.4.4"  # 0.4.4's π needs openpi's patched transformers
    extra = ["--sizes", tmp_path / "sizes.json"] if builds_policy else []
    lerobot.run([SCRIPTS / "write_pi_folder.py", variant, d, TESTBED_TOKENIZER, io_path, *extra], timeout=600)
    assert not (d / "tokenizer.model").exists() and not (d / "shallowpi_processor.json").exists()
    _with_sizes(d, sizes)
    if not builds_policy:  # weights from LeRobot 0.4.4's own PI0(5)Policy state_dict (the reference bundle)
        shutil.copyfile(find_reference() / f"{variant}_tiny" / "weights.safetensors", d / "model.safetensors")

    io = load_file(str(io_path))
    pre, post = load_processor(d, tokenizer=TESTBED_TOKENIZER)
    # LeRobot 0.4.4 bins π0.5's zero-padded state in the prompt, 0.5+ the real dims
    assert pre.config.pad_state_in_prompt == (variant == "pi05" and lerobot.version == "0.4.4")
    sample = libero_sample(io)
    ex = pre(sample)
    assert torch.equal(ex["tokens"], io["tokens"][0])
    assert torch.equal(ex["token_masks"], io["token_mask"][0])
    torch.testing.assert_close(ex["state"][:8], io["state_norm"][0].reshape(-1)[:8], atol=1e-6, rtol=0)
    padded = torch.nn.functional.pad(io["action_norm"], (0, 32 - 7))
    torch.testing.assert_close(post(padded), io["action"], atol=1e-5, rtol=1e-6)
    assert ex["image_masks"].tolist() == [True, True, False]  # right wrist: nothing renamed onto it

    chunk = ActionPredictor(load_model(d), pre, post).predict(sample, seed=NOISE_SEED)
    assert chunk.shape == (10, 7) and np.isfinite(chunk).all()
    if builds_policy:  # LeRobot's predict_action_chunk + postprocessor, same noise
        np.testing.assert_allclose(chunk, io["chunk"][0].numpy(), atol=ATOL, rtol=0)


def test_lerobot_policy_matches_shallowpi(tmp_path, lerobot):
    """One fixed observation and noise: the chunk from LeRobot's loaded policy (factory, processors,
    predict_action_chunk) equals shallowpi's within 1e-5; select_action's first action is its first row. The
    policy loaded inside torch.inference_mode samples the same chunk in and out of it."""
    student = save_tiny_student(tmp_path / "student")
    folder = export_lerobot(student, tmp_path / "lerobot")
    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 480, 480, generator=g)  # what LeRobot's Meta-World env gives: corner2 480 x 480
    state = torch.tensor([0.05, 0.6, 0.2, 0.4])
    task = "Reach the goal position"
    ours = ActionPredictor.from_pretrained(student, device="cpu")
    seed = 11
    noise = ours.noise(seed)
    expected = ours.predict(
        {"images": {"observation.image": image}, "state": state.numpy(), "task": task}, seed=seed
    )
    io_in, io_out = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors"
    save_file({"image": image, "state": state, "noise": noise.contiguous()}, str(io_in))
    (tmp_path / "task.txt").write_text(task)
    out = lerobot.run([SCRIPTS / "policy_chunk.py", folder, io_in, io_out], timeout=600)
    assert "ShallowPiPolicy" in out.stdout
    got = load_file(str(io_out))
    assert got["chunk"].shape == (1, 10, 4)
    np.testing.assert_allclose(got["chunk"][0].numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["first_action"][0].numpy(), expected[0], atol=1e-5, rtol=0)
    for key in ("chunk_im_inside", "chunk_im_outside"):  # loaded and sampled under torch.inference_mode
        np.testing.assert_array_equal(got[key].numpy(), got["chunk"].numpy())


def test_lerobot_policy_runs_a_prefix_compressed_student(tmp_path, lerobot):
    """A student with image tokens merged 2 x 2 and 1 of 2 SigLIP layers, loaded by LeRobot through the plugin:
    the same chunk as shallowpi's (the plugin keeps the merge and the tower from config.json)."""
    student = save_tiny_student(tmp_path / "student", merge=2, vision_depth=1)
    folder = export_lerobot(student, tmp_path / "lerobot")
    shallowpi_cfg = json.loads((folder / "config.json").read_text())["shallowpi"]
    assert shallowpi_cfg["vision"]["merge"] == 2 and shallowpi_cfg["vision_layer_map"] == [0]
    g = torch.Generator().manual_seed(6)
    image = torch.rand(3, 480, 480, generator=g)
    state = torch.tensor([0.1, 0.5, 0.3, 0.2])
    task = "Reach the goal position"
    ours = ActionPredictor.from_pretrained(student, device="cpu")
    noise = ours.noise(11)
    expected = ours.predict(
        {"images": {"observation.image": image}, "state": state.numpy(), "task": task}, seed=11
    )
    io_in, io_out = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors"
    save_file({"image": image, "state": state, "noise": noise.contiguous()}, str(io_in))
    (tmp_path / "task.txt").write_text(task)
    out = lerobot.run([SCRIPTS / "policy_chunk.py", folder, io_in, io_out], timeout=600)
    assert "ShallowPiPolicy" in out.stdout
    np.testing.assert_allclose(load_file(str(io_out))["chunk"][0].numpy(), expected, atol=1e-5, rtol=0)


GRID = [1.0, 0.6, 0.0]  # a step-distilled student's non-uniform 2-step grid


def test_lerobot_policy_samples_a_step_distilled_student_on_its_grid(tmp_path, lerobot):
    """A 2-step student with a non-uniform Euler time grid: config.json carries the grid, and LeRobot's loaded
    plugin policy samples on it (its chunk equals shallowpi's; LeRobot's own uniform 2 steps would differ),
    also after the policy's save_pretrained round trip (what lerobot-train checkpoints) and, in 0.6.1, with
    real-time chunking."""
    student = save_tiny_student(tmp_path / "student", sampling_grid=GRID)
    folder = export_lerobot(student, tmp_path / "lerobot")
    raw = json.loads((folder / "config.json").read_text())
    assert raw["num_inference_steps"] == 2
    assert raw["shallowpi"]["sampling"] == {"num_steps": 2, "time_grid": GRID}
    assert load_model(folder).config.time_grid() == GRID  # shallowpi reads the exported folder the same
    g = torch.Generator().manual_seed(7)
    image, state = torch.rand(3, 480, 480, generator=g), torch.tensor([0.05, 0.6, 0.2, 0.4])
    sample = {"images": {"observation.image": image}, "state": state.numpy(), "task": "Reach the goal"}
    ours = ActionPredictor.from_pretrained(student, device="cpu")
    expected = ours.predict(sample, seed=11)
    plain = load_model(student)
    plain.config = plain.config.with_sampling(None)  # LeRobot's uniform 2 steps: what a lost grid samples
    uniform = ActionPredictor(plain, ours.pre, ours.post).predict(sample, seed=11)
    assert np.abs(uniform - expected).max() > 2e-3  # the grid changes the actions (measured 9.0e-3)
    io = {"image": image, "state": state, "noise": ours.noise(11).contiguous()}
    rtc = lerobot.version != "0.4.4"  # policy_chunk.py's RTC part needs 0.5+'s rollout module
    if rtc:
        io["rtc_prev"] = torch.randn(7, 4, generator=g)
    io_in, io_out, resaved = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors", tmp_path / "re"
    save_file(io, str(io_in))
    (tmp_path / "task.txt").write_text(sample["task"])
    lerobot.run([SCRIPTS / "policy_chunk.py", folder, io_in, io_out, resaved], timeout=600)
    got = load_file(str(io_out))
    np.testing.assert_allclose(got["chunk"][0].numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["chunk_resaved"][0].numpy(), expected, atol=1e-5, rtol=0)
    assert json.loads((resaved / "config.json").read_text())["shallowpi"]["sampling"]["time_grid"] == GRID
    assert load_model(resaved).config.time_grid() == GRID
    if rtc:
        prev = ours.post(io["rtc_prev"]).numpy()
        guided = ours.predict(sample, seed=11, rtc=RTCRequest(prev, 2))
        np.testing.assert_allclose(got["chunk_rtc"][0].numpy(), guided, atol=1e-5, rtol=0)


def test_lerobot_refuses_a_step_count_that_disagrees_with_the_grid(tmp_path, lerobot061):
    """`--policy.num_inference_steps=3` (how lerobot-eval passes it) on a 2-step grid student: building the
    policy is one error naming the grid and both counts, not a silent sampler on another grid (the check is
    shallowpi's config reader, the same in 0.4.4)."""
    folder = export_lerobot(save_tiny_student(tmp_path / "student", sampling_grid=GRID), tmp_path / "lerobot")
    code = (
        "import sys\n"
        "from lerobot.configs.policies import PreTrainedConfig\n"
        "from lerobot.policies.factory import get_policy_class\n"
        "from lerobot.utils.import_utils import register_third_party_plugins\n"
        "register_third_party_plugins()\n"
        "cfg = PreTrainedConfig.from_pretrained(sys.argv[1], cli_overrides=['--num_inference_steps=3'])\n"
        "get_policy_class(cfg.type).from_pretrained(sys.argv[1], config=cfg)\n"
    )
    problem = r"UserError: config.json: shallowpi.sampling has num_steps 2 and a 2-step time_grid, "
    with pytest.raises(AssertionError, match=problem + "num_inference_steps is 3; all three must agree"):
        lerobot061.run(["-c", code, folder], timeout=300)


def test_lerobot_eval_metaworld(tmp_path, lerobot):
    """`lerobot-eval --policy.path=<student> --env.type=metaworld` runs to the end (1 episode of 500 steps;
    renders made cheap by the venv's fast-render hook) and writes its eval_info.json."""
    student = save_tiny_student(tmp_path / "student")
    folder = export_lerobot(student, tmp_path / "lerobot")
    out_dir = tmp_path / "eval"
    lerobot.run(
        [
            f"--policy.path={folder}",
            "--env.type=metaworld",
            "--env.task=reach-v3",
            "--eval.n_episodes=1",
            "--eval.batch_size=1",
            "--policy.device=cpu",
            f"--output_dir={out_dir}",
        ],
        script="lerobot-eval",
        timeout=1800,
        env={"SHALLOWPI_FAST_RENDER": "1"},
    )
    info = json.loads((out_dir / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 1
    assert 0.0 <= info["overall"]["pc_success"] <= 100.0


@pytest.fixture(scope="module")
def lerobot_dataset(lerobot, tmp_path_factory) -> Path:
    """A tiny LeRobotDataset written by that LeRobot (make_dataset.py), shared by the lerobot-train tests."""
    root = tmp_path_factory.mktemp(f"dataset{lerobot.version}") / "data"
    lerobot.run([SCRIPTS / "make_dataset.py", root], timeout=600)
    return root


def _train(lerobot, args: list[str], out_dir: Path, steps: int) -> None:
    """lerobot-train on the CPU for `steps` steps, a checkpoint at the last, no evaluation, no logging."""
    common = [f"--output_dir={out_dir}", f"--steps={steps}", "--batch_size=2", "--num_workers=0"]
    common += [f"--save_freq={steps}", "--log_freq=1", f"{lerobot.eval_freq_flag}=0", "--wandb.enable=false"]
    lerobot.run([*args, *common], script="lerobot-train", timeout=1200)


def test_lerobot_train_checkpoint_loads_in_shallowpi(tmp_path, lerobot, lerobot_dataset):
    """`lerobot-train --policy.type=shallowpi` on a LeRobotDataset written by LeRobot completes a few steps;
    shallowpi loads the checkpoint it saved (weights, processor, tokenizer) and samples from it."""
    root = lerobot_dataset
    out_dir = tmp_path / "train"
    policy = ["--policy.type=shallowpi", "--policy.preset=tiny", "--policy.depth=2", "--policy.device=cpu"]
    data = ["--dataset.repo_id=local/shallowpi_tiny", f"--dataset.root={root}"]
    _train(lerobot, [*data, *policy, "--policy.push_to_hub=false"], out_dir, steps=3)
    ckpt = out_dir / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file()
    # LeRobot's normaliser steps hold the stats: what its --resume / --policy.path overrides name
    assert pipeline_steps(ckpt) == PLUGIN_PIPELINES
    model = load_model(ckpt)
    assert model.config.depth == 2 and model.config.cameras == ("observation.image",)
    pre, post = load_processor(ckpt)
    assert pre.state_dim == 4 and post.action_dim == 4
    stats = json.loads((root / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(pre.state_stats["q01"].numpy(), stats["observation.state"]["q01"], rtol=1e-6)
    sample = {
        "images": {"observation.image": np.zeros((56, 56, 3), np.uint8)},
        "state": np.zeros(4, np.float32),
        "task": "reach the goal",
    }
    chunk = ActionPredictor(model, pre, post).predict(sample, seed=0)
    assert chunk.shape == (10, 4) and np.isfinite(chunk).all()


def test_lerobot_train_finetunes_an_exported_student(tmp_path, lerobot, lerobot_dataset):
    """`lerobot-train --policy.path=<to-lerobot folder>` (fine-tuning a distilled student) trains 2 steps and
    `--resume=true` of that run a third. As for LeRobot's own π policies, fine-tuning normalises with the
    dataset's stats, not the student's (0.4.4 hands them in again on resume, 0.6.1 keeps the checkpoint's:
    the same numbers here). The resumed checkpoint loads in shallowpi and in LeRobot through the plugin, and
    both sample the same chunk from it."""
    root = lerobot_dataset
    student = save_tiny_student(tmp_path / "student")
    folder = export_lerobot(student, tmp_path / "lerobot")
    out_dir = tmp_path / "train"
    data = ["--dataset.repo_id=local/shallowpi_tiny", f"--dataset.root={root}"]
    policy = [f"--policy.path={folder}", "--policy.device=cpu", "--policy.push_to_hub=false"]
    _train(lerobot, [*data, *policy], out_dir, steps=2)
    config = out_dir / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    _train(lerobot, [f"--config_path={config}", "--resume=true"], out_dir, steps=3)

    ckpt = out_dir / "checkpoints" / "000003" / "pretrained_model"
    state = json.loads(
        (out_dir / "checkpoints" / "000003" / "training_state" / "training_step.json").read_text()
    )
    assert state["step"] == 3 and pipeline_steps(ckpt) == PLUGIN_PIPELINES
    pre, post = load_processor(ckpt)
    stats = json.loads((root / "meta" / "stats.json").read_text())
    for got, key in ((pre.state_stats, "observation.state"), (post.action_stats, "action")):
        for name in ("q01", "q99"):
            np.testing.assert_allclose(got[name].numpy(), stats[key][name], rtol=1e-6)
    student_pre, _ = load_processor(folder)
    assert not np.allclose(pre.state_stats["q01"].numpy(), student_pre.state_stats["q01"].numpy())
    trained, start = load_model(ckpt).state_dict(), load_model(student).state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the weights were trained

    g = torch.Generator().manual_seed(8)
    image, state_vec = torch.rand(3, 56, 56, generator=g), torch.tensor([0.3, 1.1, -0.4, 0.8])
    task = "push the puck"
    ours = ActionPredictor.from_pretrained(ckpt, device="cpu")
    expected = ours.predict(
        {"images": {"observation.image": image}, "state": state_vec.numpy(), "task": task}, seed=4
    )
    io_in, io_out = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors"
    save_file({"image": image, "state": state_vec, "noise": ours.noise(4).contiguous()}, str(io_in))
    (tmp_path / "task.txt").write_text(task)
    lerobot.run([SCRIPTS / "policy_chunk.py", ckpt, io_in, io_out], timeout=600)
    np.testing.assert_allclose(load_file(str(io_out))["chunk"][0].numpy(), expected, atol=1e-5, rtol=0)


# ---- a π0.5 that LeRobot 0.6.1 built and fine-tuned itself --------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, lerobot061):
    """LeRobot 0.6.1's own tiny PI05Policy, Meta-World shaped (corner4, state 4, action 4), after 2 AdamW steps
    of its own forward, saved by its save_pretrained: lm_head and embed_tokens now differ (0.6.1 unties them
    and the head gets no gradient). io: LeRobot's chunks before / after, and after its from_pretrained."""
    d = tmp_path_factory.mktemp("lerobot061_ft")
    sizes = load_bundle(find_reference(), "pi05_tiny").config_json["shallowpi"]
    (d / "sizes.json").write_text(json.dumps(sizes))
    args = ["pi05", d / "pi05", TESTBED_TOKENIZER, d / "io.safetensors", "--sizes", d / "sizes.json"]
    lerobot061.run([SCRIPTS / "write_pi_folder.py", *args, "--finetune", "2", "--metaworld"], timeout=600)
    return _with_sizes(d / "pi05_ft", sizes), load_file(str(d / "io.safetensors"))


def _mw_sample(io, key="observation.images.corner4") -> dict:
    return {"images": {key: io["corner4"]}, "state": io["state_raw"], "task": "pick_up the red cube"}


def test_lerobot061_finetuned_loads_with_lerobots_embedding(finetuned, tmp_path):
    """shallowpi samples what LeRobot samples from the folder it fine-tuned (embed_tokens, as LeRobot's
    from_pretrained loads it); the lm_head alone would give other actions."""
    ft, io = finetuned
    assert io["embed_head_max_diff"].item() > 1e-3  # the two tensors really differ
    # LeRobot's own from_pretrained of its fine-tuned folder samples what the fine-tuned policy sampled
    torch.testing.assert_close(io["chunk_ft_reloaded"], io["chunk_ft"], atol=1e-6, rtol=0)
    pre, post = load_processor(ft, tokenizer=TESTBED_TOKENIZER)
    chunk = ActionPredictor(load_model(ft), pre, post).predict(_mw_sample(io), seed=NOISE_SEED)
    np.testing.assert_allclose(chunk, io["chunk_ft"][0].numpy(), atol=ATOL, rtol=0)

    head_only = shutil.copytree(ft, tmp_path / "head_only")  # what loading the lm_head would have given
    weights = load_file(str(head_only / "model.safetensors"))
    weights.pop("model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight")
    save_file(weights, str(head_only / "model.safetensors"))
    other = ActionPredictor(load_model(head_only), pre, post).predict(_mw_sample(io), seed=NOISE_SEED)
    assert np.abs(other - chunk).max() > 1e-3


def test_lerobot061_finetuned_in_shallowpi_commands(finetuned, tmp_path):
    """inspect (one note line, no refusal), eval, distill --teacher, bench and serve take the fine-tuned
    folder."""
    ft, _ = finetuned
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HOME": str(tmp_path / "no_hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "shallowpi", "inspect", ft],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if "lm_head and embed_tokens differ" in ln]
    assert len(notes) == 1 and "using embed_tokens" in notes[0], proc.stderr
    assert "lm_head (unused)" in proc.stdout

    tok = ["--tokenizer", str(TESTBED_TOKENIZER)]
    run_eval = ["eval", "--policy", str(ft), "--tasks", "reach-v3", "--episodes-per-task", "1"]
    eval_out = tmp_path / "eval"
    run_eval += ["--max-steps", "3", "--workers", "1", "--no-progress", "--out", str(eval_out), *tok]
    assert main(run_eval) == 0
    assert json.loads((eval_out / "eval_info.json").read_text())["overall"]["n_episodes"] == 1

    out = tmp_path / "distill"
    run_distill = [
        "distill",
        "--teacher",
        str(ft),
        "--dataset",
        "synthetic:4",
        "--depth",
        "1",
        "--steps",
        "1",
    ]
    assert main([*run_distill, "--batch-size", "2", "--out", str(out), "--num-workers", "0"]) == 0
    assert (out / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()

    bench = ["bench", "--policy", str(ft), "--modes", "engine", "--warmup", "0", "--no-count-flops"]
    assert main([*bench, "--device", "cpu", "--out", str(tmp_path / "bench.json")]) == 0

    with serving(["--policy", str(ft), "--obs-map", "lerobot", *tok]):
        pass  # loaded, listening, /healthz answered


def test_lerobot061_finetuned_runs_in_lerobot_through_the_plugin(finetuned, tmp_path, lerobot061):
    """`shallowpi to-lerobot` of the fine-tuned folder runs in LeRobot 0.6.1 (make_policy + processors) and
    gives LeRobot's own π0.5 chunk."""
    ft, io = finetuned
    folder = export_lerobot(
        ft,
        tmp_path / "plugin",
        camera_map={"observation.image": "observation.images.base_0_rgb"},
        tokenizer=TESTBED_TOKENIZER,
    )
    noise = torch.randn((1, 10, 32), generator=torch.Generator().manual_seed(NOISE_SEED))
    io_in, io_out = tmp_path / "io_in.safetensors", tmp_path / "io_out.safetensors"
    save_file({"image": io["corner4"], "state": io["state_raw"], "noise": noise}, str(io_in))
    (tmp_path / "task.txt").write_text("pick_up the red cube")
    out = lerobot061.run([SCRIPTS / "policy_chunk.py", folder, io_in, io_out], timeout=600)
    assert "ShallowPiPolicy" in out.stdout
    got = load_file(str(io_out))
    np.testing.assert_allclose(got["chunk"][0].numpy(), io["chunk_ft"][0].numpy(), atol=ATOL, rtol=0)
