"""A task added as one file: this one. It defines a tiny task, registers it for these tests only, and runs
every stage on it through the entry points the CLI uses (click's CliRunner on pipelines.cli, in this
process, so the registration is seen): `hrm raw --source builtin` (the task's own generator and options),
`hrm subsample`, `hrm augment`, `hrm hints --enabled false`, `hrm shard`, `hrm train`, `hrm evaluate`
and `hrm analyze`. Nothing outside this file knows the task exists.

The task: complete a row of 16 bits so that it holds an even number of ones. A question is 16 characters
over ``.01`` with exactly one blank ``.`` (so its answer is unique), the answer the 16 bits; the rating is
the blank's position. Tokens: 0 padding, 1 blank, 2 = bit 0, 3 = bit 1. An augmented copy is the row
rotated right by 1..15 cells (one ``shift`` column, 0 = identity), which keeps the parity; the evaluation's
perturbation ``rotate`` is the same rotation, applied to input and label alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl
import pyarrow
import pytest
import yaml

from hrm import build
from hrm.evaluate.perturbations import Perturbations
from hrm.evaluate.selection import any_pass_solves
from hrm.tasks import TASKS, register
from hrm.tasks.base import EvalRules, ExamplesRule, GeneratorOption, RawDiagnosis, RawRule, Task

# Imported here, before the task is registered (as in a run of the whole suite): the commands' task
# choices and the raw stage's generator options must come from the registry when they run.
import pipelines.evaluate  # noqa: F401
import pipelines.raw  # noqa: F401
import pipelines.validate  # noqa: F401
from stage_helpers import fails, ok  # hrm ARGS through click's CliRunner, in this process

NAME = "parity-onefile"
WIDTH, BLANK, ZERO, ONE = 16, 1, 2, 3
EVEN, KEEPS, ONE_BLANK = "parity_answer_even", "parity_answer_keeps_givens", "parity_one_blank"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- the task


def tokens(strings) -> np.ndarray:
    """'.01' strings -> tokens [N, WIDTH] (1 blank, 2 = 0, 3 = 1)."""
    raw = np.frombuffer("".join(strings).encode(), dtype=np.uint8).reshape(-1, WIDTH)
    return np.select([raw == ord("."), raw == ord("0")], [BLANK, ZERO], ONE).astype(np.uint8)


def strings(rows: np.ndarray) -> list[str]:
    chars = np.array([".", ".", "0", "1"])
    return ["".join(row) for row in chars[rows]]


def rotate(rows: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Row i rotated right by shift[i] cells."""
    cells = (np.arange(WIDTH)[None, :] - shift.astype(np.int64)[:, None]) % WIDTH
    return np.take_along_axis(rows, cells, axis=1)


def odd_cells(questions, answers) -> np.ndarray:
    """int64 [...]: the error measure: cells that are not a bit, plus 1 for an odd number of ones."""
    a = np.asarray(answers)
    return ((a != ZERO) & (a != ONE)).sum(-1) + (a == ONE).sum(-1) % 2


def verify(questions, answers) -> np.ndarray:
    """bool [...]: every cell a bit, an even number of ones, the givens kept."""
    q, a = np.broadcast_arrays(np.asarray(questions), np.asarray(answers))
    return (odd_cells(q, a) == 0) & ((q == BLANK) | (q == a)).all(-1)


def rotations(kind: str, count: int, seed: int) -> Perturbations:
    if count > WIDTH:
        raise ValueError(f"a row has {WIDTH} rotations, asked for {count}")
    cells = (np.arange(WIDTH)[None, :] - np.arange(count)[:, None]) % WIDTH
    return Perturbations(kind, np.tile(np.arange(256, dtype=np.uint8), (count, 1)), cells.astype(np.int64))


RULES = EvalRules(NAME, WIDTH, BLANK, ("rotate",), verify, any_pass_solves, lambda i, l: np.asarray(i) == BLANK,
                  (0, 4, 8, 12), (0, 1, 2), (1, 3), (2, 3), odd_cells, "odd_cells", (ONE, ONE), "ones",
                  max_shifts=WIDTH)


def _labels_even(columns) -> np.ndarray:
    return (columns["labels"] == ONE).sum(1) % 2 == 0


def _inputs_agree(columns) -> np.ndarray:
    inputs, labels = columns["inputs"], columns["labels"]
    return ((inputs == BLANK) | (inputs == labels)).all(1)


