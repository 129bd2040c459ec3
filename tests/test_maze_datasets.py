"""The dataset stages, the loader and the trainer on mazes: real generated mazes through ``hrm raw
--task maze``, subsample, augment (dihedral transforms), hints (passed through) and shard, checked
against an independent re-derivation in the test (numpy's rot90/flip on the 30x30 grid, a plain BFS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import yaml

from hrm import maze as M
from stage_helpers import digest_tree, fails, ok, record_table
from test_maze import ref_bfs, ref_route

TRAIN, TEST, NUM_AUG = 12, 5, 7
NAME = f"maze-builtin-{TRAIN}-aug-{NUM_AUG}"


def independent_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """The official builder's transform k of one 30x30 grid, written out with numpy's own functions."""
    g = grid.reshape(M.SIDE, M.SIDE)
    out = [g, np.rot90(g, 1), np.rot90(g, 2), np.rot90(g, 3), np.fliplr(g), np.flipud(g), g.T,
           np.fliplr(np.rot90(g, 1))][k]
    return out.reshape(-1)


def build_mazes(root: Path, num_aug: int = NUM_AUG) -> Path:
    ok("raw", "--task", "maze", "--source", "builtin", "--output", str(root / "raw"), "--seed", "4",
       "--train-size", "16", "--test-size", str(TEST))
    ok("subsample", "--input", str(root / "raw"), "--output", str(root / "subsample"), "--seed", "4",
       "--subsample-size", str(TRAIN), "--test-size", "0")
    ok("augment", "--input", str(root / "subsample"), "--output", str(root / "augment"), "--seed", "4",
       "--num-aug", str(num_aug))
    ok("hints", "--input", str(root / "augment"), "--output", str(root / "hints"), "--enabled", "false")
    ok("shard", "--input", str(root / "hints"), "--output", str(root / "datasets"), "--shard-max-mb", "0.05")
    return root / "datasets"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_mazes(tmp_path_factory.mktemp("maze_datasets"))


def split_table(dataset: Path, split: str) -> pl.DataFrame:
    files = sorted((dataset / split).glob("*.arrow"))
    return pl.from_arrow(pa.concat_tables([pa.ipc.open_file(str(f)).read_all() for f in files]))


def test_the_maze_dataset_and_its_manifest(built):
    assert json.loads((built / "datasets.json").read_text()) == {"vanilla": NAME, "hint": None}
    dataset = built / NAME
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["encoding"]["task"] == "maze"
    assert (manifest["encoding"]["seq_len"], manifest["encoding"]["vocab_size"]) == (900, 6)
    assert manifest["columns"]["inputs"] == "fixed_size_list<item: uint8>[900]" and "dihedral" in manifest["columns"]
    assert "digit_map" not in manifest["columns"]
    raw = manifest["lineage"]["raw"]
    assert raw["task"] == "maze" and raw["seed"] == 4
    # The maze generator's own control is recorded, and none of Sudoku's (they were null here before).
    assert raw["min_path"] == 111 and not {"min_blanks", "max_blanks", "min_rating"} & set(raw)
    train = manifest["splits"]["train"]
    assert (train["rows"], train["groups"], train["rows_per_group"]) == (TRAIN * 8, TRAIN, 8)
    assert train["variants"] == {"original": TRAIN, "augmented": TRAIN * 7, "hint": 0}
    assert len(train["shards"]) > 1  # 0.05 MiB shards of whole groups
    assert manifest["splits"]["test"]["rows"] == TEST and manifest["splits"]["test"]["rows_per_group"] == 1
    assert ok("validate", "shards", str(built)).output.startswith(f"{built}: OK, 1 dataset ({NAME})")


def test_every_augmented_maze_is_its_dihedral_transform_of_the_original(built):
    sub = pl.read_parquet(built.parent / "subsample" / "train.parquet")
    originals_q = M.strings_to_tokens(sub["question"].to_numpy())
    originals_a = M.strings_to_tokens(sub["answer"].to_numpy())
    df = split_table(built / NAME, "train")
    inputs = df["inputs"].to_numpy()
    labels = df["labels"].to_numpy()
    for g in range(TRAIN):
        rows = df.with_row_index().filter(pl.col("group_id") == g)
        assert sorted(rows["dihedral"].to_list()) == list(range(8))  # num_aug 7: all 8, as the official --aug
        assert rows["dihedral"][0] == 0 and rows["variant"][0] == "original"
        assert rows["raw_index"].n_unique() == 1 and rows["rating"].n_unique() == 1
        for i, k in zip(rows["index"].to_list(), rows["dihedral"].to_list()):
            assert np.array_equal(inputs[i], independent_dihedral(originals_q[g], k))
            assert np.array_equal(labels[i], independent_dihedral(originals_a[g], k))
            moves, ways = ref_bfs(inputs[i])
            assert ref_route(inputs[i], labels[i]) == moves == rows["rating"][0] and ways == 1


def test_the_maze_stages_are_reproducible(built, tmp_path):
    again = build_mazes(tmp_path)
    assert digest_tree(again) == digest_tree(built)


def test_fewer_transforms_are_distinct_and_sorted(tmp_path):
    built = build_mazes(tmp_path, num_aug=2)
    df = split_table(built / f"maze-builtin-{TRAIN}-aug-2", "train")
    per_group = df.group_by("group_id", maintain_order=True).agg(pl.col("dihedral"))["dihedral"].to_list()
    assert all(ks[0] == 0 and len(set(ks)) == 3 and ks[1:] == sorted(ks[1:]) and min(ks[1:]) >= 1 for ks in per_group)
    assert len({tuple(ks) for ks in per_group}) > 1  # drawn per maze


def test_maze_tables_refuse_hints_and_more_than_seven_transforms(built, tmp_path):
    root = built.parent
    out = fails("hints", "--input", str(root / "augment"), "--output", str(tmp_path / "h"), "--enabled", "true")
    assert f"{root / 'augment' / 'lineage.json'}: the tables hold maze examples, which have no hints" in out
    out = fails("augment", "--input", str(root / "subsample"), "--output", str(tmp_path / "a"), "--num-aug", "8")
    assert "--num-aug 8: a maze has 7 transformed copies besides itself" in out
    assert not (tmp_path / "h").exists() and not (tmp_path / "a").exists()


def test_a_damaged_maze_row_is_named(built, tmp_path):
    root = built.parent
    df = pl.read_ipc(root / "augment" / "train.arrow")
    labels = df["labels"].to_numpy().copy()
    row = 11  # an augmented row: break its path by one cell
    cells = np.flatnonzero(labels[row] == M.PATH)
    labels[row, cells[len(cells) // 2]] = M.OPEN
    bad = df.with_columns(pl.Series("labels", labels, dtype=df.schema["labels"]))
    folder = tmp_path / "augment"
    folder.mkdir()
    bad.write_ipc(folder / "train.arrow")
    for name in ("test.arrow", "lineage.json"):
        (folder / name).write_bytes((root / "augment" / name).read_bytes())
    record_table(folder / "train.arrow")  # its record forged too: the rows are still checked
    out = fails("validate", "examples", str(folder / "train.arrow"))
    assert f"row {row}: labels: not the input maze with one shortest S-G path marked" in out
    assert f"row {row}: augmented maze is not its transform" in out
    out = fails("hints", "--input", str(folder), "--output", str(tmp_path / "h"), "--enabled", "false")
    assert f"{folder / 'train.arrow'}: 1 of {TRAIN * 8} rows invalid" in out and "Traceback" not in out


def test_the_subsample_stage_checks_maze_rows_by_the_maze_rules(tmp_path):
    raw = tmp_path / "raw"
    ok("raw", "--task", "maze", "--train-size", "4", "--test-size", "2", "--output", str(raw))
    table = pl.read_parquet(raw / "train.parquet")
    answer = table["answer"][2].replace("o", " ", 1)  # a path with a gap
    table.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit(answer)).otherwise(pl.col("answer"))
                       .alias("answer")).write_parquet(raw / "train.parquet")
    record_table(raw / "train.parquet")
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "sub"), "--subsample-size", "0")
    assert f"{raw / 'train.parquet'}" in out and "row 2" in out and "answer" in out
    (raw / "stats.json").write_text("[]\n")  # valid JSON, not the raw stage's
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "sub"), "--subsample-size", "0")
    assert f"{raw / 'stats.json'}: not the raw stage's statistics" in out


def test_the_maze_card_and_datasets_loading(built):
    import datasets

    dataset = built / NAME
    card = (dataset / "README.md").read_text()
    assert "Maze-30x30-Hard style dataset" in card and "Sudoku" not in card
    assert "- maze\n" in card and "| `dihedral` | uint8 |" in card and "reshape(-1, 900)" in card
    ds = datasets.load_dataset(str(dataset))
    assert ds["train"].num_rows == TRAIN * 8 and len(ds["test"][0]["inputs"]) == 900


def test_the_loader_reads_maze_shards(built):
    from hrm.data import PuzzleDataset, arrow_to_batch

    ds = PuzzleDataset(built / NAME, "train")
    assert ds.seq_len == 900 and ds.num_groups == TRAIN
    df = split_table(built / NAME, "train")
    rows = np.array([0, 9, 50, TRAIN * 8 - 1])
    batch = ds.gather(rows)
    assert np.array_equal(batch["inputs"], df["inputs"].to_numpy()[rows].astype(np.int32))
    assert np.array_equal(batch["labels"], df["labels"].to_numpy()[rows].astype(np.int32))
    stream = ds.to_iterable_dataset(mode="eval").with_format("arrow")
    first = arrow_to_batch(next(stream.iter(batch_size=4)))
    assert tuple(first["inputs"].shape) == (4, 900)


def test_training_on_mazes(built, tmp_path):
    import torch

    from test_train import TINY_FLAGS

    out = tmp_path / "run"
    result = ok("train", "--dataset", str(built), "--output", str(out), "--variant", "vanilla", *TINY_FLAGS,
                "--epochs", "2", "--eval-interval", "2", "--global-batch-size", "8", "--eval-size", "4",
                "--lr-warmup-steps", "1")
    assert "step 3/3" in result.output
    config = yaml.safe_load((out / "checkpoints" / "all_config.yaml").read_text())
    assert (config["arch"]["seq_len"], config["arch"]["vocab_size"]) == (900, 6)
    state = torch.load(out / "checkpoints" / "step_3", map_location="cpu", weights_only=True)
    assert state["model.inner.embed_tokens.embedding_weight"].shape[0] == 6


# sha256[:16] of the maze checks' code (schemas/examples.py, hrm/tasks/maze.py and hrm/maze.py) when MAZE_CHECKS_ID
# (hrm/tasks/maze.py) was set. Issue 27: the generic schema and the maze's rules in its task module, the checks
# unchanged: same MAZE_CHECKS_ID. Issue 30: the shard-only variant ``imported`` (Task.imported_transforms); the
# checks of the stages' rows unchanged: same MAZE_CHECKS_ID.
MAZE_CHECKS_CODE = "e8a8156afdbe3396"


def test_the_maze_checks_id_follows_the_checks():
    # As test_build.test_checks_id_follows_the_checks for Sudoku: the lineage records MAZE_CHECKS_ID.
    import hashlib

    from hrm.tasks import MAZE, SUDOKU
    from schemas.examples import checks_id
    from hrm.tasks.maze import MAZE_CHECKS_ID
    from test_build import _code

    root = Path(__file__).resolve().parents[1]
    code = "".join(_code(root / f) for f in ("schemas/examples.py", "hrm/tasks/maze.py", "hrm/maze.py"))
    got = hashlib.sha256(code.encode()).hexdigest()[:16]
    assert got == MAZE_CHECKS_CODE, (
        f"the code of the maze checks changed: if a check changed, give hrm.tasks.maze.MAZE_CHECKS_ID a new "
        f"value; then set MAZE_CHECKS_CODE = {got!r} in tests/test_maze_datasets.py")
    assert checks_id(MAZE) == MAZE_CHECKS_ID != checks_id(SUDOKU)


def test_an_unknown_task_in_the_lineage_is_named(built, tmp_path):
    import shutil

    folder = tmp_path / "augment"
    shutil.copytree(built.parent / "augment", folder)
    lineage = json.loads((folder / "lineage.json").read_text())
    lineage["raw"]["task"] = "arc"
    (folder / "lineage.json").write_text(json.dumps(lineage))
    out = fails("hints", "--input", str(folder), "--output", str(tmp_path / "h"), "--enabled", "false")
    assert f"{folder / 'lineage.json'}: key raw.task: 'arc' is not one of sudoku, maze" in out
