"""``hrm shard``: the finished datasets, as Arrow IPC shards with a dataset card and manifest.

Reads the hints stage output (``INPUT/{train,test}.arrow`` and, from an independent vanilla draw,
``train_vanilla.arrow``; ``INPUT/lineage.json``), checks each table against the sha256 the hints stage
recorded in the lineage, validates it (every row), and writes under ``OUTPUT`` the layout of hrm/manifest.py
(columns: the task's, hrm.tasks; card: pipelines/datasets.py):

    OUTPUT/datasets.json                 {"vanilla": NAME, "hint": NAME-hint or null}
    OUTPUT/README.md                     root card: one ``datasets`` config per dataset ("vanilla", "hint")
    OUTPUT/NAME/train/data-00000-of-0000K.arrow ...
    OUTPUT/NAME/test/data-00000-of-0000K.arrow ...
    OUTPUT/NAME/README.md                dataset card (YAML ``configs`` for ``datasets``)
    OUTPUT/NAME/manifest.json            counts, shard row/group ranges, sha256, params, lineage
    OUTPUT/NAME-hint/...                 the hint dataset, when hints are enabled

NAME follows the fork (the fork = the Augmented HRM paper's code, README "Reference code"):
``sudoku-{source}-{size}-aug-{num_aug}`` (``sudoku-extreme-1k-aug-1000``;
``builtin`` for the offline generator; size ``full`` when the train split was not subsampled);
mazes alike, ``maze-{source}-{size}[-aug-{num_aug}]`` (``maze-30x30-hard-1k-full``), in the maze
layout (hrm.tasks ``MAZE``), the task in the manifest's ``encoding``.
The vanilla dataset is the hint table without its hint rows (puzzle ids renumbered), so
the vanilla examples are built once; with an independent vanilla draw (subsample
``--vanilla-draw independent``) its train split is that draw instead. The test split is the
same in both.

Shards hold whole groups, in table order, and are at most ``--shard-max-mb`` MiB (a
single group larger than that gets a shard of its own). Nothing in a shard, card or
manifest depends on time or paths: the same inputs and params give the same bytes.
After writing, every shard is read back (memory-mapped), compared with the validated
table it was cut from, hashed, and each split is checked against the shard schema (every
rule of the examples table, every row: the same check as ``hrm validate shards``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
import polars as pl

from pipelines.dataset_io import (
    EXAMPLES_SUFFIX, SPLITS, VANILLA_TRAIN, check_dirs, check_tables_memory, copy_task_files, data_settings,
    input_records, lineage_task,
    read_examples, read_lineage, require_rows, rows_per_group, tables_of, verify_table, write_json,
)
from pipelines.datasets import dataset_card, root_card
from pipelines.atomic_replace import atomic_output
from pipelines.io import FiniteFloatRange, human_bytes, log
from hrm.tasks import Task
from hrm.manifest import CARD, DATASETS_INDEX, MANIFEST, file_sha256, new_manifest, split_entry
# The shard writers, re-exported (tests import them from here); BATCH_ROWS is read from this module at each
# call, so that setting it here takes effect.
from pipelines.shard_files import BATCH_ROWS, plan_shards, to_arrow, verify_split, write_shard, write_split  # noqa: F401

MIB = 1 << 20
MAX_SHARD_MB = float(1 << 20)  # --shard-max-mb above 1 TiB (or inf) is refused


# --------------------------------------------------------------------------- names


def _size_tag(n: int) -> str:
    for div, suffix in ((1_000_000, "m"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def _source_tag(raw: dict, task: Task) -> str:
    source = raw.get("source", "unknown")
    if source == "hf":
        repo = (raw.get("hf_repo") or "sudoku-extreme").split("/")[-1].lower()
        tag = repo.removeprefix(f"{task.name}-")
        return re.sub(r"[^a-z0-9]+", "-", tag).strip("-") or "hf"
    return source if source in task.raw_sources else "custom"


def _add_task_files(manifest: dict, root: Path, input_dir: Path, lineage: dict, task: Task) -> None:
    """The task's files (ARC's identifiers.json), checked and copied into the dataset, their sizes and
    sha256 in the manifest's ``files``, and what they tell the model in its ``encoding``
    (Task.dataset_encoding: ARC's num_puzzle_identifiers)."""
    values = copy_task_files(input_dir, root, lineage, "shard")
    if values:
        manifest["files"] = {name: {"bytes": (root / name).stat().st_size, "sha256": file_sha256(root / name)}
                             for name in values}
        manifest["encoding"].update(task.dataset_encoding(values))


def dataset_names(lineage: dict) -> dict[str, str | None]:
    """{"vanilla": ..., "hint": ... or None}, derived from the params in the lineage."""
    sub = lineage.get("subsample") or {}
    groups = (sub.get("groups") or {}).get("train")
    raw_groups = (sub.get("raw_groups") or sub.get("raw_rows") or {}).get("train")
    size = "full" if groups is None or groups == raw_groups else _size_tag(groups)
    num_aug = ((lineage.get("augment") or {}).get("params") or {}).get("num_aug", 0)
    task = lineage_task(lineage)
    name = f"{task.name}-{_source_tag(lineage.get('raw') or {}, task)}-{size}" + (f"-aug-{num_aug}" if num_aug else "")
    hinted = bool(((lineage.get("hints") or {}).get("params") or {}).get("enabled"))
    return {"vanilla": name, "hint": f"{name}-hint" if hinted else None}


# --------------------------------------------------------------------------- shards


def _even_groups(rows: int, groups: int, task: Task) -> int:
    """Rows per group where the augment stage did not record it: the even share, or 0 (groups vary in size:
    a task whose groups are several originals, ARC's puzzles)."""
    return rows // groups if groups and task.originals_per_group == "one" else 0


def _variant_counts(df: pl.DataFrame) -> dict[str, int]:
    from schemas.examples import VARIANTS

    counts = dict(df.get_column("variant").cast(pl.String).value_counts().iter_rows())
    return {v: int(counts.get(v, 0)) for v in VARIANTS}


# --------------------------------------------------------------------------- command


def vanilla_of(df: pl.DataFrame, task: Task) -> pl.DataFrame:
    """The hint table without its hint rows, ids renumbered (hrm.build.drop_hints): the vanilla dataset."""
    from hrm.build import drop_hints
    from schemas.examples import derived_frame, from_frame

    return derived_frame(drop_hints(from_frame(df, task)), df, task)


@click.command("shard")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data/hints"),
              help="Hints stage output.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/datasets"),
              help="Directory to write the datasets into (replaced as a whole on success).")
