"""A prompt that does not fit is an error naming its token count and the limit, unless truncation is asked
for, and truncation never cuts the π0.5 state: in the processor, the server, evaluation and training."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from shallowpi.cli import main
from shallowpi.data.processor import PromptTooLongError
from shallowpi.data.prompt import pi05_prompt
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.pretrained import load_processor
from shallowpi.serve.obs_mapping import ObservationError
from shallowpi.serve.policy import PiPolicy
from shallowpi.testing import save_tiny_policy

LONG_TASK = " ".join(["carefully pick up the small red cube next to the bowl and place it"] * 5)  # 65 words


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_policy(tmp_path_factory.mktemp("tiny") / "tiny", state_dim=8, action_dim=7)


def _sample(task: str, state) -> dict:
    img = np.zeros((64, 64, 3), np.uint8)
    return {
        "images": {"observation.images.image": img, "observation.images.wrist_image": img},
        "state": np.asarray(state, np.float32),
        "task": task,
    }


def test_too_long_prompt_names_token_count_and_limit(tiny_dir):
    pre, _ = load_processor(tiny_dir)
    limit = pre.config.tokenizer_max_length
    with pytest.raises(PromptTooLongError) as e:
        pre(_sample(LONG_TASK, np.zeros(8)))
    n = int(re.search(r"the prompt is (\d+) tokens", str(e.value)).group(1))
    assert n > limit and f"limit of {limit}" in str(e.value) and "--truncate-prompt" in str(e.value)
    pre(_sample("open the drawer", np.zeros(8)))  # a prompt that fits is untouched


def test_truncation_keeps_the_pi05_state_whole(tiny_dir):
    pre, _ = load_processor(tiny_dir)
    pre = type(pre)(dataclasses.replace(pre.config, truncate_prompt=True), pre.raw_stats, pre.tokenizer)
    a = pre(_sample(LONG_TASK, np.full(8, -0.9)))
    b = pre(_sample(LONG_TASK, np.full(8, 0.9)))
    assert a["token_masks"].all(), "the cut prompt fills the limit"
    assert not torch.equal(a["tokens"], b["tokens"]), "two very different states gave the same prompt"
    for ex, value in ((a, -0.9), (b, 0.9)):
        text = pre.tokenizer.decode(ex["tokens"][ex["token_masks"]])
        state = _normalised(pre, value)
        tail = pi05_prompt("", state).split("State: ")[1]
        assert text.endswith(tail), f"state or 'Action:' was cut: {text!r}"
        assert text.startswith("Task: carefully pick up")


def _normalised(pre, value: float) -> torch.Tensor:  # the state the processor writes
    from shallowpi.data import transforms

    return transforms.normalize(torch.full((8,), value), pre.state_stats, pre.config.state_norm)


def test_server_policy_refuses_and_can_truncate(tiny_dir):
    rng = np.random.default_rng(0)
    obs = {
        "observation/image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": LONG_TASK,
    }
    strict = PiPolicy.from_pretrained(tiny_dir, device="cpu", num_steps=1)
    with pytest.raises(ObservationError, match=r"the prompt is \d+ tokens, more than the limit of 64"):
        strict.infer(obs)
    loose = PiPolicy.from_pretrained(tiny_dir, device="cpu", num_steps=1, truncate_prompt=True)
    other = {**obs, "observation/state": -obs["observation/state"]}
    assert not np.allclose(loose.infer(obs)["actions"], loose.infer(other)["actions"])


def test_huge_prompt_refused_before_tokenising(tiny_dir, monkeypatch):
    policy = PiPolicy.from_pretrained(tiny_dir, device="cpu", num_steps=1)

    def no_tokenising(text, **kw):
        raise AssertionError(f"tokenised a {len(text)}-character prompt")

    monkeypatch.setattr(policy.pre.tokenizer, "encode", no_tokenising)
    obs = {
        "observation/image": np.zeros((64, 64, 3), np.uint8),
        "observation/wrist_image": np.zeros((64, 64, 3), np.uint8),
        "observation/state": np.zeros(8, np.float32),
        "prompt": "x" * 10**7,
    }
    with pytest.raises(ObservationError, match="10000000 characters"):
        policy.prepare(obs)


def test_eval_predictor_option(tiny_dir):
    strict = ActionPredictor.from_pretrained(tiny_dir, device="cpu", num_steps=1)
    with pytest.raises(PromptTooLongError):
        strict.predict(_sample(LONG_TASK, np.zeros(8)))
    loose = ActionPredictor.from_pretrained(tiny_dir, device="cpu", num_steps=1, truncate_prompt=True)
    assert np.isfinite(loose.predict(_sample(LONG_TASK, np.zeros(8)))).all()


def test_training_refuses_at_start_up_and_flag_truncates(tmp_path, capsys):
    """The LeRobot-written sample dataset with its task made long: distill stops before training."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill_helpers import random_teacher
    from paths import find_reference
    from shallowpi.model import save_model

    data = tmp_path / "data"
    shutil.copytree(find_reference() / "lerobot_dataset_v3_small", data)
    tasks_file = data / "meta" / "tasks.parquet"
    table = pq.read_table(tasks_file)
    col = "task" if "task" in table.column_names else table.column_names[-1]
    table = table.set_column(table.column_names.index(col), col, pa.array([LONG_TASK] * table.num_rows))
    pq.write_table(table, tasks_file)
    model = random_teacher("pi05", depth=2)
    model.config.tokenizer_max_length = 48  # a short task and the 8-dim state fit
    teacher = save_model(model, tmp_path / "teacher")
    argv = ["distill", "--teacher", str(teacher), "--dataset", str(data), "--depth", "1", "--steps", "1",
            "--batch-size", "2", "--num-workers", "0", "--no-progress", "--out"]  # fmt: skip
    assert main([*argv, str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"the prompt is \d+ tokens, more than the limit of 48", err), err
    assert len(err.strip().splitlines()) == 1
    assert main([*argv, str(tmp_path / "loose"), "--truncate-prompt"]) == 0
    saved = load_processor(tmp_path / "loose" / "checkpoints" / "last" / "pretrained_model")[0]
    assert saved.config.truncate_prompt, "the choice travels with the model"
