"""Peak memory of ``hrm evaluate`` against the number of puzzles (issue 18: bounded memory).

    python benchmarks/evaluate_memory.py                         # 25,000 / 100,000 / 422,786 puzzles
    python benchmarks/evaluate_memory.py --sizes 10000,50000 --tiers 1-5

Builds a synthetic test split of the largest size (the real puzzles of tests/data/real-sudoku,
repeated) as a dataset folder and a tiny checkpoint (hidden 16, 1 + 1 layers, 1 x 1 cycles, one
segment: the job's own memory, not the model's), then runs ``python -m pipelines.evaluate`` on
``--test-size N`` of it in a child process for each size (batches of 256 puzzles, 256 rows per
forward). Prints each run's peak RSS (the child's ``ru_maxrss``, from ``os.wait4``), its anonymous
and file-backed parts (sampled from /proc every 20 ms; the memory-mapped split's pages are
file-backed and reclaimable) and wall time; the growth per 100,000 puzzles between the smallest
and the largest run; and the size of what must grow with the puzzles: the per-puzzle result table
(``puzzles.parquet``'s columns in memory) plus the evaluated row numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import polars as pl
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm.model import HRM, HRMConfig, save_checkpoint  # noqa: E402
from hrm.sudoku import grids_to_tokens, strings_to_grids  # noqa: E402

REAL = Path(os.environ.get("HRM_REAL_SUDOKU", ROOT / "tests" / "data" / "real-sudoku"))
TABLE_BYTES = 8 + 4 + 4 + 4 + 2 + 5 + 1 + 4 + 1  # row, raw_index, puzzle_id, rating, blanks, 5 outcomes, halted, q, critical


def write_split(root: Path, n: int) -> Path:
    """A dataset folder (the layout `hrm shard` writes) whose test split is the real puzzles repeated to n rows."""
    df = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    q = grids_to_tokens(strings_to_grids(df["question"].to_list())).astype(np.uint8)
    a = grids_to_tokens(strings_to_grids(df["answer"].to_list())).astype(np.uint8)
    reps = -(-n // len(q))
    q, a = np.tile(q, (reps, 1))[:n], np.tile(a, (reps, 1))[:n]
    tok = pa.list_(pa.uint8(), 81)
    ids = pa.array(np.arange(n, dtype=np.int32))
    table = pa.table({
        "group_id": ids, "puzzle_id": ids, "rating": pa.array(np.zeros(n, np.int32)), "raw_index": ids,
        "inputs": pa.FixedSizeListArray.from_arrays(pa.array(q.ravel()), type=tok),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), type=tok),
    })
    (root / "test").mkdir(parents=True)
    with pa.ipc.new_file(root / "test" / "data-00000-of-00001.arrow", table.schema) as w:
        w.write_table(table, max_chunksize=65_536)
    manifest = {"name": root.name, "splits": {"test": {"rows": n, "groups": n, "shards": [
        {"file": "test/data-00000-of-00001.arrow", "rows": [0, n], "groups": [0, n]}]}},
        "encoding": {"seq_len": 81, "vocab_size": 11, "pad": 0, "blank": 1}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def tiny_checkpoint(root: Path) -> Path:
    torch.manual_seed(0)
    cfg = HRMConfig(batch_size=8, seq_len=81, puzzle_emb_ndim=16, num_puzzle_identifiers=1, vocab_size=11, H_cycles=1,
                    L_cycles=1, H_layers=1, L_layers=1, hidden_size=16, expansion=2, num_heads=2, halt_max_steps=1,
                    forward_dtype="float32")
    return save_checkpoint(HRM(cfg).eval(), root / "run" / "step_1", {"seed": 0, "data_path": "synthetic"})


def _status_mb(pid: int) -> dict[str, float]:
    """RssAnon and RssFile of a running process, MB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def run(args: list[str]) -> tuple[float, float, float, float]:
    """(peak RSS, peak anonymous RSS, peak file-backed RSS, all in MB; wall seconds) of one child run. The
    file-backed part (the memory-mapped split's pages) is reclaimable; the anonymous part is the job's own."""
    t = time.perf_counter()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.evaluate", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=err, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    peaks = {"RssAnon": 0.0, "RssFile": 0.0}
    while True:  # sampled every 20 ms; ru_maxrss below is the exact peak of the sum
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        for key, value in _status_mb(proc.pid).items():
            peaks[key] = max(peaks[key], value)
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    tail = err.read().decode()[-2000:]
    if proc.returncode:
        raise SystemExit(f"hrm evaluate failed ({proc.returncode}):\n{tail}")
    return usage.ru_maxrss / 1024, peaks["RssAnon"], peaks["RssFile"], time.perf_counter() - t


@click.command()
@click.option("--sizes", default="25000,100000,422786", show_default=True, help="Puzzles per run (comma-separated).")
@click.option("--tiers", default="none", show_default=True, help="Easy tiers of each run.")
@click.option("--chunk-size", default=4096, show_default=True)
@click.option("--threads", default=1, show_default=True)
def main(sizes: str, tiers: str, chunk_size: int, threads: int) -> None:
    sizes_n = sorted(int(s) for s in sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        dataset = write_split(tmp / "synthetic", sizes_n[-1])
        ckpt = tiny_checkpoint(tmp)
        print(f"synthetic test split of {sizes_n[-1]:,} puzzles written in {time.perf_counter() - t0:.1f} s; "
              f"tiny model, K = 1, P = 1, tiers {tiers}, chunks of {chunk_size}, {threads} thread(s)")
        peaks, anon = [], []
        for n in sizes_n:
            args = ["--checkpoint", str(ckpt), "--dataset", str(dataset), "--permutations", "1", "--test-size", str(n),
                    "--tiers", tiers, "--batch-size", "256", "--max-rows", "256", "--chunk-size", str(chunk_size), "--device", "cpu",
                    "--num-threads", str(threads), "--no-progress", "--output", str(tmp / f"out-{n}")]
            peak, peak_anon, peak_file, seconds = run(args)
            rows = pl.read_parquet(tmp / f"out-{n}" / "puzzles.parquet").height
            assert rows == n, (rows, n)
            peaks.append(peak)
            anon.append(peak_anon)
            print(f"{n:>9,} puzzles: peak RSS {peak:7.1f} MB (anonymous {peak_anon:7.1f} MB, file-backed "
                  f"{peak_file:6.1f} MB, sampled), {seconds:6.1f} s ({n / seconds:,.0f} puzzles/s)")
        if len(sizes_n) > 1:
            span = (sizes_n[-1] - sizes_n[0]) / 1e5
            table = (TABLE_BYTES + 8) * 1e5 / 2**20
            print(f"growth per 100,000 puzzles: peak RSS {(peaks[-1] - peaks[0]) / span:.1f} MB, anonymous "
                  f"{(anon[-1] - anon[0]) / span:.1f} MB; the per-puzzle result table and the row numbers hold "
                  f"{table:.1f} MB per 100,000 ({TABLE_BYTES + 8} B per puzzle)")


if __name__ == "__main__":
    main()
