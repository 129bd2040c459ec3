"""The upstream dataset layout (the official HRM's, which its fork, TRM and URM read too), both ways.

Library code: arrays and JSON values in, arrays, values and problem lines out; reading and writing
the files is ``hrm upstream`` (pipelines/upstream.py). docs/upstream.md describes the layout:

    DIR/identifiers.json                  [name of identifier 0 ("<blank>"), 1, ...]
    DIR/<split>/dataset.json              METADATA_KEYS (below)
    DIR/<split>/all__inputs.npy           uint8 [N, seq_len]   the examples' inputs
    DIR/<split>/all__labels.npy           uint8 [N, seq_len]   their labels (ignore_label_id: not scored)
    DIR/<split>/all__puzzle_identifiers.npy  int32 [P]         each puzzle's identifier
    DIR/<split>/all__puzzle_indices.npy   int32 [P + 1]        puzzle p = examples [i[p], i[p + 1])
    DIR/<split>/all__group_indices.npy    int32 [G + 1]        group g = puzzles [j[g], j[g + 1])

A *puzzle* is a run of examples that share one identifier (the official loader draws a puzzle and
takes its examples together), a *group* a run of puzzles (an epoch visits each group once and draws
one of its puzzles). Ours: a group is a ``group_id``; its puzzles are the runs of one identifier in it
(Task.identifier_column: ARC's versions), or, for a task without identifiers, each row (identifier 0,
the blank). Tokens are the same on both sides (pad 0; a label 0 is the ignored label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from hrm.encoding import PAD_TOKEN
from hrm.tasks import Task

__all__ = ["SPLITS", "SET_NAME", "ARRAYS", "METADATA", "IDENTIFIERS", "METADATA_KEYS", "BLANK_NAME",
           "UpstreamSplit", "array_file", "index_arrays", "rows_of", "split_metadata", "to_upstream",
           "identifiers_problems", "split_problems"]

SPLITS = ("train", "test")
SET_NAME = "all"  # the one set of a split the builders write, and the one read here
ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
METADATA = "dataset.json"
IDENTIFIERS = "identifiers.json"
BLANK_NAME = "<blank>"
BLANK_IDENTIFIER = 0
IGNORE_LABEL_ID = PAD_TOKEN  # a label equal to the pad token is not scored (our loader: -100)
# dataset.json's keys, in the order the official builders write them, and the JSON types each takes.
METADATA_KEYS = {"pad_id": (int,), "ignore_label_id": (int, type(None)), "blank_identifier_id": (int,),
                 "vocab_size": (int,), "seq_len": (int,), "num_puzzle_identifiers": (int,), "total_groups": (int,),
                 "mean_puzzle_examples": (int, float), "sets": (list,)}
TOKEN_DTYPE, INDEX_DTYPE = np.dtype(np.uint8), np.dtype(np.int32)


def array_file(split: str, name: str) -> str:
    """The file of one array of a split, relative to the folder: ``train/all__inputs.npy``."""
    return f"{split}/{SET_NAME}__{name}.npy"


@dataclass(frozen=True)
class UpstreamSplit:
    """One split's arrays, in the layout's dtypes."""

    inputs: np.ndarray  # uint8 [N, seq_len]
    labels: np.ndarray  # uint8 [N, seq_len]
    puzzle_identifiers: np.ndarray  # int32 [P]
    puzzle_indices: np.ndarray  # int32 [P + 1]
    group_indices: np.ndarray  # int32 [G + 1]

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}


# --------------------------------------------------------------------------- ours -> upstream


def index_arrays(group_id: np.ndarray, identifiers: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(puzzle_identifiers [P], puzzle_indices [P + 1], group_indices [G + 1]), int32, of rows whose groups
    are contiguous (``group_id`` [N]): a puzzle is a run of one identifier inside a group, or each row where
    ``identifiers`` is None (identifier 0)."""
    g = np.asarray(group_id, np.int64)
    n = len(g)
    new_group = np.concatenate([[True], g[1:] != g[:-1]]) if n else np.zeros(0, bool)
    if identifiers is None:
        new_puzzle = np.ones(n, bool)
        ids = np.zeros(n, np.int64)
    else:
        ids = np.asarray(identifiers, np.int64)
        new_puzzle = new_group | np.concatenate([[True], ids[1:] != ids[:-1]]) if n else np.zeros(0, bool)
    puzzle_starts = np.flatnonzero(new_puzzle)
    puzzle_of_group_start = np.flatnonzero(new_group[puzzle_starts])  # the puzzles that open a group
    return (ids[puzzle_starts].astype(INDEX_DTYPE), np.append(puzzle_starts, n).astype(INDEX_DTYPE),
            np.append(puzzle_of_group_start, len(puzzle_starts)).astype(INDEX_DTYPE))


