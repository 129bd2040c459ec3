"""Writing a split of examples as Arrow IPC shards (the layout of hrm/manifest.py), each read back,
compared and validated: what ``hrm shard`` and ``hrm upstream import`` write with, so that neither
command module imports the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from hrm.manifest import file_sha256, open_shard, shard_entry
from hrm.tasks import Task
from pipelines.io import StageError

BATCH_ROWS = 16_384  # rows per Arrow record batch inside a shard


def _fixed_row_bytes(schema: pa.Schema) -> int:
    """Bytes a row takes whatever its strings: numbers and arrays, a bool (rounded up), string offsets."""
    size = 0
    for f in schema:
        if pa.types.is_fixed_size_list(f.type):
            size += f.type.list_size * f.type.value_type.bit_width // 8
        elif pa.types.is_string(f.type):
            size += 4
        elif pa.types.is_boolean(f.type):
            size += 1
        else:
            size += f.type.bit_width // 8
    return size


def plan_shards(df: pl.DataFrame, max_bytes: int, schema: pa.Schema,
                batch_rows: int = BATCH_ROWS) -> list[tuple[int, int, int, int]]:
    """(row_start, row_stop, group_start, group_stop) per shard: whole groups, in order,
    each shard at most ``max_bytes`` (estimated from the column widths)."""
    n = df.height
    if n == 0:
        return [(0, 0, 0, 0)]
    g = df.get_column("group_id").to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    row_bytes = (_fixed_row_bytes(schema)
                 + df.get_column("variant").cast(pl.String).str.len_bytes().to_numpy().astype(np.int64)
                 + df.get_column("source").str.len_bytes().to_numpy().astype(np.int64))
    group_bytes = np.add.reduceat(row_bytes, starts)
    bounds = np.concatenate([starts, [n]])
    # Room for the file's schema and footer (~2 KB) and each record batch's metadata (~1 KB).
    budget = max_bytes - 4096 - (max_bytes // (batch_rows * 200) + 1) * 1536
    shards, first, used = [], 0, 0
    for i, size in enumerate(group_bytes.tolist()):
        if i > first and used + size > budget:
            shards.append((int(bounds[first]), int(bounds[i]), first, i))
            first, used = i, 0
        used += size
    shards.append((int(bounds[first]), n, first, len(starts)))
    return shards


def to_arrow(df: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """The shard layout of an examples table: plain strings, fixed-size uint8 lists, no metadata."""
    table = df.with_columns(pl.col("variant").cast(pl.String)).to_arrow()
    columns = [table.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def write_shard(table: pa.Table, path: Path, batch_rows: int = BATCH_ROWS) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
            writer.write_table(table, max_chunksize=batch_rows)


def write_split(df: pl.DataFrame, split: str, root: Path, max_bytes: int, shown: str, task: Task,
                batch_rows: int = BATCH_ROWS) -> list[dict]:
    """Write one split's shards under ``root/split`` in the task's layout, each read back
    (memory-mapped), compared with what was meant to be written, and hashed. Returns their
    manifest entries."""
    (root / split).mkdir(parents=True)
    schema = task.shard_schema
    plan = plan_shards(df, max_bytes, schema, batch_rows)
    entries = []
    for i, (r0, r1, g0, g1) in enumerate(plan):
        name = f"{split}/data-{i:05d}-of-{len(plan):05d}.arrow"
        table = to_arrow(df.slice(r0, r1 - r0), schema)
        write_shard(table, root / name, batch_rows)
        mapped, back = open_shard(root / name)
        if back.schema != schema or not back.equals(table):
            raise StageError(f"internal error: {shown}/{name} does not read back as written")
        del mapped, back, table
        entries.append(shard_entry(file=name, rows=(r0, r1), groups=(g0, g1), size=(root / name).stat().st_size,
                                   sha256=file_sha256(root / name)))
    return entries


def verify_split(entries: list[dict], root: Path, per_group: int | None, shown: str, task: Task) -> None:
    """Check the split's shards, read back together, against the shard schema: layout, ids,
    group order and sizes, and every rule of the examples table on every row (what
    ``hrm validate shards`` checks)."""
    from schemas.examples import validate_shards

    report = validate_shards([open_shard(root / e["file"])[1] for e in entries], task, rows_per_group=per_group,
                             path=shown)
    if not report.ok:
        raise StageError(f"internal error, the written shards failed validation:\n{report.message()}")
