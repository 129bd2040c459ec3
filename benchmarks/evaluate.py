"""Augmented-HRM evaluation throughput: the batched engine vs the paper's loop, same process.

    python benchmarks/evaluate.py                      # P = 9 shifts, K = 3 tiny checkpoints, CPU
    python benchmarks/evaluate.py --puzzles 64 --batch-size 32 --threads 2 --max-rows 64
    python benchmarks/evaluate.py --threads 2 --hidden 128 --expansion 4 --steps 8 --checkpoints 2 --puzzles 16  # quick
    python benchmarks/evaluate.py --threads 2 --hidden 512 --layers 4 --heads 8 --expansion 4 --steps 2 \
        --checkpoints 1 --permutations 2 --puzzles 16 --skip-official --no-early-exit --no-cost  # paper architecture

Three ways to get the same K x P passes over the same puzzles:

- ``loop_official``: the fork's structure (its batch_inference.py; the fork = the Augmented HRM paper's code, README "Reference code"):
  for every batch of B puzzles,
  for every checkpoint, for every shift, one batch of B through the ACT model + loss head
  (``model(carry, batch)``) halt_max_steps times, keeping every step's predictions;
- ``loop_predict``: the same loop, each batch through ``HRM.predict`` (no loss head);
- ``engine``: :class:`hrm.evaluate.Engine` through :func:`hrm.evaluate.evaluate_puzzles`:
  each checkpoint sees the P shifted copies of the B puzzles as one batch of P x B rows
  (``--max-rows`` caps the rows per forward), plus everything the report needs (per-segment
  correctness, verifier, label-free selection for every k' x p' subset, calibration).

Then (issue 18) the early exit: the engine with ``early_stop`` (continuous batching: a halted row
leaves the batch and a waiting one takes its place) against the all-segments engine, on the same
puzzles: the segments each ran, their ratio, and the speed ratio, with the target speed ratio
>= 0.9 x the segment ratio. And the cost of the paper's full evaluation (K = 10 checkpoints,
P = 9 shifts, 422,786 test puzzles, 16 segments) on this device, from the measured throughput of
the paper's architecture (hidden 512, 4 + 4 layers, 2 x 2 cycles), for the paper's procedure and
for an early exit at the halting rate measured here (``--halt-fraction`` to set another).

Prints puzzles/s and achieved GFLOP/s (matmul and attention FLOPs of the passes) for each,
the rate of the model's widest matmul alone (how far batching could at best go on this
device), the ratio engine / loop, and checks that the decisions are
identical: every pass's final answer and halting flag, and the paper_vote outcome per puzzle.
Puzzles: ``tests/data/real-sudoku/valid.csv`` (env HRM_REAL_SUDOKU), repeated as needed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm.evaluate.engine import Engine, auto_max_rows, segment_flops  # noqa: E402
from hrm.evaluate.perturbations import Perturbations  # noqa: E402
from hrm.evaluate.run import evaluate_puzzles  # noqa: E402
from hrm.evaluate.selection import paper_vote  # noqa: E402
from hrm.tasks import SUDOKU, make_perturbations  # noqa: E402
from hrm.model import HRM, HRMConfig  # noqa: E402
from hrm.model.layers import swiglu_width  # noqa: E402
from hrm.sudoku import grids_to_tokens, strings_to_grids  # noqa: E402

REAL = Path(os.environ.get("HRM_REAL_SUDOKU", Path(__file__).resolve().parents[1] / "tests" / "data" / "real-sudoku"))


def tiny_models(k: int, hidden: int, layers: int, cycles: int, steps: int, device: str = "cpu", expansion: float = 2,
                heads: int = 4) -> list[HRM]:
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        cfg = HRMConfig(batch_size=8, puzzle_emb_ndim=hidden, H_layers=layers, L_layers=layers, H_cycles=cycles,
                        L_cycles=cycles, hidden_size=hidden, expansion=expansion, num_heads=heads, halt_max_steps=steps,
                        forward_dtype="float32")
        m = HRM(cfg)
        with torch.no_grad():  # make the Q head (and so the halting flags) matter
            m.inner.q_head.weight.normal_(0, 0.3)
            m.inner.q_head.bias.zero_()
        models.append(m.to(device).eval())
    return models


def flops_per_pass(model: HRM) -> float:
    """Multiply-add FLOPs of one pass (halt_max_steps segments, one row): what no batching can avoid."""
    return model.config.halt_max_steps * segment_flops(model)


def matmul_ceiling(model: HRM, rows: int, repeats: int = 20) -> float:
    """GFLOP/s of the model's widest matmul (SwiGLU gate/up) alone on this device: a practical ceiling."""
    c = model.config
    inter = swiglu_width(c.hidden_size, c.expansion)
    x = torch.randn(rows * (c.seq_len + model.inner.puzzle_emb_len), c.hidden_size, device=model.device)
    w = torch.randn(2 * inter, c.hidden_size, device=model.device)
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * x.shape[0] * x.shape[1] * w.shape[0] / best / 1e9


