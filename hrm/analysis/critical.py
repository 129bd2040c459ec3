"""The critical step ("grokking" over reasoning segments, the paper's finding (b)).

Exact definitions (S segments, N puzzles)
----------------------------------------
- correct[s, n]: the answer after segment s equals the label on every labelled cell (the
  official exact accuracy; givens included, so a puzzle without blanks needs its givens copied).
- Critical step s*: the first segment from which the answer is correct at every later segment,
  1-based; 0 = never (not correct at the last segment): ``hrm.evaluate.critical_step``, the
  evaluation's ``stable_from``. First correct: the first segment at which it is correct (0 = never).
- Lost: correct at some segment but wrong at the last; Relapsed: solved (s* > 0) but correct at
  some segment before s* and then wrong again.
- Sharpness, over puzzles with s* >= 2: blank-cell accuracy at s* - 1 ("before") and at s*
  ("at", 1 by definition except for puzzles without blanks, which have no blank accuracy) and the
  number of blank cells still wrong just before s* (the cells that flip together at s*).
- Aligned curve: mean blank-cell accuracy at segment s* + o for offsets o, over solved puzzles
  for which s* + o lies in 1..S.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hrm.evaluate.calibration import critical_step

__all__ = ["critical_step", "first_correct", "critical_summary", "critical_histogram", "aligned_curve"]


def first_correct(correct: np.ndarray) -> np.ndarray:
    c = np.asarray(correct, bool)
    return np.where(c.any(0), c.argmax(0) + 1, 0).astype(np.int16)


def _at(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """values [S, N] at 1-based segment seg [N] (NaN where seg is outside 1..S)."""
    s = values.shape[0]
    ok = (seg >= 1) & (seg <= s)
    idx = np.clip(seg - 1, 0, s - 1)
    picked = np.take_along_axis(values, idx[None, :].astype(np.int64), axis=0)[0].astype(np.float64)
    return np.where(ok, picked, np.nan)


def critical_summary(correct: np.ndarray, blank_acc: np.ndarray, blank_wrong: np.ndarray | None = None) -> dict[str, Any]:
    """Numbers of the module docstring. correct bool [S, N], blank_acc float [S, N], blank_wrong
    (optional) int [S, N]: blank cells wrong after each segment."""
    correct = np.asarray(correct, bool)
    s, n = correct.shape
    crit = critical_step(correct)
    first = first_correct(correct)
    solved = crit > 0
    out: dict[str, Any] = {"n": int(n), "segments": int(s), "solved": float(solved.mean()) if n else None}
    if not n:
        return out
    out["lost"] = float(((first > 0) & ~solved).mean())
    out["relapsed"] = float((solved & (first < crit)).mean())
    if solved.any():
        out["critical_mean"] = float(crit[solved].mean())
        out["critical_median"] = float(np.median(crit[solved]))
    jump = solved & (crit >= 2)
    out["jumps"] = int(jump.sum())
    if jump.any():
        before = _at(np.asarray(blank_acc), np.where(jump, crit - 1, 0))[jump]
        at = _at(np.asarray(blank_acc), np.where(jump, crit, 0))[jump]
        ok = ~np.isnan(before)
        if ok.any():
            out["blank_acc_before_mean"] = float(before[ok].mean())
            out["blank_acc_before_median"] = float(np.median(before[ok]))
            out["blank_acc_at_mean"] = float(np.nanmean(at[ok]))
            out["jump_mean"] = float(np.nanmean(at[ok] - before[ok]))
        if blank_wrong is not None:
            wrong = _at(np.asarray(blank_wrong), np.where(jump, crit - 1, 0))[jump]
            out["cells_fixed_at_critical_median"] = float(np.median(wrong))
            out["cells_fixed_at_critical_mean"] = float(wrong.mean())
    return out


def critical_histogram(crit: np.ndarray, segments: int) -> list[dict[str, Any]]:
    """Rows (critical_step 1..S, then 0 = never; count; fraction)."""
    crit = np.asarray(crit)
    n = max(crit.size, 1)
    counts = np.bincount(crit.astype(np.int64), minlength=segments + 1)
    rows = [{"critical_step": s, "label": str(s), "count": int(counts[s]), "fraction": counts[s] / n}
            for s in range(1, segments + 1)]
    rows.append({"critical_step": 0, "label": "never", "count": int(counts[0]), "fraction": counts[0] / n})
    return rows


def aligned_curve(blank_acc: np.ndarray, crit: np.ndarray, offsets: Sequence[int] = range(-4, 3)) -> list[dict[str, Any]]:
    """Rows (offset, n, mean blank accuracy at s* + offset) over solved puzzles."""
    blank_acc = np.asarray(blank_acc, dtype=np.float64)
    crit = np.asarray(crit)
    rows = []
    for o in offsets:
        v = _at(blank_acc, np.where(crit > 0, crit + o, 0))
        v = v[(crit > 0) & ~np.isnan(v)]
        rows.append({"offset": int(o), "n": int(v.size), "blank_acc": float(v.mean()) if v.size else None})
    return rows
