"""``hrm evaluate`` for a task scored by a vote over its versions (Task.scoring "votes": ARC-AGI).

The official evaluation (sapientinc/HRM ``evaluate.py`` then ``arc_eval.ipynb``; docs/reference-semantics.md
§13): every row of the test split (every version of every held-out pair) runs the model's full
``halt_max_steps`` segments with its version's puzzle identifier; the final answers are mapped back to the
original puzzle and voted on per (puzzle, test input) (hrm/arc_scoring.py, through Task.score_votes).
Per checkpoint: pass@1, pass@2 and pass@10 under the official rule (a puzzle counts when all its test
inputs are right) and TRM's fractional rule, the halting head's calibration; for the primary (last)
checkpoint also ``submission.json`` (Kaggle format) and ``puzzles.parquet`` (one row per test input).

Writes, atomically: ``metrics.json`` (headline), ``summary.json`` (everything), ``report.md``,
``puzzles.parquet``, ``submission.json``, ``plots/reliability.csv`` and ``plots/pixel_accuracy.csv``
and ``figures/segments-PUZZLE.png`` (the answer after each segment on a few puzzles: the intermediate
reasoning steps; the same bytes for the same inputs), and ``run.json`` (the timings).
One process, no job folder: an ARC test split is one pass of the model over its rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic_replace import atomic_output
from pipelines.dataset_io import require_stage
from pipelines.io import StageError, log
from pipelines.model_inputs import checkpoint_names, load_task_model, open_split, resolve_checkpoints
from pipelines.output_records import check_apart, claim_output
from pipelines.plot_csv import write_plot_csv
from pipelines.tables import dataset_metadata

STAGE = "evaluate"
NOT_USED = "--permutations, --perturbation, --tiers, --test-size, --early-stop and W&B"


def identifier_names(ds) -> list[str]:
    """The dataset's identifiers.json, its bytes checked against the manifest's sha256 first."""
    from hrm.integrity import IntegrityError, read_recorded

    record = (ds.manifest.get("files") or {}).get("identifiers.json") or {}
    try:
        data = read_recorded(ds.dataset_dir / "identifiers.json", record.get("sha256"),
                             f"{ds.dataset_dir / 'manifest.json'} (key files.identifiers.json)")
    except IntegrityError as e:
        raise StageError(f"{e}; rebuild the dataset with `hrm shard`") from None
    return json.loads(data)


def predict(ds, engine, chunk: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every row of the split through the engine: (the rows' identifiers and labels, predictions uint8
    [K, rows, L], q_halt logits float32 [K, rows])."""
    n = ds.num_examples
    ids, labels, preds, q_halt = [], [], [], []
    for lo in range(0, n, chunk):
        data = ds.gather(np.arange(lo, min(n, lo + chunk), dtype=np.int64))
        out = engine.run(data["inputs"], puzzle_identifiers=data["puzzle_identifiers"])
        ids.append(data["puzzle_identifiers"])
        labels.append(np.where(data["labels"] < 0, 0, data["labels"]).astype(np.uint8))  # -100: the pad token
        preds.append(out.predictions)
        q_halt.append(out.q_halt)
    rows = {"identifiers": np.concatenate(ids), "labels": np.concatenate(labels)}
    return rows, np.concatenate(preds, axis=1), np.concatenate(q_halt, axis=1)


