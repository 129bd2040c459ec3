"""``hrm analyze``: the mechanistic analysis of one checkpoint (hrm.analysis; docs/analyze.md).

Reads a checkpoint (ours or the official code's: a ``step_N`` file, a folder of them, or a
train stage output holding ``checkpoints/``) and a dataset written by ``hrm shard``. Writes,
atomically, under ``--output OUT``::

    OUT/traces.parquet          one row per (puzzle, H update): prediction, conflicts, exactness,
                                residuals, norms, Q values (segment ends), trajectory PCA; z_H and z_L
                                for the --puzzle-index puzzles (or all, --store-states all)
    OUT/puzzles.parquet         one row per puzzle: exactness, critical step, convergence class, ...
    OUT/multistability.parquet  one row per (puzzle, perturbed run): answer class, convergence, trapped
    OUT/landscape.parquet       the landscape grids of the --puzzle-index puzzles
    OUT/metrics.json            the headline numbers (``dvc metrics show``, ``dvc exp show``)
    OUT/summary.json            every number
    OUT/plots/*.csv             curves (drawn by the plots of dvc.yaml: ``dvc plots show``)
    OUT/figures/*.png           figures (trajectories, landscapes, ...)
    OUT/report.md               one page with the numbers and the figures
    OUT/run.json                settings, threads, seconds per phase (the only file that differs between runs)

Resumable: each traced batch, batch of the easy probe, multistability chunk and landscape is kept,
once finished, in ``OUT.resume/`` (pipelines/job.py); the same command continues a stopped run to
the outputs of an uninterrupted one, and ``--restart`` starts over.

The analysis itself is hrm.analysis.analyze; this module resolves the inputs and writes its result.
Settings: the options, or the ``--section`` of a ``--config-file`` (params.yaml's ``analyze``;
options on the command line win).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl

from pipelines.dataset_io import require_stage
from pipelines.device import resolve_device_option
from pipelines.atomic_replace import atomic_output
from pipelines.io import SEED, THREADS, Count, FiniteFloatRange, StageError, check_memory, json_ready, log
from pipelines.output_records import check_apart, claim_output
from pipelines.model_inputs import (check_dataset_encoding, checkpoint_provenance, load_task_model, open_split,
                                    resolve_checkpoints)
from pipelines.plot_csv import write_plot_csv
from pipelines.settings import config_file_options
from pipelines.tables import dataset_metadata

STAGE = "analyze"
FIGURES = {
    "residuals": "Residual vs segment",
    "critical": "Critical step",
    "easy": "Easy-puzzle probe: accuracy vs k",
    "multistability": "Multiple fixed points",
}

# Fixed table schemas: a skipped analysis still writes its table (zero rows), so every DVC out exists.
# Per task (hrm.evaluate.TaskRules): its error measure names a column, its grids are seq_len wide.
def multistability_schema(rules) -> dict:
    return {
        "row": pl.Int64, "run": pl.Int16, "kind": pl.String, "param": pl.Int16, "exact": pl.Boolean,
        "convergence": pl.String, "trapped": pl.Boolean, rules.error_name: pl.Int16, "final_res": pl.Float32,
        "answer_id": pl.Int16, "state_id": pl.Int16, "answer": pl.Array(pl.UInt8, rules.seq_len),
    }


def landscape_schema(rules) -> dict:
    return {
        "row": pl.Int64, "i": pl.Int16, "j": pl.Int16, rules.error_name: pl.Int16, rules.mark_name: pl.Int16,
        "exact": pl.Boolean, "dest_i": pl.Float32, "dest_j": pl.Float32,
    }


# The landscape figure's colour bar, per task.
MULTISTABILITY_CSV = ("distinct_answers", "puzzles_all_runs", "puzzles_converged_runs")
OFF = ("", "none", "off")


def _ints(text: str, what: str) -> list[int]:
    if text.strip().lower() in OFF:
        return []
    try:
        return sorted({int(p) for p in text.replace(" ", "").split(",") if p})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=what) from None


# ----------------------------------------------------------------------------- the command


@click.command("analyze")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="A step_N checkpoint (all_config.yaml beside it), a folder of them (the latest is used), "
                   "or a train output folder holding checkpoints/.")
@click.option("--dataset", type=click.Path(path_type=Path), default=Path("data/datasets"),
              help="A dataset directory (manifest.json), or the shard stage's output (datasets.json) with --variant.")
@click.option("--variant", type=click.Choice(["hint", "vanilla"]), default="hint",
              help="Dataset of a shard stage output (both share the same test split).")
@click.option("--split", default="test", help="Split to analyse.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (replaced atomically).")
@click.option("--sample", type=Count(0), default=200,
              help="Seeded uniform sample of N puzzles of the split (hrm.data.eval_rows); 0 = all.")
@click.option("--seed", type=SEED, default=0, help="Seed of the sample, the easy probe and the noise.")
@click.option("--segments", type=Count(0), default=0,
              help="ACT segments per run; 0 = the model's halt_max_steps.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              help="auto: cuda, else mps, else cpu.")
@click.option("--forward-dtype", type=click.Choice(["float32", "bfloat16", "config"]), default="float32",
              help="Activation dtype; config = the checkpoint's own (bfloat16 for official ones).")
@click.option("--batch-size", type=Count(1), default=64, help="Puzzles per forward batch.")
@click.option("--puzzle-index", default="0",
              help="Puzzles (comma-separated) for trajectory and landscape figures and stored states, numbered as "
                   "--index-by says (none = no landscapes).")
@click.option("--index-by", type=click.Choice(["raw", "row"]), default="raw",
              help="raw: --puzzle-index numbers rows of the raw split file, as the fork's demo indexes the full test "
                   "file; row: rows of the dataset's split (they differ when data.test_size caps the test split).")
@click.option("--store-states", type=click.Choice(["selected", "all", "none"]), default="selected",
              help="Store z_H / z_L of every step in traces.parquet for the --puzzle-index puzzles, all, or none.")
@click.option("--tol", type=FiniteFloatRange(min=0), default=0.01, help="Convergence: joint residual <= tol on the tail.")
@click.option("--tail", type=Count(0), default=0, help="Tail segments; 0 = max(1, ceil(segments / 4)).")
@click.option("--lookback", type=Count(2), default=4, help="Largest lag K of the oscillation test.")
@click.option("--easy-k", default="0,1,2,5,10,20", help="Cells left blank in the easy probe (comma-separated; none = skip).")
@click.option("--easy-sample", type=Count(0), default=100,
              help="Puzzles of the sample for the easy probe; 0 = all.")
@click.option("--shifts", type=click.IntRange(0, 9), default=9,
              help="Cyclic digit relabellings (incl. the identity); 0 = skip multistability.")
@click.option("--noise-runs", type=Count(0), default=4,
              help="Runs from a noisy initial state per puzzle, for each kind of --noise.")
@click.option("--noise", "noise_kinds", default="fork,iid",
              help="Initial-state noise kinds (comma-separated; none = no noise runs): fork = the fork's, one "
                   "truncated-normal vector of hidden size shared by every position; iid = independent per "
                   "position and unit. Multistability is reported per kind too.")
@click.option("--noise-std", type=FiniteFloatRange(min=0), default=0.0,
              help="Std of the initial-state noise (H_init has std 1); 0 = each kind's own (fork 2, the fork's; iid 0.5).")
@click.option("--cluster-tol", type=FiniteFloatRange(min=0), default=0.05,
              help="Relative distance linking two final states.")
@click.option("--fp-sample", type=Count(0), default=32,
              help="Puzzles of the sample for multistability; 0 = all.")
@click.option("--landscape-radius", type=Count(0), default=20, help="Grid offsets -R..R on each PC axis.")
@click.option("--landscape-divisor", type=FiniteFloatRange(min=0, min_open=True), default=8.0,
              help="Grid step = sqrt(state size) / divisor.")
@click.option("--landscape-segment", type=Count(0), default=0, help="Centre segment; 0 = the last.")
@click.option("--landscape-clip", type=FiniteFloatRange(min=0), default=0.0,
              help="Cap of the landscape's colour scale (conflicts above it share the top colour); 0 = the grid's own "
                   "range (the fork: 40).")
@click.option("--flow/--no-flow", default=True, help="Compute the one-segment flow arrows of the landscape.")
@click.option("--num-threads", type=THREADS, default=0, help="torch CPU threads (0: torch's default).")
@click.option("--memory-limit-gb", type=FiniteFloatRange(min=0), default=0.0,
              help="Refuse a run whose estimated memory exceeds this (GB); 0 = 80% of the memory available now. "
                   "Machine-dependent: not a params.yaml setting.")
@click.option("--restart", is_flag=True, default=False,
              help="Drop the finished work of a stopped run in OUT.resume and start over (by default the same "
                   "command continues it).")
@click.option("--progress/--no-progress", default=True,
              help="Progress (puzzles/s, ETA): a bar on a terminal, a line every 30 s otherwise (dvc repro, a log).")
@config_file_options("analyze")
def analyze(**options: Any) -> None:
    """Mechanistic analysis: traces, fixed points, critical steps, easy puzzles, multiple fixed points, landscapes."""
    _analyze(AnalyzeOptions(**options))


@dataclasses.dataclass(frozen=True)
class AnalyzeOptions:
    """The options of ``hrm analyze`` as given (one field per option, same names, same order)."""

    checkpoint: Path
    dataset: Path
    variant: str
    split: str
    output: Path
    sample: int
    seed: int
    segments: int
    device: str
    forward_dtype: str
    batch_size: int
    puzzle_index: str
    index_by: str
    store_states: str
    tol: float
    tail: int
    lookback: int
    easy_k: str
    easy_sample: int
    shifts: int
    noise_runs: int
    noise_kinds: str
    noise_std: float
    cluster_tol: float
    fp_sample: int
    landscape_radius: int
    landscape_divisor: float
    landscape_segment: int
    landscape_clip: float
    flow: bool
    num_threads: int
    memory_limit_gb: float
    restart: bool
    progress: bool


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What the options name, resolved and checked before the model is loaded."""

    asked: list[int]  # --puzzle-index
    noise: tuple[str, ...]
    checkpoint_file: Path
    ds: Any  # pipelines.model_inputs.open_split's dataset split
    rules: Any  # the task's rules (hrm.tasks: Task.rules)
    easy_k: list[int]
    selected: list[int]  # the split rows of --puzzle-index


