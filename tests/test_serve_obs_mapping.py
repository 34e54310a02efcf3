"""Observation mapping: client keys -> processor sample, with errors that name the offending key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shallowpi.serve.obs_mapping import PRESETS, ObservationError, get_mapping

CAMS = (
    "observation.images.base_0_rgb",
    "observation.images.left_wrist_0_rgb",
    "observation.images.right_wrist_0_rgb",
)


def libero_obs(**over):
    rng = np.random.default_rng(0)
    obs = {
        "observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8),
        "prompt": "pick up the bowl",
    }
    obs.update(over)
    return obs


def test_libero_preset_fills_slots_in_order_and_leaves_right_wrist_out():
    obs = libero_obs()
    s = PRESETS["libero"].extract(obs, CAMS)
    assert list(s["images"]) == list(CAMS[:2])  # the right wrist is absent -> masked by the processor
    np.testing.assert_array_equal(s["images"][CAMS[0]], obs["observation/image"])
    np.testing.assert_array_equal(s["images"][CAMS[1]], obs["observation/wrist_image"])
    assert s["state"].dtype == np.float32 and s["state"].shape == (8,)
    assert s["task"] == "pick up the bowl"


def test_chw_and_float_images_are_accepted_like_openpi():
    img = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    s = PRESETS["libero"].extract(
        libero_obs(**{"observation/image": img.transpose(2, 0, 1), "observation/wrist_image": img / 255.0}),
        CAMS,
    )
    np.testing.assert_array_equal(s["images"][CAMS[0]], img)
    np.testing.assert_array_equal(s["images"][CAMS[1]], img)


def test_droid_concatenates_state_and_aloha_reads_nested_images():
    img = np.zeros((3, 224, 224), np.uint8)
    droid = {
        "observation/exterior_image_1_left": img, "observation/wrist_image_left": img,
        "observation/joint_position": np.arange(7.0), "observation/gripper_position": np.array([0.5]),
        "prompt": "x",
    }  # fmt: skip
    np.testing.assert_array_equal(PRESETS["droid"].extract(droid, CAMS)["state"], [0, 1, 2, 3, 4, 5, 6, 0.5])
    aloha = {"images": {"cam_high": img, "cam_low": img, "cam_left_wrist": img, "cam_right_wrist": img},
             "state": np.zeros(14), "prompt": "fold"}  # fmt: skip
    assert list(PRESETS["aloha"].extract(aloha, CAMS)["images"]) == list(CAMS)


def test_lerobot_preset_uses_camera_names_and_requires_each():
    img = np.zeros((56, 56, 3), np.uint8)
    cams = ("observation.images.front", None, "observation.images.wrist")  # slot 1 has no camera
    obs = {cams[0]: img, cams[2]: img, "observation.state": [0.1, 0.2], "task": "stack"}
    s = PRESETS["lerobot"].extract(obs, cams)
    assert list(s["images"]) == [cams[0], cams[2]] and s["task"] == "stack"
    np.testing.assert_allclose(s["state"], [0.1, 0.2])
    del obs[cams[2]]
    with pytest.raises(ObservationError, match="missing observation key 'observation.images.wrist'"):
        PRESETS["lerobot"].extract(obs, cams)


def test_mapping_to_a_slot_without_camera_is_refused_at_start_up():
    with pytest.raises(ValueError, match="no camera feeds model slot 1"):
        PRESETS["libero"].resolve(("observation.images.image", None, None))


def test_default_prompt_used_only_when_prompt_absent():
    obs = libero_obs()
    del obs["prompt"]
    assert PRESETS["libero"].extract(obs, CAMS, default_prompt="be careful")["task"] == "be careful"
    assert (
        PRESETS["libero"].extract(libero_obs(), CAMS, default_prompt="ignored")["task"] == "pick up the bowl"
    )
    with pytest.raises(ObservationError, match="'prompt'"):
        PRESETS["libero"].extract(obs, CAMS)


@pytest.mark.parametrize(
    "over, drop, match",
    [
        ({}, "observation/wrist_image", "missing observation key 'observation/wrist_image'"),
        ({}, "observation/state", "missing observation key 'observation/state'"),
        ({"observation/image": np.zeros((224, 224), np.uint8)}, None, r"'observation/image' must have shape"),
        (
            {"observation/image": np.zeros((224, 224, 3), np.int32)},
            None,
            r"'observation/image' must be uint8",
        ),
        ({"observation/image": np.full((8, 8, 3), 2.0)}, None, r"'observation/image' must be in \[0, 1\]"),
        ({"observation/image": np.full((8, 8, 3), np.nan)}, None, r"'observation/image' contains non-finite"),
        ({"observation/image": "not an image"}, None, "must be a numpy image array"),
        ({"observation/state": np.array([0.0, np.inf])}, None, r"'observation/state' contains non-finite"),
        ({"observation/state": np.zeros((2, 4))}, None, r"'observation/state' must be 1-D"),
        (
            {"observation/state": np.array(["a", "b"])},
            None,
            r"'observation/state' must be a float or integer",
        ),
        ({"prompt": 3}, None, "'prompt' must be a string"),
    ],
)
def test_bad_observations_name_the_key(over, drop, match):
    obs = libero_obs(**over)
    if drop:
        del obs[drop]
    with pytest.raises(ObservationError, match=match):
        PRESETS["libero"].extract(obs, CAMS)


def test_custom_json_mapping(tmp_path):
    path = tmp_path / "my_robot.json"
    path.write_text(json.dumps({
        "images": {"0": "front", CAMS[2]: ["cams", "wrist"]},
        "state": ["joints", "gripper"], "prompt": "instruction",
    }))  # fmt: skip
    m = get_mapping(str(path))
    img = np.zeros((10, 10, 3), np.uint8)
    s = m.extract(
        {"front": img, "cams": {"wrist": img}, "joints": np.zeros(3), "gripper": 1.0, "instruction": "go"},
        CAMS,
    )
    assert list(s["images"]) == [CAMS[0], CAMS[2]] and s["state"].shape == (4,) and s["task"] == "go"
    with pytest.raises(ValueError, match="unknown observation mapping"):
        get_mapping("no_such_preset")