def evaluate_votes(opts) -> None:
    """The whole command for a votes-scored dataset (``opts``: pipelines.evaluate.EvaluateOptions)."""
    import torch

    from hrm.evaluate.engine import Engine, auto_max_rows
    from pipelines.device import resolve_device_option

    t0 = time.perf_counter()
    if opts.num_threads:
        torch.set_num_threads(opts.num_threads)
    files = resolve_checkpoints(opts.checkpoints, opts.last)
    check_apart(opts.output, [opts.dataset, *opts.checkpoints, *(f.parent for f in files)])
    dev = resolve_device_option(opts.device)
    ds = open_split(opts.dataset, opts.variant, opts.split)
    require_stage(ds.task, STAGE, ds.dataset_dir / "manifest.json")
    names = identifier_names(ds)
    dtype = None if opts.forward_dtype == "auto" and dev.type == "cuda" else (
        "float32" if opts.forward_dtype == "auto" else opts.forward_dtype)
    models = [load_task_model(f, dev, dtype, ds.task, ds) for f in files]
    engine = Engine(models, max_rows=opts.max_rows or auto_max_rows(dev), compile=opts.compile_)
    _log_cost(ds, engine, opts)
    if opts.dry_run:
        log(STAGE, "--dry-run: stopped before evaluating; nothing written")
        return
    claim_output(opts.output, STAGE)
    log(STAGE, f"{ds.task.name}: the official vote over every version of the {opts.split} split ({ds.num_examples:,} "
               f"rows); not used for this task: {NOT_USED}")
    t_predict = time.perf_counter()
    rows, preds, q_halt = predict(ds, engine, max(opts.chunk_size, 1))
    seconds = time.perf_counter() - t_predict
    scores = [ds.task.score_votes(names, rows["identifiers"], rows["labels"], preds[k], q_halt[k])
              for k in range(len(models))]
    labels = checkpoint_names(files)
    summary = {"checkpoints": {name: {"pass_at_k": s.pass_at_k, "calibration": s.calibration}
                               for name, s in zip(labels, scores)},
               "primary": labels[-1], "dataset": str(ds.dataset_dir), "split": opts.split, "rows": ds.num_examples}
    run_info = {"inference_seconds": round(seconds, 3), "rows_per_s": round(ds.num_examples * len(models) / seconds, 2),
                "device": dev.type, "checkpoints": [str(f) for f in files]}
    figures = segment_figures(ds, models[-1], scores[-1].votes, rows["identifiers"], names)
    _write(opts.output, summary, scores[-1], ds.task, run_info, figures)
    headline = summary["checkpoints"][labels[-1]]["pass_at_k"]
    log(STAGE, f"{labels[-1]}: pass@1 {headline['pass@1']['official_all_tests']['fraction']:.4f} (official), "
               f"{headline['pass@1']['trm_fractional']['fraction']:.4f} (TRM); pass@2 "
               f"{headline['pass@2']['official_all_tests']['fraction']:.4f}; wrote {opts.output} in "
               f"{time.perf_counter() - t0:.1f} s")


def _log_cost(ds, engine, opts) -> None:
    """The run's cost (hrm.evaluate.cost): every row of the split through every checkpoint, timed on the first
    chunk's rows (at most a batch of them)."""
    from hrm.evaluate.cost import evaluation_cost

    trial = ds.gather(np.arange(min(ds.num_examples, opts.batch_size), dtype=np.int64))
    cost = evaluation_cost(engine, ds.num_examples, trial["inputs"], trial["puzzle_identifiers"])
    log(STAGE, f"cost: {cost.describe(early_stop=False)}")


def headline_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The primary checkpoint's pass@k under both rules and its halting head's calibration."""
    primary = summary["checkpoints"][summary["primary"]]
    out: dict[str, Any] = {}
    for key, value in primary["pass_at_k"].items():
        if key.startswith("pass@"):
            out[key] = {"official": value["official_all_tests"]["fraction"], "trm": value["trm_fractional"]["fraction"]}
    cal = primary["calibration"]["per_prediction"]
    out["q_halt"] = {"ece": cal.get("ece"), "pearson_r": cal.get("pearson_r")}
    return out


def puzzle_rows(votes) -> dict[str, list]:
    """One row per (puzzle, test input): its top candidates' votes, confidence and correctness."""
    table: dict[str, list] = {"puzzle": [], "test_index": [], "candidates": [], "top_count": [], "top_confidence": [],
                              "top_correct": [], "top_pixel_accuracy": [], "right_rank": []}
    for p, name in enumerate(votes.puzzles):
        for i, group in enumerate(range(int(votes.puzzle_groups[p]), int(votes.puzzle_groups[p + 1]))):
            ranked = list(votes.ranked(group))
            right = [r for r, c in enumerate(ranked) if votes.correct[c]]
            top = ranked[0] if ranked else None
            values = (name, i, len(ranked), None if top is None else int(votes.count[top]),
                      None if top is None else float(votes.confidence[top]),
                      None if top is None else bool(votes.correct[top]),
                      None if top is None else float(votes.pixel_accuracy[top]), right[0] + 1 if right else None)
            for column, value in zip(table, values):
                table[column].append(value)
    return table


FIGURE_PUZZLES = 4  # puzzles whose reasoning steps are drawn (the first, in the order the vote scores them)


