"""Data-parallel training (DDP, FSDP2; gloo on CPU) equals one process on the same global batch, with and
without gradient checkpointing, and an FSDP2 run resumes exactly.

Tolerance: weights after 3 AdamW steps (lr 1e-3) within WEIGHT_ATOL = 2e-5 of the one-process run. The
ranks sum their gradients in another order than one process does (all-reduce / reduce-scatter), and Adam's
normalisation magnifies that float32 rounding for near-zero gradients: at most 6e-6 (DDP) and 2e-6 (FSDP2)
here. Losing half the global batch (a rank's gradient dropped) moves some weight by 4e-3, about a
learning-rate step. (Adam is nearly scale-invariant, so a gradient summed instead of averaged would not
show here; one process vs N compares directions, not scales.)
"""

from __future__ import annotations

import json

import pytest
import torch

from distill_helpers import (
    TINY_STEPS,
    assert_weights_close,
    last_optimizer_state,
    last_weights,
    random_teacher,
    run_in_process,
    run_two_processes,
)
from shallowpi.distill.parallel import entry_methods
from shallowpi.distill.student import make_student
from shallowpi.model.gemma import GemmaLayer


def _report(out, rank: int) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The one-process runs, per (variant, step distillation)."""
    runs = {}

    def get(variant: str = "pi0", step_distill: bool = False):
        key = (variant, step_distill)
        if key not in runs:
            out = tmp_path_factory.mktemp(f"single_{variant}_{step_distill}")
            runs[key] = run_in_process(out, {"variant": variant, "step_distill": step_distill})
        return runs[key]

    return get


def test_two_process_ddp_matches_one_process(tmp_path, one_process):
    single = one_process()
    assert_weights_close(last_weights(single), last_weights(run_two_processes(tmp_path, {})))
    # Sanity: training moved the weights away from the initial student.
    init = make_student(random_teacher("pi0", depth=4), depth=2).state_dict()
    assert any(
        not torch.equal(init[k.removeprefix("model.")], v)
        for k, v in last_weights(single).items()
        if k.removeprefix("model.") in init
    )


def test_two_process_ddp_with_gradient_checkpointing_matches_one_process(tmp_path, one_process):
    out = tmp_path / "ddp_ckpt"
    assert_weights_close(
        last_weights(one_process()), last_weights(run_two_processes(out, {"gradient_checkpointing": True}))
    )
    # Each student layer ran twice per step: forward, then the recomputation in backward.
    assert _report(out, 0)["qkv_entries"] == [2 * TINY_STEPS] * 4


def test_gradient_accumulation_matches_one_big_batch(tmp_path, one_process):
    accumulated = run_in_process(tmp_path, {"grad_accum": 2})
    assert_weights_close(last_weights(one_process()), last_weights(accumulated))


def test_two_process_ddp_matches_one_process_for_a_prefix_student(tmp_path):
    """Merged image keys (pooled attention KD) and the vision loss average over ranks like the other terms.

    Tolerance 1e-4: the vision loss gives SigLIP's patch embedding gradients spanning four orders of
    magnitude (1e-7 to 1e-3, its smallest set by LayerNorm's shift invariance), and Adam turns the ranks'
    other summation order into weight differences up to 2.3e-5 there (the loss terms themselves agree to
    float rounding), still far below the ~4e-3 a lost half batch costs (module docstring)."""
    single = run_in_process(tmp_path / "single", {"prefix": True})
    ddp = run_two_processes(tmp_path / "ddp", {"prefix": True})
    assert_weights_close(last_weights(single), last_weights(ddp), atol=1e-4)
    metrics = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert all(m["vision"] > 0 for m in metrics)


def test_two_process_ddp_matches_one_process_for_step_distillation(tmp_path, one_process):
    ddp = run_two_processes(tmp_path, {"step_distill": True})
    assert_weights_close(last_weights(one_process(step_distill=True)), last_weights(ddp))


# FSDP2 gathers a sharded layer's parameters only around the methods registered for it: the Gemma layers
# are entered through `GemmaLayer.ENTRY_METHODS`, not `forward`.


def test_gemma_layer_entry_methods_are_checked_against_the_class():
    assert entry_methods(GemmaLayer) == ("modulation", "qkv", "post_attention")

    class Renamed(GemmaLayer):  # a listed method renamed (what broke --fsdp: `finish` -> `post_attention`)
        ENTRY_METHODS = ("modulation", "qkv", "finish")

    with pytest.raises(RuntimeError, match=r"listed but not methods of the class: \['finish'\]"):
        entry_methods(Renamed)

    class Added(GemmaLayer):  # a new way into the layer that FSDP2 would not gather parameters for
        def mlp_only(self, x):
            return self.mlp(x)

    with pytest.raises(RuntimeError, match=r"public methods not listed: \['mlp_only'\]"):
        entry_methods(Added)


# The FSDP2 runs are π0.5: its adaRMS expert layers are entered through all three methods (`modulation`
# reads the adaRMS dense layers), the SigLIP layers through `forward`, the model through `forward_joint`.


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "gradient_checkpointing"])
def fsdp2(request, tmp_path_factory):
    """Two FSDP2 ranks: a 3-step run saving at step 2 and 3 (OUT/run), and a run resumed from its step-2
    checkpoint (OUT/resumed). -> (OUT, gradient checkpointing on)."""
    out = tmp_path_factory.mktemp(f"fsdp2_{request.param}")
    run_two_processes(
        out, {"variant": "pi05", "fsdp": True, "gradient_checkpointing": request.param, "resume_at": 2}
    )
    return out, request.param


def test_two_process_fsdp2_matches_one_process(fsdp2, one_process):
    out, checkpointing = fsdp2
    assert_weights_close(last_weights(one_process("pi05")), last_weights(out / "run"))
    # With gradient checkpointing each student layer also ran in backward (recomputation), not only forward.
    assert _report(out, 0)["qkv_entries"] == [(2 if checkpointing else 1) * TINY_STEPS] * 4


def test_two_process_fsdp2_resumes_exactly(fsdp2):
    out, _ = fsdp2
    for read in (last_weights, last_optimizer_state):
        run, resumed = read(out / "run"), read(out / "resumed")
        assert run.keys() == resumed.keys()
        assert all(torch.equal(run[k], resumed[k]) for k in run), read.__name__


def test_two_process_fsdp2_each_rank_holds_half_the_parameters(fsdp2):
    out, _ = fsdp2
    ranks = [_report(out, r) for r in (0, 1)]
    full = ranks[0]["full"]
    assert all(r["sharded"] == r["params"] for r in ranks)  # every parameter is a DTensor shard
    assert sum(r["local"] for r in ranks) == full
    for r in ranks:
        assert 0.45 < r["local"] / full < 0.55, r
