"""The training loop for distillation and for plain flow-matching training (task loss only).

One process:         shallowpi distill --teacher T --dataset D --depth 6 --steps N --batch-size B --out O
DDP, one node:       torchrun --nproc-per-node 8 -m shallowpi distill ...
DDP, several nodes:  torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-endpoint HOST:PORT \
                         -m shallowpi distill ...
FSDP2 (teacher + student do not fit one GPU): add --fsdp.

`batch_size` is the GLOBAL batch per optimizer step (all ranks and accumulation steps together), so the same
command gives the same training on 1 or N GPUs. Resume is exact: the data position is the step (see data.py)
and the optimizer, scheduler and RNG states are restored bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from shallowpi.atomic import write_text_atomic
from shallowpi.device import resolve_device
from shallowpi.distill import checkpointing as ckpt
from shallowpi.distill.data import ExampleSource, MicroBatches, StreamPlan
from shallowpi.distill.losses import DistillLoss, DistillLossConfig
from shallowpi.distill.parallel import (
    DistInfo,
    JointForward,
    enable_gradient_checkpointing,
    freeze,
    init_distributed,
    shard_fsdp,
    without_gradient,
)
from shallowpi.distill.schedule import ScheduleConfig, make_scheduler
from shallowpi.distill.step_distill import StepDistillConfig, StepDistillLoss
from shallowpi.errors import MissingFileError, UserError
from shallowpi.model import PiModel, load_state_dict
from shallowpi.paths import portable_path


class NonFiniteLossError(UserError, RuntimeError):
    """A loss term (or the gradient norm) became NaN/inf; the run stops before applying the update."""


@dataclass
class TrainConfig:
    output_dir: str
    steps: int
    batch_size: int = 64  # global batch per optimizer step (docs/method.md §4)
    grad_accum: int = 1
    seed: int = 1000
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-10  # openpi's; LeRobot uses 0.01
    clip_grad_norm: float = 1.0
    save_every: int = 1000
    log_every: int = 10
    bf16: bool = True  # autocast to bf16 on CUDA only; CPU runs stay fp32 (exactness, tests)
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    fsdp: bool = False
    num_workers: int = 2  # DataLoader worker processes (0: load in the training process)
    tensorboard: bool = False
    progress: bool = True
    device: str | None = None  # None: cuda (this rank's GPU) if available, else cpu (`shallowpi.device`)

    def __post_init__(self) -> None:
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleConfig(**self.schedule)
        for name in ("steps", "batch_size", "grad_accum", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed", "num_workers"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.clip_grad_norm) and self.clip_grad_norm > 0):
            raise UserError(f"clip_grad_norm must be a finite number > 0, got {self.clip_grad_norm}")


def _device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    device = torch.device(resolve_device(cfg.device))
    if device.type == "cuda" and device.index is None:  # "cuda": this rank's GPU, not GPU 0 for all
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _drop_records_after(path: Path, step: int) -> None:
    """Keep only the records of steps <= `step`: a resumed run re-runs the steps after its checkpoint, and
    metrics.jsonl must hold each step once (the re-run's numbers replace the lost run's)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill: dropped
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(k + "\n" for k in kept))


class _Logger:
    """JSONL metrics (+ TensorBoard if installed and asked for) on rank 0."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        if enabled:
            _drop_records_after(out / "metrics.jsonl", start_step)
        self.file = open(out / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                print("tensorboard is not installed; logging to metrics.jsonl only")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(
    student: PiModel,
    source: ExampleSource,
    cfg: TrainConfig,
    loss_cfg: DistillLossConfig | StepDistillConfig,
    *,
    teacher: PiModel | None = None,
    resume: bool = False,
    write_extra: Callable[[Path], None] | None = None,
    run_info: dict | None = None,
) -> Path:
    """Train `student` (in place) and return the final checkpoint folder.

    `loss_cfg` picks the stage: DistillLossConfig (depth distillation / task-only training, joint pass) or
    StepDistillConfig (step distillation: the student's config then records the K-step time grid, so every
    checkpoint samples with it).

    `write_extra(pretrained_dir)` adds files to every saved pretrained_model (the processor: stats and
    tokenizer travel with the model). Raises NonFiniteLossError naming the step and the term.
    """
    run = _setup(student, source, cfg, loss_cfg, teacher, resume, write_extra, run_info)
    logger = _Logger(run.out, run.info.is_main, cfg.tensorboard, run.start_step)
    bar = None
    if run.info.is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.steps, initial=run.start_step, desc="distill" if teacher is not None else "train"
        )
    last_saved = ckpt.last_checkpoint(run.out)
    batches = iter(run.loader)  # after the RNG state is restored: the loader draws its base seed from it
    t_last, steps_since = time.perf_counter(), 0
    try:
        for step in range(run.start_step, cfg.steps):
            logged, grad_norm, lr = _step(run, step, batches, last_saved)
            steps_since += 1
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                dt = time.perf_counter() - t_last
                w = run.loss_fn.config.weights
                record = {
                    "step": done,
                    "loss": sum(getattr(w, k) * v for k, v in logged.items()),
                    **logged,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "steps_per_s": steps_since / dt,
                    "samples_per_s": steps_since * cfg.batch_size / dt,
                }
                logger.log(record)
                if bar is not None:
                    bar.set_postfix(
                        {k: f"{v:.4g}" for k, v in logged.items()} | {"it/s": f"{record['steps_per_s']:.2f}"}
                    )
                t_last, steps_since = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
            if done % cfg.save_every == 0 or done == cfg.steps:
                last_saved = _save(run, done)
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    return last_saved if last_saved is not None else run.out


@dataclass
class _Run:
    """What one training run holds between steps: built by `_setup`, advanced by `_step`, saved by `_save`."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    student: PiModel
    loss_fn: DistillLoss | StepDistillLoss
    forward: Callable  # the student pass the loss calls (DDP-wrapped under torchrun)
    params: list[torch.nn.Parameter]  # the trained ones
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    autocast: AbstractContextManager
    start_step: int
    num_samples: int
    train_config: dict  # train_config.json of every checkpoint
    write_extra: Callable[[Path], None] | None