@click.option("--shard-max-mb", type=FiniteFloatRange(min=0, min_open=True, max=MAX_SHARD_MB), default=128.0,
              help="Largest shard, in MiB (whole groups per shard).")
@data_settings("shard")
def shard(input_dir: Path, output: Path, shard_max_mb: float) -> None:
    """Write the vanilla (and hint) datasets as Arrow shards with a dataset card and manifest."""
    stage = "shard"
    t_start = time.perf_counter()
    shard_max_mb = float(shard_max_mb)  # `128` in a config file is 128.0 on the command line: one manifest
    check_dirs(stage, input_dir, output)
    lineage = read_lineage(input_dir, stage)
    task = lineage_task(lineage)
    names = dataset_names(lineage)
    max_bytes = int(shard_max_mb * MIB)
    splits = tables_of(lineage)  # train, test (and train_vanilla)
    files = [f"{split}{EXAMPLES_SUFFIX}" for split in splits]
    for name in files:  # the bytes the hints stage recorded in lineage.json, before any is used
        verify_table(input_dir / name, lineage, stage)
    inputs = input_records(input_dir, files)
    per_group = {split: rows_per_group(lineage, split) for split in splits}
    # The tables read, and the vanilla table or the shards' Arrow batches built from them.
    check_tables_memory(stage, [input_dir / name for name in files], 2, ["the augment stage's --num-aug"])
    tables = {split: read_examples(input_dir / name, per_group[split], stage, task)
              for split, name in zip(splits, files)}
    for split, name in zip(splits, files):
        require_rows(tables[split].height, input_dir / name, stage)
    if VANILLA_TRAIN in tables and not names["hint"]:
        log(stage, f"hints are disabled: the one dataset is the train draw; {input_dir / files[-1]} "
                   "(the independent vanilla draw) is not used")

    sub = lineage.get("subsample") or {}
    params = {
        "seed": (sub.get("params") or {}).get("seed"),
        "subsample_size": (sub.get("params") or {}).get("subsample_size"),
        "test_size": (sub.get("params") or {}).get("test_size"),
        "num_aug": ((lineage.get("augment") or {}).get("params") or {}).get("num_aug"),
        "hints": names["hint"] is not None,
        "vanilla_draw": (sub.get("params") or {}).get("vanilla_draw", "coupled"),
        "shard_max_mb": shard_max_mb,
    }
    test_capped = (sub.get("groups") or {}).get("test") != (sub.get("raw_groups") or sub.get("raw_rows") or {}).get("test")

    with atomic_output(output, stage=stage) as tmp:
        tmp.mkdir(parents=True)
        kinds = [("hint", names["hint"])] if names["hint"] else []
        kinds.append(("vanilla", names["vanilla"]))
        manifests = {}
        for kind, name in kinds:
            t0 = time.perf_counter()
            root = tmp / name
            manifest = new_manifest(name=name, kind=kind, record_batch_rows=BATCH_ROWS, shard_max_bytes=max_bytes,
                                    params=params, source=lineage.get("raw") or {}, inputs=inputs, lineage=lineage,
                                    test_capped=test_capped, task=task)
            root.mkdir(parents=True)
            _add_task_files(manifest, root, input_dir, lineage, task)
            for split in SPLITS:
                df = tables[split]
                per = per_group[split]
                if kind == "vanilla" and names["hint"] and split == "train":
                    if VANILLA_TRAIN in tables:  # its own draw of puzzles and symmetries
                        df, per = tables[VANILLA_TRAIN], per_group[VANILLA_TRAIN]
                    else:
                        df = vanilla_of(df, task)
                        per = None if per is None else per // 2
                shown = str(output / name / split)
                entries = write_split(df, split, root, max_bytes, shown, task, BATCH_ROWS)
                verify_split(entries, root, per, shown, task)
                groups = int(df.get_column("group_id").n_unique()) if df.height else 0
                manifest["splits"][split] = split_entry(
                    rows=df.height, groups=groups,
                    rows_per_group=per if per is not None else _even_groups(df.height, groups, task),
                    variants=_variant_counts(df), shards=entries)
                size = sum(e["bytes"] for e in entries)
                log(stage, f"wrote {shown}: {df.height:,} rows in {len(entries)} shard(s), {human_bytes(size)}")
            write_json(root / MANIFEST, manifest)
            (root / CARD).write_text(dataset_card(manifest))
            manifests[kind] = manifest
            log(stage, f"wrote {output / name} ({kind}) in {time.perf_counter() - t0:.1f} s")
        write_json(tmp / DATASETS_INDEX, names)
        # Loading the root: one config per dataset, vanilla first; no default, so never the two merged.
        (tmp / CARD).write_text(root_card([manifests[k] for k in ("vanilla", "hint") if k in manifests]))
    log(stage, f"wrote {output} in {time.perf_counter() - t_start:.1f} s")
