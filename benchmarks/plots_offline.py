"""Benchmark: `dvc plots show` drawn offline (docs/view.md's figures): the page DVC writes with this project's
template (.dvc/config plots.html_template), opened from disk in Debian's headless Chromium with no network.

    python benchmarks/plots_offline.py [--screenshot plots.png] [--repeat 3]

Run in the repository (its dvc.yaml plots, the workspace's files). Chromium resolves no host name and is put
offline (DevTools' network emulation); its performance log lists every request. Prints the template's and the
page's size, how many plots drew marks, the time from navigation to the last one drawn, and the requests made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headless import DRAWN, chromium, requests_made  # benchmarks/headless.py: Debian's chromium through Selenium

def draw(driver, page: Path) -> tuple[list[int], float]:
    """Open the page; poll until every plot drew (or 30 s): marks per plot, ms from navigation."""
    driver.get_log("performance")
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + 30
    while True:
        drawn = [n for _, n in driver.execute_script(DRAWN)]
        if all(drawn) or time.monotonic() > deadline:
            return drawn, driver.execute_script("return performance.now()")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    template = subprocess.run([sys.executable, "-m", "dvc", "config", "plots.html_template"], capture_output=True,
                              text=True, check=True).stdout.strip()
    print(f"template .dvc/{template}: {(Path('.dvc') / template).stat().st_size / 1e6:.2f} MB")
    driver = chromium(offline=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", tmp], check=True, capture_output=True)
            page = Path(tmp) / "index.html"
            print(f"dvc plots show: {time.perf_counter() - start:.1f} s, page {page.stat().st_size / 1e6:.2f} MB")
            for _ in range(args.repeat):
                drawn, ms = draw(driver, page)
                others = [u for u in requests_made(driver) if u != page.resolve().as_uri()]
                print(f"{sum(n > 0 for n in drawn)} of {len(drawn)} plots drawn, the last {ms / 1000:.2f} s after "
                      f"navigation; requests besides the page: {others or 'none'}")
            if args.screenshot:
                driver.save_screenshot(str(args.screenshot))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
