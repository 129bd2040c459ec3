"""Checkpoint I/O in the official format (docs/reference-semantics.md §8).

A checkpoint is a file holding ``torch.save(model.state_dict())`` of the
loss-head-wrapped model (keys ``model.inner....``, or ``_orig_mod.model.inner....``
when saved from a ``torch.compile``d model), with ``all_config.yaml`` in the same
folder. That YAML's ``arch`` block gives the architecture with the official
names. The official code takes seq_len, vocab_size and num_puzzle_identifiers
from the dataset, not the arch block; when they are absent they are read from
the tensor shapes where possible (with RoPE no tensor holds seq_len: the vocabulary
names the task, hrm.tasks, and so its seq_len: 6 tokens a maze of 900 cells), else
default to Sudoku's 81 / 11 / 1.

Integrity (hrm/integrity.py): every file this package saves (``step_N``, ``all_config.yaml``, and
through :func:`write_verified` any other, e.g. a training state) gets a sidecar ``NAME.sha256``
(``sha256sum`` format), written before the file itself is renamed into place. The weights and the
config are read once, checked against it, and exactly those bytes are used; a mismatch is a
CheckpointError naming the file and both hashes. A verified ``step_N`` needs a verified
``all_config.yaml`` (halt steps and cycles change every figure). An official checkpoint has no
sidecar at all: it loads with a one-line note saying it is unverified; brought in by `hrm checkpoint
fetch` / `import` (pipelines/checkpoint.py) it has sidecars and a ``provenance.json`` (:func:`read_provenance`).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml

from hrm.integrity import (HASH_SUFFIX, IntegrityError, atomic_write, hash_file, read_verified,  # noqa: F401 - re-exported
                           recorded_sha256, write_verified)
from hrm.manifest import DatasetIdentity
from hrm.model.coupling import TRAINED_ON, CheckpointDataset, dataset_mismatch, dataset_note, trained_on_problem
from hrm.model.act import RecurrentModel
from hrm.model.device import resolve_device
from hrm.model.registry import UnknownArchitecture, architecture_for, architecture_of, architecture_of_arch
from hrm.tasks import TASKS

CONFIG_NAME = "all_config.yaml"
# Beside the step_N of published weights brought in by `hrm checkpoint fetch` / `import` (docs/weights.md):
# where they came from, with a sidecar as every file here.
PROVENANCE_NAME = "provenance.json"
COMPILE_PREFIX = "_orig_mod."


class CheckpointError(IntegrityError):
    """A checkpoint that cannot be used as asked; the message names the file and what is wrong."""


_STEP_FILE = re.compile(r"step_(\d+)")


def step_files(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """The ``step_N`` files in ``directory`` as (N, path), oldest first ([] if no such folder)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), f) for f in directory.iterdir() if f.is_file() and (m := _STEP_FILE.fullmatch(f.name)))


def _checkpoint_file(path: str | os.PathLike) -> Path:
    """The file itself, or for a folder its ``step_N`` file with the largest N."""
    p = Path(path)
    if p.is_dir():
        steps = step_files(p)
        if not steps:
            raise CheckpointError(f"{p} is a folder without step_N checkpoint files; pass the checkpoint file itself")
        return steps[-1][1]
    if not p.exists():
        raise CheckpointError(f"checkpoint file not found: {p}")
    return p


def _note_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _read_checked(path: Path) -> tuple[bytes, bool]:
    """:func:`read_verified`, its refusal a CheckpointError."""
    try:
        return read_verified(path)
    except IntegrityError as e:
        raise CheckpointError(str(e)) from None


