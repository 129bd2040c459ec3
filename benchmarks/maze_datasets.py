"""Benchmark: the maze dataset build beside the official builder's structure, on the same CSV, in one run.

    python benchmarks/maze_datasets.py [--mazes 1000] [--workdir DIR] [--keep]

Generates (not timed) ``--mazes`` train and as many test mazes (hrm.maze.generate_mazes, seeded) and
writes them as the raw stage's Parquet tables and as the official CSV layout (``source, question,
answer, rating``). Then times, in this process, one after the other:

- **ours**: ``hrm subsample --subsample-size 0 --test-size 0`` -> ``hrm augment --num-aug 7`` (all 8
  dihedral transforms per train maze) -> ``hrm hints --enabled false`` -> ``hrm shard``: every row
  validated (a BFS per maze and per transform), hashed, Arrow shards read back and checked;
- **the official builder's structure**, written here from its description (no code of it copied):
  read the CSV row by row, map each character to its token, and for a train maze append the 8
  dihedral transforms of question and answer (``np.rot90`` / flips / transposes on the 30x30 grid)
  to Python lists; then stack the lists into ``inputs`` / ``labels`` arrays with puzzle and group
  indices and ``np.save`` them. No validation.

Prints the seconds of each, the ratio ours / official, the examples written, and the generator's
mazes/s (the untimed step, timed for the report).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHARSET = "# SGo"  # the official charset; token = index + 1


def make_raw(workdir: Path, n: int) -> float:
    """data/raw/{train,test}.parquet + stats.json and data/csv/{train,test}.csv; returns the generator's mazes/s."""
    import polars as pl

    from hrm.maze import generate_mazes, tokens_to_strings

    generate_mazes(2, seed=1)  # compile (or load) the generator's kernels first: mazes/s, not compile time
    t0 = time.perf_counter()
    g = generate_mazes(2 * n, seed=2024)
    rate = 2 * n / (time.perf_counter() - t0)
    raw, csv_dir = workdir / "data" / "raw", workdir / "data" / "csv"
    raw.mkdir(parents=True)
    csv_dir.mkdir(parents=True)
    q, a = tokens_to_strings(g.questions), tokens_to_strings(g.answers)
    for split, sl in (("train", slice(0, n)), ("test", slice(n, 2 * n))):
        table = pl.DataFrame({"source": ["generated"] * n, "question": q[sl], "answer": a[sl],
                              "rating": g.ratings[sl].astype(np.int64)})
        table.write_parquet(raw / f"{split}.parquet")
        table.write_csv(csv_dir / f"{split}.csv")
    (raw / "stats.json").write_text(json.dumps({"source": "builtin", "task": "maze"}) + "\n")
    return rate


def ours(workdir: Path) -> tuple[int, dict[str, float]]:
    """The four stages in this process; (examples written, seconds per stage)."""
    from click.testing import CliRunner

    from pipelines.cli import cli

    d = workdir / "data"
    seconds = {}
    for args in (["subsample", "--input", d / "raw", "--output", d / "subsample", "--subsample-size", 0, "--test-size", 0],
                 ["augment", "--input", d / "subsample", "--output", d / "augment", "--num-aug", 7],
                 ["hints", "--input", d / "augment", "--output", d / "hints", "--enabled", "false"],
                 ["shard", "--input", d / "hints", "--output", d / "datasets"]):
        t0 = time.perf_counter()
        result = CliRunner().invoke(cli, [str(x) for x in args])
        seconds[args[0]] = time.perf_counter() - t0
        if result.exit_code != 0:
            raise SystemExit(f"hrm {args[0]} failed:\n{result.output}")
    index = json.loads((d / "datasets" / "datasets.json").read_text())
    manifest = json.loads((d / "datasets" / index["vanilla"] / "manifest.json").read_text())
    return sum(info["rows"] for info in manifest["splits"].values()), seconds


def _dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    # The official order: identity, rot90 x1..3, left-right flip, up-down flip, transpose, anti-transpose.
    return [grid, np.rot90(grid, 1), np.rot90(grid, 2), np.rot90(grid, 3), np.fliplr(grid), np.flipud(grid),
            grid.T, np.fliplr(np.rot90(grid, 1))][k]


def official_structure(workdir: Path) -> int:
    lut = np.zeros(256, np.uint8)
    for i, ch in enumerate(CHARSET):
        lut[ord(ch)] = i + 1
    out = workdir / "official"
    written = 0
    for split in ("train", "test"):
        inputs, labels, puzzle_indices, group_indices = [], [], [0], [0]
        with open(workdir / "data" / "csv" / f"{split}.csv", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for _source, question, answer, _rating in reader:
                q = lut[np.frombuffer(question.encode(), np.uint8)].reshape(30, 30)
                a = lut[np.frombuffer(answer.encode(), np.uint8)].reshape(30, 30)
                for k in range(8 if split == "train" else 1):
                    inputs.append(_dihedral(q, k).reshape(-1))
                    labels.append(_dihedral(a, k).reshape(-1))
                    puzzle_indices.append(len(inputs))
                group_indices.append(len(puzzle_indices) - 1)
        (out / split).mkdir(parents=True)
        np.save(out / split / "all__inputs.npy", np.stack(inputs))
        np.save(out / split / "all__labels.npy", np.stack(labels))
        np.save(out / split / "all__puzzle_indices.npy", np.asarray(puzzle_indices, np.int32))
        np.save(out / split / "all__group_indices.npy", np.asarray(group_indices, np.int32))
        written += len(inputs)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mazes", type=int, default=1000, help="train mazes (and as many test mazes)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="maze-bench-"))
    try:
        rate = make_raw(workdir, args.mazes)
        t0 = time.perf_counter()
        rows, stages = ours(workdir)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows_official = official_structure(workdir)
        t_official = time.perf_counter() - t0
        print(f"mazes: {args.mazes:,} train (x8 dihedral) + {args.mazes:,} test; generator {rate:,.0f} mazes/s")
        print(f"ours (subsample, augment --num-aug 7, hints off, shard; every row validated): {t_ours:.2f} s, "
              f"{rows:,} examples ({', '.join(f'{k} {v:.2f} s' for k, v in stages.items())})")
        print(f"official builder's structure (CSV rows -> 8 transforms -> lists -> np.save; no checks): "
              f"{t_official:.2f} s, {rows_official:,} examples")
        print(f"ratio ours / official: {t_ours / t_official:.2f}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