def _setup(
    student: PiModel,
    source: ExampleSource,
    cfg: TrainConfig,
    loss_cfg: DistillLossConfig | StepDistillConfig,
    teacher: PiModel | None,
    resume: bool,
    write_extra: Callable[[Path], None] | None,
    run_info: dict | None,
) -> _Run:
    """Processes, devices, loss, resume state, parallel wrapping, optimizer and data, in the order that makes
    a resumed run continue bit for bit (the RNG state is restored last, just before the loader is iterated)."""
    if isinstance(loss_cfg, StepDistillConfig) and (cfg.fsdp or cfg.gradient_checkpointing):
        raise UserError(
            "step distillation does not support --fsdp or --gradient-checkpointing (it trains through the "
            "cached-prefix sampler, not the joint pass)"
        )
    info = init_distributed(torch.device(resolve_device(cfg.device)).type)
    device = _device(cfg, info)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        ckpt.clean_partial(out)
    torch.manual_seed(cfg.seed)

    plan = StreamPlan(len(source), cfg.batch_size, info.world_size, info.rank, cfg.grad_accum, cfg.seed)
    loss_cfg = dataclasses.replace(loss_cfg, action_dim=loss_cfg.action_dim or source.action_dim)
    if isinstance(loss_cfg, StepDistillConfig):
        loss_fn = StepDistillLoss(student, teacher, loss_cfg)
        student.config.sampling_grid, student.config.num_inference_steps = (
            list(loss_cfg.grid),
            len(loss_cfg.grid) - 1,
        )
        student.config.validate()
    else:
        loss_fn = DistillLoss(student, teacher, loss_cfg)  # validates weights / attention pairs / configs
    # What DDP wraps: the stage's differentiable student pass (the joint pass unless the stage has its own).
    module = loss_fn.forward_module(student) if hasattr(loss_fn, "forward_module") else JointForward(student)

    start_step, state = 0, None
    if resume:
        start_step, state = _resume_state(out, cfg, len(source), student, info)

    student.to(device).train()
    freeze(student, vision=cfg.freeze_vision)
    w = loss_fn.config.weights
    # Attention KD alone: the layers past the captured one get no gradient.
    if isinstance(loss_fn, DistillLoss) and w.task == 0 and w.kd == 0:
        probe = MicroBatches(source, plan, student.config, start_step, start_step + 1)[0]
        for name in without_gradient(student, loss_fn, probe.to(device)):
            student.get_parameter(name).requires_grad_(False)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(student)
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    forward = _parallel_forward(student, teacher, module, cfg, info, device)

    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.schedule.peak_lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.steps)
    if state is not None:
        set_optimizer_state_dict(
            student, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True)
        )
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(*state["rng"])

    loader = DataLoader(
        MicroBatches(source, plan, student.config, start_step, cfg.steps),
        batch_size=None,
        shuffle=False,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else nullcontext()
    )
    parallel = "fsdp2" if cfg.fsdp else "ddp" if info.enabled else "none"
    train_config = {
        "train": dataclasses.asdict(cfg) | {"output_dir": portable_path(cfg.output_dir)},
        "loss": dataclasses.asdict(loss_fn.config),  # as resolved (the default vision weight a number)
        "distributed": {"world_size": info.world_size, "parallel": parallel, "device": str(device)},
        **(run_info or {}),
    }
    return _Run(
        cfg=cfg,
        info=info,
        device=device,
        out=out,
        student=student,
        loss_fn=loss_fn,
        forward=forward,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        autocast=autocast,
        start_step=start_step,
        num_samples=len(source),
        train_config=train_config,
        write_extra=write_extra,
    )


