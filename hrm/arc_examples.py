"""ARC-AGI examples: the augment stage's build of a subsample's puzzles, with every row's lineage.

Library code: arrays in, arrays out. The rules are hrm/arc.py's (the official builder's: versions of
a puzzle by dihedral transform and colour permutation, deduplicated by content; the official split;
translation of train-split grids, one example per version left at the origin; identifiers numbered
train split first, 0 the blank). What this module adds is the layout the pipeline's tables use:

- one row per (version, pair) of a split: a group per puzzle (in order of first appearance, train
  split first), inside it the versions in draw order (the puzzle itself first, the rows marked
  ``original``), inside a version its pairs in the task object's order; the official arrays'
  ``puzzle_indices`` / ``group_indices`` are the runs of ``identifier`` / ``group_id``;
- each row's lineage: ``origin`` (the row of the split's subsample table its pair comes from),
  ``identifier``, ``dihedral``, ``colour_map`` and ``offset``;
- the draws of a puzzle come from its own generator, ``default_rng([seed, crc32(name)])``: a puzzle
  gets the same versions and offsets whichever other puzzles the subsample holds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

import hrm.arc as arc


@dataclass(frozen=True)
class ArcTransforms:
    """What took each row from its original pair (hrm.build.Examples.transforms of an ARC table)."""

    identifier: np.ndarray  # int32 [N]: the version's puzzle identifier (0 the blank, never in a table)
    dihedral: np.ndarray  # uint8 [N]: hrm.arc.dihedral id
    colour_map: np.ndarray  # uint8 [N, 10]: colour c became colour_map[c]
    offset: np.ndarray  # uint8 [N, 2]: the grids' top-left cell on the board (row, column)

    def __getitem__(self, rows) -> "ArcTransforms":
        return ArcTransforms(self.identifier[rows], self.dihedral[rows], self.colour_map[rows], self.offset[rows])

    def __len__(self) -> int:
        return len(self.identifier)

    def is_identity(self) -> np.ndarray:
        """bool [N]: no transform and no recolouring (a translated original is still the original)."""
        return (self.dihedral == 0) & (self.colour_map == np.arange(arc.NUM_COLOURS)).all(axis=1)


@dataclass(frozen=True)
class SplitExamples:
    """One split's rows (see the module docstring)."""

    group_id: np.ndarray  # int32 [N]
    original: np.ndarray  # bool [N]: the row belongs to its puzzle's own version
    origin: np.ndarray  # int64 [N]: row of the split's subsample table
    inputs: np.ndarray  # uint8 [N, 900]
    labels: np.ndarray  # uint8 [N, 900]
    transforms: ArcTransforms


