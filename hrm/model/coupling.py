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

from pathlib import Path
from typing import Any, Mapping

from hrm.manifest import DatasetIdentity, TrainedOnRecord, schema_problems

TRAINED_ON = "trained_on"  # the key of all_config.yaml holding the record
CONFIG_NAME = "all_config.yaml"


def trained_on_problem(all_config: Mapping[str, Any], source: str) -> str | None:
    """A ``trained_on`` record of the wrong shape: one message naming the file and the key; None when it is
    well-formed or absent."""
    if all_config.get(TRAINED_ON) is None:
        return None
    problems = schema_problems(TrainedOnRecord, all_config[TRAINED_ON], TRAINED_ON)
    return f"{source}: {problems[0]}" if problems else None


def _short(sha256: str) -> str:
    return sha256[:12]


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _trained_on(checkpoint: Path, record: Mapping[str, Any] | None) -> str:
    if record is None:
        return f"no {TRAINED_ON} record in {checkpoint.parent / CONFIG_NAME} names it"
    return (f"{record.get('name')}, manifest sha256 {_short(record['manifest_sha256'])}, as "
            f"{checkpoint.parent / CONFIG_NAME} records")


def _what_to_do(record: Mapping[str, Any] | None, rows: int) -> str:
    if record is None:
        return (f"Use the dataset build it was trained on, with {rows} puzzle identifiers (for an official "
                f"checkpoint: the official builder's dataset of the same version and settings, e.g. num_aug)")
    return (f"Use the build it names: point --dataset at the dataset whose manifest.json has sha256 "
            f"{_short(record['manifest_sha256'])} (`hrm registry list` names the version a model needs), or rebuild "
            f"{record.get('name')} with the params that build was made with")


def dataset_mismatch(checkpoint: Path, rows: int, record: Mapping[str, Any] | None, dataset: DatasetIdentity) -> str | None:
    """Why ``checkpoint`` (a puzzle-embedding table of ``rows`` rows; ``record``: its ``trained_on``) must not run
    on ``dataset``; None when it may."""
    theirs = f"{dataset.manifest} (manifest sha256 {_short(dataset.manifest_sha256)})"
    if rows != dataset.num_puzzle_identifiers:
        return (f"{checkpoint}: its puzzle-embedding table has {_rows(rows)}, one per puzzle identifier of the dataset "
                f"it was trained on ({_trained_on(checkpoint, record)}); {theirs} has "
                f"{dataset.num_puzzle_identifiers}: another build. {_what_to_do(record, rows)}")
    if record is None or record["manifest_sha256"] == dataset.manifest_sha256 or rows == 1:
        return None
    return (f"{checkpoint}: trained on {_trained_on(checkpoint, record)}; {theirs} is another build of the same size "
            f"({rows} puzzle identifiers): an identifier may stand for another puzzle there, and the model would apply "
            f"the embedding it learned for the first. {_what_to_do(record, rows)}")


def dataset_note(checkpoint: Path, rows: int, record: Mapping[str, Any] | None, dataset: DatasetIdentity) -> str | None:
    """The one line to print when ``checkpoint`` runs on ``dataset`` without a full check (:func:`dataset_mismatch` None)."""
    if record is None:
        return (f"{checkpoint.parent / CONFIG_NAME}: no {TRAINED_ON} record (written before it, or an official "
                f"checkpoint): the dataset {checkpoint.name} was trained on cannot be checked, only its {rows} puzzle "
                f"identifier(s) against {dataset.manifest}")
    if record["manifest_sha256"] != dataset.manifest_sha256:
        return (f"{checkpoint} was trained on {record.get('name')} (manifest sha256 "
                f"{_short(record['manifest_sha256'])}); {dataset.manifest} is another build (manifest sha256 "
                f"{_short(dataset.manifest_sha256)}) whose one puzzle identifier is the blank, as the model's: used as it is")
    return None
