"""``hrm evaluate``: HRM and Augmented HRM on the test split and on easy tiers (hrm.evaluate).

Reads K checkpoints (files, or run directories: their last ``--last`` ``step_N`` files, also
under ``DIR/checkpoints/``) and a dataset directory written by ``hrm shard`` (or the shard
stage's output root, with ``--variant``). Writes under ``--output OUT`` (replaced as a whole
on success; nothing is left behind on failure or Ctrl-C):

    OUT/metrics.json        the headline (``dvc metrics show``, ``dvc exp show``): baseline, paper_vote,
                            label_free, first_to_halt, verified_any of the test split and of each tier
    OUT/summary.json        every number: test.* and tiers.<LO-HI>.* (calibration, early-stop view, ...)
    OUT/plots/*.csv         segments, passes, checkpoints, ensemble_grid, rating, blanks,
                            reliability_q_halt, reliability_cells, tiers (``dvc plots show``)
    OUT/report.md           the side-by-side table, per checkpoint, tiers, calibration
    OUT/puzzles.parquet     per test puzzle: split row, raw row (raw_index), rating, blanks, each method's
                            outcome, the segment first_to_halt read, critical segment
    OUT/run.json            settings, checkpoint files, device, timings (not a DVC metric)
    OUT/wandb/              W&B files, when --wandb-mode is online or offline

Settings: the options, or the ``--section`` of a ``--config-file`` (params.yaml's ``evaluate``;
options on the command line win). Everything but run.json is a function of the inputs and
options: same inputs -> same bytes.
Every check (checkpoint files and configs, architecture agreement, dataset encoding vs the
models' seq_len / vocab_size, token ranges) runs before any inference starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click
import numpy as np

from pipelines.device import resolve_device_option
from pipelines.atomic_replace import atomic_output
from pipelines.io import Count, RegisteredChoice, SEED, StageError, THREADS, json_ready, log
from pipelines.output_records import check_apart, claim_output
from pipelines.model_inputs import (  # noqa: F401 - checkpoint_names: its home before model_inputs
    check_dataset_encoding, checkpoint_names, checkpoint_provenance, load_task_model, open_split, resolve_checkpoints,
)
from pipelines.plot_csv import write_plot_csv
from pipelines.settings import config_file_options
from pipelines.tracking import DEFAULT_PROJECT, init_wandb

if TYPE_CHECKING:
    from hrm.tasks import Task

STAGE = "evaluate"
PLOTS = ("segments", "passes", "checkpoints", "ensemble_grid", "rating", "blanks", "reliability_q_halt",
         "reliability_cells", "tiers")


# --------------------------------------------------------------------------- inputs


def load_models(files: Sequence[Path], dev, forward_dtype: str, ds):
    """Load every checkpoint on ``dev`` for the split ``ds`` (each trained on its build: hrm.model.coupling) and
    check they agree; StageError names file and mismatch."""
    dtype = None if forward_dtype == "auto" and dev.type == "cuda" else ("float32" if forward_dtype == "auto" else forward_dtype)
    models = [load_task_model(f, dev, dtype, ds.task, ds) for f in files]
    first = models[0].config
    for f, m in zip(files[1:], models[1:]):
        for key in ("seq_len", "vocab_size", "halt_max_steps"):
            a, b = getattr(first, key), getattr(m.config, key)
            if a != b:
                raise StageError(f"{f}: {key} is {b}, but {files[0]} has {a}; an ensemble needs one "
                                 f"{key} (check the all_config.yaml beside each checkpoint)")
    return models


CHECK_ROWS = 8_192  # rows gathered at a time by the token check (about 8 MB in flight)


def split_rows(ds, test_size: int, seed: int, model_file: Path, model_cfg) -> np.ndarray:
    """The evaluated rows of the split ``ds`` (all, or a seeded sample of test_size), every one checked
    against the model's encoding before any inference, a block of rows at a time."""
    from hrm.data import eval_rows

    check_dataset_encoding(ds, model_file, model_cfg)
    rows = eval_rows(ds.num_examples, test_size or None, seed)
    if len(rows) == 0:
        raise StageError(f"{ds.dataset_dir}: split {ds.split!r} is empty")
    for lo in range(0, len(rows), CHECK_ROWS):
        gather_rows(ds, rows[lo:lo + CHECK_ROWS], model_file, model_cfg)
    return rows


