"""What an evaluation returns: per-puzzle outcomes (:class:`EvalResult`) and the sums every reported
number is made of (:class:`EvalTotals`), which add up across parts of an evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from hrm.evaluate.calibration import FIXED_POINT, Histogram, calibration, sigmoid
from hrm.tasks import get_task


@dataclass
class EvalResult:
    """Per-puzzle, per-(checkpoint, pass) outcomes of one evaluated set of N puzzles."""

    names: list[str]  # K checkpoint names
    perturbation: str
    early_stop: bool
    blanks: np.ndarray  # int16 [N]
    rating: np.ndarray  # int32 [N] (-1 unknown)
    label_cells: np.ndarray  # int16 [N] labelled cells
    correct: np.ndarray  # bool [K, P, N]
    halted: np.ndarray  # bool [K, P, N]
    q_halt: np.ndarray  # float32 [K, P, N]
    q_continue: np.ndarray  # float32 [K, P, N]
    verified: np.ndarray  # bool [K, P, N]
    blank_correct: np.ndarray  # int16 [K, P, N]
    cell_correct: np.ndarray  # int16 [K, P, N] labelled cells right
    steps: np.ndarray  # int16 [K, P, N]
    stable_from: np.ndarray  # int8 [K, P, N]
    es_correct: np.ndarray  # bool [K, P, N]: exact at the first segment the model halts (else the last)
    es_steps: np.ndarray  # int16 [K, P, N]: that segment
    lf_correct: np.ndarray  # bool [K, P, N]: label_free with the last k'+1 checkpoints, first p'+1 passes
    lf_verified: np.ndarray  # bool [N] full ensemble: the selected answer is verified
    lf_votes: np.ndarray  # int16 [N]
    lf_pool: np.ndarray  # int16 [N]
    lf_no_halt: np.ndarray  # bool [N]
    fth_correct: np.ndarray  # bool [K, P, N]: first_to_halt with the last k'+1 checkpoints, first p'+1 passes
    fth_segment: np.ndarray  # int16 [N] full ensemble: the segment whose answer it took (its first halt, else S)
    fth_no_halt: np.ndarray  # bool [N] full ensemble: no pass halted at any segment
    segment_correct: np.ndarray  # int64 [K, P, S] puzzles exact after segment s
    segment_halted: np.ndarray  # int64 [K, P, S]
    cells_base: Histogram
    cells_pooled: Histogram
    seconds: float = 0.0
    rows: int = 0  # model rows run per checkpoint (N * P)
    task: str = field(kw_only=True)  # whose rules (Task.rules) decide paper_vote and the buckets

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.correct.shape  # type: ignore[return-value]

    @property
    def n(self) -> int:
        return self.correct.shape[2]

    def _subset(self, k: int | None = None, p: int | None = None) -> tuple[slice, slice]:
        K, P, _ = self.shape
        k, p = K if k is None else k, P if p is None else p
        if not (1 <= k <= K and 1 <= p <= P):
            raise ValueError(f"subset ({k}, {p}) outside 1..{K} checkpoints, 1..{P} passes")
        return slice(K - k, K), slice(0, p)

    # -- per-puzzle decisions
    def baseline(self) -> np.ndarray:
        return self.correct[-1, 0]

    def paper_vote(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        """The paper's rule of the task: the fork's vote for Sudoku, any exact pass for mazes."""
        ks, ps = self._subset(k, p)
        return get_task(self.task).rules.solves(self.correct[ks, ps], self.halted[ks, ps])

    def label_free(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        K, P, _ = self.shape
        return self.lf_correct[(K if k is None else k) - 1, (P if p is None else p) - 1]

    def first_to_halt(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        K, P, _ = self.shape
        return self.fth_correct[(K if k is None else k) - 1, (P if p is None else p) - 1]

    def verified_any(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        ks, ps = self._subset(k, p)
        return self.verified[ks, ps].any(axis=(0, 1))

    # -- numbers
    def q_calibration(self, pooled: bool = False, bins: int = 10) -> Histogram:
        if pooled:
            return calibration(sigmoid(self.q_halt), self.correct, bins)
        return calibration(sigmoid(self.q_halt[-1, 0]), self.correct[-1, 0], bins)

    def summary(self, detail: bool = True) -> dict[str, Any]:
        return self.totals().summary(detail)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return self.totals().tables()

    # -- what the outputs need, in a size that does not grow with the puzzles (but the per-puzzle table)

    def puzzle_table(self) -> dict[str, np.ndarray]:
        """Per puzzle: blanks, each method's outcome, the primary pass's halt, sigmoid(q_halt) and critical segment."""
        return {
            "blanks": self.blanks.astype(np.int16), "baseline": self.baseline(), "paper_vote": self.paper_vote(),
            "label_free": self.label_free(), "first_to_halt": self.first_to_halt(), "verified_any": self.verified_any(),
            "label_free_verified": self.lf_verified, "first_to_halt_segment": self.fth_segment.astype(np.int16),
            "halted": self.halted[-1, 0], "q_halt_prob": sigmoid(self.q_halt[-1, 0]).astype(np.float32),
            "critical_segment": self.stable_from[-1, 0], **self.pass_table(),
        }

    def pass_table(self) -> dict[str, np.ndarray]:
        """Per puzzle, every (checkpoint k, pass p) at column k * P + p (:func:`unpack_passes` reads them back):
        exact, halted at the last segment and verified, each a bit (little-endian within a byte: ceil(K*P/8)
        bytes a puzzle), and the first segment whose halt signal fired (0: none; one byte a pass)."""
        K, P, n = self.shape
        S = self.segment_correct.shape[2]
        if S > 255:
            raise ValueError(f"{S} segments: a pass's halting segment is stored in one byte (at most 255)")
        # es_steps is that first halt, else S; at S, the pass halted there exactly when its final signal fired.
        first_halt = np.where((self.es_steps < S) | self.halted, self.es_steps, 0)

        def per_puzzle(a: np.ndarray) -> np.ndarray:  # [K, P, N] -> [N, K * P]
            return np.ascontiguousarray(a.reshape(K * P, n).T)

        bits = {name: np.packbits(per_puzzle(getattr(self, name)), axis=1, bitorder="little")
                for name in ("correct", "halted", "verified")}
        return {f"pass_{name}": v for name, v in bits.items()} | {"pass_halt_segment": per_puzzle(first_halt).astype(np.uint8)}

    def totals(self) -> "EvalTotals":
        """The sums every reported number is made of (:class:`EvalTotals`): the totals of consecutive
        parts of an evaluation add up to the totals of the whole."""
        K, P, S = self.segment_correct.shape
        n = self.n
        grid = np.zeros((len(METHODS), K, P), np.int64)
        for k in range(1, K + 1):
            for p in range(1, P + 1):
                grid[:, k - 1, p - 1] = [getattr(self, m)(k, p).sum() for m in METHODS]
        p0 = 0
        cells = np.maximum(self.label_cells, 1)
        checkpoint = np.array([[
            self.correct[k, p0].sum(), _fixed(self.cell_correct[k, p0] / cells).sum(), self.blank_correct[k, p0].sum(),
            self.halted[k, p0].sum(), ((self.q_halt[k, p0] >= 0) == self.correct[k, p0]).sum(), self.steps[k, p0].sum(),
        ] for k in range(K)], np.int64).reshape(K, 6)
        primary = self.stable_from[-1, 0].astype(np.int64)
        decisions = (self.baseline(), *(getattr(self, m)() for m in METHODS))
        rules = get_task(self.task).rules
        return EvalTotals(
            names=list(self.names), perturbation=self.perturbation, early_stop=self.early_stop, n=n, grid=grid,
            pass_exact=np.int64(self.correct.sum()), checkpoint=checkpoint, blank_cells=np.int64(self.blanks.sum()),
            label_free_detail=np.array([self.lf_verified.sum(), self.lf_no_halt.sum(),
                                        _fixed(self.lf_votes / np.maximum(self.lf_pool, 1)).sum()], np.int64),
            first_to_halt_detail=np.array([self.fth_segment.astype(np.int64).sum(), self.fth_no_halt.sum()], np.int64),
            early_stop_view=np.array([self.es_correct[-1, 0].sum(), self.es_steps[-1, 0].sum(), self.es_correct.sum()],
                                     np.int64),
            steps_run=self.steps.astype(np.int64).sum(axis=(1, 2)),
            critical=np.bincount(primary, minlength=S + 1).astype(np.int64)[:S + 1],
            segment_correct=self.segment_correct.copy(), segment_halted=self.segment_halted.copy(),
            rating_buckets=_bucket_sums(self.rating, rules.rating_edges, *decisions),
            blank_buckets=_bucket_sums(self.blanks, rules.blank_edges, *decisions),
            q_halt=self.q_calibration(), q_halt_pooled=self.q_calibration(pooled=True),
            cells_base=self.cells_base, cells_pooled=self.cells_pooled, seconds=self.seconds, rows=self.rows,
            task=self.task,
        )


def unpack_passes(packed: np.ndarray, passes: int) -> np.ndarray:
    """bool [N, passes] from a ``pass_correct``/``pass_halted``/``pass_verified`` column (uint8 [N, ceil(passes/8)]:
    :meth:`EvalResult.pass_table`); column k * P + p is checkpoint k's pass p."""
    return np.unpackbits(np.asarray(packed, np.uint8), axis=1, count=passes, bitorder="little").astype(bool)


