"""The training loop of the official ``pretrain.py`` (CPU, one GPU, or ``torchrun`` DDP), resumable.

Semantics kept from the official trainer (docs/reference-semantics.md §4-8):

- ``epochs`` are group-epochs of the loader (:mod:`hrm.data`); training runs in blocks
  of ``eval_interval`` epochs (``epochs`` must be a multiple of it; an ``eval_interval`` above
  ``epochs`` is lowered to ``epochs``: one block, one evaluation at the end), and after every
  block the model is evaluated on the test split and a checkpoint is due (every block
  with ``checkpoint_every_eval``, else only the last). Total steps come from the loader:
  every block drops its last incomplete batch.
- One ACT carry persists across all training batches (and blocks): each call advances
  every row by one segment and rows that halted pick up the next batch's row.
- The loss of each step is divided by the global batch size; with several processes
  the gradients are summed over ranks (all-reduce), so N processes with global batch G
  compute the same update as one process with batch G.
- Two optimisers, each with its own base rate on the same schedule: sign-SGD for the
  puzzle embedding (:class:`hrm.model.SparseEmbeddingSignSGD`) and :class:`hrm.optim.AdamATan2`
  for the weights. The step counter is incremented before the rate is computed, so the
  first update uses ``lr / lr_warmup_steps`` (:func:`hrm.optim.cosine_schedule_lr`).
- Metrics are sums over the rows that halted in the step, reduced over ranks, then
  divided: losses by the global batch size, the rest by the count of halted rows
  (``train/lm_loss``, ``train/accuracy``, ``train/exact_accuracy``,
  ``train/q_halt_accuracy``, ``train/steps``, ``train/lr``, ...). Evaluation runs every
  test batch until all its rows halted (exactly halt_max_steps segments) and divides
  every metric by the number of test examples (``eval/...``).

- With ``ema`` (off by default; TRM's published runs set it) an exponential moving average of the weights
  (:class:`EMA`, rate ``ema_rate``) is updated after every optimiser step, and it is the model evaluated
  after each block and saved in step_N, as TRM's pretrain.py does; training continues on the live weights.

Ours on top: the whole training state (:class:`TrainState`: weights, both optimiser
states, the step and loader position, the ACT carry and RNG states of every rank, the
block's metric sums, the EMA's shadow) can be snapshotted at any step and restored, and an interrupted
run that is restored ends bit-identical to an uninterrupted one. SIGINT/SIGTERM finish
the step in flight and stop (under torchrun every rank after the same step).

This module holds no files: :func:`train` hands every step's metrics, every evaluation,
every due checkpoint and every snapshot to a :class:`TrainHooks` object. The run folder
(step_N files, ``train_state.pt``, metrics CSV/JSON, W&B, progress) is
``pipelines/train_run.py``'s.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist

from hrm.distributed import Dist, DistributedError, all_gather_object, finish, init_distributed, rank_device
from hrm.manifest import MANIFEST, dataset_identity, puzzle_identifier_count
from hrm.model import Carry, InnerCarry, RecurrentModel, SparseEmbeddingSignSGD, resolve_device
from hrm.model.base import mistyped_fields
from hrm.model.registry import DEFAULT_ARCH_NAME, UnknownArchitecture, architecture_for, architecture_of_arch
from hrm.optim import AdamATan2, cosine_schedule_lr
from hrm.encoding import IGNORE_LABEL

STATE_FORMAT = 1
BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers")
EVAL_METRIC_KEYS = ("accuracy", "count", "exact_accuracy", "lm_loss", "q_halt_accuracy", "q_halt_loss", "steps")

# The two training profiles. The quick CPU profile is TrainConfig's defaults (its architecture:
# QUICK_ARCH); the paper's Sudoku-Extreme run overrides these keys (docs/reference-semantics.md §5, §7;
# the fork trains 40000 epochs with eval_interval 1000 on the hint dataset).
QUICK_ARCH: dict[str, Any] = dict(
    hidden_size=128,
    num_heads=4,
    expansion=4,
    H_layers=2,
    L_layers=2,
    H_cycles=2,
    L_cycles=2,
    halt_max_steps=8,
    halt_exploration_prob=0.1,
    pos_encodings="rope",
    puzzle_emb_ndim=128,
    loss_type="stablemax_cross_entropy",
)
PAPER_PROFILE: dict[str, Any] = dict(
    hidden_size=512, num_heads=8, expansion=4.0, H_layers=4, L_layers=4, H_cycles=2, L_cycles=2, halt_max_steps=16,
    halt_exploration_prob=0.1, pos_encodings="rope", puzzle_emb_ndim=512, loss_type="stablemax_cross_entropy",
    global_batch_size=768, epochs=20000, eval_interval=2000, lr=1e-4, lr_min_ratio=1.0, lr_warmup_steps=2000, beta1=0.9,
    beta2=0.95, weight_decay=1.0, puzzle_emb_lr=1e-4, puzzle_emb_weight_decay=1.0, eval_size=0,
)


# Keys of an arch block that are no config field: the architecture's name and the loss head's settings.
ARCH_BLOCK_KEYS = {"name", "loss", "loss_type"}


class TrainError(ValueError):
    """A setting or input that makes training impossible; the message says which and why."""


def divisors_around(epochs: int, interval: int) -> tuple[int, int]:
    """The nearest divisors of ``epochs`` (>= 1) below and above ``interval`` (1 < interval < epochs, not a divisor)."""
    divisors = set()
    d = 1
    while d * d <= epochs:
        if epochs % d == 0:
            divisors.update((d, epochs // d))
        d += 1
    return max(x for x in divisors if x < interval), min(x for x in divisors if x > interval)


def eval_interval_fix(epochs: int, interval: int) -> str:
    """What to set when ``interval`` (< epochs) does not divide ``epochs``; the CLI words it with its own keys."""
    below, above = divisors_around(epochs, interval)
    return f"set eval_interval to {below} or {above}, or epochs to a multiple of {interval}"


@dataclass
class TrainConfig:
    """Everything a run needs. Official ``pretrain.py`` names first, then ours. The defaults are the quick profile.

    The run-folder fields (``output_dir``, ``checkpoint_path``, ``keep_checkpoints``, ``wandb_mode``,
    ``project_name``, ``run_name``, ``resume``, ``progress``) are read by the run folder
    (``pipelines/train_run.py``), not by the loop; they live here because all_config.yaml records them.
    """

    data_path: str
    arch: dict[str, Any] = field(default_factory=lambda: dict(QUICK_ARCH))
    global_batch_size: int = 64
    epochs: int = 20
    eval_interval: int | None = 10  # epochs per block; None = epochs (one evaluation, at the end); > epochs: lowered to epochs
    lr: float = 2e-3
    lr_min_ratio: float = 0.1
    lr_warmup_steps: int = 50
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    puzzle_emb_lr: float = 1e-3
    puzzle_emb_weight_decay: float = 0.1
    seed: int = 0
    checkpoint_every_eval: bool = True
    ema: bool = False  # evaluate and save an exponential moving average of the weights (TRM's runs; :class:`EMA`)
    ema_rate: float = 0.999  # its decay per optimiser step
    project_name: str | None = None
    run_name: str | None = None
    checkpoint_path: str | None = None  # default: <output_dir>/checkpoints

    # ours
    output_dir: str | None = None  # metrics.json, plots/, wandb/
    device: str = "auto"  # auto | cpu | cuda | mps
    forward_dtype: str = "auto"  # auto (bfloat16 on cuda, else float32) | float32 | bfloat16
    eval_size: int | None = 256  # evaluate on a seeded sample of N test examples (None or 0: all)
    keep_checkpoints: int = 0  # keep the last N step_N files (0: all)
    wandb_mode: str = "disabled"  # online | offline | disabled
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    resume: bool = True  # continue from OUT/train_state.pt when the settings match
    progress: bool = True  # progress on rank 0 (hrm.progress: a bar on a terminal, else lines)
    compile: bool = False  # torch.compile the model (as the official does on CUDA)

    def __post_init__(self) -> None:
        # Types first (NaN and inf included: a NaN learning rate trains NaN weights); the checks below assume numbers.
        problems = [f"{name} must be {kind}, not {value!r}" for name, kind, value in mistyped_fields(self)]
        if not isinstance(self.arch, Mapping):
            problems.append(f"arch must be a mapping, not {self.arch!r}")
        if problems:
            raise TrainError("invalid training config: " + "; ".join(problems))
        if self.global_batch_size < 1:
            problems.append("global_batch_size must be >= 1")
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        # An interval above epochs (epochs lowered with `-S train.epochs=2`, the interval left at 10) is lowered to
        # epochs: one block, one evaluation at the end. The effective value is what all_config.yaml, --print-config
        # and the resume key record; the value asked for stays in eval_interval_requested (not a field).
        self.eval_interval_requested: int | None = None
        interval = self.epochs if self.eval_interval is None else self.eval_interval
        if self.epochs >= 1 and interval > self.epochs:
            self.eval_interval_requested, self.eval_interval = interval, self.epochs
        elif interval < 1 or self.epochs % interval:
            problem = f"eval_interval ({self.eval_interval}) must be a positive divisor of epochs ({self.epochs})"
            if 1 < interval < self.epochs:
                problem += ": " + eval_interval_fix(self.epochs, interval)
            problems.append(problem)
        if not 0.0 <= self.ema_rate <= 1.0:
            problems.append("ema_rate must be in [0, 1]")
        if self.lr < 0 or self.puzzle_emb_lr < 0:
            problems.append("learning rates must be >= 0")
        if self.lr_warmup_steps < 0:
            problems.append("lr_warmup_steps must be >= 0")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            problems.append(f"device must be auto, cpu, cuda or mps, not {self.device!r}")
        if self.forward_dtype not in ("auto", "float32", "bfloat16"):
            problems.append(f"forward_dtype must be auto, float32 or bfloat16, not {self.forward_dtype!r}")
        if self.wandb_mode not in ("online", "offline", "disabled"):
            problems.append(f"wandb_mode must be online, offline or disabled, not {self.wandb_mode!r}")
        if self.keep_checkpoints < 0:
            problems.append("keep_checkpoints must be >= 0")
        if self.eval_size is not None and self.eval_size < 0:
            problems.append("eval_size must be >= 0 (0 or None: the whole test split)")
        try:
            known = architecture_of_arch(self.arch).config_keys()  # no arch.name: HRM
        except UnknownArchitecture as e:
            problems.append(str(e))
        else:
            unknown = set(self.arch) - known - ARCH_BLOCK_KEYS
            if unknown:
                problems.append(f"unknown arch keys: {', '.join(sorted(unknown))}")
        if problems:
            raise TrainError("invalid training config: " + "; ".join(problems))

    @property
    def epochs_per_block(self) -> int:
        return self.epochs if self.eval_interval is None else self.eval_interval

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: RecurrentModel
    step: int
    total_steps: int
    metrics: dict[str, Any]  # summary(): {"step", "total_steps", "epochs_done", "train", "eval", "train_seconds"} (rank 0; {} elsewhere)
    checkpoint: Any  # the hooks' last_checkpoint (the run folder: the last step_N written, on rank 0)
    interrupted: bool = False


# ----------------------------------------------------------------------------- distributed


def _all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients over ranks, one flat buffer per dtype (missing grads count as zeros)."""
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def _reduce_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum over ranks. (The official reduces to rank 0; all-reduce lets every rank see a non-finite loss and stop together.)"""
    if d.enabled:
        dist.all_reduce(values)
    return values


# ----------------------------------------------------------------------------- carry and RNG state


def _carry_to_dict(carry: Carry | None) -> dict[str, Any] | None:
    if carry is None:
        return None
    return {
        "z_H": carry.inner_carry.z_H.detach().cpu(),
        "z_L": carry.inner_carry.z_L.detach().cpu(),
        "steps": carry.steps.cpu(),
        "halted": carry.halted.cpu(),
        "current_data": {k: v.cpu() for k, v in carry.current_data.items()},
    }


def _concat_carries(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    if any(p is None for p in parts):
        return None
    return {
        "z_H": torch.cat([p["z_H"] for p in parts]),
        "z_L": torch.cat([p["z_L"] for p in parts]),
        "steps": torch.cat([p["steps"] for p in parts]),
        "halted": torch.cat([p["halted"] for p in parts]),
        "current_data": {k: torch.cat([p["current_data"][k] for p in parts]) for k in parts[0]["current_data"]},
    }


def _carry_from_dict(d: dict[str, Any] | None, rank: int, local_batch: int, device: torch.device) -> Carry | None:
    """This rank's rows [rank * B, (rank + 1) * B) of a global carry."""
    if d is None:
        return None
    sl = slice(rank * local_batch, (rank + 1) * local_batch)
    if d["steps"].shape[0] < sl.stop:
        return None
    return Carry(
        inner_carry=InnerCarry(z_H=d["z_H"][sl].to(device), z_L=d["z_L"][sl].to(device)),
        steps=d["steps"][sl].to(device),
        halted=d["halted"][sl].to(device),
        current_data={k: v[sl].to(device) for k, v in d["current_data"].items()},
    )


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def round_metric(v: Any) -> Any:
    """A metric as written to files: 7 significant digits (float32 precision), plain Python numbers."""
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.7g}")
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


