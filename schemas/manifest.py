"""A sharded dataset on disk: its manifest, and the one check of a folder against it.

The shard stage writes, for each dataset NAME under its output ROOT::

    ROOT/datasets.json           {"vanilla": NAME, "hint": NAME-hint or null}
    ROOT/NAME/manifest.json      the manifest, below
    ROOT/NAME/README.md          the dataset card (``datasets.load_dataset(ROOT/NAME)`` works too)
    ROOT/NAME/<split>/data-00000-of-0000K.arrow ...
                                 Arrow IPC shards, columns schemas/columns.py, whole groups each

``manifest.json`` (JSON, sorted keys)::

    name, kind ("vanilla" | "hint"), format {version, files, record_batch_rows, shard_max_bytes},
    columns {column: Arrow type}, encoding (schemas/columns.py ENCODING), params, source,
    inputs (the hints tables it was cut from), lineage (every stage's lineage.json record),
    test_capped,
    splits {<split>: {rows, groups, rows_per_group, variants {variant: rows},
                      shards [{file, rows: [r0, r1], groups: [g0, g1], bytes, sha256}]}}

Shards hold rows ``[r0, r1)`` of the split, in order. Read by the loader (hrm/data.py), by
``hrm validate shards`` (pipelines/validate.py) and by the registry (pipelines/registry.py).
All three check a folder with :func:`read_manifest` and :func:`check_split`: the loader
stops at the first :class:`Problem` and raises its ``error``; the other two list every
problem's ``message`` (the two wordings differ where the loader says what to do next).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from schemas.columns import ENCODING, SHARD_SCHEMA

__all__ = [
    "MANIFEST", "CARD", "DATASETS_INDEX", "FORMAT_VERSION", "SPLIT_KEYS", "SHARD_KEYS",
    "new_manifest", "split_entry", "shard_entry",
    "file_sha256", "open_shard", "ShardReadError",
    "Problem", "ManifestError", "read_manifest", "OpenShard", "CheckedSplit", "check_split",
]

MANIFEST = "manifest.json"
CARD = "README.md"
DATASETS_INDEX = "datasets.json"
FORMAT_VERSION = 1
SPLIT_KEYS = ("rows", "groups", "shards")  # what every split entry must have
SHARD_KEYS = ("file", "rows", "bytes", "sha256")  # what every shard entry `hrm shard` writes has


# --------------------------------------------------------------------------- writing


def new_manifest(*, name: str, kind: str, record_batch_rows: int, shard_max_bytes: int, params: dict,
                 source: dict, inputs: dict, lineage: dict, test_capped: bool) -> dict:
    """A dataset's manifest, its ``splits`` still empty (filled with :func:`split_entry`)."""
    return {
        "name": name,
        "kind": kind,
        "format": {"version": FORMAT_VERSION, "files": "Arrow IPC file format, uncompressed",
                   "record_batch_rows": record_batch_rows, "shard_max_bytes": shard_max_bytes},
        "columns": {f.name: str(f.type) for f in SHARD_SCHEMA},
        "encoding": ENCODING,
        "params": params,
        "source": source,
        "inputs": inputs,
        "lineage": lineage,
        "test_capped": test_capped,
        "splits": {},
    }


def split_entry(*, rows: int, groups: int, rows_per_group: int, variants: dict[str, int], shards: list[dict]) -> dict:
    return {"rows": rows, "groups": groups, "rows_per_group": rows_per_group, "variants": variants, "shards": shards}


def shard_entry(*, file: str, rows: tuple[int, int], groups: tuple[int, int], size: int, sha256: str) -> dict:
    """``file`` relative to the dataset folder; ``rows`` and ``groups`` half-open ranges in the split."""
    return {"file": file, "rows": list(rows), "groups": list(groups), "bytes": size, "sha256": sha256}


# --------------------------------------------------------------------------- files


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file, read in chunks with read(), not mmap: the hashed pages do not
    stay in the process's resident memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ShardReadError(ValueError):
    """A shard that cannot be mapped or read as Arrow IPC; the message says which of the two."""


def open_shard(path: Path) -> tuple[pa.Buffer, pa.Table]:
    """(the whole file as a zero-copy memory-mapped buffer, its table): IPC file or stream format."""
    try:
        buffer = pa.memory_map(str(path), "r").read_buffer()
    except (OSError, pa.ArrowException) as exc:
        raise ShardReadError(f"cannot open the shard ({exc})") from None
    try:
        return buffer, pa.ipc.open_file(buffer).read_all()
    except pa.ArrowInvalid:
        pass
    try:
        return buffer, pa.ipc.open_stream(buffer).read_all()
    except (OSError, pa.ArrowException) as exc:
        raise ShardReadError(f"not an Arrow IPC file ({exc})") from None


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Problem:
    """One way a dataset folder differs from its manifest.

    ``message``: one line of a listing, naming the file. ``error``: what the loader raises for
    it, when it says more (what to do next); else the message.
    """

    kind: str  # manifest, split, entry, missing, content, unreadable, schema, rows (validate adds shard_schema)
    message: str
    error: str = ""

    def __post_init__(self) -> None:
        if not self.error:
            object.__setattr__(self, "error", self.message)


