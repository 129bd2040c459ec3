"""The upstream dataset layout both ways (issue 30, item 4): hrm/upstream.py's arrays on a hand-made case,
``hrm upstream export`` then ``import`` on datasets the stages build (Sudoku vanilla and hint, maze, ARC),
the export of ARC at num_aug 0 against the official builder's arrays (tests/fixtures/arc), bad folders
refused naming the file and key, and the imported dataset in the loader, the registry's check and the
trainer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrm import upstream as up
from hrm.data import PuzzleDataset
from hrm.tasks import ARC_AGI_1, SUDOKU
from stage_helpers import HINT, VANILLA, fails, ok

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- the meaning of the arrays


def test_the_index_arrays_of_a_hand_made_split():
    """Three groups: the first holds two versions of 2 rows (identifiers 4, 5), the second one version of
    1 row, the third two versions of 1 row; without identifiers every row is a puzzle of identifier 0."""
    group_id = np.array([0, 0, 0, 0, 1, 2, 2])
    identifiers = np.array([4, 4, 5, 5, 3, 1, 2])
    ids, puzzles, groups = up.index_arrays(group_id, identifiers)
    assert ids.tolist() == [4, 5, 3, 1, 2] and ids.dtype == np.int32
    assert puzzles.tolist() == [0, 2, 4, 5, 6, 7] and groups.tolist() == [0, 2, 3, 5]
    assert [a.dtype for a in (puzzles, groups)] == [np.int32, np.int32]
    back_group, back_ids = up.rows_of(puzzles, groups, ids)
    assert back_group.tolist() == group_id.tolist() and back_ids.tolist() == identifiers.tolist()

    ids, puzzles, groups = up.index_arrays(np.array([0, 0, 0, 1, 2, 2]), None)
    assert ids.tolist() == [0] * 6 and puzzles.tolist() == list(range(7)) and groups.tolist() == [0, 3, 4, 6]

    tokens = np.full((7, 4), 2, np.uint8)
    split = up.to_upstream(tokens, tokens, group_id, identifiers)
    meta = up.split_metadata(split, vocab_size=12, num_identifiers=6)
    assert list(meta) == list(up.METADATA_KEYS)  # the official builders' key order
    assert meta == {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 12, "seq_len": 4,
                    "num_puzzle_identifiers": 6, "total_groups": 3, "mean_puzzle_examples": 7 / 5, "sets": ["all"]}


# --------------------------------------------------------------------------- datasets built by the stages


def rows_of_dataset(dataset: Path, split: str) -> dict[str, np.ndarray]:
    """Every row of a split as the loader gives it, with its group."""
    ds = PuzzleDataset(dataset, split)
    batch = ds.gather(np.arange(ds.num_examples))
    return {"inputs": batch["inputs"], "labels": batch["labels"], "identifiers": batch["puzzle_identifiers"],
            "group": np.repeat(np.arange(ds.num_groups), ds.group_sizes)}


def assert_round_trip(dataset: Path, tmp_path: Path, task: str) -> Path:
    """Export, import, export again: the same examples, groups and identifiers, the same upstream bytes."""
    first, imported, second = tmp_path / "up", tmp_path / "imported", tmp_path / "up-again"
    ok("upstream", "export", dataset, "--output", first)
    ok("upstream", "import", first, "--task", task, "--output", imported, "--shard-max-mb", "0.05")
    for split in up.SPLITS:
        want, got = rows_of_dataset(dataset, split), rows_of_dataset(imported, split)
        for key in want:
            assert np.array_equal(want[key], got[key]), (split, key)
    ok("upstream", "export", imported, "--output", second)
    files = [up.IDENTIFIERS] + [f"{s}/{f}" for s in up.SPLITS for f in [up.METADATA] + [f"all__{a}.npy" for a in up.ARRAYS]]
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    return imported


@pytest.mark.parametrize("kind", [VANILLA, HINT])
def test_sudoku_export_then_import_gives_back_the_examples(built, tmp_path, kind):
    root, _ = built
    imported = assert_round_trip(root / "datasets" / kind, tmp_path, "sudoku")
    manifest = json.loads((imported / "manifest.json").read_text())
    assert manifest["lineage"]["imported"]["validated_with"] == SUDOKU.examples_checks_id
    assert set(manifest["splits"]["train"]["variants"]) == {"imported"}
    # The upstream meaning: a Sudoku puzzle is one example of identifier 0; a group an original and its copies.
    exported = tmp_path / "up" / "train"
    rows = PuzzleDataset(root / "datasets" / kind, "train")
    assert np.load(exported / "all__puzzle_indices.npy").tolist() == list(range(rows.num_examples + 1))
    assert np.load(exported / "all__group_indices.npy").tolist() == rows.group_starts.tolist() + [rows.num_examples]
    assert not np.load(exported / "all__puzzle_identifiers.npy").any()


def test_maze_export_then_import_gives_back_the_examples(tmp_path):
    from test_maze_datasets import build_mazes

    datasets = build_mazes(tmp_path / "build", num_aug=3)
    assert_round_trip(datasets / json.loads((datasets / "datasets.json").read_text())["vanilla"], tmp_path, "maze")


def write_task_folder(arc1, official, folder: Path) -> Path:
    """The fixture's 7 puzzles as task JSON files, one folder per subset (hrm raw --source json)."""
    for subset, key in (("training", "train"), ("evaluation", "eval")):
        (folder / subset).mkdir(parents=True)
        for name in official[subset]:
            (folder / subset / f"{name}.json").write_text(json.dumps(arc1[key][name]))
    return folder


