"""Debian's headless Chromium, driven by Selenium through Debian's chromedriver (paths: no browser or driver is
downloaded): the one place the viewer's and the offline plots' benchmarks and tests start it."""

from __future__ import annotations

from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# Per plot of a `dvc plots show` page (a div with a vegaEmbed call, or an image's): [its id, the marks drawn, as
# SVG elements or painted canvas pixels; an image: 1 once it loaded].
DRAWN = """return Array.from(document.querySelectorAll('body > div[id]'), (div) => {
  const img = div.querySelector('img');
  if (img) return [div.id, img.complete && img.naturalWidth > 0 ? 1 : 0];
  const svg = div.querySelectorAll('svg .mark-line path, svg .mark-rect path, svg .mark-symbol path').length;
  const canvas = div.querySelector('canvas');
  let painted = 0;
  if (canvas && canvas.width) {
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0 && (px[i - 1] < 200 || px[i - 2] < 200)) painted++;
  }
  return [div.id, svg + painted];
});"""


class NoBrowser(RuntimeError):
    """Debian's chromium or chromedriver is not installed."""


def chromium(offline: bool = False):
    """A headless Chromium that logs the page's console (and, ``offline``, every request it makes, with no
    network: no host name resolves and the network is emulated offline)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        raise NoBrowser(f"{' and '.join(missing)} not found: install Debian's headless browser with "
                        "`apt-get update && apt-get install -y chromium chromium-driver` (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                *(["--host-resolver-rules=MAP * ~NOTFOUND"] if offline else [])):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", **({"performance": "ALL"} if offline else {})})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    if offline:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                    "downloadThroughput": -1, "uploadThroughput": -1})
    return driver


def requests_made(driver) -> list[str]:
    """Every URL an ``offline`` driver requested since its performance log was last read."""
    import json

    entries = (json.loads(e["message"])["message"] for e in driver.get_log("performance"))
    return [e["params"]["request"]["url"] for e in entries if e["method"] == "Network.requestWillBeSent"]