def split_metadata(split: UpstreamSplit, *, vocab_size: int, num_identifiers: int) -> dict[str, Any]:
    """A split's dataset.json, in the official key order."""
    n, puzzles = len(split.inputs), len(split.puzzle_identifiers)
    return {"pad_id": PAD_TOKEN, "ignore_label_id": IGNORE_LABEL_ID, "blank_identifier_id": BLANK_IDENTIFIER,
            "vocab_size": int(vocab_size), "seq_len": int(split.inputs.shape[1]),
            "num_puzzle_identifiers": int(num_identifiers), "total_groups": len(split.group_indices) - 1,
            "mean_puzzle_examples": n / puzzles if puzzles else 0.0, "sets": [SET_NAME]}


def to_upstream(inputs: np.ndarray, labels: np.ndarray, group_id: np.ndarray,
                identifiers: np.ndarray | None) -> UpstreamSplit:
    """A split of ours (tokens [N, seq_len], contiguous ``group_id``, each row's identifier or None) in
    the upstream layout."""
    puzzle_identifiers, puzzle_indices, group_indices = index_arrays(group_id, identifiers)
    return UpstreamSplit(np.asarray(inputs, TOKEN_DTYPE), np.asarray(labels, TOKEN_DTYPE), puzzle_identifiers,
                         puzzle_indices, group_indices)


# --------------------------------------------------------------------------- upstream -> ours


def rows_of(puzzle_indices: np.ndarray, group_indices: np.ndarray,
            puzzle_identifiers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group [N], identifier [N]), int32: each example's group (0, 1, ... in order) and its puzzle's
    identifier, from checked index arrays (:func:`split_problems`)."""
    puzzle_of_row = np.repeat(np.arange(len(puzzle_indices) - 1), np.diff(np.asarray(puzzle_indices, np.int64)))
    group_of_puzzle = np.repeat(np.arange(len(group_indices) - 1), np.diff(np.asarray(group_indices, np.int64)))
    return (group_of_puzzle[puzzle_of_row].astype(np.int32),
            np.asarray(puzzle_identifiers, np.int32)[puzzle_of_row])


# --------------------------------------------------------------------------- checks


def identifiers_problems(names: object, where: str = IDENTIFIERS) -> list[str]:
    """identifiers.json: a list of strings, the first the blank's."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return [f"{where}: expected a JSON list of identifier names (strings), the first {BLANK_NAME!r}"]
    if names[0] != BLANK_NAME:
        return [f"{where}: entry 0 is {names[0]!r}, expected {BLANK_NAME!r} (identifier 0 is the blank)"]
    return []


def _metadata_problems(meta: object, where: str, task: Task, num_identifiers: int) -> list[str]:
    """dataset.json's keys, their JSON types and the values that do not depend on the arrays."""
    if not isinstance(meta, dict):
        return [f"{where}: expected a JSON object with keys {', '.join(METADATA_KEYS)}"]
    out = []
    for key, types in METADATA_KEYS.items():
        if key not in meta:
            out.append(f"{where}: key {key} missing")
        elif not isinstance(meta[key], types) or isinstance(meta[key], bool):
            out.append(f"{where}: key {key} is {meta[key]!r}, expected {' or '.join(t.__name__ for t in types)}")
    if out:
        return out
    expected = {"pad_id": PAD_TOKEN, "ignore_label_id": IGNORE_LABEL_ID, "blank_identifier_id": BLANK_IDENTIFIER,
                "vocab_size": task.vocab_size, "seq_len": task.seq_len, "num_puzzle_identifiers": num_identifiers,
                "sets": [SET_NAME]}
    why = {"num_puzzle_identifiers": f"the names in {IDENTIFIERS}", "sets": "the one set read",
           "vocab_size": f"{task.name}'s", "seq_len": f"{task.name}'s"}
    for key, value in expected.items():
        if meta[key] != value:
            out.append(f"{where}: key {key} is {meta[key]!r}, expected {value!r}"
                       + (f" ({why[key]})" if key in why else ""))
    return out


