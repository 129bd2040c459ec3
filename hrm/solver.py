"""Exact Sudoku solver, solution counter and difficulty rater (numba, batched).

Grids are uint8 [N, 81] (0 = blank, 1..9 = digit; see ``hrm.sudoku``). One call to
:func:`solve` runs one deterministic search per puzzle and returns the first solution,
the number of solutions up to ``limit`` and the rating.

What the rating counts
----------------------
The rating is the number of **guesses** (branch points) the deterministic search below
makes before it reaches its first solution, or before it has exhausted the search when
the puzzle has none. 0 means constraint propagation alone solves the puzzle (or proves
it has no solution). Each guess is one binary decision "digit d takes configuration c in
band b" (see below); when it fails the search refutes it (asserts the opposite) without
counting a second guess. Guesses made after the first solution, while looking for a
second one to complete the count, are not counted, so the rating does not depend on
``limit``.

This is the quantity Sudoku-Extreme calls ``rating`` ("backtracks"): the guess count of
the tdoku solver (``num_guesses`` of t-dillon/tdoku's dpll-triad-simd solver, limit 1).
We reason with the same constraints and branch with the same rule, so the numbers agree
exactly on most puzzles: 37 of the 39 rows of the real-sudoku ``valid.csv`` (Spearman
0.98), and, against a local build of tdoku (commit af42618), 95% of 3,900 random
symmetry-transformed copies of those rows (Spearman 0.99) and all but 1 of 7,000
puzzles from ``hrm.generate``. They can differ because tdoku propagates lazily (by
messages between boxes and bands, not always to a fixed point) while we always reach
the fixed point, so the two searches sometimes branch differently (either count can be
the larger). In those checks we never rated above 0 a puzzle tdoku rates 0.

Propagation (to a fixed point, after every guess):
- naked singles: a cell with one candidate removes it from its 20 peers;
- hidden singles: a digit with one place left in a row, column or box goes there;
- bands: a band is 3 boxes in a row (horizontal) or column (vertical). Within a band a
  digit occupies one minirow (3 cells of a line inside a box) per box and per line, so
  its placement is one of 6 permutations ("configurations"). A configuration survives
  only while the digit is a candidate in all three of its minirows; a minirow keeps a
  digit only while a surviving configuration uses it. This subsumes locked candidates
  (pointing and claiming) and their combinations inside a band;
- exactly three digits per minirow: if only three digits can go in a minirow, all three
  are there (no configuration may put them elsewhere); if three digits must be there,
  the minirow's cells lose every other digit.

Search: depth-first with an explicit stack, after propagation. Pick the band with the
fewest surviving (digit, configuration) pairs among bands not yet fixed (some digit has
two or more configurations left), ties to the lowest band (horizontal 0-2, then vertical
0-2); in it the lowest digit with exactly 2 configurations left, else exactly 3, else the
lowest digit with more. Guess its first surviving configuration (tdoku's numbering,
``_SIGMA``); when that fails, remove the configuration and propagate again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hrm.sudoku import BOX_OF, COL_OF, ROW_OF, SEQ_LEN, UNITS

SEVERAL = 2  # default limit; a count equal to `limit` means "at least that many"


@dataclass(frozen=True)
class SolveResult:
    solution: np.ndarray  # uint8 [N, 81], first solution found (all zeros when none)
    num_solutions: np.ndarray  # int64 [N]: 0, 1, ... up to `limit` (== limit means "limit or more")
    rating: np.ndarray  # int64 [N]: guesses until the first solution (see module docstring); 0 = none needed


# ---------------------------------------------------------------- tables (numba freezes them as constants)

_ALL = 0x1FF  # candidate mask: bit d-1 set = digit d still possible
_POP = np.array([m.bit_count() for m in range(512)], dtype=np.int64)
# Digit of a single-candidate mask, 0 for any other mask.
_DIGIT = np.zeros(512, dtype=np.uint8)
for _d in range(9):
    _DIGIT[1 << _d] = _d + 1
_UNITS = UNITS.astype(np.int64)
_ROW, _COL, _BOX = ROW_OF.astype(np.int64), COL_OF.astype(np.int64), BOX_OF.astype(np.int64)

# Configuration p of a band puts the digit in minirow _SIGMA[p, k] of the band's k-th box.
# The order is tdoku's: it decides which configuration is guessed first, so it changes
# ratings (not results); keeping it lets the ratings match Sudoku-Extreme's.
_SIGMA = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0], [0, 2, 1], [1, 0, 2]], dtype=np.int64)
# _MINI[b, k, i] = the 3 cells of minirow i of box k of band b. Bands 0-2 are horizontal
# (box k = box column k, minirow i = row 3b + i); bands 3-5 vertical (box k = box row k,
# minirow i = column 3(b - 3) + i).
_MINI = np.zeros((6, 3, 3, 3), dtype=np.int64)
for _b in range(6):
    for _k in range(3):
        for _i in range(3):
            for _j in range(3):
                if _b < 3:
                    _MINI[_b, _k, _i, _j] = (3 * _b + _i) * 9 + 3 * _k + _j
                else:
                    _MINI[_b, _k, _i, _j] = (3 * _k + _j) * 9 + 3 * (_b - 3) + _i

# Search state row layout (uint16): 81 cell candidate masks, then for each band b and
# configuration p the mask of digits that may still take p (index _CFG + 6 b + p), then
# the guess taken from this state: band, configuration, digit bit.
_CFG = SEQ_LEN
_GUESS = _CFG + 36
_WIDTH = _GUESS + 3
# Every assigning guess fixes one (band, digit) pair for good, so the stack never holds
# more than 6 * 9 + 1 states.
_MAX_DEPTH = 6 * 9 + 1
# Propagation scratch (int64): 18 band work slots, then "look again" flags for the 27
# units and the 6 bands.
_DIRTY = 18
_SCRATCH = _DIRTY + 27 + 6


# ---------------------------------------------------------------- propagation


@njit(cache=True)
def _set_cell(s, scratch, cell, mask):
    """Store a narrowed cell and mark the 3 units and 2 bands that contain it for another look."""
    s[cell] = mask
    scratch[_DIRTY + _ROW[cell]] = 1
    scratch[_DIRTY + 9 + _COL[cell]] = 1
    scratch[_DIRTY + 18 + _BOX[cell]] = 1
    scratch[_DIRTY + 27 + _ROW[cell] // 3] = 1
    scratch[_DIRTY + 30 + _COL[cell] // 3] = 1


@njit(cache=True)
def _unit(s, scratch, u):
    """Naked and hidden singles in unit u: False on contradiction."""
    once = 0
    twice = 0
    placed = 0
    for k in range(9):
        m = np.int64(s[_UNITS[u, k]])
        twice |= once & m
        once |= m
        if _POP[m] == 1:
            if placed & m:
                return False  # the same digit placed twice
            placed |= m
    if once != _ALL:
        return False  # a digit with no place left
    hidden = once & ~twice & ~placed
    for k in range(9):
        cell = _UNITS[u, k]
        m = np.int64(s[cell])
        if _POP[m] > 1:
            h = m & hidden
            if _POP[h] > 1:
                return False  # two digits that can only go in this one cell
            new = h if h else m & ~placed
            if new != m:
                if new == 0:
                    return False
                _set_cell(s, scratch, cell, new)
    return True


@njit(cache=True)
def _band(s, scratch, b):
    """Configurations and exactly-three-per-minirow in band b: False on contradiction.

    scratch[3k + i]: digits with a candidate in minirow i of box k; scratch[9 + 3k + i]:
    digits whose surviving configurations use that minirow. (Indexing, not slicing: array
    views in this hot loop cost reference counting.)
    """
    for k in range(3):
        for i in range(3):
            scratch[3 * k + i] = s[_MINI[b, k, i, 0]] | s[_MINI[b, k, i, 1]] | s[_MINI[b, k, i, 2]]
            scratch[9 + 3 * k + i] = 0
    placeable = 0
    for p in range(6):
        ok = (
            np.int64(s[_CFG + 6 * b + p])
            & scratch[_SIGMA[p, 0]]
            & scratch[3 + _SIGMA[p, 1]]
            & scratch[6 + _SIGMA[p, 2]]
        )
        s[_CFG + 6 * b + p] = ok
        placeable |= ok
        for k in range(3):
            scratch[9 + 3 * k + _SIGMA[p, k]] |= ok
    if placeable != _ALL:
        return False  # a digit with no configuration left in this band
    for k in range(3):
        for i in range(3):
            a = scratch[9 + 3 * k + i]
            if _POP[a] < 3:
                return False  # a minirow needs three different digits
            must = a & ~(scratch[9 + 3 * k + (i + 1) % 3] | scratch[9 + 3 * k + (i + 2) % 3])
            if _POP[must] > 3:
                return False
            if _POP[must] == 3:
                a = must
            elif _POP[a] == 3:
                # These three digits fill the minirow (and some can still go elsewhere in
                # box k): drop the configurations that put them elsewhere; the cells
                # follow when the band is looked at again.
                for p in range(6):
                    if _SIGMA[p, k] != i:
                        s[_CFG + 6 * b + p] &= ~a
                scratch[_DIRTY + 27 + b] = 1
            if scratch[3 * k + i] & ~a:
                for j in range(3):
                    cell = _MINI[b, k, i, j]
                    m = np.int64(s[cell])
                    if m & ~a:
                        if m & a == 0:
                            return False
                        _set_cell(s, scratch, cell, m & a)
    return True


@njit(cache=True)
def _propagate(s, scratch):
    """Propagate state row `s` to a fixed point in place; False on contradiction.

    Only units and bands marked in scratch[_DIRTY:] (27 units, then 6 bands) are looked
    at; a change marks the units and bands it touches. The caller marks what it changed.
    """
    while True:
        # Singles first (cheap), until they settle.
        again = True
        while again:
            again = False
            for u in range(27):
                if scratch[_DIRTY + u]:
                    scratch[_DIRTY + u] = 0
                    again = True
                    if not _unit(s, scratch, u):
                        return False
        settled = True
        for b in range(6):
            if scratch[_DIRTY + 27 + b]:
                scratch[_DIRTY + 27 + b] = 0
                settled = False
                if not _band(s, scratch, b):
                    return False
        if settled:
            return True


@njit(cache=True)
def _mark_all(scratch):
    for j in range(_DIRTY, _DIRTY + 33):
        scratch[j] = 1


@njit(cache=True)
def _mark_band(scratch, b):
    """A guess changed only band b's configurations: its cells follow from the band."""
    for j in range(_DIRTY, _DIRTY + 33):
        scratch[j] = 0
    scratch[_DIRTY + 27 + b] = 1


