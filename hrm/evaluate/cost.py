"""What an evaluation will cost, said before it runs: the passes, their segments and FLOPs, and the hours
that a short trial on the device it found projects.

The work is counted, not guessed: a pass is one row (a puzzle under one perturbation, or one version of an
ARC pair) through one checkpoint, and the paper's procedure runs every pass through all ``halt_max_steps``
segments, so the row-segments are exact and the FLOPs are theirs times each checkpoint's
:func:`~hrm.evaluate.engine.segment_flops`. The time is measured: one segment of a real batch through every
checkpoint, once to warm up and once timed, on the device the run will use. Its projection is an upper bound
under an early stop (rows that halt stop paying) and leaves out the data loading and scoring around the
forwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where a trial runs: the wording below serves commands that plan without it
    from hrm.evaluate.engine import Engine


@dataclass(frozen=True)
class EvaluationCost:
    """The work of one evaluation and its projected time."""

    passes: int  # rows through a checkpoint: checkpoints x perturbations x rows (every evaluated set)
    segments: int  # per pass, all of them run (the paper's procedure)
    flops: float  # the passes' FLOPs (each checkpoint's segment FLOPs x its row-segments)
    rate: float  # row-segments per second through the engine, measured
    trial_rows: int  # rows of the timed trial

    @property
    def row_segments(self) -> int:
        return self.passes * self.segments

    @property
    def hours(self) -> float:
        return self.row_segments / self.rate / 3600

    def describe(self, early_stop: bool) -> str:
        """One line for the log: what runs, and how long the trial says it takes."""
        bound = "at most " if early_stop else ""
        return (f"{self.passes:,} passes x {self.segments} segments = {self.row_segments:,} row-segments, "
                f"{flop_count(self.flops)}; a trial of {self.trial_rows:,} rows ran "
                f"{self.rate:,.1f} row-segments/s here: {bound}{duration(self.hours)}")


def flop_count(flops: float) -> str:
    """FLOPs with the largest SI prefix that leaves at least 1 (3.2 TFLOP, 93.0 PFLOP)."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if flops >= scale:
            return f"{flops / scale:,.1f} {prefix}FLOP"
    return f"{flops:,.0f} FLOP"


def duration(hours: float) -> str:
    """Hours in the unit that reads best: seconds, minutes or hours."""
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.2f} h"


def measure_rate(engine: Engine, inputs: np.ndarray, puzzle_identifiers: np.ndarray | None = None) -> float:
    """Row-segments per second of one segment of ``inputs`` [M, L] through every checkpoint of ``engine``
    (the second of two calls: the first pays the allocations and kernel choices once)."""
    seconds = 0.0
    for _ in range(2):
        start = time.perf_counter()
        engine.run(inputs, segments=1, puzzle_identifiers=puzzle_identifiers)
        seconds = time.perf_counter() - start
    return engine.num_models * inputs.shape[0] / max(seconds, 1e-9)


def evaluation_cost(engine: Engine, rows_per_checkpoint: int, trial_inputs: np.ndarray,
                    trial_identifiers: np.ndarray | None = None) -> EvaluationCost:
    """The cost of running ``rows_per_checkpoint`` rows through each of ``engine``'s checkpoints, every
    segment, timed on ``trial_inputs`` (a real batch of the run's rows; its first ``max_rows`` when the engine
    chunks its forwards)."""
    from hrm.evaluate.engine import segment_flops

    if engine.max_rows:  # the engine's own chunk (a CPU's): its rate per row is the run's, at a fraction of the time
        trial_inputs = trial_inputs[:engine.max_rows]
        trial_identifiers = None if trial_identifiers is None else trial_identifiers[:engine.max_rows]
    flops = sum(segment_flops(model) for model in engine.models) * rows_per_checkpoint * engine.segments
    return EvaluationCost(passes=engine.num_models * rows_per_checkpoint, segments=engine.segments, flops=float(flops),
                          rate=measure_rate(engine, trial_inputs, trial_identifiers), trial_rows=trial_inputs.shape[0])
