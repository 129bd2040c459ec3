"""A checkpoint and the dataset it is evaluated on (issue 28, item 4; docs/reliability.md, "A checkpoint
runs only on the dataset build it was trained on").

A model's puzzle-embedding table has one row per puzzle identifier of the dataset build it was trained
on, and identifier i stands for that build's i-th puzzle (for ARC, one augmented version of one puzzle).
The official ARC-2 checkpoint fails with a shape traceback on a rebuilt dataset (HRM issues #2 and #90:
1,045,829 vs 1,921,253 rows). :func:`hrm.model.load_checkpoint` with a ``dataset`` checks, before the
model is built:

- the table's rows (the arch block's ``num_puzzle_identifiers``, else the official state's table shape)
  must be the dataset's identifier count, else :func:`dataset_mismatch` says why, naming both files and counts;
- a checkpoint that records its dataset (all_config.yaml ``trained_on``, written by ``hrm train``: a
  :class:`hrm.manifest.DatasetIdentity`) on a dataset of another manifest sha256 and more than one
  identifier is refused too: the same count, but the identifiers may name other puzzles. With one
  identifier (the blank: Sudoku's and the mazes' datasets) nothing can disagree: :func:`dataset_note` says so;
- without a record (a checkpoint written before it, an official one) only the count is checked, and
  :func:`dataset_note` says the rest cannot be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hrm.manifest import DatasetIdentity, TrainedOnRecord, schema_problems

TRAINED_ON = "trained_on"  # the key of all_config.yaml holding the record


@dataclass(frozen=True)
class CheckpointDataset:
    """What a checkpoint says of the dataset it was trained on: its ``file`` (step_N) and ``config``
    (all_config.yaml), its puzzle-embedding table's ``rows``, and the ``record`` (``trained_on``; None without one)."""

    file: Path
    config: Path
    rows: int
    record: Mapping[str, Any] | None


def trained_on_problem(all_config: Mapping[str, Any], source: Path) -> str | None:
    """A ``trained_on`` record of the wrong shape: one message naming the file and the key; None when it is
    well-formed or absent."""
    if all_config.get(TRAINED_ON) is None:
        return None
    problems = schema_problems(TrainedOnRecord, all_config[TRAINED_ON], TRAINED_ON)
    return f"{source}: {problems[0]}" if problems else None


def _short(sha256: str) -> str:
    return sha256[:12]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _trained_on(ckpt: CheckpointDataset) -> str:
    if ckpt.record is None:
        return f"no {TRAINED_ON} record in {ckpt.config} names it"
    return f"{ckpt.record.get('name')}, manifest sha256 {_short(ckpt.record['manifest_sha256'])}, as {ckpt.config} records"


def _what_to_do(ckpt: CheckpointDataset) -> str:
    if ckpt.record is None:
        return (f"Use the dataset build it was trained on, with {_count(ckpt.rows, 'puzzle identifier')} (for an "
                f"official checkpoint: the official builder's dataset of the same version and settings, e.g. num_aug)")
    return (f"Use the build it names: the dataset whose manifest.json has sha256 {_short(ckpt.record['manifest_sha256'])} "
            f"(`hrm registry list` names the version a model needs), or rebuild {ckpt.record.get('name')} with the "
            f"params that build was made with")


def dataset_mismatch(ckpt: CheckpointDataset, dataset: DatasetIdentity) -> str | None:
    """Why the checkpoint must not run on ``dataset``; None when it may."""
    theirs = f"{dataset.manifest} (manifest sha256 {_short(dataset.manifest_sha256)})"
    if ckpt.rows != dataset.num_puzzle_identifiers:
        return (f"{ckpt.file}: its puzzle-embedding table has {_count(ckpt.rows, 'row')}, one per puzzle identifier of "
                f"the dataset it was trained on ({_trained_on(ckpt)}); {theirs} has {dataset.num_puzzle_identifiers}: "
                f"another build. {_what_to_do(ckpt)}")
    if ckpt.record is None or ckpt.record["manifest_sha256"] == dataset.manifest_sha256 or ckpt.rows == 1:
        return None
    return (f"{ckpt.file}: trained on {_trained_on(ckpt)}; {theirs} is another build of the same size "
            f"({ckpt.rows} puzzle identifiers): an identifier may stand for another puzzle there, and the model would "
            f"apply the embedding it learned for the first. {_what_to_do(ckpt)}")


def dataset_note(ckpt: CheckpointDataset, dataset: DatasetIdentity) -> str | None:
    """The one line to print when the checkpoint runs on ``dataset`` without a full check (:func:`dataset_mismatch`
    None); None after a full check."""
    if ckpt.record is None:
        return (f"{ckpt.config}: no {TRAINED_ON} record (written before it, or an official checkpoint): the dataset "
                f"{ckpt.file.name} was trained on cannot be checked, only its "
                f"{_count(ckpt.rows, 'puzzle identifier')} against {dataset.manifest}")
    if ckpt.record["manifest_sha256"] != dataset.manifest_sha256:
        return (f"{ckpt.file} was trained on {ckpt.record.get('name')} (manifest sha256 "
                f"{_short(ckpt.record['manifest_sha256'])}); {dataset.manifest} is another build (manifest sha256 "
                f"{_short(dataset.manifest_sha256)}) whose one puzzle identifier is the blank, as the model's: used as it is")
    return None