def _resolve_inputs(opts: AnalyzeOptions) -> _Inputs:
    """Both inputs are checked before the model is loaded: a wrong path fails at once, naming it."""
    from hrm.analysis import parse_ks

    asked = _ints(opts.puzzle_index, "--puzzle-index")
    noise = _noise_kinds(opts.noise_kinds)
    checkpoint_file = resolve_checkpoints([opts.checkpoint], last=1)[0]  # a step_N file, or a run's last one
    ds = open_split(opts.dataset, opts.variant, opts.split)
    check_apart(opts.output, [opts.dataset, opts.checkpoint, checkpoint_file.parent])
    require_stage(ds.task, "analyze", ds.dataset_dir / "manifest.json")
    rules = ds.task.rules  # the task the dataset's manifest names
    try:
        ks = [] if opts.easy_k.strip().lower() in OFF else parse_ks(opts.easy_k, rules.seq_len)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--easy-k") from None
    if ks and rules.revealable is None:
        raise StageError(f"--easy-k {opts.easy_k}: {ds.dataset_dir / 'manifest.json'} holds {rules.task} {ds.task.noun}s, "
                         "whose inputs hold no blank cells to reveal from the label; use --easy-k none")
    if rules.max_shifts is not None and opts.shifts > rules.max_shifts:
        raise StageError(f"--shifts {opts.shifts}: {ds.dataset_dir / 'manifest.json'} holds {ds.task.noun}s, which have "
                         f"{rules.max_shifts} relabellings ({ds.task.words['relabellings']}); use --shifts "
                         f"{rules.max_shifts} or less")
    selected = _selected_rows(ds, asked, opts.index_by)
    return _Inputs(asked=asked, noise=noise, checkpoint_file=checkpoint_file, ds=ds, rules=rules, easy_k=ks,
                   selected=selected)


