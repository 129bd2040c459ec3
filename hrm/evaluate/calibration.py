"""Calibration (streaming reliability histograms: ECE, Pearson r, Brier score) and the critical step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FIXED_POINT = float(2**30)  # fixed-point scale: the sums below are integers, so streaming order cannot change them


@dataclass
class Histogram:
    """Streaming reliability histogram + moments for ECE, Pearson r and the Brier score.

    Every quantity is summed as an integer (value x 2^30, rounded per element), so the result
    does not depend on how the data was split into batches.
    """

    bins: int = 10
    count: np.ndarray = field(default=None)  # type: ignore[assignment]
    conf_sum: np.ndarray = field(default=None)  # type: ignore[assignment]  # fixed point
    ok_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    moments: np.ndarray = field(default=None)  # type: ignore[assignment]  # n, sx, sy, sxx, syy, sxy, brier (fixed point)

    def __post_init__(self) -> None:
        if self.count is None:
            self.count = np.zeros(self.bins, np.int64)
            self.conf_sum = np.zeros(self.bins, np.int64)
            self.ok_sum = np.zeros(self.bins, np.int64)
            self.moments = np.zeros(7, np.int64)

    def add(self, conf: np.ndarray, ok: np.ndarray) -> None:
        x = np.clip(np.asarray(conf, np.float64).reshape(-1), 0.0, 1.0)
        y = np.asarray(ok, bool).reshape(-1)
        idx = np.minimum((x * self.bins).astype(np.int64), self.bins - 1)
        xq = np.rint(x * FIXED_POINT).astype(np.int64)
        self.count += np.bincount(idx, minlength=self.bins)
        for b in np.unique(idx):
            sel = idx == b
            self.conf_sum[b] += int(xq[sel].sum())
            self.ok_sum[b] += int(y[sel].sum())
        self.moments += np.array([
            x.size, xq.sum(), y.sum(), np.rint(x * x * FIXED_POINT).astype(np.int64).sum(), y.sum(), xq[y].sum(),
            np.rint((x - y) ** 2 * FIXED_POINT).astype(np.int64).sum(),
        ], dtype=np.int64)

    def merge(self, other: "Histogram") -> None:
        """Add ``other``'s counts: the histogram of both parts' data (the sums are integers, so exact)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge a {other.bins}-bin histogram into a {self.bins}-bin one")
        for name in ("count", "conf_sum", "ok_sum", "moments"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, float | None]:
        n = int(self.moments[0])
        if n == 0:
            return {"ece": None, "pearson_r": None, "brier": None, "mean_confidence": None, "accuracy": None, "n": 0}
        sx, sy, sxx, syy, sxy, brier = (float(v) for v in self.moments[1:])
        sx, sxx, sxy, brier = sx / FIXED_POINT, sxx / FIXED_POINT, sxy / FIXED_POINT, brier / FIXED_POINT
        used = self.count > 0
        acc = self.ok_sum[used] / self.count[used]
        conf = self.conf_sum[used] / FIXED_POINT / self.count[used]
        ece = float((self.count[used] / n * np.abs(acc - conf)).sum())
        var = (n * sxx - sx * sx) * (n * syy - sy * sy)
        r = float((n * sxy - sx * sy) / math.sqrt(var)) if var > 1e-9 * float(n) ** 4 else None
        return {"ece": ece, "pearson_r": r, "brier": brier / n, "mean_confidence": sx / n, "accuracy": sy / n, "n": n}

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for b in range(self.bins):
            c = int(self.count[b])
            rows.append({
                "bin": b, "bin_low": b / self.bins, "bin_high": (b + 1) / self.bins, "count": c,
                "confidence": float(self.conf_sum[b] / FIXED_POINT / c) if c else None,
                "accuracy": float(self.ok_sum[b] / c) if c else None,
            })
        return rows


def calibration(conf: np.ndarray, ok: np.ndarray, bins: int = 10) -> Histogram:
    h = Histogram(bins)
    h.add(conf, ok)
    return h


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float64 sigmoid: a q_halt logit -> the confidence that the answer is exact."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def critical_step(correct: np.ndarray) -> np.ndarray:
    """The critical step: correct bool [S, ...] (exact after segment s) -> int16 [...], the first
    1-based segment from which the answer is right at every later segment; 0 = never."""
    c = np.asarray(correct, bool)
    if c.shape[0] == 0:
        return np.zeros(c.shape[1:], np.int16)
    tail = np.logical_and.accumulate(c[::-1], axis=0)[::-1]
    return np.where(tail.any(0), tail.argmax(0) + 1, 0).astype(np.int16)

