"""What every command shares: the StageError, option ranges, one message for the system's errors on a
user's path, the stage log and Ctrl-C handling, the memory check made before work that grows with a
setting, sizes as the messages show them, and JSON-ready numbers.

Outputs are in pipelines/output_records.py (which command wrote which bytes: a folder is replaced only
by its own command), pipelines/atomic_replace.py (put in place only on success) and
pipelines/output_lock.py (one writer at a time); tables in pipelines/tables.py. (A file's sha256 is
hrm.manifest.file_sha256: the loader needs it too.)
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import click
import numpy as np

from hrm.resources import disk_full


def json_ready(x: Any, digits: int | None = None) -> Any:
    """NaN / inf -> None, numpy scalars -> Python, recursively (valid JSON for DVC and W&B);
    floats rounded to ``digits`` when given."""
    if isinstance(x, dict):
        return {k: json_ready(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v, digits) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        if digits is not None:
            return round(x, digits)
    return x


class StageError(click.ClickException):
    """An error the user can cause and fix (bad file, missing input): one message, no traceback."""


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses NaN and inf (NaN passes every comparison of a range check,
    inf passes an open-ended one): every float option of the stages is one of these."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Ranges shared by every option and config-file value of a kind (pipelines.settings.file_value checks a
# file's values with the same types). Each upper bound is what the code behind the option can take.
SEED_MAX = 2**32 - 1  # numpy's SeedSequence and torch.manual_seed both take every seed in 0..2**32-1
THREADS_MAX = 1024  # torch.set_num_threads(10**6) ends in MemoryError or a segfault
COUNT_MAX = 2**31 - 1  # rows, puzzles, copies, widths: the examples tables' ids are Int32
SEED = click.IntRange(0, SEED_MAX)
THREADS = click.IntRange(0, THREADS_MAX)  # 0: torch's default


class RegisteredChoice(click.Choice):
    """click.Choice over names read from a registry when a value is checked or the help shown, not when the
    command is defined: a task registered after the CLI was imported (a test's own) is one of the choices."""

    def __init__(self, names: Callable[[], Iterable[str]], case_sensitive: bool = True) -> None:
        self.names, self.case_sensitive = names, case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.names())


def Count(min: int = 0, max: int = COUNT_MAX) -> click.IntRange:  # noqa: A002, N802 (click's own names)
    """The option type of a size or count: an integer in ``min..max`` (at most COUNT_MAX). Whether
    the work it asks for fits in memory is estimated by the stage (:func:`check_memory`)."""
    return click.IntRange(min, max)


# --------------------------------------------------------------------------- errors of the system on the user's paths

