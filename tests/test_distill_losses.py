"""The three losses: zero where teacher == student, positive with gradients otherwise; schedule shape."""

from __future__ import annotations

import math

import pytest
import torch

from distill_helpers import random_teacher, synthetic_batch
from shallowpi.distill.losses import (
    DistillLoss,
    DistillLossConfig,
    LossWeights,
    attention_kd_loss,
    default_attn_pairs,
    parse_attn_pairs,
)
from shallowpi.distill.parallel import JointForward, freeze
from shallowpi.distill.schedule import ScheduleConfig, lr_at
from shallowpi.distill.student import make_student


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_kd_terms_are_zero_for_the_identity_student(variant):
    teacher = random_teacher(variant, depth=4)
    student = make_student(teacher, depth=4)
    loss = DistillLoss(student, teacher, DistillLossConfig(action_dim=4))
    _, terms = loss(JointForward(student), synthetic_batch(teacher))
    assert terms["kd"].item() == 0.0
    assert terms["attn"].item() == 0.0
    assert terms["task"].item() > 0


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_kd_terms_are_positive_with_gradients_for_a_shallow_student(variant):
    teacher = random_teacher(variant, depth=4)
    student = make_student(teacher, depth=2)
    freeze(student, vision=False)
    loss = DistillLoss(
        student, teacher, DistillLossConfig(weights=LossWeights(task=0, kd=1, attn=0), action_dim=4)
    )
    _, terms = loss(JointForward(student), synthetic_batch(teacher))
    assert set(terms) == {"kd"} and terms["kd"].item() > 0
    terms["kd"].backward()
    assert student.action_out_proj.weight.grad.abs().sum() > 0
    student.zero_grad()
    loss = DistillLoss(
        student, teacher, DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=1), action_dim=4)
    )
    _, terms = loss(JointForward(student), synthetic_batch(teacher))
    assert set(terms) == {"attn"} and terms["attn"].item() > 0
    terms["attn"].backward()
    # The attention loss reaches the action queries of the captured layer and the keys they look at.
    s = default_attn_pairs(student)[0][0]
    assert student.expert.layers[s].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert student.vlm.layers[s].self_attn.k_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_every_trainable_parameter_gets_a_gradient():
    """The frozen list (weights that never reach the actions) is exactly the set without gradient."""
    teacher = random_teacher("pi0", depth=4)
    student = make_student(teacher, depth=2)
    freeze(student, vision=False)
    total, _ = DistillLoss(student, teacher, DistillLossConfig(action_dim=4))(
        JointForward(student), synthetic_batch(teacher)
    )
    total.backward()
    dead = [
        n for n, p in student.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert dead == []


def test_middle_layer_pairs_with_its_source_layer():
    teacher = random_teacher("pi05", depth=6)
    assert default_attn_pairs(make_student(teacher, depth=4)) == [(2, 3)]  # map [0, 2, 3, 5]
    assert default_attn_pairs(make_student(teacher, layers=[0, 1, 4])) == [(1, 1)]
    assert parse_attn_pairs("1:3, 2:5") == [(1, 3), (2, 5)]
    with pytest.raises(ValueError, match="STUDENT:TEACHER"):
        parse_attn_pairs("3")
    with pytest.raises(ValueError, match="teacher layer 9 out of range"):
        DistillLoss(make_student(teacher, depth=2), teacher, DistillLossConfig(attn_pairs=[(0, 9)]))


def test_attention_kd_is_renormalised_over_valid_vl_keys():
    # B=1, nh=1, T = P(3) + chunk(2); the last prefix key is padding, the action keys are excluded.
    prefix_pad = torch.tensor([[True, True, False]])
    t = torch.zeros(1, 1, 5, 5)
    s = torch.zeros(1, 1, 5, 5)
    t[0, 0, 3:, :2] = torch.tensor([0.3, 0.1])  # rest of the mass on action keys: ignored
    s[0, 0, 3:, :2] = torch.tensor([0.5, 0.5])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert attention_kd_loss(t, s, prefix_pad, chunk=2).item() == pytest.approx(expected, rel=1e-5)
    assert attention_kd_loss(t, t.clone(), prefix_pad, chunk=2).item() == 0.0


def test_loss_weights_parse_and_validate():
    assert LossWeights.parse("task=1,kd=0.5,attn=2") == LossWeights(1.0, 0.5, 2.0)
    assert LossWeights.parse("attn=0") == LossWeights(1.0, 1.0, 0.0)
    for bad in ("foo=1", "kd", "kd=x", "kd=-1"):
        with pytest.raises(ValueError, match="loss weight"):
            LossWeights.parse(bad)
    with pytest.raises(ValueError, match="need a teacher"):
        DistillLoss(random_teacher(), None, DistillLossConfig())


def test_schedule_warms_up_then_decays_to_the_end_lr():
    cfg = ScheduleConfig(peak_lr=1.0, warmup_steps=10, decay_steps=110, end_lr=0.1)
    assert lr_at(0, cfg, 200) == pytest.approx(1 / 11)
    assert lr_at(9, cfg, 200) == pytest.approx(10 / 11)
    assert lr_at(10, cfg, 200) == pytest.approx(1.0)
    assert lr_at(60, cfg, 200) == pytest.approx(0.55)
    assert lr_at(110, cfg, 200) == pytest.approx(0.1)
    assert lr_at(150, cfg, 200) == pytest.approx(0.1)
    assert all(lr_at(s, cfg, 200) >= lr_at(s + 1, cfg, 200) for s in range(10, 150))
