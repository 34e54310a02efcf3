"""A compressed prefix (docs/method.md §8): how a student's merged image tokens relate to its teacher's.

A student may merge each m x m block of SigLIP patch tokens into one token (pixel shuffle, `SiglipConfig.merge`)
and keep fewer SigLIP layers. This module holds the two maps between the teacher's prefix and the student's:
the merged projector's initial weight (a merged token starts as the mean of its group's teacher projections)
and the pooling of the teacher's attention over image keys onto the student's merged keys (attention KD).
Merge factors are absolute (the config's); the student's must be a multiple of the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shallowpi.errors import UserError
from shallowpi.model.config import PiConfig, SiglipConfig
from shallowpi.model.siglip import merge_groups


def check_merge(merge: object, teacher: SiglipConfig) -> int:
    """A student merge factor for this teacher's tower: an integer >= 1 and a multiple of the teacher's own
    (tokens can be merged further, never split). Grid divisibility is the config's check."""
    if isinstance(merge, bool) or not isinstance(merge, int) or merge < 1:
        raise UserError(f"image token merge must be an integer >= 1, got {merge!r}")
    if merge % teacher.merge:
        raise UserError(
            f"image token merge {merge} is not a multiple of the teacher's merge {teacher.merge}: a student "
            "can merge the teacher's tokens further, not split them"
        )
    return merge


def merged_projector_weight(weight: torch.Tensor, teacher_merge: int, merge: int) -> torch.Tensor:
    """Teacher projector weight (out, teacher_merge²·W) -> student weight (out, merge²·W).

    A student token is the concatenation of the merge x merge patches of its block (row-major, `merge_tokens`);
    patch (dr, dc) of the block sits at position (dr mod m_t, dc mod m_t) of its teacher token. Giving each
    patch that position's teacher columns divided by r² (r = merge / m_t, teacher tokens per student token
    per side) makes the student's projection of a merged token the MEAN of the teacher's projections of
    the r² tokens it replaces (the bias is unchanged: r² biases / r²). With m_t = 1: W replicated merge²
    times along the input axis, divided by merge²."""
    r = merge // teacher_merge
    if r == 1:
        return weight.detach().clone()
    out = weight.shape[0]
    blocks = weight.detach().view(out, teacher_merge**2, -1)  # (out, m_t², W)
    pos = torch.arange(merge * merge)
    dr, dc = pos // merge, pos % merge
    src = (dr % teacher_merge) * teacher_merge + dc % teacher_merge  # (merge²,) teacher column block
    return (blocks[:, src] / (r * r)).reshape(out, -1).contiguous()  # (out, merge²·W)


@dataclass(frozen=True)
class ImageKeyPool:
    """Attention over the teacher's prefix keys -> over the student's: per camera slot the teacher's image
    keys are summed into the student's merged key they belong to (`merge_groups`); language keys map 1:1.
    Summing is exact: the student's merged key covers exactly those pixels, and the total per query is kept."""

    teacher_tokens: int  # image tokens per camera slot in the teacher's prefix
    student_tokens: int  # ... in the student's
    groups: torch.Tensor  # (teacher_tokens,) long: the student token each teacher token goes to

    @classmethod
    def between(cls, teacher: SiglipConfig, student: SiglipConfig) -> ImageKeyPool | None:
        """None when the student's image keys are the teacher's (same merge)."""
        if student.merge == teacher.merge:
            return None
        check_merge(student.merge, teacher)
        groups = merge_groups(teacher.grid // teacher.merge, student.merge // teacher.merge)
        return cls(teacher.num_tokens, student.num_tokens, groups)

    def slots(self, teacher_len: int, student_len: int) -> int:
        """Camera slots in a pass, from the two prefix lengths: P = slots·tokens + L for both models (the
        same observation gives both the same compacted slots and language length)."""
        n, rest = divmod(teacher_len - student_len, self.teacher_tokens - self.student_tokens)
        if rest or n < 0 or n * self.teacher_tokens > teacher_len:
            raise ValueError(
                f"prefix lengths {teacher_len} (teacher) and {student_len} (student) do not fit "
                f"{self.teacher_tokens} vs {self.student_tokens} image tokens per camera slot"
            )
        return n

    def __call__(self, p: torch.Tensor, student_len: int) -> torch.Tensor:
        """p (..., P_teacher) over the teacher's prefix keys -> (..., P_student)."""
        n = self.slots(p.shape[-1], student_len)
        split = n * self.teacher_tokens
        img = p[..., :split].unflatten(-1, (n, self.teacher_tokens))  # (..., n, N_teacher)
        pooled = img.new_zeros(*img.shape[:-1], self.student_tokens)  # (..., n, N_student)
        pooled.index_add_(-1, self.groups.to(p.device), img)
        return torch.cat([pooled.flatten(-2), p[..., split:]], dim=-1)  # (..., P_student)


def check_teacher_prefix(student: PiConfig, teacher: PiConfig, *, attention: bool, vision: bool) -> None:
    """Student and teacher prefixes that attention KD / the vision loss can compare: the same images and
    patches, a student merge the teacher's tokens group into, and (vision loss) the same SigLIP width."""
    s, t = student.vision, teacher.vision
    if not (attention or vision):
        return
    for name in ("image_size", "patch_size") + (("width",) if vision else ()):
        if getattr(s, name) != getattr(t, name):
            raise UserError(
                f"student and teacher differ in vision {name}: {getattr(s, name)} vs {getattr(t, name)}"
            )
    if attention and s.merge % t.merge:
        raise UserError(
            f"attention KD: the student's image token merge {s.merge} is not a multiple of the teacher's "
            f"{t.merge}, so its image keys are not groups of the teacher's"
        )


__all__ = ["ImageKeyPool", "check_merge", "check_teacher_prefix", "merged_projector_weight"]