# ----------------------------------------------------------------------------- the training state


class EMA:
    """The exponential moving average of the trainable weights, as the reference's EMAHelper (TRM's pretrain.py): a
    shadow copy taken when the model is made, updated after every optimiser step as (1 - rate) * w + rate * shadow;
    the model evaluated and saved is a copy holding the shadow (the puzzle embedding, a buffer, is the live one)."""

    def __init__(self, model: torch.nn.Module, rate: float):
        self.rate = rate
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.shadow[name] = (1.0 - self.rate) * p.detach() + self.rate * self.shadow[name]

    @torch.no_grad()
    def copy_of(self, model: RecurrentModel) -> RecurrentModel:
        """A copy of ``model`` with the averaged weights (the reference's ema_copy)."""
        averaged = copy.deepcopy(model)
        for name, p in averaged.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])
        return averaged


@dataclass
class Plan:
    """How a run is cut: blocks of epochs, steps per block, the per-rank batch."""

    epochs_per_block: int
    blocks: int
    steps_per_block: int
    local_batch: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_block * self.blocks


def plan_run(cfg: TrainConfig, dataset: Any, d: Dist) -> Plan:
    epb = cfg.epochs_per_block
    steps_per_block = dataset.steps_per_block(cfg.global_batch_size, epb)
    if steps_per_block < 1:
        raise TrainError(
            f"{dataset.num_groups} groups x {epb} epochs per block is less than one global batch of {cfg.global_batch_size}: "
            "raise eval_interval (epochs per block) or lower global_batch_size"
        )
    return Plan(epochs_per_block=epb, blocks=cfg.epochs // epb, steps_per_block=steps_per_block,
                local_batch=cfg.global_batch_size // d.world_size)


# The history keys the loop keeps (a snapshot's "history" may hold more: the run folder's own).
HISTORY_KEYS = ("block_sums", "block_steps", "last_lr", "last_eval", "elapsed")


@dataclass
class TrainState:
    """Everything that changes while training; :meth:`snapshot` / :meth:`restore` make a run resumable bit-exactly."""

    model: RecurrentModel
    optimizers: list[torch.optim.Optimizer]
    base_lrs: list[float]
    step: int = 0
    block: int = 0
    step_in_block: int = 0
    carry: Carry | None = None
    ema: EMA | None = None  # with TrainConfig.ema: the averaged weights, evaluated and saved
    # Metric sums of the current block (rank 0), the last lr and eval metrics, seconds trained so far.
    history: dict[str, Any] = field(default_factory=lambda: {"block_sums": {}, "block_steps": 0, "last_lr": 0.0, "last_eval": {},
                                                             "elapsed": 0.0})
    started: float = field(default_factory=time.perf_counter)  # perf_counter() at which elapsed was 0

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def snapshot(self, d: Dist, device: torch.device, key: Mapping[str, Any], total_steps: int) -> dict[str, Any] | None:
        """The state of every rank, gathered (collective: call on every rank); the dict on rank 0, None elsewhere."""
        carries = all_gather_object(_carry_to_dict(self.carry), d)
        rngs = all_gather_object(_rng_state(device), d)
        if d.rank != 0:
            return None
        self.history["elapsed"] = self.seconds()
        return {
            "format": STATE_FORMAT,
            "key": dict(key),
            "step": self.step,
            "block": self.block,
            "step_in_block": self.step_in_block,
            "total_steps": total_steps,
            "world_size": d.world_size,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "carry": _concat_carries(carries),
            "rng": rngs,
            "history": dict(self.history),
            **({"ema": {k: v.detach().cpu() for k, v in self.ema.shadow.items()}} if self.ema is not None else {}),
        }

    def restore(self, saved: Mapping[str, Any], d: Dist, plan: Plan, device: torch.device, seed: int) -> None:
        self.model.load_state_dict(saved["model"])
        for opt, sd in zip(self.optimizers, saved["optimizers"]):
            opt.load_state_dict(sd)
        if self.ema is not None:  # the resume key holds ema_rate: a state saved with EMA has its shadow
            self.ema.shadow = {k: v.to(device) for k, v in saved["ema"].items()}
        self.step, self.block, self.step_in_block = saved["step"], saved["block"], saved["step_in_block"]
        self.carry = _carry_from_dict(saved["carry"], d.rank, plan.local_batch, device)
        rngs = saved["rng"]
        if d.rank < len(rngs) and saved.get("world_size") == d.world_size:
            _set_rng_state(rngs[d.rank], device)
        else:
            warnings.warn(f"resuming with {d.world_size} processes from a state saved by {saved.get('world_size')}: exploration RNG reseeded")
            torch.random.manual_seed(seed + d.rank + 1_000_003 * self.step)
        self.history.update({k: v for k, v in saved["history"].items() if k in HISTORY_KEYS})
        self.started = time.perf_counter() - float(self.history.get("elapsed", 0.0))

    def evaluated_model(self) -> RecurrentModel:
        """The model evaluated and saved: the EMA copy with TrainConfig.ema, else the model itself."""
        return self.model if self.ema is None else self.ema.copy_of(self.model)

    def summary(self, cfg: TrainConfig, total_steps: int) -> dict[str, Any]:
        """The run's headline numbers: the last block's train metrics and the last evaluation."""
        return {
            "step": self.step,
            "total_steps": total_steps,
            "epochs_done": round(cfg.epochs * self.step / max(1, total_steps), 6),
            "train": {k: round_metric(v) for k, v in _block_train_metrics(self.history, cfg.global_batch_size).items()},
            "eval": {k.split("/", 1)[1]: round_metric(v) for k, v in self.history["last_eval"].items()},
            "train_seconds": round(self.seconds(), 1),
        }


def resolve_forward_dtype(forward_dtype: str, device: torch.device) -> str:
    if forward_dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return forward_dtype


def build_model_config(cfg: TrainConfig, dataset: Any, world_size: int, device: torch.device) -> tuple[Any, str]:
    """The architecture's config from the arch block plus the data-derived sizes (as the official create_model)."""
    architecture = architecture_of_arch(cfg.arch)
    arch = {k: v for k, v in cfg.arch.items() if k not in ARCH_BLOCK_KEYS}
    loss = cfg.arch.get("loss")
    loss_type = cfg.arch.get("loss_type") or (loss.get("loss_type") if isinstance(loss, Mapping) else None) or "stablemax_cross_entropy"
    if cfg.global_batch_size % world_size:
        raise TrainError(f"global_batch_size {cfg.global_batch_size} is not divisible by the number of processes ({world_size})")
    manifest = getattr(dataset, "manifest", {}) or {}
    meta = manifest.get("encoding", {}) if isinstance(manifest, Mapping) else {}
    arch.update(
        batch_size=cfg.global_batch_size // world_size,
        seq_len=int(meta.get("seq_len", 81)),
        vocab_size=int(meta.get("vocab_size", 11)),
        num_puzzle_identifiers=puzzle_identifier_count(manifest),
        forward_dtype=resolve_forward_dtype(cfg.forward_dtype, device),
    )
    try:
        return architecture.config_from_dict(arch), loss_type
    except (TypeError, ValueError) as e:
        raise TrainError(f"invalid arch block: {e}") from None


def trained_on(dataset: Any) -> dict[str, Any] | None:
    """What the checkpoints record of the dataset they are trained on (all_config.yaml ``trained_on``:
    hrm.manifest.DatasetIdentity); None for a loader without a dataset folder."""
    folder, manifest = getattr(dataset, "dataset_dir", None), getattr(dataset, "manifest", None)
    if folder is None or not isinstance(manifest, Mapping) or not (Path(folder) / MANIFEST).is_file():
        return None
    return dataset_identity(Path(folder), manifest).record()


def estimate_train_memory(model_config: Any, loss_type: str = "stablemax_cross_entropy") -> dict[str, int]:
    """Bytes one training process needs, by what they count, before the model exists.

    The parameters are counted on torch's meta device (shapes only, nothing allocated): fp32 weights,
    their gradients and AdamATan2's two moments, 16 bytes each; the buffers (the puzzle embedding, H/L
    init, rotary tables) at their own size. Activations of one step on the per-process batch: the
    architecture's count (:meth:`~hrm.model.base.Architecture.train_activation_bytes`).
    """
    architecture = architecture_for(model_config)
    with torch.device("meta"):
        model = architecture.build(model_config, loss_type=loss_type)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    activations = architecture.train_activation_bytes(model_config)
    return {"weights, gradients and optimiser moments": 16 * params, "buffers": buffers, "activations": activations}


def create_state(cfg: TrainConfig, model_config: Any, loss_type: str, d: Dist, device: torch.device) -> TrainState:
    """The model seeded per rank as the official (seed + rank), rank 0's weights broadcast, and its two optimisers."""
    torch.random.manual_seed(cfg.seed + d.rank)
    with torch.device(device):
        model = architecture_for(model_config).build(model_config, loss_type=loss_type)
    if d.enabled:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t, src=0)
    # Official order: the puzzle embedding's sign-SGD, then AdamATan2 (both lr set every step).
    optimizers: list[torch.optim.Optimizer] = []
    base_lrs: list[float] = []
    if model.sparse_embedding is not None:
        optimizers.append(SparseEmbeddingSignSGD(model.sparse_embedding.buffers(), lr=0.0, weight_decay=cfg.puzzle_emb_weight_decay,
                                                 world_size=d.world_size))
        base_lrs.append(cfg.puzzle_emb_lr)
    optimizers.append(AdamATan2(model.parameters(), lr=0.0, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)))
    base_lrs.append(cfg.lr)
    return TrainState(model=model, optimizers=optimizers, base_lrs=base_lrs,
                      ema=EMA(model, cfg.ema_rate) if cfg.ema else None)