def build_arc(root: Path, tasks: Path, num_aug: int) -> Path:
    ok("raw", "--task", "arc-agi-1", "--source", "json", "--input", tasks, "--output", root / "raw")
    ok("subsample", "--input", root / "raw", "--output", root / "sub", "--subsample-size", 0, "--test-size", 0)
    ok("augment", "--input", root / "sub", "--output", root / "aug", "--num-aug", num_aug, "--seed", 5)
    ok("hints", "--input", root / "aug", "--output", root / "hints", "--enabled", "false")
    ok("shard", "--input", root / "hints", "--output", root / "datasets", "--shard-max-mb", "0.5")
    return root / "datasets" / json.loads((root / "datasets" / "datasets.json").read_text())["vanilla"]


@pytest.fixture(scope="module")
def arc_tasks(arc1, official, tmp_path_factory) -> Path:
    return write_task_folder(arc1, official, tmp_path_factory.mktemp("arc_tasks"))


@pytest.fixture(scope="module")
def arc_aug0(arc_tasks, tmp_path_factory) -> Path:
    return build_arc(tmp_path_factory.mktemp("arc_aug0"), arc_tasks, 0)


def test_arc_export_then_import_gives_back_the_examples(arc_tasks, tmp_path):
    dataset = build_arc(tmp_path / "build", arc_tasks, 4)
    imported = assert_round_trip(dataset, tmp_path, "arc-agi-1")
    assert (imported / "identifiers.json").read_bytes() == (tmp_path / "up" / "identifiers.json").read_bytes()
    names = json.loads((dataset / "identifiers.json").read_text())
    assert json.loads((tmp_path / "up" / "identifiers.json").read_text()) == names
    # The upstream meaning: a puzzle is a version (a run of one identifier), a group an ARC puzzle's versions.
    exported = tmp_path / "up" / "train"
    ids, bounds = np.load(exported / "all__puzzle_identifiers.npy"), np.load(exported / "all__group_indices.npy")
    assert len(np.unique(ids)) == len(ids)
    for g in range(len(bounds) - 1):
        puzzle_names = {names[i].split("_")[0] for i in ids[bounds[g]:bounds[g + 1]]}
        assert len(puzzle_names) == 1 and 1 < bounds[g + 1] - bounds[g] <= 5
    assert PuzzleDataset(imported, "train").examples_per_epoch == PuzzleDataset(dataset, "train").examples_per_epoch


