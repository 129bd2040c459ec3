"""hrm.data: the streaming loader over the shards `hrm shard` writes (built here by the real stages)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

import pipelines.shard as shard_stage
from hrm.data import (
    DatasetError, PuzzleDataset, arrow_to_batch, epoch_rows, epochs_to_steps, eval_rows, steps_in_block,
)
from pipelines.cli import cli
from hrm.tasks import SUDOKU

REPO = Path(__file__).resolve().parents[1]
GROUPS, NUM_AUG = 30, 5  # train: 30 groups x (1 + 5) puzzles, x 2 with hints = 12 per group
TEST_ROWS = 25
TRAIN_KEYS = {"inputs", "labels", "puzzle_identifiers"}


def invoke(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    """Both datasets, built by the real stages: raw (builtin) -> subsample -> augment -> hints -> shard.

    Small shards (several groups each) cut into 7-row record batches, so reads cross
    both record-batch and shard boundaries, and record batches straddle groups.
    """
    root = tmp_path_factory.mktemp("loader")
    invoke("raw", "--source", "builtin", "-o", str(root / "raw"), "--train-size", "40", "--test-size",
           str(TEST_ROWS), "--seed", "1")
    invoke("subsample", "--input", str(root / "raw"), "-o", str(root / "sub"), "--subsample-size", str(GROUPS),
           "--test-size", "0", "--seed", "0")
    invoke("augment", "--input", str(root / "sub"), "-o", str(root / "aug"), "--num-aug", str(NUM_AUG))
    invoke("hints", "--input", str(root / "aug"), "-o", str(root / "hints"), "--enabled", "true")
    saved = shard_stage.BATCH_ROWS
    shard_stage.BATCH_ROWS = 7
    try:
        invoke("shard", "--input", str(root / "hints"), "-o", str(root / "ds"), "--shard-max-mb", "0.02")
    finally:
        shard_stage.BATCH_ROWS = saved
    return root / "ds"


@pytest.fixture(scope="module")
def hint_dir(datasets_dir) -> Path:
    return datasets_dir / json.loads((datasets_dir / "datasets.json").read_text())["hint"]


@pytest.fixture(scope="module")
def train(hint_dir) -> PuzzleDataset:
    return PuzzleDataset(hint_dir, "train")


@pytest.fixture(scope="module")
def test_split(hint_dir) -> PuzzleDataset:
    return PuzzleDataset(hint_dir, "test")


@pytest.fixture(scope="module")
def table(hint_dir) -> dict[str, dict[str, np.ndarray]]:
    """Each split's columns, read independently of hrm.data (Hugging Face datasets, as a user would)."""
    import datasets

    out = {}
    for split in ("train", "test"):
        files = sorted(str(p) for p in (hint_dir / split).glob("*.arrow"))
        ds = datasets.concatenate_datasets([
            datasets.Dataset(datasets.table.InMemoryTable(pa.ipc.open_file(pa.memory_map(f)).read_all()))
            for f in files])
        out[split] = {k: np.asarray(v) for k, v in ds.with_format("numpy")[:].items()}
    return out


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_shard(dataset: Path, index: int, change=lambda t: t, split: str = "train", stream: bool = False,
                  compression: str | None = None) -> Path:
    """Rewrite one shard with ``change(table) -> table`` and record its new sha256 in the manifest
    (a consistent dataset, as a drifted writer would produce)."""
    manifest_path = dataset / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    record = manifest["splits"][split]["shards"][index]
    path = dataset / record["file"]
    new = change(pa.ipc.open_file(pa.py_buffer(path.read_bytes())).read_all())  # not mapped: rewritten below
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.OSFile(str(path), "wb") as sink, \
            (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, new.schema, options=options) as writer:
        writer.write_table(new, max_chunksize=7)
    record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return path


def to_np(batch) -> dict[str, np.ndarray]:
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def plan(ds: PuzzleDataset, **kw) -> list[np.ndarray]:
    return [rows.copy() for rows in ds.train_plan(**kw)]


# ----------------------------------------------------------------------------- format and layout


