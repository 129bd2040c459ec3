"""Mechanistic analysis of an HRM (docs/reference-semantics.md §10; arXiv:2601.10679, whose code is "the fork").

Pure library: arrays and tensors in, arrays and figures out. ``hrm analyze``
(pipelines/analyze.py) reads checkpoints and datasets, calls :func:`analyze` and writes the files.

- :mod:`~hrm.analysis.run`: :func:`analyze`, the whole analysis of one checkpoint, and its
  :class:`AnalysisResult` (summary numbers, tables, figure data).
- :mod:`~hrm.analysis.traces`: run segment by segment from any state; per-step predictions,
  residuals, Q values, trajectory PCA; one-segment and lm-head hooks.
- :mod:`~hrm.analysis.fixed_points`: convergence classes, fixed-point violations, residual
  curves; perturbed runs (digit relabellings, noisy initial states) and their end states.
- :mod:`~hrm.analysis.critical`: the critical step ("grokking" over segments).
- :mod:`~hrm.analysis.easy`: reveal all but k cells, accuracy vs k.
- :mod:`~hrm.analysis.landscape`: the error landscape (Sudoku conflicts) on the top-two-PC plane.
- :mod:`~hrm.analysis.memory`: the memory a run will need, estimated before it runs.
- :mod:`~hrm.analysis.plots`, :mod:`~hrm.analysis.report`: figures and the Markdown page.

The functions that depend on the task take its ``rules`` (hrm.tasks: Task.rules; always passed): for mazes
the error measure is broken path cells in place of conflicts, the easy probe's cells are the path's,
and the relabelling is the S/G exchange.
"""

from hrm.analysis.critical import aligned_curve, critical_histogram, critical_step, critical_summary, first_correct
from hrm.analysis.easy import EASY_COLUMNS, easy_probe, parse_ks, reveal_all_but
from hrm.analysis.fixed_points import (
    CLASS_NAMES, CONVERGED, DRIFTING, OSCILLATING, MultiStability, answer_changes, answer_classes,
    PerturbedRuns, classify, equivalence_classes, fixed_point_summary, multistability_summary, residual_curves, run_perturbed,
    state_clusters, tail_window, violations,
)
from hrm.analysis.landscape import Landscape, landscape
from hrm.analysis.memory import MemoryEstimate, PhaseEstimate, available_memory_bytes, estimate_memory, format_bytes
from hrm.analysis.report import render_report
from hrm.analysis.run import AnalysisResult, AnalysisSettings, PuzzleFigure, TokenError, analyze, trace_table
from hrm.analysis.traces import (
    NonFiniteError, Trace, decode, initial_state, pca_basis, relative_residual, run_segment, run_trace,
    score_predictions, trajectory_pca,
)

__all__ = [
    "AnalysisResult", "AnalysisSettings", "PuzzleFigure", "TokenError", "analyze", "render_report", "trace_table",
    "MemoryEstimate", "PhaseEstimate", "available_memory_bytes", "estimate_memory", "format_bytes",
    "CLASS_NAMES", "CONVERGED", "DRIFTING", "EASY_COLUMNS", "OSCILLATING", "Landscape", "MultiStability", "NonFiniteError",
    "PerturbedRuns", "Trace",
    "aligned_curve", "answer_changes", "answer_classes", "classify", "critical_histogram",
    "critical_step", "critical_summary", "decode", "easy_probe", "equivalence_classes", "first_correct",
    "fixed_point_summary", "initial_state", "landscape", "multistability_summary", "parse_ks", "pca_basis",
    "relative_residual", "residual_curves", "reveal_all_but", "run_perturbed",
    "run_segment", "run_trace", "score_predictions", "state_clusters", "tail_window",
    "trajectory_pca", "violations",
]
