"""Issue 14 (trust), the dataset side: empty or too small splits are refused at the stage that
would produce them (class 11); manifests and lineage files are read against their schema
(class 5); a stage's validation skip cannot be forged by editing files (class 3).

Every case runs the real stages (click's CliRunner) on the real puzzles, or on the chain the
`built` fixture made (copied before any edit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from conftest import REAL_SUDOKU as REAL
from stage_helpers import fails, make_raw, ok, record_table, run

from hrm.tasks import SUDOKU


def _copy(built, tmp_path: Path, *names: str) -> Path:
    root, _ = built
    for name in names:
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path


# --------------------------------------------------------------------------- class 11: empty data


def test_raw_refuses_a_header_only_csv(tmp_path):
    valid = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    csv = tmp_path / "csv"
    csv.mkdir()
    valid[:0].write_csv(csv / "train.csv")  # the header, no rows
    valid[30:].write_csv(csv / "test.csv")
    out = fails("raw", "--source", "csv", "--input", str(csv), "--output", str(tmp_path / "raw"))
    assert str(csv / "train.csv") in out and "train split would be empty" in out and "0 rows" in out
    assert not (tmp_path / "raw").exists()


def test_raw_refuses_a_split_whose_rows_are_all_dropped(tmp_path):
    valid = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    csv = tmp_path / "csv"
    csv.mkdir()
    valid[:30].write_csv(csv / "train.csv")
    valid[30:].with_columns(pl.col("question").str.slice(0, 80)).write_csv(csv / "test.csv")  # every row invalid
    out = fails("raw", "--source", "csv", "--input", str(csv), "--output", str(tmp_path / "raw"),
                "--on-invalid", "drop")
    assert str(csv / "test.csv") in out and "test split would be empty" in out and "all 9 rows rejected" in out
    assert not (tmp_path / "raw").exists()


def test_raw_builtin_sizes_of_zero_are_refused(tmp_path):
    result = run("raw", "--source", "builtin", "--train-size", "0", "--output", str(tmp_path / "raw"))
    assert result.exit_code == 2 and "--train-size" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "raw").exists()


def test_subsample_refuses_an_empty_split_and_a_size_above_the_split(tmp_path):
    valid = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    raw = make_raw(tmp_path / "raw")
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "s"), "--subsample-size", "31")
    assert "--subsample-size 31" in out and "30 train puzzles" in out and str(raw / "train.parquet") in out
    ok("subsample", "--input", str(raw), "--output", str(tmp_path / "s"), "--subsample-size", "30")  # all: allowed
    assert pl.read_parquet(tmp_path / "s" / "train.parquet").height == 30

    empty = tmp_path / "empty"
    shutil.copytree(raw, empty)
    valid[:0].with_columns(pl.col("rating").cast(pl.Int64)).write_parquet(empty / "test.parquet")
    record_table(empty / "test.parquet")
    out = fails("subsample", "--input", str(empty), "--output", str(tmp_path / "s2"), "--subsample-size", "0")
    assert str(empty / "test.parquet") in out and "0 rows" in out
    assert not (tmp_path / "s2").exists()


@pytest.mark.parametrize("stage, upstream, table", [
    ("augment", "subsample", "train.parquet"),
    ("hints", "augment", "test.arrow"),
    ("shard", "hints", "train.arrow"),
])
def test_dataset_stages_refuse_an_empty_input_split(built, tmp_path, stage, upstream, table):
    _copy(built, tmp_path, upstream)
    path = tmp_path / upstream / table
    if table.endswith(".parquet"):
        pl.read_parquet(path)[:0].write_parquet(path)
    else:
        pl.read_ipc(path)[:0].write_ipc(path, compression="uncompressed")
    record_table(path)  # a 0-row table with a matching record: refused for its rows
    out = fails(stage, "--input", str(tmp_path / upstream), "--output", str(tmp_path / "out"))
    assert str(path) in out and "0 rows" in out and f"`hrm {stage}` needs at least one row" in out
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- class 5: manifest trust


def _dataset(built, tmp_path: Path) -> Path:
    from stage_helpers import VANILLA

    root, _ = built
    shutil.copytree(root / "datasets" / VANILLA, tmp_path / VANILLA)
    return tmp_path / VANILLA


def _edit_manifest(dataset: Path, edit) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    edit(manifest)
    (dataset / "manifest.json").write_text(json.dumps(manifest))


def _refused_by_all_three(dataset: Path, *expected: str) -> None:
    """The loader, `hrm validate shards` and the registry's check refuse the folder, naming each expected text."""
    from hrm.data import DatasetError, PuzzleDataset
    from pipelines.io import StageError
    from pipelines.artifacts import check_dataset

    with pytest.raises(DatasetError) as loader:
        PuzzleDataset(dataset, "train")
    validate = fails("validate", "shards", str(dataset))
    try:
        problems = check_dataset(dataset)[2]
        registry = "\n".join(problems)
    except StageError as exc:
        registry = str(exc)
    for text in expected:
        for who, message in (("loader", str(loader.value)), ("validate", validate), ("registry", registry)):
            assert text in message, (who, text, message)


