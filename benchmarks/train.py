"""Benchmark: training throughput on the CPU, and (optionally) easy-tier accuracy of a trained model.

    python benchmarks/train.py [--threads 2] [--seconds 15] [--only quick|paper]
    python benchmarks/train.py --task maze --only quick --dtypes float32   # seq_len 900, vocab 6
    python benchmarks/train.py --easy-tiers CHECKPOINT --dataset DIR [--n 500]

Throughput: examples/s of one training ACT segment, forward + backward, as the official
trainer runs it: the inner segment (H_cycles x L_cycles updates, 1-step gradient), the
extra no-grad segment that gives the Q-learning target, the loss and its backward
(``--with-optimizer`` adds the optimiser steps, as in a full training step). Random
Sudoku-like batches (``--task maze``: generated mazes, seq_len 900, vocab 6), weights as
initialised, ``torch.set_num_threads(--threads)``.

Configs: "quick" = the quick CPU profile's model (hrm.train.QUICK_ARCH) at batch 64,
"paper" = the paper model (hidden 512, 4+4 layers, 16 halt steps) at batch 32; each in
float32 and bfloat16.
Reference on this machine (official code with SDPA, 2 threads, one segment fwd+bwd):
paper float32 batch 32: 3.3 ex/s; hidden 128, 2+2 layers, 8 halt steps, batch 64:
float32 52 ex/s, bfloat16 5.4 ex/s.

Easy tiers (``--easy-tiers``): the test puzzles of a shard directory with all but k cells
revealed from the answer (k drawn uniformly from each tier, cells seeded), solved by the
model with its evaluation semantics (halt_max_steps segments); prints blank-cell accuracy
(fraction of the k blanks right) and exact accuracy (whole grid right) per tier.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.model import HRM, HRMConfig, SparseEmbeddingSignSGD  # noqa: E402
from hrm.optim import AdamATan2  # noqa: E402
from hrm.train import PAPER_PROFILE, QUICK_ARCH  # noqa: E402

PAPER_ARCH = {key: PAPER_PROFILE[key] for key in QUICK_ARCH}  # the paper profile's architecture part

REFERENCE = {("quick", "float32"): 52.0, ("quick", "bfloat16"): 5.4, ("paper", "float32"): 3.3}


def random_batch(n: int, seed: int = 0, task: str = "sudoku") -> dict[str, torch.Tensor]:
    if task == "maze":  # real mazes (hrm.maze's generator): the rate does not depend on the tokens, but why guess
        from hrm.maze import generate_mazes

        m = generate_mazes(n, seed=seed)
        return {"inputs": torch.as_tensor(m.questions, dtype=torch.int32),
                "labels": torch.as_tensor(m.answers, dtype=torch.int32),
                "puzzle_identifiers": torch.zeros(n, dtype=torch.int32)}
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 11, (n, 81), generator=g, dtype=torch.int32)
    inputs = torch.where(torch.rand(n, 81, generator=g) < 0.4, labels, torch.ones_like(labels))
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(n, dtype=torch.int32)}


def throughput(arch: dict, batch_size: int, dtype: str, seconds: float, with_optimizer: bool,
               task: str = "sudoku") -> tuple[float, float, int]:
    """Examples/s of training segments: at the median segment time, at the fastest; and the number of segments timed."""
    from hrm.tasks import TASKS

    torch.manual_seed(0)
    cfg = {k: v for k, v in arch.items() if k != "loss_type"}
    t = TASKS[task]
    model = HRM(HRMConfig(**cfg, batch_size=batch_size, forward_dtype=dtype, seq_len=t.seq_len,
                          vocab_size=t.vocab_size)).train()
    opts = [SparseEmbeddingSignSGD(model.puzzle_emb.buffers(), lr=1e-4, weight_decay=0.1),
            AdamATan2(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))]
    batch = random_batch(batch_size, task=task)
    carry = model.initial_carry(batch)

    def step():
        nonlocal carry
        carry, loss, _, _, _ = model(carry, batch)
        (loss / batch_size).backward()
        for opt in opts:
            if with_optimizer:
                opt.step()
            opt.zero_grad()

    for _ in range(2):  # warm-up (allocator, first-call paths)
        step()
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch_size / float(np.median(times)), batch_size / min(times), len(times)


def matmul_gflops(seconds: float = 1.0) -> float:
    """Calibration: float32 GFLOP/s of a [5248 x 128] @ [128 x 1024] matmul (the quick profile's MLP shape) right now."""
    x, w = torch.randn(5248, 128), torch.randn(1024, 128)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x @ w.T
        n += 1
    return n * 2 * 5248 * 128 * 1024 / (time.perf_counter() - t0) / 1e9


# ----------------------------------------------------------------------------- easy tiers


def reveal_all_but(labels: np.ndarray, k_lo: int, k_hi: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with all but k cells of each solution revealed (k uniform in [k_lo, k_hi]); and the blank mask."""
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    k = rng.integers(k_lo, k_hi + 1, n)
    order = np.argsort(rng.random((n, 81)), axis=1)
    blank = np.zeros((n, 81), dtype=bool)
    rows = np.repeat(np.arange(n), k)
    cols = np.concatenate([order[i, : k[i]] for i in range(n)])
    blank[rows, cols] = True
    inputs = np.where(blank, 1, labels).astype(np.int32)
    return inputs, blank


def easy_tier_accuracy(model: HRM, labels: np.ndarray, tiers=((1, 5), (6, 10)), seed: int = 0, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Per tier "k_lo-k_hi": blank-cell accuracy and exact accuracy (model.predict: halt_max_steps segments)."""
    out = {}
    for lo, hi in tiers:
        inputs, blank = reveal_all_but(labels, lo, hi, seed + lo * 1000 + hi)
        preds = []
        for s in range(0, len(inputs), batch_size):
            preds.append(model.predict(torch.from_numpy(inputs[s : s + batch_size])).predictions.cpu().numpy())
        pred = np.concatenate(preds)
        right = pred == labels
        out[f"{lo}-{hi}"] = {
            "blank_accuracy": float(right[blank].mean()),
            "exact_accuracy": float(right.all(axis=1).mean()),
            "puzzles": int(len(labels)),
        }
    return out


def test_labels(dataset_dir: str, n: int | None) -> np.ndarray:
    from hrm.data import PuzzleDataset

    ds = PuzzleDataset(dataset_dir, "test", verify=False)
    rows = np.arange(ds.num_examples if n is None else min(n, ds.num_examples))
    return ds.gather(rows)["labels"].astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=15.0, help="timed seconds per config (after 2 warm-up steps)")
    ap.add_argument("--only", choices=["quick", "paper"], default=None)
    ap.add_argument("--task", choices=["sudoku", "maze"], default="sudoku", help="maze: seq_len 900, vocab 6")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--with-optimizer", action="store_true", help="include both optimiser steps (a full training step)")
    ap.add_argument("--easy-tiers", metavar="CHECKPOINT", help="evaluate this checkpoint (file or folder) on easy tiers instead")
    ap.add_argument("--dataset", help="shard directory whose test split gives the solutions (with --easy-tiers)")
    ap.add_argument("--n", type=int, default=500, help="test puzzles for --easy-tiers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.easy_tiers:
        import hrm

        if not args.dataset:
            ap.error("--easy-tiers needs --dataset")
        model = hrm.load_checkpoint(args.easy_tiers, device="cpu")
        t0 = time.perf_counter()
        res = easy_tier_accuracy(model, test_labels(args.dataset, args.n))
        for tier, r in res.items():
            print(f"k {tier:>5}: blank-cell accuracy {r['blank_accuracy']:.3f}, exact {r['exact_accuracy']:.3f} ({r['puzzles']} puzzles)")
        print(f"({time.perf_counter() - t0:.1f} s)")
        return

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.seconds:.0f} s per config, "
          f"{'full training step' if args.with_optimizer else 'one ACT segment fwd+bwd (incl. target-Q forward)'}")
    print("NOTE: on a shared machine the figures vary with its load; the matmul calibration shows the CPU available at the time.")
    configs = [("quick", QUICK_ARCH, 64), ("paper", PAPER_ARCH, 32)]
    for name, arch, bs in configs:
        if args.only and name != args.only:
            continue
        for dtype in args.dtypes.split(","):
            gflops = matmul_gflops()
            rate, best, n = throughput(arch, bs, dtype, args.seconds, args.with_optimizer, args.task)
            ref = REFERENCE.get((name, dtype)) if args.task == "sudoku" else None
            ref_s = f"  official reference {ref:g} ex/s: x{rate / ref:.2f} (best x{best / ref:.2f})" if ref else ""
            print(f"{args.task} {name:6s} hidden {arch['hidden_size']:4d} {arch['H_layers']}+{arch['L_layers']} layers batch {bs:3d} {dtype:9s}: "
                  f"{rate:7.1f} ex/s median, {best:7.1f} best ({n} segments; matmul calibration {gflops:.0f} GFLOP/s){ref_s}", flush=True)


if __name__ == "__main__":
    main()
