"""Easy-puzzle probe: the paper's "fails with one unknown cell" test (finding (a)).

Each puzzle, whose answer is known from its label, is made easy: all but k of its blank cells
are revealed from the answer (k at most its own number of blanks; k = 0 gives the full
solution as input). The cells left blank are drawn uniformly, by ``hrm.evaluate.reveal_tier``
with lo = hi = k, from ``numpy.random.default_rng([EASY_STREAM, seed, k])`` over the whole
sample at once (so the result does not depend on the batch size). Each easy copy runs the
same segments from the initial state; reported per k: exact accuracy, blank-cell accuracy,
convergence classes and fixed-point violations (:mod:`hrm.analysis.fixed_points`), and the
accuracy split by whether the model solved the original puzzle.

Mazes (``rules`` = hrm.tasks.MAZE.rules): the "blank cells" are the cells of the shortest path,
all but k of which are marked ``o`` in the input (k = 0: the whole path given); their accuracy is
that of the open cells.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from hrm.analysis.fixed_points import CLASS_NAMES, answer_changes, classify, violations
from hrm.analysis.traces import run_trace, score_predictions
from hrm.distributed import Dist, ResultStore, shared_map
from hrm.evaluate.tiers import reveal_tier
from hrm.rng import EASY_PROBE as EASY_STREAM  # the seed's stream id: hrm/rng.py

if TYPE_CHECKING:
    from hrm.tasks.base import EvalRules

__all__ = ["EASY_STREAM", "EASY_COLUMNS", "parse_ks", "reveal_all_but", "easy_probe"]

# Keys of an easy_probe row given ``solved`` (the header of a skipped probe's empty table, too).
EASY_COLUMNS = ("k", "n", "blanks_left", "exact", "blank_acc", *CLASS_NAMES, "violation_rate", "exact_if_violation",
                "exact_if_no_violation", "exact_if_solved", "exact_if_unsolved")


def parse_ks(text: str | Sequence[int], seq_len: int) -> list[int]:
    """"0,1,2,5" -> [0, 1, 2, 5] (sorted, unique, each in 0..seq_len)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            ks = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad k list {text!r}: expected comma-separated integers such as 0,1,2,5,10") from None
    else:
        ks = [int(k) for k in text]
    bad = [k for k in ks if not 0 <= k <= seq_len]
    if bad:
        raise ValueError(f"k must be in 0..{seq_len}, got {bad}")
    return sorted(set(ks))


def reveal_all_but(inputs: np.ndarray, labels: np.ndarray, k: int, *, seed: int = 0,
                   rules: EvalRules) -> np.ndarray:
    """Tokens [N, L] with all but min(k, blanks) blank cells filled from ``labels`` (seeded; a maze's
    path cells, ``rules``)."""
    rng = np.random.default_rng([EASY_STREAM, seed, k])
    return reveal_tier(np.asarray(inputs), np.asarray(labels), k, k, rng, rules)


def easy_probe(model, inputs: np.ndarray, labels: np.ndarray, ks: Sequence[int], *, seed: int = 0,
               segments: int | None = None, batch_size: int = 64, tol: float = 0.01, tail: int = 0,
               solved: np.ndarray | None = None, progress: Callable[[int], None] | None = None,
               d: Dist | None = None, store: ResultStore | None = None, identifiers: np.ndarray | None = None,
               rules: EvalRules) -> list[dict[str, Any]]:
    """One row per k: n, blanks_left (mean), exact, blank_acc, class fractions, violation_rate,
    accuracy with / without violation, and (given ``solved`` bool [N]) exact accuracy on the
    puzzles the model solved / did not solve in their original form. ``d``: ranks share the batches
    (hrm.distributed.shared_map; every rank gets the same rows), kept in ``store`` when given.
    ``identifiers``: int [N], each puzzle's row of the puzzle embedding (None: 0)."""
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    ids = np.zeros(inputs.shape[0], np.int32) if identifiers is None else np.asarray(identifiers)
    rows = []
    for k in ks:
        easy = reveal_all_but(inputs, labels, k, seed=seed, rules=rules)
        exact, blank_acc, classes, changes = [], [], [], []

        def probe(lo: int, easy=easy) -> tuple[np.ndarray, ...]:
            x, y = easy[lo:lo + batch_size], labels[lo:lo + batch_size]
            tr = run_trace(model, x, puzzle_identifiers=ids[lo:lo + batch_size], segments=segments, steps=False)
            sc = score_predictions(tr.final_predictions, y, rules.blank_cells(x, y))
            return (sc["exact"], sc["blank_acc"], classify(tr.seg_res, tr.seg_return, tol, tail),
                    answer_changes(tr.seg_predictions, tail))

        for ex_b, ba_b, cl_b, ch_b in shared_map(probe, range(0, easy.shape[0], batch_size), d, store, f"easy-k{k}"):
            exact.append(ex_b)
            blank_acc.append(ba_b)
            classes.append(cl_b)
            changes.append(ch_b)
            if progress is not None:
                progress(ex_b.shape[0])
        ex = np.concatenate(exact) if exact else np.zeros(0, bool)
        ba = np.concatenate(blank_acc) if blank_acc else np.zeros(0, np.float32)
        cl = np.concatenate(classes) if classes else np.zeros(0, np.int8)
        vi = violations(cl, np.concatenate(changes) if changes else np.zeros(0, np.int16))
        n = int(ex.size)
        row: dict[str, Any] = {"k": int(k), "n": n,
                               "blanks_left": float(rules.revealable(easy, labels).sum(1).mean()) if n else None,
                               "exact": float(ex.mean()) if n else None,
                               "blank_acc": float(np.nanmean(ba.astype(np.float64))) if n and not np.isnan(ba).all() else None}
        for code, name in enumerate(CLASS_NAMES):
            row[name] = float((cl == code).mean()) if n else None
        row["violation_rate"] = float(vi.mean()) if n else None
        row["exact_if_violation"] = float(ex[vi].mean()) if vi.any() else None
        row["exact_if_no_violation"] = float(ex[~vi].mean()) if (~vi).any() else None
        if solved is not None:
            s = np.asarray(solved, bool)
            row["exact_if_solved"] = float(ex[s].mean()) if s.any() else None
            row["exact_if_unsolved"] = float(ex[~s].mean()) if (~s).any() else None
        rows.append(row)
    return rows
