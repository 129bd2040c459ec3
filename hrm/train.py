"""The training loop of the official ``pretrain.py`` (CPU, one GPU, or ``torchrun`` DDP), resumable.

Semantics kept from the official trainer (reference-semantics sections 4-8):

- ``epochs`` are group-epochs of the loader (:mod:`hrm.data`); training runs in blocks
  of ``eval_interval`` epochs (``epochs`` must be a multiple of it), and after every
  block the model is evaluated on the test split and a checkpoint ``step_N`` is saved
  (every block with ``checkpoint_every_eval``, else only the last). Total steps come
  from the loader: every block drops its last incomplete batch.
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
- ``all_config.yaml`` beside the checkpoints has the official layout (``arch`` block with
  name/loss and the architecture, ``data_path``, ``lr``, ``epochs``, ``seed``, ...).

Ours on top:

- Resume. Next to the checkpoints, ``train_state.pt`` holds everything needed to continue
  bit-exactly: weights, both optimiser states, the step, the loader position
  (block, step in block), the ACT carry of every rank (gathered to rank 0), the RNG states
  (torch [+ cuda], numpy, python) of every rank, the metrics and plot rows so far. It is
  rewritten (atomically) at every evaluation and when the run is stopped with Ctrl-C
  (SIGINT/SIGTERM: the step in flight finishes first; under torchrun every rank stops after
  the same step). Calling :func:`train` again with the same settings continues from it; an
  interrupted-and-resumed run ends with the same weights as an uninterrupted one. Different
  settings, or a state whose run is complete, start over (with a message).
- Outputs (rank 0 only): ``checkpoint_dir`` (``step_N``, ``all_config.yaml``,
  ``train_state.pt``; only the last ``keep_checkpoints`` step files are kept) and, in
  ``output_dir``, ``metrics.json`` (final train and eval metrics) and ``plots/train.csv``,
  ``plots/eval.csv`` for ``dvc metrics show`` / ``dvc plots show``; plus W&B when enabled.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist

from hrm.model import HRM, Carry, HRMConfig, InnerCarry, SparseEmbeddingSignSGD, resolve_device, save_checkpoint, step_files
from hrm.optim import AdamATan2, cosine_schedule_lr

STATE_NAME = "train_state.pt"
STATE_FORMAT = 1
BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers")
EVAL_METRIC_KEYS = ("accuracy", "count", "exact_accuracy", "lm_loss", "q_halt_accuracy", "q_halt_loss", "steps")
IGNORE_LABEL_ID = -100

# The quick CPU profile's architecture (the defaults of TrainConfig, the CLI and params.yaml).
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


class TrainError(ValueError):
    """A setting or input that makes training impossible; the message says which and why."""


@dataclass
class TrainConfig:
    """Everything a run needs. Official ``pretrain.py`` names first, then ours."""

    data_path: str
    arch: dict[str, Any] = field(default_factory=lambda: dict(QUICK_ARCH))
    global_batch_size: int = 64
    epochs: int = 20
    eval_interval: int | None = 10  # epochs per block; None = epochs (one evaluation, at the end)
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
    resume: bool = True  # continue from checkpoint_path/train_state.pt when the settings match
    progress: bool = True  # tqdm bar on rank 0
    compile: bool = False  # torch.compile the model (as the official does on CUDA)

    def __post_init__(self) -> None:
        problems = []
        if self.global_batch_size < 1:
            problems.append("global_batch_size must be >= 1")
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        interval = self.epochs if self.eval_interval is None else self.eval_interval
        if interval < 1 or self.epochs % interval:
            problems.append(f"eval_interval ({self.eval_interval}) must be a positive divisor of epochs ({self.epochs})")
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
        unknown = set(self.arch) - {f.name for f in dataclasses.fields(HRMConfig)} - {"name", "loss", "loss_type"}
        if unknown:
            problems.append(f"unknown arch keys: {', '.join(sorted(unknown))}")
        if problems:
            raise TrainError("invalid training config: " + "; ".join(problems))

    @property
    def epochs_per_block(self) -> int:
        return self.epochs if self.eval_interval is None else self.eval_interval

    @property
    def checkpoint_dir(self) -> Path | None:
        if self.checkpoint_path:
            return Path(self.checkpoint_path)
        if self.output_dir:
            return Path(self.output_dir) / "checkpoints"
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: HRM
    step: int
    total_steps: int
    metrics: dict[str, Any]  # {"train": {...}, "eval": {...}} (rank 0; other ranks: {})
    checkpoint: Path | None  # the last step_N written (rank 0)
    interrupted: bool = False


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and destroy it at the end)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when the environment says so (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return Dist()
    if device_kind == "mps":
        raise TrainError("distributed training is not supported on mps; use cpu (gloo) or cuda (nccl)")
    owns = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        owns = True
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, owns_group=owns)


def _all_gather_object(obj: Any, d: Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


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


# ----------------------------------------------------------------------------- state helpers


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- metrics files


class MetricsWriter:
    """Rank 0's DVC-friendly outputs: plots/train.csv, plots/eval.csv (append) and metrics.json."""

    def __init__(self, output_dir: Path | None):
        self.dir = output_dir
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        # Every row so far, saved with the training state: a resumed run rewrites the CSVs from
        # it, since `dvc repro` deletes them before it reruns the stage.
        self.rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}

    def restore(self, rows: Mapping[str, list] | None, keep_until_step: int) -> None:
        """Resuming at ``keep_until_step``: the CSVs hold exactly the saved rows up to it."""
        if rows is None:  # a state without rows: keep what the files hold up to that step
            self.reset(keep_until_step)
            rows = {name: self._read(name) for name in ("train", "eval")}
        self.rows = {name: [r for r in rows.get(name, []) if int(r["step"]) <= keep_until_step] for name in ("train", "eval")}
        if self.dir is None:
            return
        for name, kept in self.rows.items():
            path = self._path(name)
            path.unlink(missing_ok=True)
            if kept:
                path.parent.mkdir(parents=True, exist_ok=True)
                fields = list(dict.fromkeys(k for r in kept for k in r))
                with open(path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=fields)
                    w.writeheader()
                    w.writerows(kept)
        (self.dir / "metrics.json").unlink(missing_ok=True)

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = None if self.dir is None else self._path(name)
        if path is None or not path.exists():
            return []
        with open(path, newline="") as f:
            return [{k: (float(v) if k != "step" else int(v)) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]

    def _path(self, name: str) -> Path:
        assert self.dir is not None
        return self.dir / "plots" / f"{name}.csv"

    def reset(self, keep_until_step: int | None) -> None:
        """Drop rows after ``keep_until_step`` (None: everything), e.g. when resuming from an earlier state."""
        if keep_until_step is None:
            self.rows = {"train": [], "eval": []}
        if self.dir is None:
            return
        for name in ("train", "eval"):
            path = self._path(name)
            if not path.exists():
                continue
            if keep_until_step is None:
                path.unlink()
                continue
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
                fields = rows and list(rows[0].keys())
            kept = [r for r in rows if int(r["step"]) <= keep_until_step]
            with open(path, "w", newline="") as f:
                if fields:
                    w = csv.DictWriter(f, fieldnames=fields)
                    w.writeheader()
                    w.writerows(kept)
        (self.dir / "metrics.json").unlink(missing_ok=True)

    def append(self, name: str, step: int, metrics: Mapping[str, float]) -> None:
        if self.dir is None:
            return
        row = {"step": step, **{k.split("/", 1)[-1]: _fmt(v) for k, v in metrics.items()}}
        self.rows[name].append(row)
        w = self._writers.get(name)
        if w is None:
            path = self._path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            fields = list(row)
            if path.exists() and path.stat().st_size > 0:
                with open(path, newline="") as f:
                    header = next(csv.reader(f), None)
                if header:
                    fields = header + [k for k in row if k not in header]
                    if fields != header:  # new columns: rewrite with the wider header
                        with open(path, newline="") as f:
                            old = list(csv.DictReader(f))
                        with open(path, "w", newline="") as f:
                            ww = csv.DictWriter(f, fieldnames=fields)
                            ww.writeheader()
                            ww.writerows(old)
                fh = open(path, "a", newline="", buffering=1)  # line-buffered: rows reach the file as they come
                w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            else:
                fh = open(path, "w", newline="", buffering=1)
                w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
            self._files[name], self._writers[name] = fh, w
        w.writerow(row)

    def flush(self) -> None:
        for fh in self._files.values():
            fh.flush()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if self.dir is None:
            return
        _atomic_write_text(self.dir / "metrics.json", json.dumps(summary, indent=2, sort_keys=False) + "\n")

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        self._writers.clear()


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.7g}")
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


