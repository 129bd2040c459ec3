"""``hrm shard``: the finished datasets, as Arrow IPC shards with a dataset card and manifest.

Reads the hints stage output (``INPUT/{train,test}.arrow``, ``INPUT/lineage.json``),
validates it (every row), and writes under ``OUTPUT``:

    OUTPUT/datasets.json                 {"vanilla": NAME, "hint": NAME-hint or null}
    OUTPUT/NAME/train/data-00000-of-0000K.arrow ...
    OUTPUT/NAME/test/data-00000-of-0000K.arrow ...
    OUTPUT/NAME/README.md                dataset card (YAML ``configs`` for ``datasets``)
    OUTPUT/NAME/manifest.json            counts, shard row/group ranges, sha256, params, lineage
    OUTPUT/NAME-hint/...                 the hint dataset, when hints are enabled

NAME follows the fork: ``sudoku-{source}-{size}-aug-{num_aug}`` (``sudoku-extreme-1k-aug-1000``;
``builtin`` for the offline generator; size ``full`` when the train split was not subsampled).
The vanilla dataset is the hint table without its hint rows (puzzle ids renumbered), so
the vanilla examples are built once.

Shards hold whole groups, in table order, and are at most ``--shard-max-mb`` MiB (a
single group larger than that gets a shard of its own). Nothing in a shard, card or
manifest depends on time or paths: the same inputs and params give the same bytes.
After writing, every shard is read back (memory-mapped), compared with the validated
table it was cut from, hashed, and each split is checked against the shard schema.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import click
import numpy as np
import polars as pl
import pyarrow as pa

from pipelines.hints import read_examples, rows_per_group, upstream_outputs
from pipelines.io import StageError, atomic_output, human_bytes
from pipelines.subsample import (
    EXAMPLES_SUFFIX, SPLITS, check_dirs, input_records, log, read_lineage, write_json,
)

FORMAT_VERSION = 1
BATCH_ROWS = 16_384  # rows per Arrow record batch inside a shard
MIB = 1 << 20
SHARD_SCHEMA = pa.schema(
    [
        pa.field("group_id", pa.int32()),
        pa.field("puzzle_id", pa.int32()),
        pa.field("variant", pa.string()),
        pa.field("parent_id", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("rating", pa.int32()),
        pa.field("inputs", pa.list_(pa.uint8(), 81)),
        pa.field("labels", pa.list_(pa.uint8(), 81)),
        pa.field("digit_map", pa.list_(pa.uint8(), 10)),
        pa.field("transpose", pa.bool_()),
        pa.field("row_order", pa.list_(pa.uint8(), 9)),
        pa.field("col_order", pa.list_(pa.uint8(), 9)),
    ]
)
_FIXED_ROW_BYTES = 4 * 4 + 81 + 81 + 10 + 9 + 9 + 1 + 2 * 4  # ints, arrays, bool (rounded up), string offsets


# --------------------------------------------------------------------------- names


def _size_tag(n: int) -> str:
    for div, suffix in ((1_000_000, "m"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def _source_tag(raw: dict) -> str:
    source = raw.get("source", "unknown")
    if source == "hf":
        repo = (raw.get("hf_repo") or "sudoku-extreme").split("/")[-1].lower()
        tag = repo.removeprefix("sudoku-") if repo.startswith("sudoku-") else repo
        return re.sub(r"[^a-z0-9]+", "-", tag).strip("-") or "hf"
    return {"builtin": "builtin", "csv": "csv"}.get(source, "custom")


def dataset_names(lineage: dict) -> dict[str, str | None]:
    """{"vanilla": ..., "hint": ... or None}, derived from the params in the lineage."""
    sub = lineage.get("subsample") or {}
    groups = (sub.get("groups") or {}).get("train")
    raw_rows = (sub.get("raw_rows") or {}).get("train")
    size = "full" if groups is None or groups == raw_rows else _size_tag(groups)
    num_aug = ((lineage.get("augment") or {}).get("params") or {}).get("num_aug", 0)
    name = f"sudoku-{_source_tag(lineage.get('raw') or {})}-{size}" + (f"-aug-{num_aug}" if num_aug else "")
    hinted = bool(((lineage.get("hints") or {}).get("params") or {}).get("enabled"))
    return {"vanilla": name, "hint": f"{name}-hint" if hinted else None}


# --------------------------------------------------------------------------- shards


def plan_shards(df: pl.DataFrame, max_bytes: int) -> list[tuple[int, int, int, int]]:
    """(row_start, row_stop, group_start, group_stop) per shard: whole groups, in order,
    each shard at most ``max_bytes`` (estimated from the column widths)."""
    n = df.height
    if n == 0:
        return [(0, 0, 0, 0)]
    g = df.get_column("group_id").to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    row_bytes = (_FIXED_ROW_BYTES
                 + df.get_column("variant").cast(pl.String).str.len_bytes().to_numpy().astype(np.int64)
                 + df.get_column("source").str.len_bytes().to_numpy().astype(np.int64))
    group_bytes = np.add.reduceat(row_bytes, starts)
    bounds = np.concatenate([starts, [n]])
    # Room for the file's schema and footer (~2 KB) and each record batch's metadata (~1 KB).
    budget = max_bytes - 4096 - (max_bytes // (BATCH_ROWS * 200) + 1) * 1536
    shards, first, used = [], 0, 0
    for i, size in enumerate(group_bytes.tolist()):
        if i > first and used + size > budget:
            shards.append((int(bounds[first]), int(bounds[i]), first, i))
            first, used = i, 0
        used += size
    shards.append((int(bounds[first]), n, first, len(starts)))
    return shards


def to_arrow(df: pl.DataFrame) -> pa.Table:
    """The shard layout of an examples table: plain strings, fixed-size uint8 lists, no metadata."""
    table = df.with_columns(pl.col("variant").cast(pl.String)).to_arrow()
    columns = [table.column(f.name).cast(f.type) for f in SHARD_SCHEMA]
    return pa.Table.from_arrays(columns, schema=SHARD_SCHEMA)


def write_shard(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, SHARD_SCHEMA, options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
            writer.write_table(table, max_chunksize=BATCH_ROWS)


def read_shard(path: Path) -> tuple[pa.Table, str]:
    """(table, sha256) of a shard, memory-mapped (no copy)."""
    with pa.memory_map(str(path)) as source:
        buffer = source.read_buffer()
    digest = hashlib.sha256(memoryview(buffer)).hexdigest()
    return pa.ipc.open_file(buffer).read_all(), digest


def write_split(df: pl.DataFrame, split: str, root: Path, max_bytes: int, shown: str) -> list[dict]:
    """Write one split's shards under ``root/split``, each read back (memory-mapped), compared
    with what was meant to be written, and hashed. Returns their manifest records."""
    (root / split).mkdir(parents=True)
    plan = plan_shards(df, max_bytes)
    records = []
    for i, (r0, r1, g0, g1) in enumerate(plan):
        name = f"{split}/data-{i:05d}-of-{len(plan):05d}.arrow"
        table = to_arrow(df.slice(r0, r1 - r0))
        write_shard(table, root / name)
        back, digest = read_shard(root / name)
        if back.schema != SHARD_SCHEMA or not back.equals(table):
            raise StageError(f"internal error: {shown}/{name} does not read back as written")
        del back, table
        records.append({"file": name, "rows": [r0, r1], "groups": [g0, g1],
                        "bytes": (root / name).stat().st_size, "sha256": digest})
    return records


def verify_split(records: list[dict], root: Path, per_group: int | None, shown: str) -> None:
    """Check the split's shards, read back together, against the shard schema (layout, ids,
    group order and sizes). Only the small columns are touched."""
    from schemas.examples import validate_examples

    tables = [pa.ipc.open_file(pa.memory_map(str(root / r["file"]))).read_all() for r in records]
    back = pl.from_arrow(pa.concat_tables(tables), rechunk=False)
    report = validate_examples(back, rows_per_group=per_group, path=shown, shards=True)
    if not report.ok:
        raise StageError(f"internal error, the written shards failed validation:\n{report.message()}")


def resolve_dataset(path: Path, variant: str) -> Path:
    """A dataset directory (manifest.json) as it is, or for this stage's output root
    (datasets.json) its ``variant`` dataset ("vanilla" or "hint")."""
    if not path.exists():
        raise StageError(f"{path}: dataset not found (build it with `dvc repro shard` or `hrm shard`)")
    if not path.is_dir():
        raise StageError(f"{path}: not a directory; expected a dataset directory written by `hrm shard`")
    index = path / "datasets.json"
    if (path / "manifest.json").is_file() or not index.is_file():
        return path
    try:
        names = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StageError(f"{index}: cannot read ({e})") from None
    name = names.get(variant) if isinstance(names, dict) else None
    if not name:
        hint = " (the hint dataset is built only with data.hints: true)" if variant == "hint" else ""
        raise StageError(f"{index}: no {variant!r} dataset listed{hint}; found {names}")
    return path / name


PROBLEMS_SHOWN = 20  # problems listed in one message; the rest are counted


def _with_shard_rows(report, shards: list[dict], root: Path):
    """``report`` (rows numbered across the split) with each bad row's shard file and row in it."""
    import dataclasses

    starts = np.array([r["rows"][0] for r in shards], dtype=np.int64)
    rows = report.problems.get_column("row").to_numpy()
    which = np.searchsorted(starts, rows, side="right") - 1
    reasons = [f"{why} [{root / shards[i]['file']}, row {r - starts[i]}]"
               for why, r, i in zip(report.problems.get_column("reason").to_list(), rows.tolist(), which.tolist())]
    problems = report.problems.with_columns(pl.Series("reason", reasons, dtype=pl.String))
    return dataclasses.replace(report, problems=problems)