def resume_key(cfg: TrainConfig, model_config: Any, loss_type: str, dataset: Any) -> dict[str, Any]:
    """The settings that shape the trajectory: a saved state is only continued when these are equal."""
    manifest = getattr(dataset, "manifest", None)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:16] if manifest else None
    architecture = architecture_for(model_config)
    arch = architecture.config_to_dict(model_config)
    arch.pop("batch_size")  # per-device; the global batch is below
    return {
        # absent for the default (HRM): the states saved before other architectures existed still match
        **({"architecture": architecture.name} if architecture.name != DEFAULT_ARCH_NAME else {}),
        "arch": arch,
        "loss_type": loss_type,
        "dataset": {"name": getattr(dataset, "name", None), "manifest_sha256": digest, "num_groups": dataset.num_groups},
        **({"ema_rate": cfg.ema_rate} if cfg.ema else {}),  # absent without EMA: the states saved before it still match
        **{k: getattr(cfg, k) for k in ("global_batch_size", "epochs", "eval_interval", "lr", "lr_min_ratio", "lr_warmup_steps", "beta1",
                                        "beta2", "weight_decay", "puzzle_emb_lr", "puzzle_emb_weight_decay", "seed")},
    }


def why_not_resumable(saved: Mapping[str, Any], key: Mapping[str, Any], total_steps: int) -> str | None:
    """None when ``saved`` (a snapshot) continues the run ``key`` describes, else the reason to start over."""
    if saved.get("format") != STATE_FORMAT or saved.get("key") != key:
        old_key = saved.get("key") or {}
        diff = _diff_keys(old_key, key) if saved.get("format") == STATE_FORMAT else ["format"]
        was, now = (k.get("architecture", DEFAULT_ARCH_NAME) for k in (old_key, key))
        if saved.get("format") == STATE_FORMAT and was != now:
            return f"the saved run trained {was}, this run trains {now}"
        return f"saved run has different settings ({', '.join(diff) or '?'})"
    if saved.get("step", 0) >= total_steps:
        # Asked to train again after a finished run (`dvc repro -f`, or code that changed): train,
        # rather than hand back the old weights.
        return f"the saved run is complete ({saved['step']}/{total_steps} steps)"
    return None


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for k in BATCH_KEYS:
        t = torch.as_tensor(batch[k])
        if t.dtype != torch.int32:
            t = t.to(torch.int32)
        out[k] = t.to(device, non_blocking=True)
    return out