def test_reads_what_shard_writes(hint_dir, train, test_split, table):
    shard_types = {f.name: f.type for f in SUDOKU.shard_schema}
    assert all(shard_types[name] == typ for name, typ in SUDOKU.loader_columns.items())  # formats cannot drift
    manifest = json.loads((hint_dir / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) > 3  # the fixture really crosses shard boundaries
    assert all(len(t.column("inputs").chunks) > 1 for t in train._tables)  # ... and record batch boundaries
    assert train.name == manifest["name"] and train.manifest == manifest
    assert (train.num_examples, train.num_groups) == (GROUPS * (1 + NUM_AUG) * 2, GROUPS)
    assert (test_split.num_examples, test_split.num_groups) == (TEST_ROWS, TEST_ROWS)
    assert len(train) == train.num_examples
    assert np.array_equal(train.group_sizes, np.full(GROUPS, 12))
    assert np.array_equal(train.group_starts, np.flatnonzero(np.diff(table["train"]["group_id"], prepend=-1)))
    for split, ds in (("train", train), ("test", test_split)):
        got = ds.gather(np.arange(ds.num_examples)[::-1])
        want = table[split]
        assert np.array_equal(got["inputs"], want["inputs"][::-1].astype(np.int32))
        assert np.array_equal(got["labels"], want["labels"][::-1].astype(np.int32))
        assert np.array_equal(got["puzzle_id"], want["puzzle_id"][::-1])
        assert np.array_equal(got["rating"], want["rating"][::-1])
        assert np.array_equal(got["raw_index"], want["raw_index"][::-1])


def test_batch_dtypes_shapes(train, test_split):
    batch = next(train.train_batches(global_batch_size=16, seed=0, block=0))
    assert set(batch) == TRAIN_KEYS
    assert batch["inputs"].dtype == batch["labels"].dtype == batch["puzzle_identifiers"].dtype == torch.int32
    assert batch["inputs"].shape == batch["labels"].shape == (16, 81)
    assert batch["puzzle_identifiers"].shape == (16,) and not batch["puzzle_identifiers"].any()
    assert int(batch["inputs"].min()) >= 1 and int(batch["inputs"].max()) <= 10
    assert int(batch["labels"].min()) >= 2 and int(batch["labels"].max()) <= 10
    ev = next(test_split.eval_batches(batch_size=10))
    assert set(ev) == TRAIN_KEYS | {"puzzle_id", "rating", "raw_index", "mask", "count"}
    assert ev["mask"].dtype == torch.bool
    assert ev["puzzle_id"].dtype == ev["rating"].dtype == ev["raw_index"].dtype == torch.int32
    assert isinstance(ev["count"], int)


def test_pad_labels_become_ignore(hint_dir, tmp_path):
    """Label token 0 (padding) -> -100, in every path; inputs keep their pad 0."""
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")

    def pad_some(t: pa.Table) -> pa.Table:
        labels = t.column("labels").combine_chunks().flatten().to_numpy().reshape(-1, 81).copy()
        inputs = t.column("inputs").combine_chunks().flatten().to_numpy().reshape(-1, 81).copy()
        labels[0, 70:] = 0
        inputs[0, 70:] = 0
        as_list = lambda a: pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), 81)  # noqa: E731
        t = t.set_column(t.schema.get_field_index("labels"), "labels", as_list(labels))
        return t.set_column(t.schema.get_field_index("inputs"), "inputs", as_list(inputs))

    rewrite_shard(ds_dir, 0, pad_some)
    ds = PuzzleDataset(ds_dir, "train")
    got = ds.gather(np.array([0, 1]))
    assert (got["labels"][0, 70:] == -100).all() and (got["labels"][0, :70] >= 2).all()
    assert (got["inputs"][0, 70:] == 0).all() and (got["labels"][1] >= 2).all()
    ev = next(ds.eval_batches(batch_size=4))
    assert (ev["labels"][0, 70:] == -100).all()
    hf = next(ds.to_iterable_dataset(mode="eval").with_format("arrow").iter(batch_size=2))
    assert (arrow_to_batch(hf)["labels"][0, 70:] == -100).all()
    kw = dict(global_batch_size=8, seed=0, block=0, epochs_per_block=60)
    hits = [(rows, batch) for rows, batch in zip(plan(ds, **kw), ds.train_batches(**kw)) if 0 in rows]
    assert hits, "row 0 is drawn within 60 epochs"
    rows, batch = hits[0]
    assert (batch["labels"][int(np.flatnonzero(rows == 0)[0]), 70:] == -100).all()


