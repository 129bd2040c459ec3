"""Which command wrote which bytes: the record a stage leaves in its output folder (every file with its
sha256), and the checks made before a stage writes an output: a folder is replaced only by its own
command (:func:`claim_output`), and never where it would change an input (:func:`check_apart`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from hrm.integrity import file_sha256
from pipelines.io import StageError


# DVC writes a .gitignore beside the outputs it tracks one by one: any folder of an output may hold one.
_DVC_FILES = frozenset({".gitignore"})
# The record of what a command wrote in its output folder: the command and every file with its sha256.
RECORD = ".hrm-record.json"
RECORD_FORMAT = 1
# Files whose bytes differ from run to run (timings, W&B's run files): recorded as the command's, without
# a hash, so the record itself is the same for the same outputs (it is committed beside DVC metrics).
_VOLATILE = re.compile(r"(.*/)?run\.json|wandb/.*")


def _output_files(folder: Path) -> list[str]:
    """The files under ``folder`` (relative, posix, sorted) but its record and DVC's files."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name not in _DVC_FILES and p.name != RECORD)


def write_record(folder: Path, stage: str) -> None:
    """Write ``folder``'s record: `hrm stage` wrote every file now in it."""
    files = {rel: None if _VOLATILE.fullmatch(rel) else file_sha256(folder / rel) for rel in _output_files(folder)}
    record = {"format": RECORD_FORMAT, "command": stage, "files": files}
    (folder / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(folder: Path) -> dict | None:
    """``folder``'s record (None when it has none); a record that is not one is refused, naming it."""
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StageError(f"{path}: not a readable record of an hrm output ({e}); move the folder away") from None
    files = record.get("files") if isinstance(record, dict) else None
    well_formed = (isinstance(files, dict) and record.get("format") == RECORD_FORMAT and isinstance(record.get("command"), str)
                   and all(isinstance(k, str) and (v is None or (isinstance(v, str) and len(v) == 64)) for k, v in files.items()))
    if not well_formed:
        raise StageError(f"{path}: not a record of an hrm output (format {RECORD_FORMAT}: command, files and their "
                         "sha256); move the folder away")
    return record


def claim_output(final: str | os.PathLike, stage: str) -> None:
    """Refuse an output folder that holds anything `hrm stage` did not write there itself.

    A folder is the stage's when its record (``RECORD``) names this stage and lists every file in it with
    the bytes it has (files recorded without a hash: the stage's whatever their bytes). Anything else (a
    user's file, a changed file, another command's output, a folder with no record) ends the command with
    one message naming the folder and the files, before any work. An empty folder is free.
    """
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir() or final.is_symlink():
        raise StageError(f"{final}: exists and is not a directory; choose a new --output directory")
    present = _output_files(final)
    record = read_record(final)
    if record is not None and record["command"] != stage:
        raise StageError(f"{final}: holds the output of `hrm {record['command']}` (its record {RECORD}); "
                         f"`hrm {stage}` does not replace it: choose another --output folder")
    recorded = record["files"] if record is not None else {}
    foreign = [rel for rel in present if rel not in recorded]
    changed = [rel for rel in present if recorded.get(rel) is not None and file_sha256(final / rel) != recorded[rel]]
    if foreign or changed:
        shown = ", ".join(_names(foreign) + [f"{rel} (changed since)" for rel in changed][:5])
        raise StageError(f"{final}: refusing to replace this folder: it holds files `hrm {stage}` did not write "
                         f"({shown}); choose an empty or new --output folder, or move them away")


def _names(rels: list[str], most: int = 5) -> list[str]:
    """The top-level entries of ``rels`` (a folder once, with a slash), at most ``most``, then a count."""
    tops = list(dict.fromkeys(rel.split("/", 1)[0] + ("/" if "/" in rel else "") for rel in rels))
    return tops[:most] + ([f"... ({len(tops)} in all)"] if len(tops) > most else [])


def check_apart(output: Path, inputs: list[Path], option: str = "--output") -> None:
    """Refuse an output that is one of the inputs, lies inside one or holds one: writing it would change an
    input, and rebuilding the input (a stage replaces its output as a whole) would delete the output."""
    out = output.resolve()
    for given in inputs:
        inp = Path(given).resolve()
        if out == inp or inp in out.parents or out in inp.parents:
            raise StageError(f"{output}: {option} must not be the input {given}, inside it or above it "
                             "(inputs are never modified, and rebuilding an input replaces it as a whole); "
                             f"choose another {option} folder")
