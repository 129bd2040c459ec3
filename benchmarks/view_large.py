"""Benchmark: `hrm view` on a 10,000-puzzle evaluation (issue 31, item 6; docs/view.md's figures), CPU only.

    python benchmarks/view_large.py [--puzzles 10000] [--work DIR] [--repeat 2]

Builds the run with the stages themselves, as tests/test_view.py does at a tiny scale: generated Sudoku puzzles
(``--source builtin``, 8 train and PUZZLES test), a tiny HRM trained for 2 epochs, ``hrm evaluate`` on every
test puzzle (2 shift passes, no tiers), ``hrm analyze`` on 200 of them. Then builds the page listing every
evaluated puzzle (``--max-puzzles PUZZLES``) and the default one, each in a fresh process, and opens each from
disk in Debian's headless Chromium (benchmarks/headless.py): build time, size, time to ready, time to
draw one puzzle's passes. The run is kept in --work (built once; delete it to rebuild).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless import chromium  # noqa: E402 - benchmarks/headless.py: Debian's chromium through Selenium

TINY = ["--variant", "vanilla", "--global-batch-size", "4", "--epochs", "2", "--eval-interval", "2", "--eval-size", "4",
        "--hidden-size", "16", "--num-heads", "2", "--l-layers", "1", "--h-cycles", "2", "--l-cycles", "2",
        "--halt-max-steps", "3", "--puzzle-emb-ndim", "16", "--lr-warmup-steps", "1", "--no-progress"]


def hrm(*args) -> None:
    subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], check=True)


def build_run(root: Path, puzzles: int) -> None:
    """The stages' chain into ``root`` (the DVC layout); skipped when its evaluation is there."""
    if (root / "analysis" / "puzzles.parquet").is_file():
        return
    chain = root / "chain"
    hrm("raw", "--source", "builtin", "--output", chain / "raw", "--seed", 3, "--train-size", 8, "--test-size", puzzles)
    hrm("subsample", "--input", chain / "raw", "--output", chain / "subsample", "--seed", 3, "--subsample-size", 0,
        "--test-size", 0)
    hrm("augment", "--input", chain / "subsample", "--output", chain / "augment", "--seed", 3, "--num-aug", 0)
    hrm("hints", "--input", chain / "augment", "--output", chain / "hints", "--enabled", "false")
    hrm("shard", "--input", chain / "hints", "--output", root / "datasets")
    hrm("train", "--dataset", root / "datasets", "--output", root / "models" / "hrm", *TINY)
    hrm("evaluate", "--checkpoint", root / "models" / "hrm", "--dataset", root / "datasets", "--variant", "vanilla",
        "--permutations", 2, "--tiers", "none", "--batch-size", 256, "--output", root / "evaluate", "--no-progress")
    hrm("analyze", "--checkpoint", root / "models" / "hrm", "--dataset", root / "datasets", "--variant", "vanilla",
        "--output", root / "analysis", "--sample", 200, "--segments", 3, "--shifts", 2, "--noise-runs", 1,
        "--fp-sample", 2, "--easy-k", "0,1", "--landscape-radius", 1, "--no-flow", "--no-progress")


def measure(driver, root: Path, page: Path, extra: list[str]) -> str:
    start = time.perf_counter()
    hrm("view", "--run", root, "--output", page, *extra)
    built = time.perf_counter() - start
    driver.get(page.resolve().as_uri())
    ready = driver.execute_script("return document.body.dataset.ready === '1' ? performance.now() : null")
    listed = driver.execute_script("document.getElementById('tab-evaluation').click(); "
                                   "return document.querySelectorAll('.eval-item').length")
    t0 = time.perf_counter()
    driver.execute_script("document.querySelectorAll('.eval-item')[1].click()")
    click = time.perf_counter() - t0
    return (f"{' '.join(extra) or 'defaults'}: build {built:.2f} s (process, imports included) · "
            f"{page.stat().st_size / 1e6:.2f} MB · ready {ready / 1000:.2f} s after navigation · {listed} puzzles listed · "
            f"one puzzle's passes drawn in {click * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--puzzles", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hrm-view-large")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    build_run(args.work, args.puzzles)
    print(f"run in {args.work} ({time.perf_counter() - start:.0f} s to build or find)", flush=True)
    driver = chromium()
    try:
        for _ in range(args.repeat):
            for extra in ([], ["--max-puzzles", str(args.puzzles)]):
                print(measure(driver, args.work, args.work / "view.html", extra), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
