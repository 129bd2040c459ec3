"""The columns of an examples table and of a dataset shard, declared once.

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
"""

from __future__ import annotations

import pyarrow as pa

from hrm.sudoku import BLANK_TOKEN, PAD_TOKEN, SEQ_LEN, VOCAB_SIZE

__all__ = ["COLUMN_SPECS", "COLUMNS", "SHARD_SCHEMA", "LOADER_COLUMNS", "ENCODING", "type_name"]


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
COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in COLUMN_SPECS)
SHARD_SCHEMA = pa.schema([pa.field(name, type_) for name, type_, _ in COLUMN_SPECS])
# What the loader reads of a shard (hrm/data.py gathers these straight from the mapped file).
LOADER_COLUMNS: dict[str, pa.DataType] = {
    name: SHARD_SCHEMA.field(name).type
    for name in ("group_id", "puzzle_id", "rating", "raw_index", "inputs", "labels")
}
# The token encoding of ``inputs`` and ``labels`` (hrm/sudoku.py), as the manifest records it.
ENCODING = {"seq_len": SEQ_LEN, "vocab_size": VOCAB_SIZE, "pad": PAD_TOKEN, "blank": BLANK_TOKEN,
            "digits": "2..10 = 1..9"}


def type_name(type_: pa.DataType) -> str:
    """``int32``, ``string``, ``bool``, or ``uint8[81]`` for a fixed-size list (the card's notation)."""
    if pa.types.is_fixed_size_list(type_):
        return f"{type_.value_type}[{type_.list_size}]"
    return str(type_)
