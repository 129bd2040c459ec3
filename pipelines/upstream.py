"""``hrm upstream``: our datasets in the upstream layout (the official HRM's, which its fork, TRM and URM
read) and back (docs/upstream.md; the layout and its checks: hrm/upstream.py).

``hrm upstream export DATASET --output DIR`` writes a dataset of ours (any task), opened as the loader
opens it (every shard's sha256 checked), as ``DIR/{train,test}/all__*.npy`` + ``dataset.json`` and
``DIR/identifiers.json``; the written folder is read back and checked as an import would check it.

``hrm upstream import DIR --task T --output OUT`` reads such a folder (every file's sha256 recorded),
refuses a bad one with one message naming each file and key or row (nothing written), and writes a
dataset of ours at OUT (shards, manifest.json, card; ARC: identifiers.json) that the loader, the
trainer, evaluate, analyze, ``hrm validate shards`` and the registry take. Its rows are ``imported``
(hrm.build.IMPORTED_VARIANT): an upstream folder records no transforms, so the lineage checks (an
augmented row is its original transformed) cannot run; every other row check does. A row keeps its
place: row r of a split is row r of its ``all__inputs.npy``; ``raw_index`` is its upstream group,
``rating`` 0 (none is recorded), ``source`` ``upstream:<split>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from hrm import upstream as up
from hrm.manifest import CARD, MANIFEST, file_sha256, new_manifest, puzzle_identifier_count, split_entry
from hrm.tasks import TASKS, Task, get_task
from pipelines.atomic_replace import atomic_output
from pipelines.dataset_io import write_json
from pipelines.io import FiniteFloatRange, RegisteredChoice, StageError, human_bytes, log

STAGE_EXPORT, STAGE_IMPORT = "upstream export", "upstream import"
EXPORT_ROWS = 1 << 16  # rows gathered at a time by the export
MIB = 1 << 20


@click.group("upstream")
def upstream() -> None:
    """The upstream dataset layout (official HRM, its fork, TRM, URM): export our datasets, import theirs."""


# --------------------------------------------------------------------------- export


def _names(dataset: Path, manifest: dict) -> list[str]:
    """The identifier names: the dataset's identifiers.json, checked against the manifest's sha256, or
    the blank alone (a task without identifiers)."""
    from hrm.integrity import IntegrityError, read_recorded

    record = (manifest.get("files") or {}).get(up.IDENTIFIERS)
    if record is None:
        return [up.BLANK_NAME]
    try:
        data = read_recorded(dataset / up.IDENTIFIERS, record.get("sha256"),
                             f"{dataset / MANIFEST} key files.{up.IDENTIFIERS}")
        names = json.loads(data)
    except (IntegrityError, ValueError) as exc:
        raise StageError(str(exc)) from None
    problems = up.identifiers_problems(names, str(dataset / up.IDENTIFIERS))
    if not problems and len(names) != puzzle_identifier_count(manifest):
        problems = [f"{dataset / up.IDENTIFIERS}: {len(names)} names, the manifest's encoding.num_puzzle_identifiers "
                    f"is {puzzle_identifier_count(manifest)}"]
    if problems:
        raise StageError(problems[0])
    return names


def _export_split(ds, folder: Path, split: str, task: Task, num_identifiers: int) -> None:
    """One split as the layout's files: tokens gathered EXPORT_ROWS rows at a time into memory-mapped
    .npy files (labels' ignored cells back to the pad token), then the index arrays and dataset.json."""
    from hrm.encoding import IGNORE_LABEL, PAD_TOKEN

    (folder / split).mkdir(parents=True)
    n, seq_len = ds.num_examples, ds.seq_len
    tokens = {name: np.lib.format.open_memmap(folder / up.array_file(split, name), mode="w+", dtype=up.TOKEN_DTYPE,
                                              shape=(n, seq_len)) for name in ("inputs", "labels")}
    identifiers = np.zeros(n, np.int32)
    for start in range(0, n, EXPORT_ROWS):
        batch = ds.gather(np.arange(start, min(start + EXPORT_ROWS, n), dtype=np.int64))
        labels = batch["labels"]
        tokens["inputs"][start:start + len(labels)] = batch["inputs"]
        tokens["labels"][start:start + len(labels)] = np.where(labels == IGNORE_LABEL, PAD_TOKEN, labels)
        identifiers[start:start + len(labels)] = batch["puzzle_identifiers"]
    group_id = np.repeat(np.arange(ds.num_groups), ds.group_sizes)
    split_arrays = up.to_upstream(tokens["inputs"], tokens["labels"], group_id,
                                  identifiers if task.identifier_column else None)
    for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        np.save(folder / up.array_file(split, name), getattr(split_arrays, name))
    for array in tokens.values():
        array.flush()
    meta = up.split_metadata(split_arrays, vocab_size=task.vocab_size, num_identifiers=num_identifiers)
    (folder / split / up.METADATA).write_text(json.dumps(meta))
    del tokens, split_arrays


@upstream.command("export")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The upstream folder to write (replaced as a whole on success).")
def export_command(dataset: Path, output: Path) -> None:
    """Write DATASET (a dataset folder of ours: manifest.json and shards) in the upstream layout."""
    from hrm.data import DatasetError, PuzzleDataset
    from hrm.manifest import ManifestError, read_manifest

    t0 = time.perf_counter()
    if not (dataset / MANIFEST).is_file() and (dataset / "datasets.json").is_file():
        raise StageError(f"{dataset}: holds several datasets (datasets.json); name one of its folders")
    try:
        manifest = read_manifest(dataset)
        opened = {split: PuzzleDataset(dataset, split, verify=True) for split in up.SPLITS}
    except (DatasetError, ManifestError, KeyError) as exc:
        why = f"no {exc} split" if isinstance(exc, KeyError) else str(exc)
        raise StageError(f"{dataset}: cannot be exported: {why}") from None
    task = opened[up.SPLITS[0]].task
    names = _names(dataset, manifest)
    with atomic_output(output, stage=STAGE_EXPORT) as tmp:
        tmp.mkdir(parents=True)
        for split, ds in opened.items():
            _export_split(ds, tmp, split, task, len(names))
            log(STAGE_EXPORT, f"{output / split}: {ds.num_examples:,} examples, {ds.num_groups:,} groups")
        (tmp / up.IDENTIFIERS).write_text(json.dumps(names))
        _, _, _, problems = read_folder(tmp, task)
        if problems:  # what was written must read back as an import reads it
            raise StageError("internal error, the exported folder fails its checks:\n" + "\n".join(problems))
    log(STAGE_EXPORT, f"wrote {output} ({task.name}, {len(names):,} identifiers) in {time.perf_counter() - t0:.1f} s")


# --------------------------------------------------------------------------- import


def _read_json(path: Path, shown: str, problems: list[str]):
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        problems.append(f"{shown}: missing" if not path.exists() else f"{shown}: cannot read ({exc.strerror})")
    except ValueError as exc:
        problems.append(f"{shown}: not JSON ({exc})")
    return None


def _read_array(path: Path, shown: str, problems: list[str]) -> np.ndarray | None:
    """A .npy file, memory-mapped (no pickled objects)."""
    if not path.is_file():
        problems.append(f"{shown}: missing")
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        problems.append(f"{shown}: not a .npy array ({exc})")
        return None


def read_folder(folder: Path, task: Task) -> tuple[list | None, dict, dict, list[str]]:
    """(identifier names, {split: dataset.json}, {split: {array: values}}, problems) of an upstream folder
    for ``task``: every file read and checked (hrm.upstream), each problem one line naming the file."""
    problems: list[str] = []
    names = _read_json(folder / up.IDENTIFIERS, up.IDENTIFIERS, problems)
    if names is not None:
        problems += up.identifiers_problems(names)
    metas, arrays = {}, {}
    for split in up.SPLITS:
        metas[split] = _read_json(folder / split / up.METADATA, f"{split}/{up.METADATA}", problems)
        arrays[split] = {name: _read_array(folder / up.array_file(split, name), up.array_file(split, name), problems)
                         for name in up.ARRAYS}
    if problems:
        return names, metas, arrays, problems
    for split in up.SPLITS:
        problems += up.split_problems(split, arrays[split], metas[split], task, len(names))
    return names, metas, arrays, problems


def _files_read(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file an import reads, by its path in the folder."""
    names = [up.IDENTIFIERS] + [f"{split}/{up.METADATA}" for split in up.SPLITS]
    names += [up.array_file(split, name) for split in up.SPLITS for name in up.ARRAYS]
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)} for name in names}


def _imported_frame(arrays: dict, split: str, task: Task):
    """A split's rows as a shard table of ours (variant ``imported``, no parents, the identity transforms),
    and the rows of each group."""
    import polars as pl

    from hrm.build import IMPORTED_VARIANT, NO_PARENT, ORIGINAL, Examples
    from schemas.examples import to_frame

    group, identifiers = up.rows_of(arrays["puzzle_indices"], arrays["group_indices"], arrays["puzzle_identifiers"])
    inputs, labels = np.asarray(arrays["inputs"], np.uint8), np.asarray(arrays["labels"], np.uint8)
    n, groups = len(inputs), len(arrays["group_indices"]) - 1
    ex = Examples(group, np.arange(n, dtype=np.int32), np.full(n, ORIGINAL, np.uint8), np.full(n, NO_PARENT, np.int32),
                  inputs, labels, task.imported_transforms(identifiers, inputs, labels))
    frame = to_frame(ex, np.full(groups, f"upstream:{split}", dtype=object), np.zeros(groups, np.int32),
                     np.arange(groups, dtype=np.int32), task)
    variant = pl.lit(IMPORTED_VARIANT, dtype=pl.String).alias("variant")
    return frame.with_columns(variant), np.bincount(group, minlength=groups)


def _write_imported_split(root: Path, split: str, arrays: dict, task: Task, max_bytes: int, folder: Path) -> dict:
    """Write one split's shards and validate them (every row check that needs no lineage); a failing row
    is named by its row in the upstream split's arrays (the same row number). Returns its manifest entry."""
    from hrm.build import IMPORTED_VARIANT
    from hrm.manifest import open_shard
    from pipelines.shard_files import write_split
    from schemas.examples import validate_shards

    df, group_rows = _imported_frame(arrays, split, task)
    entries = write_split(df, split, root, max_bytes, str(folder / split), task)
    report = validate_shards([open_shard(root / e["file"])[1] for e in entries], task, path=str(folder / split))
    if not report.ok:
        raise StageError(f"{folder}: rows the {task.name} checks refuse (row r: row r of "
                         f"{up.array_file(split, 'inputs')}):\n{report.message()}")
    even = int(group_rows[0]) if (group_rows == group_rows[0]).all() else 0  # 0: groups vary in size
    return split_entry(rows=df.height, groups=len(group_rows), rows_per_group=even,
                       variants={IMPORTED_VARIANT: df.height}, shards=entries)


def _card(manifest: dict, task: Task) -> str:
    """The imported dataset's card: Hub metadata with its ``configs``, and what it is and is not."""
    from pipelines.datasets import card_data, render_card, type_name

    name = manifest["name"]
    data = card_data([manifest], name, [{"config_name": "default", "data_files": [
        {"split": split, "path": f"{split}/*.arrow"} for split in manifest["splits"]]}])
    lines = ["", f"# {name}", "",
             f"{task.words['card']['title']} for the Hierarchical Reasoning Model, imported by `hrm upstream import` "
             f"from a folder in the upstream layout (`{manifest['source']['folder']}`; docs/upstream.md). "
             "`manifest.json` records the sha256 of every file read (`lineage.imported`).", "",
             "| split | rows | groups |", "| --- | ---: | ---: |"]
    lines += [f"| {split} | {info['rows']:,} | {info['groups']:,} |" for split, info in manifest["splits"].items()]
    lines += ["", "Every row is `imported`: the upstream folder records no transforms, so no row can be checked "
              "against an original (the lineage checks); the task's other checks passed on every row. `raw_index` "
              "is the row's upstream group, `rating` 0 (none recorded).", "",
              "## Columns", "", "| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c}` | {type_name(t)} | {d} |" for c, t, d in task.column_specs]
    return render_card(data, "\n".join(lines + [""]))


@upstream.command("import")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--task", "task_name", required=True, type=RegisteredChoice(lambda: list(TASKS)),
              help="The task the folder holds (its tokens and rules).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The dataset folder to write (replaced as a whole on success).")
@click.option("--shard-max-mb", type=FiniteFloatRange(min=0, min_open=True, max=float(1 << 20)), default=128.0,
              show_default=True, help="Largest shard, in MiB (whole groups per shard).")
def import_command(folder: Path, task_name: str, output: Path, shard_max_mb: float) -> None:
    """Read FOLDER (the upstream layout) into a validated dataset of ours at OUTPUT."""
    from pipelines.shard_files import BATCH_ROWS

    t0 = time.perf_counter()
    task = get_task(task_name)
    if not folder.is_dir():
        raise StageError(f"{folder}: not a folder")
    names, _, arrays, problems = read_folder(folder, task)
    if problems:
        raise StageError(f"{folder}: not an upstream {task.name} dataset, nothing written:\n"
                         + "\n".join(f"  {folder}/{line}" for line in problems))
    files = _files_read(folder)
    max_bytes = int(float(shard_max_mb) * MIB)
    lineage = {"raw": {"source": "upstream", **task.recorded_name()},
               "imported": {"folder": str(folder), "files": files, "variant": "imported",
                            "validated_with": task.examples_checks_id}}
    with atomic_output(output, stage=STAGE_IMPORT) as tmp:
        tmp.mkdir(parents=True)
        manifest = new_manifest(name=output.name, kind="vanilla", record_batch_rows=BATCH_ROWS, shard_max_bytes=max_bytes,
                                params={"imported": True, "shard_max_mb": float(shard_max_mb)},
                                source={"source": "upstream", "folder": str(folder)}, inputs=files, lineage=lineage,
                                test_capped=False, task=task)
        if task.identifier_column:  # the names the identifiers index: a task file of ours too (ARC)
            (tmp / up.IDENTIFIERS).write_bytes((folder / up.IDENTIFIERS).read_bytes())
            written = tmp / up.IDENTIFIERS
            manifest["files"] = {up.IDENTIFIERS: {"bytes": written.stat().st_size, "sha256": file_sha256(written)}}
            manifest["encoding"].update(task.dataset_encoding({up.IDENTIFIERS: names}))
        for split in up.SPLITS:
            manifest["splits"][split] = _write_imported_split(tmp, split, arrays[split], task, max_bytes, folder)
            size = sum(e["bytes"] for e in manifest["splits"][split]["shards"])
            log(STAGE_IMPORT, f"{output / split}: {manifest['splits'][split]['rows']:,} rows, {human_bytes(size)}")
        write_json(tmp / MANIFEST, manifest)
        (tmp / CARD).write_text(_card(manifest, task))
    log(STAGE_IMPORT, f"wrote {output} ({task.name}, imported from {folder}) in {time.perf_counter() - t0:.1f} s")
