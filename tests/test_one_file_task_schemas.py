"""A task added as one file: the generic raw and examples schemas (schemas/raw.py, schemas/examples.py)
check a tiny task defined here, registered for these tests only, with no edit anywhere else.

The task: complete a row of 8 bits so that it holds an even number of ones. A question is 8 characters
over ``.01`` (``.`` a blank), its answer the 8 bits. Tokens: 1 blank, 2 = bit 0, 3 = bit 1. An augmented
copy is the row rotated by 1..7 cells (one ``shift`` column, 0 = identity), which keeps the parity.
"""

from __future__ import annotations

import numpy as np
import pandera.polars as pa
import polars as pl
import pyarrow
import pytest

from hrm import build
from hrm.tasks import TASKS, register
from hrm.tasks.base import ExamplesRule, RawDiagnosis, RawRule, Task
from schemas.examples import checks_id, examples_schema, from_frame, to_frame, validate_examples, validate_shards
from schemas.raw import raw_schema, raw_validator, validate_raw

WIDTH = 8
EVEN, KEEPS, ONE_BLANK = "parity_answer_even", "parity_answer_keeps_givens", "parity_one_blank"


def tokens(strings) -> np.ndarray:
    """'.01' strings -> tokens 1..3 [N, 8]."""
    raw = np.frombuffer("".join(strings).encode(), dtype=np.uint8).reshape(-1, WIDTH)
    return np.select([raw == ord("."), raw == ord("0")], [1, 2], 3).astype(np.uint8)


