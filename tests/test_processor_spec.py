"""The torch processor and the ONNX runner's numpy processor follow one specification (processor_spec): on a
table of prompts and states (empty, unicode, underscores, exactly at the limit, one token over, π0 and π0.5,
truncation on and off) they give the same token ids, masks, images and normalised state, or the same error.

The numpy side is built exactly as the runner builds it: from the manifest sections the exporter writes
(`manifest_processor`, through JSON), without exporting any graph, so the table runs in about a second.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from shallowpi.cameras import DEFAULT_CAMERAS
from shallowpi.data.processor import Postprocessor, Preprocessor, ProcessorConfig
from shallowpi.data.processor_spec import ProcessorError, PromptTooLongError
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.export.onnx_export import manifest_processor
from shallowpi.onnx_runtime.processor import NumpyProcessor

S, A = 4, 3
SENTENCE = "put the red bowl on the plate next to the sink"
UNICODE = "  Ställ skålen på tallriken → 把碗放在盘子上 😀\n"
UNDERSCORES = "pick_up_the_red_cube"
STATES = {
    # QUANTILES: [-1, 1] over [q01, q99]; dim 3 has q01 == q99 (eps): at it -> -1, above it -> far above 1
    "in range": np.array([0.0, 0.5, -0.9, 2.0], np.float32),
    "out of range": np.array([-3.0, 5.0, 0.999, 2.5], np.float32),
}


def _stats() -> dict:
    i = np.arange(S, dtype=np.float64)
    q01, q99 = -1.0 - 0.1 * i, 1.0 + 0.3 * i
    q01[3] = q99[3] = 2.0
    state = {"mean": 0.1 * i, "std": np.array([1.0, 0.5, 0.0, 2.0]), "q01": q01, "q99": q99}
    j = np.arange(A, dtype=np.float64)
    action = {"mean": -0.2 * j, "std": 1.0 + j, "q01": -2.0 - j, "q99": 2.0 + 0.5 * j}
    return {"observation.state": state, "action": action}


def _config(variant: str, limit: int, **fields) -> ProcessorConfig:
    return ProcessorConfig(
        variant=variant,
        camera_map={"front": DEFAULT_CAMERAS[0], "wrist": DEFAULT_CAMERAS[1]},  # slot 2 unfed: masked
        image_size=16,
        chunk_size=5,
        tokenizer_max_length=limit,
        **fields,
    )


def _sample(task: str, state: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    return {
        "images": {
            "front": rng.integers(0, 256, (12, 20, 3), dtype=np.uint8),  # non-square HWC: resize-with-pad
            "wrist": rng.random((3, 16, 16), dtype=np.float32),  # float CHW at the model size
        },
        "state": state,
        "task": task,
    }


def processors(config: ProcessorConfig) -> tuple[Preprocessor, Postprocessor, NumpyProcessor]:
    """The torch pair, and the numpy processor the runner would build from their export's manifest."""
    tok = load_tokenizer()
    pre, post = Preprocessor(config, _stats(), tok), Postprocessor(config, _stats())
    proc, norm = json.loads(json.dumps(manifest_processor(pre, post, config.tokenizer_max_length)))
    fields = {k: v for k, v in proc.items() if k != "tokenizer_file"}
    numpy_proc = NumpyProcessor(ProcessorConfig.from_dict(fields), norm, tok.path, list(config.cameras))
    return pre, post, numpy_proc


def _prompt_tokens(config: ProcessorConfig, task: str, state: np.ndarray) -> int:
    """How many tokens this task's prompt takes (measured with room to spare)."""
    pre, _, _ = processors(dataclasses.replace(config, tokenizer_max_length=4096, truncate_prompt=False))
    return int(pre(_sample(task, state))["token_masks"].sum())