class ManifestError(ValueError):
    """A manifest that cannot be used at all; ``problem`` says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.error)
        self.problem = problem


def read_manifest(dataset: Path) -> dict:
    """``dataset/manifest.json`` with a non-empty ``splits`` mapping; else :class:`ManifestError`."""
    path = Path(dataset) / MANIFEST
    if not path.is_file():
        raise ManifestError(Problem(
            "manifest", f"{path}: cannot read (no such file)",
            f"{path}: manifest not found; expected a dataset directory written by `hrm shard` "
            f"(DIR/{MANIFEST}, DIR/<split>/*.arrow): build it with `dvc repro shard`, or fetch it with `dvc pull`"))
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(Problem("manifest", f"{path}: cannot read the manifest as JSON ({exc})")) from None
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict) or not splits:
        raise ManifestError(Problem("manifest", f"{path}: no 'splits' mapping; expected the manifest `hrm shard` writes"))
    return manifest


@dataclass
class OpenShard:
    path: Path
    entry: dict
    buffer: pa.Buffer  # the memory-mapped file
    table: pa.Table  # its columns, zero-copy over ``buffer``


@dataclass
class CheckedSplit:
    shards: list[OpenShard] = field(default_factory=list)  # every shard when ``problems`` is empty
    problems: list[Problem] = field(default_factory=list)


def _schema_problem(path: Path, schema: pa.Schema, required: dict[str, pa.DataType],
                    listed: dict | None) -> Problem | None:
    for name, expected in required.items():
        if schema.get_field_index(name) < 0:
            return Problem("schema", f"{path}: no column {name!r} (expected type {expected}); found columns "
                                     f"{', '.join(schema.names)}")
        found = schema.field(name).type
        if found != expected:
            return Problem("schema", f"{path}: column {name!r} has type {found}, expected {expected}")
    if listed:
        found = {f.name: str(f.type) for f in schema}
        if found != listed:
            diff = sorted(set(found.items()) ^ set(listed.items()))
            return Problem("schema", f"{path}: schema differs from the manifest's columns "
                                     f"(differing entries: {diff}); expected {listed}")
    return None


def check_split(dataset: Path, manifest: dict, split: str, *, required: dict[str, pa.DataType],
                entry_keys: tuple[str, ...] = SHARD_KEYS, verify: bool = True, sizes: bool = True,
                first_only: bool = False) -> CheckedSplit:
    """Check one split of ``dataset`` against its manifest, opening (memory-mapping) every shard.

    Per shard, in order: its entry has ``entry_keys`` and starts where the previous one
    ended; the file exists; with ``verify`` its sha256 (and with ``sizes`` its size) is the
    manifest's; it reads as Arrow IPC; it has the ``required`` columns and types and the
    manifest's ``columns`` (when listed); it holds the rows its entry says. Then the split's
    row count. An entry without ``rows`` starts where the previous shard ended, one without
    ``sha256`` (or ``bytes``) is not hashed (or sized): what ``entry_keys`` may leave out.
    ``first_only``: stop at the first problem (the loader's use).
    """
    dataset = Path(dataset)
    path = dataset / MANIFEST
    out = CheckedSplit()

    def found(problem: Problem) -> bool:  # True: stop here
        out.problems.append(problem)
        return first_only

    splits = manifest["splits"]
    if split not in splits:
        found(Problem("split", f"{path}: no split {split!r} (the manifest has: {', '.join(splits) or 'none'})"))
        return out
    info = splits[split]
    missing = [k for k in SPLIT_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        found(Problem("split", f"{path}: split {split!r} has no {' or '.join(map(repr, missing))} entry"))
        return out
    listed = manifest.get("columns")
    row = 0  # where the next shard starts
    for i, entry in enumerate(info["shards"]):
        missing = [k for k in entry_keys if not isinstance(entry, dict) or k not in entry]
        if missing:
            if found(Problem("entry", f"{path}: shard {i} of split {split!r} has no "
                                      f"{' or '.join(map(repr, missing))}")):
                return out
            continue
        if "rows" in entry:
            r0, r1 = entry["rows"]
            if r0 != row and found(Problem("entry", f"{path}: shard {i} of split {split!r} starts at row {r0}, "
                                                    f"the previous one ends at row {row}")):
                return out
            row = r1
        file = dataset / entry["file"]
        if not file.is_file():
            if found(Problem("missing", f"{file}: shard listed in the manifest is missing (file not found)")):
                return out
            continue
        if verify and "sha256" in entry:
            digest, size = file_sha256(file), file.stat().st_size
            wrong_size = sizes and "bytes" in entry and size != entry["bytes"]
            if digest != entry["sha256"] or wrong_size:
                wrong = (f"sha256 is {digest}, the manifest expects {entry['sha256']}" if digest != entry["sha256"]
                         else f"{size} bytes, the manifest says {entry['bytes']}")
                if found(Problem("content", f"{file}: sha256 or size differs from the manifest "
                                            f"(truncated, corrupt or modified)",
                                 f"{file}: {wrong}; the shard changed after `hrm shard` wrote it "
                                 f"(rebuild it: dvc repro)")):
                    return out
        try:
            buffer, table = open_shard(file)
        except ShardReadError as exc:
            if found(Problem("unreadable", f"{file}: cannot read as an Arrow IPC shard ({exc}); modified or truncated",
                             f"{file}: {exc}; expected a shard written by `hrm shard`")):
                return out
            continue
        problem = _schema_problem(file, table.schema, required, listed)
        if problem is not None and found(problem):
            return out
        if "rows" not in entry:  # a folder made by hand: the shard says where the next one starts
            r0, r1 = row, row + table.num_rows
            row = r1
        if table.num_rows != r1 - r0 and found(Problem(
                "rows", f"{file}: holds {table.num_rows} rows starting at row {r0}; the manifest says rows [{r0}, {r1})")):
            return out
        out.shards.append(OpenShard(file, entry, buffer, table))
    if not out.problems:
        held = sum(s.table.num_rows for s in out.shards)
        if held != info["rows"]:
            found(Problem("rows", f"{path}: split {split!r} lists {info['rows']} rows, its shards hold {held}"))
    return out