# ----------------------------------------------------------------------------- the trainer


class _StopFlag:
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

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def resolve_forward_dtype(forward_dtype: str, device: torch.device) -> str:
    if forward_dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return forward_dtype


def build_model_config(cfg: TrainConfig, dataset: Any, world_size: int, device: torch.device) -> tuple[HRMConfig, str]:
    """HRMConfig from the arch block plus the data-derived sizes (as the official create_model)."""
    arch = {k: v for k, v in cfg.arch.items() if k not in ("name", "loss", "loss_type")}
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
        num_puzzle_identifiers=int(meta.get("num_puzzle_identifiers", 1)),
        forward_dtype=resolve_forward_dtype(cfg.forward_dtype, device),
    )
    try:
        return HRMConfig.from_dict(arch), loss_type
    except (TypeError, ValueError) as e:
        raise TrainError(f"invalid arch block: {e}") from None


def official_config(cfg: TrainConfig, model: HRM) -> dict[str, Any]:
    """all_config.yaml: the official PretrainConfig layout (arch last: save_checkpoint adds it), plus ours."""
    ckpt = cfg.checkpoint_dir
    return {
        "data_path": cfg.data_path,
        "global_batch_size": cfg.global_batch_size,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "lr_min_ratio": cfg.lr_min_ratio,
        "lr_warmup_steps": cfg.lr_warmup_steps,
        "weight_decay": cfg.weight_decay,
        "beta1": cfg.beta1,
        "beta2": cfg.beta2,
        "puzzle_emb_lr": cfg.puzzle_emb_lr,
        "puzzle_emb_weight_decay": cfg.puzzle_emb_weight_decay,
        "project_name": cfg.project_name,
        "run_name": cfg.run_name,
        "checkpoint_path": str(ckpt) if ckpt else None,
        "seed": cfg.seed,
        "checkpoint_every_eval": cfg.checkpoint_every_eval,
        "eval_interval": cfg.eval_interval,
        "eval_save_outputs": [],
        "eval_size": cfg.eval_size,
        "device": cfg.device,
        "forward_dtype": model.config.forward_dtype,
    }