def gather_rows(ds, rows: np.ndarray, model_file: Path, model_cfg) -> dict[str, np.ndarray]:
    """The tokens and ids of ``rows`` (inputs uint8, labels int16), their token ranges (the task's) checked."""

    data = ds.gather(rows)
    x, y = data["inputs"], data["labels"]
    where = f"{ds.dataset_dir / ds.split} (rows of manifest.json)"
    rules = ds.task.rules
    (x_lo, x_hi), (y_lo, y_hi) = rules.input_tokens, rules.label_tokens
    x_means, y_means = ds.task.words["tokens"]
    bad_x = (x < x_lo) | (x > x_hi)
    if bad_x.any():
        row = int(np.argmax(bad_x.any(1)))
        raise StageError(f"{where}: inputs hold tokens {int(x.min())}..{int(x.max())} (row {int(rows[row])}); "
                         f"expected {x_lo}..{x_hi} ({x_means}) for a model "
                         f"with vocab_size {model_cfg.vocab_size}: the split was built with another encoding")
    bad_y = ((y < y_lo) | (y > y_hi)) & (y != -100)
    if bad_y.any():
        row = int(np.argmax(bad_y.any(1)))
        raise StageError(f"{where}: labels hold tokens outside {y_lo}..{y_hi} (row {int(rows[row])}, found "
                         f"{sorted(set(np.unique(y[row]).tolist()))}); expected {y_means}")
    if x.shape[1] != model_cfg.seq_len:
        raise StageError(f"{where}: rows of {x.shape[1]} tokens, {model_file} expects seq_len {model_cfg.seq_len}")
    return {"rows": rows, "inputs": x.astype(np.uint8), "labels": y.astype(np.int16),
            "puzzle_id": data["puzzle_id"], "rating": data["rating"], "raw_index": data["raw_index"]}


# --------------------------------------------------------------------------- outputs


DIGITS = 6  # of every number in metrics.json, summary.json, the plot tables and W&B
HEADLINE = ("baseline_exact", "paper_vote", "label_free", "first_to_halt", "verified_any")  # the README's accuracy table


def headline_metrics(summary: dict) -> dict:
    """The HEADLINE accuracies of the test split and of each tier (summary.json holds everything else)."""
    def headline(s: dict) -> dict:
        return {("baseline" if k == "baseline_exact" else k): s[k] for k in HEADLINE}

    return {"test": headline(summary["test"]), "tiers": {name: headline(t) for name, t in summary["tiers"].items()}}


