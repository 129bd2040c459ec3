"""The columns of an examples table and of a dataset shard, declared once per task.

One row per training/test example, ordered by group (original puzzle), then in emission
order (docs/reference-semantics.md §3). The augment and hints stages write these columns
as an examples table (Arrow IPC, ``variant`` a polars Enum, schemas/examples.py); the shard
stage cuts that table into shards with exactly ``SHARD_SCHEMA`` (``variant`` a plain
string). Read from here by: schemas/examples.py (the content checks), the shard stage
(the shards, the manifest's ``columns`` and ``encoding``, the dataset card's column
table), schemas/manifest.py (a shard's schema against the manifest) and the loader
(hrm/data.py, ``LOADER_COLUMNS``).

Lineage: an example equals its group's original with its transform applied (optional
transpose, then rows/columns reordered, then digits relabelled, as
hrm.sudoku.apply_transforms); a hint also reveals some blanks of its parent from the label.

Mazes (``MAZE``, hrm/maze.py's encoding) share the id and origin columns; their grids are 900
tokens and their transform is one dihedral id (hrm.maze.dihedral), in place of Sudoku's four
transform columns; they have no hints. The module-level names (``COLUMN_SPECS``,
``SHARD_SCHEMA``, ...) are Sudoku's, whose datasets were built before mazes; ``layout(task)``
gives either, and ``manifest_task`` reads the task a manifest's encoding records (none: Sudoku).
"""

from __future__ import annotations

import pyarrow as pa

from dataclasses import dataclass

from hrm.sudoku import BLANK_TOKEN, PAD_TOKEN, SEQ_LEN, VOCAB_SIZE
from hrm.tasks import MAZE as MAZE_TASK  # its facts: the rules (hrm.maze) are not needed to name columns

__all__ = ["COLUMN_SPECS", "COLUMNS", "SHARD_SCHEMA", "LOADER_COLUMNS", "ENCODING", "Layout", "SUDOKU", "MAZE",
           "LAYOUTS", "layout", "manifest_task", "type_name"]


def _uint8s(width: int) -> pa.DataType:
    return pa.list_(pa.uint8(), width)


# (name, type in a shard, meaning): the meanings are the dataset card's column table.
COLUMN_SPECS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("group_id", pa.int32(), "original puzzle (group); groups are contiguous and in order"),
    ("puzzle_id", pa.int32(), "row number in the split, in emission order"),
    ("variant", pa.string(), "`original`, `augmented` or `hint`"),
    ("parent_id", pa.int32(), "for a hint: the puzzle_id it was made from; -1 otherwise"),
    ("source", pa.string(), "the original's raw `source`"),
    ("rating", pa.int32(), "the original's raw `rating` (solver backtracks)"),
    ("raw_index", pa.int32(), "the original's row in the raw split file (the fork indexes the full test file)"),
    ("inputs", _uint8s(SEQ_LEN), "tokens: 1 = blank, 2..10 = digits 1..9 (0 = padding, unused)"),
    ("labels", _uint8s(SEQ_LEN), "tokens 2..10: the solution"),
    ("digit_map", _uint8s(10), "transform from the original: digit relabelling (digit_map[0] = 0)"),
    ("transpose", pa.bool_(), "transform: transpose first"),
    ("row_order", _uint8s(9), "transform: out[r, c] = x[row_order[r], col_order[c]]"),
    ("col_order", _uint8s(9), "transform: column order"),
)
# The token encoding of ``inputs`` and ``labels`` (hrm/sudoku.py), as the manifest records it.
ENCODING = {"seq_len": SEQ_LEN, "vocab_size": VOCAB_SIZE, "pad": PAD_TOKEN, "blank": BLANK_TOKEN,
            "digits": "2..10 = 1..9"}

# A maze example: the same ids and origin as a Sudoku one, 900-token grids, one transform column.
_SUDOKU_SPEC = {spec[0]: spec for spec in COLUMN_SPECS}
MAZE_COLUMN_SPECS: tuple[tuple[str, pa.DataType, str], ...] = (
    _SUDOKU_SPEC["group_id"],
    _SUDOKU_SPEC["puzzle_id"],
    ("variant", pa.string(), "`original` or `augmented` (mazes have no hints)"),
    ("parent_id", pa.int32(), "-1 (no maze is made from another example)"),
    _SUDOKU_SPEC["source"],
    ("rating", pa.int32(), "the original's raw `rating` (moves of its shortest S-G path for the builtin source)"),
    _SUDOKU_SPEC["raw_index"],
    ("inputs", _uint8s(MAZE_TASK.seq_len), "tokens: 1 = `#` wall, 2 = open, 3 = `S`, 4 = `G` (0 = padding, unused)"),
    ("labels", _uint8s(MAZE_TASK.seq_len), "tokens 1..5: the input with its shortest S-G path's open cells set to 5 (`o`)"),
    ("dihedral", pa.uint8(), "transform from the original: dihedral id 0..7, the official builder's order "
                             "(0 = identity)"),
)
MAZE_ENCODING = {"task": "maze", "seq_len": MAZE_TASK.seq_len, "vocab_size": MAZE_TASK.vocab_size, "pad": 0,
                 "tokens": "1 = # wall, 2 = open, 3 = S, 4 = G, 5 = o path"}
_LOADED = ("group_id", "puzzle_id", "rating", "raw_index", "inputs", "labels")


@dataclass(frozen=True)
class Layout:
    """One task's examples-table and shard columns, what the loader reads of them, and the token
    encoding the manifest records."""

    task: str
    column_specs: tuple[tuple[str, pa.DataType, str], ...]
    encoding: dict

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.column_specs)

    @property
    def shard_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, type_) for name, type_, _ in self.column_specs])

    @property
    def loader_columns(self) -> dict[str, pa.DataType]:
        """What the loader reads of a shard (hrm/data.py gathers these straight from the mapped file)."""
        schema = self.shard_schema
        return {name: schema.field(name).type for name in _LOADED}


SUDOKU = Layout("sudoku", COLUMN_SPECS, ENCODING)
MAZE = Layout("maze", MAZE_COLUMN_SPECS, MAZE_ENCODING)
LAYOUTS = {layout_.task: layout_ for layout_ in (SUDOKU, MAZE)}
COLUMNS: tuple[str, ...] = SUDOKU.columns
SHARD_SCHEMA = SUDOKU.shard_schema
LOADER_COLUMNS: dict[str, pa.DataType] = SUDOKU.loader_columns


def layout(task: str) -> Layout:
    try:
        return LAYOUTS[task]
    except KeyError:
        raise ValueError(f"no dataset layout for task {task!r}: one of {', '.join(LAYOUTS)}") from None


def manifest_task(manifest) -> str:
    """The task of a dataset from its manifest's ``encoding`` (Sudoku's records none: it was the only one)."""
    encoding = manifest.get("encoding") if isinstance(manifest, dict) else None
    return str(encoding.get("task", "sudoku")) if isinstance(encoding, dict) else "sudoku"


def type_name(type_: pa.DataType) -> str:
    """``int32``, ``string``, ``bool``, or ``uint8[81]`` for a fixed-size list (the card's notation)."""
    if pa.types.is_fixed_size_list(type_):
        return f"{type_.value_type}[{type_.list_size}]"
    return str(type_)