def _block_train_metrics(history: Mapping[str, Any], global_batch_size: int) -> dict[str, float]:
    """Train metrics over the current (last) block: the official per-step division applied to the block's sums."""
    sums = dict(history.get("block_sums") or {})
    n = history.get("block_steps") or 0
    if not n:
        return {}
    count = max(sums.pop("count", 0.0), 1.0)
    out = {k: v / (global_batch_size * n if k.endswith("loss") else count) for k, v in sums.items()}
    out["lr"] = history.get("last_lr", 0.0)
    return out


# ----------------------------------------------------------------------------- one step, one evaluation


def train_step(state: TrainState, forward: Callable, batch: dict[str, torch.Tensor], cfg: TrainConfig, total_steps: int, d: Dist,
               stop_requested: bool) -> tuple[dict[str, float], bool]:
    """One optimiser step of the official loop. Returns (this step's ``train/...`` metrics on rank 0, {} elsewhere;
    whether any rank asked to stop: the request rides on the metrics all-reduce, so every rank sees it after the same step)."""
    state.step += 1
    state.step_in_block += 1
    if state.carry is None:
        state.carry = state.model.initial_carry(batch)
    state.carry, loss, metrics, _, _ = forward(state.carry, batch)
    ((1.0 / cfg.global_batch_size) * loss).backward()
    if d.enabled:
        _all_reduce_grads(list(state.model.parameters()))
    lr_now = 0.0
    for opt, base_lr in zip(state.optimizers, state.base_lrs):
        lr_now = cosine_schedule_lr(state.step, base_lr=base_lr, warmup_steps=round(cfg.lr_warmup_steps), total_steps=total_steps,
                                    min_ratio=cfg.lr_min_ratio)
        for group in opt.param_groups:
            group["lr"] = lr_now
        opt.step()
        opt.zero_grad()
    if state.ema is not None:
        state.ema.update(state.model)

    # Metrics: sums over halted rows, reduced over ranks, then divided as the official.
    keys = sorted(metrics)
    values = _reduce_sum(torch.stack([*(metrics[k].detach().to(torch.float64) for k in keys),
                                      torch.tensor(float(stop_requested), dtype=torch.float64, device=batch["inputs"].device)]), d)
    stop_agreed = values[-1].item() > 0
    values = values[:-1]
    if not math.isfinite(values[keys.index("lm_loss")].item()):
        raise FloatingPointError(f"step {state.step}: training loss is not finite")
    if d.rank != 0:
        return {}, stop_agreed
    vals = dict(zip(keys, values.cpu().tolist()))
    sums = state.history["block_sums"]
    for k, v in vals.items():
        sums[k] = sums.get(k, 0.0) + v
    state.history["block_steps"] += 1
    state.history["last_lr"] = lr_now
    count = max(vals.pop("count"), 1.0)
    reduced = {f"train/{k}": v / (cfg.global_batch_size if k.endswith("loss") else count) for k, v in vals.items()}
    reduced["train/lr"] = lr_now
    return reduced, stop_agreed


