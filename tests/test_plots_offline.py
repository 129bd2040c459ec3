"""Curves offline (docs/view.md): the committed DVC template (.dvc/plots/offline.html) is the build of the locked
chart libraries at the versions DVC's own page loads, and `dvc plots show` with it draws every chart in a real
headless Chromium with the network cut off (DVC's default page, in the same browser, draws none)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.plots_template import BUNDLES, INSTALL, pinned_versions
from stage_helpers import fails, ok  # hrm ARGS through click's CliRunner, in this process
from benchmarks.headless import DRAWN, chromium, requests_made
from test_view import assert_not_blank

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"

# A tiny DVC project: a dvclive-like TSV history, a CSV with two series, and bars through the project's own
# grouped_bars template: the three kinds of chart dvc.yaml declares.
PLOTS = {
    "lm_loss.tsv": "step\tlm_loss\n0\t2.3\n1\t1.7\n2\t1.2\n3\t0.9\n",
    "segments.csv": "segment,baseline,halted\n1,0.1,0.05\n2,0.3,0.2\n3,0.45,0.4\n",
    "tiers.csv": "tier,baseline,paper_vote\ntest,0.2,0.3\n1-5,0.8,0.9\n6-10,0.5,0.6\n",
}
DVC_YAML = """plots:
  - loss:
      x: step
      y:
        lm_loss.tsv: lm_loss
  - segments:
      x: segment
      y:
        segments.csv: [baseline, halted]
  - tiers:
      template: grouped_bars
      x: tier
      y:
        tiers.csv: [baseline, paper_vote]
"""


def dvc(*args, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def offline_browser():
    """Headless Chromium that resolves no host name (so no request can leave the machine) and logs every
    request it makes (the performance log)."""
    driver = chromium(offline=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def plots_project(tmp_path_factory) -> Path:
    """A DVC project with the project's plots configuration: its .dvc/plots/ and its plots.html_template."""
    root = tmp_path_factory.mktemp("plots_project")
    dvc("init", "--no-scm", "-q", cwd=root)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True)
    template = dvc("config", "plots.html_template", cwd=ROOT).strip()
    dvc("config", "plots.html_template", template, cwd=root)
    for name, text in PLOTS.items():
        (root / name).write_text(text)
    (root / "dvc.yaml").write_text(DVC_YAML)
    return root


def fetching_tags(html: str) -> list[tuple]:
    """The page's elements that would fetch something (a src or href attribute; script text is not parsed)."""
    from html.parser import HTMLParser

    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend((tag, name, value) for name, value in attrs if name in ("src", "href"))

    Tags().feed(html)
    return found


def open_offline(driver, page: Path, wait: float = 20) -> list:
    """Open the page from disk; wait (up to ``wait`` s) until each plot drew, then report what each drew."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("performance"), driver.get_log("browser")  # start both logs at this page
    driver.get(page.resolve().as_uri())
    try:
        WebDriverWait(driver, wait).until(lambda d: all(n > 0 for _, n in d.execute_script(DRAWN)))
    except TimeoutException:
        pass
    return driver.execute_script(DRAWN)


def test_the_template_is_the_build_of_the_locked_libraries_at_the_versions_dvc_loads(tmp_path):
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert pinned_versions(ROOT / "package.json") == cdn  # what DVC's page would load, and in that order
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for name, version in cdn.items():
        locked = lock["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")
    if not (ROOT / "node_modules" / "vega").is_dir():
        pytest.fail(f"{ROOT / 'node_modules'}: not found; install the pinned chart libraries: {INSTALL} (.ci/run does)")
    built = tmp_path / "offline.html"
    ok("plots-template", "--node-modules", ROOT / "node_modules", "--package-json", ROOT / "package.json",
       "--output", built)
    assert built.read_bytes() == TEMPLATE.read_bytes(), "rebuild it: hrm plots-template (docs/view.md)"
    html = TEMPLATE.read_text()
    assert html.count("{plot_divs}") == 1 and "{scripts}" not in html  # DVC's CDN tags never go in
    assert fetching_tags(html) == []
    assert [m for m in re.findall(r"<script>/\* ([a-z-]+) ", html)] == list(BUNDLES)


def test_a_wrong_install_is_refused_naming_the_file_and_nothing_is_written(tmp_path):
    modules = tmp_path / "node_modules"
    for name in BUNDLES:
        (modules / name / "build").mkdir(parents=True)
        (modules / name / "package.json").write_text(json.dumps({"version": "0.0.1"}))
    out = tmp_path / "offline.html"
    message = " ".join(fails("plots-template", "--node-modules", modules, "--package-json", ROOT / "package.json",
                             "--output", out).split())
    assert f"{modules / 'vega' / 'package.json'}: version 0.0.1, package.json pins 5.20.2; reinstall: {INSTALL}" in message
    shutil.rmtree(modules / "vega")
    message = " ".join(fails("plots-template", "--node-modules", modules, "--output", out,
                             "--package-json", ROOT / "package.json").split())
    assert f"{modules / 'vega' / 'package.json'}: not found" in message and INSTALL in message
    assert not out.exists()


def test_dvc_plots_show_draws_every_chart_offline(plots_project, offline_browser, tmp_path):
    out = tmp_path / "plots"
    dvc("plots", "show", "-o", out, cwd=plots_project)
    page = out / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and fetching_tags(html) == []
    drawn = open_offline(offline_browser, page)
    assert len(drawn) == 3 and all(n > 0 for _, n in drawn), drawn
    assert offline_browser.execute_script("return typeof vegaEmbed") == "function"
    assert [e for e in offline_browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert requests_made(offline_browser) == [page.resolve().as_uri()]  # the page itself, nothing else
    assert_not_blank(offline_browser.get_screenshot_as_png())

    # DVC's own page (no template): the same browser draws nothing, its CDN scripts are not reached.
    template = dvc("config", "plots.html_template", cwd=plots_project).strip()
    dvc("config", "--unset", "plots.html_template", cwd=plots_project)
    try:
        dvc("plots", "show", "-o", tmp_path / "cdn", cwd=plots_project)
    finally:
        dvc("config", "plots.html_template", template, cwd=plots_project)
    drawn = open_offline(offline_browser, tmp_path / "cdn" / "index.html", wait=2)
    assert len(drawn) == 3 and all(n == 0 for _, n in drawn), drawn
    assert offline_browser.execute_script("return typeof vegaEmbed") == "undefined"


def test_the_viewer_links_to_the_curves_beside_it(plots_project, tiny_sudoku_shards, offline_browser, tmp_path):
    """`hrm view` links to a `dvc plots show` page in plots/ beside it, and only then; the link opens the curves,
    drawn offline."""
    from selenium.webdriver.common.by import By

    page = tmp_path / "view" / "index.html"
    ok("view", "--datasets", tiny_sudoku_shards, "--run", tmp_path / "none", "--output", page)
    assert '"plots_page":null' in page.read_text()
    dvc("plots", "show", "-o", page.parent / "plots", cwd=plots_project)
    ok("view", "--datasets", tiny_sudoku_shards, "--run", tmp_path / "none", "--output", page)
    offline_browser.get(page.resolve().as_uri())
    link = offline_browser.find_element(By.ID, "plots-link")
    curves = (page.parent / "plots" / "index.html").resolve().as_uri()
    assert link.get_attribute("href") == curves
    link.click()
    assert offline_browser.current_url == curves
    drawn = open_offline(offline_browser, page.parent / "plots" / "index.html")
    assert len(drawn) == 3 and all(n > 0 for _, n in drawn), drawn
