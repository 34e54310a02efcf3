"""Load a LeRobot 0.4.4 reference bundle (weights, config, inputs/outputs) for parity tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from shallowpi.model.lerobot_config import config_from_lerobot
from shallowpi.observation import Observation


@dataclass
class Bundle:
    name: str
    config_json: dict  # LeRobot config + our "shallowpi" size object (what a user writes for these sizes)
    weights: dict[str, torch.Tensor]  # LeRobot naming
    io: dict[str, torch.Tensor]

    @property
    def config(self):
        return config_from_lerobot(self.config_json)

    @property
    def n_cams(self) -> int:
        return sum(1 for k in self.io if k.startswith("inputs.image.cam"))

    def observation(self) -> Observation:
        """The bundle's inputs (stored per camera, as LeRobot's model takes them)."""
        io = self.io
        return Observation.from_lists(
            [io[f"inputs.image.cam{i}"] for i in range(self.n_cams)],
            [io[f"inputs.image_mask.cam{i}"] for i in range(self.n_cams)],
            io["inputs.lang_tokens"],
            io["inputs.lang_mask"],
            io.get("inputs.state"),
        )


def load_bundle(reference_dir: Path, name: str) -> Bundle:
    d = reference_dir / name
    meta = json.loads((d / "config.json").read_text())
    arch = meta["architecture_built"]
    vision = arch["vision_siglip"]
    cfg = dict(meta["lerobot_config"])
    cfg["shallowpi"] = {
        "vlm": {
            k: arch["vlm_gemma"][k]
            for k in ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
        },
        "expert": {
            k: arch["action_expert_gemma"][k]
            for k in ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
        },
        "vision": {
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "width": vision["width"],
            "depth": vision["depth"],
            "mlp_dim": vision["mlp_dim"],
            "num_heads": vision["num_heads"],
        },
        "vocab_size": arch["vocab_size"],
        "layer_map": None,
    }
    return Bundle(name, cfg, load_file(str(d / "weights.safetensors")), load_file(str(d / "io.safetensors")))