def dataset_problems(dataset: Path) -> tuple[dict, list[str]]:
    """Check a sharded dataset folder against its manifest and list every problem: each shard's
    presence, sha256, size, Arrow schema and row range, each split's row count, and each split
    whose shards are intact against the shard schema (bad rows named with their shard).
    Returns (manifest, problems); the manifest is {} when it cannot be read."""
    from schemas.examples import validate_examples

    path = dataset / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {}, [f"{path}: cannot read ({exc})"]
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict) or not splits:
        return {}, [f"{path}: no 'splits' mapping; expected the manifest `hrm shard` writes"]
    problems = []
    for split, info in splits.items():
        missing = [k for k in ("rows", "shards") if not isinstance(info, dict) or k not in info]
        if missing:
            problems.append(f"{path}: split {split!r} has no {' or '.join(map(repr, missing))}")
            continue
        tables, intact, row = [], True, 0
        for i, record in enumerate(info["shards"]):
            missing = [k for k in ("file", "rows", "bytes", "sha256") if k not in record]
            if missing:
                problems.append(f"{path}: shard {i} of split {split!r} has no {' or '.join(map(repr, missing))}")
                intact = False
                continue
            file = dataset / record["file"]
            r0, r1 = record["rows"]
            if r0 != row:
                problems.append(f"{path}: shard {i} of split {split!r} starts at row {r0}, the previous one ends "
                                f"at row {row}")
                intact = False
            row = r1
            if not file.is_file():
                problems.append(f"{file}: shard listed in the manifest is missing")
                intact = False
                continue
            try:
                table, digest = read_shard(file)
            except (OSError, pa.ArrowException) as exc:
                problems.append(f"{file}: cannot read as an Arrow IPC shard ({exc}); modified or truncated")
                intact = False
                continue
            if digest != record["sha256"] or file.stat().st_size != record["bytes"]:
                problems.append(f"{file}: sha256 or size differs from the manifest (modified or truncated)")
                intact = False
            if table.schema != SHARD_SCHEMA:
                found = {f.name: str(f.type) for f in table.schema}
                expected = {f.name: str(f.type) for f in SHARD_SCHEMA}
                diff = sorted(set(found.items()) ^ set(expected.items()))
                problems.append(f"{file}: schema differs from the shard schema (differing entries: {diff})")
                intact = False
            if table.num_rows != r1 - r0:
                problems.append(f"{file}: {table.num_rows} rows; the manifest says {r1 - r0} (rows [{r0}, {r1}))")
                intact = False
            tables.append(table)
        if not intact:  # content of a damaged split is not worth checking row by row
            continue
        back = pl.from_arrow(pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table(), rechunk=False)
        if back.height != info["rows"]:
            problems.append(f"{dataset / split}: {back.height} rows, the manifest says {info['rows']}")
        report = validate_examples(back, rows_per_group=info.get("rows_per_group") or None,
                                   path=str(dataset / split), shards=True)
        if not report.ok:
            problems.append(_with_shard_rows(report, info["shards"], dataset).message())
    return manifest, problems