@torch.inference_mode()
def evaluate(model: RecurrentModel, dataset: Any, *, batch_size: int, device: torch.device, eval_size: int | None = None, d: Dist | None = None) -> dict[str, float]:
    """Official evaluation on the test split: each batch runs until all rows halted; metrics / count.

    Padding rows of the last batch get ignored labels, so they are not counted.
    Returns ``eval/...`` metrics on rank 0 (empty dict elsewhere).
    """
    d = d or Dist()
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(EVAL_METRIC_KEYS), dtype=torch.float64, device=device)
    try:
        for raw in dataset.eval_batches(batch_size=batch_size, rank=d.rank, world_size=d.world_size, limit=eval_size or None):
            batch = _to_device(raw, device)
            if "mask" in raw:
                mask = torch.as_tensor(raw["mask"], dtype=torch.bool).to(device)
                batch["labels"] = torch.where(mask[:, None], batch["labels"], IGNORE_LABEL)
            carry = model.initial_carry(batch)
            while True:
                carry, _, metrics, _, all_halted = model(carry, batch)
                if all_halted:
                    break
            sums += torch.stack([metrics[k].to(torch.float64) for k in EVAL_METRIC_KEYS])
    finally:
        model.train(was_training)
    sums = _reduce_sum(sums, d)
    if d.rank != 0:
        return {}
    values = dict(zip(EVAL_METRIC_KEYS, sums.cpu().tolist()))
    count = values.pop("count")
    out = {f"eval/{k}": (v / count if count else float("nan")) for k, v in values.items()}
    out["eval/count"] = count
    return out