def _resume_key(cfg: TrainConfig, model_config: HRMConfig, loss_type: str, dataset: Any) -> dict[str, Any]:
    """The settings that shape the trajectory: a saved state is only continued when these are equal."""
    manifest = getattr(dataset, "manifest", None)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:16] if manifest else None
    arch = model_config.to_dict()
    arch.pop("batch_size")  # per-device; the global batch is below
    return {
        "arch": arch,
        "loss_type": loss_type,
        "dataset": {"name": getattr(dataset, "name", None), "manifest_sha256": digest, "num_groups": dataset.num_groups},
        **{k: getattr(cfg, k) for k in ("global_batch_size", "epochs", "eval_interval", "lr", "lr_min_ratio", "lr_warmup_steps", "beta1",
                                        "beta2", "weight_decay", "puzzle_emb_lr", "puzzle_emb_weight_decay", "seed")},
    }


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


def _reduce_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum over ranks. (The official reduces to rank 0; all-reduce lets every rank see a non-finite loss and stop together.)"""
    if d.enabled:
        dist.all_reduce(values)
    return values


@torch.inference_mode()
def evaluate(model: HRM, dataset: Any, *, batch_size: int, device: torch.device, eval_size: int | None = None, d: Dist | None = None) -> dict[str, float]:
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
                batch["labels"] = torch.where(mask[:, None], batch["labels"], IGNORE_LABEL_ID)
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


def _wandb_init(cfg: TrainConfig, output_dir: Path | None, run_id: str | None, config: dict[str, Any]):
    if cfg.wandb_mode == "disabled":
        return None
    import wandb

    kwargs = dict(
        project=cfg.project_name or "hrm-sudoku",
        name=cfg.run_name,
        config=config,
        mode=cfg.wandb_mode,
        id=run_id,
        resume="allow" if run_id else None,
    )
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(output_dir)
    try:
        kwargs["settings"] = wandb.Settings(x_disable_stats=True, silent=True)
    except Exception:  # noqa: BLE001 - older/newer wandb without these settings
        pass
    return wandb.init(**kwargs)


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


def train(
    cfg: TrainConfig,
    *,
    dataset: Any | None = None,
    eval_dataset: Any | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or continue training) per ``cfg``; see the module docstring.

    ``dataset`` / ``eval_dataset``: loaders with the :class:`hrm.data.PuzzleDataset` API
    (default: the train and test splits of ``cfg.data_path``).
    ``callback(step, metrics)``: called on every rank after every optimiser step with
    that step's train metrics (rank 0; {} elsewhere); raising KeyboardInterrupt in it
    stops the run like Ctrl-C (the state is saved in a single process).
    """
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = resolve_device(cfg.device)
    d = _init_distributed(device.type)
    if device.type == "cuda" and d.enabled:
        device = torch.device("cuda", d.local_rank)
    say = (log or (lambda s: print(s, file=sys.stderr))) if d.rank == 0 else (lambda s: None)
    try:
        return _train(cfg, device, d, dataset, eval_dataset, callback, say)
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, device, d: Dist, dataset, eval_dataset, callback, say) -> TrainResult:  # noqa: C901 - the loop reads best in one piece
    if dataset is None or eval_dataset is None:
        from hrm.data import PuzzleDataset

        if dataset is None:
            dataset = PuzzleDataset(cfg.data_path, "train")
        if eval_dataset is None:
            eval_dataset = PuzzleDataset(cfg.data_path, "test")

    epb = cfg.epochs_per_block
    total_blocks = cfg.epochs // epb
    steps_per_block = dataset.steps_per_block(cfg.global_batch_size, epb)
    total_steps = steps_per_block * total_blocks
    if steps_per_block < 1:
        raise TrainError(
            f"{dataset.num_groups} groups x {epb} epochs per block is less than one global batch of {cfg.global_batch_size}: "
            "raise eval_interval (epochs per block) or lower global_batch_size"
        )
    local_batch = cfg.global_batch_size // d.world_size

    # Model: seeded per rank as the official (seed + rank), then rank 0's weights broadcast.
    torch.random.manual_seed(cfg.seed + d.rank)
    model_config, loss_type = build_model_config(cfg, dataset, d.world_size, device)
    with torch.device(device):
        model = HRM(model_config, loss_type=loss_type)
    if d.enabled:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t, src=0)
    # Official order: the puzzle embedding's sign-SGD, then AdamATan2 (both lr set every step).
    optimizers: list[torch.optim.Optimizer] = []
    base_lrs: list[float] = []
    if model_config.puzzle_emb_ndim > 0:
        optimizers.append(SparseEmbeddingSignSGD(model.puzzle_emb.buffers(), lr=0.0, weight_decay=cfg.puzzle_emb_weight_decay,
                                                 world_size=d.world_size))
        base_lrs.append(cfg.puzzle_emb_lr)
    optimizers.append(AdamATan2(model.parameters(), lr=0.0, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)))
    base_lrs.append(cfg.lr)
    params = list(model.parameters())
    forward = torch.compile(model, dynamic=False) if cfg.compile else model

    ckpt_dir = cfg.checkpoint_dir
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    key = _resume_key(cfg, model_config, loss_type, dataset)
    writer = MetricsWriter(out_dir if d.rank == 0 else None)

    # ---- resume or start over
    step, block, step_in_block = 0, 0, 0
    carry: Carry | None = None
    history: dict[str, Any] = {"block_sums": {}, "block_steps": 0, "last_lr": 0.0, "last_eval": {}, "wandb_id": None, "elapsed": 0.0,
                               "last_checkpoint": None}
    state_path = ckpt_dir / STATE_NAME if ckpt_dir else None
    state = None
    if state_path is not None and state_path.is_file() and cfg.resume:
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable state means starting over, not a crash
            say(f"{state_path}: cannot read the saved training state ({type(e).__name__}: {e}); starting over")
            state = {}
        if not state:
            state = None
        elif state.get("format") != STATE_FORMAT or state.get("key") != key:
            diff = _diff_keys(state.get("key") or {}, key) if state.get("format") == STATE_FORMAT else ["format"]
            say(f"{state_path}: saved run has different settings ({', '.join(diff) or '?'}); starting over")
            state = None
        elif state.get("step", 0) >= total_steps:
            # Asked to train again after a finished run (`dvc repro -f`, or code that changed):
            # train, rather than hand back the old weights.
            say(f"{state_path}: the saved run is complete ({state['step']}/{total_steps} steps); starting over")
            state = None
    if state is not None:
        model.load_state_dict(state["model"])
        for opt, sd in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        step, block, step_in_block = state["step"], state["block"], state["step_in_block"]
        carry = _carry_from_dict(state["carry"], d.rank, local_batch, device)
        rngs = state["rng"]
        if d.rank < len(rngs) and state.get("world_size") == d.world_size:
            _set_rng_state(rngs[d.rank], device)
        else:
            warnings.warn(f"resuming with {d.world_size} processes from a state saved by {state.get('world_size')}: exploration RNG reseeded")
            torch.random.manual_seed(cfg.seed + d.rank + 1_000_003 * step)
        history.update(state["history"])
        say(f"resuming from {state_path} at step {step}/{total_steps} (block {block}, step {step_in_block} in block)")
        writer.restore(state.get("plot_rows"), keep_until_step=step)
    else:
        if d.rank == 0 and ckpt_dir is not None and ckpt_dir.exists():
            for _, f in step_files(ckpt_dir):
                f.unlink()
            for name in (STATE_NAME, "all_config.yaml"):
                (ckpt_dir / name).unlink(missing_ok=True)
        writer.reset(keep_until_step=None)
    del state
    if d.enabled:
        dist.barrier()  # every rank has decided (and rank 0 has cleaned up) before anything is written

    run_config = {**official_config(cfg, model), "arch": model.arch_dict(), "world_size": d.world_size, "total_steps": total_steps}
    run = _wandb_init(cfg, out_dir, history.get("wandb_id"), run_config) if d.rank == 0 else None
    if run is not None:
        history["wandb_id"] = run.id
        if step == 0:
            run.log({"num_params": sum(p.numel() for p in params)}, step=0)

    n_params = sum(p.numel() for p in params)
    say(
        f"training {n_params:,} parameters on {device} ({model_config.forward_dtype}, {d.world_size} process(es)): "
        f"{cfg.epochs} epochs of {dataset.num_groups} groups = {total_steps} steps of {cfg.global_batch_size} "
        f"in {total_blocks} block(s) of {steps_per_block}"
    )

    bar = None
    if d.rank == 0 and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, smoothing=0.05, desc="train", file=sys.stderr)
    last_ckpt: Path | None = Path(history["last_checkpoint"]) if history.get("last_checkpoint") else None
    t_start = time.perf_counter() - float(history.get("elapsed", 0.0))
    interrupted = False

    def save_state(next_block: int, next_step_in_block: int) -> None:
        """Gather carry + RNG of every rank; rank 0 writes train_state.pt atomically."""
        carries = _all_gather_object(_carry_to_dict(carry), d)
        rngs = _all_gather_object(_rng_state(device), d)
        if d.rank != 0 or state_path is None:
            return
        history["elapsed"] = time.perf_counter() - t_start
        history["last_checkpoint"] = str(last_ckpt) if last_ckpt else None
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "key": key,
                "step": step,
                "block": next_block,
                "step_in_block": next_step_in_block,
                "total_steps": total_steps,
                "world_size": d.world_size,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizers": [opt.state_dict() for opt in optimizers],
                "carry": _concat_carries(carries),
                "rng": rngs,
                "history": history,
                "plot_rows": writer.rows,
            },
            state_path,
        )

    def summary() -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": total_steps,
            "epochs_done": round(cfg.epochs * step / max(1, total_steps), 6),
            "train": {k: _fmt(v) for k, v in _block_train_metrics(history, cfg.global_batch_size).items()},
            "eval": {k.split("/", 1)[1]: _fmt(v) for k, v in history["last_eval"].items()},
            "train_seconds": round(time.perf_counter() - t_start, 1),
        }

    try:
        with _StopFlag() as flag:
            while block < total_blocks:
                forward.train()
                batches: Iterator[Mapping[str, Any]] = dataset.train_batches(
                    global_batch_size=cfg.global_batch_size, seed=cfg.seed, block=block, epochs_per_block=epb,
                    start_step=step_in_block, rank=d.rank, world_size=d.world_size,
                )
                for raw in batches:
                    batch = _to_device(raw, device)
                    step += 1
                    step_in_block += 1
                    if carry is None:
                        carry = model.initial_carry(batch)
                    carry, loss, metrics, _, _ = forward(carry, batch)
                    ((1.0 / cfg.global_batch_size) * loss).backward()
                    if d.enabled:
                        _all_reduce_grads(params)
                    lr_now = 0.0
                    for opt, base_lr in zip(optimizers, base_lrs):
                        lr_now = cosine_schedule_lr(step, base_lr=base_lr, warmup_steps=round(cfg.lr_warmup_steps),
                                                    total_steps=total_steps, min_ratio=cfg.lr_min_ratio)
                        for group in opt.param_groups:
                            group["lr"] = lr_now
                        opt.step()
                        opt.zero_grad()

                    # Metrics: sums over halted rows, reduced to rank 0, then divided as the official.
                    keys = sorted(metrics)
                    # The last entry counts the ranks asked to stop: all ranks leave after the same step.
                    values = _reduce_sum(torch.stack([*(metrics[k].detach().to(torch.float64) for k in keys),
                                                      torch.tensor(float(flag.requested), dtype=torch.float64, device=device)]), d)
                    stop_agreed = values[-1].item() > 0
                    values = values[:-1]
                    if not math.isfinite(values[keys.index("lm_loss")].item()):
                        raise FloatingPointError(f"step {step}: training loss is not finite")
                    reduced: dict[str, float] = {}
                    if d.rank == 0:
                        vals = dict(zip(keys, values.cpu().tolist()))
                        sums = history["block_sums"]
                        for k, v in vals.items():
                            sums[k] = sums.get(k, 0.0) + v
                        history["block_steps"] += 1
                        history["last_lr"] = lr_now
                        count = max(vals.pop("count"), 1.0)
                        reduced = {f"train/{k}": v / (cfg.global_batch_size if k.endswith("loss") else count) for k, v in vals.items()}
                        reduced["train/lr"] = lr_now
                        writer.append("train", step, reduced)
                        if run is not None:
                            run.log(reduced, step=step)
                        if bar is not None:
                            bar.update(step - bar.n)
                            if step % 10 == 0 or step == total_steps:
                                bar.set_postfix(loss=f"{reduced['train/lm_loss']:.3f}", acc=f"{reduced['train/accuracy']:.3f}",
                                                exact=f"{reduced['train/exact_accuracy']:.3f}", lr=f"{lr_now:.2e}", refresh=False)
                    if callback is not None:
                        try:
                            callback(step, reduced)
                        except KeyboardInterrupt:
                            flag.requested = True
                    # One process stops at once; ranks stop at the step whose reduce carried a request
                    # (one raised in the callback is seen by the others at the next step).
                    if stop_agreed or (flag.requested and not d.enabled):
                        interrupted = True
                        break
                if interrupted:
                    save_state(block, step_in_block)
                    say(f"stopped at step {step}/{total_steps}; state saved to {state_path} (run the same command to continue)")
                    break

                # ---- end of block: evaluate, checkpoint, save the resumable state
                eval_metrics = evaluate(model, eval_dataset, batch_size=local_batch, device=device, eval_size=cfg.eval_size, d=d)
                if d.rank == 0:
                    history["last_eval"] = eval_metrics
                    writer.append("eval", step, eval_metrics)
                    if run is not None:
                        run.log(eval_metrics, step=step)
                    msg = " ".join(f"{k.split('/', 1)[1]}={v:.4g}" for k, v in eval_metrics.items() if k != "eval/count")
                    (bar.write if bar is not None else say)(f"step {step}/{total_steps} eval ({int(eval_metrics.get('eval/count', 0))} puzzles): {msg}")
                last_block = block == total_blocks - 1
                if d.rank == 0 and ckpt_dir is not None and (cfg.checkpoint_every_eval or last_block):
                    t0 = time.perf_counter()
                    last_ckpt = save_checkpoint(model, ckpt_dir / f"step_{step}", extra_config=official_config(cfg, model))
                    if cfg.keep_checkpoints:
                        for _, f in step_files(ckpt_dir)[: -cfg.keep_checkpoints]:
                            f.unlink()
                    (bar.write if bar is not None else say)(
                        f"saved {last_ckpt} ({last_ckpt.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f} s)"
                    )
                block += 1
                step_in_block = 0
                if not last_block:
                    history["block_sums"], history["block_steps"] = {}, 0
                save_state(block, 0)
                writer.flush()
                if d.rank == 0:
                    writer.write_summary(summary())
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        if run is not None:
            if interrupted:
                run.summary["interrupted"] = True
            run.finish()

    if d.rank == 0 and not interrupted:
        writer.write_summary(summary())
        say(f"done: {step} steps in {time.perf_counter() - t_start:.0f} s" + (f"; last checkpoint {last_ckpt}" if last_ckpt else ""))
    return TrainResult(model=model, step=step, total_steps=total_steps, metrics=summary() if d.rank == 0 else {}, checkpoint=last_ckpt,
                       interrupted=interrupted)