class ParityTask(Task):
    raw_rules = (RawRule(EVEN, "answer", column_check=True), RawRule(KEEPS, "answer"),
                 RawRule(ONE_BLANK, "question", unique_only=True))
    raw_unique_means = "one blank each"
    examples_checks_id = "parity-onefile-1"
    examples_check_prefix = "parity_"
    token_ranges = {"inputs": (1, 3), "labels": (2, 3)}
    transform_limits = {"shift": WIDTH - 1}
    examples_rules = (
        ExamplesRule("parity_labels_even", ("labels",), _labels_even, "labels: an odd number of ones", column="labels"),
        ExamplesRule("parity_inputs_agree", ("inputs", "labels"), _inputs_agree, "inputs: a given differs from the label"),
    )
    lineage_reasons = {"original_is_identity": "original with a shift",
                       "augmented_matches_original": "augmented row is not its original rotated by its shift"}

    def diagnose_raw(self, questions, answers, question_ok, answer_ok, check_unique):
        q = np.zeros((len(questions), WIDTH), dtype=np.uint8)
        a = np.zeros_like(q)
        q[question_ok], a[answer_ok] = tokens(questions[question_ok]), tokens(answers[answer_ok])
        changed = (q != BLANK) & (q != a)
        passed = {EVEN: ~answer_ok | ((a == ONE).sum(1) % 2 == 0), KEEPS: ~(question_ok & answer_ok) | ~changed.any(1)}
        reasons = {EVEN: {int(r): "has an odd number of ones" for r in np.flatnonzero(~passed[EVEN])},
                   KEEPS: {int(r): "changes a given" for r in np.flatnonzero(~passed[KEEPS])}}
        if check_unique:
            passed[ONE_BLANK] = ~question_ok | ((q == BLANK).sum(1) == 1)
            reasons[ONE_BLANK] = {int(r): "not exactly one blank" for r in np.flatnonzero(~passed[ONE_BLANK])}
        return RawDiagnosis(len(questions), passed, reasons)

    def difficulty(self, questions):
        return (tokens(questions) == BLANK).argmax(1).astype(np.int64)

    def generate(self, n: int, seed: int, options: Mapping[str, Any]):
        """Rows of random bits with an even number of ones, at least ``min_ones`` of them; one cell blanked."""
        rng = np.random.default_rng(seed)
        bits = rng.integers(0, 2, size=(n, WIDTH))
        bits[:, -1] = bits[:, :-1].sum(1) % 2
        few = bits.sum(1) < options["min_ones"]
        bits[few] = 1  # all ones: WIDTH is even
        answers = (bits + ZERO).astype(np.uint8)
        blank = rng.integers(0, WIDTH, size=n)
        questions = answers.copy()
        questions[np.arange(n), blank] = BLANK
        return strings(questions), strings(answers), blank.astype(np.int64)

    def describe_split(self, batches, n):
        ones, ratings = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for _, a, r in batches:
            ones.append((tokens(a) == ONE).sum(1))
            ratings.append(np.asarray(r, np.int64))
        ones, ratings = np.concatenate(ones), np.concatenate(ratings)
        return {"rating": {"mean": float(ratings.mean()) if n else 0.0},
                "ones": {"mean": float(ones.mean()) if n else 0.0, "min": int(ones.min(initial=WIDTH))}}

    def augment(self, questions, answers, num_aug, rng):
        q, a = tokens(questions), tokens(answers)
        per, groups = 1 + num_aug, len(q)
        group_id = np.repeat(np.arange(groups, dtype=np.int32), per)
        shift = np.zeros((groups, per), dtype=np.uint8)
        if num_aug:
            shift[:, 1:] = rng.integers(1, WIDTH, size=(groups, num_aug))
        shift = shift.reshape(-1)
        variant = np.full(len(group_id), build.AUGMENTED, dtype=np.uint8)
        variant[::per] = build.ORIGINAL
        return build.Examples(group_id, np.arange(len(group_id), dtype=np.int32), variant,
                              np.full(len(group_id), build.NO_PARENT, dtype=np.int32),
                              rotate(q[group_id], shift), rotate(a[group_id], shift), shift)

    def transform_arrays(self, columns):
        return columns["shift"]

    def transform_frame_columns(self, transforms, n):
        return {"shift": transforms}

    def is_identity(self, transforms):
        return transforms == 0

    def augmented_matches(self, group_id, transforms, rows, src, inputs, labels):
        shift = transforms[rows]
        ok = (shift >= 1) & (shift < WIDTH)
        ok &= (rotate(inputs[src], shift) == inputs[rows]).all(1)
        return ok & (rotate(labels[src], shift) == labels[rows]).all(1)

    @property
    def rules(self) -> EvalRules:
        return RULES

    def make_perturbations(self, kind, count, seed):
        return rotations(kind, count, seed)