def _analyze(opts: AnalyzeOptions) -> None:
    import torch

    from hrm.distributed import DistributedError, finish, init_distributed, rank_device
    from pipelines.job import Job, check_ranks_agree, job_folder, job_lock

    started = time.time()
    if opts.num_threads:
        torch.set_num_threads(opts.num_threads)
    inputs = _resolve_inputs(opts)
    # Under torchrun the ranks share the batches of the analysis (same result on every rank); rank 0 writes.
    dev = resolve_device_option(opts.device)
    try:
        d = init_distributed(dev.type)
    except DistributedError as e:
        raise StageError(str(e)) from None
    dev = rank_device(dev, d)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(job_lock(opts.output, d, STAGE))  # one process writes OUTPUT (and OUT.resume) at a time
        if d.rank == 0:
            claim_output(opts.output, STAGE)
        model = load_task_model(inputs.checkpoint_file, dev, None if opts.forward_dtype == "config" else opts.forward_dtype,
                                inputs.ds.task, inputs.ds)
        check_dataset_encoding(inputs.ds, inputs.checkpoint_file, model.config)
        settings, sample_rows = _settings(opts, inputs, model.config)
        run_info = _run_info(opts, inputs, model, settings, sample_rows)
        job_settings = _job_settings(opts, inputs, model, settings, sample_rows, run_info)
        check_ranks_agree(job_settings, d)
        job = Job(job_folder(opts.output), job_settings, d, STAGE)
        resumed = job.open(opts.restart)
        if resumed and d.rank == 0:
            log(STAGE, f"continuing {job.folder}: its finished batches are read, not run again")
        metrics = _analyze_in_job(opts, inputs, model, settings, sample_rows, run_info, d, job, resumed)
        if metrics is None:  # a rank but 0: its share is done, rank 0 writes
            return
        job.remove()  # the outputs are in place: the finished batches are not needed any more
        log(STAGE, f"{metrics['run']['puzzles']} puzzles, exact accuracy {metrics['exact_accuracy']:.4f}, "
            f"{time.time() - started:.1f} s -> {opts.output}")
    finally:
        lock.close()
        finish(d)