def test_stream_format_and_compressed_shards(hint_dir, tmp_path, table):
    """IPC stream format (what Dataset.from_file reads) is mapped too; a compressed shard is
    decompressed into memory; both read the same rows."""
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")
    rewrite_shard(ds_dir, 0, stream=True)
    rewrite_shard(ds_dir, 2, compression="zstd")
    ds = PuzzleDataset(ds_dir, "train")
    assert len(ds._inputs.regions) > len(ds._buffers)  # the compressed shard's chunks were copied
    got = ds.gather(np.arange(ds.num_examples))
    assert np.array_equal(got["inputs"], table["train"]["inputs"].astype(np.int32))
    assert np.array_equal(got["rating"], table["train"]["rating"])


# ----------------------------------------------------------------------------- epoch semantics


def test_steps_formula():
    assert epochs_to_steps(1000, 20000, 768, 2000) == 26_040  # the paper's "20,000 epochs"
    assert epochs_to_steps(1000, 40000, 768, 1000) == 52_080  # the fork's last checkpoint step
    assert steps_in_block(1000, 768, 1000) == 1_302  # its checkpoint spacing
    assert epochs_to_steps(1000, 20000, 768, 20000) == 26_041  # one block: only one batch dropped
    assert epochs_to_steps(30, 0, 8, 3) == 0
    with pytest.raises(ValueError, match="multiple"):
        epochs_to_steps(1000, 20000, 768, 3000)


def test_epochs_in_a_block(train):
    """Each epoch: every group once, one of its puzzles; batches span epochs; one tail dropped per block."""
    B, E, G = 8, 3, GROUPS
    group_of = np.repeat(np.arange(G), train.group_sizes)
    steps = plan(train, global_batch_size=B, seed=7, block=2, epochs_per_block=E)
    assert len(steps) == train.steps_per_block(B, E) == (E * G) // B == 11  # 90 examples: 88 used, 2 dropped
    epochs = [train.epoch_rows(7, 2 * E + i) for i in range(E)]
    for rows in epochs:
        assert sorted(group_of[rows]) == list(range(G))  # every group exactly once
    stream = np.concatenate(epochs)
    assert np.array_equal(np.concatenate(steps), stream[: len(steps) * B])
    assert 3 * B < G < 4 * B  # so step 3 holds the end of epoch 0 and the start of epoch 1
    batches = list(train.train_batches(global_batch_size=B, seed=7, block=2, epochs_per_block=E))
    assert len(batches) == len(steps)
    for rows, batch in zip(steps, batches):
        want = train.gather(rows)
        for key in TRAIN_KEYS:
            assert np.array_equal(batch[key].numpy(), want[key])
    with pytest.raises(ValueError, match="fewer examples"):
        train.train_batches(global_batch_size=G + 1, seed=0, block=0, epochs_per_block=1)


def test_draws_are_uniform(train):
    """Over many epochs every puzzle of a group is drawn about equally often, and every group
    takes every position in the order about equally often (chi-square)."""
    from scipy.stats import chisquare

    n_epochs = 2400
    offsets, first = [], []
    for e in range(n_epochs):
        rows = train.epoch_rows(3, e)
        group = np.searchsorted(train.group_starts, rows, side="right") - 1
        offsets.append(rows - train.group_starts[group])
        first.append(group[0])
    counts = np.bincount(np.concatenate(offsets), minlength=12)  # 12 puzzles per group
    assert chisquare(counts).pvalue > 1e-4, counts
    assert chisquare(np.bincount(first, minlength=GROUPS)).pvalue > 1e-4


