"""The study's targets, each a verdict (met / missed / not measured) with the numbers behind it."""

from __future__ import annotations

from dataclasses import dataclass

from shallowpi.study.results import PolicyResult, by_name, paired_difference, seed_difference

# Depth targets (the paper: L6 within 1-2 pts of the teacher at > 2x speed).
L6_MAX_DROP_PTS = 1.0
L6_MIN_GAIN_OVER_SCRATCH_PTS = 20.0
L6_MAX_LATENCY_RATIO = 0.40
# Few-step targets.
STEP_MAX_DROP_PTS = 2.0  # L6@2 step-distilled within 2 pts of the teacher@10
STEP_MIN_GAIN_OVER_NAIVE_PTS = 5.0  # and >= 5 pts above L6@2 sampled naively
STEP_MAX_LATENCY_RATIO = 0.30  # L6@2 end to end <= 0.30 x teacher@10 (stated for the mid config)


@dataclass
class Target:
    text: str
    met: bool | None  # None: not measured in this run
    detail: str


def _paired(a: PolicyResult, b: PolicyResult, word: str) -> str:
    pd = paired_difference(a, b)
    return "" if pd is None else f"; paired 95 % CI of the {word}: {pd[0]:+.1f} ± {pd[1]:.1f} pts"


def _over_seeds(a: PolicyResult, b: PolicyResult, word: str) -> str:
    sd = seed_difference(a, b)
    return "" if sd is None else f"; over training seeds, the {word}: {sd[0]:+.1f} ± {sd[1]:.1f} pts"


def _l6_targets(
    teacher: PolicyResult | None, l6: PolicyResult | None, scratch: PolicyResult | None, where: str = ""
) -> list[Target]:
    """L6 within the drop of the teacher, and above scratch by the gain; `where` names the schedule."""
    out = []
    text = f"L6 within {L6_MAX_DROP_PTS:g} pts of the teacher{where}"
    if teacher and l6 and teacher.success and l6.success:
        drop = teacher.mean - l6.mean
        out.append(
            Target(
                text,
                drop <= L6_MAX_DROP_PTS,
                f"teacher {teacher.mean:.1f} %, L6 {l6.mean:.1f} % (drop {drop:+.1f} pts"
                + _paired(teacher, l6, "drop")
                + ")",
            )
        )
    else:
        out.append(Target(text, None, "not evaluated"))
    text = f"L6 >= scratch L6 + {L6_MIN_GAIN_OVER_SCRATCH_PTS:g} pts{where}"
    if l6 and scratch and l6.success and scratch.success:
        gain = l6.mean - scratch.mean
        out.append(
            Target(
                text,
                gain >= L6_MIN_GAIN_OVER_SCRATCH_PTS,
                f"L6 {l6.mean:.1f} %, scratch {scratch.mean:.1f} % (gain {gain:+.1f} pts"
                + _paired(l6, scratch, "gain")
                + ")",
            )
        )
    else:
        out.append(Target(text, None, "not evaluated"))
    return out


def _loss_ordering(chain: list[PolicyResult | None], where: str = "") -> Target:
    """task < task+KD < task+KD+attn, with the paired gain of each added loss."""
    text = f"task < task+KD < task+KD+attn (L6){where}"
    if not all(c is not None and c.success for c in chain):
        return Target(text, None, "not evaluated")
    m = [c.mean for c in chain]
    return Target(
        text,
        m[0] < m[1] < m[2],
        " < ".join(f"{x:.1f}" for x in m)
        + " %"
        + _paired(chain[1], chain[0], "KD gain")
        + _paired(chain[2], chain[1], "attention gain")
        + _over_seeds(chain[1], chain[0], "KD gain")
        + _over_seeds(chain[2], chain[1], "attention gain"),
    )


def long_schedule(results: list[PolicyResult]) -> int | None:
    """Steps of the longest schedule with both an L6 (`L6_steps<N>`) and a scratch L6 (`L6_scratch_steps<N>`)."""
    r = by_name(results)
    both = [int(n[len("L6_steps") :]) for n in r if n.startswith("L6_steps") and f"L6_scratch_{n[3:]}" in r]
    return max(both, default=None)


def check_targets(results: list[PolicyResult]) -> list[Target]:
    """The issue's targets, met / missed / not measured, with the numbers behind each verdict: at the study's
    main schedule, and again at the longest schedule that has a from-scratch L6 of the same length."""
    r = by_name(results)
    teacher = r.get("teacher")
    out = _l6_targets(teacher, r.get("L6_task_kd_attn"), r.get("L6_scratch"))
    n = long_schedule(results)
    if n is not None:
        out += _l6_targets(teacher, r[f"L6_steps{n}"], r[f"L6_scratch_steps{n}"], f" (both {n} steps)")
    out.append(_loss_ordering([r.get(n) for n in ("L6_task", "L6_task_kd", "L6_task_kd_attn")]))
    if n is not None and f"L6_task_steps{n}" in r and f"L6_task_kd_steps{n}" in r:
        chain = [r[f"L6_task_steps{n}"], r[f"L6_task_kd_steps{n}"], r[f"L6_steps{n}"]]
        out.append(_loss_ordering(chain, f" ({n} steps)"))
    l6 = r.get("L6_task_kd_attn")
    if teacher and l6 and teacher.latency_ms and l6.latency_ms:
        ratio = l6.latency_ms / teacher.latency_ms
        out.append(
            Target(
                f"CPU latency L6 / L{teacher.depth} <= {L6_MAX_LATENCY_RATIO:.2f}",
                ratio <= L6_MAX_LATENCY_RATIO,
                f"{l6.latency_ms:.1f} / {teacher.latency_ms:.1f} ms = {ratio:.3f}",
            )
        )
    else:
        out.append(Target(f"CPU latency L6 / teacher <= {L6_MAX_LATENCY_RATIO:.2f}", None, "not benchmarked"))
    return out


