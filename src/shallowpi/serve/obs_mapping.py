"""Client observation -> processor sample: which key of the robot's dict feeds which model input.

Robots that speak openpi's protocol send a flat (or nested) dict whose keys depend on the environment
(openpi's clients: examples/libero, DROID, ALOHA). The processor wants one sample:

    {"images": {camera: uint8 (H, W, 3)}, "state": float32 (S,), "task": str}

An `ObsMapping` says where each of those comes from. Presets (`PRESETS`, pick one by name):

    libero   observation/image -> camera slot 0, observation/wrist_image -> slot 1,
             observation/state (8,) -> state, prompt -> task                       (openpi LIBERO client)
    droid    observation/exterior_image_1_left -> slot 0, observation/wrist_image_left -> slot 1,
             observation/joint_position (7) ++ observation/gripper_position (1) -> state, prompt -> task
    aloha    images/cam_high -> slot 0, images/cam_left_wrist -> slot 1, images/cam_right_wrist -> slot 2
             (nested dict `images`), state (14,) -> state, prompt -> task
    lerobot  observation.images.<cam> -> the processor camera of the same name (every one is required),
             observation.state -> state, task -> task

`cameras` below is the processor's camera key for each model slot, in slot order (`PiConfig.cameras`
order), None for a slot no camera feeds (the processor masks it, as openpi does for LIBERO's missing right
wrist camera). "slot i" is the camera feeding the model's i-th slot, so a preset works whatever the cameras
are called. A mapping must feed every camera the processor has (checked at start-up).

A custom mapping is a JSON file (`shallowpi serve --obs-map my_robot.json`):

    {"images": {"0": "front_rgb", "observation.images.wrist": ["cams", "wrist"]},
     "state": ["joints", "gripper"], "prompt": "instruction"}

Image targets are camera names or slot numbers; a client key given as a list is a path into nested dicts;
"state" is one key or a list of keys concatenated in order; "prompt" may be null (then the server's
--default-prompt is used).

Validation happens here because only here are the client's key names known: every error names the key.
Images: uint8 (any values) or float in [0, 1] (scaled by 255, as openpi does), HWC or CHW with 3 channels.
State: a 1-D numeric array (or list) of finite values. Prompt: str.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shallowpi.errors import UserError

if TYPE_CHECKING:
    from shallowpi.serve.rtc_keys import RTCFields

KeyPath = str | tuple[str, ...]  # a flat key ("observation/image") or a path into nested dicts

# The largest camera frame a request is sized for (px per side, uint8): HD frames fit; openpi's clients
# send 224 x 224. It sizes the server's default frame cap (`max_request_bytes`); --max-frame-mb raises it.
MAX_IMAGE_SIDE = 1280


def max_request_bytes(n_cameras: int, state_dim: int, max_prompt_chars: int) -> int:
    """Bytes of the largest valid request: every camera at MAX_IMAGE_SIDE² uint8 RGB, the state as float64,
    the longest prompt (4 bytes per character at most in UTF-8), plus 25 % and 64 KiB for msgpack framing."""
    payload = n_cameras * MAX_IMAGE_SIDE**2 * 3 + 8 * state_dim + 4 * max_prompt_chars
    return int(payload * 1.25) + 64 * 2**10


@dataclass(frozen=True)
class PreparedObservation:
    """A client observation already checked and turned into a processor sample (off the inference thread);
    a policy's `infer` accepts it in place of the raw observation."""

    sample: dict
    rtc: RTCFields | None = None  # real-time chunking fields (`serve.rtc_keys`), when the client sent them


class ObservationError(UserError):
    """The client sent an observation the policy cannot use; the message names the key and the problem."""


def _fmt(key: KeyPath) -> str:
    return repr(key) if isinstance(key, str) else repr("/".join(key)) + " (nested)"


