"""Benchmark: `hrm view` on a run (docs/view.md's figures): build time, page size, load time in headless Chromium.

    python benchmarks/view.py [--run data] [--repeat 3]

Builds the page in a fresh process (`python -m pipelines.cli view`), then opens it from disk in Debian's
headless Chromium (/usr/bin/chromium, /usr/bin/chromedriver; Selenium) and reads the time from navigation
start to the page's script having drawn it (``document.body.dataset.ready``), and the time to draw one
trace. Prints one line per repeat.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headless import chromium  # benchmarks/headless.py: Debian's chromium through Selenium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("data"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    driver = chromium()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "view.html"
            for _ in range(args.repeat):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pipelines.cli", "view", "--run", str(args.run), "--output",
                                str(page)], check=True, capture_output=True)
                built = time.perf_counter() - start
                driver.get(page.resolve().as_uri())
                ready = driver.execute_script("return document.body.dataset.ready === '1' ? "
                                              "performance.now() : null")
                t0 = time.perf_counter()
                driver.execute_script("const i = document.querySelector('.trace-item'); if (i) i.click();")
                trace = time.perf_counter() - t0
                print(f"build {built:.2f} s (process, imports included) · {page.stat().st_size / 1e6:.2f} MB · "
                      f"ready {ready / 1000:.2f} s after navigation · one trace drawn in {trace * 1000:.0f} ms")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
