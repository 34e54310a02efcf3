"""Full-size π0 / π0.5 (built on the meta device) have exactly LeRobot 0.4.4's keys, shapes and dtypes."""

from __future__ import annotations

import pytest
import torch

from shallowpi.model import PiModel
from shallowpi.model.checkpoint import EXPERT_LM_HEAD, lerobot_state_dict
from shallowpi.model.config import pi0, pi05


def _read_tsv(path):
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dt32, dt16 = line.split("\t")
        rows[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dt32, dt16)
    return rows


@pytest.mark.parametrize("variant,make", [("pi0", pi0), ("pi05", pi05)])
def test_full_size_keys_shapes_dtypes(reference_dir, variant, make):
    expected = _read_tsv(reference_dir / "full_size_keys" / f"{variant}_lerobot_0.4.4.tsv")
    expected.pop("model." + EXPERT_LM_HEAD)  # registered by LeRobot, never used: we accept and drop it
    with torch.device("meta"):
        model = PiModel(make())
    sd = lerobot_state_dict(model)
    assert set(sd) == set(expected), (
        sorted(set(sd) - set(expected))[:5],
        sorted(set(expected) - set(sd))[:5],
    )
    wrong = [k for k, v in sd.items() if tuple(v.shape) != expected[k][0]]
    assert not wrong, wrong[:5]
    assert all(str(v.dtype).removeprefix("torch.") == expected[k][1] for k, v in sd.items())
    model.to_bfloat16()
    sd = lerobot_state_dict(model)
    wrong = [k for k, v in sd.items() if str(v.dtype).removeprefix("torch.") != expected[k][2]]
    assert not wrong, wrong[:5]


def test_full_size_parameter_count():
    with torch.device("meta"):
        model = PiModel(pi05())
    # LeRobot counts 3,616,757,520 unique parameters, of which 263,323,648 are the unused expert lm_head.
    assert model.num_parameters()["total"] == 3_616_757_520 - 263_323_648