def read_state_dict(path: str | os.PathLike, note: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict (weights_only) onto the CPU, verified against ``NAME.sha256`` (a file without
    one: ``note`` says it is unverified, default stderr), and normalise its keys to ``model.inner....``."""
    return _read_state(Path(path), note)[0]


def _read_state(p: Path, note: Callable[[str], None] | None) -> tuple[dict[str, torch.Tensor], bool]:
    """:func:`read_state_dict`, and whether the bytes were verified."""
    data, verified = _read_checked(p)
    if not verified:
        (note or _note_stderr)(f"{p}: no {hash_file(p).name} beside it (e.g. an official checkpoint): loaded unverified")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{p} does not hold a state dict (a mapping of names to tensors)")
    return normalise_keys(obj), verified


def normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a ``_orig_mod.`` (torch.compile) prefix; add ``model.`` to keys of a bare ACT model."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix(COMPILE_PREFIX)
        if k.startswith("inner."):
            k = "model." + k
        out[k] = v
    return out


def read_provenance(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record beside the checkpoint file ``checkpoint`` (None when there is none), from bytes
    checked against its ``provenance.json.sha256``; one without its sidecar, or not a JSON object, is a
    CheckpointError."""
    path = Path(checkpoint).parent / PROVENANCE_NAME
    if not path.is_file():
        return None
    data, verified = _read_checked(path)
    if not verified:
        raise CheckpointError(f"{path}: no {hash_file(path).name} beside it: the record of where these weights "
                              f"came from cannot be verified (fetch or import them again)")
    try:
        record = json.loads(data)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return record


def read_config(checkpoint: str | os.PathLike, weights_verified: bool = False) -> dict[str, Any]:
    """The parsed ``all_config.yaml`` beside ``checkpoint``, from bytes checked against its
    ``all_config.yaml.sha256``. Beside verified weights (``weights_verified``) the config must have
    one too: without it, an edited config would change every figure of a verified model."""
    cfg_path = Path(checkpoint).parent / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"no {CONFIG_NAME} beside checkpoint {checkpoint}: expected {cfg_path}")
    data, verified = _read_checked(cfg_path)
    if weights_verified and not verified:
        raise CheckpointError(f"{cfg_path}: no {hash_file(cfg_path).name} beside it, while {Path(checkpoint).name} "
                              f"is verified: the config cannot be verified (retrain with `hrm train`, which records "
                              f"it; or, having checked it by hand, record it: `sha256sum {CONFIG_NAME} > "
                              f"{hash_file(cfg_path).name}` in {cfg_path.parent})")
    try:
        cfg = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_path} is not valid YAML: {e}") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), dict):
        raise CheckpointError(f"{cfg_path} has no 'arch' block")
    return cfg