def test_a_shard_path_outside_the_dataset_folder_is_refused(built, tmp_path):
    dataset = _dataset(built, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    first = manifest["splits"]["train"]["shards"][0]
    outside = tmp_path / "outside.arrow"  # the same bytes, so only the path can refuse it
    shutil.copyfile(dataset / first["file"], outside)
    for file in (str(outside), "../outside.arrow", "train/../../outside.arrow"):
        _edit_manifest(dataset, lambda m: m["splits"]["train"]["shards"][0].update(file=file))
        _refused_by_all_three(dataset, f"{dataset / 'manifest.json'}: key splits.train.shards[0].file",
                              "must be a relative path inside the dataset folder")


def test_an_unlisted_shard_in_a_split_folder_is_refused(built, tmp_path):
    dataset = _dataset(built, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    stray = dataset / "train" / "data-00009-of-00009.arrow"
    shutil.copyfile(dataset / manifest["splits"]["test"]["shards"][0]["file"], stray)  # a valid shard, not listed
    _refused_by_all_three(dataset, f"{stray}: not")
    assert "not listed in" in fails("validate", "shards", str(dataset))
    stray.unlink()
    ok("validate", "shards", str(dataset))


@pytest.mark.parametrize("key, edit", [
    ("splits.train.shards", lambda m: m["splits"]["train"].update(shards=None)),
    ("splits.train.rows", lambda m: m["splits"]["train"].update(rows=str(m["splits"]["train"]["rows"]))),
    ("splits.train.shards[1].rows[0]", lambda m: m["splits"]["train"]["shards"][1]["rows"].__setitem__(0, "65")),
    ("splits.train.shards[0].sha256", lambda m: m["splits"]["train"]["shards"][0].update(sha256=123)),
    ("splits.train.shards[0]", lambda m: m["splits"]["train"]["shards"].__setitem__(0, "data.arrow")),
    ("splits.train.rows", lambda m: m["splits"]["train"].update(rows=0)),
    ("lineage.augment.params.num_aug", lambda m: m["lineage"]["augment"]["params"].update(num_aug="4")),
    ("splits.train.shards[1].file", lambda m: m["splits"]["train"]["shards"][1].update(
        file=m["splits"]["train"]["shards"][0]["file"])),
])
def test_wrong_typed_manifest_fields_are_refused_naming_the_key(built, tmp_path, key, edit):
    dataset = _dataset(built, tmp_path)
    _edit_manifest(dataset, edit)
    _refused_by_all_three(dataset, f"{dataset / 'manifest.json'}: key {key}:")


@pytest.mark.parametrize("stage, upstream, lineage, expected", [
    ("hints", "augment", [], "key (top level): expected a JSON object"),
    ("hints", "augment", {"augment": {"rows_per_group": {"train": "5"}}}, "key augment.rows_per_group.train:"),
    ("shard", "hints", {"hints": {"params": {"enabled": 1}}}, "key hints.params.enabled:"),
    ("shard", "hints", {"hints": {"outputs": None}}, "key hints.outputs: expected a JSON object"),
    ("shard", "hints", {"augment": {}}, "key hints: missing"),
    ("augment", "subsample", {"subsample": {"groups": {"train": -1}}}, "key subsample.groups.train:"),
])
def test_a_lineage_file_of_the_wrong_shape_is_refused(built, tmp_path, stage, upstream, lineage, expected):
    _copy(built, tmp_path, upstream)
    path = tmp_path / upstream / "lineage.json"
    path.write_text(json.dumps(lineage))
    out = fails(stage, "--input", str(tmp_path / upstream), "--output", str(tmp_path / "out"))
    assert f"{path}: {expected}" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "abc"])
