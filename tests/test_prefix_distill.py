"""Distilling a compressed prefix: the student (merged image tokens, a subsampled SigLIP tower), its projector
init, attention KD over merged image keys and the vision-feature loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distill_helpers import synthetic_batch
from shallowpi.distill.losses import (
    DistillLoss,
    DistillLossConfig,
    LossWeights,
    action_to_vl_attention,
    attention_kd_target,
)
from shallowpi.distill.parallel import JointForward
from shallowpi.distill.prefix import ImageKeyPool
from shallowpi.distill.student import make_student
from shallowpi.errors import UserError
from shallowpi.model import PiModel, load_model, save_model
from shallowpi.model.config import tiny
from shallowpi.model.siglip import merge_groups
from shallowpi.testing import random_observation

pytestmark = pytest.mark.usefixtures("one_thread")


def _teacher(vision_depth: int = 2, merge: int = 1, variant: str = "pi05") -> PiModel:
    """A tiny random teacher (4x4 patch grid) with `vision_depth` SigLIP layers, every tensor random."""
    cfg = tiny(variant, 4)
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, depth=vision_depth, merge=merge))
    torch.manual_seed(0)
    model = PiModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _mixed_masks_batch(model: PiModel, seed: int = 0):
    """A batch whose camera validity differs per sample (no slot is masked for the whole batch, so nothing
    is compacted away and masking is per sample)."""
    batch = synthetic_batch(model, seed=seed)
    masks = torch.tensor([[True, True, False], [True, False, True], [False, True, True], [True, True, True]])
    return dataclasses.replace(batch, observation=dataclasses.replace(batch.observation, image_masks=masks))


def _image_tokens(model: PiModel, obs) -> torch.Tensor:
    """Projected image tokens per camera slot: (B, n_slots, tokens, W_vlm)."""
    embs, _ = model.embed_prefix(obs)
    n, t = obs.num_slots, model.config.vision.num_tokens
    return embs[:, : n * t].unflatten(1, (n, t))


# The student --------------------------------------------------------------------------------------------


def test_prefix_student_shapes_copies_and_strict_round_trip(tmp_path):
    teacher = _teacher(vision_depth=6)
    student = make_student(teacher, depth=2, merge=2, vision_depth=4)
    c = student.config
    assert c.vision.merge == 2 and c.vision.depth == 4 and c.vision.num_tokens == 4
    assert c.vision_layer_map == [0, 2, 3, 5]  # round(linspace(0, 5, 4)), as the Gemma stacks
    assert c.layer_map == [0, 3]
    assert student.projector.weight.shape == (c.vlm.width, 4 * c.vision.width)
    assert len(student.vision.encoder.layers) == 4
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for i, j in enumerate([0, 2, 3, 5]):
        for name, tensor in student.vision.encoder.layers[i].state_dict().items():
            assert torch.equal(tensor, t_sd[f"vision.encoder.layers.{j}.{name}"]), name
    for name in (
        "vision.embeddings.patch_embedding.weight",
        "vision.post_layernorm.weight",
        "projector.bias",
    ):
        assert torch.equal(s_sd[name], t_sd[name]), name
        assert s_sd[name].data_ptr() != t_sd[name].data_ptr()

    obs = random_observation(c, batch=2)
    embs, valid = student.embed_prefix(obs)
    assert embs.shape[:2] == valid.shape == (2, len(c.cameras) * 4 + c.tokenizer_max_length)
    assert student.sample_actions(obs, num_steps=2).shape == (2, c.chunk_size, c.max_action_dim)

    save_model(student, tmp_path / "s")
    loaded = load_model(tmp_path / "s")  # strict
    assert loaded.config.vision == c.vision and loaded.config.vision_layer_map == [0, 2, 3, 5]
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in s_sd.items())

    # An explicit list, and a whole tower given explicitly, which is not a subsampled one.
    assert make_student(teacher, depth=2, vision_layers=[1, 4]).config.vision_layer_map == [1, 4]
    whole = make_student(teacher, depth=2, vision_depth=6)
    assert whole.config.vision_layer_map is None and whole.config.vision.merge == 1


@pytest.mark.parametrize(("teacher_merge", "merge"), [(1, 2), (1, 4), (2, 4)])
def test_merged_projector_starts_at_the_group_mean_of_teacher_projections(teacher_merge, merge):
    """Through the whole prefix path: each student image token equals the mean of the teacher's projected
    tokens it replaces; language tokens are unchanged."""
    teacher = _teacher(merge=teacher_merge)
    student = make_student(teacher, depth=4, merge=merge)
    obs = random_observation(teacher.config, batch=2, masked_slot=False)
    with torch.no_grad():
        t_tok = _image_tokens(teacher, obs)  # (B, n, N_t, W)
        s_tok = _image_tokens(student, obs)  # (B, n, N_s, W)
        groups = merge_groups(teacher.config.vision.grid // teacher_merge, merge // teacher_merge)
        expected = torch.stack([t_tok[:, :, groups == g].mean(2) for g in range(s_tok.shape[2])], dim=2)
        torch.testing.assert_close(s_tok, expected, rtol=1e-5, atol=1e-6)
        n_img = obs.num_slots * student.config.vision.num_tokens
        n_img_t = obs.num_slots * teacher.config.vision.num_tokens
        assert torch.equal(student.embed_prefix(obs)[0][:, n_img:], teacher.embed_prefix(obs)[0][:, n_img_t:])
    # and the weight itself: W replicated along the input axis and divided by the tokens merged
    if teacher_merge == 1:
        w = teacher.projector.weight
        assert torch.equal(student.projector.weight, torch.cat([w] * merge**2, dim=1) / merge**2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"merge": 3}, "does not divide the 4x4 patch grid"),
        ({"merge": 0}, "image token merge must be an integer >= 1"),
        ({"merge": True}, "image token merge must be an integer >= 1"),
        ({"vision_depth": 3}, r"vision depth must be in \[1, 2\] \(the teacher's vision depth\)"),
        ({"vision_layers": [0, 5]}, r"vision layers \[5\] are out of range"),
        ({"vision_layers": [1, 0]}, "vision layer list must be strictly increasing"),
        ({"vision_layers": []}, "vision layer list is empty"),
        ({"vision_depth": 2, "vision_layers": [0]}, "vision depth 2 does not match the 1 layers"),
    ],
)
def test_bad_prefix_requests_fail_clearly(kwargs, message):
    with pytest.raises(UserError, match=message):
        make_student(_teacher(), depth=2, **kwargs)


def test_a_merged_teacher_cannot_be_split():
    with pytest.raises(UserError, match="not a multiple of the teacher's merge 2"):
        make_student(_teacher(merge=2), depth=2, merge=1)
    assert make_student(_teacher(merge=2), depth=2).config.vision.merge == 2  # default: the teacher's


# Attention KD over merged image keys ---------------------------------------------------------------------


def _teacher_attention(teacher: PiModel, batch, layer: int = 1):
    x_t = batch.noise * batch.time[:, None, None]
    with torch.no_grad():
        out = teacher.forward_joint(batch.observation, x_t, batch.time, capture=(layer,))
    return out.attn[layer], out.prefix_valid


def test_pooled_target_sums_teacher_attention_by_group_and_to_one():
    teacher = _teacher()
    student = make_student(teacher, depth=2, merge=2)
    batch = _mixed_masks_batch(teacher)
    probs, t_valid = _teacher_attention(teacher, batch)
    chunk = teacher.config.chunk_size
    x_t = batch.noise * batch.time[:, None, None]
    with torch.no_grad():
        s_valid = student.forward_joint(batch.observation, x_t, batch.time).prefix_valid
    pool = ImageKeyPool.between(teacher.config.vision, student.config.vision)
    target = attention_kd_target(probs, t_valid, chunk, pool, s_valid.shape[1])  # (B, nh, chunk, P_s)

    n_slots, n_t, n_s = 3, 16, 4
    lang = t_valid.shape[1] - n_slots * n_t
    assert target.shape == (*probs.shape[:2], chunk, n_slots * n_s + lang)
    torch.testing.assert_close(target.sum(-1), torch.ones(target.shape[:-1]), rtol=0, atol=1e-6)
    assert (target[..., ~s_valid[0]][0] == 0).all()  # no mass on the student's masked keys

    # By hand: the teacher's renormalised attention, each merged key the sum of its four patches.
    full = action_to_vl_attention(probs, t_valid, chunk)  # (B, nh, chunk, P_t)
    groups = merge_groups(4, 2)
    for slot in range(n_slots):
        for g in range(n_s):
            keys = [slot * n_t + p for p in range(n_t) if groups[p] == g]
            torch.testing.assert_close(
                target[..., slot * n_s + g], full[..., keys].sum(-1), rtol=0, atol=1e-7
            )
    assert torch.equal(target[..., n_slots * n_s :], full[..., n_slots * n_t :])  # language keys 1:1


def test_pooled_target_handles_a_slot_compacted_away():
    """A camera slot masked for the whole batch is dropped from both prefixes; the slot count follows."""
    teacher = _teacher()
    student = make_student(teacher, depth=2, merge=2)
    batch = synthetic_batch(teacher)  # the last slot is masked for every sample
    assert not batch.observation.image_masks[:, -1].any()
    probs, t_valid = _teacher_attention(teacher, batch)
    pool = ImageKeyPool.between(teacher.config.vision, student.config.vision)
    lang = t_valid.shape[1] - 2 * 16
    target = attention_kd_target(probs, t_valid, 10, pool, 2 * 4 + lang)
    assert target.shape[-1] == 2 * 4 + lang
    torch.testing.assert_close(target.sum(-1), torch.ones(target.shape[:-1]), rtol=0, atol=1e-6)


def test_merge_1_attention_kd_is_todays_formula():
    """Same image keys: no pooling, and the attention term is exactly the KL of the renormalised rows."""
    teacher = _teacher()
    student = make_student(teacher, depth=2)
    assert ImageKeyPool.between(teacher.config.vision, student.config.vision) is None
    loss = DistillLoss(student, teacher, DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=1)))
    assert loss.pool is None
    batch = _mixed_masks_batch(teacher)
    with torch.no_grad():
        _, terms = loss(JointForward(student), batch)
        dim = teacher.config.max_action_dim
        actions = torch.nn.functional.pad(batch.actions, (0, dim - batch.actions.shape[-1]))
        x_t, _ = PiModel.interpolate(actions, batch.noise, batch.time)  # the loss's x_t
        (s, t), chunk = loss.pairs[0], teacher.config.chunk_size
        out_s = student.forward_joint(batch.observation, x_t, batch.time, capture=(s,))
        out_t = teacher.forward_joint(batch.observation, x_t, batch.time, capture=(t,))
    valid = out_s.prefix_valid[:, None, None, :]

    def rows(p):  # the documented rule: action rows, valid VL keys, renormalised (eps-guarded)
        a = p[:, :, -chunk:, : valid.shape[-1]] * valid
        return a / a.sum(-1, keepdim=True).clamp_min(1e-8)

    pt, ps = rows(out_t.attn[t]), rows(out_s.attn[s])
    assert torch.equal(attention_kd_target(out_t.attn[t], out_s.prefix_valid, chunk), pt)
    expected = (pt * ((pt + 1e-8).log() - (ps + 1e-8).log())).sum(-1).mean()
    assert torch.equal(terms["attn"], expected)


def test_attention_kd_with_merged_keys_trains_the_student():
    teacher = _teacher()
    student = make_student(teacher, depth=2, merge=2).train()
    loss = DistillLoss(student, teacher, DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=1)))
    _, terms = loss(JointForward(student), _mixed_masks_batch(teacher))
    assert terms["attn"].item() > 0
    terms["attn"].backward()
    assert student.projector.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


# The vision-feature loss ---------------------------------------------------------------------------------


def test_vision_weight_defaults_to_one_only_for_a_shallower_tower():
    teacher = _teacher()
    merged_student = make_student(teacher, depth=2, merge=2)
    merged = DistillLoss(merged_student, teacher, DistillLossConfig())
    shallow = DistillLoss(make_student(teacher, depth=2, vision_depth=1), teacher, DistillLossConfig())
    assert merged.config.weights.vision == 0.0 and shallow.config.weights.vision == 1.0
    assert LossWeights.parse("vision=0.5").vision == 0.5
    assert LossWeights.parse("task=0,kd=0,attn=0,vision=1").vision == 1.0
    with pytest.raises(UserError, match="every loss weight is 0"):
        LossWeights.parse("task=0,kd=0,attn=0,vision=0")
    with pytest.raises(UserError, match="need a teacher"):
        DistillLoss(teacher, None, DistillLossConfig(weights=LossWeights(task=1, kd=0, attn=0, vision=1)))
    # With weight 0 the term is neither computed nor logged.
    _, terms = merged(JointForward(merged_student), _mixed_masks_batch(teacher))
    assert set(terms) == {"task", "kd", "attn"}


def test_vision_loss_is_zero_for_the_same_tower_and_positive_otherwise_student_only_gradient():
    teacher = _teacher()
    batch = _mixed_masks_batch(teacher)
    only_vision = DistillLossConfig(weights=LossWeights(task=0, kd=0, attn=0, vision=1))

    same = make_student(teacher, depth=2, merge=2)  # merged tokens, the teacher's whole tower
    _, terms = DistillLoss(same, teacher, only_vision)(JointForward(same), batch)
    assert terms["vision"].item() == 0.0

    student = make_student(teacher, depth=2, merge=2, vision_depth=1).train()
    loss = DistillLoss(student, teacher, only_vision)
    teacher_siglip_calls = []
    hook = teacher.vision.register_forward_hook(lambda *_: teacher_siglip_calls.append(1))
    try:
        _, terms = loss(JointForward(student), batch)
    finally:
        hook.remove()
    assert teacher_siglip_calls == [1]  # one teacher pass; its features are reused, not recomputed
    assert terms["vision"].item() > 0
    terms["vision"].backward()
    grads = {n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith("vision.") for n in grads), sorted(grads)
    assert "vision.encoder.layers.0.mlp.fc1.weight" in grads
    assert all(p.grad is None for p in teacher.parameters())


def test_vision_loss_counts_only_slots_that_hold_an_image():
    teacher = _teacher()
    student = make_student(teacher, depth=2, vision_depth=1)
    loss = DistillLoss(student, teacher, DistillLossConfig(weights=LossWeights(0, 0, 0, vision=1)))
    batch = _mixed_masks_batch(teacher)
    with torch.no_grad():
        base = loss(JointForward(student), batch)[1]["vision"]
        images = batch.observation.images.clone()
        masks = batch.observation.image_masks
        images[~masks] = torch.rand_like(images[~masks])  # other pixels in the masked slots only
        moved = dataclasses.replace(batch, observation=dataclasses.replace(batch.observation, images=images))
        assert torch.equal(loss(JointForward(student), moved)[1]["vision"], base)
        images[masks] = torch.rand_like(images[masks])
        changed = dataclasses.replace(
            batch, observation=dataclasses.replace(batch.observation, images=images)
        )
        assert loss(JointForward(student), changed)[1]["vision"].item() != pytest.approx(
            base.item(), rel=1e-3
        )