def puzzles(n: int) -> tuple[np.ndarray, np.ndarray]:
    df = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    reps = -(-n // df.height)
    q = grids_to_tokens(strings_to_grids(df["question"].to_list() * reps))[:n]
    a = grids_to_tokens(strings_to_grids(df["answer"].to_list() * reps))[:n]
    return q, a.astype(np.int16)


def loop(models, inputs, labels, pert: Perturbations, batch: int, official: bool):
    """The paper's structure: batch x checkpoint x shift, one forward batch of B each."""
    k_count, p_count, n = len(models), len(pert), inputs.shape[0]
    preds = np.zeros((k_count, p_count, n, 81), np.uint8)
    halted = np.zeros((k_count, p_count, n), bool)
    correct = np.zeros((k_count, p_count, n), bool)
    for start in range(0, n, batch):
        x = pert.apply(inputs[start:start + batch])
        y = pert.apply(labels[start:start + batch])
        b = x.shape[1]
        for k, model in enumerate(models):
            for p in range(p_count):
                xb = torch.as_tensor(x[p], dtype=torch.int32, device=model.device)
                if official:
                    batch_t = {"inputs": xb, "labels": torch.as_tensor(y[p], dtype=torch.int32, device=model.device),
                               "puzzle_identifiers": torch.zeros(b, dtype=torch.int32, device=model.device)}
                    with torch.inference_mode():
                        carry = model.initial_carry(batch_t)
                        steps = []
                        while True:
                            carry, _loss, _metrics, outputs, all_halted = model(
                                carry, batch_t, return_keys=("logits", "q_halt_logits", "q_continue_logits"))
                            steps.append(outputs["logits"].argmax(-1))
                            if all_halted:
                                break
                    pred = steps[-1]
                    halt = outputs["q_halt_logits"] > outputs["q_continue_logits"]
                else:
                    out = model.predict(xb)
                    pred, halt = out.predictions, out.halted
                pred, halt = pred.cpu().numpy(), halt.cpu().numpy()
                preds[k, p, start:start + b] = pred
                halted[k, p, start:start + b] = halt
                correct[k, p, start:start + b] = (pred == y[p]).all(-1)
    return preds, halted, paper_vote(correct, halted)


@click.command()
@click.option("--puzzles", "n", default=32, show_default=True, help="Puzzles evaluated.")
@click.option("--batch-size", default=16, show_default=True, help="Puzzles per batch (both methods).")
@click.option("--permutations", default=9, show_default=True)
@click.option("--checkpoints", default=3, show_default=True)
@click.option("--hidden", default=32, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--cycles", default=2, show_default=True)
@click.option("--steps", default=4, show_default=True, help="halt_max_steps.")
@click.option("--expansion", default=2.0, show_default=True, help="SwiGLU expansion (the quick profile: 4).")
@click.option("--heads", default=4, show_default=True, help="Attention heads.")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--max-rows", default=0, show_default=True,
              help="Engine rows per forward (0: auto as `hrm evaluate`, 32 on CPU; -1: all P x B).")
@click.option("--repeats", default=3, show_default=True, help="Alternating timed runs per method; the best counts.")
@click.option("--skip-official", is_flag=True, help="Do not time the ACT + loss head loop.")
@click.option("--compile/--no-compile", "compile_", default=True, show_default=True,
              help="Also time the engine with torch.compile (compilation time reported apart).")
@click.option("--early-exit/--no-early-exit", default=True, show_default=True,
              help="Also time the engine with early_stop (continuous batching) against all segments.")
@click.option("--cost/--no-cost", default=True, show_default=True,
              help="Also measure the paper's architecture and print the cost of the paper's full evaluation.")
@click.option("--cost-passes", default=8, show_default=True, help="Passes of the paper's architecture timed.")
@click.option("--halt-fraction", type=float, default=None,
              help="Segments an early exit runs, as a fraction of all (default: the fraction measured here).")
def main(n, batch_size, permutations, checkpoints, hidden, layers, cycles, steps, expansion, heads, threads, device, max_rows, repeats,
         skip_official, compile_, early_exit, cost, cost_passes, halt_fraction):
    torch.set_num_threads(threads)
    models = tiny_models(checkpoints, hidden, layers, cycles, steps, device, expansion, heads)
    max_rows = None if max_rows < 0 else (max_rows or auto_max_rows(device) or None)
    q, a = puzzles(n)
    pert = make_perturbations("shift", permutations)
    print(f"{n} puzzles, P={permutations} shifts, K={checkpoints} checkpoints (hidden {hidden}, {layers}+{layers} layers, "
          f"cycles {cycles}, {steps} segments, expansion {expansion:g}, {heads} heads), batch {batch_size} puzzles, {device}, {threads} CPU thread(s), "
          f"engine rows per forward {max_rows or permutations * batch_size}")
    # Warm-up (allocator, kernels) on a few puzzles, not timed.
    evaluate_puzzles(Engine(models, max_rows=max_rows), q[:2], a[:2], perturbations=pert, batch_size=2, rules=SUDOKU.rules)
    loop(models, q[:2], a[:2], pert, 2, official=False)

    engine = Engine(models, max_rows=max_rows)
    methods = {
        "engine": lambda: evaluate_puzzles(engine, q, a, perturbations=pert, batch_size=batch_size, rules=SUDOKU.rules),
        "loop_predict": lambda: loop(models, q, a, pert, batch_size, official=False),
    }
    if not skip_official:
        methods["loop_official"] = lambda: loop(models, q, a, pert, batch_size, official=True)
    if compile_:
        engine_c = Engine(models, max_rows=max_rows, compile=True)
        t = time.perf_counter()
        evaluate_puzzles(engine_c, q[:batch_size], a[:batch_size], perturbations=pert, batch_size=batch_size, rules=SUDOKU.rules)  # compiles
        compile_s = time.perf_counter() - t
        methods["engine_compiled"] = lambda: evaluate_puzzles(engine_c, q, a, perturbations=pert, batch_size=batch_size, rules=SUDOKU.rules)
    # The machine may be shared: alternate the methods and keep each one's best time.
    timings: dict[str, float] = {}
    results = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            results[name] = fn()
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t)
    res = results["engine"]
    preds_l, halted_l, vote_l = results["loop_predict"]
    if not skip_official:
        preds_o, halted_o, vote_o = results["loop_official"]
    if compile_:
        res_c = results["engine_compiled"]

    passes = n * permutations * checkpoints
    flops = flops_per_pass(models[0]) * passes
    for name, s in timings.items():
        print(f"{name:15s} {s:8.2f} s  {n / s:8.2f} puzzles/s  ({passes / s:8.1f} passes/s, {flops / s / 1e9:6.1f} GFLOP/s)")
    ceiling = max(matmul_ceiling(models[0], r) for r in {max_rows or 32, 4 * (max_rows or 32), permutations * batch_size})
    print(f"ceiling: the model's widest matmul alone runs at {ceiling:.1f} GFLOP/s (best of 3 row counts); "
          f"{flops / 1e9:.1f} GFLOP in all would take {flops / 1e9 / ceiling:.2f} s if every op ran that fast "
          f"(loop_predict / that = {timings['loop_predict'] * ceiling * 1e9 / flops:.2f}x: a loose bound on any batching)")
    print("fraction of that rate reached: " + ", ".join(f"{name} {flops / s / 1e9 / ceiling:.0%}" for name, s in timings.items())
          + " (issue 18's targets: >= 50% for the tiny and quick models, >= 90% at the paper's)")
    for fast in [k for k in timings if k.startswith("engine")]:
        for name in [k for k in timings if k.startswith("loop")]:
            print(f"ratio {fast} / {name}: {timings[name] / timings[fast]:.2f}x")
    if compile_:
        print(f"(engine_compiled: one-off compilation {compile_s:.1f} s, not included)")

    # Decisions: re-run the engine's raw passes to compare answers and halting flags pass by pass.
    eng = engine
    same_pred, same_halt = True, True
    for start in range(0, n, batch_size):
        x = pert.apply(q[start:start + batch_size])
        b = x.shape[1]
        out = eng.run(x.reshape(-1, 81))
        same_pred &= bool((out.predictions.reshape(checkpoints, permutations, b, 81) == preds_l[:, :, start:start + b]).all())
        same_halt &= bool((out.halted.reshape(checkpoints, permutations, b) == halted_l[:, :, start:start + b]).all())
    same_vote = bool((res.paper_vote() == vote_l).all())
    same_official = skip_official or bool((preds_o == preds_l).all() and (halted_o == halted_l).all() and (vote_o == vote_l).all())
    if compile_:
        diff_c = int((res_c.correct != res.correct).sum() + (res_c.halted != res.halted).sum())
        print(f"engine_compiled vs engine: {diff_c} differing pass outcomes (correct/halted) of "
              f"{2 * res.correct.size}; paper_vote identical {bool((res_c.paper_vote() == res.paper_vote()).all())}, "
              f"label_free identical {bool((res_c.label_free() == res.label_free()).all())}")
    print(f"identical decisions: answers {same_pred}, halting {same_halt}, paper_vote {same_vote}"
          + ("" if skip_official else f", official loop == predict loop {same_official}"))
    print(f"engine results: baseline {res.baseline().mean():.3f}, paper_vote {res.paper_vote().mean():.3f}, "
          f"label_free {res.label_free().mean():.3f}, verified_any {res.verified_any().mean():.3f}, "
          f"halt rate {res.halted.mean():.3f}")
    assert same_pred and same_halt and same_vote and same_official, "the engine and the loop disagree"

    fraction = None
    if early_exit:
        fraction = early_exit_figures(engine, q, a, pert, batch_size, repeats)
    if cost:
        cost_figures(device, max_rows, cost_passes, halt_fraction if halt_fraction is not None else fraction)


