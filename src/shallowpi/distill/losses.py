"""Shallow-π losses (docs/method.md §3): task (flow matching), velocity KD and attention KD; for a student
with a compressed prefix (§8) attention KD over its merged image keys and a vision-feature loss.

Conventions: t = 1 is noise; x_t = t·ε + (1 − t)·a; target u = ε − a. Every term is a mean of per-sample
means over equally sized batches, so splitting a global batch across ranks or accumulation steps and
averaging gives the same number (this is what makes DDP equal to one process on the same global batch).

"Same augmented observation" in code: the trainer preprocesses (and augments) a batch ONCE and feeds that
same batch (same images, tokens, x_t, t, ε) to the student and the frozen teacher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from shallowpi.distill.data import Batch
from shallowpi.distill.prefix import ImageKeyPool, check_teacher_prefix
from shallowpi.errors import UserError
from shallowpi.model import PiModel

# Guard for the attention KL: renormalising VL-key probabilities divides by their sum, and log(0) appears
# where the student gives a key (numerically) zero probability. Probabilities are fp32; 1e-8 is far below
# any mass that matters and keeps the KL finite. With p_teacher == p_student the KL is exactly 0.
KL_EPS = 1e-8


def action_error(
    err: torch.Tensor, action_dim: int | None, action_is_pad: torch.Tensor | None
) -> torch.Tensor:
    """err (B, chunk, D) squared error -> scalar. Only the dataset's real action dims count (the padding up
    to max_action_dim is not data), as LeRobot's policy loss. Chunk steps past the episode end are zeroed
    (LeRobot 0.4.4 and openpi train on them; their targets are copies of the last action, not data) and
    still count in the denominator, so equal-size shards average to the global-batch value."""
    if action_dim is not None:
        err = err[..., :action_dim]
    if action_is_pad is not None:
        err = err * (~action_is_pad)[..., None].to(err.dtype)
    return err.mean()


def task_loss(
    v_student: torch.Tensor,
    u_target: torch.Tensor,
    *,
    action_dim: int | None = None,
    action_is_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow matching: ‖v_θ(x_t, t, o) − (ε − a)‖², v and u (B, chunk, max_action_dim)."""
    return action_error((v_student.float() - u_target.float()).pow(2), action_dim, action_is_pad)