PARITY = ParityTask(
    name=NAME, noun="row", seq_len=WIDTH, vocab_size=4, hf_repo="none/parity-onefile", hf_revision="main",
    difficulty_means="the blank's position", encoding={"task": NAME, "seq_len": WIDTH, "vocab_size": 4, "pad": 0},
    column_meanings={"variant": "`original` or `augmented`", "parent_id": "-1", "rating": "the blank's position",
                     "inputs": "1 = blank, 2 = 0, 3 = 1", "labels": "2 = 0, 3 = 1"},
    transform_columns=(("shift", pyarrow.uint8(), "cells rotated right (0 = identity)"),),
    question_chars="[.01]", answer_chars="[01]", generator_options=(GeneratorOption("min_ones", 0, WIDTH, 0, "Fewest ones per row."),), max_aug=WIDTH - 1,
    words={
        "card": {"tag": "parity", "title": "Parity rows", "hf": "(none)", "examples": "rows",
                 "builtin": "Random rows of even parity, one cell blanked.", "generator": "tests/test_one_file_task.py",
                 "license_name": "none", "lineage": "Lineage: an example is its group's original rotated by its shift.",
                 "build": "rotations per train row) -> `hrm hints` (passes rows through: they have no hints)"},
        "report": {"vote": "any pass", "verified": "some pass gave an even row that keeps the givens",
                   "vote_rule": "paper_vote: solved if any pass of any checkpoint is exactly right.",
                   "tiers": "## Easy tiers (rows with only k blanks left)", "left": "blanks left",
                   "exact": "- exact: all 16 cells right.", "verifier": "verifier (even parity, keeps the givens)",
                   "cell": "blank"},
        "tokens": ("1 = blank, 2 = 0, 3 = 1", "bit tokens 2..3"),
        "error_label": "odd cells", "model_needs": "the parity dataset", "augment_limit": "its other rotations",
        "relabellings": "rotations", "table_rows": "rows",
    },
)


@pytest.fixture(scope="module", autouse=True)
def registered():
    register(PARITY)
    yield
    TASKS.pop(PARITY.name)


# ----------------------------------------------------------------------------- the proof