# errno -> (what happened, what to do): the errors a user's path can cause (pipelines.cli.main, atomic_output).
PATH_ERRORS = {
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a path whose folders are folders"),
    errno.EEXIST: ("exists and is not a folder", "choose a path whose folders are folders, or move the file away"),
    errno.EISDIR: ("is a folder, not a file", "give a file"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EACCES: ("permission denied", "choose a path you may write (or read), or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may write (or read), or change its permissions"),
    errno.EROFS: ("read-only file system", "choose an --output on a writable file system"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose an --output on another device"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose an --output on another device"),
    errno.EFBIG: ("file too large (the file system's or the process's file size limit)",
                  "raise the limit (ulimit -f) or choose an --output on another file system"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the links in the path"),
}
_ERRNO_TEXT = re.compile(r"os error (\d+)|\[errno (\d+)\]", re.IGNORECASE)  # polars, pyarrow
_TEMP_NAME = re.compile(r"\.([^/]+)\.tmp-\d+-[0-9a-f]{8}")  # atomic_replace._temp_sibling's names


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def os_error_of(exc: BaseException) -> tuple[int, str | None] | None:
    """(errno, path) of the operating-system error behind ``exc``, if any: an OSError in its chain,
    or the ``os error N`` / ``[errno N]`` that polars and pyarrow put in their messages."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno:
            return e.errno, e.filename if isinstance(e.filename, str) else None
        m = _ERRNO_TEXT.search(str(e))
        if m:
            return int(m.group(1) or m.group(2)), None
        if "No space left on device" in str(e):
            return errno.ENOSPC, None
    return None


def user_path(path: str | os.PathLike) -> str:
    """``path`` as the user named it: a temporary of :func:`pipelines.atomic_replace.atomic_output` (``.NAME.tmp-PID-XXXXXXXX``) is ``NAME``."""
    return _TEMP_NAME.sub(r"\1", str(path))


def path_error(exc: BaseException, output: Path | None = None) -> StageError | None:
    """One message for an operating-system error on a user's path (a file where a folder must be, no
    permission, a read-only or full disk, ...), naming the path and what to do; None for any other error.
    ``output``: the output being written, named when the error does not say which path it was."""
    found = os_error_of(exc)
    if found is None or found[0] not in PATH_ERRORS or isinstance(exc, click.ClickException):
        return None
    code, path = found
    if path is None and output is None:
        return None
    what, advice = PATH_ERRORS[code]
    kept = "; the previous output is unchanged" if output is not None and (path is None or _TEMP_NAME.search(path)) else ""
    return StageError(f"{user_path(path or output)}: {what} ({os.strerror(code)}); {advice}{kept}")


def output_error(exc: BaseException, final: Path, tmp: Path) -> StageError | None:
    """What :func:`pipelines.atomic_replace.atomic_output` reports when writing ``final`` failed on a path error; checked before its
    temporary is removed (a full disk is seen while it is full)."""
    if not isinstance(exc, Exception) or isinstance(exc, click.ClickException):
        return None
    if os_error_of(exc) is None and disk_full(tmp.parent):
        return path_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), final)
    return path_error(exc, final)


def log(stage: str, message: str) -> None:
    """``stage: message`` on stderr, from rank 0 only (a torchrun job's other ranks stay quiet).
    Also where a Ctrl-C that Python dropped is raised again (:func:`check_interrupted`)."""
    check_interrupted()
    if os.environ.get("RANK", "0") != "0":
        return
    click.echo(f"{stage}: {message}", err=True)


class Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM stop a stage: both raise KeyboardInterrupt, so every
    :func:`pipelines.atomic_replace.atomic_output` removes its temporary and the old output stays.

    Python drops an exception raised inside a finalizer or a ctypes callback, printing "Exception
    ignored"; numba and llvmlite run such code all through JIT compilation, so a Ctrl-C there would
    be lost and the stage would finish with exit 0. Such a dropped KeyboardInterrupt is recorded
    (``sys.unraisablehook``, silently) and raised again by :func:`check_interrupted`, which
    :func:`log` and :func:`pipelines.atomic_replace.atomic_output` call before they go on.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the last signal received
        self.dropped = False  # a KeyboardInterrupt was dropped and not raised again yet
        self.finished = False  # the command has returned: a signal now comes too late to stop it
        self._saved: dict[int, Any] = {}
        self._hook: Any = None

    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.finished:  # its outputs are in place (or it failed on its own): it exits as it was going to
            return
        self.signum = signum
        raise KeyboardInterrupt

    def _unraisable(self, info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt):
            self.dropped = True
        else:
            self._hook(info)

    def __enter__(self) -> "Interrupts":
        global _interrupts
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._on_signal)
        self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        _interrupts = self
        return self

    def __exit__(self, *exc: Any) -> None:
        global _interrupts
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._hook
        _interrupts = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name


_interrupts: Interrupts | None = None


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if one was dropped inside a finalizer or callback (see :class:`Interrupts`)."""
    if _interrupts is not None and _interrupts.dropped:
        _interrupts.dropped = False
        raise KeyboardInterrupt


MEMORY_SHARE = 0.8  # of the memory available now: the default limit of an estimate


def check_memory(stage: str, need: int, shown: str, counted: str, lower: list[str], *, limit_gb: float = 0.0,
                 limit_option: str | None = None, available: int | None = None, where: str = "memory") -> None:
    """Refuse, before it starts, work whose estimated peak memory ``need`` (bytes) is above the limit
    (``limit_gb``; 0: 80% of the memory available now), in one line naming the options to lower; else
    log the estimate. ``shown``: the settings behind it (``--num-aug 100 x 1,000 puzzles``); ``counted``:
    what the estimate counts (``the examples table``); ``limit_option``: the option that sets ``limit_gb``
    (named in the message); ``available``: the bytes free (default: the machine's memory available now),
    ``where`` what they are (``memory of cuda:0``)."""
    from hrm.resources import available_memory_bytes, format_bytes

    what = f"{shown + ': ' if shown else ''}about {format_bytes(need)}"
    if limit_gb > 0:
        limit, why = limit_gb * 1e9, limit_option or "the limit given"
    else:
        avail = available_memory_bytes() if available is None else available
        limit = None if avail is None else MEMORY_SHARE * avail
        why = f"80% of available {where}" + (f"; {limit_option} to change" if limit_option else "")
    if limit is not None and need > limit:
        raise StageError(f"{what} needed for {counted}, above the limit of {format_bytes(limit)} ({why}); "
                         f"lower {' or '.join(lower)}")
    log(stage, f"memory: {what} for {counted} (estimated peak" + ("" if limit is None else f"; limit {format_bytes(limit)}") + ")")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