# ---------------------------------------------------------------- search


@njit(cache=True)
def _choose(s):
    """The guess to make from a propagated state: (band, configuration, digit bit); band -1 = solved.

    When every band is fixed (one configuration per digit), each digit's minirow and
    minicolumn in every box are known, so propagation has already placed every digit:
    the state is a solution.
    """
    best, best_total = -1, 10**9
    for b in range(6):
        total = 0
        for p in range(6):
            total += _POP[s[_CFG + 6 * b + p]]
        if 9 < total < best_total:
            best, best_total = b, total
    if best < 0:
        return -1, 0, 0
    pick, pick_rank = 0, 10
    for d in range(9):
        n = 0
        for p in range(6):
            n += (s[_CFG + 6 * best + p] >> d) & 1
        rank = min(n, 4)  # prefer 2, then 3, then any larger count
        if 2 <= n and rank < pick_rank:
            pick, pick_rank = d, rank
    bit = 1 << pick
    for p in range(6):
        if s[_CFG + 6 * best + p] & bit:
            return best, p, bit
    return -1, 0, 0  # unreachable: the digit has >= 2 configurations


@njit(cache=True)
def _search(stack, scratch, limit, out):
    """Count solutions of the state loaded into stack[0] up to `limit`; first solution's digits into `out`.

    Returns (count, guesses before the first solution or exhaustion). stack is uint16
    [_MAX_DEPTH, _WIDTH]; stack[d] is the state after d assigning guesses, and its last
    three entries record the guess taken from it.
    """
    _mark_all(scratch)
    if not _propagate(stack[0], scratch):
        return 0, 0
    depth, count, guesses = 0, 0, 0
    while True:
        s = stack[depth]
        b, p, bit = _choose(s)
        if b < 0:
            if count == 0:
                for i in range(SEQ_LEN):
                    out[i] = _DIGIT[s[i]]
            count += 1
            if count >= limit or depth == 0:
                return count, guesses
            depth -= 1  # carry on by refuting the guess that led here
        else:
            s[_GUESS], s[_GUESS + 1], s[_GUESS + 2] = b, p, bit
            child = stack[depth + 1]
            for j in range(_WIDTH):  # (slice assignment would cost ~2 s of JIT compile)
                child[j] = s[j]
            for q in range(6):  # assign: the digit keeps only configuration p in band b
                if q != p:
                    child[_CFG + 6 * b + q] &= ~bit
            if count == 0:
                guesses += 1
            _mark_band(scratch, b)
            if _propagate(child, scratch):
                depth += 1
                continue
        # Refute the guess taken at `depth`; if that leaves no way on, the state itself
        # is dead and so the guess below it is refuted in turn.
        while True:
            s = stack[depth]
            s[_CFG + 6 * s[_GUESS] + s[_GUESS + 1]] &= ~s[_GUESS + 2]
            _mark_band(scratch, s[_GUESS])
            if _propagate(s, scratch):
                break
            if depth == 0:
                return count, guesses
            depth -= 1


