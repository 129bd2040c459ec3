"""The streaming loader: Arrow shards in, torch batches out (docs/reference-semantics.md §2-§4).

Reads a dataset directory as ``hrm shard`` writes it (``DIR/manifest.json``,
``DIR/<split>/*.arrow``: the layout is hrm/manifest.py's, the columns the task's, hrm.tasks),
checked against its manifest by ``hrm.manifest.check_split`` before anything is read.
Shards may be in the Arrow IPC file or stream format, uncompressed, groups contiguous.

Columns used (``loader_columns`` of the task, hrm/tasks/base.py): ``inputs`` and ``labels``
(``fixed_size_list<uint8>[81]``; a maze dataset's, which its manifest's ``encoding`` names, [900]),
``group_id``, ``puzzle_id``, ``rating`` and ``raw_index`` (int32; the original's row in the raw
split file).
Nothing is copied into memory: every shard is
memory-mapped and a batch gathers its rows straight from the mapped values buffers
(a zero-copy uint8 view of the file, fancy-indexed), so a training epoch reads only the
1 row per group it uses, and a full pass keeps only file-backed (reclaimable) pages.

Batches (torch tensors)::

    inputs              int32 [B, 81]   tokens (0 pad, 1 blank, 2..10 digits)
    labels              int32 [B, 81]   tokens, -100 where the label is the pad token 0
    puzzle_identifiers  int32 [B]       0 (Sudoku and mazes have one puzzle identifier), or the row's
                                        identifier column (Task.identifier_column: ARC's versions)

Training stream (exact definition)
----------------------------------
The split has G groups; group g holds rows ``[start[g], start[g] + size[g])``. For every
epoch ``e = 0, 1, 2, ...`` (numbered over the whole run, not within a block)::

    rng_e   = numpy.random.default_rng([TRAIN_STREAM, seed, e])  # TRAIN_STREAM = 5; PCG64
    order_e = rng_e.permutation(G)                               # a fresh group order
    pick_e  = rng_e.integers(0, size[order_e])                   # one puzzle per group, uniform
    rows_e  = start[order_e] + pick_e                            # the epoch's G examples

Block ``b`` of ``E = epochs_per_block`` epochs is the concatenation
``rows_{bE} ++ rows_{bE+1} ++ ... ++ rows_{bE+E-1}`` (E*G examples), cut into
``steps_per_block = floor(E*G / B)`` global batches of B consecutive examples; only the
last incomplete batch of the block (``E*G mod B`` examples) is dropped, so batches span
epoch boundaries inside a block. This is the official loader with ``epochs_per_iter = E``
(the trainer's ``eval_interval``): ``epochs=20000`` over 1,000 groups at B = 768 with
``eval_interval=2000`` is 10 blocks x 2,604 = 26,040 steps (``epochs_to_steps``), not
20,000; the fork's 40,000 epochs at ``eval_interval=1000`` are 40 x 1,302 = 52,080 steps
(the fork = the Augmented HRM paper's code, README "Reference code").
An epoch's rows depend only on (seed, e): not on B, E or the world size. The same
(seed, block) always gives the same batches, and ``start_step`` resumes exactly.
In data-parallel runs rank r of W takes rows ``[r*B/W, (r+1)*B/W)`` of every global batch.

Versions (ARC). Where the task has an identifier column, a group's rows are versions (runs of one
identifier: the official builder's "puzzles"), all of one size n_g. The epoch then picks one
version per group (``pick_e`` over the group's versions) and takes all its rows, shuffled (one
``rng_e.random()`` per row after the picks, the rows sorted by it within their version); an epoch
has ``sum(n_g)`` examples instead of G, and batches cut that stream the same way. The official
loader instead truncates a version that does not fit the rest of a batch and drops the remainder;
here the remainder starts the next batch, so every block has the same number of steps and
``start_step`` still resumes exactly (docs/reference-semantics.md §12).

Evaluation stream
-----------------
Every example once, in table order, ``batch_size`` rows per batch per rank: the stream is
cut into chunks of ``batch_size * world_size`` rows and rank r takes rows
``[r*batch_size, (r+1)*batch_size)`` of each chunk (the official evaluator's slicing), so
ranks hold disjoint interleaved parts covering everything once and all ranks yield the
same number of batches (``eval_steps``), which keeps collective ops in step. A batch
short of ``batch_size`` (possibly empty, on the last chunk) is padded: inputs 0, labels
-100, puzzle_id, rating and raw_index -1, ``mask`` False; ``count`` says how many rows are real.
``limit=N`` evaluates a seeded uniform sample of N examples, kept in table order:
``sorted(default_rng([EVAL_STREAM, limit_seed]).permutation(num_examples)[:N])`` with
EVAL_STREAM = 6; samples are nested (a larger N adds rows) and N >= num_examples means all.

Hugging Face ``datasets``
-------------------------
``PuzzleDataset.hf_dataset()`` is the split as a map-style ``datasets.Dataset`` over the
same memory-mapped tables (no copy); ``to_iterable_dataset()`` is the training (or
evaluation) stream as a ``datasets.IterableDataset`` of examples, in stream order, that
batching by B (``.iter(batch_size=B)``, ``.batch(B)``, a DataLoader) turns back into the
global batches. It has one data source, so ``datasets.distributed.split_dataset_by_node``
gives rank r examples r, r+W, r+2W, ...; batching those by B/W gives each rank a disjoint
part of every global batch, their union being the global batch (the same rows as
``train_batches``, assigned to ranks differently). ``datasets``' torch formatter makes
int64 tensors row by row; ``.with_format("arrow")`` plus :func:`arrow_to_batch` keeps
int32 and is about 3x faster. The trainer uses ``train_batches``, the fastest path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch

from hrm.rng import EVAL_SAMPLE as EVAL_STREAM, TRAIN_ORDER as TRAIN_STREAM  # the seed's stream ids: hrm/rng.py
from hrm.encoding import IGNORE_LABEL, PAD_TOKEN
from hrm.tasks import manifest_task
from hrm.manifest import MANIFEST, ManifestError, OpenShard, check_split, read_manifest

__all__ = [
    "DatasetError", "PuzzleDataset", "epochs_to_steps", "steps_in_block", "epoch_rows", "eval_rows",
    "hf_features", "arrow_to_batch",
]

_INT32 = np.dtype("<i4")


class DatasetError(ValueError):
    """A dataset directory that cannot be used as it is: names the file and what was expected."""


# --------------------------------------------------------------------------- arithmetic


def steps_in_block(num_groups: int, global_batch_size: int, epochs_per_block: int = 1) -> int:
    """Full global batches in one block of ``epochs_per_block`` epochs of ``num_groups`` examples each
    (one example per group; with versions of several examples, an epoch's examples)."""
    if global_batch_size <= 0 or epochs_per_block <= 0 or num_groups < 0:
        raise ValueError(f"need global_batch_size > 0, epochs_per_block > 0, num_groups >= 0 "
                         f"(got {global_batch_size}, {epochs_per_block}, {num_groups})")
    return (epochs_per_block * num_groups) // global_batch_size


def epochs_to_steps(num_groups: int, epochs: int, global_batch_size: int, epochs_per_block: int) -> int:
    """Optimizer steps that ``epochs`` epochs give: ``epochs / epochs_per_block`` blocks of
    ``floor(epochs_per_block * num_groups / global_batch_size)`` steps each.

    ``epochs`` must be a multiple of ``epochs_per_block`` (the official trainer asserts
    the same of ``eval_interval``). Paper: (1000, 20000, 768, 2000) -> 26,040.
    """
    if epochs < 0 or epochs_per_block <= 0 or epochs % epochs_per_block:
        raise ValueError(f"epochs ({epochs}) must be a non-negative multiple of epochs_per_block "
                         f"({epochs_per_block})")
    return (epochs // epochs_per_block) * steps_in_block(num_groups, global_batch_size, epochs_per_block)


def epoch_rows(seed: int, epoch: int, group_starts: np.ndarray, group_sizes: np.ndarray,
               version_starts: np.ndarray | None = None) -> np.ndarray:
    """The rows (int64 [G]) epoch ``epoch`` trains on, in order: see the module docstring. With
    ``version_starts`` (int64 [V + 1]) the groups hold versions of several rows: ``group_starts`` and
    ``group_sizes`` count versions, and each picked version gives all its rows, shuffled."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0 (got {seed}, {epoch})")
    rng = np.random.default_rng([TRAIN_STREAM, seed, epoch])
    order = rng.permutation(len(group_starts))
    pick = rng.integers(0, group_sizes[order]) if len(order) else np.zeros(0, np.int64)
    if version_starts is None:
        return group_starts[order] + pick
    return _version_rows(rng, version_starts, group_starts[order] + pick)


def _version_rows(rng: np.random.Generator, version_starts: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """The rows of ``versions``, in order, each version's rows in a random order (one uniform draw per row)."""
    starts, sizes = version_starts[versions], np.diff(version_starts)[versions]
    segment = np.repeat(np.arange(len(versions)), sizes)
    within = np.arange(segment.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + within[np.lexsort((rng.random(segment.size), segment))]


def eval_rows(num_examples: int, limit: int | None = None, limit_seed: int = 0) -> np.ndarray:
    """The rows (int64, ascending) an evaluation visits: all, or a seeded uniform sample of ``limit``."""
    if limit is None or limit >= num_examples:
        return np.arange(num_examples, dtype=np.int64)
    if limit < 0 or limit_seed < 0:
        raise ValueError(f"limit and limit_seed must be >= 0 (got {limit}, {limit_seed})")
    rng = np.random.default_rng([EVAL_STREAM, limit_seed])
    return np.sort(rng.permutation(num_examples)[:limit]).astype(np.int64)


# --------------------------------------------------------------------------- memory-mapped columns


def _byte_rows(buf: np.ndarray, width: int) -> np.ndarray:
    """A read-only [len - width + 1, width] view of a uint8 buffer: row k = bytes k..k+width-1."""
    n = max(buf.shape[0] - width + 1, 0)
    return np.lib.stride_tricks.as_strided(buf, shape=(n, width), strides=(1, 1), writeable=False)


class _Column:
    """A fixed-width column of a split, over memory-mapped shards, gathered by row number.

    Every Arrow chunk's values lie inside its shard's mapped file; ``chunk_offset`` is
    where its first row starts in that file, so a row is ``width`` bytes at
    ``chunk_offset[c] + (row - chunk_start[c]) * width``: one fancy index per region
    (mapped file) gathers a batch. Chunks that are not inside the file (a compressed
    shard) are copied into memory as regions of their own.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.regions: list[np.ndarray] = []  # per region: _byte_rows view
        self._starts: list[int] = []
        self._offsets: list[int] = []
        self._region_of: list[int] = []

    def add_shard(self, column: pa.ChunkedArray, file_bytes: np.ndarray, base: int, row0: int) -> None:
        file_region = len(self.regions)
        self.regions.append(_byte_rows(file_bytes, self.width))
        size = file_bytes.shape[0]
        row = row0
        for chunk in column.chunks:
            if len(chunk) == 0:
                continue
            if pa.types.is_fixed_size_list(chunk.type):
                values = chunk.values
                data = values.buffers()[1]
                first = (values.offset + chunk.offset * chunk.type.list_size) * values.type.bit_width // 8
            else:
                data = chunk.buffers()[1]
                first = chunk.offset * chunk.type.bit_width // 8
            address = data.address + first - base
            if 0 <= address and address + len(chunk) * self.width <= size:
                region, offset = file_region, address
            else:  # not memory-mapped (e.g. decompressed): keep a copy
                raw = np.frombuffer(data, dtype=np.uint8)[first:first + len(chunk) * self.width].copy()
                region, offset = len(self.regions), 0
                self.regions.append(_byte_rows(raw, self.width))
            self._starts.append(row)
            self._offsets.append(offset)
            self._region_of.append(region)
            row += len(chunk)

    def finish(self) -> None:
        self.chunk_start = np.asarray(self._starts, dtype=np.int64)
        self.chunk_offset = np.asarray(self._offsets, dtype=np.int64)
        self.chunk_region = np.asarray(self._region_of, dtype=np.int64)
        used = np.unique(self.chunk_region)
        self.single_region = int(used[0]) if len(used) == 1 else None

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """uint8 [len(rows), width]: the bytes of ``rows`` (int64 row numbers in the split)."""
        if rows.shape[0] == 0:
            return np.zeros((0, self.width), np.uint8)
        c = np.searchsorted(self.chunk_start, rows, side="right") - 1
        offsets = self.chunk_offset[c] + (rows - self.chunk_start[c]) * self.width
        if self.single_region is not None:
            return self.regions[self.single_region][offsets]
        region = self.chunk_region[c]
        out = np.empty((rows.shape[0], self.width), np.uint8)
        for k, view in enumerate(self.regions):
            take = np.flatnonzero(region == k)
            if take.size:
                out[take] = view[offsets[take]]
        return out

    def gather_int32(self, rows: np.ndarray) -> np.ndarray:
        return self.gather(rows).view(_INT32).reshape(-1)


def _as_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


# --------------------------------------------------------------------------- the dataset


class PuzzleDataset:
    """One split of a sharded dataset directory, as training and evaluation batch streams.

    Construction reads the manifest (parsed against its declared schema: types, shard paths
    inside the folder, no unlisted ``.arrow`` in the split folder) and memory-maps every
    shard; it checks that each shard exists, has the expected schema (the columns above, and
    the manifest's column types) and row count, that groups are contiguous and match the manifest, and, with
    ``verify`` (the default), that each shard's sha256 is the manifest's. Any problem
    raises :class:`DatasetError` naming the file, before any training starts.

    The shards stay memory-mapped while the object lives: replace a dataset by writing a
    new directory and renaming it (as ``hrm shard`` does), never by rewriting a shard in
    place, which would fault (SIGBUS) a process that has it mapped. Pickling keeps only
    the path (workers re-map the shards, without rehashing).
    """

    def __init__(self, dataset_dir: str | Path, split: str, *, verify: bool = True) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.verify = verify
        try:
            self.manifest = read_manifest(self.dataset_dir, entry_keys=("file",))
        except ManifestError as exc:
            raise DatasetError(str(exc)) from None
        # Also a folder made by hand (tools, tests): a shard entry needs only its file; without rows
        # or sha256 the shard's own row count is used and its bytes are not hashed. sizes=False: a
        # matching sha256 fixes the bytes; the recorded size is bookkeeping (`hrm validate`, registry).
        try:
            self.task = manifest_task(self.manifest)
        except ValueError as exc:
            raise DatasetError(f"{self.dataset_dir / MANIFEST}: encoding: {exc}") from None
        self.seq_len: int = self.task.seq_len
        checked = check_split(self.dataset_dir, self.manifest, split, required=self.task.loader_columns,
                              entry_keys=("file",), verify=verify, sizes=False, first_only=True)
        if checked.problems:
            raise DatasetError(checked.problems[0].error)
        self.name: str = self.manifest.get("name", self.dataset_dir.name)
        info = self.manifest["splits"][split]
        self.num_examples: int = int(info["rows"])
        self.num_groups: int = int(info["groups"])
        self._open(checked.shards)

    # -- loading

    def _open(self, shards: list[OpenShard]) -> None:
        """Index the checked, memory-mapped shards: the gathered columns and the groups."""
        self._buffers: list[pa.Buffer] = []
        self._tables: list[pa.Table] = []
        self._inputs, self._labels = _Column(self.seq_len), _Column(self.seq_len)
        self._puzzle_id, self._rating, self._raw_index = _Column(4), _Column(4), _Column(4)
        identifier = self.task.identifier_column
        self._identifier = _Column(4) if identifier else None
        gathered = [(self._inputs, "inputs"), (self._labels, "labels"), (self._puzzle_id, "puzzle_id"),
                    (self._rating, "rating"), (self._raw_index, "raw_index")]
        gathered += [(self._identifier, identifier)] if identifier else []
        group_ids = []
        row = 0
        for shard in shards:
            table = shard.table
            for name in ("inputs", "labels"):  # gathered as raw bytes: a null would read as garbage
                if table.column(name).null_count:
                    raise DatasetError(f"{shard.path}: column {name!r} has {table.column(name).null_count} nulls")
            base = shard.buffer.address
            file_bytes = np.frombuffer(shard.buffer, dtype=np.uint8)
            for column, name in gathered:
                column.add_shard(table.column(name), file_bytes, base, row)
            group_ids.append(table.column("group_id").to_numpy())
            self._buffers.append(shard.buffer)
            self._tables.append(table)
            row += table.num_rows
        for column, _ in gathered:
            column.finish()
        manifest_path = self.dataset_dir / MANIFEST
        g = np.concatenate(group_ids) if group_ids else np.zeros(0, np.int32)
        starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]])) if len(g) else np.zeros(0, np.int64)
        if len(starts) > 1 and not np.all(g[starts[1:]] > g[starts[:-1]]):
            bad = int(starts[1:][np.argmax(g[starts[1:]] <= g[starts[:-1]])])
            raise DatasetError(f"{self.dataset_dir / self.split}: groups are not contiguous and ascending "
                               f"(row {bad}: group_id {int(g[bad])} after {int(g[bad - 1])})")
        if len(starts) != self.num_groups:
            raise DatasetError(f"{manifest_path}: split {self.split!r} lists {self.num_groups} groups, "
                               f"its shards hold {len(starts)}")
        self.group_starts = starts.astype(np.int64)
        self.group_sizes = np.diff(np.append(self.group_starts, self.num_examples)).astype(np.int64)
        self._index_versions(g)

    def _index_versions(self, group_id: np.ndarray) -> None:
        """The versions: runs of one identifier inside a group (ARC), else every row its own. A group's
        versions must be of one size, so that every epoch has the same examples (``examples_per_epoch``)."""
        self.version_starts: np.ndarray | None = None
        self.examples_per_epoch: int = self.num_groups
        if self._identifier is None or self.num_examples == 0:
            return
        ids = self._identifier.gather_int32(np.arange(self.num_examples, dtype=np.int64))
        new = np.concatenate([[True], (ids[1:] != ids[:-1]) | (group_id[1:] != group_id[:-1])])
        starts = np.flatnonzero(new).astype(np.int64)
        sizes = np.diff(np.append(starts, self.num_examples))
        first = np.searchsorted(starts, self.group_starts)  # each group's first version
        counts = np.diff(np.append(first, len(starts)))
        per_group = np.repeat(sizes[first], counts)
        if not np.array_equal(per_group, sizes):
            bad = int(starts[np.argmax(per_group != sizes)])
            raise DatasetError(f"{self.dataset_dir / self.split}: row {bad} starts a version of {int(sizes[np.argmax(per_group != sizes)])} "
                               f"rows in a group whose first version has another size")
        self.version_starts = np.append(starts, self.num_examples)
        self.group_versions = (first.astype(np.int64), counts.astype(np.int64))
        self.examples_per_epoch = int(sizes[first].sum())

    def __getstate__(self) -> dict:  # pickles as a path: workers re-map the shards (without rehashing)
        return {"dataset_dir": str(self.dataset_dir), "split": self.split}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dataset_dir"], state["split"], verify=False)

    def __repr__(self) -> str:
        return (f"PuzzleDataset({str(self.dataset_dir)!r}, {self.split!r}: {self.num_examples:,} examples, "
                f"{self.num_groups:,} groups)")

    def __len__(self) -> int:
        return self.num_examples

    # -- rows

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Numpy batch of the given rows (int64 row numbers): the training keys plus
        ``puzzle_id``, ``rating`` and ``raw_index``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_examples):
            raise IndexError(f"rows outside [0, {self.num_examples})")
        out = self._train_arrays(rows)
        out["puzzle_id"] = self._puzzle_id.gather_int32(rows)
        out["rating"] = self._rating.gather_int32(rows)
        out["raw_index"] = self._raw_index.gather_int32(rows)
        return out

    def rows_of_raw(self, raw_index: Sequence[int]) -> np.ndarray:
        """int64: the split row of each raw row's original puzzle (its group's first row), -1 where
        no group of the split comes from that raw row (e.g. a test split capped by data.test_size)."""
        want = np.asarray(raw_index, np.int64).reshape(-1)
        group_raw = self._raw_index.gather_int32(self.group_starts).astype(np.int64)
        if group_raw.size == 0:
            return np.full(want.shape, -1, np.int64)
        order = np.argsort(group_raw, kind="stable")
        sorted_raw = group_raw[order]
        pos = np.clip(np.searchsorted(sorted_raw, want), 0, sorted_raw.size - 1)
        return np.where(sorted_raw[pos] == want, self.group_starts[order[pos]], -1).astype(np.int64)

    def _train_arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        raw_labels = self._labels.gather(rows)
        labels = raw_labels.astype(np.int32)
        pad = raw_labels == PAD_TOKEN
        if pad.any():
            labels[pad] = IGNORE_LABEL
        return {
            "inputs": self._inputs.gather(rows).astype(np.int32),
            "labels": labels,
            "puzzle_identifiers": (self._identifier.gather_int32(rows) if self._identifier is not None
                                   else np.zeros(rows.shape[0], np.int32)),
        }

    # -- training

    def steps_per_block(self, global_batch_size: int, epochs_per_block: int) -> int:
        """Global batches (steps) in one block of ``epochs_per_block`` epochs."""
        return steps_in_block(self.examples_per_epoch, global_batch_size, epochs_per_block)

    def epoch_rows(self, seed: int, epoch: int) -> np.ndarray:
        """Rows of epoch ``epoch`` (numbered over the run), in order: one per group, or one version's rows."""
        if self.version_starts is None:
            return epoch_rows(seed, epoch, self.group_starts, self.group_sizes)
        return epoch_rows(seed, epoch, *self.group_versions, version_starts=self.version_starts)

    def train_plan(self, *, global_batch_size: int, seed: int, block: int, epochs_per_block: int = 1,
                   start_step: int = 0) -> Iterator[np.ndarray]:
        """The row numbers (int64 [global_batch_size]) of each global batch of the block, from
        ``start_step`` on: what ``train_batches`` gathers."""
        n_steps = self.steps_per_block(global_batch_size, epochs_per_block)
        if seed < 0 or block < 0:
            raise ValueError(f"seed and block must be >= 0 (got {seed}, {block})")
        if not 0 <= start_step <= n_steps:
            raise ValueError(f"start_step {start_step} outside [0, {n_steps}] (steps in a block of "
                             f"{epochs_per_block} epochs at global batch {global_batch_size})")
        if start_step == n_steps:
            return iter(())
        return self._plan(global_batch_size, seed, block, epochs_per_block, start_step, n_steps)

    def _plan(self, batch: int, seed: int, block: int, epochs_per_block: int, start_step: int,
              n_steps: int) -> Iterator[np.ndarray]:
        groups = self.examples_per_epoch
        position = start_step * batch  # in the block's concatenated stream
        epoch = position // groups
        pending = self.epoch_rows(seed, block * epochs_per_block + epoch)[position % groups:]
        for _ in range(start_step, n_steps):
            while pending.shape[0] < batch:
                epoch += 1
                pending = np.concatenate([pending, self.epoch_rows(seed, block * epochs_per_block + epoch)])
            yield pending[:batch]
            pending = pending[batch:]

    def train_batches(self, *, global_batch_size: int, seed: int, block: int, epochs_per_block: int = 1,
                      start_step: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """The block's training batches for this rank (``global_batch_size // world_size`` rows each).

        Block ``block`` covers epochs ``[block * epochs_per_block, (block + 1) * epochs_per_block)``;
        steps ``start_step .. steps_per_block - 1`` are yielded (resume = pass the next step).
        """
        local = _local_size(global_batch_size, rank, world_size)
        if self.steps_per_block(global_batch_size, epochs_per_block) == 0:
            raise ValueError(f"a block of {epochs_per_block} epoch(s) over {self.num_groups} groups has fewer "
                             f"examples than one global batch of {global_batch_size}: raise epochs_per_block")
        plan = self.train_plan(global_batch_size=global_batch_size, seed=seed, block=block,
                               epochs_per_block=epochs_per_block, start_step=start_step)
        lo, hi = rank * local, (rank + 1) * local
        return (_as_tensors(self._train_arrays(rows[lo:hi])) for rows in plan)

    # -- evaluation

    def eval_steps(self, *, batch_size: int, world_size: int = 1, limit: int | None = None) -> int:
        """Batches each rank gets from ``eval_batches``."""
        n = self.num_examples if limit is None else min(limit, self.num_examples)
        return math.ceil(n / (batch_size * world_size))

    def eval_batches(self, *, batch_size: int, rank: int = 0, world_size: int = 1, limit: int | None = None,
                     limit_seed: int = 0) -> Iterator[dict[str, Any]]:
        """Every example (or a seeded sample of ``limit``) once, in order, ``batch_size`` rows per
        batch on each rank, padded; see the module docstring.

        Keys: the training keys plus ``puzzle_id``, ``rating`` and ``raw_index`` int32 [B], ``mask``
        bool [B] (real rows) and ``count`` (int, number of real rows).
        """
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size > 0 and 0 <= rank < world_size (got {batch_size}, {rank}, "
                             f"{world_size})")
        rows = eval_rows(self.num_examples, limit, limit_seed)
        chunk = batch_size * world_size
        for k in range(math.ceil(rows.shape[0] / chunk)):
            part = rows[k * chunk + rank * batch_size: k * chunk + (rank + 1) * batch_size]
            yield self._padded(part, batch_size)

    def _padded(self, rows: np.ndarray, batch_size: int) -> dict[str, Any]:
        n = rows.shape[0]
        real = self.gather(rows)
        if n < batch_size:
            fill = {"inputs": PAD_TOKEN, "labels": IGNORE_LABEL, "puzzle_identifiers": 0, "puzzle_id": -1,
                    "rating": -1, "raw_index": -1}
            real = {k: np.concatenate([v, np.full((batch_size - n,) + v.shape[1:], fill[k], v.dtype)])
                    for k, v in real.items()}
        out: dict[str, Any] = _as_tensors(real)
        mask = torch.zeros(batch_size, dtype=torch.bool)
        mask[:n] = True
        out["mask"] = mask
        out["count"] = n
        return out

    # -- Hugging Face datasets

    def hf_dataset(self):
        """This split as a map-style ``datasets.Dataset`` over the memory-mapped shards (no copy;
        pickling it copies the data, as for any in-memory ``datasets`` table)."""
        import datasets
        from datasets.table import InMemoryTable

        table = pa.concat_tables(self._tables) if self._tables else pa.schema([]).empty_table()
        return datasets.Dataset(InMemoryTable(table), split=datasets.NamedSplit(self.split))

    def to_iterable_dataset(self, *, mode: str = "train", global_batch_size: int | None = None, seed: int = 0,
                            block: int = 0, epochs_per_block: int = 1, start_step: int = 0,
                            limit: int | None = None, limit_seed: int = 0):
        """A ``datasets.IterableDataset`` of examples: the training stream of one block
        (``mode="train"``: the rows of steps ``start_step ..`` in order, so
        ``.batch(global_batch_size)`` gives the global batches of ``train_batches``) or the
        evaluation order (``mode="eval"``: every example in order, or the ``limit`` sample).

        Columns (``hf_features(seq_len)``): ``inputs`` and ``labels`` int32[seq_len] (labels -100 for
        pad), ``puzzle_identifiers``, ``puzzle_id``, ``rating`` and ``raw_index`` int32. One data source,
        so ``split_dataset_by_node`` gives rank r examples r, r+W, ... (module docstring).
        Rows are gathered per step (train) or per ``HF_EVAL_CHUNK`` rows (eval) by the same
        code as ``train_batches``, inside a batched ``map`` over a table of step numbers.
        ``datasets``' torch formatter converts list columns row by row and to int64; for
        speed use ``.with_format("arrow").iter(batch_size)`` and :func:`arrow_to_batch`.
        """
        import datasets

        if mode == "train":
            if global_batch_size is None:
                raise ValueError("mode='train' needs global_batch_size")
            n_steps = self.steps_per_block(global_batch_size, epochs_per_block)
            if n_steps == 0:
                raise ValueError(f"a block of {epochs_per_block} epoch(s) over {self.num_groups} groups has "
                                 f"fewer examples than one global batch of {global_batch_size}")
            self.train_plan(global_batch_size=global_batch_size, seed=seed, block=block,
                            epochs_per_block=epochs_per_block, start_step=start_step)  # checks the arguments
            units = np.arange(start_step, n_steps, dtype=np.int64)
        elif mode == "eval":
            n = eval_rows(self.num_examples, limit, limit_seed).shape[0]
            units = np.arange(math.ceil(n / HF_EVAL_CHUNK), dtype=np.int64)
        else:
            raise ValueError(f"mode must be 'train' or 'eval' (got {mode!r})")
        stream = _HFStream(self, mode, dict(global_batch_size=global_batch_size, seed=seed, block=block,
                                            epochs_per_block=epochs_per_block, limit=limit, limit_seed=limit_seed))
        source = datasets.Dataset.from_dict({"unit": units},
                                            features=datasets.Features({"unit": datasets.Value("int64")}))
        return (source.to_iterable_dataset(num_shards=1).with_format("arrow")
                .map(stream, batched=True, batch_size=1, remove_columns=["unit"], features=hf_features(self.seq_len))
                .with_format(None))


HF_EVAL_CHUNK = 1024  # rows per gather in to_iterable_dataset(mode="eval")


def hf_features(seq_len: int):
    """Features of the examples ``to_iterable_dataset`` yields, rows of ``seq_len`` cells."""
    import datasets

    tokens = datasets.List(datasets.Value("int32"), length=seq_len)
    return datasets.Features({
        "inputs": tokens, "labels": tokens, "puzzle_identifiers": datasets.Value("int32"),
        "puzzle_id": datasets.Value("int32"), "rating": datasets.Value("int32"),
        "raw_index": datasets.Value("int32"),
    })


class _HFStream:
    """The batched ``map`` function behind ``to_iterable_dataset``: step (or chunk) numbers in,
    their examples out, as one Arrow table. Pickles as the dataset path plus the arguments."""

    def __init__(self, dataset: PuzzleDataset, mode: str, args: dict) -> None:
        self.dataset, self.mode, self.args = dataset, mode, args
        self._epochs: dict[int, np.ndarray] = {}
        self._eval_rows: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {"dataset": self.dataset, "mode": self.mode, "args": self.args}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dataset"], state["mode"], state["args"])

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            if len(self._epochs) >= 4:
                self._epochs.pop(next(iter(self._epochs)))
            self._epochs[epoch] = self.dataset.epoch_rows(self.args["seed"], epoch)
        return self._epochs[epoch]

    def rows(self, unit: int) -> np.ndarray:
        a = self.args
        if self.mode == "eval":
            if self._eval_rows is None:
                self._eval_rows = eval_rows(self.dataset.num_examples, a["limit"], a["limit_seed"])
            return self._eval_rows[unit * HF_EVAL_CHUNK:(unit + 1) * HF_EVAL_CHUNK]
        groups, batch = self.dataset.examples_per_epoch, a["global_batch_size"]
        first = a["block"] * a["epochs_per_block"]
        lo, hi = unit * batch, (unit + 1) * batch  # positions in the block's stream
        e0, e1 = lo // groups, (hi - 1) // groups
        rows = np.concatenate([self._epoch(first + e) for e in range(e0, e1 + 1)])
        return rows[lo - e0 * groups:hi - e0 * groups]

    def __call__(self, table: pa.Table) -> pa.Table:
        units = table.column("unit").to_numpy()
        rows = np.concatenate([self.rows(int(u)) for u in units]) if len(units) else np.zeros(0, np.int64)
        batch = self.dataset.gather(rows)
        tokens = {k: pa.FixedSizeListArray.from_arrays(pa.array(batch[k].reshape(-1)), self.dataset.seq_len)
                  for k in ("inputs", "labels")}
        return pa.table({
            **tokens,
            **{k: pa.array(batch[k]) for k in ("puzzle_identifiers", "puzzle_id", "rating", "raw_index")},
        })


def arrow_to_batch(table: pa.Table) -> dict[str, torch.Tensor]:
    """An Arrow batch of ``to_iterable_dataset`` (``.with_format("arrow").iter(B)``) as torch
    tensors with the dtypes of ``train_batches`` (int32)."""
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            array = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        else:
            array = column.to_numpy()
        out[name] = torch.from_numpy(np.array(array))  # a writable copy
    return out


def _local_size(global_batch_size: int, rank: int, world_size: int) -> int:
    if global_batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need global_batch_size > 0 and 0 <= rank < world_size (got {global_batch_size}, "
                         f"{rank}, {world_size})")
    if global_batch_size % world_size:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}")
    return global_batch_size // world_size
