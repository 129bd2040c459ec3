"""`hrm subsample | augment | hints | shard`: real files, real CLI runs (click's CliRunner)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from hrm import build as B
from hrm import sudoku as S
from pipelines.io import StageError
from hrm.tasks import SUDOKU
from schemas.examples import polars_schema, validate_examples
from stage_helpers import (
    HINT, NUM_AUG, REAL, SUBSAMPLE, VANILLA, build, digest_tree, fails, make_raw, ok, record_table, verify_dataset,
)

POLARS_SCHEMA = polars_schema(SUDOKU)


def read_split(dataset: Path, split: str) -> pa.Table:
    files = sorted((dataset / split).glob("*.arrow"))
    return pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files])


# --------------------------------------------------------------------------- the chain


def test_subsample_draws_train_and_keeps_test(built):
    root, logs = built
    train = pl.read_parquet(root / "subsample" / "train.parquet")
    test = pl.read_parquet(root / "subsample" / "test.parquet")
    raw = pl.read_parquet(root / "raw" / "train.parquet")
    assert train.height == SUBSAMPLE and train["raw_index"].n_unique() == SUBSAMPLE
    assert train.drop("raw_index").equals(raw[train["raw_index"].to_list()])
    assert test.height == 9 and test["raw_index"].to_list() == list(range(9))  # test_size 0: the whole split
    lineage = json.loads((root / "subsample" / "lineage.json").read_text())
    assert lineage["raw"]["source"] == "csv" and "train.parquet" in lineage["subsample"]["inputs"]
    assert "wrote" in logs["subsample"].stderr and "rows" in logs["subsample"].stderr


def test_augment_and_hints_tables(built):
    root, _ = built
    vanilla = pl.read_ipc(root / "augment" / "train.arrow")
    hinted = pl.read_ipc(root / "hints" / "train.arrow")
    assert dict(vanilla.schema) == POLARS_SCHEMA
    assert vanilla.height == SUBSAMPLE * (1 + NUM_AUG) and hinted.height == 2 * vanilla.height
    assert validate_examples(vanilla, SUDOKU, rows_per_group=1 + NUM_AUG).ok
    assert validate_examples(hinted, SUDOKU, rows_per_group=2 * (1 + NUM_AUG)).ok
    assert hinted.filter(pl.col("variant") != "hint").drop("puzzle_id").equals(vanilla.drop("puzzle_id"))
    test = pl.read_ipc(root / "augment" / "test.arrow")
    assert test.height == 9 and (test["variant"] == "original").all() and validate_examples(test, SUDOKU, rows_per_group=1).ok
    # The test split is never hinted: passed through byte for byte.
    assert (root / "hints" / "test.arrow").read_bytes() == (root / "augment" / "test.arrow").read_bytes()
    # An original is its raw puzzle, re-derivable from the lineage columns.
    sub = pl.read_parquet(root / "subsample" / "train.parquet")
    grids = S.strings_to_grids(sub["question"].to_list())
    ex = B.augment_sudoku(grids, S.strings_to_grids(sub["answer"].to_list()), 0, None)
    firsts = vanilla.filter(pl.col("variant") == "original")
    assert np.array_equal(firsts["inputs"].to_numpy(), ex.inputs)


def test_shards_manifest_and_card(built):
    root, logs = built
    out = root / "datasets"
    assert json.loads((out / "datasets.json").read_text()) == {"vanilla": VANILLA, "hint": HINT}
    hinted = pl.read_ipc(root / "hints" / "train.arrow")
    for name, kind, rows in ((HINT, "hint", 2 * SUBSAMPLE * (1 + NUM_AUG)), (VANILLA, "vanilla", SUBSAMPLE * (1 + NUM_AUG))):
        dataset = out / name
        manifest = json.loads((dataset / "manifest.json").read_text())
        assert manifest["name"] == name and manifest["kind"] == kind
        train = manifest["splits"]["train"]
        assert train["rows"] == rows and train["groups"] == SUBSAMPLE and train["rows_per_group"] == rows // SUBSAMPLE
        assert train["variants"] == {"original": SUBSAMPLE, "augmented": SUBSAMPLE * NUM_AUG,
                                     "hint": rows - SUBSAMPLE * (1 + NUM_AUG)}
        assert manifest["splits"]["test"]["rows"] == 9 and manifest["splits"]["test"]["variants"]["hint"] == 0
        assert manifest["params"] == {"seed": 3, "subsample_size": SUBSAMPLE, "test_size": 0, "num_aug": NUM_AUG,
                                      "hints": True, "vanilla_draw": "coupled", "shard_max_mb": 0.02}
        assert manifest["source"]["source"] == "csv" and not manifest["test_capped"]
        assert set(manifest["lineage"]) == {"raw", "subsample", "augment", "hints"}
        assert manifest["inputs"]["train.arrow"]["sha256"] == hashlib.sha256(
            (root / "hints" / "train.arrow").read_bytes()).hexdigest()
        # Shards: contiguous row and group ranges, whole groups, bounded size, hashes that match.
        shards = train["shards"]
        assert len(shards) > 1 and shards[0]["rows"][0] == 0 and shards[-1]["rows"][1] == rows
        per = train["rows_per_group"]
        for a, b in zip(shards, shards[1:]):
            assert a["rows"][1] == b["rows"][0] and a["groups"][1] == b["groups"][0]
        for shard in shards:
            path = dataset / shard["file"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            assert path.stat().st_size == shard["bytes"] <= 0.02 * 2**20
            assert shard["rows"][1] - shard["rows"][0] == per * (shard["groups"][1] - shard["groups"][0])
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            assert table.schema == SUDOKU.shard_schema and table.num_rows == shard["rows"][1] - shard["rows"][0]
        # Rows in table order; the vanilla dataset is the hint table without its hints, renumbered.
        back = pl.from_arrow(read_split(dataset, "train"))
        expected = hinted if kind == "hint" else hinted.filter(pl.col("variant") != "hint").with_columns(
            puzzle_id=pl.int_range(rows, dtype=pl.Int32))
        assert back.equals(expected.with_columns(pl.col("variant").cast(pl.String)))
        card = (dataset / "README.md").read_text()
        assert card.startswith("---\n") and "configs:" in card and "path: train/*.arrow" in card
        text = (dataset / "manifest.json").read_text() + card
        assert str(root) not in text and "/tmp" not in text
    assert "shard(s)" in logs["shard"].stderr


def test_verify_dataset_catches_a_modified_shard(built, tmp_path):
    root, _ = built
    for name in (HINT, VANILLA):
        assert verify_dataset(root / "datasets" / name)["name"] == name
    copy = tmp_path / VANILLA
    shutil.copytree(root / "datasets" / VANILLA, copy)
    shard = sorted((copy / "train").glob("*.arrow"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(StageError, match=shard.name):
        verify_dataset(copy)


def test_load_dataset_reads_the_card(built, tmp_path):
    from datasets import load_dataset

    root, _ = built
    for name in (HINT, VANILLA):
        dataset = root / "datasets" / name
        ds = load_dataset(str(dataset), cache_dir=str(tmp_path / "hf"))
        manifest = json.loads((dataset / "manifest.json").read_text())
        assert ds["train"].num_rows == manifest["splits"]["train"]["rows"] and ds["test"].num_rows == 9
        assert str(ds["train"].features["inputs"]) == "List(Value('uint8'), length=81)"
        assert ds["train"]["puzzle_id"][:] == list(range(ds["train"].num_rows))
        rows = ds["train"].with_format("arrow")[:7]
        inputs = rows["inputs"].combine_chunks().flatten().to_numpy().reshape(-1, 81)
        assert inputs.dtype == np.uint8 and inputs.shape == (7, 81)
        streamed = load_dataset(str(dataset), streaming=True)
        first = next(iter(streamed["train"]))
        assert len(first["inputs"]) == 81 and first["variant"] == "original" and first["puzzle_id"] == 0
        ids = [row["puzzle_id"] for row in streamed["train"]]
        assert ids == list(range(manifest["splits"]["train"]["rows"]))
        back = read_split(dataset, "train")
        assert inputs.tolist() == back.column("inputs").combine_chunks().flatten().to_numpy().reshape(-1, 81)[:7].tolist()


def test_rebuild_is_byte_identical(built, tmp_path):
    root, _ = built
    build(tmp_path)
    assert digest_tree(tmp_path / "datasets") == digest_tree(root / "datasets")
    for stage in ("subsample", "augment", "hints"):
        assert digest_tree(tmp_path / stage) == digest_tree(root / stage)


def test_without_hints_only_vanilla(built, tmp_path):
    root, _ = built
    build(tmp_path, hints=False)
    out = tmp_path / "datasets"
    assert json.loads((out / "datasets.json").read_text()) == {"vanilla": VANILLA, "hint": None}
    assert sorted(p.name for p in out.iterdir()) == [".hrm-record.json", "README.md", "datasets.json", VANILLA]
    manifest = json.loads((out / VANILLA / "manifest.json").read_text())
    assert manifest["params"]["hints"] is False
    # The same vanilla shards as when they are taken from the hint table.
    for split in ("train", "test"):
        assert digest_tree(out / VANILLA / split) == digest_tree(root / "datasets" / VANILLA / split)


def test_an_independent_vanilla_draw(built, tmp_path):
    """--vanilla-draw independent (issue 16, item 3): the vanilla train split is its own draw of puzzles
    and symmetries, as the fork's two unseeded builds give; the hint dataset and the test split are
    unchanged, byte for byte."""
    root, _ = built
    logs = build(tmp_path, vanilla_draw="independent")
    assert "the independent vanilla draw is not hinted" in logs["hints"].stderr
    coupled, independent = root / "datasets", tmp_path / "datasets"
    for split in ("train", "test"):
        assert digest_tree(independent / HINT / split) == digest_tree(coupled / HINT / split)
    assert digest_tree(independent / VANILLA / "test") == digest_tree(coupled / VANILLA / "test")
    manifest = verify_dataset(independent / VANILLA)  # every rule of the shards holds
    assert manifest["params"]["vanilla_draw"] == "independent"
    assert "its own draw of puzzles and symmetries" in (independent / VANILLA / "README.md").read_text()
    assert "minus its hint rows" in (coupled / VANILLA / "README.md").read_text()

    hint = pl.from_arrow(read_split(independent / HINT, "train")).filter(pl.col("variant") != "hint")
    vanilla = pl.from_arrow(read_split(independent / VANILLA, "train"))
    assert vanilla.height == hint.height == SUBSAMPLE * (1 + NUM_AUG)
    raw_hint = hint.filter(pl.col("variant") == "original")["raw_index"].to_list()
    raw_vanilla = vanilla.filter(pl.col("variant") == "original")["raw_index"].to_list()
    assert raw_hint != raw_vanilla  # another draw (coupled: the same list, shown by test_augment_and_hints_tables)
    # The symmetries are independent too: for a puzzle in both draws, no augmented transform is shared.
    key = ["raw_index", "digit_map", "transpose", "row_order", "col_order"]
    shared = hint.filter(pl.col("variant") == "augmented").select(key).join(
        vanilla.filter(pl.col("variant") == "augmented").select(key), on=key, how="inner")
    assert shared.height == 0


def test_the_independent_vanilla_draw_follows_the_forks_rule():
    """The fork's rule, from its description: each build draws subsample_size of the N train puzzles
    uniformly without replacement, independently of the other build. So the number of puzzles the
    two draws share is hypergeometric(N, k, k): mean k^2/N, variance k (k/N) (1 - k/N) (N - k)/(N - 1).
    Checked over 400 seeds on the stage's own draws (hrm.build.subsample_indices, its two streams)."""
    from hrm.build import subsample_indices
    from pipelines.dataset_io import stage_rng

    n, k, seeds = 30, SUBSAMPLE, 400
    overlap = np.array([np.intersect1d(subsample_indices(stage_rng(s, "subsample"), n, k),
                                       subsample_indices(stage_rng(s, "subsample_vanilla"), n, k)).size
                        for s in range(seeds)])
    mean, var = k * k / n, k * (k / n) * (1 - k / n) * (n - k) / (n - 1)
    assert abs(overlap.mean() - mean) < 4 * np.sqrt(var / seeds)
    assert 0.7 * var < overlap.var() < 1.3 * var


