"""Benchmark: both paper-size datasets, from a raw Parquet file to finished, validated shards.

    python benchmarks/datasets.py [--workdir DIR] [--in-process] [--repeat N]

Builds (not timed) a raw table of 2,000 train and 1,000 test puzzles with the offline
generator (hrm.generate; without it, symmetries of the real puzzles in
tests/data/real-sudoku/valid.csv), then times the four dataset stages exactly as
``dvc repro`` runs them, each as its own ``hrm`` process:

    hrm subsample --subsample-size 1000 --test-size 0
    hrm augment   --num-aug 1000                      ->  1,001,000 train examples
    hrm hints     --enabled true                      ->  2,002,000 train examples
    hrm shard                                         ->  both datasets, validated shards

and prints wall seconds per stage, the total, and the peak RSS of each stage (its
process's ru_maxrss). ``--in-process`` runs the stages in this process instead (imports
paid once; peak RSS is then this process's).
Reference: the fork's numpy builder takes 138 s / 3.6 GB (vanilla) and 213 s / 6.3 GB (hint)
(the fork = the Augmented HRM paper's code, README "Reference code").
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = [
    ("subsample", ["subsample", "--input", "data/raw", "--output", "data/subsample", "--seed", "0",
                   "--subsample-size", "1000", "--test-size", "0"]),
    ("augment", ["augment", "--input", "data/subsample", "--output", "data/augment", "--seed", "0",
                 "--num-aug", "1000"]),
    ("hints", ["hints", "--input", "data/augment", "--output", "data/hints", "--seed", "0", "--enabled", "true"]),
    ("shard", ["shard", "--input", "data/hints", "--output", "data/datasets", "--shard-max-mb", "128"]),
]


def make_raw(workdir: Path, n_train: int = 2000, n_test: int = 1000) -> None:
    """data/raw/{train,test}.parquet + stats.json, as the raw stage writes them."""
    import json

    import numpy as np
    import polars as pl

    from hrm.sudoku import grids_to_strings

    try:
        from hrm.generate import generate_puzzles

        puzzles = generate_puzzles(n_train + n_test, seed=12345)
        q, a, r = puzzles.questions, puzzles.answers, np.asarray(puzzles.ratings, dtype=np.int64)
        source = "builtin"
    except ImportError:  # no generator: symmetries of the real puzzles (distinct, still valid)
        from hrm.sudoku import random_transforms, strings_to_grids

        path = Path(os.environ.get("HRM_REAL_SUDOKU", REPO / "tests" / "data" / "real-sudoku")) / "valid.csv"
        real = pl.read_csv(path, infer_schema=False)
        base_q = strings_to_grids(real["question"].to_list())
        base_a = strings_to_grids(real["answer"].to_list())
        rng = np.random.default_rng(12345)
        idx = rng.integers(0, len(base_q), n_train + n_test)
        t = random_transforms(rng, len(idx))
        from hrm.sudoku import apply_transforms

        q, a = apply_transforms(base_q[idx], t), apply_transforms(base_a[idx], t)
        r = real["rating"].cast(pl.Int64).to_numpy()[idx]
        source = "csv"
    raw = workdir / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, sl in (("train", slice(0, n_train)), ("test", slice(n_train, n_train + n_test))):
        pl.DataFrame({
            "source": [source] * (sl.stop - sl.start),
            "question": grids_to_strings(q[sl]),
            "answer": grids_to_strings(a[sl]),
            "rating": pl.Series(r[sl], dtype=pl.Int64),
        }).write_parquet(raw / f"{split}.parquet")
    (raw / "stats.json").write_text(json.dumps({"source": source}, indent=2) + "\n")


def run_subprocess(args: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one ``hrm`` stage run as its own process."""
    cmd = [sys.executable, "-c", "from pipelines.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"stage {args[0]} failed with exit status {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_in_process(args: list[str], cwd: Path) -> tuple[float, float, float]:
    from pipelines.cli import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        cli.main(args=args, standalone_mode=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.chdir(old)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, after.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="Where to build (default: a temporary folder).")
    parser.add_argument("--in-process", action="store_true", help="Run the stages in this process.")
    parser.add_argument("--repeat", type=int, default=1, help="Build this many times (reports each).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hrm-bench-datasets-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_raw(workdir)
    print(f"raw table (not timed): {time.perf_counter() - t0:.1f} s, in {workdir}", file=sys.stderr)
    runner = run_in_process if args.in_process else run_subprocess
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the {os.cpu_count()} cores)",
          file=sys.stderr)
    totals = []
    try:
        for attempt in range(args.repeat):
            for _, stage_args in STAGES:
                shutil.rmtree(workdir / stage_args[4], ignore_errors=True)
            rows = []
            for name, stage_args in STAGES:
                rows.append((name, *runner(stage_args, workdir)))
            total = sum(r[1] for r in rows)
            totals.append(total)
            print(f"\nrun {attempt + 1} ({'in-process' if args.in_process else 'one process per stage'}; "
                  f"load average {os.getloadavg()[0]:.2f}):")
            print(f"{'stage':<10} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
            for name, wall, cpu, rss in rows:
                print(f"{name:<10} {wall:8.2f} {cpu:8.2f} {rss:12.0f}")
            print(f"{'total':<10} {total:8.2f} {sum(r[2] for r in rows):8.2f} {max(r[3] for r in rows):12.0f}")
            sizes = sum(p.stat().st_size for p in (workdir / "data" / "datasets").rglob("*.arrow"))
            print(f"shards: {sizes / 2**20:,.0f} MiB in {workdir / 'data' / 'datasets'}")
        if len(totals) > 1:
            print(f"\ntotal wall seconds over {len(totals)} runs: best {min(totals):.2f}, "
                  f"median {sorted(totals)[len(totals) // 2]:.2f}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