def _settings(opts: AnalyzeOptions, inputs: _Inputs, cfg) -> tuple[Any, np.ndarray]:
    """The analysis settings (hrm.analysis.AnalysisSettings) and the sample's rows, checked against the
    model (its segments) and the memory limit."""
    from hrm.analysis import AnalysisSettings
    from hrm.data import eval_rows

    s_count = opts.segments or cfg.halt_max_steps
    if opts.landscape_segment > s_count:
        raise click.BadParameter(f"{opts.landscape_segment} > segments ({s_count})", param_hint="--landscape-segment")

    sample_rows = eval_rows(inputs.ds.num_examples, opts.sample or None, opts.seed)
    if sample_rows.size == 0:
        raise StageError(f"{inputs.ds.dataset_dir}: the {opts.split} split is empty")
    settings = AnalysisSettings(
        segments=s_count, seed=opts.seed, batch_size=opts.batch_size, store_states=opts.store_states, tol=opts.tol,
        tail=opts.tail, lookback=opts.lookback, easy_k=inputs.easy_k, easy_sample=opts.easy_sample, shifts=opts.shifts,
        noise_runs=opts.noise_runs, noise_std=opts.noise_std, noise=inputs.noise, cluster_tol=opts.cluster_tol,
        fp_sample=opts.fp_sample, landscape_radius=opts.landscape_radius, landscape_divisor=opts.landscape_divisor,
        landscape_segment=opts.landscape_segment, flow=opts.flow)
    _check_memory(cfg, settings, sample_rows, inputs.selected, opts.memory_limit_gb)
    return settings, sample_rows


