"""The whole mechanistic analysis of one checkpoint on a set of puzzles: :func:`analyze`.

As :func:`hrm.evaluate.evaluate_puzzles` for the evaluation: puzzles in, one
:class:`AnalysisResult` out (the numbers, the tables as plain columns or rows, the data of every
figure); ``hrm analyze`` (pipelines/analyze.py) resolves the inputs and writes the files.
What each number means: the modules it comes from, and docs/analyze.md.

Runs, in order: the traces of every puzzle (each batch's per-step table handed to ``on_traces``
as it is made, so a large run need not hold them), the per-puzzle and per-segment summaries, the
easy-puzzle probe, the multiple-fixed-point runs, then trajectories and landscapes of the selected
puzzles.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from hrm.analysis.critical import aligned_curve, critical_histogram, critical_step, critical_summary, first_correct
from hrm.analysis.easy import easy_probe
from hrm.analysis.fixed_points import (
    CLASS_NAMES, MultiStability, PerturbedRuns, answer_changes, classify, fixed_point_summary,
    multistability_summary, residual_curves, run_perturbed, tail_window, violations,
)
from hrm.analysis.landscape import Landscape, landscape
from hrm.analysis.traces import Trace, run_trace, score_predictions
from hrm.data import eval_rows
from hrm.distributed import Dist, ResultStore, shared_map
from hrm.model.registry import architecture_of

if TYPE_CHECKING:
    from hrm.tasks.base import EvalRules

__all__ = ["AnalysisSettings", "AnalysisResult", "PuzzleFigure", "TokenError", "analyze", "trace_table"]


class RowSource(Protocol):
    """Where the puzzles come from (:class:`hrm.data.PuzzleDataset` is one)."""

    def gather(self, rows: np.ndarray) -> Mapping[str, np.ndarray]:
        """inputs, labels, puzzle_identifiers, puzzle_id, rating and raw_index of ``rows``."""
        ...


class TokenError(ValueError):
    """Puzzles whose tokens are outside the task's encoding; ``rows`` names the first ones."""

    def __init__(self, rows: Sequence[int], rules: EvalRules):
        self.rows = list(rows)
        (a, b), (c, d) = rules.input_tokens, rules.label_tokens
        super().__init__(f"rows {self.rows} hold tokens outside the {rules.task} encoding (inputs {a}..{b}, "
                         f"labels {c}..{d})")


@dataclass(frozen=True)
class AnalysisSettings:
    """What to run (the options of ``hrm analyze``, docs/analyze.md)."""

    segments: int  # ACT segments per run
    seed: int  # of the easy probe, the noise and the sub-samples
    batch_size: int  # puzzles per forward batch
    store_states: str  # z_H / z_L in the traces for: "selected" puzzles, "all", "none"
    tol: float  # convergence: joint segment residual <= tol on the tail
    tail: int  # tail segments (0: max(1, ceil(segments / 4)))
    lookback: int  # largest lag of the oscillation test
    easy_k: Sequence[int]  # cells left blank in the easy probe (empty: no probe)
    easy_sample: int  # puzzles of the sample for the easy probe (0: all)
    shifts: int  # cyclic digit relabellings incl. the identity
    noise_runs: int  # runs from a noisy initial state, per noise kind
    noise_std: float  # 0: each kind's own (fixed_points.NOISE_STD: fork 2, iid 0.5)
    cluster_tol: float
    fp_sample: int  # puzzles of the sample for multistability (0: all)
    landscape_radius: int
    landscape_divisor: float
    landscape_segment: int  # centre segment of the landscapes (0: the last)
    flow: bool  # one-segment flow arrows of the landscapes
    noise: tuple[str, ...] = ("fork", "iid")  # noise kinds of the multistability runs (fixed_points.NOISE_KINDS)

    @property
    def runs_easy(self) -> bool:
        return len(self.easy_k) > 0

    @property
    def runs_multistability(self) -> bool:
        """At least one perturbed run besides the plain one."""
        return self.shifts > 1 or (self.shifts == 1 and self.noise_runs > 0 and len(self.noise) > 0)

    @property
    def perturbed_runs(self) -> int:
        """Runs per puzzle in the multistability probe: the shifts (the plain run included) and each noise kind's."""
        return self.shifts + self.noise_runs * len(self.noise)

    @property
    def center_segment(self) -> int:
        return self.landscape_segment or self.segments


