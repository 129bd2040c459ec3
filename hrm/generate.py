"""Built-in offline puzzle source: seeded random Sudoku puzzles with a unique solution.

Method, per puzzle (all inside one numba loop over the batch):
1. A random complete grid: boxes 1, 5 and 9 (the diagonal, which share no row or column)
   get independent random permutations of 1..9, and the solver completes the grid (any
   such start can be completed; the completion is the solver's first solution).
2. Givens are removed one at a time in a random order; a removal is kept only if the
   puzzle still has exactly one solution (no solution has another digit in that cell),
   until ``max_blanks`` cells are blank. One pass over all 81 cells leaves a minimal
   puzzle: every remaining given is needed.
3. The puzzle is kept when it has at least ``min_blanks`` blanks and a rating (see
   ``hrm.solver``) of at least ``min_rating``; otherwise the next attempt is made.

Randomness: a small splitmix64 generator implemented here, so the output depends only
on the arguments (not on numpy's or numba's generators or versions). Attempt ``a`` of
puzzle ``i`` is seeded from (seed, i, a) alone, so ``generate_puzzles(100, s)`` is the
first 100 rows of ``generate_puzzles(1000, s)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

# The kernels below call the solver's. Numba's on-disk cache keys on one source file only,
# so a cached generator would keep running an old solver after hrm/solver.py changes:
# these kernels are compiled afresh in each process (about 3 s) instead.
from hrm.solver import _ALL, _MAX_DEPTH, _SCRATCH, _WIDTH, _load, _search
from hrm.encoding import check_int
from hrm.sudoku import SEQ_LEN, num_blanks

MAX_BLANKS = 64  # a puzzle with a unique solution has at least 17 givens
MAX_ATTEMPTS = 1000  # per puzzle, before the controls are declared unsatisfiable


@dataclass(frozen=True)
class GeneratedPuzzles:
    questions: np.ndarray  # uint8 [N, 81]
    answers: np.ndarray  # uint8 [N, 81]
    ratings: np.ndarray  # int64 [N], from hrm.solver.rate semantics


# ---------------------------------------------------------------- randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=False)
def _mix(x):
    """splitmix64's output function: a bijective scramble of a uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=False)
def _below(rng, n):
    """Uniform-enough integer in [0, n) from the splitmix64 stream in rng[0] (bias ~ n / 2**64)."""
    rng[0] += _GOLDEN
    return np.int64(_mix(rng[0]) % np.uint64(n))


@njit(cache=False)
def _shuffle(rng, a):
    for i in range(len(a) - 1, 0, -1):
        j = _below(rng, i + 1)
        a[i], a[j] = a[j], a[i]


# ---------------------------------------------------------------- generation


