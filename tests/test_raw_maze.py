"""``hrm raw --task maze``: Maze-30x30-Hard raw tables from the offline generator, a CSV folder and
the Hub (up to the network boundary), each validated by schemas/raw.py with the maze task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hrm import maze as M
from hrm.tasks import MAZE, SUDOKU
from schemas.raw import RAW_COLUMNS, raw_validator
from test_raw import FAKE_SHA, fake_hub_cache, files_of, run, write_split_csvs

validate_maze_raw = raw_validator(MAZE)


@pytest.fixture(scope="module")
def mazes() -> pl.DataFrame:
    g = M.generate_mazes(14, seed=11)
    return pl.DataFrame({"source": ["gen"] * 14, "question": M.tokens_to_strings(g.questions),
                         "answer": M.tokens_to_strings(g.answers), "rating": g.ratings.astype(str)})


def maze_table(path: Path) -> pl.DataFrame:
    table = pl.read_parquet(path)
    assert table.columns == list(RAW_COLUMNS) and table.schema["rating"] == pl.Int64
    assert validate_maze_raw(table).ok
    return table


def test_builtin_mazes(tmp_path):
    out = tmp_path / "o"
    args = ["--task", "maze", "--train-size", "12", "--test-size", "5", "--seed", "3", "--min-path", "120"]
    result = run(*args, "--min-blanks", "30", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "note: ignored with --task maze --source builtin: --min-blanks" in result.output
    train, test = maze_table(out / "train.parquet"), maze_table(out / "test.parquet")
    assert train.height == 12 and test.height == 5
    # The rating is the shortest path's moves, as an independent count of the answer's path cells says.
    moves = [a.count("o") + 1 for a in train["answer"].to_list()]
    assert train["rating"].to_list() == moves and min(moves) >= 120
    stats = json.loads((out / "stats.json").read_text())
    assert stats["task"] == "maze" and stats["builtin"]["min_path"] == 120
    assert stats["splits"]["train"]["distribution"]["path_moves"]["min"] == min(moves)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["train"]) == {"puzzles", "rejected", "rating_mean", "path_moves_mean"}
    assert metrics["questions_in_both_splits"] == 0
    again = tmp_path / "again"
    assert run(*args, "--output", str(again)).exit_code == 0
    assert files_of(again) == files_of(out)  # seeded: byte-identical


def test_csv_mazes_with_a_missing_rating_and_a_bad_row(mazes, tmp_path):
    train = mazes.head(10).with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("")).otherwise(
        pl.col("rating")).alias("rating"))
    folder = write_split_csvs(tmp_path / "csv", train, mazes.tail(4))
    out = tmp_path / "o"
    result = run("--task", "maze", "--source", "csv", "--input", str(folder), "--output", str(out))
    assert result.exit_code == 0, result.output
    table = maze_table(out / "train.parquet")
    assert table["rating"][4] == mazes["answer"][4].count("o") + 1  # computed: the shortest path's moves
    assert table["rating"].to_list() == [int(r) for r in mazes.head(10)["rating"]]

    a = mazes["answer"].to_list()
    broken = train.with_columns(pl.Series("answer", [x.replace("o", " ", 1) if i == 7 else x
                                                     for i, x in enumerate(a[:10])]))
    folder = write_split_csvs(tmp_path / "bad", broken, mazes.tail(4))
    result = run("--task", "maze", "--source", "csv", "--input", str(folder), "--output", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{folder / 'train.csv'}: 1 of 10 rows are invalid" in result.output
    assert f"row 7, answer: {M.REASONS[M.REASON_NOT_A_PATH]}" in result.output
    assert maze_table(out / "train.parquet").height == 10  # the earlier output is kept
    dropped = run("--task", "maze", "--source", "csv", "--input", str(folder), "--output", str(out),
                  "--on-invalid", "drop")
    assert dropped.exit_code == 0, dropped.output
    assert maze_table(out / "train.parquet").height == 9
    assert pl.read_parquet(out / "rejected-train.parquet")["row"].to_list() == [7]


def test_sudoku_rows_under_the_maze_task_are_refused_by_row(tmp_path):
    from conftest import REAL_SUDOKU

    sudoku = pl.read_csv(REAL_SUDOKU / "valid.csv", infer_schema=False).head(3)
    folder = write_split_csvs(tmp_path / "csv", sudoku, sudoku)
    result = run("--task", "maze", "--source", "csv", "--input", str(folder), "--output", str(tmp_path / "o"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "row 0, question: expected 900 characters, got 81" in result.output


def test_hf_mazes_from_the_cache_and_the_wrong_tasks_repo(mazes, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub_cache(tmp_path / "hub", mazes, repo_id=MAZE.hf_repo, train=9,
                                                          test=5)))
    out = tmp_path / "o"
    result = run("--task", "maze", "--source", "hf", "--output", str(out))  # the task's repo, at `main`
    assert result.exit_code == 0, result.output
    assert maze_table(out / "train.parquet")["question"].to_list() == mazes.head(9)["question"].to_list()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["hf"] == {**stats["hf"], "repo_id": MAZE.hf_repo, "revision": "main", "resolved_sha": FAKE_SHA}
    wrong = run("--task", "maze", "--source", "hf", "--hf-repo", SUDOKU.hf_repo, "--hf-revision", SUDOKU.hf_revision,
                "--output", str(tmp_path / "w"))
    assert wrong.exit_code == 1 and "Traceback" not in wrong.output
    assert f"is the sudoku reference dataset, not the maze one: pass --hf-repo {MAZE.hf_repo}" in wrong.output
    assert not (tmp_path / "w").exists()


def test_the_tasks_difficulty_is_what_the_generators_rate():
    g = M.generate_mazes(6, seed=2)
    assert np.array_equal(MAZE.difficulty(np.asarray(M.tokens_to_strings(g.questions))), g.ratings)
    from hrm.generate import generate_puzzles
    from hrm.sudoku import grids_to_strings

    p = generate_puzzles(6, seed=2)
    assert np.array_equal(SUDOKU.difficulty(np.asarray(grids_to_strings(p.questions))), np.asarray(p.ratings))


def test_hrm_validate_raw_with_the_maze_task(mazes, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli

    good = tmp_path / "mazes.csv"
    mazes.write_csv(good)
    result = CliRunner().invoke(cli, ["validate", "raw", "--task", "maze", str(good)])
    assert result.exit_code == 0 and f"{good}: OK, 14 rows valid (a unique shortest path each)" in result.output
    bad = tmp_path / "bad.csv"
    mazes.with_columns(pl.col("question").str.replace("S", " ")).write_csv(bad)
    result = CliRunner().invoke(cli, ["validate", "raw", "--task", "maze", str(bad), "--batch-rows", "5"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{bad}: 14 of 14 rows are invalid" in result.output
    assert f"row 13, question: {M.REASONS[M.REASON_START_GOAL]}" in result.output  # numbered across batches
    as_sudoku = CliRunner().invoke(cli, ["validate", "raw", str(good)])
    assert as_sudoku.exit_code == 1 and "expected 81 characters, got 900" in as_sudoku.output
