"""File I/O shared by the stages: atomic outputs, table reading, user-facing errors and option types, the stage log.

(A file's sha256 is schemas.manifest.file_sha256: the loader needs it too.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import numpy as np
import polars as pl


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


BATCH_ROWS = 500_000  # rows of a large table read (and validated) at a time: bounds the memory
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, statistics=True)  # raw and rejected tables


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
_TEMP_NAME = re.compile(r"\.([^/]+)\.tmp-\d+-[0-9a-f]{8}")  # _temp_sibling's names


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
    """``path`` as the user named it: a temporary of :func:`atomic_output` (``.NAME.tmp-PID-XXXXXXXX``) is ``NAME``."""
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


def _out_of_space(folder: Path) -> bool:
    """Whether the file system of ``folder`` has no free block left (a failed write that did not say why:
    numpy's "N requested and M written", torch's "unexpected pos")."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def output_error(exc: BaseException, final: Path, tmp: Path) -> StageError | None:
    """What :func:`atomic_output` reports when writing ``final`` failed on a path error; checked before its
    temporary is removed (a full disk is seen while it is full)."""
    if not isinstance(exc, Exception) or isinstance(exc, click.ClickException):
        return None
    if os_error_of(exc) is None and _out_of_space(tmp.parent):
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
    :func:`atomic_output` removes its temporary and the old output stays.

    Python drops an exception raised inside a finalizer or a ctypes callback, printing "Exception
    ignored"; numba and llvmlite run such code all through JIT compilation, so a Ctrl-C there would
    be lost and the stage would finish with exit 0. Such a dropped KeyboardInterrupt is recorded
    (``sys.unraisablehook``, silently) and raised again by :func:`check_interrupted`, which
    :func:`log` and :func:`atomic_output` call before they go on.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the last signal received
        self.dropped = False  # a KeyboardInterrupt was dropped and not raised again yet
        self._saved: dict[int, Any] = {}
        self._hook: Any = None

    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002
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


# DVC writes a .gitignore beside the outputs it tracks one by one: any stage's output folder may hold one.
_DVC_FILES = frozenset({".gitignore"})
Owns = Callable[[Path], bool]


def owns_pattern(regex: str) -> Owns:
    """An ``own`` rule: the entries whose name matches ``regex`` (fully)."""
    compiled = re.compile(regex)
    return lambda p: compiled.fullmatch(p.name) is not None