def problems_message(problems: list[str], limit: int = PROBLEMS_SHOWN) -> str:
    more = len(problems) - limit
    return "\n".join(problems[:limit] + ([f"... and {more:,} more problems"] if more > 0 else []))


def verify_dataset(dataset: Path) -> dict:
    """Check a sharded dataset folder against its manifest (:func:`dataset_problems`).
    Returns the manifest; raises StageError listing every problem found."""
    manifest, problems = dataset_problems(dataset)
    if problems:
        raise StageError(problems_message(problems))
    return manifest


def _variant_counts(df: pl.DataFrame) -> dict[str, int]:
    from schemas.examples import VARIANTS

    counts = dict(df.get_column("variant").cast(pl.String).value_counts().iter_rows())
    return {v: int(counts.get(v, 0)) for v in VARIANTS}


# --------------------------------------------------------------------------- card


_COLUMN_DOCS = [
    ("group_id", "int32", "original puzzle (group); groups are contiguous and in order"),
    ("puzzle_id", "int32", "row number in the split, in emission order"),
    ("variant", "string", "`original`, `augmented` or `hint`"),
    ("parent_id", "int32", "for a hint: the puzzle_id it was made from; -1 otherwise"),
    ("source", "string", "the original's raw `source`"),
    ("rating", "int32", "the original's raw `rating` (solver backtracks)"),
    ("inputs", "uint8[81]", "tokens: 1 = blank, 2..10 = digits 1..9 (0 = padding, unused)"),
    ("labels", "uint8[81]", "tokens 2..10: the solution"),
    ("digit_map", "uint8[10]", "transform from the original: digit relabelling (digit_map[0] = 0)"),
    ("transpose", "bool", "transform: transpose first"),
    ("row_order", "uint8[9]", "transform: out[r, c] = x[row_order[r], col_order[c]]"),
    ("col_order", "uint8[9]", "transform: column order"),
]