def early_exit_figures(engine, q, a, pert, batch_size, repeats) -> float:
    """All segments vs early stop on the same puzzles, alternated, best of ``repeats``; returns the
    fraction of the segments the early exit ran."""
    runs = {"all_segments": False, "early_exit": True}
    best, results = {}, {}
    for _ in range(repeats):
        for name, early in runs.items():
            t = time.perf_counter()
            results[name] = evaluate_puzzles(engine, q, a, perturbations=pert, batch_size=batch_size,
                                                early_stop=early, rules=SUDOKU.rules)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    work = results["early_exit"].summary()["work"]
    ran = 1.0 - work["saved_fraction"]
    n = q.shape[0]
    speed = best["all_segments"] / best["early_exit"]
    print(f"early exit: {n / best['early_exit']:.2f} puzzles/s vs all segments {n / best['all_segments']:.2f} "
          f"puzzles/s: {speed:.2f}x; it ran {work['segments_run']:,} of {work['segments_of_all_segment_passes']:,} "
          f"row-segments ({ran:.3f}; halt rate {results['early_exit'].halted.mean():.3f}), so the ideal is "
          f"{1 / ran:.2f}x; speed / ideal = {speed * ran:.2f} (target >= 0.9)")
    same = bool((results["early_exit"].es_correct == results["all_segments"].es_correct).all())
    print(f"early exit answers == the all-segments run read at each pass's first halt: {same}")
    return ran