def _clean(v: Any) -> Any:
    return json_ready(v, digits=DIGITS)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def build_tables(test, tiers: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The plot tables of the test split's totals (hrm.evaluate.EvalTotals), with each tier's curve and row."""
    t = test.tables()
    for name, res in tiers.items():
        for row, seg in zip(t["segments"], res.tables()["segments"]):
            row[f"tier_{name}"] = seg["baseline"]
    t["reliability_q_halt"] = [r for r in t["reliability_q_halt"] if r["count"]]
    t["reliability_cells"] = [r for r in t["reliability_cells"] if r["count"]]
    t["tiers"] = [_tier_row(name, res) for name, res in [("test", test), *tiers.items()]]
    return t


def _tier_row(name: str, totals) -> dict[str, Any]:
    s = totals.summary(detail=False)
    return {"tier": name, "puzzles": totals.n, "baseline": s["baseline_exact"], "paper_vote": s["paper_vote"],
            "label_free": s["label_free"], "first_to_halt": s["first_to_halt"], "verified_any": s["verified_any"]}


def build_report(metrics: dict[str, Any], tables: dict[str, list], settings: dict[str, Any], names: list[str],
                 task: Task) -> str:
    """report.md: the headline table, the single checkpoints, ensemble size and calibration, the tiers,
    the definitions; ``task`` picks the words (Task.words["report"])."""
    m = metrics["test"]
    words = task.words["report"]
    lines = _report_headline(m, settings, names, words)
    if "baseline" in m:
        lines += _report_checkpoints(m, tables, words)
    if metrics.get("tiers"):
        lines += _report_tiers(tables, words)
    lines += [
        "## Definitions",
        "",
        words["exact"],
        "- label_free: pool = halted passes (all passes when none halted); if a pooled answer passes the "
        f"{words['verifier']} only verified answers are eligible; the most frequent "
        "eligible answer wins; ties -> higher mean sigmoid(q_halt) of its passes, then the earlier pass.",
        "- first_to_halt: the answer of the pass whose halt signal fires at the earliest segment, read at that "
        "segment (a pass that never halts counts as halting after the last segment, with its last answer); "
        "ties -> higher sigmoid(q_halt) at that segment, then the earlier pass (after \"Speed is Confidence\", "
        "arXiv 2601.19085).",
        "- Curves: k checkpoints = the last k; p passes = the first p.",
        "",
    ]
    return "\n".join(lines)


def _report_headline(m: dict[str, Any], settings: dict[str, Any], names: list[str], words: dict[str, str]) -> list[str]:
    """The report's opening: what was evaluated, the accuracy of each method, the early stop and the work."""
    k, p = m["checkpoints"], m["passes"]
    return [
        f"# {settings.get('arch', {}).get('label', 'HRM')} evaluation",
        "",
        f"Dataset `{settings['dataset']}` split `{settings['split']}`: {m['puzzles']} puzzles"
        + (f" (seeded sample, seed {settings['seed']})" if settings["test_size"] else "") + ". "
        f"{k} checkpoint(s): {', '.join(f'`{n}`' for n in names)} (primary = the last). "
        f"{p} pass(es) of `{settings['perturbation']}` perturbations (pass 0 = unperturbed). "
        f"{m['segments']} ACT segments per pass"
        + (", early stop at the model's own halt (a different setting from the paper's)." if settings["early_stop"]
           else ", all run (the paper's evaluation)."),
        "",
        "| method | reads labels | exact accuracy |",
        "| --- | --- | --- |",
        f"| HRM baseline (primary checkpoint, unperturbed) | no | {_pct(m.get('baseline_exact'))} |",
        f"| paper_vote ({words['vote']}, {k} x {p}) | **yes**: a pass counts only if it equals the label | {_pct(m.get('paper_vote'))} |",
        f"| label_free (majority of halted passes, verifier first, q_halt tie-break) | no | {_pct(m.get('label_free'))} |",
        f"| first_to_halt (the pass that halts at the earliest segment, q_halt tie-break) | no | "
        f"{_pct(m.get('first_to_halt'))} |",
        f"| verified_any ({words['verified']}) | no (oracle bound of a verifier) | {_pct(m.get('verified_any'))} |",
        "",
        (f"Early-stop view (a different setting, not the paper's): reading the same primary unperturbed "
         f"passes at the model's own first halt gives {_pct(m['early_stop_view']['exact_accuracy'])} exact "
         f"after {_num(m['early_stop_view']['mean_steps'])} segments on average."
         if "early_stop_view" in m else ""),
        "",
        (f"first_to_halt read its answers at segment {_num(m['first_to_halt_detail']['mean_segment'])} on average; "
         f"on {_pct(m['first_to_halt_detail']['no_pass_halted'])} of the puzzles no pass halted (all read at the "
         "last segment, the highest final sigmoid(q_halt) chosen)." if "first_to_halt_detail" in m else ""),
        "",
        (f"Work: {m['work']['segments_run']:,} of the {m['work']['segments_of_all_segment_passes']:,} row-segments "
         f"of the paper's procedure ({_pct(m['work']['saved_fraction'])} saved), "
         f"{_num(m['work']['gflop_run'])} GFLOP." if "work" in m else ""),
        "",
        f"{words['vote_rule']} It selects with the labels, so it is not a "
        "method that could answer an unseen puzzle; label_free is the same ensemble without labels.",
        "",
    ]


def _report_checkpoints(m: dict[str, Any], tables: dict[str, list], words: dict[str, str]) -> list[str]:
    """The report's single checkpoints, ensemble sizes and calibration."""
    k, p = m["checkpoints"], m["passes"]
    lines = [
        "## Single checkpoints (unperturbed)",
        "",
        f"| checkpoint | exact | cell accuracy | {words['cell']}-cell accuracy | halt rate | q_halt accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in m.get("per_checkpoint", {}).items():
        lines.append(f"| `{name}` | {_pct(c.get('exact_accuracy'))} | {_pct(c.get('accuracy'))} | "
                     f"{_pct(c.get('blank_accuracy'))} | {_pct(c.get('halt_rate'))} | {_pct(c.get('q_halt_accuracy'))} |")
    lines.append("")
    lines += ["## Ensemble size", "", "| checkpoints | passes | paper_vote | label_free | first_to_halt | verified_any |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in tables["ensemble_grid"]:
        if r["checkpoints"] in (1, k) or r["passes"] in (1, p):
            lines.append(f"| {r['checkpoints']} | {r['passes']} | {_pct(r['paper_vote'])} | {_pct(r['label_free'])} | "
                         f"{_pct(r['first_to_halt'])} | {_pct(r['verified_any'])} |")
    lines.append("")
    cal = m["calibration"]
    lines += [
        "## Calibration (primary checkpoint, unperturbed)",
        "",
        f"- sigmoid(q_halt) at the last segment vs exact correctness: ECE {_num(cal['q_halt']['ece'])}, "
        f"Pearson r {_num(cal['q_halt']['pearson_r'])}, Brier {_num(cal['q_halt']['brier'])}.",
        f"- max-softmax per {words['cell']} cell vs cell correctness: ECE {_num(cal['cells']['ece'])}, "
        f"Pearson r {_num(cal['cells']['pearson_r'])}, Brier {_num(cal['cells']['brier'])}.",
        f"- critical segment (answer right from then on), mean over solved puzzles: "
        f"{_num(m['critical_segment']['mean'])}.",
        "",
    ]
    return lines


def _report_tiers(tables: dict[str, list], words: dict[str, str]) -> list[str]:
    """The report's easy tiers."""
    lines = [words["tiers"], "",
             f"| {words['left']} | puzzles | baseline | paper_vote | label_free | first_to_halt | verified_any |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in tables["tiers"]:
        lines.append(f"| {r['tier']} | {r['puzzles']} | {_pct(r['baseline'])} | {_pct(r['paper_vote'])} | "
                     f"{_pct(r['label_free'])} | {_pct(r['first_to_halt'])} | {_pct(r['verified_any'])} |")
    lines.append("")
    return lines


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def log_wandb(mode: str, out_dir: Path, project: str, run_name: str, settings: dict, metrics: dict, tables: dict) -> None:
    """The numbers (run summary) and the plot tables of an evaluation as a W&B run (``mode`` disabled: nothing)."""
    run = init_wandb(mode, out_dir, project, run_name, settings, job_type="evaluate")
    if run is None:
        return
    import wandb

    try:
        run.summary.update({k: v for k, v in flatten(metrics).items() if v is not None})
        for name, rows in tables.items():
            if rows:
                cols = list(dict.fromkeys(c for r in rows for c in r))
                run.log({f"plots/{name}": wandb.Table(columns=cols, data=[[_clean(r.get(c)) for c in cols] for r in rows])})
    finally:
        run.finish()


# --------------------------------------------------------------------------- command


def _perturbation_kinds() -> tuple[str, ...]:
    """Every registered task's kinds of perturbation (read when the option is checked: hrm.tasks)."""
    from hrm.tasks import perturbation_kinds

    return perturbation_kinds()


@click.command("evaluate")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A checkpoint file, or a training run directory (its last --last step_N). Repeat for an ensemble.")
@click.option("--last", type=Count(1), default=1, help="Checkpoints taken from each run directory.")
@click.option("--dataset", type=click.Path(path_type=Path), default=Path("data/datasets"),
              help="A dataset directory (manifest.json), or the shard stage's output (datasets.json) with --variant.")
@click.option("--variant", type=click.Choice(["hint", "vanilla"]), default="hint",
              help="Which dataset of a shard stage output (the test split is the same in both).")
@click.option("--split", default="test", help="Split to evaluate.")
@click.option("--permutations", type=Count(1), default=9, help="Passes per checkpoint (pass 0 = unperturbed).")
@click.option("--perturbation", type=RegisteredChoice(_perturbation_kinds), default="shift",
              help="shift: the fork's cyclic digit shifts (at most 9); relabel: random digit relabellings; "
                   "symmetry: random full Sudoku symmetries; swap (mazes, at most 2 passes): the fork's S/G "
                   "exchange.")
@click.option("--test-size", type=Count(0), default=0, help="Seeded sample of N puzzles (0: the whole split).")
@click.option("--tiers", default="1-5,6-10,11-20",
              help="Easy tiers: ranges of blanks left (mazes: path cells left unmarked; LO-HI, comma-separated; "
                   "'none' to skip).")
@click.option("--batch-size", type=Count(1), default=64,
              help="Puzzles per batch; each checkpoint runs batch-size x permutations rows together.")
@click.option("--max-rows", type=Count(0), default=0,
              help="Rows per forward (0: auto = 32 on CPU, all on GPU).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", help="auto: cuda, else mps, else cpu.")
@click.option("--forward-dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
              help="auto: the checkpoint's own on cuda (bfloat16 for the paper), float32 elsewhere.")
# Optional-value booleans: `--early-stop` alone, or `--early-stop false` (a YAML boolean written out).
@click.option("--compile", "compile_", type=click.BOOL, default=False, is_flag=False, flag_value=True,
              help="torch.compile the segment (one compilation for all K).")
@click.option("--early-stop", type=click.BOOL, default=False, is_flag=False, flag_value=True,
              help="Stop each pass at the model's own halt (not the paper's evaluation, which runs every segment).")
@click.option("--seed", type=SEED, default=0, help="Seed of the sample, random perturbations and tiers.")
@click.option("--num-threads", type=THREADS, default=0, help="torch CPU threads (0: torch's default).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/evaluate"),
              help="Output directory (replaced on success).")
@click.option("--wandb-mode", type=click.Choice(["online", "offline", "disabled"]), default="disabled", help="Weights & Biases logging.")
@click.option("--project-name", default=DEFAULT_PROJECT, help="W&B project.")
@click.option("--run-name", default="", help="W&B run name (empty: W&B chooses).")
@click.option("--chunk-size", type=Count(1), default=1024,
              help="Puzzles per unit of work (rounded up to whole batches): what a stopped run keeps, and what "
                   "torchrun's ranks share out.")
@click.option("--restart", is_flag=True, default=False,
              help="Drop the units of a stopped run in OUT.resume and start over (by default the same command "
                   "continues it).")
@click.option("--progress/--no-progress", default=True,
              help="Progress (puzzles/s, ETA): a bar on a terminal, a line every 30 s otherwise (dvc repro, a log).")
@click.option("--dry-run", is_flag=True, default=False,
              help="Print what the run costs (passes, segments, FLOPs, and the time a one-segment trial on this "
                   "device projects) and stop: nothing else runs, nothing is written.")
@config_file_options("evaluate", aliases={"checkpoints": "last"})
def evaluate(**options: Any) -> None:
    """Evaluate HRM checkpoints: single model, the fork's Augmented HRM vote, a label-free vote, tiers.

    Resumable (the same command continues a stopped run) and distributed
    (``torchrun --nproc-per-node N -m pipelines.evaluate ...``): pipelines/job.py."""
    _evaluate_command(EvaluateOptions(**options))


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """The options of ``hrm evaluate`` as given (one field per option, same names, same order)."""

    checkpoints: tuple[Path, ...]
    last: int
    dataset: Path
    variant: str
    split: str
    permutations: int
    perturbation: str
    test_size: int
    tiers: str
    batch_size: int
    max_rows: int
    device: str
    forward_dtype: str
    compile_: bool
    early_stop: bool
    seed: int
    num_threads: int
    output: Path
    wandb_mode: str
    project_name: str
    run_name: str
    chunk_size: int
    restart: bool
    progress: bool
    dry_run: bool


@dataclasses.dataclass(frozen=True)
class _Checked:
    """What the command resolves and checks before the ranks start."""

    files: list[Path]  # the checkpoint files, primary last
    names: list[str]  # their names in the outputs (checkpoint_names)
    tier_list: list[tuple[int, int]]
    dev: Any  # the torch device of this rank
    t_start: float  # time.perf_counter() at the start
    version: str  # hrm.__version__


def _evaluate_command(opts: EvaluateOptions) -> None:
    import torch

    from hrm import __version__
    from hrm.distributed import DistributedError, finish, init_distributed, rank_device
    from hrm.evaluate.tiers import parse_tiers
    from hrm.tasks import TASKS, make_perturbations
    from pipelines.job import job_lock

    if _scored_by_votes(opts):
        from pipelines.vote_evaluation import evaluate_votes

        return evaluate_votes(opts)
    t_start = time.perf_counter()
    if opts.num_threads:
        torch.set_num_threads(opts.num_threads)
    # ---- every check first
    try:
        tier_list = parse_tiers(opts.tiers, seq_len=max(t.seq_len for t in TASKS.values()))
        make_perturbations(opts.perturbation, opts.permutations, opts.seed)
    except ValueError as e:
        raise StageError(str(e)) from None
    files = resolve_checkpoints(opts.checkpoints, opts.last)
    check_apart(opts.output, [opts.dataset, *opts.checkpoints, *(f.parent for f in files)])
    names = checkpoint_names(files)
    dev = resolve_device_option(opts.device)
    if opts.dry_run:  # one process, no lock: it writes nothing
        loaded = _load(opts, files, dev, tier_list)
        _log_cost(opts, loaded, len(tier_list), ranks=1)
        log(STAGE, "--dry-run: stopped before evaluating; nothing written")
        return
    try:
        d = init_distributed(dev.type, timeout_s=RANK_TIMEOUT_S)
    except DistributedError as e:
        raise StageError(str(e)) from None
    dev = rank_device(dev, d)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(job_lock(opts.output, d, STAGE))  # one process writes OUTPUT (and OUT.resume) at a time
        _evaluate(d, opts, _Checked(files=files, names=names, tier_list=tier_list, dev=dev, t_start=t_start,
                                        version=__version__))
    finally:
        lock.close()
        finish(d)


def _scored_by_votes(opts: EvaluateOptions) -> bool:
    """Whether the dataset's task is scored by a vote over its versions (Task.scoring: ARC); a dataset that
    cannot be read is the ordinary path's to report."""
    from hrm.manifest import ManifestError, read_manifest
    from hrm.tasks import manifest_task
    from pipelines.datasets import resolve_dataset

    try:
        return manifest_task(read_manifest(resolve_dataset(opts.dataset, opts.variant))).scoring == "votes"
    except (ManifestError, StageError, ValueError, OSError):
        return False


# What a saved unit holds (EvalTotals.as_arrays and the per-puzzle table); raised when that changes, so a job
# folder of code that saved less is refused by name, not misread. 2: first_to_halt; 3: the per-pass columns.
UNIT_FORMAT = 3
RANK_TIMEOUT_S = 24 * 3600  # ranks wait for each other at the end; units are shared evenly


def task_settings(ds, perturbation: str, permutations: int, seed: int, tier_list):
    """The task's evaluation rules (from the dataset's manifest) and its perturbations, the options
    checked against them: a StageError naming the manifest for a perturbation or tier of the other task."""
    from hrm.tasks import make_perturbations
    from pipelines.dataset_io import require_stage

    manifest = ds.dataset_dir / "manifest.json"
    require_stage(ds.task, "evaluate", manifest)
    rules = ds.task.rules
    if perturbation not in rules.perturbations:
        raise StageError(f"--perturbation {perturbation}: {manifest} holds {rules.task} examples, evaluated with "
                         f"--perturbation {' or '.join(rules.perturbations)}"
                         + (f" (at most {rules.max_shifts} passes: --permutations {rules.max_shifts})"
                            if rules.max_shifts is not None else ""))
    for lo, hi in tier_list:
        if hi > rules.seq_len:
            raise StageError(f"--tiers {lo}-{hi}: {manifest} holds {rules.task} examples of {rules.seq_len} cells")
    try:
        return rules, make_perturbations(perturbation, permutations, seed)
    except ValueError as e:
        raise StageError(f"{e} ({manifest} holds {rules.task} examples)") from None


def _evaluate(d, opts: EvaluateOptions, checked: _Checked) -> None:
    """The work of one rank (the command's options, checked; ``d`` its place among the ranks)."""
    from hrm.model.registry import architecture_record

    work = _open_job(d, opts, checked)
    _run_units(d, opts, checked, work)
    if d.rank != 0:
        return
    test, tier_results, puzzle_table = _join_units(opts, checked, work)
    n = len(work.rows)
    log(STAGE, f"{opts.split}: {n} puzzles, {test.seconds:.1f} s of evaluation ({n / max(test.seconds, 1e-9):.2f} puzzles/s, "
        f"{n * opts.permutations * len(work.models) / max(test.seconds, 1e-9):.1f} passes/s"
        + (f", summed over {d.world_size} ranks" if d.enabled else "") + ")")
    metrics = _metrics(test, tier_results, work.models)
    tables = build_tables(test, tier_results)
    settings = {
        "checkpoints": [str(f) for f in checked.files], "names": checked.names, "dataset": str(work.ds.dataset_dir),
        "split": opts.split, "test_size": opts.test_size, "seed": opts.seed, "permutations": opts.permutations,
        "perturbation": opts.perturbation, "tiers": [list(t) for t in checked.tier_list], "early_stop": opts.early_stop,
        "batch_size": opts.batch_size, "max_rows": work.engine.max_rows, "compile": opts.compile_,
        "arch": architecture_record(work.models),  # run.json and the report's title; not in summary.json
    }
    elapsed = time.perf_counter() - checked.t_start
    run_info = _run_info(d, opts, checked, work, settings, test, tier_results, elapsed)
    _write_outputs(opts, work, metrics, tables, settings, run_info, puzzle_table)
    work.job.remove()  # the outputs are in place: the units are not needed any more

    m = metrics["test"]
    log(STAGE, f"baseline {_pct(m.get('baseline_exact'))}, paper_vote {_pct(m.get('paper_vote'))} (reads labels), "
        f"label_free {_pct(m.get('label_free'))}, first_to_halt {_pct(m.get('first_to_halt'))}, "
        f"verified_any {_pct(m.get('verified_any'))}"
        + (f"; {_pct(m['work']['saved_fraction'])} of the segments saved by the early stop" if opts.early_stop and "work" in m
           else ""))
    log(STAGE, f"wrote {opts.output}/ (metrics.json, summary.json, plots/, report.md, puzzles.parquet) in {elapsed:.1f} s")


@dataclasses.dataclass(frozen=True)
class _Work:
    """One rank's evaluation job: the split and its rows, the task's rules and perturbations, the models
    and their engine, the units of work (all, this rank's, and those it has still to run), the job."""

    ds: Any
    rules: Any
    perts: Any
    models: list
    rows: np.ndarray
    set_names: list[str]  # the split, then each tier
    chunk: int  # puzzles per unit
    units: list
    engine: Any
    job: Any
    resumed: bool
    mine: list
    todo: list


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """The split, its rows, the task's rules and perturbations, and the models in their engine: what a run
    (or its cost) needs, loaded and checked before anything is written."""

    ds: Any
    rules: Any
    perts: Any
    models: list
    rows: np.ndarray
    engine: Any
    files: list[Path]


def _load(opts: EvaluateOptions, files: list[Path], dev, tier_list) -> _Loaded:
    from hrm.evaluate.engine import Engine, auto_max_rows

    ds = open_split(opts.dataset, opts.variant, opts.split)
    rules, perts = task_settings(ds, opts.perturbation, opts.permutations, opts.seed, tier_list)
    models = load_models(files, dev, opts.forward_dtype, ds)
    rows = split_rows(ds, opts.test_size, opts.seed, files[0], models[0].config)
    engine = Engine(models, max_rows=opts.max_rows or auto_max_rows(dev), compile=opts.compile_)
    return _Loaded(ds=ds, rules=rules, perts=perts, models=models, rows=rows, engine=engine, files=files)


def _log_cost(opts: EvaluateOptions, loaded: _Loaded, tiers: int, ranks: int) -> None:
    """The run's cost (hrm.evaluate.cost), timed on its first batch: the split and every tier, each of its
    puzzles under every perturbation through every checkpoint."""
    from hrm.evaluate.cost import evaluation_cost

    batch = gather_rows(loaded.ds, loaded.rows[:opts.batch_size], loaded.files[0], loaded.models[0].config)
    trial = loaded.perts.apply(batch["inputs"])  # [P, B, L]
    cost = evaluation_cost(loaded.engine, (1 + tiers) * len(loaded.rows) * opts.permutations,
                           trial.reshape(-1, trial.shape[-1]))
    log(STAGE, f"cost: {cost.describe(opts.early_stop)}" + (f" on one of {ranks} ranks (each takes 1/{ranks})"
                                                              if ranks > 1 else ""))


def _open_job(d, opts: EvaluateOptions, checked: _Checked) -> _Work:
    """Load the split and the models, plan the units and open the job folder (continuing a stopped run)."""
    from hrm.evaluate.tiers import tier_name

    from pipelines.job import Job, check_ranks_agree, chunk_rows, job_folder, plan_units
    from hrm.manifest import file_sha256

    files, tier_list = checked.files, checked.tier_list
    loaded = _load(opts, files, checked.dev, tier_list)
    ds, rules, perts, models, rows, engine = (loaded.ds, loaded.rules, loaded.perts, loaded.models, loaded.rows,
                                              loaded.engine)
    dataset_dir = ds.dataset_dir
    if d.rank == 0:
        _log_cost(opts, loaded, len(tier_list), d.world_size if d.enabled else 1)
    claim_output(opts.output, STAGE)
    n = len(rows)
    set_names = [opts.split] + [f"tier {tier_name(t)}" for t in tier_list]
    chunk = chunk_rows(opts.chunk_size, opts.batch_size)
    units = plan_units(len(set_names), n, chunk)
    # What a result depends on (not the number of ranks or threads): ranks must agree on it, and a
    # stopped job continues only under the same.
    job_settings = {
        "checkpoints": [{"file": str(f), "sha256": file_sha256(f)} for f in files],
        "dataset": {"dir": str(dataset_dir), "manifest_sha256": file_sha256(dataset_dir / "manifest.json")},
        "split": opts.split, "rows": {"count": n, "sha256": hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()},
        "test_size": opts.test_size, "seed": opts.seed, "permutations": opts.permutations,
        "perturbation": opts.perturbation, "tiers": [list(t) for t in tier_list], "early_stop": opts.early_stop,
        "batch_size": opts.batch_size, "chunk_rows": chunk, "max_rows": engine.max_rows, "compile": opts.compile_,
        "device": checked.dev.type, "forward_dtype": str(models[0].config.forward_dtype), "hrm": checked.version,
        "units": UNIT_FORMAT,
    }
    check_ranks_agree(job_settings, d)
    job = Job(job_folder(opts.output), job_settings, d, STAGE)
    resumed = job.open(opts.restart)
    mine = job.mine(units)
    todo = [u for u in mine if not (resumed and job.done(u.name))]
    if d.rank == 0:
        log(STAGE, f"{len(files)} checkpoint(s) on {checked.dev} ({models[0].config.forward_dtype}), {n} puzzles from "
            f"{dataset_dir}, {opts.permutations} {opts.perturbation} pass(es), tiers "
            f"{', '.join(tier_name(t) for t in tier_list) or 'none'}; {len(units)} unit(s) of up to {chunk} puzzles"
            + (f" over {d.world_size} ranks" if d.enabled else "")
            + (f"; continuing {job.folder}: {len(mine) - len(todo)} of this rank's {len(mine)} already done"
               if resumed else ""))
    return _Work(ds=ds, rules=rules, perts=perts, models=models, rows=rows, set_names=set_names, chunk=chunk,
                 units=units, engine=engine, job=job, resumed=resumed, mine=mine, todo=todo)


def _run_units(d, opts: EvaluateOptions, checked: _Checked, work: _Work) -> None:
    """Run this rank's units still to do, each saved in the job folder, then wait for every rank's."""
    from hrm.evaluate.run import evaluate_puzzles

    from hrm.progress import progress_bar

    job, units, mine, todo = work.job, work.units, work.mine, work.todo
    common = dict(perturbations=work.perts, names=checked.names, batch_size=opts.batch_size, early_stop=opts.early_stop,
                  rules=work.rules)
    # One count for the whole job, on rank 0: its own batches as they go, the other ranks' units as their
    # files appear (checked after each of its own units).
    others = [u for u in units if u not in set(mine)]
    seen = {u for u in others if job.path(u.name).is_file()}
    done_here = sum(u.puzzles for u in mine) - sum(u.puzzles for u in todo)
    bar = progress_bar(sum(u.puzzles for u in units), STAGE, "puzzle", enabled=opts.progress and d.rank == 0,
                       initial=done_here + sum(u.puzzles for u in seen))

    def count_other_ranks() -> None:
        new = [u for u in others if u not in seen and job.path(u.name).is_file()]
        seen.update(new)
        if new:
            bar.update(sum(u.puzzles for u in new))

    try:
        for unit in todo:
            data = _unit_data(opts, checked, work, unit)
            res = evaluate_puzzles(work.engine, data["inputs"], data["labels"], ratings=data["rating"],
                                      on_batch=bar.update, **common)
            # What the outputs need: the totals, and for the test split the per-puzzle table (puzzles.parquet).
            done = {"totals": res.totals().as_arrays()}
            if unit.set_index == 0:
                done["puzzles"] = {"row": data["rows"].astype(np.int64), "raw_index": data["raw_index"],
                                   "puzzle_id": data["puzzle_id"], "rating": data["rating"], **res.puzzle_table()}
            job.save(unit.name, done)
            del res
            if d.rank == 0:
                count_other_ranks()
    except KeyboardInterrupt:
        bar.close()
        left = sum(1 for u in todo if not job.path(u.name).is_file())
        log(STAGE, f"stopped with {len(mine) - left} of this rank's {len(mine)} unit(s) done, kept in {job.folder}; "
                   "the same command continues from there")
        raise
    job.wait_for_all()
    if d.rank == 0:
        count_other_ranks()
        bar.close()


def _unit_data(opts: EvaluateOptions, checked: _Checked, work: _Work, unit) -> dict[str, np.ndarray]:
    """The unit's puzzles, gathered from the memory-mapped split; a tier's easy copies drawn per puzzle."""
    from hrm.evaluate.tiers import reveal_tier_rows

    data = gather_rows(work.ds, work.rows[unit.lo:unit.hi], checked.files[0], work.models[0].config)
    if unit.set_index:
        lo, hi = checked.tier_list[unit.set_index - 1]
        data["inputs"] = reveal_tier_rows(data["inputs"], data["labels"], lo, hi, opts.seed, data["rows"], work.rules)
    return data


def _join_units(opts: EvaluateOptions, checked: _Checked, work: _Work) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """Every unit's results joined: (the split's totals, each tier's, the split's per-puzzle table).
    Joined in order, one unit at a time: memory holds the totals and the test split's per-puzzle table."""
    from hrm.evaluate.results import EvalTotals
    from hrm.evaluate.tiers import tier_name

    totals: list = [None] * len(work.set_names)
    table: dict[str, list[np.ndarray]] = {}
    for unit in work.units:
        done = work.job.load(unit.name)
        if done is None:
            raise StageError(f"{work.job.path(unit.name)}: a finished unit is missing or damaged; rerun the same "
                             f"command to run it again")
        part = EvalTotals.from_arrays(done["totals"], names=checked.names, perturbation=work.perts.kind,
                                         early_stop=opts.early_stop, task=work.rules.task)
        totals[unit.set_index] = part if totals[unit.set_index] is None else totals[unit.set_index].add(part)
        for k, v in done.get("puzzles", {}).items():
            table.setdefault(k, []).append(v)
        del done
    test, tier_results = totals[0], {tier_name(t): r for t, r in zip(checked.tier_list, totals[1:])}
    return test, tier_results, {k: np.concatenate(v) for k, v in table.items()}


def _metrics(test, tier_results: dict[str, Any], models: list) -> dict[str, Any]:
    """summary.json: the split's summary and each tier's, with the work's FLOPs."""
    from hrm.evaluate.engine import segment_flops

    summaries = {"test": test.summary(), "tiers": {k: v.summary(detail=False) for k, v in tier_results.items()}}
    for summary, res in [(summaries["test"], test), *((summaries["tiers"][k], r) for k, r in tier_results.items())]:
        if "work" in summary:  # FLOPs: each checkpoint's row-segments times its segment's FLOPs
            summary["work"]["gflop_run"] = sum(float(res.steps_run[k]) * segment_flops(m)
                                               for k, m in enumerate(models)) / 1e9
    return _clean(summaries)


def _run_info(d, opts: EvaluateOptions, checked: _Checked, work: _Work, settings: dict[str, Any], test,
              tier_results: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """run.json: the settings, the machine and the timings."""
    import torch

    n = len(work.rows)
    return {
        **settings, "device": str(checked.dev), "forward_dtype": work.models[0].config.forward_dtype,
        "torch": torch.__version__, "python": platform.python_version(), "seconds_total": round(elapsed, 3),
        "seconds": {"test": round(test.seconds, 3), **{f"tier_{k}": round(v.seconds, 3) for k, v in tier_results.items()}},
        "puzzles_per_s": round(n / max(test.seconds, 1e-9), 3),
        "passes_per_s": round(n * opts.permutations * len(work.models) / max(test.seconds, 1e-9), 3),
        "world_size": d.world_size, "chunk_rows": work.chunk, "units": len(work.units), "resumed": work.resumed,
        **checkpoint_provenance(checked.files),  # published weights: where they came from (docs/weights.md)
    }


def _write_outputs(opts: EvaluateOptions, work: _Work, metrics: dict[str, Any], tables: dict[str, list],
                   settings: dict[str, Any], run_info: dict[str, Any], puzzle_table: dict[str, np.ndarray]) -> None:
    """Every file of the output directory, put in place at once; the W&B run."""
    import polars as pl

    from pipelines.tables import PASSES_KEY, dataset_metadata

    with atomic_output(opts.output, stage=STAGE) as tmp:
        (tmp / "plots").mkdir(parents=True)
        (tmp / "summary.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(headline_metrics(metrics), indent=2) + "\n")
        for name in PLOTS:
            write_plot_csv(tmp / "plots" / f"{name}.csv", tables[name], digits=DIGITS, as_text=True)
        (tmp / "report.md").write_text(build_report(metrics, tables, settings, settings["names"], work.ds.task))
        passes = {"checkpoints": settings["names"], "passes": opts.permutations, "perturbation": opts.perturbation,
                  "segments": metrics["test"]["segments"]}  # whose each per-pass column is (EvalResult.pass_table)
        pl.DataFrame(puzzle_table).write_parquet(tmp / "puzzles.parquet", compression="zstd", statistics=True,
                                                 metadata={**dataset_metadata(work.ds.dataset_dir, opts.split),
                                                           PASSES_KEY: json.dumps(passes, sort_keys=True)})
        (tmp / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
        log_wandb(opts.wandb_mode, tmp, opts.project_name, opts.run_name, settings, metrics, tables)


if __name__ == "__main__":  # torchrun --nproc-per-node N -m pipelines.evaluate [OPTIONS]
    from pipelines.cli import main

    main(evaluate, prog_name="hrm evaluate")
