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
    task_loss,
    velocity_kd_loss,
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
    prefix_valid = torch.tensor([[True, True, False]])
    t = torch.zeros(1, 1, 5, 5)
    s = torch.zeros(1, 1, 5, 5)
    t[0, 0, 3:, :2] = torch.tensor([0.3, 0.1])  # rest of the mass on action keys: ignored
    s[0, 0, 3:, :2] = torch.tensor([0.5, 0.5])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert attention_kd_loss(t, s, prefix_valid, chunk=2).item() == pytest.approx(expected, rel=1e-5)
    assert attention_kd_loss(t, t.clone(), prefix_valid, chunk=2).item() == 0.0


def test_attention_kd_ignores_mass_on_padded_vl_keys():
    """Probability on a padded prefix key (per sample) counts for neither model: both rows are renormalised
    over that sample's valid keys. Without the mask the teacher's padded mass and the student's would enter
    the KL and change it."""
    prefix_valid = torch.tensor([[True, True, False], [True, False, True]])
    t = torch.zeros(2, 1, 5, 5)
    s = torch.zeros(2, 1, 5, 5)
    t[0, 0, 3:, :3] = torch.tensor([0.3, 0.1, 0.4])  # teacher mass on sample 0's padded key 2
    s[0, 0, 3:, :3] = torch.tensor([0.2, 0.2, 0.5])  # student mass there too, a different amount
    t[1, 0, 3:, :3] = torch.tensor([0.6, 0.3, 0.1])  # sample 1: key 1 is the padded one
    s[1, 0, 3:, :3] = torch.tensor([0.1, 0.0, 0.1])
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # valid keys 0, 1
    kl1 = (6 / 7) * math.log((6 / 7) / 0.5) + (1 / 7) * math.log((1 / 7) / 0.5)  # valid keys 0, 2
    got = attention_kd_loss(t, s, prefix_valid, chunk=2).item()
    assert got == pytest.approx((kl0 + kl1) / 2, rel=1e-5)
    # Moving the student's padded-key mass changes nothing; moving its valid-key mass does.
    s2 = s.clone()
    s2[0, 0, 3:, 2] = 0.0
    s2[1, 0, 3:, 1] = 0.7
    assert attention_kd_loss(t, s2, prefix_valid, chunk=2).item() == pytest.approx(got, rel=1e-6)
    s2[0, 0, 3:, 0] = 0.9
    assert attention_kd_loss(t, s2, prefix_valid, chunk=2).item() != pytest.approx(got, rel=1e-3)


def test_action_error_crops_dims_zeroes_padded_steps_and_keeps_the_denominator():
    """Squared error over the dataset's action dims only; chunk steps past the episode end contribute 0 but
    stay in the denominator (B x chunk x action_dim), so equal shards average to the global value."""
    B, chunk, max_dim, dim = 2, 3, 5, 2
    g = torch.Generator().manual_seed(0)
    u = torch.randn(B, chunk, max_dim, generator=g)
    v = u.clone()
    pad = torch.tensor([[False, False, True], [False, True, True]])
    err = torch.tensor([[[1.0, 2.0], [3.0, 0.5], [0.0, 0.0]], [[2.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    v[..., :dim] += err  # differences on real dims of real steps ...
    v[..., dim:] += 100.0  # ... and large ones on the padding dims and padded steps, which must not count
    v[pad] += 1000.0
    expected = err.pow(2).sum().item() / (B * chunk * dim)
    for fn in (task_loss, velocity_kd_loss):
        assert fn(v, u, action_dim=dim, action_is_pad=pad).item() == pytest.approx(expected, rel=1e-6)
    # Without a pad mask every step counts; without action_dim every padding dim counts.
    assert task_loss(v, u, action_dim=dim).item() > 1000
    assert task_loss(v, u, action_is_pad=pad).item() > 1000
    # Shards of the batch average back to the full-batch value (the DDP / accumulation property).
    halves = [
        task_loss(v[i : i + 1], u[i : i + 1], action_dim=dim, action_is_pad=pad[i : i + 1]) for i in (0, 1)
    ]
    assert torch.stack(halves).mean().item() == pytest.approx(expected, rel=1e-6)


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
