"""The record ``hrm registry register`` writes in a version's tag message (pipelines/artifacts.py).

A tag message ends with one line ``hrm-registry: {json}``. Anyone can make a tag: every record is
parsed against :class:`RegistryRecord` before a command uses it, and a record of the wrong shape
is one message naming the tag and the key (``registry_record_problems``), never a traceback
deep in ``show``, ``verify``, ``get`` or ``list``. Keys are optional (older records lack some);
a key that is there must have its type. Extra keys are kept (newer writers may add some).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr

from hrm.manifest import Count, Sha256, StrictRecord, TrainedOnRecord, schema_problems

Content = Annotated[StrictStr, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class FileEntry(StrictRecord):
    bytes: Count
    sha256: Sha256


class DvcOut(StrictRecord):
    path: StrictStr
    md5: StrictStr | None = None
    dvcfile: StrictStr = None


class DvcState(StrictRecord):
    outs: list[DvcOut] = None


class DatasetOf(StrictRecord):
    """A model's dataset: where it was, its name, content hash and manifest sha256 (None when not in the project);
    ``trained_on``: the build the model needs, as its all_config.yaml records it (hrm.model.coupling)."""

    data_path: StrictStr = None
    name: StrictStr | None = None
    content: Content | None = None
    manifest_sha256: Sha256 = None
    artifact: StrictStr = None
    versions: list[StrictStr] = None
    trained_on: TrainedOnRecord = None


class BuiltFrom(StrictRecord):
    hints_tables: dict[str, Sha256 | None] = None
    raw_files: dict[str, Sha256 | None] = None


class RegistryRecord(StrictRecord):
    schema_: StrictInt = Field(None, alias="schema")  # the record's format version (pipelines.artifacts.RECORD_SCHEMA)
    type: Literal["dataset", "model"] = None
    artifact: StrictStr = None
    path: StrictStr = None
    content: Content = None
    bytes: Count = None
    files: dict[str, FileEntry] = None
    dvc: DvcState = None
    # dataset
    dataset: StrictStr | DatasetOf | None = None  # a dataset's own name, or a model's dataset
    kind: StrictStr | None = None
    rows: dict[str, Count] = None
    groups: dict[str, Count] = None
    variants: dict[str, dict[str, Count] | None] = None
    params: dict[str, Any] = None
    source: dict[str, Any] = None
    built_from: BuiltFrom = None
    # model
    config: StrictStr = None
    checkpoints: list[StrictStr] = None
    latest_step: Count | None = None
    arch: dict[str, Any] = None
    train: dict[str, Any] = None
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any] = None  # published weights: origin, dataset identity, architecture (docs/weights.md)


def registry_record_problems(data: object) -> list[str]:
    """The keys of a tag's record of the wrong shape (``key files.x.sha256: reason (found ...)``)."""
    if not isinstance(data, dict):
        return [f"key (top level): expected a JSON object, found {type(data).__name__}"]
    return schema_problems(RegistryRecord, data)