def claim_output(final: str | os.PathLike, own: Owns, stage: str) -> None:
    """Refuse an output folder that holds anything the stage does not write itself.

    ``own(entry)`` says whether a top-level entry of the folder is one of the stage's outputs
    (the stage replaces those, and only those, as a whole). A user's files, another stage's
    output or a git checkout in ``final`` end the command with one message, before any work.
    """
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir() or final.is_symlink():
        raise StageError(f"{final}: exists and is not a directory; choose a new --output directory")
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in final.iterdir() if p.name not in _DVC_FILES and not own(p))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
        raise StageError(f"{final}: refusing to replace this folder: it holds files `hrm {stage}` does not write ({shown}); "
                         "choose an empty or new --output folder")


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
def atomic_output(final: str | os.PathLike, *, own: Owns | None = None, stage: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; put it in place of ``final`` only on success.

    Works for files and directories. On any failure (Ctrl-C included) the temporary path is
    removed and whatever was at ``final`` before stays untouched. A directory replaces an
    existing one in a single exchange, so at every instant the complete old or the complete
    new output is at ``final``. An existing directory is replaced only when ``own`` (see
    :func:`claim_output`) owns every entry in it. Temporaries of killed runs are removed first.
    """
    final = Path(final)
    if final.is_dir():
        if own is None:
            raise StageError(f"{final}: is a folder; refusing to replace it")
        claim_output(final, own, stage)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        check_interrupted()  # a Ctrl-C that Python dropped: the new output is not put in place
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for {final}")
        if tmp.is_dir() and final.exists():
            if own is not None:
                claim_output(final, own, stage)  # again: something may have appeared while the stage ran
            for name in _DVC_FILES:  # DVC's files stay
                if (final / name).is_file() and not (tmp / name).exists():
                    shutil.copy2(final / name, tmp / name)
            if _exchange(tmp, final):
                _remove(tmp)  # the old output, now at the temporary's name
            else:  # a directory cannot be renamed over a non-empty one: move the old one aside first
                old = _temp_sibling(final)
                os.replace(final, old)
                os.replace(tmp, final)
                _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        failure = output_error(exc, final, tmp)  # before the temporary goes: a full disk is seen while full
        _remove(tmp)
        if failure is not None:
            raise failure from None
        raise


MEMORY_SHARE = 0.8  # of the memory available now: the default limit of an estimate


def check_memory(stage: str, need: int, shown: str, counted: str, lower: list[str], *, limit_gb: float = 0.0,
                 available: int | None = None, where: str = "memory") -> None:
    """Refuse, before it starts, work whose estimated peak memory ``need`` (bytes) is above the limit
    (``limit_gb``; 0: 80% of the memory available now), in one line naming the options to lower; else
    log the estimate. ``shown``: the settings behind it (``--num-aug 100 x 1,000 puzzles``); ``counted``:
    what the estimate counts (``the examples table``); ``available``: the bytes free (default: the machine's
    memory available now), ``where`` what they are (``memory of cuda:0``)."""
    from hrm.resources import available_memory_bytes, format_bytes

    what = f"{shown + ': ' if shown else ''}about {format_bytes(need)}"
    if limit_gb > 0:
        limit, why = limit_gb * 1e9, "--memory-limit-gb"
    else:
        avail = available_memory_bytes() if available is None else available
        limit = None if avail is None else MEMORY_SHARE * avail
        why = f"80% of available {where}" + ("; --memory-limit-gb to change" if stage == "analyze" else "")
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


# The longest cell a table of ours holds is a maze string (900 characters); 4 KiB a cell leaves room
# for any text a user's table may hold, and bounds what a Parquet file may decompress to.
MAX_CELL_BYTES = 4096
PARQUET_SLACK = 1 << 20  # per column chunk: headers, dictionaries, statistics


def check_parquet_sizes(path: Path, max_cell_bytes: int = MAX_CELL_BYTES) -> None:
    """Refuse a Parquet file that would decompress to more than its rows can hold, before it is read.

    The footer gives each column chunk's row count and uncompressed size (pages, dictionary included);
    a chunk above ``rows x max_cell_bytes + 1 MiB`` is a compression bomb (14 KB on disk, 400 MB in one
    cell): a StageError names the file, the column and both sizes. A footer that cannot be read is left
    to the reader, which reports it.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # not Parquet, truncated: the reader's own error names the file
        return
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        limit = group.num_rows * max_cell_bytes + PARQUET_SLACK
        for c in range(group.num_columns):
            column = group.column(c)
            if column.total_uncompressed_size > limit:
                raise StageError(
                    f"{path}: column {column.path_in_schema!r} (row group {g}) decompresses to "
                    f"{human_bytes(column.total_uncompressed_size)} for {group.num_rows:,} row(s), more than "
                    f"{human_bytes(limit)} ({max_cell_bytes:,} bytes a cell); refusing to read it "
                    f"({human_bytes(column.total_compressed_size)} on disk: a compression bomb or a damaged file)")


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet or CSV file into polars, turning I/O and format errors into StageError.
    A Parquet file's sizes are checked first (:func:`check_parquet_sizes`)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        check_parquet_sizes(path)
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path, columns=columns)
        if suffix == ".csv":
            # Everything as text: a bad value must reach validation, not fail parsing.
            df = pl.read_csv(path, infer_schema=False)
            return df.select(columns) if columns else df
    except pl.exceptions.ColumnNotFoundError as exc:
        raise StageError(f"{path}: missing column ({exc})") from None
    except Exception as exc:  # polars/pyarrow raise many kinds for a corrupt file
        raise StageError(f"{path}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None
    raise StageError(f"{path}: unsupported file type {suffix!r} (expected .parquet or .csv)")


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Slices of a Parquet file, read one at a time (row groups outside a slice are skipped)."""
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    n = lf.select(pl.len()).collect().item()
    if n == 0:
        yield pl.DataFrame(schema=schema)
    for offset in range(0, n, batch_rows):
        yield pl.scan_parquet(path).slice(offset, batch_rows).collect()


def iter_table_batches(path: str | os.PathLike, batch_rows: int = BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """Read a CSV (all columns as text) or Parquet file in batches of ``batch_rows`` rows.

    Memory stays bounded by one batch: a Parquet file is read slice by slice; a CSV file
    is first streamed into a temporary Parquet file (polars' streaming sink), then
    sliced; a Parquet file's sizes are checked first (:func:`check_parquet_sizes`). Yields at
    least one (possibly empty) frame, so the column layout can always
    be checked. A missing, truncated or malformed file raises StageError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise StageError(f"{path}: unsupported file type {suffix!r} (expected .parquet or .csv)")
    try:
        if suffix == ".parquet":
            check_parquet_sizes(path)
            yield from _parquet_batches(path, batch_rows)
            return
        with tempfile.TemporaryDirectory(prefix="hrm-validate-") as tmp:
            staged = Path(tmp) / "table.parquet"
            # Everything as text: a bad value must reach validation, not fail parsing.
            pl.scan_csv(path, infer_schema=False).sink_parquet(staged, compression="lz4")
            yield from _parquet_batches(staged, batch_rows)
    except StageError:
        raise
    except Exception as exc:  # polars raises many kinds for a corrupt or truncated file
        raise StageError(f"{path}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None


def write_parquet(df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically, with settings fixed so the same rows give the same bytes."""
    with atomic_output(path) as tmp:
        df.write_parquet(tmp, **PARQUET_OPTIONS)