def check_step_targets(
    results: list[PolicyResult],
    teacher: str = "teacher",
    distilled: str = "L6_K2_distilled",
    naive: str = "L6_K2_naive",
) -> list[Target]:
    """The few-step targets for the 2-step student, with paired intervals where the outcomes allow."""
    r = by_name(results)
    t, d2, n2 = r.get(teacher), r.get(distilled), r.get(naive)
    drop_text = f"L6@2 distilled within {STEP_MAX_DROP_PTS:g} pts of teacher@10"
    gain_text = f"L6@2 distilled >= {STEP_MIN_GAIN_OVER_NAIVE_PTS:g} pts above L6@2 naive"
    lat_text = f"L6@2 latency <= {STEP_MAX_LATENCY_RATIO:g} x teacher@10 (issue states it for the mid config)"
    out = []
    if t and d2:
        drop = t.mean - d2.mean
        detail = f"{d2.mean:.1f} vs {t.mean:.1f} %" + _paired(d2, t, "difference")
        out.append(Target(drop_text, drop <= STEP_MAX_DROP_PTS, detail))
    else:
        out.append(Target(drop_text, None, "not evaluated"))
    if d2 and n2:
        gain = d2.mean - n2.mean
        detail = f"{gain:+.1f} pts ({d2.mean:.1f} vs {n2.mean:.1f} %)" + _paired(d2, n2, "gain")
        out.append(Target(gain_text, gain >= STEP_MIN_GAIN_OVER_NAIVE_PTS, detail))
    else:
        out.append(Target(gain_text, None, "not evaluated"))
    if t and d2 and t.latency_ms and d2.latency_ms:
        ratio = d2.latency_ms / t.latency_ms
        detail = f"{d2.latency_ms:.1f} / {t.latency_ms:.1f} ms = {ratio:.2f} on the test bed"
        out.append(Target(lat_text, ratio <= STEP_MAX_LATENCY_RATIO, detail))
    else:
        out.append(Target(lat_text, None, "not benched"))
    return out


# Prefix targets (a cheaper prefix on top of depth and steps).
PREFIX_MAX_DROP_PTS = 2.0  # the student with both prefix reductions, at 2 steps, within 2 pts of teacher@10
PREFIX_MAX_COST_PTS = 2.0  # each reduction alone costs less than 2 pts against the plain student, same steps


def check_prefix_targets(
    results: list[PolicyResult], both: str, alone: list[tuple[str, str]], teacher: str = "teacher"
) -> list[Target]:
    """`both` (the student with both reductions at 2 steps) within PREFIX_MAX_DROP_PTS of the teacher, and
    for each (reduced, plain) pair of `alone` (one reduction, and the plain student at the same steps) a cost
    below PREFIX_MAX_COST_PTS. A verdict reads the paired difference's point estimate, as the step targets
    do; the detail gives its 95 % interval and whether the interval alone settles the verdict."""
    r = by_name(results)
    out = []
    t, b = r.get(teacher), r.get(both)
    text = f"{b.label if b else both} within {PREFIX_MAX_DROP_PTS:g} pts of {t.label if t else teacher}"
    out.append(_within(b, t, -PREFIX_MAX_DROP_PTS, text, strict=False))
    for reduced, plain in alone:
        x, p = r.get(reduced), r.get(plain)
        text = (
            f"{x.label if x else reduced} costs less than {PREFIX_MAX_COST_PTS:g} pts against "
            f"{p.label if p else plain}"
        )
        out.append(_within(x, p, -PREFIX_MAX_COST_PTS, text, strict=True))
    return out


def _within(a: PolicyResult | None, b: PolicyResult | None, floor: float, text: str, strict: bool) -> Target:
    """Target: a - b (paired, pts) above `floor` (`strict`: floor itself fails)."""
    if not (a and b and a.success and b.success):
        return Target(text, None, "not evaluated")
    pd = paired_difference(a, b)
    diff = a.mean - b.mean if pd is None else pd[0]
    met = diff > floor if strict else diff >= floor
    detail = f"{a.mean:.1f} vs {b.mean:.1f} %, difference {diff:+.1f} pts"
    if pd is not None:
        low, high = pd[0] - pd[1], pd[0] + pd[1]
        settled = (low > floor if strict else low >= floor) or high < floor
        detail += f", paired 95 % CI {low:+.1f} to {high:+.1f}" + (
            " (the interval settles it)" if settled else f" (the interval straddles {floor:+g})"
        )
    return Target(text, met, detail)
