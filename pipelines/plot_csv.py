"""The CSV files behind ``dvc plots show`` (evaluate's and analyze's ``plots/*.csv``): one writer."""

from __future__ import annotations

import os
from typing import Any, Sequence

import polars as pl

from pipelines.io import json_ready


def write_plot_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], *, header: Sequence[str] = (),
                   digits: int | None = None, as_text: bool = False) -> None:
    """Write ``rows`` (dicts; columns in order of first appearance, missing or None / NaN values empty).

    ``header``: the columns of a table without rows (a skipped analysis). ``digits``: round floats.
    Two spellings of the numbers, each kept so that a file's bytes never change:
    typed columns (default: ints as ints, floats in polars' shortest form, 1e-6 as ``1e-6``), or
    ``as_text`` (every value as Python writes it, ``str(v)``: ``1e-06``, and an int stays an int
    in a column of floats), the spelling of evaluate's tables.
    """
    rows = json_ready(list(rows), digits)
    if not rows:
        frame = pl.DataFrame(schema={c: pl.Float64 for c in header})
    elif as_text:
        frame = pl.DataFrame([{k: None if v is None else str(v) for k, v in r.items()} for r in rows],
                             infer_schema_length=None)
    else:
        frame = pl.DataFrame(rows, infer_schema_length=None)
    frame.write_csv(path)