def test_the_arc_export_is_the_official_builders_arrays(arc_aug0, official, tmp_path):
    """num_aug 0: the test split (no translation) holds the official bytes, puzzle by puzzle (matched by
    identifier name: the official order is its shuffle's), the train split the same grids at other offsets,
    and both dataset.json files are the official ones."""
    import hrm.arc as arc

    out = tmp_path / "up"
    ok("upstream", "export", arc_aug0, "--output", out)
    want, counts = official["aug0"], official["counts"]["0"]
    official_names, ours = counts["identifiers"], json.loads((out / "identifiers.json").read_text())
    assert sorted(ours) == sorted(official_names) and ours[0] == "<blank>"
    for split in up.SPLITS:
        assert json.loads((out / split / "dataset.json").read_text()) == counts[f"{split}__metadata"]
        got = {name: np.load(out / split / f"all__{name}.npy") for name in up.ARRAYS}
        assert got["inputs"].dtype == want[f"{split}__inputs"].dtype == np.uint8
        assert got["puzzle_indices"].dtype == got["group_indices"].dtype == np.int32
        assert len(got["group_indices"]) == len(want[f"{split}__group_indices"])
        theirs = {official_names[i]: p for p, i in enumerate(want[f"{split}__puzzle_identifiers"])}
        for p, identifier in enumerate(got["puzzle_identifiers"]):
            q = theirs[ours[identifier]]
            mine = slice(got["puzzle_indices"][p], got["puzzle_indices"][p + 1])
            their = slice(want[f"{split}__puzzle_indices"][q], want[f"{split}__puzzle_indices"][q + 1])
            for key in ("inputs", "labels"):
                if split == "test":
                    assert got[key][mine].tobytes() == want[f"{split}__{key}"][their].tobytes()
                else:  # translated by each builder's own draws: the same grids
                    offsets = ARC_AGI_1.imported_transforms(np.zeros(0), got["inputs"][mine], None).offset
                    grids = [arc.decode_board(b, o) for b, o in zip(got[key][mine], offsets)]
                    official_grids = [arc.decode_board(b, o) for b, o in
                                      zip(want[f"{split}__{key}"][their], want["train_offsets"][their])]
                    assert all(np.array_equal(a, b) for a, b in zip(grids, official_grids))


# --------------------------------------------------------------------------- bad folders


