"""Transforms, prompts and the processor that turns a raw sample into model inputs (and actions back)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from shallowpi.data import transforms
from shallowpi.data.processor import (
    Postprocessor,
    Preprocessor,
    ProcessorConfig,
    collate,
    collate_actions,
)
from shallowpi.data.processor_files import save_processor
from shallowpi.data.prompt import discretize_state, pi0_prompt, pi05_prompt
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.errors import UserError
from shallowpi.pretrained import load_processor

S, A, CHUNK = 4, 3, 5
SLOTS = (
    "observation.images.base_0_rgb",
    "observation.images.left_wrist_0_rgb",
    "observation.images.right_wrist_0_rgb",
)


def make_stats() -> dict:
    rng = np.random.default_rng(0)
    st = rng.normal(size=(500, S)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -1.0, 5.0]
    ac = rng.normal(size=(500, A)) * 0.3
    out = {}
    for key, x in (("observation.state", st), ("action", ac)):
        out[key] = {
            "mean": x.mean(0),
            "std": x.std(0),
            "q01": np.quantile(x, 0.01, 0),
            "q99": np.quantile(x, 0.99, 0),
            "min": x.min(0),
            "max": x.max(0),
            "count": np.array([500]),
        }
    return out


def make_sample(seed=0, hwc_numpy=False) -> dict:
    g = torch.Generator().manual_seed(seed)
    imgs = {
        "front": torch.randint(0, 256, (3, 40, 60), generator=g, dtype=torch.uint8),
        "wrist": torch.randint(0, 256, (3, 48, 48), generator=g, dtype=torch.uint8),
    }
    if hwc_numpy:
        imgs = {k: v.permute(1, 2, 0).numpy() for k, v in imgs.items()}
    return {
        "images": imgs,
        "state": torch.randn(S, generator=g),
        "actions": torch.randn(CHUNK, A, generator=g) * 0.3,
        "action_is_pad": torch.tensor([False, False, False, True, True]),
        "task": "pick_up the cube",
        "episode_index": 0,
        "frame_index": 3,
        "index": 3,
    }


def make_config(variant="pi05", **kw) -> ProcessorConfig:
    return ProcessorConfig(
        variant=variant,
        camera_map={"front": SLOTS[0], "wrist": SLOTS[1]},
        wrist_cameras=("wrist",),
        image_size=32,
        chunk_size=CHUNK,
        **kw,
    )


# ------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("mode", ["MEAN_STD", "QUANTILES", "IDENTITY"])
def test_normalize_roundtrip(mode):
    stats = make_stats()["observation.state"]
    x = torch.randn(7, S) * 3
    y = transforms.normalize(x, stats, mode)
    torch.testing.assert_close(transforms.unnormalize(y, stats, mode), x, rtol=1e-5, atol=1e-5)


def test_quantiles_map_q01_q99_to_minus_one_one_and_survive_constant_dims():
    stats = {"q01": np.array([0.0, 2.0]), "q99": np.array([10.0, 2.0])}
    y = transforms.normalize(torch.tensor([[0.0, 2.0], [10.0, 2.0], [5.0, 2.0]]), stats, "QUANTILES")
    assert y[:, 0].tolist() == [-1.0, 1.0, 0.0]
    assert torch.isfinite(y).all()  # q01 == q99: eps denominator, no inf/nan
    ms = transforms.normalize(
        torch.tensor([3.0]), {"mean": np.array([1.0]), "std": np.array([2.0])}, "MEAN_STD"
    )
    assert ms.item() == pytest.approx(1.0)


def test_missing_quantiles_point_to_compute_stats():
    stats = make_stats()
    for d in stats.values():
        d.pop("q01"), d.pop("q99")
    with pytest.raises(ValueError, match="compute-stats"):
        Preprocessor(make_config("pi05"), stats, load_tokenizer())
    Preprocessor(make_config("pi0"), stats, load_tokenizer())  # MEAN_STD needs no quantiles


# --------------------------------------------------------------------------------------------- images
def test_resize_with_pad_keeps_aspect_and_pads_black():
    img = torch.ones(3, 20, 40)  # wide white image
    out = transforms.resize_with_pad(img, 32)
    assert out.shape == (3, 32, 32)
    assert (out[:, :8] == 0).all() and (out[:, 24:] == 0).all()  # 8 rows of padding above and below
    assert torch.allclose(out[:, 8:24], torch.ones(3, 16, 32))
    assert transforms.to_signed(out).min() == -1 and transforms.to_signed(out).max() == 1
    same = torch.rand(2, 3, 32, 32)
    assert torch.equal(transforms.resize_with_pad(same, 32), same)


def test_augment_is_seeded_and_spares_wrist_geometry():
    img = torch.rand(3, 32, 32)
    a = transforms.augment_image(img, wrist=False, generator=torch.Generator().manual_seed(1))
    b = transforms.augment_image(img, wrist=False, generator=torch.Generator().manual_seed(1))
    c = transforms.augment_image(img, wrist=False, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # Wrist cameras get colour jitter only: a one-pixel dot stays where it was.
    dot = torch.full((3, 32, 32), 0.2)
    dot[:, 5, 27] = 0.9
    for seed in range(5):
        w = transforms.augment_image(dot, wrist=True, generator=torch.Generator().manual_seed(seed))
        assert divmod(int(w.sum(0).argmax()), 32) == (5, 27)


def test_pad_vector():
    assert transforms.pad_vector(torch.ones(2, 3), 5).tolist() == [[1, 1, 1, 0, 0]] * 2
    with pytest.raises(ValueError, match="does not fit"):
        transforms.pad_vector(torch.ones(40), 32)


# -------------------------------------------------------------------------------------------- prompts
def test_discretize_state_matches_openpi_bins():
    x = np.array([-1.5, -1.0, -0.99, 0.0, 0.5, 0.99, 1.0, 2.0])
    ref = np.digitize(x, bins=np.linspace(-1, 1, 257)[:-1]) - 1
    assert discretize_state(x).tolist() == ref.tolist()
    assert discretize_state(x).tolist()[:2] == [-1, 0] and discretize_state(x)[-1] == 255


def test_prompt_formats():
    assert pi0_prompt(" open_the drawer\n") == "open the drawer\n"
    assert pi05_prompt("open_drawer", np.array([0.0, -1.0])) == "Task: open drawer, State: 128 0;\nAction: "


# ------------------------------------------------------------------------------------------ processor
def test_preprocessor_outputs_the_model_contract():
    pre = Preprocessor(make_config("pi05"), make_stats(), load_tokenizer())
    ex = pre(make_sample())
    assert ex["images"].shape == (3, 3, 32, 32) and ex["images"].dtype == torch.float32
    assert ex["images"].min() >= -1 and ex["images"].max() <= 1
    assert ex["image_masks"].tolist() == [True, True, False]
    assert (ex["images"][2] == -1).all()  # the slot without a camera
    assert ex["tokens"].shape == ex["token_masks"].shape == (200,)
    assert ex["tokens"][0] == 2 and ex["tokens"][~ex["token_masks"]].eq(0).all()  # BOS, right-padded with 0
    assert ex["state"].shape == (32,) and (ex["state"][S:] == 0).all()
    assert ex["actions"].shape == (CHUNK, 32) and (ex["actions"][:, A:] == 0).all()
    assert ex["action_is_pad"].tolist() == [False, False, False, True, True]
    text = load_tokenizer().decode(ex["tokens"])
    norm_state = transforms.normalize(make_sample()["state"], make_stats()["observation.state"], "QUANTILES")
    assert text == pi05_prompt("pick_up the cube", norm_state)  # S numbers: unpadded state by default


def test_pad_state_in_prompt_option_gives_lerobot_044_prompt():
    pre = Preprocessor(make_config("pi05", pad_state_in_prompt=True), make_stats(), load_tokenizer())
    text = load_tokenizer().decode(pre(make_sample())["tokens"])
    numbers = text.split("State: ")[1].split(";")[0].split()
    assert len(numbers) == 32 and numbers[S:] == ["128"] * (32 - S)


def test_numpy_hwc_input_equals_torch_chw_input():
    pre = Preprocessor(make_config("pi0"), make_stats(), load_tokenizer())
    a, b = pre(make_sample()), pre(make_sample(hwc_numpy=True))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_augmentation_is_deterministic_given_generator():
    pre = Preprocessor(make_config("pi05"), make_stats(), load_tokenizer())
    a = pre(make_sample(), train=True, generator=torch.Generator().manual_seed(3))
    b = pre(make_sample(), train=True, generator=torch.Generator().manual_seed(3))
    c = pre(make_sample(), train=False)
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])


def test_bad_inputs_name_the_problem():
    pre = Preprocessor(make_config("pi0"), make_stats(), load_tokenizer())
    s = make_sample()
    s["images"]["side"] = s["images"]["front"]
    with pytest.raises(ValueError, match="unknown camera 'side'"):
        pre(s)
    s = make_sample()
    del s["images"]["wrist"]
    with pytest.raises(ValueError, match="missing camera 'wrist'"):
        pre(s)
    s = make_sample()
    s["state"] = torch.zeros(S + 1)
    with pytest.raises(ValueError, match=r"state must have shape \(4,\), got \(5,\)"):
        pre(s)
    with pytest.raises(ValueError, match="unknown model slot"):
        ProcessorConfig(camera_map={"front": "observation.images.nope"})


def test_collate_gives_the_observation_and_the_actions():
    """(π0.5 ignoring the observation's state: tests/test_model_inputs.py.)"""
    for variant in ("pi0", "pi05"):
        pre = Preprocessor(make_config(variant), make_stats(), load_tokenizer())
        examples = [pre(make_sample(0)), pre(make_sample(1))]
        obs = collate(examples)
        actions, action_is_pad = collate_actions(examples)
        assert obs.images.shape == (2, 3, 3, 32, 32) and actions.shape == (2, CHUNK, 32)
        assert obs.batch_size == 2 and obs.num_slots == 3 and action_is_pad.shape == (2, CHUNK)
        assert obs.image_masks[:, 2].tolist() == [False, False]
        assert obs.tokens.shape == (2, pre.config.tokenizer_max_length)
        assert obs.state.shape == (2, 32)
        if variant == "pi0":
            text = load_tokenizer().decode(obs.tokens[0])
            assert text == "pick up the cube\n"


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_postprocessor_inverts_action_normalisation(variant):
    cfg = make_config(variant)
    pre, post = Preprocessor(cfg, make_stats(), load_tokenizer()), Postprocessor(cfg, make_stats())
    sample = make_sample()
    ex = pre(sample)
    out = post(ex["actions"][None])  # [1, chunk, A]
    assert out.shape == (1, CHUNK, A)
    torch.testing.assert_close(out[0], sample["actions"], rtol=1e-5, atol=1e-5)
    assert isinstance(post(ex["actions"].numpy()), np.ndarray)


def test_save_and_load_processor_roundtrip(tmp_path):
    cfg, stats, tok = make_config("pi05"), make_stats(), load_tokenizer()
    save_processor(tmp_path, cfg, stats, tok)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "policy_postprocessor.json",
        "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "policy_preprocessor.json",
        "policy_preprocessor_step_2_normalizer_processor.safetensors",
        "shallowpi_processor.json",
        "tokenizer.model",
    ]  # no temp files left
    flat = load_file(str(tmp_path / "policy_preprocessor_step_2_normalizer_processor.safetensors"))
    assert {"observation.state.mean", "observation.state.q01", "action.q99", "action.std"} <= set(flat)
    steps = json.loads((tmp_path / "policy_preprocessor.json").read_text())["steps"]
    assert steps[2]["registry_name"] == "normalizer_processor"
    pre2, post2 = load_processor(tmp_path)
    pre = Preprocessor(cfg, stats, tok)
    a, b = pre(make_sample()), pre2(make_sample())
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert pre2.config.state_dim == S and pre2.config.action_dim == A
    torch.testing.assert_close(post2(a["actions"]), Postprocessor(cfg, stats)(a["actions"]))


def test_processor_config_with_an_unknown_field_is_refused(tmp_path):
    """A misspelt or newer field in shallowpi_processor.json is one error naming it, never silently dropped
    (dropping `pad_state_in_prompt` spelt wrong would feed the model other prompts than it was trained on)."""
    save_processor(tmp_path, make_config("pi05"), make_stats(), load_tokenizer())
    meta = json.loads((tmp_path / "shallowpi_processor.json").read_text())
    meta["config"]["pad_state_in_promt"] = True
    (tmp_path / "shallowpi_processor.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"unknown ProcessorConfig fields: \['pad_state_in_promt'\]"):
        load_processor(tmp_path)
    with pytest.raises(UserError, match="unknown ProcessorConfig fields"):
        ProcessorConfig.from_dict({**make_config("pi0").to_dict(), "colour_jitter": 0.1})
    assert ProcessorConfig.from_dict(make_config("pi0").to_dict()) == make_config("pi0")  # known fields load