def config_from_files(all_config: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str = "all_config.yaml") -> tuple[Any, str]:
    """The architecture's config and the loss type from an all_config mapping, filling data-derived sizes from
    tensor shapes (the architecture's :meth:`~hrm.model.base.Architecture.sizes_from_state`) and the task."""
    arch = dict(all_config["arch"])
    try:
        architecture = architecture_of_arch(arch)  # no arch.name: HRM (hrm.model.registry.DEFAULT_ARCH_NAME)
    except UnknownArchitecture as e:
        raise CheckpointError(f"{source}: {e}") from None
    loss = arch.get("loss") or {}
    loss_type = loss.get("loss_type", "stablemax_cross_entropy") if isinstance(loss, Mapping) else "stablemax_cross_entropy"

    arch = architecture.sizes_from_state(arch, state)
    if "seq_len" not in arch:  # the official code takes it from the dataset: the one task of this vocabulary
        tasks = [t for t in TASKS.values() if t.vocab_size == arch.get("vocab_size")]
        if len({t.seq_len for t in tasks}) != 1:  # no task, or tasks of this vocabulary that differ in length
            named = " and ".join(t.name for t in tasks) or "no task"
            raise CheckpointError(
                f"{source}: the arch block gives no seq_len, and vocab_size {arch.get('vocab_size')} is that of "
                f"{named} ({', '.join(f'{t.name} {t.vocab_size}' for t in TASKS.values())}): add the dataset's "
                f"seq_len to the arch block")
        arch["seq_len"] = tasks[0].seq_len
    arch.setdefault("num_puzzle_identifiers", 1)  # no puzzle embedding in the state: the one blank identifier
    if "batch_size" not in arch:
        arch["batch_size"] = int(all_config.get("global_batch_size", 1))
    try:
        return architecture.config_from_checkpoint(arch), loss_type
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from e


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one CheckpointError listing every missing / unexpected key and every shape mismatch."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or mismatched):
        return
    # The architecture named: weights of another one (an HRM state under a TRM arch.name) fail here.
    lines = [f"checkpoint {source} does not match the {architecture_of(model).name} model built from its config:"]
    lines += [f"  missing key: {k} (expected shape {list(expected[k])})" for k in missing]
    lines += [f"  unexpected key: {k} (shape {list(found[k])})" for k in unexpected]
    lines += [f"  shape mismatch: {k}: expected {list(expected[k])}, found {list(found[k])}" for k in mismatched]
    lines.append("Check that all_config.yaml beside the checkpoint belongs to it (arch block: hidden_size, layers, num_heads, expansion, puzzle_emb_ndim, pos_encodings).")
    raise CheckpointError("\n".join(lines))


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Every weight is a finite number; NaN or inf (a run that diverged) is a CheckpointError naming the tensors."""
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f", ... ({len(bad)} in all)" if len(bad) > 3 else "")
        raise CheckpointError(f"{source}: weights that are NaN or inf in {shown}; the run diverged before this "
                              "checkpoint: use an earlier step_N")


def check_trained_on(file: Path, all_config: Mapping[str, Any], rows: int, dataset: DatasetIdentity,
                     note: Callable[[str], None]) -> None:
    """``file`` (its all_config mapping; a puzzle-embedding table of ``rows`` rows) runs on ``dataset``, or one
    CheckpointError says why not (hrm.model.coupling)."""
    config = file.parent / CONFIG_NAME
    if problem := trained_on_problem(all_config, config):
        raise CheckpointError(problem)
    ckpt = CheckpointDataset(file=file, config=config, rows=rows, record=all_config.get(TRAINED_ON))
    if why := dataset_mismatch(ckpt, dataset):
        raise CheckpointError(why)
    if said := dataset_note(ckpt, dataset):
        note(said)


def load_checkpoint(
    path: str | os.PathLike,
    device: torch.device | str | None = "auto",
    forward_dtype: str | None = None,
    config: Any | None = None,
    note: Callable[[str], None] | None = None,
    dataset: DatasetIdentity | None = None,
) -> RecurrentModel:
    """Load a checkpoint (ours or the official code's) of any registered architecture (arch.name of its
    all_config.yaml; HRM's -> :class:`~hrm.model.hrm.HRM`) in eval mode on ``device``.

    ``path``: the checkpoint file (or a folder: its latest ``step_N``).
    ``device``: "auto"/None -> cuda, else mps, else cpu.
    ``forward_dtype``: override the config's activation dtype ("float32" or "bfloat16").
    ``config``: use this config instead of reading all_config.yaml.
    ``note``: where the one-line note for a checkpoint without ``NAME.sha256`` goes (default stderr);
    a checkpoint whose bytes do not match its sha256 is a CheckpointError.
    ``dataset``: the dataset the model is for (hrm.manifest.dataset_identity): a checkpoint trained on another
    build is a CheckpointError before the model is built (hrm.model.coupling); a note where it cannot be checked.
    """
    file = _checkpoint_file(path)
    state, verified = _read_state(file, note)
    all_config: Mapping[str, Any] = {}
    if config is None:
        cfg_file = file.parent / CONFIG_NAME
        all_config = read_config(file, verified)
        config, loss_type = config_from_files(all_config, state, source=str(cfg_file))
    else:
        loss_type = "stablemax_cross_entropy"
    if dataset is not None:
        check_trained_on(file, all_config, config.num_puzzle_identifiers, dataset, note or _note_stderr)
    architecture = architecture_for(config)
    if forward_dtype is not None:
        config = architecture.config_from_dict({**architecture.config_to_dict(config), "forward_dtype": forward_dtype})

    with torch.device("cpu"):
        model = architecture.build(config, loss_type=loss_type)
    check_state_dict(model, state, source=str(file))
    check_finite(state, source=str(file))
    model.load_state_dict(state, strict=True)
    return model.to(resolve_device(device)).eval()


def save_checkpoint(model: RecurrentModel, path: str | os.PathLike, extra_config: Mapping[str, Any] | None = None) -> Path:
    """Save ``model``'s state dict to ``path`` (official format) and all_config.yaml beside it, each atomically
    with its ``NAME.sha256``.

    The YAML holds ``extra_config`` (e.g. the run's training params) plus the ``arch`` block.
    """
    path = Path(path)
    model = getattr(model, "_orig_mod", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_verified(path, lambda tmp: torch.save(state, tmp))

    cfg = dict(extra_config or {})
    cfg["arch"] = model.arch_dict()
    write_verified(path.parent / CONFIG_NAME, lambda tmp: tmp.write_text(yaml.safe_dump(cfg, sort_keys=False)))
    return path
