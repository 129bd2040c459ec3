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
    OUT/metrics.json            the numbers (``dvc metrics show``)
    OUT/plots/*.csv, *.png      curves (``dvc plots show``) and figures
    OUT/report.md               one page with the numbers and the figures
    OUT/run.json                settings, threads, seconds per phase (the only file that differs between runs)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl

from pipelines.io import StageError, atomic_output, json_ready

FIGURES = {
    "residuals": "Residual vs segment",
    "critical": "Critical step",
    "easy": "Easy-puzzle probe: accuracy vs k",
    "multistability": "Multiple fixed points",
}

# Fixed table schemas: a skipped analysis still writes its table (zero rows), so every DVC out exists.
MULTISTABILITY_SCHEMA = {
    "row": pl.Int64, "run": pl.Int16, "kind": pl.String, "param": pl.Int16, "exact": pl.Boolean,
    "convergence": pl.String, "trapped": pl.Boolean, "conflicts": pl.Int16, "final_res": pl.Float32,
    "answer_id": pl.Int16, "state_id": pl.Int16, "answer": pl.Array(pl.UInt8, 81),
}
LANDSCAPE_SCHEMA = {
    "row": pl.Int64, "i": pl.Int16, "j": pl.Int16, "conflicts": pl.Int16, "digits": pl.Int16, "exact": pl.Boolean,
    "dest_i": pl.Float32, "dest_j": pl.Float32,
}
MULTISTABILITY_CSV = ("distinct_answers", "puzzles_all_runs", "puzzles_converged_runs")
OFF = ("", "none", "off")


def _ints(text: str, what: str) -> list[int]:
    if text.strip().lower() in OFF:
        return []
    try:
        return sorted({int(p) for p in text.replace(" ", "").split(",") if p})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=what) from None


def _load(checkpoint: Path, file: Path, device: str, forward_dtype: str):
    from hrm.model import CheckpointError, load_checkpoint

    try:
        model = load_checkpoint(file, device=device,
                                forward_dtype=None if forward_dtype == "config" else forward_dtype)
    except CheckpointError as e:
        raise StageError(str(e)) from None
    cfg = model.config
    if cfg.seq_len != 81 or cfg.vocab_size != 11:
        raise StageError(f"{checkpoint}: seq_len {cfg.seq_len}, vocab_size {cfg.vocab_size}; the analyses are for "
                         f"Sudoku (81 cells, 11 tokens)")
    return model


def _dataset(dataset: Path, variant: str, split: str):
    from hrm.data import DatasetError, PuzzleDataset
    from pipelines.shard import resolve_dataset

    try:
        return PuzzleDataset(resolve_dataset(dataset, variant), split)
    except DatasetError as e:
        raise StageError(str(e)) from None


def _check_encoding(ds, cfg) -> None:
    enc = ds.manifest.get("encoding") if isinstance(ds.manifest, dict) else None
    if isinstance(enc, dict):
        for key in ("seq_len", "vocab_size"):
            if key in enc and int(enc[key]) != int(getattr(cfg, key)):
                raise StageError(f"{ds.dataset_dir / 'manifest.json'}: encoding.{key} is {enc[key]}, the model "
                                 f"expects {getattr(cfg, key)}")


def _check_tokens(ds, rows: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Inputs must be tokens 0..10 and labels 2..10 (or ignored): name the first bad rows otherwise."""
    bad = ((x < 0) | (x > 10)).any(1) | (((y < 2) | (y > 10)) & (y != -100)).any(1)
    if bad.any():
        raise StageError(f"{ds.dataset_dir}: split {ds.split!r} rows {rows[bad][:10].tolist()} hold tokens outside "
                         f"the Sudoku encoding (inputs 0..10, labels 2..10)")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def _write_csv(rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...] | None = None) -> None:
    """``columns``: the header to write when ``rows`` is empty (a skipped analysis)."""
    if not rows and columns:
        pl.DataFrame(schema={c: pl.Float64 for c in columns}).write_csv(path)
        return
    pl.DataFrame(json_ready(rows), infer_schema_length=None).write_csv(path)


# ----------------------------------------------------------------------------- tables


def _wide_residuals(rows: list[dict[str, Any]], segments: int) -> list[dict[str, Any]]:
    """One row per segment; columns <res_H|res_L>_<median|q25|q75>_<all|correct|wrong> (null for an empty group)."""
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


def _trace_table(tr, meta: dict[str, np.ndarray], scores: dict[str, np.ndarray], conflicts: np.ndarray,
                 changed: np.ndarray, store: np.ndarray):
    """One Arrow table for a batch: rows (puzzle-major) = B x T steps."""
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
        "puzzle_id": pa.array(per_puzzle(meta["puzzle_id"]).astype(np.int32)),
        "rating": pa.array(per_puzzle(meta["rating"]).astype(np.int32)),
        "blanks": pa.array(per_puzzle(meta["blanks"]).astype(np.int16)),
        "in_sample": pa.array(per_puzzle(meta["in_sample"]).astype(bool)),
        "step": pa.array(np.tile(step, b).astype(np.int16)),
        "segment": pa.array(np.tile((step - 1) // c + 1, b).astype(np.int16)),
        "cycle": pa.array(np.tile((step - 1) % c + 1, b).astype(np.int16)),
        "segment_end": pa.array(np.tile(seg_end, b)),
        "prediction": pa.FixedSizeListArray.from_arrays(pa.array(preds, pa.uint8()), 81),
        "conflicts": pa.array(per_step(conflicts).astype(np.int16)),
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
@click.option("--sample", type=click.IntRange(min=0), default=200,
              help="Seeded uniform sample of N puzzles of the split (hrm.data.eval_rows); 0 = all.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of the sample, the easy probe and the noise.")
@click.option("--segments", type=click.IntRange(min=0), default=0,
              help="ACT segments per run; 0 = the model's halt_max_steps.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              help="auto: cuda, else mps, else cpu.")
@click.option("--forward-dtype", type=click.Choice(["float32", "bfloat16", "config"]), default="float32",
              help="Activation dtype; config = the checkpoint's own (bfloat16 for official ones).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Puzzles per forward batch.")
@click.option("--puzzle-index", default="0",
              help="Rows of the split (comma-separated) for trajectory and landscape figures and stored states "
                   "(none = no landscapes).")
@click.option("--store-states", type=click.Choice(["selected", "all", "none"]), default="selected",
              help="Store z_H / z_L of every step in traces.parquet for the --puzzle-index puzzles, all, or none.")
@click.option("--tol", type=click.FloatRange(min=0), default=0.01, help="Convergence: joint residual <= tol on the tail.")
@click.option("--tail", type=click.IntRange(min=0), default=0, help="Tail segments; 0 = max(1, ceil(segments / 4)).")
@click.option("--lookback", type=click.IntRange(min=2), default=4, help="Largest lag K of the oscillation test.")
@click.option("--easy-k", default="0,1,2,5,10,20", help="Cells left blank in the easy probe (comma-separated; none = skip).")
@click.option("--easy-sample", type=click.IntRange(min=0), default=100,
              help="Puzzles of the sample for the easy probe; 0 = all.")
@click.option("--shifts", type=click.IntRange(0, 9), default=9,
              help="Cyclic digit relabellings (incl. the identity); 0 = skip multistability.")
@click.option("--noise-runs", type=click.IntRange(min=0), default=4, help="Runs from a noisy initial state per puzzle.")
@click.option("--noise-std", type=click.FloatRange(min=0), default=0.5,
              help="Std of the initial-state noise (H_init has std 1).")
@click.option("--cluster-tol", type=click.FloatRange(min=0), default=0.05,
              help="Relative distance linking two final states.")
@click.option("--fp-sample", type=click.IntRange(min=0), default=32,
              help="Puzzles of the sample for multistability; 0 = all.")
@click.option("--landscape-radius", type=click.IntRange(min=0), default=20, help="Grid offsets -R..R on each PC axis.")
@click.option("--landscape-divisor", type=click.FloatRange(min=0, min_open=True), default=8.0,
              help="Grid step = sqrt(state size) / divisor.")
@click.option("--landscape-segment", type=click.IntRange(min=0), default=0, help="Centre segment; 0 = the last.")
@click.option("--landscape-clip", type=click.FloatRange(min=0, min_open=True), default=40.0,
              help="Colour scale clip of the conflict count.")
@click.option("--flow/--no-flow", default=True, help="Compute the one-segment flow arrows of the landscape.")
@click.option("--num-threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0: torch's default).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def analyze(checkpoint: Path, dataset: Path, variant: str, split: str, output: Path, sample: int, seed: int,
            segments: int, device: str, forward_dtype: str, batch_size: int, puzzle_index: str, store_states: str,
            tol: float, tail: int, lookback: int, easy_k: str, easy_sample: int, shifts: int, noise_runs: int,
            noise_std: float, cluster_tol: float, fp_sample: int, landscape_radius: int, landscape_divisor: float,
            landscape_segment: int, landscape_clip: float, flow: bool, num_threads: int, progress: bool) -> None:
    """Mechanistic analysis: traces, fixed points, critical steps, easy puzzles, multiple fixed points, landscapes."""
    import torch

    from hrm.analysis import easy as easy_mod
    from hrm.data import eval_rows

    started = time.time()
    if num_threads:
        torch.set_num_threads(num_threads)
    selected = _ints(puzzle_index, "--puzzle-index")
    try:
        ks = [] if easy_k.strip().lower() in OFF else easy_mod.parse_ks(easy_k)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--easy-k") from None
    # Both inputs are checked before the model is loaded: a wrong path fails at once, naming it.
    from pipelines.evaluate import resolve_checkpoints

    checkpoint_file = resolve_checkpoints([checkpoint], last=1)[0]  # a step_N file, or a run's last one
    ds = _dataset(dataset, variant, split)
    bad = [i for i in selected if not 0 <= i < ds.num_examples]
    if bad:
        raise StageError(f"{ds.dataset_dir}: --puzzle-index {bad} outside the {split} split's rows 0..{ds.num_examples - 1}")
    model = _load(checkpoint, checkpoint_file, device, forward_dtype)
    _check_encoding(ds, model.config)
    cfg = model.config
    s_count = segments or cfg.halt_max_steps
    if landscape_segment > s_count:
        raise click.BadParameter(f"{landscape_segment} > segments ({s_count})", param_hint="--landscape-segment")

    sample_rows = eval_rows(ds.num_examples, sample or None, seed)
    if sample_rows.size == 0:
        raise StageError(f"{ds.dataset_dir}: the {split} split is empty")
    run_info = {
        "checkpoint": str(checkpoint), "dataset": str(ds.dataset_dir), "split": split, "puzzles": int(sample_rows.size),
        "seed": seed, "segments": s_count, "h_cycles": cfg.H_cycles, "hidden_size": cfg.hidden_size,
        "device": str(model.device), "forward_dtype": str(cfg.forward_dtype if forward_dtype == "config" else forward_dtype),
    }
    with atomic_output(output) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "plots").mkdir()
        metrics = _run(model, ds, tmp, sample_rows=sample_rows, selected=np.asarray(selected, np.int64),
                       s_count=s_count, seed=seed, batch_size=batch_size, store_states=store_states, tol=tol,
                       tail=tail, lookback=lookback, ks=ks, easy_sample=easy_sample, shifts=shifts,
                       noise_runs=noise_runs, noise_std=noise_std, cluster_tol=cluster_tol, fp_sample=fp_sample,
                       radius=landscape_radius, divisor=landscape_divisor, center_segment=landscape_segment or s_count,
                       clip=landscape_clip, flow=flow, progress=progress, run_info=run_info)
    click.echo(f"analyze: {metrics['run']['puzzles']} puzzles, exact accuracy {metrics['exact_accuracy']:.4f}, "
               f"{time.time() - started:.1f} s -> {output}", err=True)


def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="puzzle", desc=desc, disable=not progress, dynamic_ncols=True, leave=False)


def _run(model, ds, out: Path, *, sample_rows, selected, s_count, seed, batch_size, store_states, tol, tail, lookback,
         ks, easy_sample, shifts, noise_runs, noise_std, cluster_tol, fp_sample, radius, divisor, center_segment, clip,
         flow, progress, run_info) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from hrm.analysis import (
        CLASS_NAMES, EASY_COLUMNS, aligned_curve, answer_changes, classify, critical_histogram, critical_step,
        critical_summary, easy_probe, first_correct, fixed_point_summary, landscape, multistability_summary, plots,
        prediction_conflicts, residual_curves, run_perturbed, run_trace, score_predictions, violations,
    )
    from hrm.analysis.report import render_report, write_report
    from hrm.data import eval_rows
    from hrm.sudoku import BLANK_TOKEN

    phases: dict[str, float] = {}
    clock = [time.time()]

    def lap(name: str) -> None:
        now = time.time()
        phases[name] = round(phases.get(name, 0.0) + now - clock[0], 2)
        clock[0] = now

    rows_all = np.union1d(sample_rows, selected).astype(np.int64)
    in_sample = np.isin(rows_all, sample_rows)
    keep_rows = np.isin(rows_all, selected) if store_states == "selected" else np.full(rows_all.size, store_states == "all")
    need_states = np.isin(rows_all, selected) | keep_rows
    s_total = s_count
    acc: dict[str, list] = {k: [] for k in ("exact", "blank_acc", "blank_wrong", "res_H", "res_L", "res", "ret", "changes",
                                            "conflicts", "inputs", "labels", "puzzle_id", "rating")}
    selected_set = set(selected.tolist())
    states: dict[int, tuple[Any, Any]] = {}
    writer = None
    trace_rows = 0
    bar = _bar(progress, rows_all.size, "traces")
    try:
        for lo in range(0, rows_all.size, batch_size):
            rows = rows_all[lo:lo + batch_size]
            data = ds.gather(rows)
            x, y = data["inputs"], data["labels"]
            _check_tokens(ds, rows, x, y)
            keep = need_states[lo:lo + batch_size]
            tr = run_trace(model, x, puzzle_identifiers=data["puzzle_identifiers"], segments=s_count,
                           keep_states=keep, lookback=lookback)
            step_scores = score_predictions(tr.predictions, x, y)
            step_conf = prediction_conflicts(tr.predictions)
            step_changed = np.zeros_like(step_conf, dtype=np.int16)
            step_changed[1:] = (tr.predictions[1:] != tr.predictions[:-1]).sum(-1)
            meta = {"row": rows, "puzzle_id": data["puzzle_id"], "rating": data["rating"],
                    "blanks": (x == BLANK_TOKEN).sum(1), "in_sample": in_sample[lo:lo + batch_size]}
            table = _trace_table(tr, meta, step_scores, step_conf, step_changed, keep_rows[lo:lo + batch_size])
            if writer is None:
                writer = pq.ParquetWriter(out / "traces.parquet", table.schema, compression="zstd")
            writer.write_table(table)
            trace_rows += table.num_rows
            for k, r in enumerate(tr.kept_rows if tr.kept_rows is not None else []):
                row = int(rows[r])
                if row in selected_set:
                    states[row] = (tr.z_H[:, k], tr.z_L[:, k], x[r], y[r], tr.pcs[:, r], tr.pca_ratio[r])
            seg = score_predictions(tr.seg_predictions, x, y)
            acc["exact"].append(seg["exact"])
            acc["blank_acc"].append(seg["blank_acc"])
            blank = (x == BLANK_TOKEN)
            acc["blank_wrong"].append(((tr.seg_predictions != y[None]) & blank[None]).sum(-1).astype(np.int16))
            for key, val in (("res_H", tr.seg_res_H), ("res_L", tr.seg_res_L), ("res", tr.seg_res)):
                acc[key].append(val)
            acc["ret"].append(tr.seg_return)
            acc["changes"].append(answer_changes(tr.seg_predictions, tail))
            acc["conflicts"].append(prediction_conflicts(tr.final_predictions))
            acc["inputs"].append(x.astype(np.uint8))
            acc["labels"].append(y.astype(np.int16))
            acc["puzzle_id"].append(data["puzzle_id"])
            acc["rating"].append(data["rating"])
            bar.update(rows.size)
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    lap("traces")
    cat = {k: np.concatenate(v, axis=1 if k in ("exact", "blank_acc", "blank_wrong", "res_H", "res_L", "res") else 0)
           for k, v in acc.items()}
    m = in_sample
    seg_exact, seg_blank = cat["exact"][:, m], cat["blank_acc"][:, m]
    inputs, labels = cat["inputs"][m], cat["labels"][m]
    final_exact = seg_exact[-1]
    classes = classify(cat["res"][:, m], cat["ret"][m], tol, tail)
    changes = cat["changes"][m]
    viol = violations(classes, changes)
    crit = critical_step(seg_exact)

    # per-puzzle table (all processed rows)
    all_classes = classify(cat["res"], cat["ret"], tol, tail)
    all_changes = cat["changes"]
    pl.DataFrame({
        "row": rows_all, "puzzle_id": cat["puzzle_id"], "rating": cat["rating"], "in_sample": in_sample,
        "blanks": (cat["inputs"] == BLANK_TOKEN).sum(1).astype(np.int16),
        "exact": cat["exact"][-1], "blank_acc": cat["blank_acc"][-1], "conflicts": cat["conflicts"].astype(np.int16),
        "critical_step": critical_step(cat["exact"]), "first_correct": first_correct(cat["exact"]),
        "convergence": np.asarray(CLASS_NAMES)[all_classes], "answer_changes_tail": all_changes,
        "violation": violations(all_classes, all_changes),
        "final_res_H": cat["res_H"][-1], "final_res_L": cat["res_L"][-1], "return_ratio": cat["ret"],
    }).write_parquet(out / "puzzles.parquet", compression="zstd")

    metrics: dict[str, Any] = {"run": run_info}
    metrics["exact_accuracy"] = float(final_exact.mean())
    last_blank = seg_blank[-1].astype(np.float64)
    metrics["blank_accuracy"] = float(np.nanmean(last_blank)) if not np.isnan(last_blank).all() else None
    metrics["fixed_point"] = fixed_point_summary(classes, viol, final_exact, cat["res_H"][:, m], cat["res_L"][:, m])
    metrics["fixed_point"].update({"tol": tol, "tail": tail or max(1, math.ceil(s_total / 4))})
    metrics["critical"] = critical_summary(seg_exact, seg_blank, cat["blank_wrong"][:, m])

    plots_dir = out / "plots"
    figures: list[tuple[str, str]] = []
    res_rows = residual_curves(cat["res_H"][:, m], cat["res_L"][:, m], final_exact)
    _write_csv(_wide_residuals(res_rows, s_total), plots_dir / "residuals.csv")
    plots.plot_residuals(res_rows, plots_dir / "residuals.png")
    figures.append((FIGURES["residuals"], "plots/residuals.png"))
    crit_rows = critical_histogram(crit, s_total)
    aligned = aligned_curve(seg_blank, crit)
    _write_csv(crit_rows, plots_dir / "critical.csv")
    _write_csv(aligned, plots_dir / "critical_aligned.csv")
    plots.plot_critical(crit_rows, plots_dir / "critical.png", aligned)
    figures.append((FIGURES["critical"], "plots/critical.png"))

    lap("summaries")
    # A switched-off analysis still writes its tables (zero rows, same schema); the reason goes to metrics and report.
    skipped: dict[str, str] = {}

    # easy-puzzle probe
    easy_rows: list[dict[str, Any]] = []
    if not ks:
        skipped["easy"] = "--easy-k none: no k to probe"
        _write_csv([], plots_dir / "easy.csv", EASY_COLUMNS)
    else:
        pick = eval_rows(inputs.shape[0], easy_sample or None, seed)
        bar = _bar(progress, pick.size * len(ks), "easy probe")
        try:
            easy_rows = easy_probe(model, inputs[pick].astype(np.int32), labels[pick].astype(np.int32), ks, seed=seed,
                                   segments=s_count, batch_size=batch_size, tol=tol, tail=tail,
                                   solved=final_exact[pick], progress=bar.update)
        finally:
            bar.close()
        _write_csv(easy_rows, plots_dir / "easy.csv")
        plots.plot_easy(easy_rows, plots_dir / "easy.png")
        figures.append((FIGURES["easy"], "plots/easy.png"))
        metrics["easy"] = {f"k{r['k']}": r["exact"] for r in easy_rows}
        metrics["easy"].update({f"violations_k{r['k']}": r["violation_rate"] for r in easy_rows})
        lap("easy")

    # multiple fixed points
    if shifts == 0 or (shifts == 1 and noise_runs == 0):
        skipped["multistability"] = ("--shifts 0" if shifts == 0 else
                                     "--shifts 1 and --noise-runs 0: no perturbed run besides the plain one")
        pl.DataFrame(schema=MULTISTABILITY_SCHEMA).write_parquet(out / "multistability.parquet", compression="zstd")
        _write_csv([], plots_dir / "multistability.csv", MULTISTABILITY_CSV)
    else:
        pick = eval_rows(inputs.shape[0], fp_sample or None, seed)
        bar = _bar(progress, pick.size, "multistability")
        try:
            ms = run_perturbed(model, inputs[pick].astype(np.int32), labels[pick].astype(np.int32), shifts=shifts,
                               noise_runs=noise_runs, noise_std=noise_std, seed=seed, segments=s_count, tol=tol,
                               tail=tail, cluster_tol=cluster_tol, batch_size=max(1, batch_size // (shifts + noise_runs)),
                               progress=bar.update)
        finally:
            bar.close()
        metrics["multistability"] = multistability_summary(ms)
        metrics["multistability"].update({"shifts": shifts, "noise_runs": noise_runs, "noise_std": noise_std,
                                          "cluster_tol": cluster_tol})
        r_count, n_fp = ms.exact.shape
        sample_pick_rows = sample_rows[pick]
        def flat(a):  # [R, N] -> puzzle-major [N * R]
            return np.ascontiguousarray(np.asarray(a).T).reshape(-1)

        pl.DataFrame({
            "row": np.repeat(sample_pick_rows, r_count), "run": np.tile(np.arange(r_count), n_fp).astype(np.int16),
            "kind": np.tile(ms.kind, n_fp), "param": np.tile(ms.param, n_fp).astype(np.int16),
            "exact": flat(ms.exact), "convergence": np.asarray(CLASS_NAMES)[flat(ms.classes)],
            "trapped": flat(ms.trapped), "conflicts": flat(ms.conflicts).astype(np.int16),
            "final_res": flat(ms.final_res), "answer_id": flat(ms.answer_id), "state_id": flat(ms.state_id),
            "answer": pl.Series(np.ascontiguousarray(ms.answers.transpose(1, 0, 2)).reshape(-1, 81),
                                dtype=pl.Array(pl.UInt8, 81)),
        }, schema=MULTISTABILITY_SCHEMA).write_parquet(out / "multistability.parquet", compression="zstd")
        top = int(max(ms.n_answers.max(initial=1), 1))
        hist = [{"distinct_answers": a, "puzzles_all_runs": int((ms.n_answers == a).sum()),
                 "puzzles_converged_runs": int((ms.n_stable_answers == a).sum())} for a in range(top + 1)]
        _write_csv(hist, plots_dir / "multistability.csv")
        plots.plot_multistability(ms.n_answers, ms.n_stable_answers, plots_dir / "multistability.png")
        figures.append((FIGURES["multistability"], "plots/multistability.png"))
        lap("multistability")

    # trajectories and landscapes of the selected puzzles
    land_tables = []
    metrics["landscapes"] = {}
    c = model.config.H_cycles
    bar = _bar(progress, len(states), "landscapes")
    try:
        for row in sorted(states):
            z_h, z_l, x, y, pcs, ratio = states[row]
            lap("landscapes")
            plots.plot_trajectory(pcs, plots_dir / f"trajectory_{row}.png", h_cycles=c, ratio=ratio,
                                  title=f"Reasoning trajectory, puzzle {row}")
            figures.append((f"Trajectory of puzzle {row} (z_H, PCA)", f"plots/trajectory_{row}.png"))
            lap("figures")
            centre = center_segment * c - 1
            land = landscape(model, x, z_h, (z_h[centre], z_l[centre]), center_segment=center_segment, labels=y,
                             radius=radius, divisor=divisor, flow=flow, batch_size=max(batch_size, 64))
            lap("landscapes")
            plots.plot_landscape(land, plots_dir / f"landscape_{row}.png", clip=clip,
                                 title=f"Error landscape, puzzle {row}")
            figures.append((f"Error landscape of puzzle {row}", f"plots/landscape_{row}.png"))
            i_grid, j_grid = land.grid()
            # --no-flow: dest columns null, so the schema does not depend on the flag.
            no_dest = pl.Series([None] * i_grid.size, dtype=pl.Float32)
            cols = {"row": np.full(i_grid.size, row, np.int64), "i": i_grid.ravel().astype(np.int16),
                    "j": j_grid.ravel().astype(np.int16), "conflicts": land.conflicts.ravel().astype(np.int16),
                    "digits": land.digits.ravel().astype(np.int16), "exact": land.exact.ravel(),
                    "dest_i": no_dest if land.dest is None else land.dest[..., 0].ravel(),
                    "dest_j": no_dest if land.dest is None else land.dest[..., 1].ravel()}
            lap("figures")
            land_tables.append(pl.DataFrame(cols, schema=LANDSCAPE_SCHEMA))
            metrics["landscapes"][str(row)] = {
                "scale": land.scale, "pca_ratio_1": float(land.ratio[0]), "pca_ratio_2": float(land.ratio[1]),
                "centre_conflicts": int(land.conflicts[radius, radius]),
                "min_conflicts": int(land.conflicts.min()),
                "exact_area": float(land.exact.mean()),
            }
            bar.update(1)
    finally:
        bar.close()
    if not states:
        skipped["landscapes"] = "--puzzle-index none: no puzzle selected for trajectories and landscapes"
    land_table = pl.concat(land_tables) if land_tables else pl.DataFrame(schema=LANDSCAPE_SCHEMA)
    land_table.write_parquet(out / "landscape.parquet", compression="zstd")

    lap("landscapes")
    metrics["run"]["trace_rows"] = trace_rows
    if skipped:
        metrics["skipped"] = skipped
    metrics = json_ready(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    write_report(out / "report.md", render_report(metrics, figures, easy_rows=json_ready(easy_rows),
                                                 critical_rows=json_ready(crit_rows)))
    lap("figures")
    # Timings go to run.json and the log only: every other output is byte-identical between runs.
    import torch

    run = {**run_info, "seconds_by_phase": phases, "torch": torch.__version__, "threads": torch.get_num_threads()}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    click.echo("analyze: seconds by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), err=True)
    return metrics
