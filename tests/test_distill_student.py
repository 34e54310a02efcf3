"""Students: layer maps, exact copies of the teacher's tensors, identity student == teacher."""

from __future__ import annotations

import pytest
import torch

from distill_helpers import random_teacher, synthetic_batch
from shallowpi.distill.student import default_layer_map, make_student
from shallowpi.model import load_model, save_model


def test_default_layer_maps_match_the_method():
    assert default_layer_map(18, 6) == [0, 3, 7, 10, 14, 17]
    assert default_layer_map(18, 9) == [0, 2, 4, 6, 8, 11, 13, 15, 17]
    assert default_layer_map(18, 4) == [0, 6, 11, 17]
    assert default_layer_map(18, 3) == [0, 8, 17]
    assert default_layer_map(18, 18) == list(range(18))
    assert default_layer_map(18, 1) == [0]


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_identity_student_gives_the_teachers_outputs(variant):
    teacher = random_teacher(variant, depth=4)
    student = make_student(teacher, depth=4)
    b = synthetic_batch(teacher)
    obs = b.observation
    x_t = b.noise * b.time[:, None, None]
    with torch.no_grad():
        out_t = teacher.forward_joint(obs, x_t, b.time, capture=(2,))
        out_s = student.forward_joint(obs, x_t, b.time, capture=(2,))
        a_t = teacher.sample_actions(obs, noise=b.noise, num_steps=3)
        a_s = student.sample_actions(obs, noise=b.noise, num_steps=3)
    assert torch.equal(out_t.v_t, out_s.v_t)
    assert torch.equal(out_t.attn[2], out_s.attn[2])
    assert torch.equal(a_t, a_s)


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_subsampled_student_copies_mapped_layers_of_both_stacks(variant):
    teacher = random_teacher(variant, depth=6)
    student = make_student(teacher, layers=[0, 2, 5])
    assert student.config.layer_map == [0, 2, 5]
    assert student.config.depth == student.config.expert.depth == 3
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for name, tensor in s_sd.items():
        for stack in ("vlm", "expert"):
            prefix = f"{stack}.layers."
            if name.startswith(prefix):
                i, rest = name[len(prefix) :].split(".", 1)
                src = f"{prefix}{[0, 2, 5][int(i)]}.{rest}"
                break
        else:
            src = name  # vision, projector, embeddings, projections, final norms: copied whole
        assert torch.equal(tensor, t_sd[src]), name
        assert tensor.data_ptr() != t_sd[src].data_ptr(), f"{name} shares storage with the teacher"


def test_layer_map_is_saved_with_the_student(tmp_path):
    student = make_student(random_teacher("pi05", depth=6), depth=4)
    save_model(student, tmp_path / "student")
    loaded = load_model(tmp_path / "student")
    assert loaded.config.layer_map == default_layer_map(6, 4) == [0, 2, 3, 5]
    for k, v in student.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_backbone_can_keep_its_own_layers_and_round_trips(tmp_path):
    """The released-initialisation baseline: backbone layers 0..2, expert layers [0, 2, 5]."""
    teacher = random_teacher("pi05", depth=6)
    student = make_student(teacher, layers=[0, 2, 5], vlm_layers=[0, 1, 2])
    assert student.config.layer_map == [0, 2, 5] and student.config.vlm_layer_map == [0, 1, 2]
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    maps = {"vlm": [0, 1, 2], "expert": [0, 2, 5]}
    checked = 0
    for name, tensor in s_sd.items():
        stack, _, rest = name.partition(".layers.")
        if stack in maps and rest:
            i, tail = rest.split(".", 1)
            assert torch.equal(tensor, t_sd[f"{stack}.layers.{maps[stack][int(i)]}.{tail}"]), name
            checked += 1
    assert checked > 0
    save_model(student, tmp_path / "released")
    loaded = load_model(tmp_path / "released")
    assert loaded.config.vlm_layer_map == [0, 1, 2] and loaded.config.layer_map == [0, 2, 5]
    # Same map for both stacks is stored as the one shared map.
    same = make_student(teacher, layers=[0, 2, 5], vlm_layers=[0, 2, 5])
    assert same.config.vlm_layer_map is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "depth must be in"),
        ({"depth": 7}, "depth must be in"),
        ({"layers": [0, 6]}, "out of range"),
        ({"layers": [3, 1]}, "strictly increasing"),
        ({"layers": [1, 1]}, "strictly increasing"),
        ({"layers": []}, "empty"),
        ({"layers": [0, 2], "depth": 3}, "does not match"),
        ({}, "give a student depth"),
    ],
)
def test_bad_student_requests_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_student(random_teacher("pi05", depth=6), **kwargs)
