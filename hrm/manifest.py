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
``hrm validate shards`` and the registry (pipelines/dataset_checks.py, pipelines/artifacts.py).
All three check a folder with :func:`read_manifest` and :func:`check_split`: the loader
stops at the first :class:`Problem` and raises its ``error``; the other two list every
problem's ``message`` (the two wordings differ where the loader says what to do next).

The manifest is parsed against its declared schema (:class:`ManifestSchema`; its ``lineage``
against :class:`LineageRecord`, the schema of the stages' ``lineage.json``) before anything
is opened: a key of the wrong type (``shards: null``, ``rows: "5"``), a shard ``file``
outside the dataset folder (absolute, or with ``..``) or listed twice, a split of 0 rows, is
a :class:`ManifestError` naming the file and key. A
``.arrow`` file in a split folder that the split does not list is a problem too (the card's
``<split>/*.arrow`` glob would read it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Iterator, Literal, Mapping

import pyarrow as pa
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError,
)

from hrm.integrity import file_sha256  # re-exported: the loader and the stages take it from here
from hrm.tasks import Task

__all__ = [
    "MANIFEST", "CARD", "DATASETS_INDEX", "FORMAT_VERSION", "SPLIT_KEYS", "SHARD_KEYS",
    "new_manifest", "split_entry", "shard_entry",
    "file_sha256", "open_shard", "ShardReadError",
    "Problem", "ManifestError", "ManifestSchema", "LineageRecord", "lineage_problems", "manifest_problems",
    "DatasetsIndex", "datasets_index_problems",
    "read_manifest", "OpenShard", "CheckedSplit", "check_split",
    "puzzle_identifier_count", "DatasetIdentity", "TrainedOnRecord", "dataset_identity",
]

MANIFEST = "manifest.json"
CARD = "README.md"
DATASETS_INDEX = "datasets.json"
# 2: shards hold ``raw_index`` (each example's original's row in the raw split file; issue 16).
FORMAT_VERSION = 2
SPLIT_KEYS = ("rows", "groups", "shards")  # what every split entry must have
SHARD_KEYS = ("file", "rows", "bytes", "sha256")  # what every shard entry `hrm shard` writes has


# --------------------------------------------------------------------------- writing


def new_manifest(*, name: str, kind: str, record_batch_rows: int, shard_max_bytes: int, params: dict,
                 source: dict, inputs: dict, lineage: dict, test_capped: bool, task: Task) -> dict:
    """A dataset's manifest, its ``splits`` still empty (filled with :func:`split_entry`); ``columns``
    and ``encoding`` are the task's (hrm.tasks)."""
    return {
        "name": name,
        "kind": kind,
        "format": {"version": FORMAT_VERSION, "files": "Arrow IPC file format, uncompressed",
                   "record_batch_rows": record_batch_rows, "shard_max_bytes": shard_max_bytes},
        "columns": {f.name: str(f.type) for f in task.shard_schema},
        "encoding": dict(task.encoding),
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


# --------------------------------------------------------------------------- which build a dataset is


def puzzle_identifier_count(manifest: Mapping[str, Any]) -> int:
    """The dataset's puzzle identifiers, ``encoding.num_puzzle_identifiers`` (without it 1, the blank: Sudoku's and
    the mazes' datasets): the rows of the puzzle-embedding table of a model trained on it."""
    encoding = manifest.get("encoding") if isinstance(manifest, Mapping) else None
    return int(encoding.get("num_puzzle_identifiers", 1)) if isinstance(encoding, Mapping) else 1


@dataclass(frozen=True)
class DatasetIdentity:
    """Which build of a dataset a folder holds: the sha256 of its ``manifest.json`` (which lists every shard's
    sha256; the hash the registry records of that file and a job's settings name), its name and the sizes a model
    takes from it. A checkpoint records it (all_config.yaml ``trained_on``, :meth:`record`); evaluating the
    checkpoint compares it (hrm.model.coupling)."""

    manifest: Path  # the file it was read from (not recorded: the folder may move)
    name: str | None
    manifest_sha256: str
    num_puzzle_identifiers: int
    seq_len: int | None
    vocab_size: int | None

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "manifest_sha256": self.manifest_sha256,
                "num_puzzle_identifiers": self.num_puzzle_identifiers, "seq_len": self.seq_len,
                "vocab_size": self.vocab_size}


def dataset_identity(dataset: Path, manifest: Mapping[str, Any]) -> DatasetIdentity:
    """The identity of the dataset folder ``dataset`` whose parsed manifest is ``manifest``."""
    encoding = manifest.get("encoding") if isinstance(manifest.get("encoding"), Mapping) else {}
    path = Path(dataset) / MANIFEST
    return DatasetIdentity(manifest=path, name=manifest.get("name"), manifest_sha256=file_sha256(path),
                           num_puzzle_identifiers=puzzle_identifier_count(manifest),
                           seq_len=encoding.get("seq_len"), vocab_size=encoding.get("vocab_size"))


# --------------------------------------------------------------------------- the declared schema

# The lineage record of the dataset stages, declared once: what ``lineage.json`` holds.
#
# Each dataset stage (subsample, augment, hints) writes ``OUTPUT/lineage.json``: the record it
# read from its input, plus its own; the shard stage copies the whole record into every
# manifest (``lineage``). JSON, sorted keys::
#
#     raw        {source, ...}                 the raw source (hf: hf_repo, revision, resolved_sha)
#     subsample  {params {seed, subsample_size, test_size, vanilla_draw}, inputs, raw_rows {split: n},
#                 [raw_groups {split: n}], groups {table: n}}   (tables: the splits, and train_vanilla with
#                 vanilla_draw independent; raw_groups where a group is several rows: ARC's puzzles)
#     augment    {params {seed, num_aug}, inputs, rows_per_group {split: n}, outputs, [files {file: {sha256}}]}
#     hints      {params {seed, enabled}, inputs, outputs}
#
# ``inputs`` {file: {bytes, sha256}} are the files a stage read; ``outputs`` {file: {rows,
# sha256, validated_with}} the examples tables it validated and wrote. Every record is
# optional (a record holds the stages run so far); keys not listed here are allowed, the
# listed ones must have their type. :func:`lineage_problems` names each key that does not.

Count = Annotated[StrictInt, Field(ge=0)]
Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class StrictRecord(BaseModel):
    # strict: "3" is not an int, 1 is not a bool; extra keys are kept (newer writers may add some).
    # Fields default to None without being validated, so that a key may be absent; a null that
    # is present is validated, and refused.
    model_config = ConfigDict(strict=True, extra="allow")


class FileRecord(StrictRecord):
    bytes: Count = None
    sha256: Sha256 = None


class OutputRecord(StrictRecord):
    rows: Count = None
    sha256: Sha256 = None
    validated_with: StrictStr = None


class RawRecord(StrictRecord):
    source: StrictStr = None


class SubsampleParams(StrictRecord):
    seed: StrictInt = None
    subsample_size: Count = None
    test_size: Count = None
    vanilla_draw: Literal["coupled", "independent"] = None


class SubsampleRecord(StrictRecord):
    params: SubsampleParams = None
    inputs: dict[str, FileRecord] = None
    raw_rows: dict[str, Count] = None
    raw_groups: dict[str, Count] = None  # where a group is several rows (ARC: a puzzle's pairs)
    groups: dict[str, Count] = None


class AugmentParams(StrictRecord):
    seed: StrictInt = None
    num_aug: Count = None


class AugmentRecord(StrictRecord):
    params: AugmentParams = None
    inputs: dict[str, FileRecord] = None
    rows_per_group: dict[str, Annotated[StrictInt, Field(ge=1)]] = None
    outputs: dict[str, OutputRecord] = None
    files: dict[str, FileRecord] = None  # the task's files beside the tables (ARC: identifiers.json)


class HintsParams(StrictRecord):
    seed: StrictInt = None
    enabled: StrictBool = None


class HintsRecord(StrictRecord):
    params: HintsParams = None
    inputs: dict[str, FileRecord] = None
    outputs: dict[str, OutputRecord] = None


class LineageRecord(StrictRecord):
    raw: RawRecord = None
    subsample: SubsampleRecord = None
    augment: AugmentRecord = None
    hints: HintsRecord = None


class TrainedOnRecord(StrictRecord):
    """What a checkpoint's all_config.yaml ``trained_on`` must hold (:meth:`DatasetIdentity.record`)."""

    name: StrictStr | None = None
    manifest_sha256: Sha256
    num_puzzle_identifiers: Annotated[StrictInt, Field(ge=1)]
    seq_len: Count | None = None
    vocab_size: Count | None = None


def _key(loc: tuple, prefix: str) -> str:
    key = prefix
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def schema_problems(model: type[BaseModel], data: object, prefix: str = "") -> list[str]:
    """One line per key of ``data`` that ``model`` refuses: ``key a.b[0].c: reason (found: value)``."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        out = []
        for err in exc.errors(include_url=False):
            found = repr(err.get("input"))
            found = found if len(found) <= 60 else found[:57] + "..."
            why = ("expected a JSON object" if err["type"] in ("model_type", "model_attributes_type", "dict_type")
                   else err["msg"].removeprefix("Value error, "))
            why = why[:1].lower() + why[1:]
            out.append(f"key {_key(tuple(err['loc']), prefix)}: {why} (found {found})")
        return out
    return []


def lineage_problems(data: object, prefix: str = "") -> list[str]:
    """The keys of a lineage record (``lineage.json``, or a manifest's ``lineage``) of the wrong shape."""
    if not isinstance(data, dict):
        return [f"key {prefix or '(top level)'}: expected a JSON object of stage records, found {type(data).__name__}"]
    return schema_problems(LineageRecord, data, prefix)


# The shard stage's index of its output: ROOT/datasets.json.


def _dataset_name(name: str) -> str:
    """A name in datasets.json: a dataset folder directly inside the root (relative, one part)."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or len(path.parts) != 1 or name in (".", "..") or "\\" in name or name.startswith("~"):
        raise ValueError("must be the name of a dataset folder inside the shard stage's output (no '/', '..', "
                         "not absolute)")
    return name


DatasetName = Annotated[StrictStr, AfterValidator(_dataset_name)]


class DatasetsIndex(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    vanilla: DatasetName
    hint: DatasetName | None = None


def datasets_index_problems(data: object, root: Path) -> list[str]:
    """The keys of ``ROOT/datasets.json`` (``data``) of the wrong shape: ``vanilla`` (and ``hint``, or
    null) must name a dataset folder of ``root`` holding a manifest.json; nothing else may be there."""
    if not isinstance(data, dict):
        return [f"key (top level): expected a JSON object {{\"vanilla\": NAME, \"hint\": NAME or null}}, "
                f"found {type(data).__name__}"]
    problems = schema_problems(DatasetsIndex, data)
    for key in ("vanilla", "hint"):
        name = data.get(key)
        if not problems and name is not None and not (root / name / MANIFEST).is_file():
            problems.append(f"key {key}: {name!r} is not a dataset folder of {root} (no {name}/{MANIFEST})")
    return problems


# The manifest's own keys.


def _inside(file: str) -> str:
    """A shard's ``file``: a relative path inside the dataset folder (no ``..``, not absolute)."""
    path = PurePosixPath(file)
    if not file or path.is_absolute() or ".." in path.parts or "\\" in file or file.startswith("~"):
        raise ValueError("must be a relative path inside the dataset folder (no '..', not absolute)")
    return file


Range = Annotated[list[Count], Field(min_length=2, max_length=2)]  # [start, stop): JSON has no tuples


class ShardSchema(StrictRecord):
    file: Annotated[StrictStr, AfterValidator(_inside)]  # the one key a hand-made folder's entry needs
    rows: Range = None
    groups: Range = None
    bytes: Count = None
    sha256: Sha256 = None


class SplitSchema(StrictRecord):
    rows: Annotated[StrictInt, Field(ge=1)] = None  # an empty split is refused where it would be made, and here
    groups: Annotated[StrictInt, Field(ge=1)] = None
    rows_per_group: Count = None
    variants: dict[str, Count] = None
    shards: Annotated[list[ShardSchema], Field(min_length=1)] = None


class FormatSchema(StrictRecord):
    version: StrictInt = None
    record_batch_rows: Count = None
    shard_max_bytes: Count = None


class ManifestSchema(StrictRecord):
    """What :func:`read_manifest` requires of ``manifest.json`` (keys it lists must have their
    type; ``lineage`` is checked against :class:`LineageRecord`)."""

    name: StrictStr = None
    kind: Literal["vanilla", "hint"] = None
    format: FormatSchema = None
    columns: dict[str, StrictStr] = None
    params: dict = None
    source: dict = None
    inputs: dict = None
    lineage: LineageRecord = None
    test_capped: StrictBool = None
    splits: dict[str, SplitSchema]


def manifest_problems(manifest: object, path: Path, entry_keys: tuple[str, ...] = SHARD_KEYS) -> list[Problem]:
    """Every way ``manifest`` differs from its declared schema, one :class:`Problem` each, naming
    ``path`` and the key; every split entry needs ``SPLIT_KEYS``, every shard entry ``entry_keys``."""
    if not isinstance(manifest, dict):
        return [Problem("manifest", f"{path}: expected a JSON object, found {type(manifest).__name__}")]
    if not isinstance(manifest.get("splits"), dict) or not manifest["splits"]:
        return [Problem("manifest", f"{path}: no 'splits' mapping; expected the manifest `hrm shard` writes")]
    problems = [Problem("schema_key", f"{path}: {line}") for line in schema_problems(ManifestSchema, manifest)]
    version = (manifest.get("format") or {}).get("version") if isinstance(manifest.get("format"), dict) else None
    if isinstance(version, int) and version != FORMAT_VERSION:
        problems.append(Problem("format", f"{path}: format version {version}, this hrm reads version {FORMAT_VERSION} "
                                          f"(shards with a raw_index column); rebuild the dataset with `hrm shard` "
                                          f"(`dvc repro shard`)"))
    seen: dict[str, str] = {}
    for split, info in manifest["splits"].items():
        if not isinstance(info, dict):
            continue  # named above
        missing = [k for k in SPLIT_KEYS if k not in info]
        if missing:
            problems.append(Problem("split", f"{path}: split {split!r} has no {' or '.join(map(repr, missing))} entry"))
        for i, entry in enumerate(info.get("shards") if isinstance(info.get("shards"), list) else []):
            if not isinstance(entry, dict):
                continue
            missing = [k for k in entry_keys if k not in entry]
            if missing:
                problems.append(Problem("entry", f"{path}: shard {i} of split {split!r} has no "
                                                 f"{' or '.join(map(repr, missing))}"))
            file = entry.get("file")
            if isinstance(file, str):
                key = PurePosixPath(file).as_posix()
                if key in seen:
                    problems.append(Problem("schema_key", f"{path}: key splits.{split}.shards[{i}].file: {file!r} is "
                                                          f"listed twice (also {seen[key]})"))
                seen.setdefault(key, f"splits.{split}.shards[{i}]")
    return problems


# --------------------------------------------------------------------------- files


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

    kind: str  # manifest, schema_key, split, entry, missing, content, unreadable, schema, rows, stray
    # (validate adds shard_schema)
    message: str
    error: str = ""

    def __post_init__(self) -> None:
        if not self.error:
            object.__setattr__(self, "error", self.message)


class ManifestError(ValueError):
    """A manifest that cannot be used at all; ``problems`` say why (``problem``: the first)."""

    SHOWN = 20  # problems in the message; the rest are counted

    def __init__(self, problems: Problem | list[Problem]) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.problem = self.problems[0]
        more = len(self.problems) - self.SHOWN
        super().__init__("\n".join([p.error for p in self.problems[:self.SHOWN]]
                                   + ([f"... and {more:,} more problems"] if more > 0 else [])))


def read_manifest(dataset: Path, entry_keys: tuple[str, ...] = SHARD_KEYS) -> dict:
    """``dataset/manifest.json``, parsed against its declared schema (:func:`manifest_problems`;
    ``entry_keys``: what every shard entry must have); else :class:`ManifestError`."""
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
    problems = manifest_problems(manifest, path, entry_keys)
    if problems:
        raise ManifestError(problems)
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


def _content_problem(file: Path, entry: dict, sizes: bool) -> Problem | None:
    """A shard whose sha256 (and with ``sizes`` its size, when listed) is not its manifest entry's."""
    digest, size = file_sha256(file), file.stat().st_size
    wrong_size = sizes and "bytes" in entry and size != entry["bytes"]
    if digest == entry["sha256"] and not wrong_size:
        return None
    wrong = (f"sha256 is {digest}, the manifest expects {entry['sha256']}" if digest != entry["sha256"]
             else f"{size} bytes, the manifest says {entry['bytes']}")
    return Problem("content", f"{file}: sha256 or size differs from the manifest (truncated, corrupt or modified)",
                   f"{file}: {wrong}; the shard changed after `hrm shard` wrote it (rebuild it: dvc repro)")


def _stray_shards(dataset: Path, split: str, entries: list) -> Iterator[Problem]:
    """Each ``.arrow`` file in the split's folder that no shard entry lists (in name order)."""
    path = dataset / MANIFEST
    folder = dataset / split
    listed_files = {(dataset / e["file"]).resolve() for e in entries if isinstance(e, dict) and "file" in e}
    for stray in sorted(folder.glob("*.arrow")) if folder.is_dir() else []:
        if stray.resolve() not in listed_files:
            yield Problem("stray", f"{stray}: not listed in {path} (key splits.{split}.shards); a stray shard, which "
                                   f"the card's `{split}/*.arrow` glob would read")


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
            problem = _content_problem(file, entry, sizes)
            if problem is not None and found(problem):
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
    for problem in _stray_shards(dataset, split, info["shards"]):
        if found(problem):
            return out
    if not out.problems:
        held = sum(s.table.num_rows for s in out.shards)
        if held != info["rows"]:
            found(Problem("rows", f"{path}: split {split!r} lists {info['rows']} rows, its shards hold {held}"))
    return out