PAPER = dict(hidden=512, layers=4, cycles=2, steps=16, heads=8, expansion=4)
PAPER_EVAL = dict(checkpoints=10, passes=9, puzzles=422_786)


def cost_figures(device: str, max_rows, passes: int, halt_fraction: float | None) -> None:
    """Measured passes/s of the paper's architecture -> the cost of the paper's full evaluation here."""
    torch.manual_seed(0)
    cfg = HRMConfig(batch_size=8, puzzle_emb_ndim=PAPER["hidden"], H_layers=PAPER["layers"], L_layers=PAPER["layers"],
                    H_cycles=PAPER["cycles"], L_cycles=PAPER["cycles"], hidden_size=PAPER["hidden"],
                    expansion=PAPER["expansion"], num_heads=PAPER["heads"], halt_max_steps=PAPER["steps"],
                    forward_dtype="bfloat16" if device == "cuda" else "float32")
    model = HRM(cfg).to(device).eval()
    engine = Engine([model], max_rows=max_rows)
    q, a = puzzles(passes)
    engine.run(q[:1], a[:1])  # warm-up
    t = time.perf_counter()
    engine.run(q, a)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    rate = passes / seconds
    flops = flops_per_pass(model)
    total = PAPER_EVAL["checkpoints"] * PAPER_EVAL["passes"] * PAPER_EVAL["puzzles"]
    hours = total / rate / 3600
    print(f"paper architecture on {device} ({cfg.forward_dtype}): {rate:.3f} passes/s ({flops / 1e9:.0f} GFLOP per "
          f"pass of {PAPER['steps']} segments, {rate * flops / 1e9:.1f} GFLOP/s) over {passes} passes")
    print(f"cost of the paper's full evaluation (K={PAPER_EVAL['checkpoints']}, P={PAPER_EVAL['passes']}, "
          f"{PAPER_EVAL['puzzles']:,} puzzles = {total:,} passes, {total * flops / 1e18:.1f} EFLOP): "
          f"{hours:,.1f} device-hours here for the paper's procedure (every segment)")
    if halt_fraction is not None:
        print(f"  with early exit at {halt_fraction:.3f} of the segments (the halting rate measured above; "
              f"--halt-fraction to set another): {hours * halt_fraction:,.1f} device-hours if the saved "
              "segments turn into speed fully")


if __name__ == "__main__":
    main()