# (variant, task, limit: "room" | "at" | "over" (one token), truncate, extra ProcessorConfig fields)
CASES = {
    "pi0 empty": ("pi0", "", "room", False, {}),
    "pi0 unicode": ("pi0", UNICODE, "room", False, {}),
    "pi0 underscores": ("pi0", UNDERSCORES, "room", False, {}),
    "pi0 underscores, LeRobot's uncleaned task": (
        "pi0",
        UNDERSCORES + "\n",
        "room",
        False,
        {"clean_pi0_task": False},
    ),
    "pi0 at the limit": ("pi0", SENTENCE, "at", False, {}),
    "pi0 one token over": ("pi0", SENTENCE, "over", False, {}),
    "pi0 one token over, truncated": ("pi0", SENTENCE, "over", True, {}),
    "pi0 one over, uncleaned, truncated": ("pi0", UNDERSCORES, "over", True, {"clean_pi0_task": False}),
    "pi05 empty": ("pi05", "", "room", False, {}),
    "pi05 unicode": ("pi05", UNICODE, "room", False, {}),
    "pi05 underscores": ("pi05", UNDERSCORES, "room", False, {}),
    "pi05 at the limit": ("pi05", SENTENCE, "at", False, {}),
    "pi05 at the limit, truncation on": ("pi05", SENTENCE, "at", True, {}),
    "pi05 one token over": ("pi05", SENTENCE, "over", False, {}),
    "pi05 one token over, truncated": ("pi05", SENTENCE, "over", True, {}),
    "pi05 over, truncated, padded state": ("pi05", UNICODE, "over", True, {"pad_state_in_prompt": True}),
    "pi05 mean-std, underscores": ("pi05", UNDERSCORES, "room", False, {"state_norm": "MEAN_STD"}),
    "pi05 state alone too long": ("pi05", "", "over", True, {}),
    "pi05 huge task": ("pi05", "x" * 200_000, "room", False, {}),
    "pi05 huge task, truncated": ("pi05", "pick " * 40_000, "room", True, {}),
}


def _run(fn, *args):
    try:
        return fn(*args), None
    except ProcessorError as e:
        return None, e


@pytest.mark.parametrize("state_name", list(STATES))
@pytest.mark.parametrize("case", list(CASES))
def test_torch_and_numpy_processors_agree(case, state_name):
    variant, task, limit, truncate, fields = CASES[case]
    state = STATES[state_name]
    config = _config(variant, 200, truncate_prompt=truncate, **fields)
    if limit != "room":
        n = _prompt_tokens(config, task, state)
        config = dataclasses.replace(config, tokenizer_max_length=n if limit == "at" else n - 1)
    pre, post, numpy_proc = processors(config)
    sample = _sample(task, state)

    ref, ref_error = _run(pre, sample)
    out, out_error = _run(numpy_proc, sample)
    if ref_error is not None or out_error is not None:
        assert (type(out_error), str(out_error)) == (type(ref_error), str(ref_error))
        assert isinstance(ref_error, PromptTooLongError)
        assert not truncate or case == "pi05 state alone too long", "truncation asked for, yet refused"
        return
    np.testing.assert_array_equal(out["tokens"], ref["tokens"].numpy())
    np.testing.assert_array_equal(out["token_masks"], ref["token_masks"].numpy())
    np.testing.assert_array_equal(out["state"], ref["state"].numpy())
    np.testing.assert_array_equal(out["image_masks"], ref["image_masks"].numpy())
    np.testing.assert_allclose(out["images"], ref["images"].numpy(), rtol=0, atol=1e-6)
    if limit == "at":
        assert ref["token_masks"].all(), "a prompt exactly at the limit fills it"
    if limit == "over" and truncate:
        text = pre.tokenizer.decode(ref["tokens"][ref["token_masks"]])
        if variant == "pi0":  # the last tokens cut: the limit is full
            assert ref["token_masks"].all()
        else:  # whole characters of the task cut, never the state or "Action:"
            bins = text.split("State: ")[-1].split(";")[0].split()
            assert text.endswith(";\nAction: "), f"π0.5 lost 'Action:': {text!r}"
            assert len(bins) == (32 if config.pad_state_in_prompt else S), f"π0.5 lost its state: {text!r}"

    actions = np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32)
    np.testing.assert_array_equal(numpy_proc.postprocess(actions), post(torch.from_numpy(actions)).numpy())


def test_bad_samples_same_error():
    pre, _, numpy_proc = processors(_config("pi05", 64))
    good = _sample("open the drawer", STATES["in range"])
    bad = {
        "unknown camera": {**good, "images": {**good["images"], "side": good["images"]["front"]}},
        "missing camera": {**good, "images": {"front": good["images"]["front"]}},
        "state shape": {**good, "state": np.zeros(S + 1, np.float32)},
        "task type": {**good, "task": 3},
        "no task": {k: v for k, v in good.items() if k != "task"},
        "image shape": {**good, "images": {**good["images"], "front": np.zeros((5, 5), np.uint8)}},
    }
    for name, sample in bad.items():
        (_, e_torch), (_, e_numpy) = _run(pre, sample), _run(numpy_proc, sample)
        assert e_torch is not None, name
        assert (type(e_numpy), str(e_numpy)) == (type(e_torch), str(e_torch)), name
