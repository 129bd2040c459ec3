"""Solver benchmark: puzzles/s on hard20 and on generated puzzles, and rating agreement.

Run: ``python benchmarks/solver.py``. Single-threaded (NUMBA_NUM_THREADS=1; the solver
has no parallel loops anyway). Every timing comes after a JIT warm-up call. The real
puzzles are read from tests/data/real-sudoku (shipped with the tests), or from the
directory named by HRM_REAL_SUDOKU.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.generate import generate_puzzles
from hrm.solver import SEVERAL, solve
from hrm.sudoku import strings_to_grids

TDOKU_HARD20_PER_S = 12_450  # tdoku's reference figure on the same 20 puzzles


def real_sudoku_dir() -> Path:
    return Path(os.environ.get("HRM_REAL_SUDOKU", REPO / "tests" / "data" / "real-sudoku"))


def puzzles_per_second(grids: np.ndarray, min_seconds: float = 2.0) -> float:
    """Solve (limit SEVERAL: solution, count and rating) the batch repeatedly for >= min_seconds."""
    solve(grids[:1], SEVERAL)  # JIT warm-up (or cache load)
    solved, start = 0, time.perf_counter()
    while True:
        solve(grids, SEVERAL)
        solved += len(grids)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return solved / elapsed


def main() -> None:
    from scipy.stats import spearmanr

    with open(real_sudoku_dir() / "valid.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    questions = strings_to_grids([r["question"] for r in rows])
    answers = strings_to_grids([r["answer"] for r in rows])
    tdoku = np.array([int(r["rating"]) for r in rows])
    hard20 = questions[[r["source"] == "hard20" for r in rows]]

    result = solve(questions)
    assert (result.solution == answers).all() and (result.num_solutions == 1).all()
    rho = spearmanr(result.rating, tdoku).statistic
    exact = int((result.rating == tdoku).sum())

    rate_hard = puzzles_per_second(hard20)
    start = time.perf_counter()
    generated = generate_puzzles(10_000, seed=0).questions
    gen_seconds = time.perf_counter() - start
    rate_gen = puzzles_per_second(generated)

    print(
        f"hard20 ({len(hard20)} puzzles, repeated): {rate_hard:,.0f} puzzles/s "
        f"(tdoku {TDOKU_HARD20_PER_S:,}/s; ratio {rate_hard / TDOKU_HARD20_PER_S:.3f})"
    )
    print(
        f"generated (10,000 puzzles, seed 0): {rate_gen:,.0f} puzzles/s "
        f"(generating them took {gen_seconds:.1f} s including any JIT compile)"
    )
    print(
        f"rating vs tdoku on valid.csv ({len(rows)} puzzles): Spearman {rho:.3f}, "
        f"identical on {exact}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