@dataclass
class PuzzleFigure:
    """What the trajectory and landscape figures of one selected puzzle show."""

    row: int  # in the split
    raw_index: int  # the puzzle's row in the raw split file (the fork's index)
    pcs: np.ndarray  # float32 [T, 2]: trajectory PCA of z_H
    pca_ratio: np.ndarray  # float32 [2]
    landscape: Landscape


@dataclass
class AnalysisResult:
    """The analysis of one checkpoint; ``summary`` and ``tables`` are what the files hold."""

    summary: dict[str, Any]  # exact_accuracy, blank_accuracy, fixed_point, critical, [easy], [multistability], landscapes
    # puzzles / multistability (None: not run) / landscape (one per selected puzzle): columns;
    # residuals, critical, critical_aligned, easy, multistability: rows of the plot tables.
    tables: dict[str, Any]
    residual_rows: list[dict[str, Any]]  # residual curves, long form (the figure's data)
    multistability: MultiStability | None
    puzzle_figures: list[PuzzleFigure]
    h_cycles: int
    trace_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per phase


def _bar(progress: bool, total: int, desc: str):
    """A tqdm bar on a terminal, a line every 30 s otherwise, nothing without ``progress`` (hrm.progress)."""
    from hrm.progress import progress_bar

    return progress_bar(total, f"analyze {desc}", "puzzle", enabled=progress)


def analyze(model, source: RowSource, sample_rows: np.ndarray, selected: np.ndarray, settings: AnalysisSettings, *,
            on_traces: Callable[[Any], None] | None = None, progress: bool = False, d: Dist | None = None,
            store: ResultStore | None = None, rules: EvalRules) -> AnalysisResult:
    """Analyse ``model`` on the puzzles ``sample_rows`` (ascending rows of ``source``) and trace the
    ``selected`` rows too (in the sample or not) for the trajectory and landscape figures.

    ``on_traces``: gets each batch's per-step table (:func:`trace_table`, a pyarrow Table), in row order.
    Raises :class:`TokenError` for a batch with tokens outside the encoding.
    ``d``: torchrun's ranks share the batches of the traces, the easy probe, the multistability runs and
    the landscapes (hrm.distributed.shared_map: the same batches as one process, every result sent to
    every rank but the per-step trace tables, which go to rank 0 alone), so every rank returns the
    same result (``trace_rows`` and ``on_traces`` aside: rank 0's).
    ``store``: where each of those items' results is kept once computed and looked up first, so a
    stopped analysis continues (hrm.distributed.shared_map; pipelines/job.py); same result either way.
    ``rules``: the task's (hrm.tasks: Task.rules): its blank cells, error measure (the ``conflicts``
    of Sudoku, a maze's ``broken_path_cells``; the output columns are named by it), easy probe and
    relabelling.
    """
    st = settings
    clock = _PhaseClock()
    plan = _TracePlan.of(sample_rows, selected, st.store_states)
    run = _Run(model=model, settings=st, rules=rules, progress=progress, d=d, store=store)
    acc, states, trace_rows = _trace_all(run, source, plan, on_traces)
    clock.lap("traces")
    cat = _concatenate(acc)
    summary, tables, res_rows = _trace_summaries(cat, plan, st, rules)
    clock.lap("summaries")

    # The probes run on the sample alone.
    inputs, labels = cat["inputs"][plan.in_sample], cat["labels"][plan.in_sample]
    identifiers = cat["identifiers"][plan.in_sample]
    final_exact = cat["exact"][:, plan.in_sample][-1]
    tables["easy"] = []
    if st.runs_easy:
        tables["easy"] = _easy_phase(run, inputs, labels, identifiers, final_exact)
        summary["easy"] = {f"k{r['k']}": r["exact"] for r in tables["easy"]}
        summary["easy"].update({f"violations_k{r['k']}": r["violation_rate"] for r in tables["easy"]})
        clock.lap("easy")

    ms = None
    tables["multistability"] = None
    tables["multistability_counts"] = []
    if st.runs_multistability:
        pick = eval_rows(inputs.shape[0], st.fp_sample or None, st.seed)
        ms = _multistability_phase(run, inputs[pick], labels[pick], identifiers[pick])
        summary["multistability"] = multistability_summary(ms)
        summary["multistability"].update({"shifts": st.shifts, "noise_runs": st.noise_runs, "noise": list(st.noise),
                                          "noise_std": st.noise_std, "cluster_tol": st.cluster_tol})
        tables["multistability"] = _multistability_columns(ms, np.asarray(sample_rows)[pick])
        tables["multistability_counts"] = _multistability_counts(ms)
        clock.lap("multistability")

    figures, tables["landscape"], summary["landscapes"] = _landscape_phase(run, states)
    clock.lap("landscapes")
    return AnalysisResult(summary=summary, tables=tables, residual_rows=res_rows, multistability=ms,
                          puzzle_figures=figures, h_cycles=architecture_of(model).steps_per_segment(model.config),
                          trace_rows=trace_rows,
                          seconds=clock.seconds)


