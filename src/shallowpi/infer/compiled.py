"""`InferenceEngine(compile=True)`: the prefix and one Euler step run through `torch.compile`, over the folded
graph (`FoldedPi.prefix_kv` / `FoldedPi.velocity`, the functions the ONNX graphs are exported from).

    engine = InferenceEngine(model, compile=True)                       # cache: ~/.cache/shallowpi/inductor
    engine = InferenceEngine(model, compile=True, compile_cache_dir="/fast/disk/inductor")

`cuda_graph=True` with it: inductor's own CUDA graphs (mode "reduce-overhead") replay each compiled graph.

Two graphs are compiled, each once per input shape (`dynamic=False`): the prefix (SigLIP, language embedding
and the backbone, with the suffix's mask and RoPE tables) and one Euler step's velocity (the expert). The Euler
loop stays in Python and calls the step graph once per step: the time conditioning of every step is a tensor
input (cached per time grid, as the eager engine does), so one compiled step serves every step and schedule,
and compiling costs one expert pass, not ten. The weights are graph inputs, not constants, so a compiled
graph does not depend on them (`refresh()` needs no recompilation).

Warm-up: the first call compiles (inductor generates and builds C++ kernels): 31-63 s on this 2-core CPU
(the bundled teacher, an L6 student, the mid config at depths 6 and 18). Inductor's FX graph cache and
AOTAutograd cache keep the compiled code on disk, keyed by the traced graph, shapes, dtypes, torch version
and inductor settings, so a later process only traces with dynamo and loads the kernels: 7-20 s over three runs (the first
call of a fresh process; benchmarks/results/engine_vs_ort.json). The cache directory: `compile_cache_dir`,
else $SHALLOWPI_COMPILE_CACHE, else $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/shallowpi/inductor (inductor's
own default is under /tmp, which does not survive a reboot).

On CPU it is not faster than the eager folded engine (`shallowpi.infer.eager`), which already issues few
operators into static buffers: it equals it within noise. It is there for the GPU (with CUDA graphs, fused
elementwise kernels between the matmuls) and costs nothing once cached.

Static shapes: language padding is kept (masked), so the prefix length only changes when the set of masked
camera slots does; a padding query attends over the valid keys (as in the ONNX graphs), which changes no valid
token. The batch size is the engine's.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch

from shallowpi.infer.fold import Conditioning, FoldedPi
from shallowpi.model.rtc import RTCGuidance
from shallowpi.observation import Observation

DEFAULT_CACHE = Path.home() / ".cache" / "shallowpi" / "inductor"


def compile_cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where compiled artifacts go (see the module docstring); sets TORCHINDUCTOR_CACHE_DIR accordingly."""
    found = (
        explicit
        or os.environ.get("SHALLOWPI_COMPILE_CACHE")
        or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        or DEFAULT_CACHE
    )
    path = Path(found).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def _prefix(f: FoldedPi, images, image_masks, tokens, token_masks):
    x, valid = f.prefix_inputs(images, image_masks, tokens, token_masks)
    keys, values = f.prefix_kv(x, valid)
    return keys, values, f.suffix_geometry(valid)


def _step(f: FoldedPi, x_t, mods, time_proj, state_tok, keys, values, geometry):
    return f.velocity(x_t, Conditioning(mods, time_proj), state_tok, keys, values, geometry)


class CompiledGraph:
    def __init__(self, engine, *, mode: str | None = None, cache_dir: str | None = None) -> None:
        import torch._inductor.config as inductor_config

        self.engine = engine
        self.cache_dir = compile_cache_dir(cache_dir)
        inductor_config.fx_graph_cache = True  # the defaults, stated: the warm-up bound relies on them
        torch._functorch.config.enable_autograd_cache = True
        if mode is None and engine.cuda_graph:
            mode = "reduce-overhead"  # inductor's CUDA graphs: each compiled graph captured and replayed
        opts: dict = {"dynamic": False, "fullgraph": True}
        if mode is not None:
            opts["mode"] = mode
        elif engine.device.type == "cpu":
            # a C++ wrapper calls the kernels (no Python between them); measured on the bundled teacher:
            # cold compile 53 s instead of 121 s, calls 12 % faster, the same 5 s once cached
            opts["options"] = {"cpp_wrapper": True}
        self.prefix = torch.compile(_prefix, **opts)
        self.step = torch.compile(_step, **opts)
        self._cond: dict[tuple, list[tuple]] = {}

    def reset(self) -> None:
        self._cond.clear()

    def _conditioning(self, grid: tuple[float, ...]) -> list[tuple]:
        """[(dt, mods (1, 2D + 1, 3, W) | None, time_proj (1, W) | None)] per Euler step of `grid`."""
        if grid not in self._cond:
            cond = self.engine._conditioning(grid)  # the same t and dt floats as the eager engine
            t = torch.tensor(cond.times, dtype=torch.float32, device=self.engine.device)
            got = self.engine.folded.conditioning_at(t)
            rows = lambda x: None if x is None else list(x.split(1))  # noqa: E731
            mods, tp = rows(got.mods), rows(got.time_proj)
            self._cond[grid] = [
                (dt, None if mods is None else mods[k], None if tp is None else tp[k])
                for k, dt in enumerate(cond.dts)
            ]
        return self._cond[grid]

    @torch.no_grad()
    def sample(
        self, obs: Observation, noise, grid: tuple[float, ...], marks, guidance: RTCGuidance | None = None
    ) -> torch.Tensor:
        """`obs`: the engine's checked observation (kept slots, π0's padded state or None). `guidance`:
        real-time chunking (`jacobian=False`: the compiled step is not differentiated)."""
        e, f = self.engine, self.engine.folded
        dev = e.device
        state = obs.state
        keys, values, geometry = self.prefix(
            f, obs.images.to(dev), obs.image_masks.to(dev), obs.tokens.to(dev), obs.token_masks.to(dev)
        )
        _mark(
            marks, "vision"
        )  # vision and backbone are one compiled graph: "vision" marks no work of its own
        state_tok = None if state is None else torch.addmm(f.state_b, state.to(dev).float(), f.state_w)
        _mark(marks, "prefix")
        x = e.check_noise(noise).to(dev).float()
        if guidance is None:
            for dt, mods, time_proj in self._conditioning(grid):
                v = self.step(f, x, mods, time_proj, state_tok, keys, values, geometry)
                x = torch.add(x, v, alpha=dt)
        else:
            times = e._conditioning(grid).times
            for t_k, (dt, mods, time_proj) in zip(times, self._conditioning(grid), strict=True):
                args = (mods, time_proj, state_tok, keys, values, geometry)
                v = guidance.velocity(x, t_k, partial(self._velocity, args))
                x = torch.add(x, v, alpha=dt)
        _mark(marks, "denoise")
        return x

    def _velocity(self, args: tuple, x_t: torch.Tensor) -> torch.Tensor:
        mods, time_proj, state_tok, keys, values, geometry = args
        return self.step(self.engine.folded, x_t, mods, time_proj, state_tok, keys, values, geometry)


def _mark(marks, stage: str) -> None:
    if marks is not None:
        marks(stage)