def test_deterministic_and_seeded(train):
    kw = dict(global_batch_size=8, epochs_per_block=2)
    a = plan(train, seed=1, block=0, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a, plan(train, seed=1, block=0, **kw)))
    assert not np.array_equal(np.concatenate(a), np.concatenate(plan(train, seed=2, block=0, **kw)))
    assert not np.array_equal(np.concatenate(a), np.concatenate(plan(train, seed=1, block=1, **kw)))
    # an epoch depends only on (seed, epoch): block 1 of 2 epochs = epochs 2 and 3
    b1 = np.concatenate(plan(train, seed=1, block=1, **kw))
    assert np.array_equal(b1, np.concatenate([train.epoch_rows(1, 2), train.epoch_rows(1, 3)])[: len(b1)])
    assert np.array_equal(train.epoch_rows(1, 2), epoch_rows(1, 2, train.group_starts, train.group_sizes))
    x = [to_np(b) for b in train.train_batches(global_batch_size=8, seed=1, block=0, epochs_per_block=2)]
    y = [to_np(b) for b in train.train_batches(global_batch_size=8, seed=1, block=0, epochs_per_block=2)]
    assert all(np.array_equal(p[k], q[k]) for p, q in zip(x, y) for k in TRAIN_KEYS)


@pytest.mark.parametrize("start_step", [0, 1, 4, 10, 11])
def test_resume_equals_uninterrupted(train, start_step):
    kw = dict(global_batch_size=8, seed=5, block=3, epochs_per_block=3)
    full = [to_np(b) for b in train.train_batches(**kw)]
    resumed = [to_np(b) for b in train.train_batches(**kw, start_step=start_step)]
    assert len(resumed) == len(full) - start_step
    for p, q in zip(full[start_step:], resumed):
        assert all(np.array_equal(p[k], q[k]) for k in TRAIN_KEYS)
    with pytest.raises(ValueError, match="start_step"):
        train.train_batches(**kw, start_step=12)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_each_global_batch(train, world_size):
    kw = dict(global_batch_size=8, seed=0, block=1, epochs_per_block=2)
    glob = [to_np(b) for b in train.train_batches(**kw)]
    ranks = [[to_np(b) for b in train.train_batches(**kw, rank=r, world_size=world_size)] for r in range(world_size)]
    steps = plan(train, **kw)
    local = 8 // world_size
    for k, whole in enumerate(glob):
        parts = [ranks[r][k] for r in range(world_size)]
        assert all(p["inputs"].shape == (local, 81) for p in parts)
        for key in TRAIN_KEYS:  # rank r holds rows [r*local, (r+1)*local) of the global batch
            assert np.array_equal(np.concatenate([p[key] for p in parts]), whole[key])
        row_sets = [set(steps[k][r * local:(r + 1) * local].tolist()) for r in range(world_size)]
        assert sum(len(s) for s in row_sets) == 8 == len(set().union(*row_sets))  # disjoint, union = batch
    with pytest.raises(ValueError, match="divisible"):
        train.train_batches(global_batch_size=9, seed=0, block=0, rank=0, world_size=2)
    with pytest.raises(ValueError):
        train.train_batches(global_batch_size=8, seed=0, block=0, rank=2, world_size=2)


TORCHRUN_SCRIPT = """
import sys, numpy as np, torch, torch.distributed as dist
from hrm.data import PuzzleDataset
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ds = PuzzleDataset(sys.argv[1], "train")
local = [b["inputs"].numpy() for b in ds.train_batches(global_batch_size=8, seed=4, block=1, epochs_per_block=3,
                                                      rank=rank, world_size=world)]
gathered = [None] * world
dist.all_gather_object(gathered, local)
if rank == 0:
    np.save(sys.argv[2], np.stack([np.concatenate([g[k] for g in gathered]) for k in range(len(local))]))
dist.destroy_process_group()
"""