TINY = ["--hidden-size", "16", "--num-heads", "2", "--expansion", "2", "--h-layers", "1", "--l-layers", "1",
        "--h-cycles", "1", "--l-cycles", "1", "--halt-max-steps", "2", "--puzzle-emb-ndim", "16"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Every dataset stage, as dvc.yaml runs them: 24 train and 8 test rows, 3 rotations per train row."""
    root = tmp_path_factory.mktemp("one_file_task")
    ok("raw", "--task", NAME, "--source", "builtin", "--output", root / "raw", "--seed", 3, "--train-size", 24,
       "--test-size", 8, "--min-ones", 4)
    ok("subsample", "--input", root / "raw", "--output", root / "subsample", "--seed", 3, "--subsample-size", 0,
       "--test-size", 0)
    ok("augment", "--input", root / "subsample", "--output", root / "augment", "--seed", 3, "--num-aug", 3)
    ok("hints", "--input", root / "augment", "--output", root / "hints", "--enabled", "false")
    ok("shard", "--input", root / "hints", "--output", root / "datasets")
    return root


def test_the_dataset_stages_build_the_tasks_dataset(built, tmp_path):
    from pipelines.dataset_checks import dataset_problems

    # raw: the task's generator, with its own option, checked by the task's raw rules.
    stats = json.loads((built / "raw" / "stats.json").read_text())
    assert stats["task"] == NAME and stats["builtin"]["min_ones"] == 4 and stats["questions_in_both_splits"] == 0
    assert {s: v["rows"] for s, v in stats["splits"].items()} == {"train": 24, "test": 8}
    assert stats["splits"]["train"]["distribution"]["ones"]["min"] >= 4  # describe_split's own figures
    raw = pl.read_parquet(built / "raw" / "train.parquet")
    assert raw.columns == ["source", "question", "answer", "rating"]
    assert ((tokens(raw["answer"].to_list()) == ONE).sum(1) >= 4).all()  # --min-ones reached the generator
    assert np.array_equal(raw["rating"].to_numpy(), PARITY.difficulty(raw["question"].to_numpy()))
    for split in ("train", "test"):
        assert "(one blank each)" in ok("validate", "raw", built / "raw" / f"{split}.parquet", "--task", NAME).output

    # subsample, augment, hints: the tables of the task, with its transform column and lineage checks.
    assert "parity-onefile subsample table" in ok("validate", "examples", built / "subsample" / "train.parquet").output
    for stage in ("augment", "hints"):
        assert ": OK, 96 rows valid" in ok("validate", "examples", built / stage / "train.arrow").output
        raw = json.loads((built / stage / "lineage.json").read_text())["raw"]
        assert raw["task"] == NAME and raw["min_ones"] == 4  # the task's own generator option, recorded
    train = pl.read_ipc(built / "augment" / "train.arrow")
    assert train.columns == list(PARITY.columns) and train["shift"].to_list()[::4] == [0] * 24
    assert (train.filter(pl.col("variant") == "augmented")["shift"].to_numpy() >= 1).all()
    assert "which have no hints" in fails("hints", "--input", built / "augment", "--output", tmp_path / "h",
                                          "--enabled", "true")

    # shard: one vanilla dataset, its manifest naming the task's encoding, its card the task's words.
    index = json.loads((built / "datasets" / "datasets.json").read_text())
    assert index["hint"] is None and index["vanilla"].startswith(f"{NAME}-builtin-")
    dataset = built / "datasets" / index["vanilla"]
    manifest, problems = dataset_problems(dataset)
    assert not problems and manifest["encoding"] == dict(PARITY.encoding)
    assert manifest["columns"]["shift"] == "uint8" and manifest["splits"]["train"]["rows_per_group"] == 4
    assert ": OK" in ok("validate", "shards", dataset).output
    assert "- parity\n" in (built / "datasets" / "README.md").read_text()


def test_train_evaluate_analyze_on_the_task(built, tmp_path):
    from hrm.data import PuzzleDataset

    datasets, run = built / "datasets", tmp_path / "run"
    ok("train", "--dataset", datasets, "--output", run, "--variant", "vanilla", *TINY, "--epochs", 2,
       "--eval-interval", 2, "--global-batch-size", 8, "--eval-size", 4, "--lr-warmup-steps", 1)
    arch = yaml.safe_load((run / "checkpoints" / "all_config.yaml").read_text())["arch"]
    assert arch["seq_len"] == WIDTH and arch["vocab_size"] == 4  # from the task's data

    # evaluate: the task's perturbation, verifier and words; another task's perturbation is refused.
    args = ["evaluate", "--checkpoint", run, "--dataset", datasets, "--variant", "vanilla"]
    ok(*args, "--perturbation", "rotate", "--permutations", 3, "--tiers", "1-1", "--output", tmp_path / "eval",
       "--no-progress")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["test"]["puzzles"] == 8 and summary["test"]["passes"] == 3
    assert summary["tiers"]["1"]["puzzles"] == 8  # every row has one blank: the tier reveals nothing
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["perturbation"] == "rotate"
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "of `rotate` perturbations" in report and "an even row that keeps the givens" in report
    assert f"holds {NAME} examples, evaluated with --perturbation rotate" in fails(
        *args, "--perturbation", "shift", "--output", tmp_path / "e2")
    assert f"a row has {WIDTH} rotations" in fails(*args, "--perturbation", "rotate", "--permutations", WIDTH + 1,
                                                  "--output", tmp_path / "e3")

    # analyze: the task's error measure and its perturbation in the fixed-point runs.
    out = tmp_path / "analysis"
    ok("analyze", "--checkpoint", run, "--dataset", datasets, "--variant", "vanilla", "--output", out, "--sample", 4,
       "--segments", 2, "--shifts", 2, "--noise-runs", 1, "--fp-sample", 2, "--easy-k", "0,1",
       "--landscape-radius", 1, "--no-flow", "--no-progress")
    assert json.loads((out / "summary.json").read_text())["run"]["puzzles"] == 4
    assert "odd_cells" in pl.read_parquet(out / "puzzles.parquet").columns
    traces = pl.read_parquet(out / "traces.parquet", columns=["row", "prediction", "odd_cells"])
    ds = PuzzleDataset(datasets / index_of(datasets), "test")
    inputs = ds.gather(traces["row"].to_numpy())["inputs"]
    predictions = np.stack(traces["prediction"].to_numpy())
    assert np.array_equal(traces["odd_cells"].to_numpy(), odd_cells(inputs, predictions))
    assert "rotate" in set(pl.read_parquet(out / "multistability.parquet")["kind"].to_list())


def index_of(datasets: Path) -> str:
    return json.loads((datasets / "datasets.json").read_text())["vanilla"]