def segment_figures(ds, model, votes, identifiers: np.ndarray, names: list[str]) -> list[tuple[str, list, list]]:
    """The intermediate reasoning steps of the primary checkpoint on the first test input of the first
    FIGURE_PUZZLES puzzles (their own version's row): (puzzle, grids, titles) for each, the input, the
    label, then the answer read after each segment (Task.grid_of the argmax board)."""
    from hrm.evaluate.engine import Engine

    first_row = {}
    for row, ident in enumerate(identifiers.tolist()):
        first_row.setdefault(names[ident], row)  # a puzzle's own version is named by the puzzle
    wanted = [(p, first_row[p]) for p in votes.puzzles[:FIGURE_PUZZLES] if p in first_row]
    if not wanted:
        return []
    data = ds.gather(np.array([row for _, row in wanted], dtype=np.int64))
    out = Engine([model]).run(data["inputs"], puzzle_identifiers=data["puzzle_identifiers"],
                              keep_segment_predictions=True)
    steps = out.segment_predictions[0]  # [S, rows, L]
    figures = []
    for i, (puzzle, _) in enumerate(wanted):
        label = np.where(data["labels"][i] < 0, 0, data["labels"][i])
        grids = [ds.task.grid_of(board) for board in (data["inputs"][i], label, *(s[i] for s in steps))]
        titles = ["input", "label"] + [f"segment {s + 1}" for s in range(len(steps))]
        figures.append((puzzle, grids, titles))
    return figures


def _write(output: Path, summary: dict[str, Any], primary, task, run_info: dict[str, Any], figures: list) -> None:
    import polars as pl

    from hrm.analysis.plots import plot_grid_segments

    with atomic_output(output, stage=STAGE) as tmp:
        (tmp / "plots").mkdir(parents=True)
        for puzzle, grids, titles in figures:
            plot_grid_segments(grids, titles, task.palette, tmp / "figures" / f"segments-{puzzle}.png",
                               f"{puzzle}, first test input: the answer after each segment")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(headline_metrics(summary), indent=2) + "\n")
        (tmp / "submission.json").write_text(json.dumps(primary.submission) + "\n")
        pl.DataFrame(puzzle_rows(primary.votes)).write_parquet(tmp / "puzzles.parquet", compression="zstd",
                                                               metadata=dataset_metadata(Path(summary["dataset"]),
                                                                                         summary["split"]))
        cal = primary.calibration
        write_plot_csv(tmp / "plots" / "reliability.csv", cal["per_prediction"]["bins"], as_text=True)
        write_plot_csv(tmp / "plots" / "pixel_accuracy.csv", cal["pixel_accuracy"]["bins"], as_text=True)
        (tmp / "report.md").write_text(report(summary, task, [puzzle for puzzle, _, _ in figures]))
        (tmp / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")  # timings: the one file that varies


def report(summary: dict[str, Any], task, figure_puzzles: list[str]) -> str:
    """report.md: pass@k under both rules per checkpoint, and the halting head's calibration."""
    lines = [f"# {task.words['title']}: evaluation", "",
             f"Dataset `{summary['dataset']}`, split `{summary['split']}` ({summary['rows']:,} rows: every version of "
             "every held-out test input). Predictions are mapped back to the original puzzle and voted on per "
             "(puzzle, test input): most votes first, ties broken by the mean sigmoid(q_halt) "
             "(docs/reference-semantics.md §13).", "",
             "| checkpoint | k | official (all test inputs right) | TRM (fractional) | test inputs right |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, result in summary["checkpoints"].items():
        for key, value in result["pass_at_k"].items():
            if key.startswith("pass@"):
                lines.append(f"| {name} | {key[5:]} | {value['official_all_tests']['fraction']:.4f} | "
                             f"{value['trm_fractional']['fraction']:.4f} | {value['test_inputs_right']} |")
    cal = summary["checkpoints"][summary["primary"]]["calibration"]
    lines += ["", f"## The halting head ({summary['primary']})", "",
              "| level | n | ECE | Pearson r |", "| --- | ---: | ---: | ---: |"]
    for level in ("per_prediction", "per_test_input_top1"):
        c = cal[level]
        lines.append(f"| {level} | {c.get('n')} | {_num(c.get('ece'))} | {_num(c.get('pearson_r'))} |")
    pixel = cal["pixel_accuracy"]
    lines += ["", f"Per-pixel accuracy against sigmoid(q_halt): Pearson r {_num(pixel['pearson_r'])} over "
              f"{pixel['n']} predictions (plots/pixel_accuracy.csv); reliability bins: plots/reliability.csv.", ""]
    if figure_puzzles:
        lines += ["## The reasoning steps", "", "The answer read after each segment, on the first test input of "
                  "each puzzle (its own version):", ""]
        lines += [f"![{p}](figures/segments-{p}.png)" for p in figure_puzzles] + [""]
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