def lookup(obs: Mapping, key: KeyPath) -> Any:
    """obs[key] for a flat key, obs[k0][k1]... for a path; ObservationError if absent."""
    path = (key,) if isinstance(key, str) else key
    node: Any = obs
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            raise ObservationError(f"missing observation key {_fmt(key)}")
        node = node[part]
    return node


def to_uint8_hwc(value: Any, key: KeyPath) -> np.ndarray:
    """An image from the client as a contiguous uint8 (H, W, 3) array."""
    if not isinstance(value, np.ndarray):
        raise ObservationError(
            f"observation {_fmt(key)} must be a numpy image array, got {type(value).__name__}"
        )
    img = value
    if img.ndim != 3 or 3 not in (img.shape[0], img.shape[-1]):
        raise ObservationError(
            f"observation {_fmt(key)} must have shape (H, W, 3) or (3, H, W), got {img.shape}"
        )
    if img.shape[0] == 3 and img.shape[-1] != 3:  # CHW -> HWC (openpi accepts both)
        img = img.transpose(1, 2, 0)
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ObservationError(f"observation {_fmt(key)} is an empty image {value.shape}")
    if img.dtype == np.uint8:
        return np.array(img, order="C")  # a writable copy: frames decode to read-only views of the buffer
    if img.dtype.kind != "f":
        raise ObservationError(
            f"observation {_fmt(key)} must be uint8 or float in [0, 1], got dtype {img.dtype}"
        )
    if not np.isfinite(img).all():
        raise ObservationError(f"observation {_fmt(key)} contains non-finite values (nan/inf)")
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:
        raise ObservationError(
            f"float image {_fmt(key)} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]"
        )
    return np.ascontiguousarray((img * 255.0).round().astype(np.uint8))


def to_state(value: Any, key: KeyPath) -> np.ndarray:
    """A 1-D float32 vector; lists of numbers are accepted for clients without numpy."""
    if isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        value = np.asarray(value, dtype=np.float64)
    elif isinstance(value, np.generic | int | float) and not isinstance(value, bool | np.bool_):
        value = np.asarray([value])  # DROID's gripper_position may come as a scalar
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"observation {_fmt(key)} must be a numeric array, got {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise ObservationError(
            f"observation {_fmt(key)} must be a float or integer array, got dtype {value.dtype}"
        )
    if value.ndim != 1:
        raise ObservationError(f"observation {_fmt(key)} must be 1-D, got shape {value.shape}")
    if not np.isfinite(value).all():
        raise ObservationError(f"observation {_fmt(key)} contains non-finite values (nan/inf)")
    return value.astype(np.float32)