def dataset_card(manifest: dict) -> str:
    name = manifest["name"]
    params = manifest["params"]
    source = manifest["source"]
    lines = [
        "---",
        f"pretty_name: {name}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in manifest["splits"]:
        lines += [f"  - split: {split}", f"    path: {split}/*.arrow"]
    lines += ["---", "", f"# {name}", ""]
    kind = ("with hints: after every train example an easier copy of it (extra givens copied from the answer)"
            if manifest["kind"] == "hint" else "without hints")
    revision = source.get("resolved_sha") or source.get("revision")
    origin = f"raw source `{source.get('source')}`" + (f" ({source.get('hf_repo')} at {revision})" if revision else "")
    lines += [
        f"Sudoku-Extreme style dataset for the Hierarchical Reasoning Model, {kind}. Built by the "
        f"`hrm-pipeline` stages subsample -> augment -> hints -> shard from {origin}.",
        "",
        "| split | rows | groups | rows per group | original | augmented | hint |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, info in manifest["splits"].items():
        v = info["variants"]
        lines.append(f"| {split} | {info['rows']:,} | {info['groups']:,} | {info['rows_per_group']} | "
                     f"{v['original']:,} | {v['augmented']:,} | {v['hint']:,} |")
    lines += [
        "",
        f"Params: subsample_size {params['subsample_size']}, num_aug {params['num_aug']}, "
        f"hints {str(params['hints']).lower()}, test_size {params['test_size']}, seed {params['seed']}.",
    ]
    if manifest.get("test_capped"):
        lines.append("The test split is a capped uniform sample (`test_size`), a deviation from the paper, "
                     "which evaluates on the whole test split.")
    lines += [
        "",
        "An epoch (reference-semantics section 4) visits the groups in a fresh random order and draws one "
        "example per group. Groups are contiguous and every shard holds whole groups; `manifest.json` lists "
        "each shard's row and group ranges, so a loader can read only the rows it uses.",
        "",
        "## Columns",
        "",
        "| column | type | meaning |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{c}` | {t} | {d} |" for c, t, d in _COLUMN_DOCS]
    lines += [
        "",
        "Lineage: an example equals its group's original with its transform applied (optional transpose, "
        "then rows/columns reordered, then digits relabelled); a hint also reveals some blanks of its parent "
        "from the label.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset(\"path/to/this/folder\")   # or streaming=True",
        "rows = ds[\"train\"].with_format(\"arrow\")[:768]",
        "inputs = rows[\"inputs\"].combine_chunks().flatten().to_numpy().reshape(-1, 81)   # uint8 [768, 81]",
        "```",
        "",
        "(`with_format(\"numpy\")` widens integers to int64; the stored tokens are uint8.)",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command


def _vanilla_of(df: pl.DataFrame) -> pl.DataFrame:
    """The hint table without its hint rows, ids renumbered: the vanilla dataset."""
    out = df.filter(pl.col("variant") != "hint")
    return out.with_columns(
        puzzle_id=pl.int_range(out.height, dtype=pl.Int32),
        parent_id=pl.lit(-1, dtype=pl.Int32),
    )


@click.command("shard")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data/hints"),
              help="Hints stage output.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/datasets"),
              help="Directory to write the datasets into (replaced as a whole on success).")
@click.option("--shard-max-mb", type=click.FloatRange(min=0, min_open=True), default=128.0,
              help="Largest shard, in MiB (whole groups per shard).")
def shard(input_dir: Path, output: Path, shard_max_mb: float) -> None:
    """Write the vanilla (and hint) datasets as Arrow shards with a dataset card and manifest."""
    stage = "shard"
    t_start = time.perf_counter()
    check_dirs(stage, input_dir, output)
    lineage = read_lineage(input_dir, stage)
    names = dataset_names(lineage)
    max_bytes = int(shard_max_mb * MIB)
    files = [f"{split}{EXAMPLES_SUFFIX}" for split in SPLITS]
    inputs = input_records(input_dir, files)
    per_group = {split: rows_per_group(lineage, split) for split in SPLITS}
    records = upstream_outputs(lineage, stage)
    tables = {split: read_examples(input_dir / name, per_group[split], stage, records.get(name))
              for split, name in zip(SPLITS, files)}

    sub = lineage.get("subsample") or {}
    params = {
        "seed": (sub.get("params") or {}).get("seed"),
        "subsample_size": (sub.get("params") or {}).get("subsample_size"),
        "test_size": (sub.get("params") or {}).get("test_size"),
        "num_aug": ((lineage.get("augment") or {}).get("params") or {}).get("num_aug"),
        "hints": names["hint"] is not None,
        "shard_max_mb": shard_max_mb,
    }
    test_capped = (sub.get("groups") or {}).get("test") != (sub.get("raw_rows") or {}).get("test")

    with atomic_output(output) as tmp:
        tmp.mkdir(parents=True)
        kinds = [("hint", names["hint"])] if names["hint"] else []
        kinds.append(("vanilla", names["vanilla"]))
        for kind, name in kinds:
            t0 = time.perf_counter()
            root = tmp / name
            manifest = {
                "name": name,
                "kind": kind,
                "format": {"version": FORMAT_VERSION, "files": "Arrow IPC file format, uncompressed",
                           "record_batch_rows": BATCH_ROWS, "shard_max_bytes": max_bytes},
                "columns": {f.name: str(f.type) for f in SHARD_SCHEMA},
                "encoding": {"seq_len": 81, "vocab_size": 11, "pad": 0, "blank": 1, "digits": "2..10 = 1..9"},
                "params": params,
                "source": lineage.get("raw") or {},
                "inputs": inputs,
                "lineage": lineage,
                "test_capped": test_capped,
                "splits": {},
            }
            for split in SPLITS:
                df = tables[split]
                per = per_group[split]
                if kind == "vanilla" and names["hint"] and split == "train":
                    df = _vanilla_of(df)
                    per = None if per is None else per // 2
                shown = str(output / name / split)
                records = write_split(df, split, root, max_bytes, shown)
                verify_split(records, root, per, shown)
                groups = int(df.get_column("group_id").n_unique()) if df.height else 0
                manifest["splits"][split] = {
                    "rows": df.height,
                    "groups": groups,
                    "rows_per_group": per if per is not None else (df.height // groups if groups else 0),
                    "variants": _variant_counts(df),
                    "shards": records,
                }
                size = sum(r["bytes"] for r in records)
                log(stage, f"wrote {shown}: {df.height:,} rows in {len(records)} shard(s), {human_bytes(size)}")
            write_json(root / "manifest.json", manifest)
            (root / "README.md").write_text(dataset_card(manifest))
            log(stage, f"wrote {output / name} ({kind}) in {time.perf_counter() - t0:.1f} s")
        write_json(tmp / "datasets.json", names)
    log(stage, f"wrote {output} in {time.perf_counter() - t_start:.1f} s")