def test_shard_max_mb_must_be_a_finite_positive_size(built, tmp_path, value):
    root, _ = built
    result = run("shard", "--input", str(root / "hints"), "--output", str(tmp_path / "d"), "--shard-max-mb", value)
    assert result.exit_code == 2 and "--shard-max-mb" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- class 3: no validation bypass


def _swap_label_cells(table: pl.DataFrame, row: int) -> pl.DataFrame:
    """Row ``row`` with two label cells swapped: a wrong Sudoku solution, every column still well typed."""
    labels = table["labels"].to_numpy().copy()
    labels[row, [0, 1]] = labels[row, [1, 0]]
    return table.with_columns(pl.Series("labels", labels, dtype=pl.Array(pl.UInt8, 81)))


@pytest.mark.parametrize("stage, upstream, record", [("hints", "augment", "augment"), ("shard", "hints", "hints")])
def test_an_edited_table_with_its_lineage_record_edited_too_is_still_validated(built, tmp_path, stage, upstream,
                                                                               record):
    """Corrupt a label of an intermediate table and write its new sha256 into lineage.json: the
    next stage validates it anyway and names the row; nothing is written."""
    import hashlib

    _copy(built, tmp_path, upstream)
    path = tmp_path / upstream / "train.arrow"
    _swap_label_cells(pl.read_ipc(path), 12).write_ipc(path, compression="uncompressed")
    lineage_path = tmp_path / upstream / "lineage.json"
    lineage = json.loads(lineage_path.read_text())
    lineage[record]["outputs"]["train.arrow"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    lineage_path.write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    out = fails(stage, "--input", str(tmp_path / upstream), "--output", str(tmp_path / "out"))
    assert f"{path}: " in out and "row 12: labels: not a valid Sudoku solution" in out
    assert "not re-validated" not in out
    assert not (tmp_path / "out").exists()


def test_validate_shards_checks_every_row_against_the_examples_rules(built, tmp_path):
    """A shard rewritten with a wrong solution and the manifest's sha256 and size updated to
    match: only the content rules can tell, and `hrm validate shards` (and the registry's check) apply them."""
    import hashlib

    from pipelines.artifacts import check_dataset
    from pipelines.shard import to_arrow, write_shard

    dataset = _dataset(built, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    entry = manifest["splits"]["train"]["shards"][1]
    path = dataset / entry["file"]
    write_shard(to_arrow(_swap_label_cells(pl.read_ipc(path), 3), SUDOKU.shard_schema), path)
    entry.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    out = fails("validate", "shards", str(dataset))
    row = entry["rows"][0] + 3
    assert f"row {row}: labels: not a valid Sudoku solution" in out and f"[{path}, row 3]" in out
    assert any(f"[{path}, row 3]" in p for p in check_dataset(dataset)[2])


def test_the_shard_stage_checks_its_output_against_the_examples_rules(built, tmp_path):
    """The shard stage's output check (verify_split, run on every split it writes) applies every
    examples rule to the shard files, not only their layout: shards holding a wrong solution,
    ids and layout intact, are refused."""
    from pipelines.io import StageError
    from pipelines.shard import verify_split

    dataset = _dataset(built, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    entries = manifest["splits"]["train"]["shards"]
    per = manifest["splits"]["train"]["rows_per_group"]
    verify_split(entries, dataset, per, "train", SUDOKU)  # as written: passes
    path = dataset / entries[1]["file"]
    from pipelines.shard import to_arrow, write_shard

    write_shard(to_arrow(_swap_label_cells(pl.read_ipc(path), 2), SUDOKU.shard_schema), path)
    with pytest.raises(StageError) as err:
        verify_split(entries, dataset, per, "train", SUDOKU)
    assert "the written shards failed validation" in str(err.value)
    assert f"row {entries[1]['rows'][0] + 2}: labels: not a valid Sudoku solution" in str(err.value)


# --------------------------------------------------------------------------- issue 26, class 2: verify on read


def _flip_bit(path: Path) -> tuple[str, str]:
    """Flip one bit in the middle of ``path``; returns (sha256 before, after)."""
    import hashlib

    data = bytearray(path.read_bytes())
    before = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    return before, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("stage, upstream, table, validate", [
    ("subsample", "raw", "train.parquet", "raw"),
    ("augment", "subsample", "train.parquet", "examples"),
    ("hints", "augment", "train.arrow", "examples"),
    ("shard", "hints", "test.arrow", "examples"),
])
def test_a_flipped_bit_in_an_input_table_is_refused_naming_the_file_and_both_hashes(built, tmp_path, stage, upstream,
                                                                                    table, validate):
    """One flipped bit in a table the stage before wrote (and recorded): the stage and `hrm validate`
    refuse it before computing anything, naming the file and both hashes; nothing is written."""
    _copy(built, tmp_path, upstream)
    path = tmp_path / upstream / table
    want, got = _flip_bit(path)
    out = fails(stage, "--input", str(tmp_path / upstream), "--output", str(tmp_path / "out"))
    assert out.count("Error:") == 1 and f"{path}: content does not match its recorded sha256" in out
    assert want in out and got in out and f"`hrm {upstream}`" in out
    assert not (tmp_path / "out").exists()
    out = fails("validate", validate, str(path))
    assert f"{path}: content does not match its recorded sha256" in out and want in out and got in out


@pytest.mark.parametrize("stage, upstream, table", [
    ("augment", "subsample", "train.parquet"),
    ("shard", "hints", "test.arrow"),
])
def test_a_table_without_its_record_is_refused(built, tmp_path, stage, upstream, table):
    """The record removed (the output's record deleted, the lineage entry dropped): refused, naming the
    file and the stage that rebuilds it."""
    from pipelines.output_records import RECORD

    _copy(built, tmp_path, upstream)
    path = tmp_path / upstream / table
    if table.endswith(".parquet"):
        (path.parent / RECORD).unlink()
    else:
        lineage = json.loads((tmp_path / upstream / "lineage.json").read_text())
        del lineage[upstream]["outputs"][table]
        (tmp_path / upstream / "lineage.json").write_text(json.dumps(lineage))
    out = fails(stage, "--input", str(tmp_path / upstream), "--output", str(tmp_path / "out"))
    assert f"{path}: no sha256 recorded for it" in out and f"with `hrm {upstream}`" in out
    assert not (tmp_path / "out").exists()


def test_raw_and_subsample_record_the_sha256_of_their_tables(built, tmp_path):
    """`hrm raw` and `hrm subsample` record each table they write, with its sha256, in their output's record."""
    import hashlib

    from pipelines.output_records import read_record

    root, _ = built
    ok("raw", "--source", "builtin", "--train-size", "6", "--test-size", "3", "--output", str(tmp_path / "raw"))
    for folder in (tmp_path / "raw", root / "subsample"):
        tables = sorted(folder.glob("*.parquet"))
        assert [p.name for p in tables] == ["test.parquet", "train.parquet"]
        for p in tables:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            assert read_record(folder)["files"][p.name] == digest


@pytest.mark.parametrize("names, expected", [
    ({"vanilla": 3, "hint": None}, "key vanilla: input should be a valid string (found 3)"),
    ({"vanilla": "../raw", "hint": None}, "key vanilla: must be the name of a dataset folder inside"),
    ({"vanilla": "/tmp", "hint": None}, "key vanilla: must be the name of a dataset folder inside"),
    ({"vanilla": "elsewhere", "hint": None}, "key vanilla: 'elsewhere' is not a dataset folder of"),
    ({"vanilla": "V", "hint": None, "extra": "V"}, "key extra: extra inputs are not permitted"),
    (["V"], "key (top level): expected a JSON object"),
])
def test_a_datasets_index_of_the_wrong_shape_is_refused_naming_the_key(built, tmp_path, names, expected):
    """datasets.json (the shard stage's index, read by every --dataset ROOT) is checked against its schema:
    `hrm validate shards` and the resolver refuse it with one message naming the file and key."""
    from pipelines.datasets import resolve_dataset
    from pipelines.io import StageError
    from stage_helpers import VANILLA

    root, _ = built
    shutil.copytree(root / "datasets", tmp_path / "datasets")
    index = tmp_path / "datasets" / "datasets.json"
    index.write_text(json.dumps(json.loads(json.dumps(names).replace('"V"', json.dumps(VANILLA)))))
    out = fails("validate", "shards", str(tmp_path / "datasets"))
    assert out.count("Error:") == 1 and f"{index}: {expected}" in out, out
    with pytest.raises(StageError, match="datasets.json"):
        resolve_dataset(tmp_path / "datasets", "vanilla")