@pytest.fixture(scope="module")
def sudoku_upstream(built, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sudoku_upstream") / "up"
    ok("upstream", "export", built[0] / "datasets" / VANILLA, "--output", out)
    return out


def _edit_array(name: str, change):
    def edit(folder: Path) -> None:
        path = folder / "train" / f"all__{name}.npy"
        np.save(path, change(np.load(path)))
    return edit


def _edit_meta(change):
    def edit(folder: Path) -> None:
        path = folder / "train" / "dataset.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return edit


def _set(a: np.ndarray, index, value) -> np.ndarray:
    a = np.array(a)
    a[index] = value
    return a


BAD_FOLDERS = {
    "missing file": (lambda f: (f / "train" / "all__labels.npy").unlink(), ["train/all__labels.npy: missing"]),
    "wrong dtype": (_edit_array("puzzle_identifiers", lambda a: a.astype(np.float32)),
                    ["train/all__puzzle_identifiers.npy: dtype float32"]),
    "wrong shape": (_edit_array("labels", lambda a: a[:, :80]),
                    ["train/all__labels.npy: shape (100, 80), expected the inputs' (100, 81)"]),
    "not monotonic": (_edit_array("puzzle_indices", lambda a: _set(a, 3, a[2])),
                      ["train/all__puzzle_indices.npy: not increasing at index 3"]),
    "wrong end": (_edit_array("group_indices", lambda a: _set(a, -1, a[-1] + 1)),
                  ["train/all__group_indices.npy: last value", "expected the number of puzzles, 100"]),
    "token out of range": (_edit_array("inputs", lambda a: _set(a, (3, 5), 11)),
                           ["train/all__inputs.npy: row 3, cell 5: token 11 outside 1..10"]),
    "identifier out of range": (_edit_array("puzzle_identifiers", lambda a: _set(a, 2, 1)),
                                ["train/all__puzzle_identifiers.npy: puzzle 2 has identifier 1, outside 0..0"]),
    "total_groups": (_edit_meta(lambda m: m.update(total_groups=21)),
                     ["train/dataset.json: key total_groups is 21", "holds 20 groups"]),
    "mean_puzzle_examples": (_edit_meta(lambda m: m.update(mean_puzzle_examples=5.0)),
                             ["train/dataset.json: key mean_puzzle_examples is 5.0"]),
    "vocab_size": (_edit_meta(lambda m: m.update(vocab_size=12)), ["train/dataset.json: key vocab_size is 12"]),
    "key missing": (_edit_meta(lambda m: m.pop("sets")), ["train/dataset.json: key sets missing"]),
    "identifiers.json": (lambda f: (f / "identifiers.json").write_text("{}"), ["identifiers.json: expected a JSON list"]),
    "label does not solve": (_edit_array("labels", lambda a: _set(a, (4, [0, 1]), a[4, [1, 0]])),
                             ["rows the sudoku checks refuse", "row 4: labels: not a valid Sudoku solution"]),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_bad_upstream_folder_is_refused_naming_file_and_key(sudoku_upstream, tmp_path, case):
    edit, expected = BAD_FOLDERS[case]
    folder = tmp_path / "up"
    shutil.copytree(sudoku_upstream, folder)
    edit(folder)
    output = fails("upstream", "import", folder, "--task", "sudoku", "--output", tmp_path / "out")
    for text in expected:
        assert text in output, output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_arc_folders_with_a_blank_version_or_a_broken_board_are_refused(arc_aug0, tmp_path):
    good = tmp_path / "up"
    ok("upstream", "export", arc_aug0, "--output", good)
    blank = tmp_path / "blank"
    shutil.copytree(good, blank)
    _edit_array("puzzle_identifiers", lambda a: _set(a, 1, 0))(blank)
    output = fails("upstream", "import", blank, "--task", "arc-agi-1", "--output", tmp_path / "out")
    assert "train/all__puzzle_identifiers.npy: puzzle 1 has the blank identifier 0" in output
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    labels = np.load(good / "test" / "all__labels.npy")
    labels[2, np.flatnonzero(labels[2] == 1)[0]] = 0  # an EOS cell lost
    np.save(broken / "test" / "all__labels.npy", labels)
    output = fails("upstream", "import", broken, "--task", "arc-agi-1", "--output", tmp_path / "out")
    assert "row 2: inputs/labels: an imported pair's boards must each be one grid encoded at its offset" in output
    assert "all__inputs.npy" in output and not (tmp_path / "out").exists()
    ok("upstream", "import", good, "--task", "arc-agi-1", "--output", tmp_path / "out")  # the unbroken one passes


def test_export_refuses_a_changed_shard(built, tmp_path):
    dataset = tmp_path / "ds"
    shutil.copytree(built[0] / "datasets" / VANILLA, dataset)
    shard = sorted((dataset / "train").glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-200] ^= 1
    shard.write_bytes(bytes(data))
    output = fails("upstream", "export", dataset, "--output", tmp_path / "up")
    assert "cannot be exported" in output and shard.name in output and not (tmp_path / "up").exists()


# --------------------------------------------------------------------------- the imported dataset in use


def test_an_imported_dataset_passes_the_registry_check_trains_and_evaluates(sudoku_upstream, tmp_path):
    from pipelines.artifacts import check_dataset, dataset_summary
    from test_train import TINY_FLAGS

    imported = tmp_path / "imported"
    ok("upstream", "import", sudoku_upstream, "--task", "sudoku", "--output", imported)
    manifest, files, problems = check_dataset(imported)
    assert problems == [] and "README.md" in files
    assert dataset_summary(manifest)["variants"]["train"] == {"imported": 100}
    lineage = manifest["lineage"]["imported"]
    assert lineage["folder"] == str(sudoku_upstream)
    assert lineage["files"]["train/all__inputs.npy"]["sha256"] == up_sha256(sudoku_upstream / "train" / "all__inputs.npy")
    assert len(lineage["files"]) == 1 + 2 * (1 + len(up.ARRAYS))
    ok("validate", "shards", imported)
    out = tmp_path / "run"
    result = ok("train", "--dataset", imported, "--output", out, *TINY_FLAGS, "--epochs", "2", "--eval-interval", "2",
                "--global-batch-size", "8", "--eval-size", "4", "--lr-warmup-steps", "1")
    assert "step 5/5" in result.output, result.output
    ok("evaluate", "--dataset", imported, "--checkpoint", out, "--output", tmp_path / "eval", "--no-progress")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["test"]["puzzles"] == 9  # every imported test row, its upstream group its raw_index
    import polars as pl

    puzzles = pl.read_parquet(tmp_path / "eval" / "puzzles.parquet")
    assert puzzles["raw_index"].to_list() == list(range(9)) and set(puzzles["rating"]) == {0}


def up_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