class _PhaseClock:
    """Seconds per phase of an analysis (AnalysisResult.seconds): each lap adds the time since the last."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.time()

    def lap(self, name: str) -> None:
        now = time.time()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 2)
        self._last = now


@dataclass(frozen=True)
class _Run:
    """What every phase of one analysis runs with (the arguments of :func:`analyze`)."""

    model: Any
    settings: AnalysisSettings
    rules: EvalRules
    progress: bool
    d: Dist | None
    store: ResultStore | None


@dataclass(frozen=True)
class _TracePlan:
    """The traced rows (the sample and the selected rows, ascending) and what is kept of each."""

    rows: np.ndarray  # int64: every traced row
    in_sample: np.ndarray  # bool per traced row
    keep_rows: np.ndarray  # bool: its z_H / z_L go in the per-step table
    need_states: np.ndarray  # bool: its states are kept (for the table or the figures)
    selected: frozenset[int]

    @classmethod
    def of(cls, sample_rows: np.ndarray, selected: np.ndarray, store_states: str) -> "_TracePlan":
        selected = np.asarray(selected, np.int64)
        rows = np.union1d(sample_rows, selected).astype(np.int64)
        keep_rows = np.isin(rows, selected) if store_states == "selected" else np.full(rows.size, store_states == "all")
        return cls(rows=rows, in_sample=np.isin(rows, sample_rows), keep_rows=keep_rows,
                   need_states=np.isin(rows, selected) | keep_rows, selected=frozenset(selected.tolist()))


# What the traces keep of every puzzle; the first ones per segment ([S, puzzles]), the rest [puzzles].
_PER_SEGMENT = ("exact", "blank_acc", "blank_wrong", "res_H", "res_L", "res")
_TRACED = _PER_SEGMENT + ("ret", "changes", "conflicts", "inputs", "labels", "identifiers", "puzzle_id", "rating",
                          "raw_index")


def _trace_batch(run: _Run, source: RowSource, plan: _TracePlan, lo: int) -> dict[str, Any]:
    """Trace the batch of traced rows from ``lo``: its per-step table, the states of its selected rows
    and what the summaries take of every puzzle (``acc``); ``{"bad": rows}`` for tokens outside the encoding."""
    st, rules = run.settings, run.rules
    errors = rules.errors
    (x_lo, x_hi), (y_lo, y_hi) = rules.input_tokens, rules.label_tokens
    rows = plan.rows[lo:lo + st.batch_size]
    data = source.gather(rows)
    x, y = data["inputs"], data["labels"]
    bad = ((x < x_lo) | (x > x_hi)).any(1) | (((y < y_lo) | (y > y_hi)) & (y != -100)).any(1)
    if bad.any():  # returned, not raised: every rank then raises it, none waits for the others
        return {"bad": rows[bad][:10].tolist()}
    keep = plan.need_states[lo:lo + st.batch_size]
    tr = run_trace(run.model, x, puzzle_identifiers=data["puzzle_identifiers"], segments=st.segments,
                   keep_states=keep, lookback=st.lookback)
    blank = rules.blank_cells(x, y)
    step_scores = score_predictions(tr.predictions, y, blank)
    step_conf = errors(x, tr.predictions)
    step_changed = np.zeros_like(step_conf, dtype=np.int16)
    step_changed[1:] = (tr.predictions[1:] != tr.predictions[:-1]).sum(-1)
    meta = {"row": rows, "raw_index": data["raw_index"], "puzzle_id": data["puzzle_id"], "rating": data["rating"],
            "blanks": blank.sum(1), "in_sample": plan.in_sample[lo:lo + st.batch_size]}
    out: dict[str, Any] = {"rows": rows.size, "states": {},
                           "table": trace_table(tr, meta, step_scores, step_conf, step_changed,
                                                plan.keep_rows[lo:lo + st.batch_size], rules.error_name)}
    for k, r in enumerate(tr.kept_rows if tr.kept_rows is not None else []):
        row = int(rows[r])
        if row in plan.selected:
            out["states"][row] = (tr.z_H[:, k], tr.z_L[:, k], x[r], y[r], int(data["puzzle_identifiers"][r]),
                                  tr.pcs[:, r], tr.pca_ratio[r], int(data["raw_index"][r]))
    seg = score_predictions(tr.seg_predictions, y, blank)
    out["acc"] = {
        "exact": seg["exact"], "blank_acc": seg["blank_acc"],
        "blank_wrong": ((tr.seg_predictions != y[None]) & blank[None]).sum(-1).astype(np.int16),
        "res_H": tr.seg_res_H, "res_L": tr.seg_res_L, "res": tr.seg_res, "ret": tr.seg_return,
        "changes": answer_changes(tr.seg_predictions, st.tail),
        "conflicts": errors(x, tr.final_predictions),
        "inputs": x.astype(np.uint8), "labels": y.astype(np.int16), "identifiers": data["puzzle_identifiers"],
        "puzzle_id": data["puzzle_id"],
        "rating": data["rating"], "raw_index": data["raw_index"],
    }
    return out


def _trace_all(run: _Run, source: RowSource, plan: _TracePlan, on_traces: Callable[[Any], None] | None
               ) -> tuple[dict[str, list], dict[int, tuple[Any, ...]], int]:
    """Trace every planned row, batch by batch: (what each batch keeps per key, the selected rows'
    states, the rows of the per-step tables handed to ``on_traces``)."""
    acc: dict[str, list] = {k: [] for k in _TRACED}
    states: dict[int, tuple[Any, ...]] = {}
    trace_rows = 0
    batch = functools.partial(_trace_batch, run, source, plan)
    bar = _bar(run.progress, plan.rows.size, "traces")
    try:
        for out in shared_map(batch, range(0, plan.rows.size, run.settings.batch_size), run.d,
                              _NoBadBatches.of(run.store), "traces", rank0_only=("table",)):
            if "bad" in out:
                raise TokenError(out["bad"], run.rules)
            if "table" in out:  # the per-step table goes to rank 0 alone (it writes traces.parquet)
                if on_traces is not None:
                    on_traces(out["table"])
                trace_rows += out["table"].num_rows
            states.update(out["states"])
            for key, value in out["acc"].items():
                acc[key].append(value)
            bar.update(out["rows"])
    finally:
        bar.close()
    return acc, states, trace_rows


def _concatenate(acc: dict[str, list]) -> dict[str, np.ndarray]:
    """The batches of each key as one array: per-segment arrays are [S, puzzles]; the rest [puzzles]."""
    return {k: np.concatenate(v, axis=1 if k in _PER_SEGMENT else 0) for k, v in acc.items()}


def _trace_summaries(cat: dict[str, np.ndarray], plan: _TracePlan, st: AnalysisSettings, rules: EvalRules
                     ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """What the traces tell: (summary, tables: puzzles, residuals, critical, critical_aligned, residual
    curves). The per-puzzle table holds every traced row (the selected ones outside the sample too);
    the rest is of the sample."""
    m = plan.in_sample
    seg_exact, seg_blank = cat["exact"][:, m], cat["blank_acc"][:, m]
    final_exact = seg_exact[-1]
    classes = classify(cat["res"][:, m], cat["ret"][m], st.tol, st.tail)
    viol = violations(classes, cat["changes"][m])
    crit = critical_step(seg_exact)
    tables: dict[str, Any] = {"puzzles": _puzzle_columns(cat, plan, st, rules)}

    summary: dict[str, Any] = {"exact_accuracy": float(final_exact.mean())}
    last_blank = seg_blank[-1].astype(np.float64)
    summary["blank_accuracy"] = float(np.nanmean(last_blank)) if not np.isnan(last_blank).all() else None
    summary["fixed_point"] = fixed_point_summary(classes, viol, final_exact, cat["res_H"][:, m], cat["res_L"][:, m])
    summary["fixed_point"].update({"tol": st.tol, "tail": tail_window(st.segments, st.tail)})
    summary["critical"] = critical_summary(seg_exact, seg_blank, cat["blank_wrong"][:, m])

    res_rows = residual_curves(cat["res_H"][:, m], cat["res_L"][:, m], final_exact)
    tables["residuals"] = _wide_residuals(res_rows, st.segments)
    tables["critical"] = critical_histogram(crit, st.segments)
    tables["critical_aligned"] = aligned_curve(seg_blank, crit)
    return summary, tables, res_rows


def _puzzle_columns(cat: dict[str, np.ndarray], plan: _TracePlan, st: AnalysisSettings, rules: EvalRules
                    ) -> dict[str, np.ndarray]:
    """The per-puzzle table: one row per traced row."""
    all_classes = classify(cat["res"], cat["ret"], st.tol, st.tail)
    all_changes = cat["changes"]
    return {
        "row": plan.rows, "raw_index": cat["raw_index"], "puzzle_id": cat["puzzle_id"], "rating": cat["rating"],
        "in_sample": plan.in_sample,
        "blanks": rules.blank_cells(cat["inputs"], cat["labels"]).sum(1).astype(np.int16),
        "exact": cat["exact"][-1], "blank_acc": cat["blank_acc"][-1], rules.error_name: cat["conflicts"].astype(np.int16),
        "critical_step": critical_step(cat["exact"]), "first_correct": first_correct(cat["exact"]),
        "convergence": np.asarray(CLASS_NAMES)[all_classes], "answer_changes_tail": all_changes,
        "violation": violations(all_classes, all_changes),
        "final_res_H": cat["res_H"][-1], "final_res_L": cat["res_L"][-1], "return_ratio": cat["ret"],
    }


def _easy_phase(run: _Run, inputs: np.ndarray, labels: np.ndarray, identifiers: np.ndarray, solved: np.ndarray
                ) -> list[dict[str, Any]]:
    """The easy probe (hrm.analysis.easy) on its sub-sample of the sample; its table's rows."""
    st = run.settings
    pick = eval_rows(inputs.shape[0], st.easy_sample or None, st.seed)
    bar = _bar(run.progress, pick.size * len(st.easy_k), "easy probe")
    try:
        return easy_probe(run.model, inputs[pick].astype(np.int32), labels[pick].astype(np.int32), st.easy_k,
                          seed=st.seed, segments=st.segments, batch_size=st.batch_size, tol=st.tol,
                          tail=st.tail, solved=solved[pick], progress=bar.update, d=run.d,
                          store=run.store, identifiers=identifiers[pick], rules=run.rules)
    finally:
        bar.close()