def _run_info(opts: AnalyzeOptions, inputs: _Inputs, model, settings, sample_rows: np.ndarray) -> dict[str, Any]:
    """What run.json and summary.json say of the run."""
    from hrm.model.registry import architecture_of

    cfg, ds = model.config, inputs.ds
    return {
        "checkpoint": str(opts.checkpoint), "dataset": str(ds.dataset_dir), "split": opts.split,
        "puzzles": int(sample_rows.size), "seed": opts.seed, "segments": settings.segments,
        "h_cycles": architecture_of(model).steps_per_segment(cfg), "hidden_size": cfg.hidden_size, "device": str(model.device),
        "forward_dtype": str(cfg.forward_dtype if opts.forward_dtype == "config" else opts.forward_dtype),
        "puzzle_index": {"by": opts.index_by, "asked": inputs.asked, "rows": inputs.selected,
                         "raw_index": ds.gather(np.asarray(inputs.selected, np.int64))["raw_index"].tolist()},
    }


def _job_settings(opts: AnalyzeOptions, inputs: _Inputs, model, settings, sample_rows: np.ndarray,
                  run_info: dict[str, Any]) -> dict[str, Any]:
    """What a result depends on (not the number of ranks or threads): ranks must agree on it, and a
    stopped run continues only under the same."""
    from hrm import __version__
    from hrm.manifest import file_sha256

    ds = inputs.ds
    return json.loads(json.dumps({
        "checkpoint": {"file": str(inputs.checkpoint_file), "sha256": file_sha256(inputs.checkpoint_file)},
        "dataset": {"dir": str(ds.dataset_dir), "manifest_sha256": file_sha256(ds.dataset_dir / "manifest.json")},
        "split": opts.split, "sample": opts.sample,
        "rows": {"count": int(sample_rows.size), "sha256": hashlib.sha256(sample_rows.astype("<i8").tobytes()).hexdigest()},
        "selected": inputs.selected, "settings": dataclasses.asdict(settings), "device": model.device.type,
        "forward_dtype": run_info["forward_dtype"], "hrm": __version__,
    }))


def _analyze_in_job(opts: AnalyzeOptions, inputs: _Inputs, model, settings, sample_rows: np.ndarray,
                    run_info: dict[str, Any], d, job, resumed: bool) -> dict[str, Any] | None:
    """Run the analysis under ``job`` (its finished units kept for a rerun); rank 0 writes the output and
    returns its metrics, the other ranks run their share and return None."""
    from hrm.analysis import NonFiniteError, TokenError, analyze

    ds, selected = inputs.ds, np.asarray(inputs.selected, np.int64)
    try:
        if d.rank != 0:  # this rank's share of the batches (hrm.analysis.analyze ``d``); rank 0 writes
            try:
                analyze(model, ds, sample_rows, selected, settings, d=d, store=job, rules=inputs.rules)
            except TokenError as e:
                raise StageError(f"{ds.dataset_dir}: split {ds.split!r} {e}") from None
            return None
        with atomic_output(opts.output, stage=STAGE) as tmp:
            tmp.mkdir(parents=True)
            (tmp / "plots").mkdir()
            return _run(model, ds, tmp, sample_rows, selected, settings, opts.landscape_clip,
                        opts.progress, run_info, d, job, resumed, inputs.rules)
    except NonFiniteError as e:
        job.remove()  # its units were computed under settings refused here: of no use to a rerun
        raise non_finite_error(e, settings) from None
    except KeyboardInterrupt:
        if d.rank == 0:
            log(STAGE, f"stopped with {_units(job)} finished batch(es) kept in {job.folder}; the same command "
                       "continues from there")
        raise


def non_finite_error(e, settings) -> StageError:
    """A result that came out NaN or inf (hrm.analysis.NonFiniteError) is refused, not written as figures,
    naming the setting behind it and its value."""
    values = {"--landscape-divisor": settings.landscape_divisor, "--noise-std": settings.noise_std}
    if e.option in values:
        default = next(p.default for p in analyze.params if e.option in p.opts)
        return StageError(f"{e.option} {values[e.option]:g}: {e}; nothing was written. Choose a value nearer the "
                          f"default ({default:g})")
    return StageError(f"{e}; nothing was written (the model's states overflow float32 with these settings)")