def velocity_kd_loss(
    v_student: torch.Tensor,
    v_teacher: torch.Tensor,
    *,
    action_dim: int | None = None,
    action_is_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """‖v_θ − v_φ‖² at the same x_t, t, ε and observation; the teacher's velocity carries no gradient."""
    return action_error((v_student.float() - v_teacher.detach().float()).pow(2), action_dim, action_is_pad)


def action_to_vl_attention(probs: torch.Tensor, prefix_valid: torch.Tensor, chunk: int) -> torch.Tensor:
    """probs (B, nh, T, T) post-softmax -> (B, nh, chunk, P): action-query rows over the valid VL keys,
    renormalised to sum to 1. Action queries are the last `chunk` rows; VL keys the first P columns (π0's
    state token and the action keys are dropped)."""
    p_len = prefix_valid.shape[1]
    a = probs[:, :, -chunk:, :p_len].float()  # (B, nh, chunk, P)
    a = a * prefix_valid[:, None, None, :].to(a.dtype)
    return a / a.sum(-1, keepdim=True).clamp_min(KL_EPS)


def attention_kd_target(
    teacher_probs: torch.Tensor,
    teacher_valid: torch.Tensor,
    chunk: int,
    pool: ImageKeyPool | None = None,
    student_len: int | None = None,
) -> torch.Tensor:
    """The teacher's action → VL attention as a distribution over the student's VL keys, (B, nh, chunk, P_s).
    `pool` (a student with merged image tokens): the teacher's image-key probabilities, renormalised over its
    own valid keys, are summed per merge group into the student's `student_len` keys; still 1 per query."""
    pt = action_to_vl_attention(teacher_probs.detach(), teacher_valid, chunk)  # (B, nh, chunk, P_t)
    return pt if pool is None else pool(pt, student_len)


def attention_kd_loss(
    teacher_probs: torch.Tensor,
    student_probs: torch.Tensor,
    prefix_valid: torch.Tensor,
    chunk: int,
    *,
    pool: ImageKeyPool | None = None,
    teacher_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward KL(teacher ‖ student) of action → VL attention, per head and query, averaged over heads,
    queries and batch. teacher/student probs (B, nh, T, T); prefix_valid (B, P) the student's valid VL keys.
    With `pool` the teacher's prefix is longer (unmerged image tokens, validity `teacher_valid`)."""
    if pool is None and teacher_probs.shape != student_probs.shape:
        raise UserError(
            f"teacher attention {tuple(teacher_probs.shape)} and student attention "
            f"{tuple(student_probs.shape)} differ: they must see the same inputs and have the same heads"
        )
    if pool is None:
        pt = attention_kd_target(teacher_probs, prefix_valid, chunk)  # (B, nh, chunk, P)
    else:
        pt = attention_kd_target(teacher_probs, teacher_valid, chunk, pool, prefix_valid.shape[1])
    ps = action_to_vl_attention(student_probs, prefix_valid, chunk)
    if pt.shape != ps.shape:
        raise UserError(
            f"teacher attention target {tuple(pt.shape)} and student attention {tuple(ps.shape)} differ: "
            "they must see the same inputs and have the same heads"
        )
    kl = (pt * ((pt + KL_EPS).log() - (ps + KL_EPS).log())).sum(-1)  # (B, nh, chunk)
    return kl.mean()


def vision_feature_loss(
    student_vision: torch.Tensor, teacher_vision: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """MSE between the student's SigLIP output and the frozen teacher's, (B, n_slots, N_patch, W) each, on
    the camera slots that hold an image (`valid` (B, n_slots)). Compared before the token merge: merging only
    rearranges elements, so this equals the MSE of the merged projector inputs. Per sample the mean over its
    valid slots, then the batch mean (a sample's slot count survives compaction, so shards average exactly);
    a sample without any image contributes 0."""
    err = (student_vision.float() - teacher_vision.detach().float()).pow(2).mean(dim=(-2, -1))  # (B, n)
    err = torch.where(valid, err, torch.zeros_like(err))
    per_sample = err.sum(-1) / valid.sum(-1).clamp_min(1).to(err.dtype)  # (B,)
    return per_sample.mean()


TERMS = ("task", "kd", "attn", "vision")


@dataclass
class LossWeights:
    task: float = 1.0
    kd: float = 1.0  # authors' code: task : kd = 1 : 1
    # λ_attn = 1.0 is a placeholder until the test-bed ablation (study) picks a value; the paper gives none.
    attn: float = 1.0
    # Vision-feature MSE (a student with a shallower SigLIP tower). None: 1 when the student's tower has
    # fewer layers than the teacher's, else 0 (an unchanged tower would only pay for a second feature copy).
    vision: float | None = None

    def resolve(self, student: PiModel, teacher: PiModel | None) -> LossWeights:
        """These weights with `vision` decided for this student and teacher."""
        if self.vision is not None:
            return self
        shallower = teacher is not None and student.config.vision.depth < teacher.config.vision.depth
        return dataclasses.replace(self, vision=1.0 if shallower else 0.0)

    def all_zero(self) -> bool:
        return self.task == self.kd == self.attn == 0 and not self.vision

    @classmethod
    def parse(cls, text: str) -> LossWeights:
        """'task=1,kd=1,attn=0.5,vision=1' -> LossWeights (unnamed terms keep their defaults)."""
        out = cls()
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in TERMS:
                raise UserError(f"bad loss weight {part!r}; expected task=X, kd=X, attn=X or vision=X")
            try:
                w = float(value)
            except ValueError as e:
                raise UserError(f"bad loss weight {part!r}: {value!r} is not a number") from e
            if w < 0:
                raise UserError(f"loss weight {part!r} is negative")
            setattr(out, name.strip(), w)
        if out.all_zero():  # DistillLoss refuses it too; here it costs no model load
            raise UserError("every loss weight is 0 (task, kd, attn, vision): there is nothing to train on")
        return out


def default_attn_pairs(student: PiModel) -> list[tuple[int, int]]:
    """ "Middle" = student layer ⌊L_s/2⌋ paired with the teacher layer it was copied from (its layer map).
    L6 [0,3,7,10,14,17] -> (3, 10); a student without a map (same-depth copy) pairs (⌊L/2⌋, ⌊L/2⌋)."""
    s = student.config.depth // 2
    layer_map = student.config.layer_map
    return [(s, layer_map[s] if layer_map is not None else s)]


@dataclass
class DistillLossConfig:
    weights: LossWeights = field(default_factory=LossWeights)
    attn_pairs: Sequence[tuple[int, int]] | None = None  # (student layer, teacher layer); None = middle
    action_dim: int | None = None  # dataset action dim; None = all max_action_dim dims


class DistillLoss:
    """λ_task·L_task + λ_kd·L_kd + λ_attn·L_attn + λ_vision·L_vision, returning the total and each
    (unweighted) term.

    `student_forward` may be a DDP wrapper around the student's joint pass (see trainer.JointForward); terms
    with weight 0 are not computed (a task-only run never touches a teacher). `config.weights` is stored
    resolved (`LossWeights.resolve`): the vision weight is a number from here on.
    """

    def __init__(self, student: PiModel, teacher: PiModel | None, config: DistillLossConfig) -> None:
        w = config.weights.resolve(student, teacher)
        if w.all_zero():
            raise UserError("every loss weight is 0 (task, kd, attn, vision): there is nothing to train on")
        self.config = dataclasses.replace(config, weights=w)
        self.teacher = teacher
        self.chunk = student.config.chunk_size
        self.max_action_dim = student.config.max_action_dim
        if teacher is None and (w.kd > 0 or w.attn > 0 or w.vision > 0):
            raise UserError(
                "KD, attention and vision losses need a teacher (set their weights to 0 to train without)"
            )
        self.pairs = list(config.attn_pairs) if config.attn_pairs is not None else default_attn_pairs(student)
        if w.attn > 0:
            check_attn_pairs(self.pairs, student.config.depth, teacher.config.depth)
        if teacher is not None:
            for name in ("variant", "chunk_size", "max_action_dim", "cameras"):
                a, b = getattr(student.config, name), getattr(teacher.config, name)
                if a != b:
                    raise UserError(f"student and teacher differ in {name}: {a!r} vs {b!r}")
            check_teacher_prefix(student.config, teacher.config, attention=w.attn > 0, vision=w.vision > 0)
        # The teacher's image keys summed into the student's merged ones (None: the same keys).
        self.pool = ImageKeyPool.between(teacher.config.vision, student.config.vision) if w.attn > 0 else None

    @property
    def student_capture(self) -> tuple[int, ...]:
        return tuple(sorted({s for s, _ in self.pairs})) if self.config.weights.attn > 0 else ()

    @property
    def teacher_capture(self) -> tuple[int, ...]:
        return tuple(sorted({t for _, t in self.pairs})) if self.config.weights.attn > 0 else ()

    def __call__(self, student_forward, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.config.weights
        actions = torch.nn.functional.pad(
            batch.actions.float(), (0, self.max_action_dim - batch.actions.shape[-1])
        )  # (B, chunk, max_action_dim)
        x_t, u_t = PiModel.interpolate(actions, batch.noise, batch.time)
        inputs = (batch.observation, x_t, batch.time)
        vision = w.vision > 0
        v_s, attn_s, prefix_valid, vision_s, vision_valid = student_forward(
            *inputs, capture=self.student_capture, vision=vision
        )
        kw = {"action_dim": self.config.action_dim, "action_is_pad": batch.action_is_pad}
        terms: dict[str, torch.Tensor] = {}
        total = v_s.new_zeros(())
        if w.task > 0:
            terms["task"] = task_loss(v_s, u_t, **kw)
            total = total + w.task * terms["task"]
        if w.kd > 0 or w.attn > 0 or vision:
            with torch.no_grad():
                self.teacher.eval()
                # The teacher's vision features come from this same pass (no second SigLIP call).
                out_t = self.teacher.forward_joint(*inputs, capture=self.teacher_capture, vision=vision)
            if w.kd > 0:
                terms["kd"] = velocity_kd_loss(v_s, out_t.v_t, **kw)
                total = total + w.kd * terms["kd"]
            if w.attn > 0:
                kls = [
                    attention_kd_loss(
                        out_t.attn[t],
                        attn_s[s],
                        prefix_valid,
                        self.chunk,
                        pool=self.pool,
                        teacher_valid=out_t.prefix_valid,
                    )
                    for s, t in self.pairs
                ]
                terms["attn"] = torch.stack(kls).mean()
                total = total + w.attn * terms["attn"]
            if vision:
                terms["vision"] = vision_feature_loss(vision_s, out_t.vision, vision_valid)
                total = total + w.vision * terms["vision"]
        return total, terms


def check_attn_pairs(pairs: Sequence[tuple[int, int]], student_depth: int, teacher_depth: int) -> None:
    if not pairs:
        raise UserError("attention KD needs at least one (student layer, teacher layer) pair")
    for s, t in pairs:
        if not 0 <= s < student_depth:
            raise UserError(
                f"attention pair ({s}, {t}): student layer {s} out of range 0..{student_depth - 1}"
            )
        if not 0 <= t < teacher_depth:
            raise UserError(
                f"attention pair ({s}, {t}): teacher layer {t} out of range 0..{teacher_depth - 1}"
            )


def parse_attn_pairs(text: str) -> list[tuple[int, int]]:
    """'3:10,4:14' -> [(3, 10), (4, 14)] (student:teacher)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        s, sep, t = part.partition(":")
        try:
            out.append((int(s), int(t)))
        except ValueError as e:
            raise UserError(f"bad attention layer pair {part!r}; expected STUDENT:TEACHER, e.g. 3:10") from e
        if not sep:
            raise UserError(f"bad attention layer pair {part!r}; expected STUDENT:TEACHER, e.g. 3:10")
    return out
