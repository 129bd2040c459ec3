"""Recorded sha256 of a file: ``NAME.sha256`` beside ``NAME`` (``sha256sum`` format, ``sha256sum -c`` reads it).

The one home of the record for every file the project writes and reads back whole: checkpoints
(``step_N``, ``all_config.yaml``), the training state and a job's units (hrm.model.checkpoint,
pipelines/job.py); and the one sha256 of a file (:func:`file_sha256`). No torch here, so the
dataset stages stay light.

:func:`write_verified` writes a file and its record (the record first, so a kill in between
leaves a record that does not match, which is refused, never an unverified file that looks
verified); :func:`record_sha256` records a file already written; :func:`read_verified` reads the
bytes once and checks them; :func:`recorded_sha256` is the record itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable

from hrm.resources import disk_full

HASH_SUFFIX = ".sha256"  # step_N -> step_N.sha256: "HEX  step_N"
_HEX = re.compile(r"[0-9a-f]{64}")


class IntegrityError(ValueError):
    """Bytes that do not match their recorded sha256, or a record that cannot be read; names the file."""


def hash_file(path: str | os.PathLike) -> Path:
    """The sidecar holding ``path``'s sha256: ``NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + HASH_SUFFIX)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file, read in chunks with read(), not mmap: the hashed pages do not stay in
    the process's resident memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded for ``path`` in its sidecar; None when there is none. A sidecar that
    does not hold one 64-digit hex hash is an IntegrityError."""
    side = hash_file(path)
    if not side.is_file():
        return None
    try:
        text = side.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{side}: cannot read the recorded sha256 of {Path(path).name} ({e})") from e
    digest = text.split()[0].lower() if text.split() else ""
    if not _HEX.fullmatch(digest):
        raise IntegrityError(f"{side}: does not hold a sha256 (64 hex digits) of {Path(path).name}; "
                             f"the file cannot be verified")
    return digest


def mismatch(path: Path, want: str, got: str, record: str | None = None) -> IntegrityError:
    """The one message for bytes that differ from their record: the file and both hashes."""
    return IntegrityError(f"{path}: content does not match its recorded sha256 (corrupt or modified): "
                          f"{record or hash_file(path).name} records {want}, the file has {got}")


def read_verified(path: str | os.PathLike) -> tuple[bytes, bool]:
    """``path``'s bytes, checked against its sidecar: (bytes, True); (bytes, False) when it has no
    sidecar (e.g. an official checkpoint). A mismatch is an IntegrityError naming the file and both
    hashes. The caller uses these bytes, never a second read of the file."""
    p = Path(path)
    want = recorded_sha256(p)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise IntegrityError(f"{p}: cannot read ({e})") from e
    if want is None:
        return data, False
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise mismatch(p, want, got)
    return data, True


def read_recorded(path: str | os.PathLike, want: str | None, record: str) -> bytes:
    """``path``'s bytes, checked against ``want``, the sha256 that ``record`` (a file and its key) holds
    for it: a mismatch, a missing record or an unreadable file is an IntegrityError naming the file. The
    caller uses these bytes, never a second read of the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise IntegrityError(f"{p}: cannot read ({e})") from e
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise mismatch(p, want or "no sha256", got, record)
    return data


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary beside ``path``, then rename it onto ``path``: a reader sees the old file or the new one.

    The temporary is ``NAME.tmp-PID``: torch.save names its zip archive after the file's stem
    (``step_312.tmp-7`` -> ``step_312/``), so the saved bytes are those of a direct save to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, Exception) and not isinstance(exc, OSError) and disk_full(path.parent)
        tmp.unlink(missing_ok=True)
        if full:  # torch.save says "unexpected pos", not ENOSPC: name the cause while the disk is still full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    return path


def _write_record(path: Path, digest: str) -> None:
    atomic_write(hash_file(path), lambda t: t.write_text(f"{digest}  {path.name}\n"))


def record_sha256(path: str | os.PathLike) -> str:
    """Record the sha256 of the file ``path`` (already written) in ``NAME.sha256``; returns it."""
    digest = file_sha256(path)
    _write_record(Path(path), digest)
    return digest


def write_verified(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """:func:`atomic_write` that also records the written bytes' sha256 in ``NAME.sha256`` (itself
    written atomically, before the file is renamed into place: a kill in between leaves a sidecar that
    does not match, which :func:`read_verified` refuses, never an unverified file that looks verified)."""
    path = Path(path)

    def write_and_hash(tmp: Path) -> None:
        write(tmp)
        _write_record(path, file_sha256(tmp))

    return atomic_write(path, write_and_hash)
