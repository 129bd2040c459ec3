"""Benchmark: our TRM (hrm/model/trm.py) against the reference code, side by side, on the same weights, config and
batch, on the CPU: the training step and the evaluation pass.

    python benchmarks/trm_step.py --reference /tmp/trm-ref --deps /tmp/trm-deps [--threads 2] [--rounds 12]
        [--only quick|paper]

The reference (SamsungSAILMontreal/TinyRecursiveModels, see tests/fixtures/README.md for the commit) is imported
from the tree given by ``--reference`` (its einops from ``--deps``), never from this repository. Both models are
built from one config; the reference loads our freshly initialised state dict (the keys are the same: the golden
fixtures check it), so both run the same numbers.

- Training step: one ACT call (one segment for every row, H_cycles - 1 cycles without gradient and one with),
  the loss, its backward (divided by the batch as the trainers do), zero_grad; the carry goes on from step to
  step as in training. Exploration is off, so both do the same work every step.
- Evaluation pass: a fresh carry and ACT calls until every row halted (halt_max_steps segments in eval mode),
  under inference_mode: the loop of the trainers' evaluation. Ours also through the evaluate stage's
  :class:`hrm.evaluate.engine.Engine` (the same segments, no loss).

The two run in turns, ``--rounds`` times each (after one warm-up call), so a busy machine slows both alike; the
figures are medians, with the ratio reference / ours (above 1: ours is faster).

Configs (Sudoku, 81 cells + a 16-position prefix): "quick" = the trm-quick profile's model (mlp_t, hidden 128,
2 blocks, H_cycles 2, L_cycles 3, 8 segments) at batch 64; "paper" = TRM's Sudoku run (mlp_t, hidden 512,
2 blocks, H_cycles 3, L_cycles 6, 16 segments) at batch 8 (the run's 768 is a GPU batch; on 2 CPU cores one
evaluation pass of 8 rows is minutes). The evaluate stage's Engine is timed on the quick config only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.model.trm import TRM, TRMConfig  # noqa: E402

COMMON = dict(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, mlp_t=True, pos_encodings="none", puzzle_emb_len=16,
              num_heads=8, expansion=4, H_layers=0, halt_exploration_prob=0.0, forward_dtype="float32")
CONFIGS = {
    "quick": (dict(COMMON, hidden_size=128, puzzle_emb_ndim=128, L_layers=2, H_cycles=2, L_cycles=3, halt_max_steps=8), 64),
    "paper": (dict(COMMON, hidden_size=512, puzzle_emb_ndim=512, L_layers=2, H_cycles=3, L_cycles=6, halt_max_steps=16), 8),
}


def import_reference(root: Path, deps: Path | None):
    """The reference's model and loss head, from its own tree (kept out of this repository)."""
    if deps is not None:
        sys.path.insert(0, str(deps))
    sys.path.insert(0, str(root))
    from models import losses  # noqa: PLC0415
    from models.recursive_reasoning import trm  # noqa: PLC0415

    return trm, losses


def build_pair(ref, arch: dict, batch_size: int):
    """(ours, the reference's) on the same weights."""
    torch.manual_seed(0)
    ours = TRM(TRMConfig(**arch, batch_size=batch_size))
    trm, losses = ref
    theirs = losses.ACTLossHead(trm.TinyRecursiveReasoningModel_ACTV1(dict(arch, batch_size=batch_size)),
                                loss_type="stablemax_cross_entropy")
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def sudoku_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 11, (n, 81), generator=g, dtype=torch.int32)
    inputs = torch.where(torch.rand(n, 81, generator=g) < 0.4, labels, torch.ones_like(labels))
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(n, dtype=torch.int32)}


def call(model, reference: bool, carry, batch):
    """One ACT call of either model: (carry, loss, all_halted)."""
    if reference:
        carry, loss, _, _, done = model(return_keys=[], carry=carry, batch=batch)
    else:
        carry, loss, _, _, done = model(carry, batch)
    return carry, loss, done


def train_stepper(model, reference: bool, batch):
    model.train()
    carry = model.initial_carry(batch)

    def step() -> None:
        nonlocal carry
        carry, loss, _ = call(model, reference, carry, batch)
        (loss / batch["inputs"].shape[0]).backward()
        model.zero_grad(set_to_none=True)
    return step


def eval_pass(model, reference: bool, batch):
    def run() -> None:
        model.eval()
        with torch.inference_mode():
            carry = model.initial_carry(batch)
            while True:
                carry, _, done = call(model, reference, carry, batch)
                if done:
                    break
    return run


def engine_pass(model, batch):
    from hrm.evaluate.engine import Engine

    engine = Engine([model])
    return lambda: engine.run(batch["inputs"].numpy())


def timed_in_turns(jobs: dict[str, callable], rounds: int, warm_up: bool = True) -> dict[str, float]:
    """Median seconds of each job, run in turns (one warm-up call each first, unless ``warm_up`` is false)."""
    for job in jobs.values() if warm_up else ():
        job()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def report(title: str, seconds: dict[str, float], rows: int) -> None:
    ours, theirs = seconds["ours"], seconds["reference"]
    print(f"  {title}: ours {ours * 1e3:8.1f} ms ({rows / ours:7.1f} rows/s), reference {theirs * 1e3:8.1f} ms "
          f"({rows / theirs:7.1f} rows/s): reference / ours = {theirs / ours:.2f}")
    for name in sorted(set(seconds) - {"ours", "reference"}):
        print(f"  {title}, {name}: {seconds[name] * 1e3:8.1f} ms ({rows / seconds[name]:7.1f} rows/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="a tree of the reference code")
    ap.add_argument("--deps", type=Path, default=None, help="a folder holding einops")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12, help="timed calls of each, in turns")
    ap.add_argument("--only", choices=sorted(CONFIGS), default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = import_reference(args.reference, args.deps)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, medians of {args.rounds} calls in turns")
    for name in [args.only] if args.only else list(CONFIGS):
        arch, batch_size = CONFIGS[name]
        ours, theirs = build_pair(ref, arch, batch_size)
        batch = sudoku_batch(batch_size)
        params = sum(p.numel() for p in ours.parameters())
        print(f"{name}: hidden {arch['hidden_size']}, H_cycles {arch['H_cycles']}, L_cycles {arch['L_cycles']}, "
              f"{arch['halt_max_steps']} segments, batch {batch_size}, {params:,} parameters")
        train = timed_in_turns({"ours": train_stepper(ours, False, batch), "reference": train_stepper(theirs, True, batch)},
                               args.rounds)
        report("training step (1 segment fwd+bwd)", train, batch_size)
        rounds = max(1, args.rounds // 4)  # a pass is halt_max_steps segments: fewer, and no warm-up (it is long)
        jobs = {"ours": eval_pass(ours, False, batch), "reference": eval_pass(theirs, True, batch)}
        if name == "quick":
            jobs["ours, evaluate stage's Engine"] = engine_pass(ours, batch)
        evals = timed_in_turns(jobs, rounds, warm_up=False)
        report(f"evaluation pass ({arch['halt_max_steps']} segments)", evals, batch_size)


if __name__ == "__main__":
    main()
