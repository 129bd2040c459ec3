"""The raw-table schema (schemas/raw.py) and `hrm validate raw`, on real puzzles."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandera.polars as pa
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import REAL_SUDOKU as REAL
from hrm.solver import count_solutions, solve
from hrm.sudoku import strings_to_grids
from pipelines.cli import cli
from hrm.tasks import SUDOKU
from hrm.tasks.sudoku import diagnose
from schemas.raw import RAW_COLUMNS, raw_schema, raw_validator

validate_raw = raw_validator(SUDOKU)
RawTable, UniqueRawTable = raw_schema(SUDOKU, check_unique=False), raw_schema(SUDOKU, check_unique=True)


def read_text_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


@pytest.fixture(scope="module")
def valid() -> pl.DataFrame:
    return read_text_csv(REAL / "valid.csv")


@pytest.fixture(scope="module")
def not_unique() -> pl.DataFrame:
    return read_text_csv(REAL / "no-unique-solution.csv")


def with_answers_for(not_unique: pl.DataFrame, filler: str) -> pl.DataFrame:
    """Raw rows for the no-unique-solution questions.

    A 'several' question gets a real solution (the solver's first one): a valid grid that
    keeps every given, so only the uniqueness check can reject it. A 'none' question has
    no valid grid agreeing with its givens, so it gets ``filler`` (a valid solution of
    another puzzle).
    """
    grids = strings_to_grids(not_unique["question"].to_list())
    first = solve(grids).solution
    answers = [
        "".join(map(str, sol)) if kind == "several" else filler
        for sol, kind in zip(first, not_unique["solutions"].to_list())
    ]
    return not_unique.select(
        "source", "question", pl.Series("answer", answers), pl.lit("0").alias("rating")
    )


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ----------------------------------------------------------------------------- valid data


def test_valid_csv_passes(valid):
    report = validate_raw(valid, path="valid.csv")
    assert report.ok, report.message()
    assert report.n_rows == report.valid.height == 39
    assert report.rejected.height == 0
    assert report.valid.columns == list(RAW_COLUMNS)
    assert report.valid.schema["rating"] == pl.Int64
    assert report.valid["rating"].to_list() == [int(r) for r in valid["rating"]]
    assert "OK, 39 rows" in report.summary()


def test_validate_command_ok_on_csv_and_parquet(valid, tmp_path):
    result = run("validate", "raw", str(REAL / "valid.csv"))
    assert result.exit_code == 0, result.output
    assert result.output.strip().count("\n") == 0  # one line
    assert "OK, 39 rows" in result.output
    parquet = tmp_path / "valid.parquet"
    validate_raw(valid).valid.write_parquet(parquet)
    result = run("validate", "raw", str(parquet), "--batch-rows", "7")
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- uniqueness


def test_count_solutions_of_every_no_unique_row(not_unique):
    grids = strings_to_grids(not_unique["question"].to_list())
    expected = np.where(not_unique["solutions"].to_numpy() == "none", 0, 2)
    assert (count_solutions(grids) == expected).all()
    diag = diagnose(not_unique["question"], not_unique["question"])  # answers malformed: only counting matters
    assert (diag.num_solutions == expected).all()
    assert not diag.unique.any()


def test_every_no_unique_row_is_rejected(not_unique, valid):
    table = with_answers_for(not_unique, filler=valid["answer"][0])
    report = validate_raw(table, path="no-unique.csv")
    assert not report.ok
    assert report.rejected["row"].to_list() == list(range(not_unique.height))
    kinds = not_unique["solutions"].to_list()
    for row, reason in report.rejected.select("row", "reason").iter_rows():
        if kinds[row] == "several":
            # a real solution keeping the givens: uniqueness is the only problem
            assert reason == "question: has several solutions"
        else:
            assert reason.startswith("question: has no solution")
    # switched off, the 'several' rows are valid raw rows
    relaxed = validate_raw(table, check_unique=False)
    assert relaxed.valid.height == kinds.count("several")


def test_uniqueness_is_a_registered_pandera_check(not_unique, valid):
    table = with_answers_for(not_unique, filler=valid["answer"][0]).with_columns(pl.col("rating").cast(pl.Int64))
    several = table.filter(not_unique["solutions"] == "several")
    RawTable.validate(several)  # without uniqueness: fine
    with pytest.raises(pa.errors.SchemaErrors) as info:
        UniqueRawTable.validate(several, lazy=True)
    failures = info.value.failure_cases
    assert set(failures["check"]) == {"sudoku_unique_solution"}
    assert sorted(failures["index"].to_list()) == list(range(several.height))


# ----------------------------------------------------------------------------- every kind of bad row, one run


@pytest.fixture()
def bad_csv(valid, tmp_path) -> Path:
    rows = valid.head(8).to_dicts()
    rows[1]["question"] = rows[1]["question"][:80]  # 80 characters
    q = rows[2]["question"]
    rows[2]["question"] = q[:10] + "x" + q[11:]  # a bad character at position 10
    a = rows[3]["answer"]
    rows[3]["answer"] = a[:80] + ("1" if a[80] != "1" else "2")  # breaks a Sudoku rule
    rows[4]["answer"] = rows[5]["answer"]  # a valid grid disagreeing with row 4's givens
    rows[6]["rating"] = "-7"  # negative rating
    path = tmp_path / "bad.csv"
    pl.DataFrame(rows).write_csv(path)
    return path


EXPECTED_BAD = [
    (1, "question", "expected 81 characters, got 80"),
    (2, "question", "character 'x' at position 10 (0-based) is not '.' or 1-9"),
    (3, "answer", "not a valid Sudoku solution"),
    (4, "answer", "disagrees with the question's given"),
    (6, "rating", "negative rating -7"),
]


def test_all_problems_reported_in_one_run(bad_csv):
    report = validate_raw(read_text_csv(bad_csv), path=str(bad_csv))
    got = report.problems.rows()
    assert [(r, c) for r, c, _ in got] == [(r, c) for r, c, _ in EXPECTED_BAD]
    for (_, _, reason), (_, _, want) in zip(got, EXPECTED_BAD):
        assert want in reason
    assert report.valid.height == 3 and report.rejected.height == 5
    message = report.message()
    assert str(bad_csv) in message and "numbered from 0" in message


def test_validate_command_reports_every_bad_row(bad_csv):
    result = run("validate", "raw", str(bad_csv), "--no-check-unique")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert str(bad_csv) in result.output
    for row, column, reason in EXPECTED_BAD:
        assert f"row {row}, {column}: " in result.output and reason in result.output


def test_malformed_strings_do_not_crash_grid_checks(valid):
    table = valid.head(4).with_columns(
        pl.Series("question", [None, "12", valid["question"][2], valid["question"][3]]),
        pl.Series("answer", [valid["answer"][0], "9" * 81, "é" * 81, None]),
        pl.Series("rating", ["1", "1", " 2 ", "two"]),
    )
    report = validate_raw(table)
    assert report.problems.rows() == [
        (0, "question", "missing value"),
        (1, "question", "expected 81 characters, got 2"),
        (1, "answer", "not a valid Sudoku solution (a digit repeats in a row, column or box)"),
        (2, "answer", "character 'é' at position 0 (0-based) is not a digit 1-9"),
        (3, "answer", "missing value"),
        (3, "rating", "not an integer: 'two'"),
    ]


def test_table_layout_errors(valid):
    report = validate_raw(valid.drop("rating").with_columns(pl.lit("x").alias("extra")), path="t.csv")
    assert not report.ok and report.table_errors == ["missing column: rating", "unexpected column: extra"]
    assert "t.csv" in report.message()
    report = validate_raw(valid.with_columns(pl.lit(1.5).alias("rating")))
    assert report.table_errors == ["column rating has type Float64, expected integers"]


def test_listing_is_capped(valid):
    table = pl.concat([valid] * 2).with_columns(pl.lit("-1").alias("rating"))
    message = validate_raw(table, path="many.csv").message(limit=20)
    lines = message.splitlines()
    assert len(lines) == 1 + 20 + 1
    assert lines[-1].strip() == "... and 58 more problems (78 in 78 rows)"


def test_row_numbers_continue_across_batches(bad_csv, tmp_path):
    parquet = tmp_path / "bad.parquet"
    read_text_csv(bad_csv).write_parquet(parquet)
    result = run("validate", "raw", str(parquet), "--batch-rows", "2", "--no-check-unique")
    assert result.exit_code == 1
    for row, column, _ in EXPECTED_BAD:
        assert f"row {row}, {column}: " in result.output


def test_truncated_parquet_is_a_clear_error(valid, tmp_path):
    good = tmp_path / "good.parquet"
    validate_raw(valid).valid.write_parquet(good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = run("validate", "raw", str(truncated))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{truncated}: cannot read as parquet" in result.output
    missing = run("validate", "raw", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1 and "nope.csv: file not found" in missing.output


@pytest.mark.skipif(shutil.which("hrm") is None, reason="the hrm console script is not installed")
def test_console_script(bad_csv):
    ok = subprocess.run(["hrm", "validate", "raw", str(REAL / "valid.csv")], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK, 39 rows" in ok.stdout
    bad = subprocess.run(["hrm", "validate", "raw", str(bad_csv)], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "row 1, question: expected 81 characters, got 80" in bad.stderr