# ----------------------------------------------------------------------------- the loop


class TrainHooks:
    """What a run does with its results; the default keeps nothing (a run in memory).

    Every method is called on every rank (writers write on rank 0 only). ``pipelines/train_run.py``
    implements the run folder.
    """

    last_checkpoint: Any = None  # what names the last checkpoint saved (TrainResult.checkpoint)

    def resume(self, key: Mapping[str, Any], total_steps: int) -> Mapping[str, Any] | None:
        """A snapshot to continue from, or None to start from step 0."""
        return None

    def start(self, state: TrainState, run_config: Mapping[str, Any], num_params: int) -> None:
        """Called once before the first step (after resume)."""

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        """Every step's ``train/...`` metrics (rank 0; {} elsewhere)."""

    def evaluated(self, step: int, metrics: Mapping[str, float]) -> None:
        """Every evaluation's ``eval/...`` metrics (rank 0; {} elsewhere)."""

    def checkpoint(self, step: int, model: RecurrentModel) -> None:
        """A checkpoint of ``model`` after ``step`` is due (every evaluation with checkpoint_every_eval, else the last)."""

    def save(self, snapshot: Mapping[str, Any] | None, state: TrainState, stopped: bool) -> None:
        """A snapshot of the whole state (rank 0; None elsewhere): at the end of every block, and when the run stops."""

    def close(self, state: TrainState, finished: bool) -> None:
        """Called last, also after an error (``finished`` False then, and when stopped)."""