def test_shard_size_bound_and_test_cap(tmp_path):
    raw = make_raw(tmp_path / "raw")
    ok("subsample", "--input", str(raw), "--output", str(tmp_path / "s"), "--subsample-size", "0", "--test-size", "4")
    ok("augment", "--input", str(tmp_path / "s"), "--output", str(tmp_path / "a"), "--num-aug", "0")
    ok("hints", "--input", str(tmp_path / "a"), "--output", str(tmp_path / "h"), "--enabled", "false")
    ok("shard", "--input", str(tmp_path / "h"), "--output", str(tmp_path / "d"), "--shard-max-mb", "128")
    names = json.loads((tmp_path / "d" / "datasets.json").read_text())
    assert names == {"vanilla": "sudoku-csv-full", "hint": None}  # not subsampled, no augmentation: the fork's name
    manifest = json.loads((tmp_path / "d" / "sudoku-csv-full" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == 30 and len(manifest["splits"]["train"]["shards"]) == 1
    assert manifest["splits"]["test"]["rows"] == 4 and manifest["test_capped"]
    assert "deviation" in (tmp_path / "d" / "sudoku-csv-full" / "README.md").read_text()


# --------------------------------------------------------------------------- bad inputs


def test_bad_raw_inputs_name_file_and_rows(tmp_path):
    valid = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    short = valid.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.col("question").str.slice(0, 80))
                               .otherwise(pl.col("question")).alias("question"))
    raw = make_raw(tmp_path / "short", short)
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "o1"), "--subsample-size", "0")
    assert str(raw / "train.parquet") in out and "row 5" in out and "81" in out
    a = valid["answer"][7]
    broken = valid.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(a[1] + a[0] + a[2:]))
                                .otherwise(pl.col("answer")).alias("answer"))
    raw = make_raw(tmp_path / "broken", broken)
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "o2"), "--subsample-size", "0")
    assert "row 7" in out and "answer" in out
    # Only the rows the datasets use are checked again; a bad one is named by its row in the file.
    from pipelines.dataset_io import stage_rng

    chosen = B.subsample_indices(stage_rng(5, "subsample"), 30, 10)
    assert 5 not in chosen  # the 80-character question of row 5 is not used
    picked = int(chosen[3])
    raw = make_raw(tmp_path / "picked", short.with_columns(
        pl.when(pl.int_range(pl.len()) == picked).then(pl.lit("x" * 81)).otherwise(pl.col("question")).alias("question")))
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "o5"), "--seed", "5",
                "--subsample-size", "10")
    assert f"row {picked}, question" in out and "row 5," not in out
    raw = make_raw(tmp_path / "truncated")
    data = (raw / "test.parquet").read_bytes()
    (raw / "test.parquet").write_bytes(data[: len(data) // 2])
    out = fails("subsample", "--input", str(raw), "--output", str(tmp_path / "o3"))
    assert str(raw / "test.parquet") in out
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
    out = fails("subsample", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o4"))
    assert "nowhere" in out


def test_bad_examples_tables_name_file_and_rows(built, tmp_path):
    root, _ = built
    # A table edited after the augment stage validated it: validated again, bad rows named.
    bad = tmp_path / "augment"
    bad.mkdir()
    for name in ("lineage.json", "test.arrow"):
        (bad / name).write_bytes((root / "augment" / name).read_bytes())
    table = pl.read_ipc(root / "augment" / "train.arrow")
    labels = table["labels"].to_numpy().copy()
    labels[12, [0, 1]] = labels[12, [1, 0]]
    table.with_columns(pl.Series("labels", labels, dtype=pl.Array(pl.UInt8, 81))).write_ipc(bad / "train.arrow")
    record_table(bad / "train.arrow")  # its record forged too: the rows are still checked
    before = digest_tree(bad)
    out = fails("hints", "--input", str(bad), "--output", str(tmp_path / "h"))
    assert str(bad / "train.arrow") in out and "row 12:" in out and "not a valid Sudoku solution" in out
    assert digest_tree(bad) == before and not (tmp_path / "h").exists()
    # A truncated file.
    data = (root / "augment" / "train.arrow").read_bytes()
    (bad / "train.arrow").write_bytes(data[: len(data) // 3])
    out = fails("hints", "--input", str(bad), "--output", str(tmp_path / "h"))
    assert str(bad / "train.arrow") in out and "does not match its recorded sha256" in out
    record_table(bad / "train.arrow")
    out = fails("hints", "--input", str(bad), "--output", str(tmp_path / "h"))
    assert str(bad / "train.arrow") in out and "cannot read" in out
    # A missing lineage; an output inside the input.
    (bad / "lineage.json").unlink()
    assert "lineage.json" in fails("shard", "--input", str(bad), "--output", str(tmp_path / "d"))
    assert "must not be" in fails("augment", "--input", str(root / "subsample"),
                                  "--output", str(root / "subsample" / "inner"))


def test_failed_stage_keeps_previous_output(built, tmp_path):
    root, _ = built
    out = tmp_path / "datasets"
    ok("shard", "--input", str(root / "hints"), "--output", str(out), "--shard-max-mb", "1")
    before = digest_tree(out)
    bad = tmp_path / "hints"
    bad.mkdir()
    for name in ("lineage.json", "test.arrow"):
        (bad / name).write_bytes((root / "hints" / name).read_bytes())
    (bad / "train.arrow").write_bytes(b"not arrow")
    fails("shard", "--input", str(bad), "--output", str(out))
    assert digest_tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets", "hints"]  # no temporary left behind


def test_the_stage_log_speaks_on_rank_0_only(capsys, monkeypatch):
    from pipelines.io import log

    monkeypatch.delenv("RANK", raising=False)
    log("shard", "wrote x")
    assert capsys.readouterr().err == "shard: wrote x\n"
    monkeypatch.setenv("RANK", "0")
    log("train", "step 1")
    assert capsys.readouterr().err == "train: step 1\n"
    monkeypatch.setenv("RANK", "1")
    log("train", "step 1")
    assert capsys.readouterr().err == ""