def _units(job) -> int:
    """Finished units in the job folder (renamed into place after their sha256: complete)."""
    from pipelines.job import UNIT_SUFFIX

    return len(list(job.folder.glob(f"*{UNIT_SUFFIX}"))) if job.folder.is_dir() else 0


def _selected_rows(ds, asked: list[int], index_by: str) -> list[int]:
    """The split rows --puzzle-index names: raw-file rows (--index-by raw) or split rows (row), each checked."""
    if index_by == "row":
        bad = [i for i in asked if not 0 <= i < ds.num_examples]
        if bad:
            raise StageError(f"{ds.dataset_dir}: --puzzle-index {bad} (--index-by row) outside the {ds.split} split's "
                             f"rows 0..{ds.num_examples - 1}")
        return asked
    rows = ds.rows_of_raw(asked)
    missing = [i for i, r in zip(asked, rows) if r < 0]
    if missing:
        held = np.sort(ds.gather(ds.group_starts)["raw_index"])
        near = sorted({int(held[min(np.searchsorted(held, i), held.size - 1)]) for i in missing})
        capped = " (data.test_size capped it)" if ds.manifest.get("test_capped") and ds.split == "test" else ""
        raise StageError(f"{ds.dataset_dir}: --puzzle-index {missing} (rows of the raw {ds.split} file, --index-by raw): "
                         f"not in the {ds.split} split, which holds {held.size:,} of them{capped}; it holds e.g. "
                         f"{', '.join(map(str, near))}, or use --index-by row for rows of the split")
    return sorted(int(r) for r in rows)


def _noise_kinds(text: str) -> tuple[str, ...]:
    """--noise: kinds of hrm.analysis.fixed_points.NOISE_KINDS, comma-separated, or none."""
    from hrm.analysis.fixed_points import NOISE_KINDS

    if text.strip().lower() in OFF:
        return ()
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in NOISE_KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"{text!r}: kinds among {', '.join(NOISE_KINDS)} (comma-separated), or none",
                                 param_hint="--noise")
    return kinds


def _check_memory(cfg, settings, sample_rows: np.ndarray, selected: list[int], limit_gb: float) -> None:
    """Refuse, before any work, a run whose estimated memory (hrm.analysis.estimate_memory) is above the
    limit (--memory-limit-gb; 0: 80% of the memory available now), naming the options to lower."""
    from hrm.analysis import estimate_memory

    n_rows = int(np.union1d(sample_rows, np.asarray(selected, np.int64)).size)
    est = estimate_memory(cfg, settings, n_rows, len(set(selected)), n_sample=int(sample_rows.size))
    check_memory(STAGE, est.bytes, est.settings(), f"the {est.peak.name}", list(est.peak.options) or ["--segments"],
                 limit_gb=limit_gb, limit_option="--memory-limit-gb")