def _array_problems(split: str, arrays: Mapping[str, np.ndarray], seq_len: int) -> list[str]:
    """Each array's dtype and shape, and the shapes against each other."""
    out = []
    for name in ARRAYS:
        a = arrays[name]
        if a.dtype.kind not in "iu":
            out.append(f"{array_file(split, name)}: dtype {a.dtype}, expected integers "
                       f"({TOKEN_DTYPE if name in ('inputs', 'labels') else INDEX_DTYPE})")
        want = 2 if name in ("inputs", "labels") else 1
        if a.ndim != want:
            out.append(f"{array_file(split, name)}: shape {a.shape}, expected {want} dimension(s)")
    if out:
        return out
    inputs, labels = arrays["inputs"], arrays["labels"]
    if inputs.shape[1] != seq_len:
        out.append(f"{array_file(split, 'inputs')}: shape {inputs.shape}, expected rows of seq_len {seq_len}")
    if labels.shape != inputs.shape:
        out.append(f"{array_file(split, 'labels')}: shape {labels.shape}, expected the inputs' {inputs.shape}")
    if len(arrays["puzzle_identifiers"]) + 1 != len(arrays["puzzle_indices"]):
        out.append(f"{array_file(split, 'puzzle_identifiers')}: {len(arrays['puzzle_identifiers'])} puzzles, "
                   f"{array_file(split, 'puzzle_indices')} bounds {len(arrays['puzzle_indices']) - 1}")
    return out


def _boundary_problems(split: str, name: str, bounds: np.ndarray, total: int, of: str) -> list[str]:
    """``bounds`` [K + 1]: 0, strictly increasing, ``total`` (the count of ``of`` they cut into K runs)."""
    where = array_file(split, name)
    b = np.asarray(bounds, np.int64)
    if len(b) < 2:
        return [f"{where}: {len(b)} values, expected at least 2 (0 and the number of {of}, {total})"]
    out = [] if b[0] == 0 else [f"{where}: index 0 is {b[0]}, expected 0"]
    step = np.diff(b)
    if (step <= 0).any():
        k = int(np.argmax(step <= 0)) + 1
        out.append(f"{where}: not increasing at index {k} ({b[k]} after {b[k - 1]}; every run holds at least one "
                   f"of the {of})")
    if b[-1] != total:
        out.append(f"{where}: last value (index {len(b) - 1}) is {b[-1]}, expected the number of {of}, {total}")
    return out


CHECK_ROWS = 1 << 16  # token rows checked at a time (a full split may be gigabytes, memory-mapped)


def _token_problems(split: str, name: str, tokens: np.ndarray, allowed: tuple[int, int]) -> list[str]:
    """The first token outside the task's range, and how many rows hold one."""
    lo, hi = allowed
    first, count = None, 0
    for start in range(0, len(tokens), CHECK_ROWS):
        part = np.asarray(tokens[start:start + CHECK_ROWS])
        bad_rows = np.flatnonzero(((part < lo) | (part > hi)).any(1))
        count += len(bad_rows)
        if first is None and len(bad_rows):
            row = int(bad_rows[0])
            col = int(np.argmax((part[row] < lo) | (part[row] > hi)))
            first = (start + row, col, int(part[row, col]))
    if first is None:
        return []
    return [f"{array_file(split, name)}: row {first[0]}, cell {first[1]}: token {first[2]} outside {lo}..{hi} "
            f"(the task's {name} tokens; {count:,} row(s) hold one)"]


