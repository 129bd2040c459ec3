"""Atomic outputs: a stage writes a temporary beside its output and puts it in place only on success
(:func:`atomic_output`), so a failed, interrupted or killed run leaves the previous output as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from pipelines.io import StageError, check_interrupted, output_error
from pipelines.output_records import _DVC_FILES, claim_output, write_record


def _temp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_leftovers(final: Path) -> list[Path]:
    """Remove the temporaries of ``final`` (``.NAME.tmp-PID-XXXXXXXX``) left by runs that were killed; returns them."""
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.tmp-(\d+)-[0-9a-f]{{8}}$")
    gone = []
    if final.parent.is_dir():
        for p in final.parent.iterdir():
            m = pattern.match(p.name)
            if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                _remove(p)
                gone.append(p)
    return gone


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike, *, stage: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; put it in place of ``final`` only on success.

    Works for files and directories. On any failure (Ctrl-C included) the temporary path is
    removed and whatever was at ``final`` before stays untouched. A directory replaces an
    existing one in a single exchange, so at every instant the complete old or the complete
    new output is at ``final``. ``stage``: a directory output is `hrm stage`'s; it gets a record of
    its files (:func:`write_record`) and replaces an existing folder only when :func:`claim_output`
    finds it the stage's own. Temporaries of killed runs are removed first.
    """
    final = Path(final)
    if final.is_dir():
        if stage is None:
            raise StageError(f"{final}: is a folder; refusing to replace it")
        claim_output(final, stage)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        check_interrupted()  # a Ctrl-C that Python dropped: the new output is not put in place
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for {final}")
        if tmp.is_dir() and stage is not None:
            write_record(tmp, stage)
        _put_in_place(tmp, final, stage)
    except BaseException as exc:
        failure = output_error(exc, final, tmp)  # before the temporary goes: a full disk is seen while full
        _remove(tmp)
        if failure is not None:
            raise failure from None
        raise


def _put_in_place(tmp: Path, final: Path, stage: str | None) -> None:
    """Rename ``tmp`` to ``final``; a folder already there (also one that another process put there while
    this one ran: the concurrent winner) is claimed again, then exchanged with it in one step."""
    if not (tmp.is_dir() and final.exists()):
        try:
            os.replace(tmp, final)
            return
        except OSError as e:
            if not (tmp.is_dir() and e.errno in (errno.ENOTEMPTY, errno.EEXIST) and final.is_dir()):
                raise
    if stage is not None:
        claim_output(final, stage)  # again: something may have appeared while the stage ran
    for dvc_file in final.rglob(".gitignore"):  # DVC's files stay
        kept = tmp / dvc_file.relative_to(final)
        if dvc_file.name in _DVC_FILES and dvc_file.is_file() and kept.parent.is_dir() and not kept.exists():
            shutil.copy2(dvc_file, kept)
    if _exchange(tmp, final):
        _remove(tmp)  # the old output, now at the temporary's name
    else:  # a directory cannot be renamed over a non-empty one: move the old one aside first
        old = _temp_sibling(final)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