def _multistability_phase(run: _Run, inputs: np.ndarray, labels: np.ndarray, identifiers: np.ndarray
                          ) -> MultiStability:
    """The multistability runs (hrm.analysis.fixed_points.run_perturbed) of the puzzles ``inputs``."""
    st = run.settings
    runs = PerturbedRuns(shifts=st.shifts, noise_runs=st.noise_runs, noise_std=st.noise_std or None,
                         noise=tuple(st.noise), seed=st.seed, segments=st.segments, tol=st.tol, tail=st.tail,
                         cluster_tol=st.cluster_tol, batch_size=max(1, st.batch_size // st.perturbed_runs))
    bar = _bar(run.progress, inputs.shape[0], "multistability")
    try:
        return run_perturbed(run.model, inputs.astype(np.int32), labels.astype(np.int32), runs,
                             progress=bar.update, d=run.d, store=run.store, identifiers=identifiers,
                             rules=run.rules)
    finally:
        bar.close()


def _multistability_counts(ms: MultiStability) -> list[dict[str, int]]:
    """Puzzles per number of distinct answers (over all runs, and over the converged runs)."""
    top = int(max(ms.n_answers.max(initial=1), 1))
    return [{"distinct_answers": a, "puzzles_all_runs": int((ms.n_answers == a).sum()),
             "puzzles_converged_runs": int((ms.n_stable_answers == a).sum())} for a in range(top + 1)]


def _landscape_phase(run: _Run, states: dict[int, tuple[Any, ...]]
                     ) -> tuple[list[PuzzleFigure], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The landscape of every selected puzzle around its centre segment's state: (the figures, the
    landscape table's parts, the summary's ``landscapes``)."""
    st, rules = run.settings, run.rules
    c = architecture_of(run.model).steps_per_segment(run.model.config)  # steps per segment

    def landscape_of(row: int) -> Landscape:
        z_h, z_l, x, y, identifier = states[row][:5]
        centre = st.center_segment * c - 1  # the last step of the centre segment
        return landscape(run.model, x, z_h, (z_h[centre], z_l[centre]), center_segment=st.center_segment, labels=y,
                         radius=st.landscape_radius, divisor=st.landscape_divisor, flow=st.flow,
                         batch_size=max(st.batch_size, 64), puzzle_identifier=identifier, rules=rules)

    figures, table, summary = [], [], {}
    bar = _bar(run.progress, len(states), "landscapes")
    try:
        for row, land in zip(sorted(states), shared_map(landscape_of, sorted(states), run.d, run.store, "landscape")):
            pcs, ratio, raw_index = states[row][5:]
            figures.append(PuzzleFigure(row=row, raw_index=raw_index, pcs=pcs, pca_ratio=ratio, landscape=land))
            table.append(_landscape_columns(row, land, rules))
            r = st.landscape_radius
            summary[str(row)] = {
                "raw_index": raw_index, "scale": land.scale, "pca_ratio_1": float(land.ratio[0]),
                "pca_ratio_2": float(land.ratio[1]), f"centre_{rules.error_name}": int(land.conflicts[r, r]),
                f"min_{rules.error_name}": int(land.conflicts.min()), "exact_area": float(land.exact.mean()),
            }
            bar.update(1)
    finally:
        bar.close()
    return figures, table, summary


def _landscape_columns(row: int, land: Landscape, rules: EvalRules) -> dict[str, Any]:
    """The landscape table's part of one puzzle: one row per grid point."""
    i_grid, j_grid = land.grid()
    return {
        "row": np.full(i_grid.size, row, np.int64), "i": i_grid.ravel().astype(np.int16),
        "j": j_grid.ravel().astype(np.int16), rules.error_name: land.conflicts.ravel().astype(np.int16),
        rules.mark_name: land.digits.ravel().astype(np.int16), "exact": land.exact.ravel(),
        # Without the flow: None (null columns, so the table's schema does not depend on it).
        "dest_i": None if land.dest is None else land.dest[..., 0].ravel(),
        "dest_j": None if land.dest is None else land.dest[..., 1].ravel()}


class _NoBadBatches:
    """A store that keeps no refusal ({"bad": rows}): a fixed dataset's batches are run, not the refusal read."""

    def __init__(self, store: ResultStore):
        self.store = store

    @classmethod
    def of(cls, store: ResultStore | None) -> "_NoBadBatches | None":
        return None if store is None else cls(store)

    def load(self, name: str) -> Any | None:
        return self.store.load(name)

    def save(self, name: str, value: Any) -> None:
        if "bad" not in value:
            self.store.save(name, value)


def _wide_residuals(rows: list[dict[str, Any]], segments: int) -> list[dict[str, Any]]:
    """One row per segment; columns <res_H|res_L>_<median|q25|q75>_<all|correct|wrong> (None for an empty group)."""
    out = []
    for s in range(1, segments + 1):
        row: dict[str, Any] = {"segment": s}
        for group in ("all", "correct", "wrong"):
            hit = next((r for r in rows if r["segment"] == s and r["group"] == group), None)
            row[f"n_{group}"] = hit["n"] if hit else 0
            for name in ("res_H", "res_L"):
                for stat in ("median", "q25", "q75"):
                    row[f"{name}_{stat}_{group}"] = hit[f"{name}_{stat}"] if hit else None
        out.append(row)
    return out


def _multistability_columns(ms: MultiStability, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One entry per (puzzle, run), puzzle-major; ``rows``: the puzzles' rows of the split."""
    r_count, n = ms.exact.shape

    def flat(a):  # [R, N] -> [N * R]
        return np.ascontiguousarray(np.asarray(a).T).reshape(-1)

    return {
        "row": np.repeat(rows, r_count), "run": np.tile(np.arange(r_count), n).astype(np.int16),
        "kind": np.tile(ms.kind, n), "param": np.tile(ms.param, n).astype(np.int16),
        "exact": flat(ms.exact), "convergence": np.asarray(CLASS_NAMES)[flat(ms.classes)],
        "trapped": flat(ms.trapped), ms.error_name: flat(ms.conflicts).astype(np.int16),
        "final_res": flat(ms.final_res), "answer_id": flat(ms.answer_id), "state_id": flat(ms.state_id),
        "answer": np.ascontiguousarray(ms.answers.transpose(1, 0, 2)).reshape(-1, ms.answers.shape[-1]),
    }


def trace_table(tr: Trace, meta: dict[str, np.ndarray], scores: dict[str, np.ndarray], conflicts: np.ndarray,
                changed: np.ndarray, store: np.ndarray, error_name: str = "conflicts"):
    """The per-step table of one traced batch (pyarrow): B x T rows, puzzle-major.

    ``meta``: per-puzzle row, raw_index, puzzle_id, rating, blanks, in_sample; ``scores`` / ``conflicts`` /
    ``changed``: per step [T, B]; ``store`` bool [B]: the puzzles whose z_H / z_L go in the table;
    ``error_name``: the column of ``conflicts`` (the task's error measure, EvalRules.error_name).
    """
    import pyarrow as pa

    t, b = tr.res_H.shape
    c = tr.h_cycles
    step = np.arange(1, t + 1)
    seg_end = (step % c) == 0

    def per_step(a):  # [T, B] -> [B * T]
        return np.ascontiguousarray(np.asarray(a).T).reshape(-1)

    def per_puzzle(a):
        return np.repeat(np.asarray(a), t)

    q_halt = np.full((t, b), np.nan, np.float32)
    q_cont = np.full((t, b), np.nan, np.float32)
    q_halt[seg_end] = tr.q_halt
    q_cont[seg_end] = tr.q_continue
    end_mask = per_step(np.repeat(~seg_end[:, None], b, 1))
    preds = np.ascontiguousarray(tr.predictions.transpose(1, 0, 2)).reshape(-1)
    cols = {
        "row": pa.array(per_puzzle(meta["row"]).astype(np.int64)),
        "raw_index": pa.array(per_puzzle(meta["raw_index"]).astype(np.int32)),
        "puzzle_id": pa.array(per_puzzle(meta["puzzle_id"]).astype(np.int32)),
        "rating": pa.array(per_puzzle(meta["rating"]).astype(np.int32)),
        "blanks": pa.array(per_puzzle(meta["blanks"]).astype(np.int16)),
        "in_sample": pa.array(per_puzzle(meta["in_sample"]).astype(bool)),
        "step": pa.array(np.tile(step, b).astype(np.int16)),
        "segment": pa.array(np.tile((step - 1) // c + 1, b).astype(np.int16)),
        "cycle": pa.array(np.tile((step - 1) % c + 1, b).astype(np.int16)),
        "segment_end": pa.array(np.tile(seg_end, b)),
        "prediction": pa.FixedSizeListArray.from_arrays(pa.array(preds, pa.uint8()), tr.predictions.shape[-1]),
        error_name: pa.array(per_step(conflicts).astype(np.int16)),
        "exact": pa.array(per_step(scores["exact"])),
        "cell_acc": pa.array(per_step(scores["cell_acc"]).astype(np.float32)),
        "blank_acc": pa.array(per_step(scores["blank_acc"]).astype(np.float32), from_pandas=True),
        "changed": pa.array(per_step(changed).astype(np.int16), mask=np.tile(step == 1, b)),
        "res_H": pa.array(per_step(tr.res_H).astype(np.float32)),
        "res_L": pa.array(per_step(tr.res_L).astype(np.float32)),
        "norm_H": pa.array(per_step(tr.norm_H).astype(np.float32)),
        "norm_L": pa.array(per_step(tr.norm_L).astype(np.float32)),
        "q_halt": pa.array(per_step(q_halt), mask=end_mask),
        "q_continue": pa.array(per_step(q_cont), mask=end_mask),
        "pc1": pa.array(per_step(tr.pcs[..., 0]).astype(np.float32)),
        "pc2": pa.array(per_step(tr.pcs[..., 1]).astype(np.float32)),
    }
    # States of the stored puzzles as large_list<float32> (null elsewhere; no values stored for nulls).
    d = None if tr.z_H is None else int(np.prod(tr.z_H.shape[2:]))
    kept = {} if tr.kept_rows is None else {int(r): k for k, r in enumerate(tr.kept_rows)}
    for name, states in (("z_H", tr.z_H), ("z_L", tr.z_L)):
        rows_stored = [r for r in range(b) if store[r] and r in kept]
        lengths = np.zeros(b * t, np.int64)
        for r in rows_stored:
            lengths[r * t:(r + 1) * t] = d
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if rows_stored:
            values = np.concatenate([states[:, kept[r]].reshape(t, -1).numpy().reshape(-1) for r in rows_stored])
        else:
            values = np.zeros(0, np.float32)
        mask = pa.array(lengths == 0)
        cols[name] = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()), mask=mask)
    return pa.table(cols)
