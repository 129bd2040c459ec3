"""File I/O shared by the stages: atomic outputs, table reading, user-facing errors."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

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


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hash a file from disk (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class StageError(click.ClickException):
    """An error the user can cause and fix (bad file, missing input): one message, no traceback."""


def _temp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    Works for files and directories. On any failure (Ctrl-C included) the temporary
    path is removed and whatever was at ``final`` before stays untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for {final}")
        if tmp.is_dir() and final.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = _temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet or CSV file into polars, turning I/O and format errors into StageError."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    suffix = path.suffix.lower()
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


def write_parquet(df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically, with settings fixed so the same rows give the same bytes."""
    with atomic_output(path) as tmp:
        df.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True)
