"""The check of a sharded dataset folder, shared by ``hrm validate shards`` (pipelines/validate.py)
and the registry's dataset check (pipelines/artifacts.py): each split against its manifest, then
against the shard schema.
"""

from __future__ import annotations

from pathlib import Path

from hrm.manifest import ManifestError, Problem, check_split, read_manifest
from hrm.tasks import manifest_task


def _with_shard_rows(report, shards: list[dict], root: Path):
    """``report`` (rows numbered across the split) with each bad row's shard file and row in it."""
    import dataclasses

    import numpy as np
    import polars as pl

    starts = np.array([r["rows"][0] for r in shards], dtype=np.int64)
    rows = report.problems.get_column("row").to_numpy()
    which = np.searchsorted(starts, rows, side="right") - 1
    reasons = [f"{why} [{root / shards[i]['file']}, row {r - starts[i]}]"
               for why, r, i in zip(report.problems.get_column("reason").to_list(), rows.tolist(), which.tolist())]
    problems = report.problems.with_columns(pl.Series("reason", reasons, dtype=pl.String))
    return dataclasses.replace(report, problems=problems)


def task_file_problems(dataset: Path, manifest: dict) -> list[Problem]:
    """The task's files the manifest lists (``files``: ARC's identifiers.json), each against its size and
    sha256."""
    from hrm.integrity import file_sha256

    problems = []
    for name, record in (manifest.get("files") or {}).items():
        path = dataset / name
        if not path.is_file():
            problems.append(Problem("content", f"{path}: missing (listed in the manifest's files)"))
            continue
        got = file_sha256(path)
        if got != (record or {}).get("sha256"):
            problems.append(Problem("content", f"{path}: sha256 {got}, the manifest records "
                                               f"{(record or {}).get('sha256')} (key files.{name})"))
    return problems


def dataset_problems(dataset: Path) -> tuple[dict, list[Problem]]:
    """Every problem of a sharded dataset folder: each split against the manifest
    (hrm.manifest.check_split: shard presence, sha256, size, Arrow schema, row ranges and
    counts), then each undamaged split against the shard schema (bad rows named with their
    shard). Returns (manifest, problems); the manifest is {} when it cannot be read."""
    from schemas.examples import validate_shards

    try:
        manifest = read_manifest(dataset)
    except ManifestError as exc:
        return {}, exc.problems
    try:
        task = manifest_task(manifest)
        required = {f.name: f.type for f in task.shard_schema}
    except ValueError as exc:
        return manifest, [Problem("encoding", f"{dataset / 'manifest.json'}: encoding: {exc}")]
    problems = task_file_problems(dataset, manifest)
    for split, info in manifest["splits"].items():
        checked = check_split(dataset, manifest, split, required=required)
        problems += checked.problems
        if checked.problems:  # content of a damaged split is not worth checking row by row
            continue
        report = validate_shards([s.table for s in checked.shards], task, rows_per_group=info.get("rows_per_group") or None,
                                 path=str(dataset / split))
        if not report.ok:
            problems.append(Problem("shard_schema", _with_shard_rows(report, info["shards"], dataset).message()))
    return manifest, problems