@njit(cache=True)
def _load(grid, s):
    """Fill state row `s` from a grid (values 0..10, 10 = invalid); False if it is invalid."""
    for i in range(SEQ_LEN):
        v = grid[i]
        if v > 9:
            return False
        s[i] = _ALL if v == 0 else 1 << (np.int64(v) - 1)
    for j in range(_CFG, _GUESS):
        s[j] = _ALL
    return True


@njit(cache=True)
def _solve_batch(grids, limit, solutions, counts, ratings):
    stack = np.zeros((_MAX_DEPTH, _WIDTH), dtype=np.uint16)
    scratch = np.zeros(_SCRATCH, dtype=np.int64)
    for n in range(grids.shape[0]):
        if _load(grids[n], stack[0]):
            counts[n], ratings[n] = _search(stack, scratch, limit, solutions[n])


# ---------------------------------------------------------------- public API


def _as_grids(grids: np.ndarray) -> np.ndarray:
    """Validate [N, 81] integer grids; values outside 0..9 become 10 (an unsolvable marker)."""
    arr = np.asarray(grids)
    if arr.ndim != 2 or arr.shape[1] != SEQ_LEN:
        raise ValueError(f"grids must have shape [N, {SEQ_LEN}], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"grids must hold integers 0..9 (uint8), got dtype {arr.dtype}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(np.minimum(arr, 10))
    return np.where((arr < 0) | (arr > 9), 10, arr).astype(np.uint8)


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    return int(limit)


def solve(grids: np.ndarray, limit: int = SEVERAL) -> SolveResult:
    """Solve, count (up to `limit`) and rate every grid in one search each.

    Grids whose givens conflict or hold values outside 0..9 get 0 solutions and rating 0.
    """
    limit = _check_limit(limit)
    g = _as_grids(grids)
    n = len(g)
    solutions = np.zeros((n, SEQ_LEN), dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int64)
    ratings = np.zeros(n, dtype=np.int64)
    if n:
        _solve_batch(g, limit, solutions, counts, ratings)
    return SolveResult(solution=solutions, num_solutions=counts, rating=ratings)


def count_solutions(grids: np.ndarray, limit: int = SEVERAL) -> np.ndarray:
    """int64 [N]: number of solutions, capped at `limit` (== limit means "limit or more")."""
    return solve(grids, limit).num_solutions


def rate(grids: np.ndarray) -> np.ndarray:
    """int64 [N]: guesses until the first solution (see the module docstring); 0 = propagation alone."""
    return solve(grids, 1).rating