@dataclass(frozen=True)
class ObsMapping:
    """Where each model input comes from in the client's dict. See the module docstring."""

    name: str
    # target camera (name, or int slot into the model's cameras) -> client key
    images: dict[str | int, KeyPath] = field(default_factory=dict)
    # LeRobot style: every processor camera is read from the client key of the same name
    images_by_camera_name: bool = False
    state: tuple[KeyPath, ...] = ()  # concatenated in order; () = the model gets no state
    prompt: KeyPath | None = "prompt"

    def resolve(self, cameras: Sequence[str | None]) -> dict[str, KeyPath]:
        """Processor camera -> client key (slot numbers resolved); `cameras`: per model slot, or None."""
        known = [c for c in cameras if c is not None]
        out: dict[str, KeyPath] = {}
        if self.images_by_camera_name:
            out.update({cam: cam for cam in known})
        for target, key in self.images.items():
            if isinstance(target, int):
                if not 0 <= target < len(cameras) or cameras[target] is None:
                    raise UserError(
                        f"mapping {self.name!r}: no camera feeds model slot {target} (slots: {list(cameras)})"
                    )
                target = cameras[target]
            elif target not in known:
                raise UserError(
                    f"mapping {self.name!r}: camera {target!r} is not one of the processor's {known}"
                )
            out[target] = key
        return out

    def extract(self, obs: Mapping, cameras: Sequence[str | None], default_prompt: str | None = None) -> dict:
        """The processor sample for one client observation; ObservationError names any bad key."""
        if not isinstance(obs, Mapping):
            raise ObservationError(f"observation must be a dict (msgpack map), got {type(obs).__name__}")
        images: dict[str, np.ndarray] = {}
        for cam, key in self.resolve(cameras).items():
            images[cam] = to_uint8_hwc(lookup(obs, key), key)
        state = np.concatenate([to_state(lookup(obs, k), k) for k in self.state]) if self.state else None
        task: Any = None
        if self.prompt is not None:
            try:
                task = lookup(obs, self.prompt)
            except ObservationError:
                if default_prompt is None:
                    raise
        if task is None:
            if default_prompt is None:
                raise ObservationError("the mapping has no prompt key and the server has no default prompt")
            task = default_prompt
        if isinstance(task, bytes):
            task = task.decode("utf-8", errors="replace")
        if not isinstance(task, str):
            raise ObservationError(
                f"observation {_fmt(self.prompt or 'prompt')} must be a string, got {type(task).__name__}"
            )
        sample: dict[str, Any] = {"images": images, "task": task}
        if state is not None:
            sample["state"] = state
        return sample

    def describe(self, cameras: Sequence[str | None]) -> dict:
        """msgpack-friendly summary for the metadata frame."""
        key = lambda k: k if isinstance(k, str) else list(k)
        return {
            "name": self.name,
            "images": {cam: key(k) for cam, k in self.resolve(cameras).items()},
            "state": [key(k) for k in self.state],
            "prompt": None if self.prompt is None else key(self.prompt),
        }


PRESETS: dict[str, ObsMapping] = {
    "libero": ObsMapping(
        "libero",
        images={0: "observation/image", 1: "observation/wrist_image"},
        state=("observation/state",),
    ),
    "droid": ObsMapping(
        "droid",
        images={0: "observation/exterior_image_1_left", 1: "observation/wrist_image_left"},
        state=("observation/joint_position", "observation/gripper_position"),
    ),
    "aloha": ObsMapping(
        "aloha",
        images={0: ("images", "cam_high"), 1: ("images", "cam_left_wrist"), 2: ("images", "cam_right_wrist")},
        state=("state",),
    ),
    "lerobot": ObsMapping("lerobot", images_by_camera_name=True, state=("observation.state",), prompt="task"),
}


def _key_from_json(value: Any, what: str) -> KeyPath:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UserError(f"{what}: a key must be a string or a non-empty list of strings, got {value!r}")


def mapping_from_dict(d: Mapping, name: str = "custom") -> ObsMapping:
    """Build a mapping from the JSON form described in the module docstring."""
    unknown = set(d) - {"images", "state", "prompt", "images_by_camera_name"}
    if unknown:
        raise UserError(f"unknown observation-mapping fields: {sorted(unknown)}")
    images: dict[str | int, KeyPath] = {}
    for target, key in dict(d.get("images", {})).items():
        tgt: str | int = int(target) if str(target).isdigit() else str(target)
        images[tgt] = _key_from_json(key, f"images[{target!r}]")
    state = d.get("state", [])
    if isinstance(state, str):
        state = [state]
    prompt = d.get("prompt", "prompt")
    return ObsMapping(
        name,
        images=images,
        images_by_camera_name=bool(d.get("images_by_camera_name", False)),
        state=tuple(_key_from_json(k, "state") for k in state),
        prompt=None if prompt is None else _key_from_json(prompt, "prompt"),
    )


def get_mapping(spec: str | ObsMapping) -> ObsMapping:
    """A preset name, a path to a JSON mapping file, or an ObsMapping (returned as is)."""
    if isinstance(spec, ObsMapping):
        return spec
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return mapping_from_dict(json.loads(path.read_text()), name=path.stem)
    raise UserError(f"unknown observation mapping {spec!r}: use one of {sorted(PRESETS)} or a .json file")