def rotate(rows: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Row i rotated right by shift[i] cells."""
    cells = (np.arange(WIDTH)[None, :] - shift.astype(np.int64)[:, None]) % WIDTH
    return np.take_along_axis(rows, cells, axis=1)


def _labels_even(columns) -> np.ndarray:
    return (columns["labels"] == 3).sum(1) % 2 == 0


def _inputs_agree(columns) -> np.ndarray:
    inputs, labels = columns["inputs"], columns["labels"]
    return ((inputs == 1) | (inputs == labels)).all(1)


class ParityTask(Task):
    raw_rules = (RawRule(EVEN, "answer", column_check=True), RawRule(KEEPS, "answer"),
                 RawRule(ONE_BLANK, "question", unique_only=True))
    raw_unique_means = "one blank each"
    examples_checks_id = "parity-test-1"
    examples_check_prefix = "parity_"
    token_ranges = {"inputs": (1, 3), "labels": (2, 3)}
    transform_limits = {"shift": WIDTH - 1}
    examples_rules = (
        ExamplesRule("parity_labels_even", ("labels",), _labels_even, "labels: an odd number of ones", column="labels"),
        ExamplesRule("parity_inputs_agree", ("inputs", "labels"), _inputs_agree, "inputs: a given differs from the label"),
    )
    lineage_reasons = {"original_is_identity": "original with a shift",
                       "augmented_matches_original": "augmented row is not its original rotated by its shift (1..7)"}

    def diagnose_raw(self, questions, answers, question_ok, answer_ok, check_unique):
        q = np.zeros((len(questions), WIDTH), dtype=np.uint8)
        a = np.zeros_like(q)
        q[question_ok], a[answer_ok] = tokens(questions[question_ok]), tokens(answers[answer_ok])
        both = question_ok & answer_ok
        changed = (q != 1) & (q != a)
        passed = {EVEN: ~answer_ok | ((a == 3).sum(1) % 2 == 0), KEEPS: ~both | ~changed.any(1)}
        reasons = {EVEN: {int(r): "has an odd number of ones" for r in np.flatnonzero(~passed[EVEN])},
                   KEEPS: {int(r): f"changes the given at position {changed[r].argmax()}"
                           for r in np.flatnonzero(~passed[KEEPS])}}
        if check_unique:
            blanks = (q == 1).sum(1)
            passed[ONE_BLANK] = ~question_ok | (blanks == 1)
            reasons[ONE_BLANK] = {int(r): f"has {blanks[r]} blanks, not exactly one"
                                  for r in np.flatnonzero(~passed[ONE_BLANK])}
        return RawDiagnosis(len(questions), passed, reasons)

    def difficulty(self, questions):
        return (tokens(questions) == 1).sum(1).astype(np.int64)

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


PARITY = ParityTask(
    name="parity-test", noun="row", seq_len=WIDTH, vocab_size=4, hf_repo="none/parity", hf_revision="main",
    difficulty_means="blanks", encoding={"task": "parity-test", "seq_len": WIDTH, "vocab_size": 4},
    column_meanings={"variant": "`original` or `augmented`", "parent_id": "-1", "rating": "blanks",
                     "inputs": "1 = blank, 2 = 0, 3 = 1", "labels": "2 = 0, 3 = 1"},
    transform_columns=(("shift", pyarrow.uint8(), "cells rotated right (0 = identity)"),),
    question_chars="[.01]", answer_chars="[01]", generator_options=(),
)


@pytest.fixture(scope="module", autouse=True)
def registered():
    register(PARITY)
    yield
    TASKS.pop(PARITY.name)


def raw(rows) -> pl.DataFrame:
    q, a = zip(*rows)
    return pl.DataFrame({"source": ["hand"] * len(q), "question": list(q), "answer": list(a),
                         "rating": [str(i) for i in range(len(q))]})


GOOD = [("0110.000", "01100000"), ("1.000000", "11000000"), (".1010000", "01010000")]


def test_the_raw_schema_is_built_from_the_task():
    report = validate_raw(raw(GOOD), PARITY, path="good.csv")
    assert report.ok, report.message()
    assert report.summary() == "good.csv: OK, 3 rows valid (one blank each)"
    assert report.valid["rating"].to_list() == [0, 1, 2]
    schema = raw_schema(PARITY)
    assert [c.name for c in schema.checks] == [KEEPS, ONE_BLANK]
    assert [c.name for c in schema.columns["answer"].checks][-1] == EVEN
    assert [c.name for c in raw_schema(PARITY, check_unique=False).checks] == [KEEPS]
    # Plain checks: nothing of the task is registered with Pandera.
    assert not [name for name in pa.Check.REGISTERED_CUSTOM_CHECKS if name.startswith("parity")]


def test_the_raw_schema_names_every_bad_row_with_the_tasks_reasons():
    bad = raw(GOOD + [
        ("0110.00", "0110000"),  # 7 characters
        ("0110.0x0", "01100000"),  # a bad character
        ("0110.000", "01101000"),  # an odd number of ones
        ("0110.000", "11100001"),  # even, but changes a given
        ("..10.000", "01100000"),  # three blanks: several answers
    ]).with_columns(pl.when(pl.col("question") == "1.000000").then(pl.lit("-1")).otherwise("rating").alias("rating"))
    report = raw_validator(PARITY)(bad, path="bad.csv", row_offset=10)
    assert report.problems.rows() == [
        (11, "rating", "negative rating -1"),
        (13, "question", "expected 8 characters, got 7"),
        (13, "answer", "expected 8 characters, got 7"),
        (14, "question", "character 'x' at position 6 (0-based) is not one of '.01'"),
        (15, "answer", "has an odd number of ones"),
        (16, "answer", "changes the given at position 0"),
        (17, "question", "has 3 blanks, not exactly one"),
    ]
    assert report.valid.height == 2 and report.rejected["row"].to_list() == [11, 13, 14, 15, 16, 17]
    assert report.message().startswith("bad.csv: 6 of 8 rows are invalid")
    relaxed = validate_raw(bad, PARITY, check_unique=False)
    assert relaxed.valid.height == 3 and relaxed.summary().endswith("(uniqueness not checked)")
    with pytest.raises(pa.errors.SchemaErrors):  # the schema on its own computes what it needs
        raw_schema(PARITY).validate(bad.with_columns(pl.col("rating").cast(pl.Int64)), lazy=True)


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    q, a = zip(*GOOD)
    ex = PARITY.augment(np.array(q), np.array(a), 3, np.random.default_rng(0))
    return to_frame(ex, np.array(["hand"] * 3), np.array([0, 1, 2]), np.array([5, 6, 7]), PARITY)


def failing(report) -> dict:
    return {check: sorted(report.problems.filter(pl.col("check") == check)["row"].to_list())
            for check in report.failing}


def test_the_examples_schema_is_built_from_the_task(table):
    assert table.columns == list(PARITY.columns) and table.height == 12
    assert validate_examples(table, PARITY, rows_per_group=4).ok
    assert validate_shards([table.with_columns(pl.col("variant").cast(pl.String)).to_arrow()], PARITY,
                           rows_per_group=4).ok
    assert np.array_equal(from_frame(table, PARITY).transforms, table["shift"].to_numpy())
    assert checks_id(PARITY) == "parity-test-1"
    schema = examples_schema(PARITY)
    assert [c.name for c in schema.checks] == [
        "parity_inputs_agree", "examples_puzzle_id_is_row", "examples_groups_in_order", "examples_raw_index_distinct",
        "parity_original_is_identity", "parity_augmented_matches_original"]  # no hints: no hint check


def test_the_examples_schema_names_every_bad_row_with_the_tasks_reasons(table):
    def edit(frame, name, row, value):
        values = frame[name].to_numpy().copy()
        values[row] = value
        return frame.with_columns(pl.Series(name, values, dtype=frame.schema[name]))

    labels, inputs = table["labels"].to_numpy(), table["inputs"].to_numpy()
    odd = labels[1].copy()
    odd[inputs[1] == 1] ^= 1  # the blank's bit flipped (tokens 2 <-> 3): odd, and no longer the rotation
    disagree = inputs[5].copy()
    disagree[np.flatnonzero(disagree != 1)[0]] ^= 1  # a given 0 <-> 1 (tokens 2 <-> 3)
    bad = edit(edit(edit(edit(edit(table, "labels", 1, odd), "inputs", 5, disagree), "shift", 0, 2), "shift", 9, 9),
               "parent_id", 6, 0)
    report = validate_examples(bad, PARITY, rows_per_group=4, path="bad.arrow")
    assert failing(report) == {
        "parent_id: equal_to(-1)": [6],
        "labels_even": [1],
        "shift: less_than_or_equal_to(7)": [9],
        "inputs_agree": [5],
        "original_is_identity": [0],
        "augmented_matches_original": [1, 5, 9],
    }
    lines = report.message().splitlines()
    assert lines[0].startswith("bad.arrow: 5 of 12 rows invalid")
    assert "  row 1: labels: an odd number of ones" in lines and "  row 0: original with a shift" in lines
    assert "  row 5: inputs: a given differs from the label" in lines
    hint = table.with_columns(pl.Series("variant", ["original", "hint"] + ["augmented"] * 10,
                                        dtype=table.schema["variant"]))
    # A shard may hold imported rows (hrm upstream import), never a hint of a task without hints.
    assert "variant: isin(['original', 'augmented', 'imported'])" in failing(validate_examples(
        hint.with_columns(pl.col("variant").cast(pl.String)), PARITY, shards=True))


def test_the_rules_are_diagnosed_once_per_table(monkeypatch):
    """The rules' checks share validate_raw's diagnosis (one pass over the rows, whatever the number of
    rules), also the check attached to a column, which Pandera hands a copy of the task."""
    calls = []
    diagnose_raw = ParityTask.diagnose_raw

    def counted(self, *args):
        calls.append(len(args[0]))
        return diagnose_raw(self, *args)

    monkeypatch.setattr(ParityTask, "diagnose_raw", counted)
    assert validate_raw(raw(GOOD), PARITY).ok
    assert calls == [3]
