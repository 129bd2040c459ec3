"""`hrm validate examples | shards` on files built by the real stages (the `built` chain)."""

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa

from hrm.tasks import SUDOKU
from pipelines.shard import to_arrow, write_shard
from pipelines.validate import problems_message
from stage_helpers import HINT, NUM_AUG, VANILLA, fails, ok, record_table


def one_line_ok(*args: str) -> str:
    out = ok("validate", *args).stdout
    assert out.count("\n") == 1 and ": OK, " in out, out
    return out


def copy_dataset(built, tmp_path: Path, name: str = VANILLA) -> Path:
    root, _ = built
    copy = tmp_path / name
    shutil.copytree(root / "datasets" / name, copy)
    return copy


def train_shards(dataset: Path) -> list[Path]:
    return [dataset / r["file"] for r in json.loads((dataset / "manifest.json").read_text())["splits"]["train"]["shards"]]


# --------------------------------------------------------------------------- good files


def test_examples_tables_pass(built):
    root, _ = built
    out = one_line_ok("examples", str(root / "augment" / "train.arrow"))
    assert f"{20 * (1 + NUM_AUG)} rows valid" in out and f"group size {1 + NUM_AUG}, as" in out  # from lineage.json
    out = one_line_ok("examples", str(root / "hints" / "train.arrow"))
    assert f"group size {2 * (1 + NUM_AUG)}" in out
    for path in ("augment/test.arrow", "hints/test.arrow"):
        assert "group size 1," in one_line_ok("examples", str(root / path))
    assert "subsample table" in one_line_ok("examples", str(root / "subsample" / "train.parquet"))


def test_sharded_datasets_pass(built):
    root, _ = built
    for name in (VANILLA, HINT):
        manifest = json.loads((root / "datasets" / name / "manifest.json").read_text())
        shards = sum(len(info["shards"]) for info in manifest["splits"].values())
        rows = sum(info["rows"] for info in manifest["splits"].values())
        assert f"{shards} shards, {rows} rows valid" in one_line_ok("shards", str(root / "datasets" / name))
    assert "2 datasets" in one_line_ok("shards", str(root / "datasets"))  # the stage's output: both datasets


# --------------------------------------------------------------------------- bad files


def test_bad_row_in_examples_table(built, tmp_path):
    root, _ = built
    bad = tmp_path / "augment"
    bad.mkdir()
    shutil.copy(root / "augment" / "lineage.json", bad)
    table = pl.read_ipc(root / "augment" / "train.arrow")
    labels = table["labels"].to_numpy().copy()
    labels[12, [0, 1]] = labels[12, [1, 0]]
    table.with_columns(pl.Series("labels", labels, dtype=pl.Array(pl.UInt8, 81))).write_ipc(bad / "train.arrow")
    record_table(bad / "train.arrow")  # its record forged too: the rows are still checked
    out = fails("validate", "examples", str(bad / "train.arrow"))
    assert f"{bad / 'train.arrow'}: " in out and "row 12: labels: not a valid Sudoku solution" in out
    # The group size comes from lineage.json beside the file; --rows-per-group overrides it.
    table.head(-1).write_ipc(bad / "train.arrow")
    record_table(bad / "train.arrow")
    assert f"does not have {1 + NUM_AUG} rows" in fails("validate", "examples", str(bad / "train.arrow"))
    out = fails("validate", "examples", str(bad / "train.arrow"), "--rows-per-group", "3")
    assert "row 0: the group starting here does not have 3 rows" in out
    assert "file not found" in fails("validate", "examples", str(bad / "test.arrow"))


def test_bad_row_in_subsample_table(built, tmp_path):
    root, _ = built
    table = pl.read_parquet(root / "subsample" / "train.parquet")
    table.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.col("question").str.slice(0, 80))
                       .otherwise(pl.col("question")).alias("question")).write_parquet(tmp_path / "train.parquet")
    out = fails("validate", "examples", str(tmp_path / "train.parquet"))
    assert str(tmp_path / "train.parquet") in out and "row 5, question: expected 81 characters" in out


def test_corrupted_shards(built, tmp_path):
    dataset = copy_dataset(built, tmp_path)
    flipped, truncated = train_shards(dataset)[:2]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    out = fails("validate", "shards", str(dataset))
    assert f"{flipped}: sha256 or size differs from the manifest" in out
    assert f"{truncated}: cannot read as an Arrow IPC shard" in out


def test_missing_shard(built, tmp_path):
    dataset = copy_dataset(built, tmp_path, HINT)
    missing = train_shards(dataset)[1]
    missing.unlink()
    out = fails("validate", "shards", str(dataset))
    assert f"{missing}: shard listed in the manifest is missing" in out and "1 problem:" in out


def test_bad_row_in_shard_names_shard_and_row(built, tmp_path):
    # A shard rewritten with a bad row and the manifest updated to match: only the shard schema can tell.
    dataset = copy_dataset(built, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    record = manifest["splits"]["train"]["shards"][1]
    path = dataset / record["file"]
    table = pl.from_arrow(pa.ipc.open_file(pa.py_buffer(path.read_bytes())).read_all())
    table = table.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(10**6, pl.Int32))
                               .otherwise(pl.col("puzzle_id")).alias("puzzle_id"))
    write_shard(to_arrow(table, SUDOKU.shard_schema), path)
    record.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    out = fails("validate", "shards", str(dataset))
    row = record["rows"][0] + 7
    assert f"{dataset / 'train'}: 1 of" in out and f"row {row}: puzzle_id: not the row number" in out
    assert f"[{path}, row 7]" in out


def test_bad_manifest_keys(built, tmp_path):
    dataset = copy_dataset(built, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    del manifest["splits"]["train"]["shards"][0]["sha256"]
    del manifest["splits"]["test"]["rows"]
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    out = fails("validate", "shards", str(dataset))
    assert "shard 0 of split 'train' has no 'sha256'" in out and "split 'test' has no 'rows'" in out
    (dataset / "manifest.json").unlink()
    assert f"{dataset / 'manifest.json'}: cannot read" in fails("validate", "shards", str(dataset))
    assert "dataset not found" in fails("validate", "shards", str(tmp_path / "nowhere"))


def test_problem_listing_is_capped():
    message = problems_message([f"shard {i}: missing" for i in range(25)])
    lines = message.splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 5 more problems"

