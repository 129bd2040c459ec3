"""The inputs of the stages that run a trained model (evaluate, analyze): checkpoints and a split.

Which ``step_N`` files a path names, loading them for a task's encoding (Sudoku's, or the mazes'
that a maze dataset's manifest names), opening the split and checking its encoding against the
model, each failure one clear message naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hrm.tasks import Task
from pipelines.io import StageError


def resolve_checkpoints(paths: Sequence[Path], last: int) -> list[Path]:
    """Checkpoint files, in order: a file as it is; a directory -> its last ``last`` step_N files
    (ascending), looking in DIR and then DIR/checkpoints (the train stage's layout)."""
    from hrm.model import step_files

    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise StageError(f"{p}: checkpoint not found (train one with `dvc repro train` or `hrm train`, "
                             f"or pass an official step_N file with all_config.yaml beside it)")
        if p.is_file():
            files.append(p)
            continue
        steps = step_files(p)
        if not steps and (p / "checkpoints").is_dir():
            steps = step_files(p / "checkpoints")
        if not steps:
            raise StageError(f"{p}: a directory without step_N checkpoint files (nor in {p / 'checkpoints'}); "
                             f"pass a checkpoint file or a training run directory")
        files.extend(f for _, f in steps[-last:])
    return files


def checkpoint_names(files: Sequence[Path]) -> list[str]:
    """Short unique names: the file name, else parent/file, else with an index."""
    names = [f.name for f in files]
    if len(set(names)) < len(names):
        names = [f"{f.parent.name}/{f.name}" for f in files]
    if len(set(names)) < len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return names


def checkpoint_provenance(files: Sequence[Path]) -> dict:
    """``{"provenance": {file: record}}`` for the checkpoint files brought in by `hrm checkpoint fetch` /
    `import` (their provenance.json, verified: hrm.model.checkpoint.read_provenance), for run.json; ``{}``
    when none was (a trained model's run.json is as it was)."""
    from hrm.model.checkpoint import CheckpointError, read_provenance

    found = {}
    for f in files:
        try:
            record = read_provenance(f)
        except CheckpointError as e:
            raise StageError(str(e)) from None
        if record is not None:
            found[str(f)] = record
    return {"provenance": found} if found else {}


def load_task_model(file: Path, device, forward_dtype: str | None, task: Task, dataset=None):
    """Load one checkpoint (weights_only) for the encoding of ``task``; ``forward_dtype`` None keeps the
    checkpoint's own. ``dataset``: the split it runs on (hrm.data.PuzzleDataset): a checkpoint trained on
    another build of it is refused before the model is built (hrm.model.coupling). Every failure is a
    StageError naming the file."""
    from hrm.manifest import dataset_identity
    from hrm.model import CheckpointError, load_checkpoint

    identity = None if dataset is None else dataset_identity(dataset.dataset_dir, dataset.manifest)
    try:
        model = load_checkpoint(file, device=device, forward_dtype=forward_dtype, dataset=identity)
    except CheckpointError as e:
        raise StageError(str(e)) from None
    except (RuntimeError, AssertionError) as e:  # e.g. out of device memory
        raise StageError(f"{file}: cannot load on {device} ({type(e).__name__}: {e})") from None
    c, t = model.config, task
    if (c.seq_len, c.vocab_size) != (t.seq_len, t.vocab_size):
        raise StageError(
            f"{file}: the model expects seq_len {c.seq_len} and vocab_size {c.vocab_size}; {t.words['model_needs']}"
            f" needs seq_len {t.seq_len}, vocab_size {t.vocab_size} (from {file.parent / 'all_config.yaml'} or "
            f"the tensor shapes)")
    return model


def check_dataset_encoding(ds, model_file: Path, model_cfg) -> None:
    """The dataset's manifest ``encoding`` (when it has one) must match the model's seq_len / vocab_size."""
    enc = ds.manifest.get("encoding") if isinstance(ds.manifest, dict) else None
    if not isinstance(enc, dict):
        return
    for key in ("seq_len", "vocab_size"):
        if key in enc and int(enc[key]) != int(getattr(model_cfg, key)):
            raise StageError(f"{ds.dataset_dir / 'manifest.json'}: the dataset's encoding has {key} {enc[key]}, but "
                             f"{model_file} expects {key} {getattr(model_cfg, key)}; use a checkpoint trained on "
                             f"this encoding")


def open_split(dataset: Path, variant: str, split: str):
    """The ``split`` of a dataset directory, or of the ``variant`` of the shard stage's output root."""
    from hrm.data import DatasetError, PuzzleDataset
    from pipelines.datasets import resolve_dataset

    dataset_dir = resolve_dataset(dataset, variant)
    try:
        return PuzzleDataset(dataset_dir, split)
    except DatasetError as e:
        raise StageError(str(e)) from None
