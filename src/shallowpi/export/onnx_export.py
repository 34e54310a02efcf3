"""`export_onnx`: a PiModel (+ its processor) -> a folder of two static-shape ONNX graphs and a manifest.

    export_policy("out/l6/checkpoints/last/pretrained_model", "deploy/l6", ExportOptions(dtype="float16"))

Layout and manifest: `shallowpi.onnx_runtime.manifest`. Graphs: `shallowpi.export.graphs`.

Exporter: torch.onnx's TorchScript exporter (`dynamo=False`). Both exporters of torch 2.13 give graphs with
the same static shapes and the same actions; the TorchScript one exports the two graphs much faster (no
torch.export + decompositions + onnxscript optimizer passes) and needs no onnxscript.
It is deprecated since torch 2.9; should it go, `dynamo=True` (+ onnxscript) in `_export_graph` is the
switch. The weights are then rewritten as one external-data file per graph (`<graph>.onnx.data`), which
full-size models need (2 GB protobuf limit) and TensorRT's parser reads.

Nothing half-written is left behind: everything goes to a staging folder beside `out` (`atomic_dir`), which
is renamed into place at the end (an earlier export in `out` is replaced; any other non-empty folder is
refused).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from shallowpi.atomic import atomic_dir
from shallowpi.data.processor import Postprocessor, Preprocessor
from shallowpi.data.processor_files import has_processor
from shallowpi.errors import UserError
from shallowpi.export.graphs import graphs as folded_graphs
from shallowpi.export.graphs import prefix_inputs
from shallowpi.model import PiModel, load_model
from shallowpi.model.config import PiConfig
from shallowpi.observation import Observation
from shallowpi.onnx_runtime.manifest import DTYPES, FORMAT, MANIFEST, VERSION, TensorSpec, write_manifest
from shallowpi.pretrained import load_processor

TOKENIZER_FILE = "tokenizer.model"
DEFAULT_OPSET = 18
MIN_OPSET = 14  # scaled_dot_product_attention
_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 9: "bool", 6: "int32", 11: "float64"}


@dataclass
class ExportOptions:
    dtype: str = "float32"  # weights + compute; norms, softmax, adaRMS, time MLP and projections stay fp32
    batch_size: int = 1
    prompt_length: int | None = None  # None: the processor's tokenizer_max_length (else the config's)
    cameras: tuple[str, ...] | None = None  # exported slots; None: those the processor feeds (else all)
    num_steps: int | None = None  # Euler steps; None: the model config's
    opset: int = DEFAULT_OPSET

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.prompt_length is not None and self.prompt_length < 1:
            raise UserError(f"prompt_length must be >= 1, got {self.prompt_length}")
        if self.num_steps is not None and self.num_steps < 1:
            raise UserError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.cameras is not None and not self.cameras:
            raise UserError("cameras: no camera slot given")
        top = max_opset()
        if not MIN_OPSET <= self.opset <= top:
            raise UserError(
                f"opset must be in [{MIN_OPSET}, {top}] (attention needs {MIN_OPSET}; this torch exports up to "
                f"{top}), got {self.opset}"
            )


def max_opset() -> int:
    """The newest ONNX opset this torch's exporter writes."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # private, but there since torch 1.13
    except ImportError:  # pragma: no cover
        return DEFAULT_OPSET
    return ONNX_MAX_OPSET


def check_out(out: str | Path) -> Path:
    """`out` may be new, empty or an earlier export (replaced); any other path is refused."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise UserError(f"{out} exists and is not an earlier export (no {MANIFEST}); choose another --out")
    return out


def euler_time_grid(config: PiConfig, num_steps: int | None = None) -> dict:
    """The model's Euler steps (t_k, dt_k) from t = 1: the same floats as `InferenceEngine` uses.

    A config with a recorded sampling grid (`PiConfig.time_grid`, step-distilled students) gives its grid;
    otherwise N uniform steps, dt = -1/N.
    """
    if hasattr(config, "time_grid"):
        from shallowpi.model.config import euler_steps

        pairs = euler_steps(config.time_grid(num_steps))
    else:
        steps = num_steps or config.num_inference_steps
        pairs = [(1.0 + k * (-1.0 / steps), -1.0 / steps) for k in range(steps)]
    return {"num_steps": len(pairs), "times": [t for t, _ in pairs], "dts": [d for _, d in pairs]}


def cast_half(model: PiModel) -> PiModel:
    """fp16 with LeRobot's bf16 policy (`PiModel.to_bfloat16`): what it keeps fp32 stays fp32."""
    cfg = copy.deepcopy(model.config)
    cfg.dtype = "float32"
    with torch.device("meta"):
        ref = PiModel(cfg).to_bfloat16()  # the policy, applied to a weightless twin
    half = {n for n, p in ref.named_parameters() if p.dtype == torch.bfloat16}
    for name, p in model.named_parameters():
        if name in half:
            p.data = p.data.to(torch.float16)
    return model