class StopFlag:
    """Ctrl-C (SIGINT) / SIGTERM during training: finish the step, save, stop. A second Ctrl-C aborts.

    Under torchrun the ranks agree on the step (the request rides on the per-step metrics
    all-reduce). SIGTERM never aborts: torchrun and cluster schedulers send it after the
    user's Ctrl-C or on preemption, and the save must be allowed to finish.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.requested = True
        print("\nstop requested: finishing this step and saving the training state (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    cfg: TrainConfig,
    *,
    dataset: Any | None = None,
    eval_dataset: Any | None = None,
    hooks: TrainHooks | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or continue training) per ``cfg``; see the module docstring.

    ``dataset`` / ``eval_dataset``: loaders with the :class:`hrm.data.PuzzleDataset` API
    (default: the train and test splits of ``cfg.data_path``). ``hooks``: where results go
    (:class:`TrainHooks`; default: nowhere). ``callback(step, metrics)``: called on every rank
    after every optimiser step with that step's train metrics (rank 0; {} elsewhere); raising
    KeyboardInterrupt in it stops the run like Ctrl-C. ``log``: progress messages (rank 0).
    """
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = resolve_device(cfg.device)
    try:
        d = init_distributed(device.type)
    except DistributedError as e:
        raise TrainError(str(e)) from None
    device = rank_device(device, d)
    say = (log or (lambda s: None)) if d.rank == 0 else (lambda s: None)
    if dataset is None or eval_dataset is None:
        from hrm.data import PuzzleDataset

        dataset = dataset if dataset is not None else PuzzleDataset(cfg.data_path, "train")
        eval_dataset = eval_dataset if eval_dataset is not None else PuzzleDataset(cfg.data_path, "test")
    try:
        return _loop(cfg, device, d, dataset, eval_dataset, hooks or TrainHooks(), callback, say)
    finally:
        finish(d)