@njit(cache=False)
def _attempt(rng, max_blanks, stack, scratch, question, answer, spare):
    """One random minimal puzzle into `question`/`answer`; returns (blanks, rating)."""
    # Explicit loops rather than slice assignments: those cost seconds of JIT compile.
    digits = np.arange(1, 10)
    for i in range(SEQ_LEN):
        question[i] = 0
    for box in (0, 4, 8):
        _shuffle(rng, digits)
        for k in range(9):
            question[(box // 3 * 3 + k // 3) * 9 + box % 3 * 3 + k % 3] = digits[k]
    _load(question, stack[0])
    _search(stack, scratch, 1, answer)  # always solvable, see the module docstring
    for i in range(SEQ_LEN):
        question[i] = answer[i]

    order = np.arange(SEQ_LEN)
    _shuffle(rng, order)
    blanks = 0
    for t in range(SEQ_LEN):
        if blanks >= max_blanks:
            break
        cell = order[t]
        v = question[cell]
        question[cell] = 0
        # The answer is a solution; the puzzle stays unique iff none has another digit here.
        _load(question, stack[0])
        stack[0, cell] = _ALL & ~(1 << (np.int64(v) - 1))
        found, _ = _search(stack, scratch, 1, spare)
        if found:
            question[cell] = v
        else:
            blanks += 1
    _load(question, stack[0])
    _, rating = _search(stack, scratch, 1, spare)
    return blanks, rating


@njit(cache=False)
def _generate(seed, min_blanks, min_rating, max_blanks, max_attempts, questions, answers, ratings):
    """Fill the output arrays; returns the index of a puzzle that ran out of attempts, or -1."""
    stack = np.zeros((_MAX_DEPTH, _WIDTH), dtype=np.uint16)
    scratch = np.zeros(_SCRATCH, dtype=np.int64)
    spare = np.zeros(SEQ_LEN, dtype=np.uint8)
    rng = np.zeros(1, dtype=np.uint64)
    base = _mix(seed + _GOLDEN)
    for i in range(questions.shape[0]):
        done = False
        for a in range(max_attempts):
            # Sub-seed from (seed, i, a) only: this is what makes prefixes stable.
            rng[0] = _mix(_mix(base ^ np.uint64(i)) + _GOLDEN * np.uint64(a + 1))
            blanks, rating = _attempt(rng, max_blanks, stack, scratch, questions[i], answers[i], spare)
            if blanks >= min_blanks and rating >= min_rating:
                ratings[i] = rating
                done = True
                break
        if not done:
            return i
    return -1


def generate_puzzles(
    n: int, seed: int, min_blanks: int = 0, min_rating: int = 0, max_blanks: int = MAX_BLANKS
) -> GeneratedPuzzles:
    """`n` random puzzles with exactly one solution, reproducible from `seed` (any integer).

    Raises ValueError for out-of-range controls, and when a puzzle meeting `min_blanks`
    and `min_rating` is not found within MAX_ATTEMPTS attempts (too strict controls).
    """
    n = check_int("n", n, 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    max_blanks = check_int("max_blanks", max_blanks, 0, MAX_BLANKS)
    min_blanks = check_int("min_blanks", min_blanks, 0, MAX_BLANKS)
    if min_blanks > max_blanks:
        raise ValueError(f"min_blanks ({min_blanks}) > max_blanks ({max_blanks})")
    min_rating = check_int("min_rating", min_rating, 0)

    questions = np.zeros((n, SEQ_LEN), dtype=np.uint8)
    answers = np.zeros((n, SEQ_LEN), dtype=np.uint8)
    ratings = np.zeros(n, dtype=np.int64)
    if n:
        seed64 = np.uint64(int(seed) & (2**64 - 1))  # negative and huge seeds wrap
        failed = _generate(
            seed64, min_blanks, min_rating, max_blanks, MAX_ATTEMPTS, questions, answers, ratings
        )
        if failed >= 0:
            raise ValueError(
                f"no puzzle with >= {min_blanks} blanks (max_blanks {max_blanks}) and rating "
                f">= {min_rating} in {MAX_ATTEMPTS} attempts (puzzle {failed}); the controls "
                "are too strict for this generator (minimal puzzles mostly have 50-60 blanks "
                "and low ratings)"
            )
    return GeneratedPuzzles(questions=questions, answers=answers, ratings=ratings)


# ---------------------------------------------------------------- summaries

_RATING_BUCKETS = [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, None)]


def _stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": int(values.max()),
    }


def describe(questions: np.ndarray, ratings: np.ndarray) -> dict:
    """JSON-able summary: count, rating histogram and stats, blank-count histogram and stats."""
    questions = np.asarray(questions)
    ratings = np.asarray(ratings, dtype=np.int64)
    if questions.ndim != 2 or questions.shape[1] != SEQ_LEN or len(questions) != len(ratings):
        raise ValueError(
            f"questions [N, {SEQ_LEN}] and ratings [N] expected, got {questions.shape} and {ratings.shape}"
        )
    blanks = num_blanks(questions).astype(np.int64)
    rating_hist = {}
    for lo, hi in _RATING_BUCKETS:
        label = str(lo) if hi == lo else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        inside = (ratings >= lo) if hi is None else (ratings >= lo) & (ratings <= hi)
        rating_hist[label] = int(inside.sum())
    values, counts = np.unique(blanks, return_counts=True)
    return {
        "count": len(ratings),
        "rating": {"histogram": rating_hist, **_stats(ratings)},
        "blanks": {"histogram": {str(int(v)): int(c) for v, c in zip(values, counts)}, **_stats(blanks)},
    }
