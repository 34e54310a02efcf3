"""`shallowpi eval` on Meta-World: a random tiny policy, 2 tasks x 2 episodes, well-formed eval_info.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shallowpi.cli import main
from shallowpi.data.processor import ProcessorConfig
from shallowpi.data.processor_files import save_processor
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.model import PiModel, save_model
from shallowpi.model.config import tiny

# Not imported here: mujoco must not load before MUJOCO_GL is set (the eval code sets it).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")

TASKS = ["reach-v3", "drawer-close-v3"]


def save_random_metaworld_policy(path: Path, cameras=("corner4",), prefix_student: bool = False) -> Path:
    """Tiny random π0.5 fed by Meta-World cameras (64 px renders, resized to the model's 56 px);
    `prefix_student`: a student with image tokens merged 2 x 2 and a 2-layer SigLIP tower instead."""
    torch.manual_seed(0)
    cfg = tiny("pi05")
    cfg.tokenizer_max_length = 48  # the prompt (task + 4 state bins) fits
    if prefix_student:
        from shallowpi.testing import tiny_prefix_student

        model = tiny_prefix_student("pi05", teacher=cfg)
    else:
        model = PiModel(cfg).eval()
    save_model(model, path)
    slots = cfg.cameras
    proc = ProcessorConfig(
        variant="pi05",
        camera_map={f"observation.images.{cam}": slots[i] for i, cam in enumerate(cameras)},
        cameras=slots,
        image_size=cfg.vision.image_size,
        chunk_size=cfg.chunk_size,
        tokenizer_max_length=cfg.tokenizer_max_length,
    )
    vec = {"mean": np.zeros(4), "std": np.ones(4), "q01": -np.ones(4), "q99": np.ones(4)}
    save_processor(path, proc, {"observation.state": vec, "action": dict(vec)}, load_tokenizer())
    return path


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    return save_random_metaworld_policy(tmp_path_factory.mktemp("policy") / "tiny_mw")


def test_eval_writes_lerobot_shaped_eval_info(policy_dir: Path, tmp_path: Path) -> None:
    out, videos = tmp_path / "eval", tmp_path / "videos"
    argv = [
        "eval",
        "--policy",
        str(policy_dir),
        "--env",
        "metaworld",
        "--tasks",
        ",".join(TASKS),
        "--episodes-per-task",
        "2",
        "--seed",
        "1000",
        "--max-steps",
        "20",
        "--n-action-steps",
        "5",
        "--workers",
        "1",
        "--image-size",
        "64",
        "--video",
        str(videos),
        "--videos-per-task",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    info = json.loads((out / "eval_info.json").read_text())

    assert [t["task_group"] for t in info["per_task"]] == TASKS
    for t in info["per_task"]:
        m = t["metrics"]
        assert len(m["successes"]) == len(m["sum_rewards"]) == len(m["max_rewards"]) == 2
        assert m["seeds"] == [1000, 1000] and m["config_indices"] == [0, 1]
        assert all(isinstance(s, bool) for s in m["successes"])
        assert all(1 <= n <= 20 for n in m["episode_lengths"])
    for task in TASKS:
        g = info["per_group"][task]
        assert g["n_episodes"] == 2 and 0.0 <= g["pc_success"] <= 100.0
    overall = info["overall"]
    assert overall["n_episodes"] == 4 and 0.0 <= overall["pc_success"] <= 100.0
    assert overall["seeds"] == [1000]
    # 20 steps, 5 actions per call: at least one call per episode, at most 4
    assert 4 <= overall["policy_calls"] <= 16
    assert info["settings"]["max_steps"] == 20 and info["settings"]["env"] == "metaworld"
    assert info["settings"]["time_grid"] == tiny().time_grid()  # the schedule it was sampled with

    # one video per task (first episode), decodable, of the rendered size
    assert len(overall["video_paths"]) == 2
    import av

    for p in overall["video_paths"]:
        with av.open(p) as c:
            frames = list(c.decode(video=0))
        assert 1 <= len(frames) <= 20 and frames[0].height == 64
        assert frames[0].to_ndarray(format="rgb24").mean() > 0  # not a black (broken GL) frame
    assert not list(out.glob(".*.tmp"))  # nothing half-written left behind


def test_eval_runs_a_prefix_compressed_student(tmp_path: Path) -> None:
    """`shallowpi eval` of a student whose image tokens are merged and whose SigLIP tower is shallower."""
    policy = save_random_metaworld_policy(tmp_path / "student", prefix_student=True)
    assert json.loads((policy / "config.json").read_text())["shallowpi"]["vision"]["merge"] == 2
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--policy",
        str(policy),
        "--tasks",
        "reach",
        "--episodes-per-task",
        "1",
        "--max-steps",
        "6",
    ]
    argv += [
        "--n-action-steps",
        "3",
        "--workers",
        "1",
        "--image-size",
        "64",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    overall = json.loads((out / "eval_info.json").read_text())["overall"]
    assert overall["n_episodes"] == 1 and overall["policy_calls"] == 2  # 6 steps, 3 actions per call


def test_eval_is_deterministic_given_the_seed(policy_dir: Path, tmp_path: Path) -> None:
    from shallowpi.sim.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        policy=str(policy_dir),
        tasks=["reach-v3"],
        episodes_per_task=1,
        max_steps=8,
        n_action_steps=4,
        image_size=64,
        workers=1,  # inline; other counts: test_eval_results_do_not_depend_on_the_number_of_workers
    )
    a = evaluate(cfg, tmp_path / "a", progress=False).results[0]
    b = evaluate(cfg, tmp_path / "b", progress=False).results[0]
    assert (a.sum_reward, a.steps, a.success) == (b.sum_reward, b.steps, b.success)


def test_eval_records_the_render_size_it_resolved(policy_dir: Path, tmp_path: Path) -> None:
    """No --image-size: the policy's own input size is rendered, and eval_info says which, so a study
    reusing the evaluation (EvalSpec.matches) finds the size it asked for instead of null."""
    from shallowpi.sim.evaluate import EvalConfig, evaluate
    from shallowpi.study.pipeline import EvalSpec

    cfg = EvalConfig(policy=str(policy_dir), tasks=["reach-v3"], episodes_per_task=1, max_steps=4, workers=1)
    info = evaluate(cfg, tmp_path / "e", progress=False).info
    size = tiny("pi05").vision.image_size
    assert info["settings"]["image_size"] == size
    spec = EvalSpec(tasks=["reach-v3"], episodes_per_task=1, image_size=size, max_steps=4)
    assert spec.matches(info)
    assert not EvalSpec(tasks=["reach-v3"], episodes_per_task=1, image_size=64, max_steps=4).matches(info)


def test_eval_rejects_bad_arguments(policy_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["eval", "--policy", str(policy_dir), "--out", str(tmp_path), "--no-progress", "--workers", "1"]
    assert main([*base, "--tasks", "no-such-task"]) == 2
    assert "unknown Meta-World task" in capsys.readouterr().err
    assert main([*base, "--tasks", "reach", "--max-steps", "501"]) == 2
    assert "max-steps" in capsys.readouterr().err
    assert main(["eval", "--policy", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "policy folder not found" in capsys.readouterr().err
    assert not (tmp_path / "eval_info.json").exists()


def test_eval_results_do_not_depend_on_the_number_of_workers(policy_dir: Path, tmp_path: Path) -> None:
    from shallowpi.sim.evaluate import EvalConfig, evaluate

    def run(workers: int):
        cfg = EvalConfig(
            policy=str(policy_dir),
            tasks=["reach-v3"],
            episodes_per_task=2,
            max_steps=10,
            n_action_steps=5,
            image_size=64,
            workers=workers,
            threads_per_worker=1,
        )
        return [
            (r.episode, r.sum_reward, r.steps)
            for r in evaluate(cfg, tmp_path / str(workers), progress=False).results
        ]

    assert run(2) == run(1)


class _ExpertChunkPolicy:
    """Meta-World's scripted expert as a ChunkPolicy: a one-action chunk per call. The policy interface
    carries the 4-d state only and the expert reads the full observation, so the env's reset and step are
    tapped for it (the rollout itself is eval's, unchanged)."""

    cameras: list[str] = []

    def __init__(self, env) -> None:
        self.expert, self.obs = env.expert(), None
        reset, step = env.reset, env.env.step

        def tapped_reset(episode):
            self.obs = reset(episode)
            return self.obs

        def tapped_step(action):
            out = step(action)
            self.obs = out[0]
            return out

        env.reset, env.env.step = tapped_reset, tapped_step

    def __call__(self, images, state, task, seed) -> np.ndarray:
        assert np.array_equal(state, self.obs[:4].astype(np.float32))  # eval passes the current state
        return self.expert.get_action(self.obs)[None]  # (1, 4)


def _hold_still(images, state, task, seed) -> np.ndarray:
    return np.zeros((1, 4), np.float32)


_hold_still.cameras = []


def test_eval_detects_success_of_a_policy_that_succeeds(tmp_path: Path) -> None:
    """The scripted expert run through eval's rollout succeeds every episode, at the step where the demo
    collector (same configurations) first sees success; a policy that holds still never succeeds."""
    from shallowpi.sim import collect
    from shallowpi.sim import metaworld_env as mw
    from shallowpi.sim.evaluate import EvalConfig, eval_info, run_episode

    cfg = EvalConfig(policy=str(tmp_path), tasks=TASKS, episodes_per_task=2, max_steps=200)
    expert, still = [], []
    for task in TASKS:
        env = mw.MetaWorldEnv(task, seed=cfg.seed, cameras=[])
        try:
            policy = _ExpertChunkPolicy(env)
            expert += [run_episode(env, policy, cfg, e) for e in range(2)]
            short = EvalConfig(policy=cfg.policy, tasks=TASKS, max_steps=40)
            still += [run_episode(env, _hold_still, short, e) for e in range(2)]
        finally:
            env.close()
    assert [r.success for r in expert] == [True] * 4
    assert [r.success for r in still] == [False] * 4 and all(r.steps == 40 for r in still)
    demos = collect.CollectConfig(tasks=TASKS, seed=cfg.seed, cameras=[], extra_steps=0)
    for r in expert:
        first_success = collect.run_episode(demos, r.task, r.episode).steps  # success step + 1
        assert r.steps == first_success < cfg.max_steps and r.policy_calls == r.steps
    info = eval_info(expert, cfg, eval_s=1.0)
    assert info["overall"]["pc_success"] == 100.0 and info["overall"]["n_episodes"] == 4
    assert all(info["per_group"][t]["pc_success"] == 100.0 for t in TASKS)
    assert all(t["metrics"]["successes"] == [True, True] for t in info["per_task"])
    assert eval_info(still, cfg, eval_s=1.0)["overall"]["pc_success"] == 0.0


def _with_n_action_steps(policy_dir: Path, tmp_path: Path, value) -> Path:
    """A copy of the policy folder whose config.json states `n_action_steps`."""
    import shutil

    copy = tmp_path / "policy_copy"
    shutil.copytree(policy_dir, copy)
    raw = json.loads((copy / "config.json").read_text())
    raw["n_action_steps"] = value
    (copy / "config.json").write_text(json.dumps(raw))
    return copy


def test_eval_replans_at_the_policys_own_horizon_unless_told(policy_dir: Path, tmp_path: Path) -> None:
    """The re-planning horizon a policy was tuned for travels in its config.json (`n_action_steps`, the
    field LeRobot's action queue reads too); --n-action-steps overrides it; eval_info records what ran."""
    from shallowpi.sim.evaluate import EvalConfig, evaluate

    own = _with_n_action_steps(policy_dir, tmp_path, 2)

    def run(n_action_steps):
        cfg = EvalConfig(
            policy=str(own),
            tasks=["reach-v3"],
            episodes_per_task=1,
            max_steps=8,
            n_action_steps=n_action_steps,
            image_size=64,
            workers=1,
        )
        return evaluate(cfg, tmp_path / f"e{n_action_steps}", progress=False)

    default, told = run(None), run(4)
    assert default.results[0].steps == told.results[0].steps == 8  # a random policy never succeeds
    assert default.results[0].policy_calls == 4 and told.results[0].policy_calls == 2
    assert (
        default.info["settings"]["actions_per_call"] == 2
        and default.info["settings"]["n_action_steps"] is None
    )
    assert told.info["settings"]["actions_per_call"] == 4


@pytest.mark.parametrize("value", [0, 11, "5", 2.5])
def test_a_bad_n_action_steps_in_the_policy_config_is_one_error(policy_dir, tmp_path, capsys, value) -> None:
    bad = _with_n_action_steps(policy_dir, tmp_path, value)
    argv = ["eval", "--policy", str(bad), "--tasks", "reach", "--out", str(tmp_path / "e"), "--no-progress"]
    assert main([*argv, "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        "n_action_steps must be an integer in [1, chunk_size=10]" in err
        and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "e" / "eval_info.json").exists()


def test_choose_horizon_evaluates_on_training_setups_and_saves_the_choice(policy_dir, tmp_path) -> None:
    """scripts/choose_horizon.py: each horizon on the demos' setups (seed 0), the best saved as the policy's
    n_action_steps, which the next eval then follows."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location(
        "choose_horizon", Path(__file__).resolve().parents[1] / "scripts" / "choose_horizon.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    policy = tmp_path / "policy"
    shutil.copytree(policy_dir, policy)
    argv = ["--policy", str(policy), "--horizons", "3,5", "--tasks", "reach", "--episodes-per-task", "1"]
    argv += ["--max-steps", "6", "--out", str(tmp_path / "h"), "--no-progress", "--write"]
    assert mod.main(argv) == 0
    choice = json.loads((tmp_path / "h" / "choice.json").read_text())
    assert choice["seed"] == 0 and set(choice["pc_success"]) == {"3", "5"}
    for h in (3, 5):
        info = json.loads((tmp_path / "h" / f"horizon_{h}" / "eval_info.json").read_text())
        assert info["settings"]["seed"] == 0 and info["settings"]["actions_per_call"] == h
    assert choice["chosen"] == 5  # a random policy fails both: the tie goes to the longer horizon
    assert json.loads((policy / "config.json").read_text())["n_action_steps"] == 5
    assert mod.choose({5: 40.0, 10: 30.0}) == 5 and mod.choose({5: 30.0, 10: 30.0}) == 10
    assert mod.main([*argv[:3], "0,5", *argv[4:]]) == 2