def table_puzzles(splits: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[list[arc.Puzzle], dict[str, list[np.ndarray]]]:
    """Puzzles from subsample tables (``splits[split]``: columns ``puzzle``, ``subset``, ``question``,
    ``answer`` of that split, rows of a puzzle in its task object's order), in order of first
    appearance, train split first; and per split, each puzzle's rows there (empty where it has none).
    A puzzle's pairs in the train split are its ``demonstrations``, those in the test split its
    ``tests`` (hrm.arc.split_pairs then gives each split its own rows back)."""
    names: dict[str, int] = {}
    subsets: list[str] = []
    for split in (arc.TRAIN, arc.TEST):
        for name, subset in zip(splits[split]["puzzle"], splits[split]["subset"]):
            if name not in names:
                names[name] = len(names)
                subsets.append(subset)
    rows = {split: _rows_by_puzzle(splits[split]["puzzle"], names) for split in (arc.TRAIN, arc.TEST)}
    puzzles = []
    for name, i in names.items():
        pairs = {split: tuple((arc.text_grid(splits[split]["question"][r]), arc.text_grid(splits[split]["answer"][r]))
                              for r in rows[split][i]) for split in rows}
        puzzles.append(arc.Puzzle(name, subsets[i], pairs[arc.TRAIN], pairs[arc.TEST]))
    return puzzles, rows


def _rows_by_puzzle(names: np.ndarray, index: Mapping[str, int]) -> list[np.ndarray]:
    ids = np.array([index[n] for n in names], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    cuts = np.searchsorted(ids[order], np.arange(len(index) + 1))
    return [order[cuts[i] : cuts[i + 1]] for i in range(len(index))]


def puzzle_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def build_examples(puzzles: Sequence[arc.Puzzle], rows: Mapping[str, Sequence[np.ndarray]], num_aug: int,
                   seed: int) -> tuple[dict[str, SplitExamples], list[str]]:
    """Both splits' rows of ``puzzles`` (``rows``: table_puzzles'), with ``num_aug`` versions per
    puzzle at most; and the identifier names (index = identifier, 0 the blank)."""
    names = [arc.BLANK_NAME]
    parts: dict[str, list] = {arc.TRAIN: [], arc.TEST: []}
    for g, puzzle in enumerate(puzzles):
        rng = puzzle_rng(seed, puzzle.name)
        versions = arc.augment_puzzle(puzzle, num_aug, rng)
        first = len(names)
        names.extend(v.name for v in versions)
        for split in (arc.TRAIN, arc.TEST):
            if len(rows[split][g]):
                parts[split].append(_group(versions, split, g, first, rows[split][g], rng))
    return {split: _concat(p) for split, p in parts.items()}, names


def _group(versions: list[arc.Version], split: str, group: int, first_identifier: int, table_rows: np.ndarray,
           rng: np.random.Generator) -> SplitExamples:
    """One puzzle's rows in ``split``: every version's pairs there (translated in the train split)."""
    pairs = [arc.split_pairs(v.puzzle)[split] for v in versions]
    per = len(table_rows)
    grids = [p for version_pairs in pairs for p in version_pairs]
    shapes = np.array([[a.shape, b.shape] for a, b in grids], dtype=np.int64).reshape(-1, 2, 2)
    offsets = np.zeros((len(grids), 2), dtype=np.int64)
    if split == arc.TRAIN:
        offsets = arc.translation_offsets(shapes, np.arange(len(versions) + 1, dtype=np.int64) * per, rng)
    n = len(versions)
    transforms = ArcTransforms(
        identifier=np.repeat(np.arange(first_identifier, first_identifier + n, dtype=np.int32), per),
        dihedral=np.repeat(np.array([v.transform for v in versions], dtype=np.uint8), per),
        colour_map=np.repeat(np.stack([v.colour_map for v in versions]).astype(np.uint8), per, axis=0),
        offset=offsets.astype(np.uint8),
    )
    original = np.zeros(n * per, dtype=bool)
    original[:per] = True
    return SplitExamples(
        group_id=np.full(n * per, group, dtype=np.int32), original=original, origin=np.tile(table_rows, n),
        inputs=arc.encode_grids([a for a, _ in grids], offsets), labels=arc.encode_grids([b for _, b in grids], offsets),
        transforms=transforms,
    )


def _concat(parts: list[SplitExamples]) -> SplitExamples:
    if not parts:
        empty = np.zeros(0, dtype=np.int32)
        return SplitExamples(empty, empty.astype(bool), empty.astype(np.int64), np.zeros((0, arc.SEQ_LEN), np.uint8),
                             np.zeros((0, arc.SEQ_LEN), np.uint8),
                             ArcTransforms(empty, empty.astype(np.uint8), np.zeros((0, arc.NUM_COLOURS), np.uint8),
                                           np.zeros((0, 2), np.uint8)))
    # Group ids renumbered from 0 in the split's own order (a test split holds only some puzzles).
    sizes = [len(p.group_id) for p in parts]
    return SplitExamples(
        group_id=np.repeat(np.arange(len(parts), dtype=np.int32), sizes),
        original=np.concatenate([p.original for p in parts]),
        origin=np.concatenate([p.origin for p in parts]),
        inputs=np.concatenate([p.inputs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        transforms=ArcTransforms(*(np.concatenate([getattr(p.transforms, f) for p in parts])
                                   for f in ("identifier", "dihedral", "colour_map", "offset"))),
    )


def matches_original(transforms: ArcTransforms, rows: np.ndarray, src: np.ndarray, inputs: np.ndarray,
                     labels: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: row ``rows[i]``'s boards are row ``src[i]``'s grids (read at its offset),
    recoloured and transformed by row ``rows[i]``'s transform, at its offset."""
    ok = np.zeros(len(rows), dtype=bool)
    for i, (r, s) in enumerate(zip(rows, src)):
        at = tuple(transforms.offset[s])
        grids = [arc.decode_board(board[s], at) for board in (inputs, labels)]
        if min(g.size for g in grids) == 0:
            continue
        moved = [arc.dihedral(transforms.colour_map[r][g], int(transforms.dihedral[r])) for g in grids]
        fits = all(np.all(transforms.offset[r] + g.shape <= arc.SIDE) for g in moved)
        if fits:
            encoded = arc.encode_grids(moved, np.repeat(transforms.offset[r][None].astype(np.int64), 2, axis=0))
            ok[i] = np.array_equal(encoded[0], inputs[r]) and np.array_equal(encoded[1], labels[r])
    return ok