def _identifier_problems(split: str, arrays: Mapping[str, np.ndarray], task: Task, num_identifiers: int) -> list[str]:
    """Identifiers in range; a task without identifiers: the blank only, one example per puzzle; with
    them (a group's puzzles are versions, runs of one identifier): no blank, no two neighbours alike in a
    group, a group's puzzles of one size (the loader's epochs need it)."""
    where = array_file(split, "puzzle_identifiers")
    ids = np.asarray(arrays["puzzle_identifiers"], np.int64)
    sizes = np.diff(np.asarray(arrays["puzzle_indices"], np.int64))
    bounds = np.asarray(arrays["group_indices"], np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= num_identifiers))
    if len(bad):
        return [f"{where}: puzzle {bad[0]} has identifier {ids[bad[0]]}, outside 0..{num_identifiers - 1} "
                f"(num_puzzle_identifiers {num_identifiers})"]
    if task.identifier_column is None:
        out = []
        if (ids != BLANK_IDENTIFIER).any():
            k = int(np.argmax(ids != BLANK_IDENTIFIER))
            out.append(f"{where}: puzzle {k} has identifier {ids[k]}; {task.name} has none (every puzzle the blank 0)")
        if (sizes != 1).any():
            k = int(np.argmax(sizes != 1))
            out.append(f"{array_file(split, 'puzzle_indices')}: puzzle {k} holds {sizes[k]} examples; a {task.name} "
                       f"puzzle is one example")
        return out
    if (ids == BLANK_IDENTIFIER).any():
        return [f"{where}: puzzle {int(np.argmax(ids == BLANK_IDENTIFIER))} has the blank identifier 0 (padding only)"]
    inner = np.ones(len(ids), bool)
    inner[bounds[:-1]] = False  # a puzzle that does not open its group
    same = np.flatnonzero(inner[1:] & (ids[1:] == ids[:-1])) + 1
    if len(same):
        return [f"{where}: puzzles {same[0] - 1} and {same[0]} of one group share identifier {ids[same[0]]} "
                f"(a group's puzzles are its versions, one identifier each)"]
    first_size = np.repeat(sizes[bounds[:-1]], np.diff(bounds))
    if (sizes != first_size).any():
        k = int(np.argmax(sizes != first_size))
        return [f"{array_file(split, 'puzzle_indices')}: puzzle {k} holds {sizes[k]} examples, its group's first "
                f"{first_size[k]} (a group's versions hold the same pairs)"]
    return []


def split_problems(split: str, arrays: Mapping[str, np.ndarray], meta: object, task: Task,
                   num_identifiers: int) -> list[str]:
    """Every problem of one split of an upstream folder for ``task``, one line each naming the file
    and the key or row: ``arrays`` its five arrays (ARRAYS), ``meta`` its parsed dataset.json,
    ``num_identifiers`` the names in identifiers.json. Later checks read what earlier ones passed."""
    where = f"{split}/{METADATA}"
    out = _metadata_problems(meta, where, task, num_identifiers) + _array_problems(split, arrays, task.seq_len)
    if _array_problems(split, arrays, task.seq_len):
        return out
    n, puzzles = len(arrays["inputs"]), len(arrays["puzzle_identifiers"])
    bounds = _boundary_problems(split, "puzzle_indices", arrays["puzzle_indices"], n, "examples")
    bounds += _boundary_problems(split, "group_indices", arrays["group_indices"], puzzles, "puzzles")
    out += bounds
    if n == 0:
        out.append(f"{array_file(split, 'inputs')}: no examples (a split of ours holds at least one)")
    for name in ("inputs", "labels"):
        out += _token_problems(split, name, arrays[name], task.token_ranges[name])
    if bounds or n == 0:
        return out
    out += _identifier_problems(split, arrays, task, num_identifiers)
    if isinstance(meta, dict) and not any(line.startswith(where) for line in out):
        groups = len(arrays["group_indices"]) - 1
        if meta["total_groups"] != groups:
            out.append(f"{where}: key total_groups is {meta['total_groups']}, {array_file(split, 'group_indices')} "
                       f"holds {groups} groups")
        if not math.isclose(meta["mean_puzzle_examples"], n / puzzles, rel_tol=1e-9):
            out.append(f"{where}: key mean_puzzle_examples is {meta['mean_puzzle_examples']}, the arrays hold "
                       f"{n / puzzles} ({n} examples / {puzzles} puzzles)")
    return out
