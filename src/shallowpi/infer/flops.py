"""FLOPs of one `sample_actions` call, counted from the config, and cross-checked with torch's FLOP counter.

Convention (the one `torch.utils.flop_counter` uses): a multiply-add is 2 FLOPs; only matmuls, linear
layers, convolutions and attention (QKᵀ and PV) are counted; norms, RoPE, softmax and elementwise work
are not. Counts are for the prefix actually computed: `cameras` kept (valid) slots and `lang_tokens`
language tokens after compaction. A student with a compressed prefix (`SiglipConfig.merge`, a shallower
tower) is counted as it runs: SigLIP at its own depth over its patch tokens, the projector and the backbone
over the merged tokens.

With `cached_conditioning=True` (the InferenceEngine) the time MLP, adaRMS modulations and π0's time half
of `action_time_mlp_in` are computed once per `num_steps` and cached across calls, so they are not per-call
work; `False` counts the reference path (`PiModel.sample_actions`), which recomputes them at every step.
The folded engine also runs π0's state token through the expert once per call instead of once per step
(`denoise_flops`' `path`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from shallowpi.model.config import GemmaConfig, PiConfig
from shallowpi.observation import Observation


def _linear(tokens: int, d_in: int, d_out: int) -> int:
    return 2 * tokens * d_in * d_out


def _attention(heads: int, lq: int, lk: int, head_dim: int) -> int:
    return 2 * 2 * heads * lq * lk * head_dim  # QKᵀ and PV


def vision_flops(cfg: PiConfig, cameras: int) -> int:
    """SigLIP (its `depth` layers over all its patch tokens) + the projector (over the merged tokens, at their
    merged width) for `cameras` images of one sample. The token merge itself is a reshape: no FLOPs."""
    v = cfg.vision
    n = v.num_patches
    patch = 2 * n * v.width * 3 * v.patch_size**2  # conv as a matmul over patches
    layer = 4 * _linear(n, v.width, v.width) + 2 * _linear(n, v.width, v.mlp_dim)
    layer += _attention(v.num_heads, n, n, v.width // v.num_heads)
    projector = _linear(v.num_tokens, v.token_width, cfg.vlm.width)
    return cameras * (patch + v.depth * layer + projector)


def prefix_length(cfg: PiConfig, cameras: int, lang_tokens: int) -> int:
    """Backbone prefix tokens: each kept camera's image tokens after the merge, then the language tokens."""
    return cameras * cfg.vision.num_tokens + lang_tokens


def _gemma_layer(g: GemmaConfig, lq: int, lk: int) -> int:
    q, kv = g.num_heads * g.head_dim, g.num_kv_heads * g.head_dim
    proj = _linear(lq, g.width, q) + 2 * _linear(lq, g.width, kv) + _linear(lq, q, g.width)
    return proj + _attention(g.num_heads, lq, lk, g.head_dim) + 3 * _linear(lq, g.width, g.mlp_dim)


def prefix_flops(cfg: PiConfig, prefix_len: int) -> int:
    """Backbone over the prefix: full layers but the last, whose K and V only are needed."""
    g = cfg.vlm
    last = 2 * _linear(prefix_len, g.width, g.num_kv_heads * g.head_dim)
    return (cfg.depth - 1) * _gemma_layer(g, prefix_len, prefix_len) + last


def denoise_flops(
    cfg: PiConfig, prefix_len: int, steps: int, cached_conditioning: bool = True, path: str = "engine"
) -> int:
    """`steps` expert passes over the suffix against the cached prefix.

    path: "engine" (the folded eager engine: π0's state token through the expert once per call, then only
    the action tokens per step; `action_in_proj` composed with the action half of `action_time_mlp_in`),
    "compiled" (the folded graph: the state token every step, the composed input projection),
    "unfolded" (the engine on the model's modules) or "reference" (`cached_conditioning=False`)."""
    if not cached_conditioning:
        path = "reference"
    e, w, a, chunk = cfg.expert, cfg.expert.width, cfg.max_action_dim, cfg.chunk_size
    s = cfg.suffix_len
    pi0 = cfg.variant == "pi0"
    rows = chunk if path == "engine" else s  # expert rows per step
    step = _linear(chunk, a, w) + _linear(chunk, w, a)  # action_in_proj, action_out_proj
    step += cfg.depth * _gemma_layer(e, rows, prefix_len + s)
    per_call = 0
    if pi0:
        step += _linear(chunk, w, w)  # action_time_mlp_out
        if path in ("unfolded", "reference"):  # the action half of action_time_mlp_in, unless composed
            step += _linear(chunk, w, w)
        if path == "reference":
            step += _linear(chunk, w, w)  # its time half, cached by the engines
        state = _linear(1, cfg.max_state_dim, w)  # state token
        if path == "reference":
            step += state
        elif path != "engine":  # the folded engine projects it with the prefix (`state_flops`)
            per_call = state
    elif path == "reference":
        step += 2 * _linear(1, w, w)  # time MLP
        step += (2 * cfg.depth + 1) * _linear(1, w, 3 * w)  # adaRMS modulations
    return per_call + steps * step