def _loop(cfg, device, d: Dist, dataset, eval_dataset, hooks: TrainHooks, callback, say) -> TrainResult:
    plan = plan_run(cfg, dataset, d)
    model_config, loss_type = build_model_config(cfg, dataset, d.world_size, device)
    state = create_state(cfg, model_config, loss_type, d, device)
    forward = torch.compile(state.model, dynamic=False) if cfg.compile else state.model
    key = resume_key(cfg, model_config, loss_type, dataset)
    saved = hooks.resume(key, plan.total_steps)
    if saved is not None:
        state.restore(saved, d, plan, device, cfg.seed)
    del saved
    if d.enabled:
        dist.barrier()  # every rank has decided (and rank 0 has cleaned up) before anything is written
    num_params = sum(p.numel() for p in state.model.parameters())
    if getattr(cfg, "eval_interval_requested", None) is not None:
        say(f"eval_interval {cfg.eval_interval_requested} > epochs {cfg.epochs}: evaluating once, after epoch {cfg.epochs}")
    hooks.start(state, {"arch": state.model.arch_dict(), "world_size": d.world_size, "total_steps": plan.total_steps,
                        "trained_on": trained_on(dataset)}, num_params)
    say(f"training {num_params:,} parameters on {device} ({model_config.forward_dtype}, {d.world_size} process(es)): "
        f"{cfg.epochs} epochs of {dataset.num_groups} groups = {plan.total_steps} steps of {cfg.global_batch_size} "
        f"in {plan.blocks} block(s) of {plan.steps_per_block}")

    interrupted = finished = False
    try:
        with StopFlag() as flag:
            while state.block < plan.blocks and not interrupted:
                forward.train()
                for raw in dataset.train_batches(global_batch_size=cfg.global_batch_size, seed=cfg.seed, block=state.block,
                                                 epochs_per_block=plan.epochs_per_block, start_step=state.step_in_block,
                                                 rank=d.rank, world_size=d.world_size):
                    metrics, stop = train_step(state, forward, _to_device(raw, device), cfg, plan.total_steps, d, flag.requested)
                    hooks.step(state.step, metrics)
                    if callback is not None:
                        try:
                            callback(state.step, metrics)
                        except KeyboardInterrupt:
                            flag.requested = True
                    # One process stops at once; ranks stop at the step whose reduce carried a request.
                    if stop or (flag.requested and not d.enabled):
                        interrupted = True
                        break
                else:  # end of block: evaluate, checkpoint when due, snapshot
                    evaluated = state.evaluated_model()
                    eval_metrics = evaluate(evaluated, eval_dataset, batch_size=plan.local_batch, device=device, eval_size=cfg.eval_size, d=d)
                    if d.rank == 0:
                        state.history["last_eval"] = eval_metrics
                    hooks.evaluated(state.step, eval_metrics)
                    last_block = state.block == plan.blocks - 1
                    if cfg.checkpoint_every_eval or last_block:
                        hooks.checkpoint(state.step, evaluated)
                    state.block, state.step_in_block = state.block + 1, 0
                    if not last_block:
                        state.history["block_sums"], state.history["block_steps"] = {}, 0
                hooks.save(state.snapshot(d, device, key, plan.total_steps), state, stopped=interrupted)
        finished = not interrupted
    finally:
        hooks.close(state, finished)
    return TrainResult(model=state.model, step=state.step, total_steps=plan.total_steps,
                       metrics=state.summary(cfg, plan.total_steps) if d.rank == 0 else {}, checkpoint=hooks.last_checkpoint,
                       interrupted=interrupted)