def _fixed(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as integers of 2^-30 (the histograms' fixed point): sums that any split adds up to."""
    return np.rint(np.asarray(x, np.float64) * FIXED_POINT).astype(np.int64)


def _bucket_sums(values: np.ndarray, edges: Sequence[int], *decisions: np.ndarray) -> np.ndarray:
    """int64 [len(edges), 1 + len(decisions)]: per bucket [edges[i], edges[i+1]) (the last one open),
    the puzzles and how many of them each decision solves."""
    which = np.searchsorted(np.asarray(edges), np.asarray(values), side="right") - 1  # -1: below the first edge
    out = np.zeros((len(edges), 1 + len(decisions)), np.int64)
    keep = which >= 0
    out[:, 0] = np.bincount(which[keep], minlength=len(edges))
    for j, d in enumerate(decisions, start=1):
        out[:, j] = np.bincount(which[keep], weights=np.asarray(d, bool)[keep], minlength=len(edges)).astype(np.int64)
    return out


# The ensemble's decisions, in the order of EvalTotals.grid's rows and of every table's columns.
METHODS = ("paper_vote", "label_free", "first_to_halt", "verified_any")
_HISTOGRAMS = ("q_halt", "q_halt_pooled", "cells_base", "cells_pooled")
_SCALARS = ("names", "perturbation", "early_stop", "task")  # the evaluation's, not summed


@dataclass
class EvalTotals:
    """The sums behind every number of an evaluation: integers (fractions in fixed point, as the
    histograms), so the totals of parts add up exactly to the totals of the whole whatever the split.
    Their size depends on K, P, S only, never on the number of puzzles."""

    names: list[str]
    perturbation: str
    early_stop: bool
    n: int  # puzzles
    grid: np.ndarray  # int64 [4, K, P]: puzzles each of METHODS solves with the last k+1 checkpoints, first p+1 passes
    pass_exact: np.int64  # exact passes, all K x P
    checkpoint: np.ndarray  # int64 [K, 6] at pass 0: exact, cell accuracy (fixed point), blank cells right, halted, q_halt right, segments
    blank_cells: np.int64
    label_free_detail: np.ndarray  # int64 [3]: selected answer verified, no pass halted, vote share (fixed point)
    first_to_halt_detail: np.ndarray  # int64 [2]: segments of the chosen answers, puzzles where no pass halted
    early_stop_view: np.ndarray  # int64 [3]: primary exact at its first halt, its segments, all passes exact there
    steps_run: np.ndarray  # int64 [K]: row-segments each checkpoint ran
    critical: np.ndarray  # int64 [S + 1]: primary unperturbed puzzles by critical segment (0 = never)
    segment_correct: np.ndarray  # int64 [K, P, S]
    segment_halted: np.ndarray  # int64 [K, P, S]
    rating_buckets: np.ndarray  # int64 [len(rating_edges), 6]: puzzles, baseline, then each of METHODS
    blank_buckets: np.ndarray  # int64 [len(blank_edges), 6] (the task's edges, Task.rules)
    q_halt: Histogram  # sigmoid(q_halt) of the primary unperturbed pass vs its exactness
    q_halt_pooled: Histogram  # of every pass
    cells_base: Histogram
    cells_pooled: Histogram
    seconds: float = 0.0
    rows: int = 0
    task: str = field(kw_only=True)

    def add(self, other: "EvalTotals") -> "EvalTotals":
        """The totals of both parts (the same evaluation: task, checkpoints, perturbation, early stop)."""
        if (other.names, other.perturbation, other.early_stop, other.grid.shape, other.task) != (
                self.names, self.perturbation, self.early_stop, self.grid.shape, self.task):
            raise ValueError("totals of different evaluations (task, checkpoints, perturbation or early stop differ)")
        out: dict[str, Any] = {k: getattr(self, k) for k in _SCALARS}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in out:
                continue
            if isinstance(a, Histogram):
                h = Histogram(a.bins)
                h.merge(a)
                h.merge(b)
                out[f.name] = h
            else:
                out[f.name] = a + b
        return EvalTotals(**out)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Every number as arrays (``numpy.savez``), histograms as ``<name>.<field>``; :meth:`from_arrays`
        rebuilds the totals with the scalars of the evaluation (names, perturbation, early_stop)."""
        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Histogram):
                out.update({f"{f.name}.{k}": getattr(v, k) for k in ("count", "conf_sum", "ok_sum", "moments")})
            elif f.name not in _SCALARS:
                out[f.name] = np.asarray(v)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, names: Sequence[str], perturbation: str,
                    early_stop: bool, task: str) -> "EvalTotals":
        values: dict[str, Any] = {"names": list(names), "perturbation": perturbation, "early_stop": early_stop,
                                  "task": task}
        for f in fields(cls):
            if f.name in values:
                continue
            if f.name in _HISTOGRAMS:
                parts = [np.asarray(arrays[f"{f.name}.{k}"]) for k in ("count", "conf_sum", "ok_sum", "moments")]
                values[f.name] = Histogram(len(parts[0]), *parts)
            else:
                a = np.asarray(arrays[f.name])
                values[f.name] = (int(a) if f.name in ("n", "rows") else float(a) if f.name == "seconds"
                                  else a if a.ndim else np.int64(a))
        return cls(**values)

    # -- the numbers

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.segment_correct.shape  # type: ignore[return-value]

    def solved(self, method: str, k: int | None = None, p: int | None = None) -> float | None:
        """Fraction of puzzles ``method`` (one of METHODS) solves with the last k checkpoints and first p
        passes (default: all)."""
        K, P, _ = self.shape
        k, p = K if k is None else k, P if p is None else p
        row = METHODS.index(method)
        return float(self.grid[row, k - 1, p - 1] / self.n) if self.n else None

    def checkpoint_metrics(self, k: int) -> dict[str, float | None]:
        """Checkpoint k's unperturbed passes."""
        n, c = self.n, self.checkpoint[k]
        if n == 0:
            return {}
        return {
            "exact_accuracy": float(c[0] / n), "accuracy": float(c[1] / FIXED_POINT / n),
            "blank_accuracy": float(c[2] / self.blank_cells) if self.blank_cells else None,
            "halt_rate": float(c[3] / n), "q_halt_accuracy": float(c[4] / n), "mean_steps": float(c[5] / n),
        }

    def summary(self, detail: bool = True) -> dict[str, Any]:
        K, P, S = self.shape
        n = self.n
        out: dict[str, Any] = {"puzzles": n, "checkpoints": K, "passes": P, "segments": S}
        if n == 0:
            return out
        out["baseline_exact"] = float(self.checkpoint[K - 1, 0] / n)
        for method in METHODS:
            out[method] = self.solved(method)
        out["mean_pass_exact"] = float(self.pass_exact / (K * P * n))
        out["baseline"] = self.checkpoint_metrics(K - 1)
        lf = self.label_free_detail
        out["label_free_detail"] = {"selected_verified": float(lf[0] / n), "no_pass_halted": float(lf[1] / n),
                                    "mean_vote_share": float(lf[2] / FIXED_POINT / n)}
        fth = self.first_to_halt_detail
        out["first_to_halt_detail"] = {"mean_segment": float(fth[0] / n), "no_pass_halted": float(fth[1] / n)}
        all_segments = K * P * n * S
        out["work"] = {  # row-segments the model ran: each costs the same FLOPs (segment_flops)
            "segments_run": int(self.steps_run.sum()), "segments_of_all_segment_passes": all_segments,
            "saved_fraction": 1.0 - int(self.steps_run.sum()) / all_segments if S else 0.0,
        }
        es = self.early_stop_view
        out["early_stop_view"] = {  # the same passes read at the model's own halt (a different setting)
            "exact_accuracy": float(es[0] / n), "mean_steps": float(es[1] / n), "mean_pass_exact": float(es[2] / (K * P * n)),
        }
        solved = int(self.critical[1:].sum())
        out["critical_segment"] = {
            "mean": float((np.arange(1, S + 1) * self.critical[1:]).sum() / solved) if solved else None,
            "solved_by_final_segment": float(solved / n),
        }
        out["calibration"] = {
            "q_halt": self.q_halt.summary(), "q_halt_pooled": self.q_halt_pooled.summary(),
            "cells": self.cells_base.summary(), "cells_pooled": self.cells_pooled.summary(),
        }
        if detail:
            out["per_checkpoint"] = {name: self.checkpoint_metrics(k) for k, name in enumerate(self.names)}
        return out

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Plot tables: rows of plain values (CSV-ready)."""
        K, P, S = self.shape
        n = max(self.n, 1)
        t: dict[str, list[dict[str, Any]]] = {}
        t["segments"] = [{
            "segment": s + 1,
            "baseline": float(self.segment_correct[-1, 0, s] / n),
            "all_passes": float(self.segment_correct[:, :, s].sum() / (n * K * P)),
            "halted": float(self.segment_halted[-1, 0, s] / n),
            "critical": float(self.critical[s + 1] / n),
        } for s in range(S)]
        t["passes"] = [self._row("passes", p, K, p) for p in range(1, P + 1)]
        t["checkpoints"] = [self._row("checkpoints", k, k, P) for k in range(1, K + 1)]
        t["ensemble_grid"] = [
            {"checkpoints": k, "passes": p, **{k2: v for k2, v in self._row("x", 0, k, p).items() if k2 != "x"}}
            for k in range(1, K + 1) for p in range(1, P + 1)
        ]
        rules = get_task(self.task).rules
        t["rating"] = self._buckets(self.rating_buckets, rules.rating_edges, "rating")
        t["blanks"] = self._buckets(self.blank_buckets, rules.blank_edges, "blanks")
        t["reliability_q_halt"] = self.q_halt.table()
        t["reliability_cells"] = self.cells_base.table()
        return t

    def _row(self, key: str, value: int, k: int, p: int) -> dict[str, Any]:
        return {key: value, **{m: self.solved(m, k, p) for m in METHODS}}

    @staticmethod
    def _buckets(sums: np.ndarray, edges: Sequence[int], name: str) -> list[dict[str, Any]]:
        rows = []
        bounds = list(edges) + [None]
        for (lo, hi), (count, base, *solved) in zip(zip(bounds[:-1], bounds[1:]), sums.tolist()):
            if not count:
                continue
            label = f"{lo}+" if hi is None else (str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}")
            rows.append({name: label, "puzzles": count, "baseline": base / count,
                         **{m: v / count for m, v in zip(METHODS, solved)}})
        return rows