def _run(model, ds, out: Path, sample_rows: np.ndarray, selected: np.ndarray, settings, clip: float, progress: bool,
         run_info: dict[str, Any], d, store, resumed: bool, rules) -> dict[str, Any]:
    """Run the analysis (hrm.analysis.analyze) and write every file of the output directory ``out``."""
    result = _analyze_writing_traces(model, ds, out / "traces.parquet", sample_rows, selected, settings, progress, d,
                                     store, rules)
    started = time.time()
    figures, skipped = _write_tables_and_figures(result, ds, out, settings, clip, run_info["puzzle_index"]["by"], rules)
    run_info = {**run_info, "trace_rows": result.trace_rows}
    metrics: dict[str, Any] = {"run": run_info, **result.summary}
    if skipped:
        metrics["skipped"] = skipped
    metrics = json_ready(metrics)
    from hrm.model.registry import architecture_record

    arch = architecture_record([model])  # in run.json and the report's title (summary.json as it was)
    _write_summaries(out, metrics, figures, result.tables, title=f"{arch['label']} mechanistic analysis")
    # Timings go to run.json and the log only: every other output is byte-identical between runs.
    import torch

    phases = {**result.seconds, "figures": round(time.time() - started, 2)}
    run = {**run_info, "arch": arch, "seconds_by_phase": phases, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "resumed": resumed,  # and published weights: where they came from (docs/weights.md)
           **checkpoint_provenance(resolve_checkpoints([Path(run_info["checkpoint"])], last=1))}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    log(STAGE, "seconds by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    return metrics


def _analyze_writing_traces(model, ds, traces_file: Path, sample_rows: np.ndarray, selected: np.ndarray, settings,
                            progress: bool, d, store, rules):
    """hrm.analysis.analyze, its per-step tables written to ``traces_file`` batch by batch as they come."""
    import pyarrow.parquet as pq

    from hrm.analysis import TokenError, analyze

    writer = None

    def write_traces(table) -> None:
        nonlocal writer
        if writer is None:
            writer = pq.ParquetWriter(traces_file, table.schema, compression="zstd")
        writer.write_table(table)

    try:
        return analyze(model, ds, sample_rows, selected, settings, on_traces=write_traces, progress=progress, d=d,
                       store=store, rules=rules)
    except TokenError as e:
        raise StageError(f"{ds.dataset_dir}: split {ds.split!r} {e}") from None
    finally:
        if writer is not None:
            writer.close()


def _write_tables_and_figures(result, ds, out: Path, settings, clip: float, index_by: str, rules
                              ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Write the tables, plot CSVs and figures of ``result``; returns (the figures, as (title, file) for the
    report; the analyses switched off, with the reason). A switched-off analysis still writes its tables
    (zero rows, same schema)."""
    from hrm.analysis import EASY_COLUMNS, plots

    t = result.tables
    plots_dir, figures_dir = out / "plots", out / "figures"  # CSVs (drawn by dvc.yaml's plots), PNGs
    figures_dir.mkdir()
    pl.DataFrame(t["puzzles"]).write_parquet(out / "puzzles.parquet", compression="zstd",
                                             metadata=dataset_metadata(ds.dataset_dir, ds.split))
    figures: list[tuple[str, str]] = []
    write_plot_csv(plots_dir / "residuals.csv", t["residuals"])
    plots.plot_residuals(result.residual_rows, figures_dir / "residuals.png")
    figures.append((FIGURES["residuals"], "figures/residuals.png"))
    write_plot_csv(plots_dir / "critical.csv", t["critical"])
    write_plot_csv(plots_dir / "critical_aligned.csv", t["critical_aligned"])
    plots.plot_critical(t["critical"], figures_dir / "critical.png", t["critical_aligned"])
    figures.append((FIGURES["critical"], "figures/critical.png"))

    skipped: dict[str, str] = {}
    write_plot_csv(plots_dir / "easy.csv", t["easy"], header=EASY_COLUMNS)
    if settings.runs_easy:
        plots.plot_easy(t["easy"], figures_dir / "easy.png")
        figures.append((FIGURES["easy"], "figures/easy.png"))
    else:
        skipped["easy"] = "--easy-k none: no k to probe"
    _frame(t["multistability"], multistability_schema(rules)).write_parquet(out / "multistability.parquet", compression="zstd")
    write_plot_csv(plots_dir / "multistability.csv", t["multistability_counts"], header=MULTISTABILITY_CSV)
    if result.multistability is not None:
        ms = result.multistability
        plots.plot_multistability(ms.n_answers, ms.n_stable_answers, figures_dir / "multistability.png")
        figures.append((FIGURES["multistability"], "figures/multistability.png"))
    else:
        skipped["multistability"] = ("--shifts 0" if settings.shifts == 0 else
                                     "--shifts 1 and no noise run (--noise-runs 0 or --noise none): no perturbed run besides the plain one")
    figures += _write_puzzle_figures(result, ds, figures_dir, clip, index_by, rules)
    if not result.puzzle_figures:
        skipped["landscapes"] = "--puzzle-index none: no puzzle selected for trajectories and landscapes"
    lands = [_frame(cols, landscape_schema(rules)) for cols in t["landscape"]]
    (pl.concat(lands) if lands else _frame(None, landscape_schema(rules))).write_parquet(out / "landscape.parquet",
                                                                                  compression="zstd")
    return figures, skipped


def _write_puzzle_figures(result, ds, figures_dir: Path, clip: float, index_by: str, rules) -> list[tuple[str, str]]:
    """The trajectory and landscape figures of each selected puzzle; returns them as (title, file)."""
    from hrm.analysis import plots

    figures = []
    for fig in result.puzzle_figures:
        # Named by the index --puzzle-index used; the title gives both (raw file row, split row).
        name = f"raw{fig.raw_index}" if index_by == "raw" else f"row{fig.row}"
        which = f"raw {ds.split} file row {fig.raw_index}, split row {fig.row}"
        plots.plot_trajectory(fig.pcs, figures_dir / f"trajectory_{name}.png", h_cycles=result.h_cycles,
                              ratio=fig.pca_ratio, title=f"Reasoning trajectory, puzzle at {which}")
        figures.append((f"Trajectory of the puzzle at {which} (z_H, PCA)", f"figures/trajectory_{name}.png"))
        plots.plot_landscape(fig.landscape, figures_dir / f"landscape_{name}.png", clip=clip,
                             title=f"Error landscape, puzzle at {which}", error_label=ds.task.words["error_label"])
        figures.append((f"Error landscape of the puzzle at {which}", f"figures/landscape_{name}.png"))
    return figures


def _write_summaries(out: Path, metrics: dict[str, Any], figures: list[tuple[str, str]], tables: dict[str, Any],
                     title: str) -> None:
    """summary.json (every number), metrics.json (the headline ones) and report.md (``title``)."""
    from hrm.analysis import render_report

    (out / "summary.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(headline_metrics(metrics), indent=2) + "\n")
    (out / "report.md").write_text(render_report(metrics, figures, easy_rows=json_ready(tables["easy"]),
                                                 critical_rows=json_ready(tables["critical"]), title=title))


def headline_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` / `dvc exp show` compare: accuracy, the fixed-point classes, the critical
    step, the easy probe's exact accuracy per k, multistability (summary.json holds everything)."""
    out: dict[str, Any] = {k: summary[k] for k in ("exact_accuracy", "blank_accuracy")}
    fp = summary.get("fixed_point") or {}
    out["fixed_point"] = {k: fp.get(k) for k in ("converged", "oscillating", "drifting", "violation_rate")}
    crit = summary.get("critical") or {}
    out["critical"] = {k: crit.get(k) for k in ("solved", "lost")}
    easy = summary.get("easy") or {}
    if easy:
        out["easy"] = {k: v for k, v in easy.items() if not k.startswith("violations_")}
    ms = summary.get("multistability") or {}
    if ms:
        out["multistability"] = {k: ms.get(k) for k in ("puzzles_with_several_answers", "mean_distinct_answers")}
        for name, rates in (ms.get("by_perturbation") or {}).items():  # how much the conclusion depends on the perturbation
            out["multistability"][f"several_stable_answers_{name}"] = rates["puzzles_with_several_stable_answers"]
    return out


def _frame(columns: dict[str, Any] | None, schema: dict[str, Any]) -> pl.DataFrame:
    """A table of ``schema`` from the library's columns (None: no rows): a 2-D array becomes a fixed-size
    list column, a None column a null one."""
    if columns is None:
        return pl.DataFrame(schema=schema)
    n = len(next(v for v in columns.values() if v is not None))
    return pl.DataFrame({k: pl.Series([None] * n, dtype=schema[k]) if v is None else
                         pl.Series(v, dtype=schema[k]) if np.ndim(v) == 2 else v
                         for k, v in columns.items()}, schema=schema)


if __name__ == "__main__":  # torchrun --nproc-per-node N -m pipelines.analyze [OPTIONS]
    from pipelines.cli import main

    main(analyze, prog_name="hrm analyze")
