"""Benchmark: `dvc plots show` drawn offline (docs/view.md's figures): the page DVC writes with this project's
template (.dvc/config plots.html_template), opened from disk in Debian's headless Chromium with no network.

    python benchmarks/plots_offline.py [--screenshot plots.png] [--repeat 3]

Run in the repository (its dvc.yaml plots, the workspace's files). Chromium resolves no host name and is put
offline (DevTools' network emulation); its performance log lists every request. Prints the template's and the
page's size, how many plots drew marks, the time from navigation to the last one drawn, and the requests made.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Per vega plot (a div DVC writes with a vegaEmbed call): the marks drawn, as SVG elements or painted pixels.
DRAWN = """return Array.from(document.querySelectorAll('body > div[id]'), (div) => {
  const svg = div.querySelectorAll('svg .mark-line path, svg .mark-rect path, svg .mark-symbol path').length;
  const canvas = div.querySelector('canvas');
  let painted = 0;
  if (canvas && canvas.width) {
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0 && (px[i - 1] < 200 || px[i - 2] < 200)) painted++;
  }
  return svg + painted;
});"""


def offline_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                "downloadThroughput": -1, "uploadThroughput": -1})
    return driver


def requests_made(driver) -> list[str]:
    entries = (json.loads(e["message"])["message"] for e in driver.get_log("performance"))
    return [e["params"]["request"]["url"] for e in entries if e["method"] == "Network.requestWillBeSent"]


def draw(driver, page: Path) -> tuple[list[int], float]:
    """Open the page; poll until every plot drew (or 30 s): marks per plot, ms from navigation."""
    driver.get_log("performance")
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + 30
    while True:
        drawn = driver.execute_script(DRAWN)
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
    driver = offline_browser()
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