def _slots(config: PiConfig, pre: Preprocessor | None, wanted: tuple[str, ...] | None) -> list[str]:
    if wanted is not None:
        bad = [s for s in wanted if s not in config.cameras]
        if bad or not wanted:
            raise UserError(f"--cameras: unknown slot(s) {bad}; the model's slots are {list(config.cameras)}")
        return [s for s in config.cameras if s in wanted]  # prefix order is the model's
    if pre is None:
        return list(config.cameras)
    fed = [s for s in config.cameras if s in pre.slot_source]
    if not fed:
        raise UserError("the processor feeds no camera slot of the model")
    return fed


def _norm_stats(stats: dict[str, torch.Tensor], mode: str) -> dict:
    return {"mode": mode, **{k: v.double().tolist() for k, v in stats.items() if k != "count"}}


def manifest_processor(
    pre: Preprocessor, post: Postprocessor, prompt_length: int, tokenizer_file: str = "tokenizer.model"
) -> tuple[dict, dict]:
    """The manifest's "processor" and "normalization" sections: the policy's whole ProcessorConfig (with its
    real dims and the exported prompt length), which `NumpyProcessor` reads back as a ProcessorConfig, and
    the statistics."""
    pc = pre.config
    proc = {
        **pc.to_dict(),
        "state_dim": pre.state_dim,
        "action_dim": post.action_dim,
        "tokenizer_max_length": prompt_length,
        "tokenizer_file": tokenizer_file,
    }
    norm = {
        "state": _norm_stats(pre.state_stats, pc.state_norm),
        "action": _norm_stats(post.action_stats, pc.action_norm),
    }
    return proc, norm


def _specs(path: Path, kind: str) -> list[dict]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    out = []
    for v in graph.input if kind == "inputs" else graph.output:
        t = v.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        out.append(
            TensorSpec(v.name, tuple(shape), _ONNX_DTYPES.get(t.elem_type, str(t.elem_type))).to_dict()
        )
    return out


