"""What every command shares: atomic outputs and their records (which command wrote which bytes: a
folder is replaced only by its own command), the output lock, table reading (bytes bounded before a
Parquet file is read), option ranges, one message for the system's errors on a user's path, the
memory check made before work that grows with a setting, and the stage log.

(A file's sha256 is hrm.manifest.file_sha256: the loader needs it too.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
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
from typing import Any, Iterator

import click
import numpy as np
import polars as pl

from hrm.integrity import file_sha256
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


def output_error(exc: BaseException, final: Path, tmp: Path) -> StageError | None:
    """What :func:`atomic_output` reports when writing ``final`` failed on a path error; checked before its
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


@contextlib.contextmanager
def output_lock(lock: Path, folder: Path, stage: str, what: str, *, remove: bool = False) -> Iterator[None]:
    """Hold ``lock`` (an exclusive flock, never waited for) while this process writes ``folder``: a second
    process is refused with one message naming the folder and the holder's pid, before it touches anything.

    The file holds ``pid N``. ``remove``: it is deleted when released, so nothing is left beside an output
    (a process that opened it just before is not fooled: it checks that the file it locked is still the
    one at ``lock``, else opens it again). A killed holder's lock is released by the system; its file is
    reused by the next run.
    """
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StageError(f"{folder}: another `hrm {stage}` ({holder}) is writing {what}; wait for it to end, "
                             "or choose another --output") from None
        try:
            mine = os.stat(lock)
            if (mine.st_dev, mine.st_ino) == (os.fstat(fh.fileno()).st_dev, os.fstat(fh.fileno()).st_ino):
                break
        except FileNotFoundError:
            pass
        fh.close()  # the holder removed it as this process opened it: lock the file now at that path
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        yield
    finally:
        if remove:
            lock.unlink(missing_ok=True)
        fh.close()  # releases the lock
