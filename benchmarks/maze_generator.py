"""Maze generator benchmark: mazes/s on one core and the path-length distribution.

Run: ``python benchmarks/maze_generator.py [N] [--min-path M] [--openings K]`` (N defaults
to 2000). Single-threaded (the kernels have no parallel loops). The timing comes after a
JIT warm-up call; every maze is then checked with ``hrm.maze.check_mazes``.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm.maze import DEFAULT_OPENINGS, HARD_MIN_PATH, check_mazes, describe_mazes, generate_mazes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("--min-path", type=int, default=HARD_MIN_PATH)
    parser.add_argument("--openings", type=int, default=DEFAULT_OPENINGS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generate_mazes(1, args.seed, args.min_path, args.openings)  # JIT warm-up (or cache load)
    start = time.perf_counter()
    out = generate_mazes(args.n, args.seed, args.min_path, args.openings)
    elapsed = time.perf_counter() - start
    codes = check_mazes(out.questions, out.answers)
    loops = (out.questions != 1).sum(axis=1) - (2 * 14 * 14 - 1)  # open cells beyond a spanning tree
    print(json.dumps({
        "n": args.n, "min_path": args.min_path, "openings": args.openings,
        "mazes_per_s": round(args.n / elapsed, 1), "seconds": round(elapsed, 3),
        "invalid": int((codes != 0).sum()),
        "loops_mean": float(loops.mean()),
        "path_length": describe_mazes(out.ratings),
    }, indent=2))


if __name__ == "__main__":
    main()