def _export_graph(module, args: tuple, path: Path, inputs, outputs, opts: ExportOptions) -> None:
    """torch.onnx.export into a scratch folder, then one <name>.data external file beside `path`."""
    import onnx

    scratch = Path(tempfile.mkdtemp(prefix=".scratch.", dir=path.parent))
    try:
        raw = scratch / path.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter; the graphs are checked after
            torch.onnx.export(
                module,
                args,
                str(raw),
                input_names=inputs,
                output_names=outputs,
                opset_version=opts.opset,
                dynamo=False,  # the TorchScript exporter: see the module docstring
            )
        proto = onnx.load(str(raw))  # pulls in external data, whichever layout the exporter wrote
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def export_onnx(
    model: PiModel,
    out: str | Path,
    options: ExportOptions | None = None,
    *,
    processor: tuple[Preprocessor, Postprocessor] | None = None,
    source: str | None = None,
    inplace: bool = False,
) -> Path:
    """Write the prefix and denoise graphs, the manifest and the tokenizer to `out` (atomically).

    The graphs run over folded weights (`shallowpi.infer.fold`): a folded copy of `model`, and float16 casts a
    copy first. `inplace=True` (full-size models: no second copy) casts `model` itself and frees its weights
    as they are folded, so `model` is unusable afterwards.
    """
    opts = options or ExportOptions()
    opts.validate()
    out = check_out(out)
    cfg = model.config
    if model.compute_dtype != torch.float32:
        raise ValueError("export from an fp32 model (load it without dtype); --dtype float16 casts it here")
    pre = processor[0] if processor is not None else None
    slots = _slots(cfg, pre, opts.cameras)
    pc = pre.config if pre is not None else None
    prompt_len = opts.prompt_length or (pc.tokenizer_max_length if pc else cfg.tokenizer_max_length)
    if pc is not None and (tuple(pc.cameras) != tuple(cfg.cameras) or pc.image_size != cfg.vision.image_size):
        raise UserError("the processor's camera slots / image size do not fit the model")

    model = copy.deepcopy(model).eval() if opts.dtype == "float16" and not inplace else model.eval()
    if opts.dtype == "float16":
        cast_half(model)
    b, size, n_cam = opts.batch_size, cfg.vision.image_size, len(slots)
    with atomic_dir(out, prefix=f".{out.name}.export.") as stage:
        example = Observation(
            torch.zeros(b, n_cam, 3, size, size),
            torch.ones(b, n_cam, dtype=torch.bool),
            torch.zeros(b, prompt_len, dtype=torch.long),
            torch.ones(b, prompt_len, dtype=torch.bool),
            torch.zeros(b, cfg.max_state_dim),
        )  # the exported slots only
        prefix_args = prefix_inputs(example)
        prefix, denoise = folded_graphs(model, release=inplace)  # inplace: one copy, the folded one
        prefix_in = ["images", "image_masks", "tokens", "token_masks"]
        prefix_out = ["prefix_keys", "prefix_values", "prefix_mask"]
        _export_graph(prefix, prefix_args, stage / "prefix.onnx", prefix_in, prefix_out, opts)
        with torch.no_grad():
            keys, values, mask = prefix(*prefix_args)
        denoise_args: tuple = (
            torch.zeros(b, cfg.chunk_size, cfg.max_action_dim),
            torch.ones(b),
            mask,
            keys,
            values,
        )
        denoise_in = ["x_t", "t", "prefix_mask", "prefix_keys", "prefix_values"]
        if cfg.variant == "pi0":
            denoise_args += (example.state,)
            denoise_in.append("state")
        _export_graph(denoise, denoise_args, stage / "denoise.onnx", denoise_in, ["velocity"], opts)

        graphs = {
            g: {
                "file": f"{g}.onnx",
                "data": f"{g}.onnx.data",
                "inputs": _specs(stage / f"{g}.onnx", "inputs"),
                "outputs": _specs(stage / f"{g}.onnx", "outputs"),
            }
            for g in ("prefix", "denoise")
        }
        proc_json = norm_json = None
        if pre is not None:
            shutil.copyfile(pre.tokenizer.path, stage / TOKENIZER_FILE)
            proc_json, norm_json = manifest_processor(pre, processor[1], prompt_len, TOKENIZER_FILE)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "variant": cfg.variant,
            "dtype": opts.dtype,
            "batch_size": b,
            "graphs": graphs,
            "schedule": euler_time_grid(cfg, opts.num_steps),  # the manifest key stays: a file format
            "model": {
                "chunk_size": cfg.chunk_size,
                "max_action_dim": cfg.max_action_dim,
                "max_state_dim": cfg.max_state_dim,
                "depth": cfg.depth,
                "layer_map": cfg.layer_map,
                "vlm_layer_map": getattr(cfg, "vlm_layer_map", None),  # backbone's own map, if it differs
                "image_size": size,
                "num_patches": cfg.vision.num_patches,  # SigLIP's tokens per camera
                "image_tokens": cfg.vision.num_tokens,  # per camera in the backbone's prefix, after the merge
                "image_merge": cfg.vision.merge,
                "vision_depth": cfg.vision.depth,
                "vision_layer_map": cfg.vision_layer_map,  # None: the teacher's whole tower
                "prompt_length": prompt_len,
                "prefix_length": n_cam * cfg.vision.num_tokens + prompt_len,
            },
            "cameras": {
                "slots": list(cfg.cameras),
                "exported": slots,
                "masked": [s for s in cfg.cameras if s not in slots],
            },
            "processor": proc_json,
            "normalization": norm_json,
            "exporter": {
                "exporter": "torch.onnx (TorchScript)",
                "opset": opts.opset,
                "torch": torch.__version__,
                "source": source,
                "fp32_tensors": "norms (RMS, adaRMS, LayerNorm statistics), softmax, time MLP, "
                "state/action projections, SigLIP patch/position embeddings",
            },
        }
        write_manifest(stage / MANIFEST, manifest)  # written last inside the stage
        for f in stage.iterdir():
            f.chmod(0o644)  # an export is read like any model folder
    return out


def export_policy(
    policy: str | Path,
    out: str | Path,
    options: ExportOptions | None = None,
    *,
    tokenizer: str | Path | None = None,
) -> Path:
    """Export a pretrained folder (LeRobot layout); its processor, if saved with it (shallowpi's files or
    LeRobot's, `shallowpi.load_processor`), goes in the manifest. `tokenizer`: the SentencePiece file for a
    LeRobot folder that ships none (else $SHALLOWPI_TOKENIZER or the Hugging Face cache)."""
    policy = Path(policy)
    (options or ExportOptions()).validate()  # before loading the model: bad options cost nothing
    check_out(out)
    model = load_model(policy, dtype="float32")
    processor = load_processor(policy, tokenizer=tokenizer) if has_processor(policy) else None
    return export_onnx(model, out, options, processor=processor, source=str(policy), inplace=True)


def random_model(config: PiConfig, seed: int = 0, std: float = 0.02) -> PiModel:
    """A PiModel with N(0, std) weights and identity norms, built without a default-init pass: a full-size
    model in seconds (export checks and benchmarks; the weights mean nothing)."""
    with torch.device("meta"):
        model = PiModel(config)
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            init_random_(name, p, gen, std)
    return model


def init_random_(name: str, p: torch.Tensor, gen: torch.Generator, std: float = 0.02) -> None:
    """`random_model`'s rule for one parameter (its name in PiModel): identity norms, else N(0, std)."""
    if name.startswith("vision.") and "layernorm" in name.replace("_", ""):
        p.fill_(1.0 if name.endswith("weight") else 0.0)  # LayerNorm: y = w * x_hat + b
    elif name.endswith("norm.weight"):
        p.zero_()  # Gemma RMSNorm scales by (1 + w)
    else:
        p.normal_(0.0, std, generator=gen)