def _resume_state(out: Path, cfg: TrainConfig, num_samples: int, student: PiModel, info: DistInfo):
    """-> (step, training state) of OUT/checkpoints/last, its weights loaded into `student`; one error if
    the data stream would differ (another seed, global batch or dataset size cannot resume exactly)."""
    last = ckpt.last_checkpoint(out)
    if last is None:
        raise MissingFileError(f"--resume: no checkpoint in {out / ckpt.CHECKPOINTS}")
    state = ckpt.load_training_state(last)
    data = state["training_step"]["data"]
    for key, now in (("seed", cfg.seed), ("global_batch", cfg.batch_size), ("num_samples", num_samples)):
        if data[key] != now:
            raise UserError(
                f"--resume: the checkpoint was written with {key}={data[key]}, this run has {now}; "
                "an exact resume needs the same value"
            )
    start_step = state["training_step"]["step"]
    load_state_dict(student, last / ckpt.PRETRAINED / "model.safetensors")
    if info.is_main:
        print(f"resuming from {last} at step {start_step}")
    return start_step, state


def _parallel_forward(
    student: PiModel, teacher: PiModel | None, module, cfg: TrainConfig, info: DistInfo, device: torch.device
) -> Callable:
    """The student pass as the loss calls it: FSDP2-sharded models, DDP around `module`, or `module` itself."""
    if cfg.fsdp:
        if not info.enabled:
            raise UserError("--fsdp needs several processes (launch with torchrun)")
        shard_fsdp(student)
        if teacher is not None:
            shard_fsdp(teacher, frozen=True)

        def forward(*inputs, capture=(), vision=False):
            o = student.forward_joint(*inputs, capture=capture, vision=vision)
            return o.v_t, o.attn, o.prefix_valid, o.vision, o.vision_valid

        return forward
    if info.enabled:
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return module


def _step(run: _Run, step: int, batches, last_saved: Path | None) -> tuple[dict[str, float], float, float]:
    """One optimizer step over `grad_accum` micro-batches -> (loss terms, gradient norm, learning rate used).
    A non-finite term or gradient norm raises before the update is applied."""
    cfg, forward = run.cfg, run.forward
    terms_sum: dict[str, torch.Tensor] = {}
    for micro in range(cfg.grad_accum):
        batch = next(batches).to(run.device)
        sync = micro == cfg.grad_accum - 1 or not isinstance(forward, DistributedDataParallel)
        with nullcontext() if sync else forward.no_sync():
            with run.autocast:
                total, terms = run.loss_fn(forward, batch)
            (total / cfg.grad_accum).backward()
        for k, v in terms.items():
            terms_sum[k] = terms_sum.get(k, 0) + v.detach().float() / cfg.grad_accum
    names = sorted(terms_sum)
    values = torch.stack([terms_sum[k] for k in names])
    if run.info.enabled:  # every rank sees the same numbers, so a NaN stops every rank together
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= run.info.world_size
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.clip_grad_norm)
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    logged = {k: float(v) for k, v in zip(names, values.cpu(), strict=True)}
    bad = [k for k, v in logged.items() if not math.isfinite(v)]
    if bad or not math.isfinite(grad_norm):
        what = (
            "loss " + ", ".join(f"term '{k}' = {logged[k]}" for k in bad)
            if bad
            else f"gradient norm = {grad_norm}"
        )
        raise NonFiniteLossError(
            f"non-finite {what} at step {step + 1}; stopped before applying it. Last good checkpoint: "
            f"{last_saved if last_saved is not None else 'none written yet'}"
        )
    lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return logged, grad_norm, lr


def _save(run: _Run, step: int) -> Path:
    """Checkpoint `step` (model, optimizer, scheduler, RNG, data position). Every rank takes part in gathering
    the state (FSDP); rank 0 writes."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(run.student, options=full)
    optim_sd = get_optimizer_state_dict(run.student, run.optimizer, options=full)
    path = None
    if run.info.is_main:
        cfg = run.cfg
        path = ckpt.save_checkpoint(
            run.out,
            step,
            config=run.student.config,
            model_state=model_sd,
            optimizer_state=optim_sd,
            scheduler_state=run.scheduler.state_dict(),
            train_config=run.train_config,
            write_extra=run.write_extra,
            training_step={
                "step": step,
                "data": {
                    "seed": cfg.seed,
                    "global_batch": cfg.batch_size,
                    "num_samples": run.num_samples,
                    "next_position": step * cfg.batch_size,
                },
            },
        )
    if run.info.enabled:
        dist.barrier()
    return path or run.out / ckpt.CHECKPOINTS / ckpt.step_name(step)