def state_flops(cfg: PiConfig, prefix_len: int) -> int:
    """π0 in the folded engine: the state token's projection and its layers, once per call with the prefix
    (its keys and values do not change across Euler steps; the last layer for them alone)."""
    if cfg.variant != "pi0":
        return 0
    e, w = cfg.expert, cfg.expert.width
    kv, q = e.num_kv_heads * e.head_dim, e.num_heads * e.head_dim
    layers = (cfg.depth - 1) * _gemma_layer(e, 1, prefix_len + 1) + _linear(1, w, q + 2 * kv)
    return _linear(1, cfg.max_state_dim, w) + layers


def call_flops(
    cfg: PiConfig,
    *,
    batch: int = 1,
    cameras: int | None = None,
    lang_tokens: int | None = None,
    steps: int | None = None,
    cached_conditioning: bool = True,
    path: str = "engine",
) -> dict[str, int]:
    """FLOPs of one call split by stage: {"vision", "prefix", "denoise", "total"} (`path`: see
    `denoise_flops`; `cached_conditioning=False` is the reference path)."""
    path = path if cached_conditioning else "reference"
    cameras = len(cfg.cameras) if cameras is None else cameras
    lang = cfg.tokenizer_max_length if lang_tokens is None else lang_tokens
    steps = steps or cfg.num_inference_steps
    if not 1 <= cameras <= len(cfg.cameras):
        raise ValueError(f"cameras must be in [1, {len(cfg.cameras)}], got {cameras}")
    p = prefix_length(cfg, cameras, lang)
    out = {
        "vision": batch * vision_flops(cfg, cameras),
        "prefix": batch * (prefix_flops(cfg, p) + (state_flops(cfg, p) if path == "engine" else 0)),
        "denoise": batch * denoise_flops(cfg, p, steps, cached_conditioning, path),
    }
    out["total"] = sum(out.values())
    return out


# torch's counter ----------------------------------------------------------------------------------------------


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's counter has no formula for the CPU flash kernel; with GQA keys have fewer heads than queries."""
    b, h, lq, d = query_shape
    lk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * lq * lk * d + 2 * b * h * lq * lk * dv


def _addmm_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _custom_mapping() -> dict:
    """Formulas torch's counter lacks: the CPU flash kernel, and the in-place `addmm_` the engine adds its
    o- and down-projections into the residual stream with (`addmm`'s formula)."""
    mapping = {torch.ops.aten.addmm_: _addmm_flop}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_cpu_flop
    return mapping


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch counts while running `fn()` (SDPA on CPU included)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def count_engine_flops(
    engine, obs: Observation, noise: torch.Tensor | None = None, steps: int | None = None
) -> dict[str, int]:
    """Per-stage FLOPs counted by torch on a warm engine (conditioning already cached), same keys as call_flops."""
    steps = steps or engine.config.num_inference_steps
    engine._conditioning(steps)  # cache first: it is not per-call work
    with torch.no_grad():
        obs = engine.check(obs)
        box: dict = {}
        out = {"vision": count_flops(lambda: box.update(enc=engine.encode(obs)))}
        embs, valid = box["enc"]
        out["prefix"] = count_flops(lambda: box.update(buf=engine.prefill(embs, valid, obs.state)))
        out["denoise"] = count_flops(lambda: engine.denoise(box["buf"], noise, steps))
    out["total"] = sum(out.values())
    return out