def test_torchrun_two_processes(hint_dir, train, tmp_path):
    """A real 2-process torchrun (gloo): the ranks' local batches, gathered, are the global batches."""
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    out = tmp_path / "gathered.npy"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(hint_dir), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    gathered = np.load(out)
    kw = dict(global_batch_size=8, seed=4, block=1, epochs_per_block=3)
    whole = np.stack([b["inputs"].numpy() for b in train.train_batches(**kw)])
    assert np.array_equal(gathered, whole)
    for rows in plan(train, **kw):  # the two halves are disjoint rows
        assert not set(rows[:4].tolist()) & set(rows[4:].tolist())


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("batch_size", [1, 7, 25, 32])
def test_eval_in_order_padded(test_split, table, batch_size):
    batches = [to_np(b) for b in test_split.eval_batches(batch_size=batch_size)]
    assert len(batches) == -(-TEST_ROWS // batch_size) == test_split.eval_steps(batch_size=batch_size)
    assert all(b["inputs"].shape == (batch_size, 81) for b in batches)
    counts = [b["count"] for b in batches]
    assert counts == [int(b["mask"].sum()) for b in batches] and sum(counts) == TEST_ROWS
    assert all(b["mask"][: b["count"]].all() and not b["mask"][b["count"]:].any() for b in batches)
    real = {k: np.concatenate([b[k][b["mask"]] for b in batches]) for k in ("inputs", "labels", "puzzle_id", "rating")}
    assert np.array_equal(real["puzzle_id"], np.arange(TEST_ROWS))  # in order, each once
    assert np.array_equal(real["inputs"], table["test"]["inputs"].astype(np.int32))
    assert np.array_equal(real["rating"], table["test"]["rating"])
    last = batches[-1]
    pad = ~last["mask"]
    assert (last["inputs"][pad] == 0).all() and (last["labels"][pad] == -100).all()
    assert (last["puzzle_id"][pad] == -1).all() and (last["rating"][pad] == -1).all()


@pytest.mark.parametrize("world_size", [2, 3])
def test_eval_ranks_cover_everything_once(train, world_size):
    per_rank = [[to_np(b) for b in train.eval_batches(batch_size=16, rank=r, world_size=world_size)]
                for r in range(world_size)]
    assert len({len(p) for p in per_rank}) == 1  # same number of batches on every rank (lockstep)
    assert len(per_rank[0]) == train.eval_steps(batch_size=16, world_size=world_size)
    ids = np.concatenate([b["puzzle_id"][b["mask"]] for p in per_rank for b in p])
    assert np.array_equal(np.sort(ids), np.arange(train.num_examples))  # disjoint, complete
    # interleaved: chunk k of 16*W rows gives rank r its rows [16r, 16(r+1))
    assert per_rank[1][0]["puzzle_id"][0] == 16


def test_eval_limit_is_a_nested_seeded_sample(test_split):
    rows10 = eval_rows(TEST_ROWS, 10)
    assert len(rows10) == 10 and np.all(np.diff(rows10) > 0)
    assert set(rows10) < set(eval_rows(TEST_ROWS, 15)) and np.array_equal(rows10, eval_rows(TEST_ROWS, 10))
    assert not np.array_equal(rows10, eval_rows(TEST_ROWS, 10, limit_seed=1))
    assert np.array_equal(eval_rows(TEST_ROWS, 100), np.arange(TEST_ROWS))
    got = np.concatenate([b["puzzle_id"][b["mask"]].numpy() for b in test_split.eval_batches(batch_size=4, limit=10)])
    assert np.array_equal(got, rows10)
    assert test_split.eval_steps(batch_size=4, limit=10) == 3


# ----------------------------------------------------------------------------- bad input


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest\.json: manifest not found"):
        PuzzleDataset(tmp_path, "train")
    assert issubclass(DatasetError, ValueError)


def test_missing_split(hint_dir):
    with pytest.raises(DatasetError, match="no split 'validation'"):
        PuzzleDataset(hint_dir, "validation")


def test_missing_shard(hint_dir, tmp_path):
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")
    victim = sorted((ds_dir / "train").glob("*.arrow"))[2]
    victim.unlink()
    with pytest.raises(DatasetError, match=f"{victim.name}: shard listed in .* not found"):
        PuzzleDataset(ds_dir, "train", verify=False)


def test_sha_mismatch(hint_dir, tmp_path):
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")
    victim = sorted((ds_dir / "train").glob("*.arrow"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"{victim.name}: sha256 is [0-9a-f]{{64}}, the manifest expects"):
        PuzzleDataset(ds_dir, "train")
    PuzzleDataset(ds_dir, "test")  # the other split is fine


def test_wrong_schema(hint_dir, tmp_path):
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")

    def widen(t: pa.Table) -> pa.Table:
        wide = pa.list_(pa.int64(), 81)
        return t.set_column(t.schema.get_field_index("inputs"), pa.field("inputs", wide), t.column("inputs").cast(wide))

    path = rewrite_shard(ds_dir, 1, widen)
    with pytest.raises(DatasetError, match=rf"{path.name}: column 'inputs' has type fixed_size_list<item: int64>"
                                           r"\[81\], expected fixed_size_list<item: uint8>\[81\]"):
        PuzzleDataset(ds_dir, "train")

    ds_dir2 = copy_dataset(hint_dir, tmp_path / "ds2")
    path = rewrite_shard(ds_dir2, 0, lambda t: t.drop_columns(["rating"]))
    with pytest.raises(DatasetError, match=rf"{path.name}: no column 'rating'"):
        PuzzleDataset(ds_dir2, "train")

    ds_dir3 = copy_dataset(hint_dir, tmp_path / "ds3")  # an extra column: differs from the manifest
    path = rewrite_shard(ds_dir3, 0, lambda t: t.append_column("extra", pa.array(np.zeros(len(t), np.int8))))
    with pytest.raises(DatasetError, match=rf"{path.name}: schema differs from the manifest"):
        PuzzleDataset(ds_dir3, "train")


def test_rows_disagree_with_manifest(hint_dir, tmp_path):
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")
    path = rewrite_shard(ds_dir, 0, lambda t: t.slice(0, len(t) - 1))
    with pytest.raises(DatasetError, match=rf"{path.name}: holds \d+ rows starting at row 0; the manifest says"):
        PuzzleDataset(ds_dir, "train")


def test_not_arrow(hint_dir, tmp_path):
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")
    victim = sorted((ds_dir / "train").glob("*.arrow"))[0]
    victim.write_bytes(b"not an arrow file at all")
    with pytest.raises(DatasetError, match=f"{victim.name}: not an Arrow IPC file"):
        PuzzleDataset(ds_dir, "train", verify=False)


# ----------------------------------------------------------------------------- Hugging Face datasets


def test_hf_iterable_dataset_is_the_training_stream(train):
    import datasets

    kw = dict(global_batch_size=8, seed=2, block=1, epochs_per_block=2)
    ids = train.to_iterable_dataset(**kw)
    assert isinstance(ids, datasets.IterableDataset)
    assert set(ids.features) == TRAIN_KEYS | {"puzzle_id", "rating", "raw_index"}
    glob = [to_np(b) for b in train.train_batches(**kw)]
    hf = [arrow_to_batch(t) for t in ids.with_format("arrow").iter(batch_size=8)]
    assert len(hf) == len(glob)
    for p, q in zip(glob, hf):
        assert all(q[k].dtype == torch.int32 and np.array_equal(p[k], q[k].numpy()) for k in TRAIN_KEYS)
    torch_batches = list(ids.with_format("torch").iter(batch_size=8))  # the plain torch formatter works too
    assert np.array_equal(torch_batches[0]["inputs"].numpy(), glob[0]["inputs"])
    resumed = next(iter(train.to_iterable_dataset(**kw, start_step=3).with_format("arrow").iter(batch_size=8)))
    assert np.array_equal(arrow_to_batch(resumed)["inputs"].numpy(), glob[3]["inputs"])


def test_hf_split_dataset_by_node(train):
    from datasets.distributed import split_dataset_by_node

    kw = dict(global_batch_size=8, seed=2, block=0, epochs_per_block=2)
    steps = plan(train, **kw)
    ids = train.to_iterable_dataset(**kw)
    per_rank = []
    for rank in range(2):
        node = split_dataset_by_node(ids, rank=rank, world_size=2).with_format("arrow")
        per_rank.append([arrow_to_batch(t)["puzzle_id"].numpy() for t in node.iter(batch_size=4)])
    assert len(per_rank[0]) == len(per_rank[1]) == len(steps)
    for k, rows in enumerate(steps):  # puzzle_id = row number: each step splits into two disjoint halves
        a, b = set(per_rank[0][k].tolist()), set(per_rank[1][k].tolist())
        assert not a & b and a | b == set(rows.tolist())


def test_hf_eval_stream_and_map_style(train, test_split, table):
    ids = test_split.to_iterable_dataset(mode="eval")
    rows = list(ids)
    assert [r["puzzle_id"] for r in rows] == list(range(TEST_ROWS))
    assert np.array_equal(np.array([r["inputs"] for r in rows]), table["test"]["inputs"])
    sample = [r["puzzle_id"] for r in test_split.to_iterable_dataset(mode="eval", limit=10, limit_seed=3)]
    assert sample == eval_rows(TEST_ROWS, 10, 3).tolist()
    whole = list(train.to_iterable_dataset(mode="eval").with_format("arrow").iter(batch_size=1000))
    assert np.array_equal(arrow_to_batch(whole[0])["puzzle_id"].numpy(), np.arange(train.num_examples))
    hf = train.hf_dataset().with_format("numpy")
    assert len(hf) == train.num_examples
    idx = [5, 200, 17]
    assert np.array_equal(hf[idx]["inputs"], table["train"]["inputs"][idx])
    with pytest.raises(ValueError, match="mode"):
        train.to_iterable_dataset(mode="test")


def test_pickles_as_a_path(train):
    copy = pickle.loads(pickle.dumps(train))
    assert len(pickle.dumps(train)) < 2000
    kw = dict(global_batch_size=8, seed=0, block=0)
    pairs = zip(train.train_batches(**kw), copy.train_batches(**kw))
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in pairs)


# ----------------------------------------------------------------------------- raw_index (issue 16, item 2)


def test_raw_index_round_trip_through_a_capped_test_split(tmp_path):
    """Every example carries its original's row in the raw split file, through subsample (with the test
    split capped), augment, hints and shard; ``rows_of_raw`` finds the split row of a raw row.

    The fork's rule, re-implemented here from its description: its demo takes puzzle ``idx`` of the full
    test file, i.e. raw row ``idx``, whatever sample a run evaluates."""
    import polars as pl

    from hrm.sudoku import strings_to_grids

    invoke("raw", "--source", "builtin", "-o", str(tmp_path / "raw"), "--train-size", "12", "--test-size", "20",
           "--seed", "3")
    invoke("subsample", "--input", str(tmp_path / "raw"), "-o", str(tmp_path / "sub"), "--subsample-size", "5",
           "--test-size", "7", "--seed", "4")
    invoke("augment", "--input", str(tmp_path / "sub"), "-o", str(tmp_path / "aug"), "--num-aug", "2")
    invoke("hints", "--input", str(tmp_path / "aug"), "-o", str(tmp_path / "hints"), "--enabled", "true")
    invoke("shard", "--input", str(tmp_path / "hints"), "-o", str(tmp_path / "ds"))
    root = tmp_path / "ds"
    for variant in ("hint", "vanilla"):
        folder = root / json.loads((root / "datasets.json").read_text())[variant]
        for split in ("train", "test"):
            raw_file = pl.read_parquet(tmp_path / "raw" / f"{split}.parquet")
            ds = PuzzleDataset(folder, split)
            got = ds.gather(np.arange(ds.num_examples))
            originals = ds.group_starts
            raw = got["raw_index"][originals].astype(np.int64)
            assert len(set(raw.tolist())) == ds.num_groups  # distinct raw rows, one per group
            # The fork's rule: the original of group g is row raw[g] of the raw file, token for token.
            want = strings_to_grids(raw_file["question"].to_numpy()[raw]).reshape(len(raw), 81) + 1
            assert np.array_equal(got["inputs"][originals], want)
            # Every later example of a group names its original's raw row.
            group_of_row = np.repeat(np.arange(ds.num_groups), ds.group_sizes)
            assert np.array_equal(got["raw_index"], raw[group_of_row].astype(np.int32))
            assert np.array_equal(ds.rows_of_raw(raw), originals)
            absent = sorted(set(range(raw_file.height)) - set(raw.tolist()))
            assert (ds.rows_of_raw(absent) == -1).all()
    test = PuzzleDataset(root / json.loads((root / "datasets.json").read_text())["hint"], "test")
    raw = test.gather(np.arange(7))["raw_index"]
    assert test.num_examples == 7 and sorted(raw.tolist()) == raw.tolist()  # capped to 7 of 20, file order kept
    assert raw.tolist() != list(range(7))  # the cap really makes split rows and raw rows differ (seed 4)


def test_a_dataset_of_the_format_before_raw_index_is_refused_with_the_rebuild_command(hint_dir, tmp_path):
    ds_dir = copy_dataset(hint_dir, tmp_path / "ds")
    manifest = json.loads((ds_dir / "manifest.json").read_text())
    manifest["format"]["version"] = 1
    (ds_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"format version 1, this hrm reads version 2 .*raw_index.*hrm shard"):
        PuzzleDataset(ds_dir, "test")
