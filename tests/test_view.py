"""`hrm view` (pipelines/view.py): the page built from a tiny real pipeline run (train, evaluate, analyze on the
shard stage's output), opened in a real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium; .ci/run installs them): the puzzles listed match the tables, a trace's board at a given step matches
traces.parquet, the filters filter, a screenshot is not blank. Bad input is one message naming the file."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from hrm.tasks import TASKS, SUDOKU
from stage_helpers import fails, ok  # hrm ARGS through click's CliRunner, in this process

from benchmarks.headless import chromium  # Debian's chromium through Selenium (not benchmarks/ on sys.path:
# its datasets.py would shadow the datasets package for every later test)

TOKEN_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_RUN = ("--variant", "vanilla", "--global-batch-size", 4, "--epochs", 2, "--eval-interval", 2, "--eval-size", 4,
            "--hidden-size", 16, "--num-heads", 2, "--l-layers", 1, "--h-cycles", 2, "--l-cycles", 2, "--halt-max-steps", 3,
            "--puzzle-emb-ndim", 16, "--lr-warmup-steps", 1, "--no-progress")


@pytest.fixture(scope="module")
def run(tiny_sudoku_shards, tmp_path_factory) -> Path:
    """A tiny run in the DVC layout (datasets/, models/hrm, evaluate/, analysis/): the stages themselves."""
    root = tmp_path_factory.mktemp("view_run")
    (root / "datasets").symlink_to(tiny_sudoku_shards, target_is_directory=True)
    model = root / "models" / "hrm"
    ok("train", "--dataset", root / "datasets", "--output", model, *TINY_RUN)
    ok("evaluate", "--checkpoint", model, "--dataset", root / "datasets", "--variant", "vanilla", "--permutations", 2,
       "--tiers", "1-2", "--output", root / "evaluate", "--no-progress")
    ok("analyze", "--checkpoint", model, "--dataset", root / "datasets", "--variant", "vanilla", "--output",
       root / "analysis", "--sample", 4, "--segments", 3, "--shifts", 2, "--noise-runs", 1, "--fp-sample", 2,
       "--easy-k", "0,1", "--landscape-radius", 1, "--no-flow", "--no-progress")
    return root


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def open_page(browser, page: Path) -> None:
    browser.get(page.resolve().as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "1"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def texts(browser, selector: str) -> list[str]:
    return browser.execute_script(f"return Array.from(document.querySelectorAll({selector!r}), e => e.textContent)")


def test_the_page_lists_the_tables_and_steps_through_a_trace_in_a_real_browser(run, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    page = tmp_path / "view.html"
    ok("view", "--run", run, "--output", page)
    html = page.read_text()
    # Self-contained: nothing to fetch (the one URL is the SVG namespace, a name, not a request).
    assert re.findall(r"https?://[^\s\"'`]+", html) == ["http://www.w3.org/2000/svg"] * html.count("http://www.w3.org/2000/svg")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    open_page(browser, page)

    evaluated = pl.read_parquet(run / "evaluate" / "puzzles.parquet")
    browser.find_element(By.ID, "tab-evaluation").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".eval-item")) == evaluated.height
    Select(browser.find_element(By.ID, "eval-filter")).select_by_value("unsolved")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".eval-item")) == int((~evaluated["paper_vote"]).sum())
    Select(browser.find_element(By.ID, "eval-filter")).select_by_value("all")

    analysed = pl.read_parquet(run / "analysis" / "puzzles.parquet")
    traces = pl.read_parquet(run / "analysis" / "traces.parquet")
    browser.find_element(By.ID, "tab-traces").click()
    items = browser.find_elements(By.CSS_SELECTOR, ".trace-item")
    assert len(items) == analysed.height
    row = int(items[1].get_attribute("data-row"))
    items[1].click()
    steps = traces.filter(pl.col("row") == row).sort("step")
    assert browser.find_element(By.ID, "step-slider").get_attribute("max") == str(steps.height - 1)
    # The last step is shown first; the left arrow goes back, one H step a key.
    ActionChains(browser).send_keys(Keys.ARROW_LEFT * (steps.height - 2)).perform()
    shown = browser.execute_script("return Array.from(document.querySelectorAll('#trace-board .cell'), c => +c.dataset.token)")
    assert shown == steps["prediction"][1].to_list()
    assert browser.find_element(By.ID, "trace-board").get_attribute("data-step") == str(steps["step"][1])
    assert f"step {steps['step'][1]} of {steps['step'][-1]}" in browser.find_element(By.ID, "step-label").text
    # Marked: cells changed since the step before, and decided cells that differ from the label.
    before, now = np.array(steps["prediction"][0].to_list()), np.array(steps["prediction"][1].to_list())
    assert len(browser.find_elements(By.CSS_SELECTOR, "#trace-board .cell.changed")) == int((before != now).sum())
    vanilla = json.loads((run / "datasets" / "datasets.json").read_text())["vanilla"]
    inputs, labels = split_row(run / "datasets" / vanilla, row)
    wrong = (inputs == 1) & (now != labels)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#trace-board .cell.wrong")) == int(wrong.sum())
    # Rule conflicts (Task.conflict_cells: a digit repeated in its row, column or box, a given changed) dashed.
    conflicts = SUDOKU.conflict_cells(inputs[None], now[None])[0]
    assert sorted(browser.execute_script("return Array.from(document.querySelectorAll('#trace-board .cell.conflict'), "
                                         "c => +c.dataset.index)")) == np.flatnonzero(conflicts).tolist()
    assert f"{int(conflicts.sum())} cells break a rule" in browser.find_element(By.ID, "step-label").text
    assert browser.find_elements(By.CSS_SELECTOR, "#trace-chart #chart-marker")
    facts = browser.find_element(By.ID, "trace-facts").text
    assert str(analysed.filter(pl.col("row") == row)["convergence"][0]) in facts and "critical step" in facts
    runs = pl.read_parquet(run / "analysis" / "multistability.parquet").filter(pl.col("row") == row).sort("run")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#multistability figure")) == runs.height
    # The same end answer, the same letter (A: the traced run's last step), different ones apart.
    letters = browser.execute_script("return Array.from(document.querySelectorAll('#multistability figure'), "
                                     "f => f.dataset.answer)")
    answers = [tuple(a) for a in runs["answer"].to_list()]
    last = tuple(steps["prediction"][-1].to_list())
    assert [a == last for a in answers] == [x == "A" for x in letters]
    assert len(set(zip(answers, letters))) == len(set(answers)) == len(set(letters))
    Select(browser.find_element(By.ID, "trace-filter")).select_by_value("wrong")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".trace-item")) == int((~analysed["exact"]).sum())
    assert_not_blank(browser.get_screenshot_as_png())


def split_row(dataset: Path, row: int) -> tuple[np.ndarray, np.ndarray]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    shard = manifest["splits"]["test"]["shards"][0]
    table = pa.ipc.open_file(str(dataset / shard["file"])).read_all()
    return np.array(table["inputs"][row].as_py()), np.array(table["labels"][row].as_py())


def assert_not_blank(png: bytes) -> None:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[0] > 500 and image.shape[1] > 500
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 20, "the screenshot is (nearly) one colour"
    assert (image.reshape(-1, 3) != image[0, 0]).any(axis=1).mean() > 0.05


def test_the_datasets_section_shows_each_original_beside_its_versions(built, browser, tmp_path):
    """The dataset stages' chain on real puzzles (4 augmented versions and hints per train puzzle)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root, _ = built
    page = tmp_path / "datasets.html"
    ok("view", "--datasets", root / "datasets", "--output", page, "--max-groups", 5, "--run", tmp_path / "none")
    open_page(browser, page)
    browser.find_element(By.ID, "tab-datasets").click()
    Select(browser.find_element(By.ID, "dataset-select")).select_by_visible_text("sudoku-csv-20-aug-4-hint")
    assert Select(browser.find_element(By.ID, "split-select")).first_selected_option.text == "train"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".group-item")) == 5  # --max-groups
    browser.find_elements(By.CSS_SELECTOR, ".group-item")[2].click()
    captions = texts(browser, "#group-detail figcaption")
    train = pl.read_ipc(next((root / "datasets" / "sudoku-csv-20-aug-4-hint" / "train").glob("*.arrow")))
    group = train.filter(pl.col("group_id") == 2)
    assert len(captions) == group.height  # 1 original, 4 augmented, 5 hints: 10 rows, under --max-versions
    for caption, record in zip(captions, group.iter_rows(named=True)):
        words = SUDOKU.describe_transform({name: record[name] for name in SUDOKU.transform_names})
        assert caption.endswith(f"(puzzle {record['puzzle_id']}): {words}")
        assert caption.startswith("hint of puzzle" if record["variant"] == "hint" else record["variant"])
    assert captions[0].endswith("identity")
    # Filters: the groups listed are those whose rating is in range.
    ratings = [g["rating"] for g in browser.execute_script(
        "return D.datasets[+document.getElementById('dataset-select').value].splits.train.groups")]
    browser.find_element(By.ID, "rating-min").send_keys(str(sorted(ratings)[2]))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".group-item")) == sum(r >= sorted(ratings)[2] for r in ratings)


def test_every_task_describes_its_boards():
    for task in TASKS.values():
        view = task.board_view().as_json()
        assert view["rows"] * view["cols"] == task.seq_len, task.name
        assert {int(t) for t in view["cells"]} == set(range(task.vocab_size)), task.name
        assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", look[1]) for look in view["cells"].values()), task.name
        assert json.loads(json.dumps(view)) == view
    arc = TASKS["arc-agi-1"]
    assert [view[1] for t, view in sorted(arc.board_view().cells.items()) if t >= 2] == [c for c in arc.palette]


def test_bad_input_is_one_message_naming_the_file_and_nothing_is_written(run, tmp_path):
    page = tmp_path / "view.html"
    message = fails("view", "--run", tmp_path, "--output", page)
    assert f"{tmp_path}: not a pipeline output" in message and not page.exists()

    analysis = tmp_path / "analysis"
    analysis.mkdir()
    for name in ("puzzles.parquet", "multistability.parquet", "run.json"):
        (analysis / name).write_bytes((run / "analysis" / name).read_bytes())
    traces = pl.read_parquet(run / "analysis" / "traces.parquet")
    traces.with_columns(pl.lit(float("nan"), pl.Float32).alias("res_H")).write_parquet(analysis / "traces.parquet")
    ok("view", "--analysis", analysis, "--run", tmp_path / "none", "--output", page)  # a NaN is drawn as a dash
    assert "NaN" not in page.read_text()
    page.unlink()
    traces.drop("res_H").write_parquet(analysis / "traces.parquet")
    message = fails("view", "--analysis", analysis, "--run", tmp_path / "none", "--output", page)
    assert f"{analysis / 'traces.parquet'}: no column 'res_H'" in " ".join(message.split()) and not page.exists()

    (analysis / "traces.parquet").unlink()
    message = fails("view", "--analysis", analysis, "--run", tmp_path / "none", "--output", page)
    assert f"{analysis / 'traces.parquet'}: not found" in " ".join(message.split()) and not page.exists()

    page.write_text("the previous page")  # a failed run leaves it as it was
    message = fails("view", "--evaluate", run / "analysis", "--run", tmp_path / "none", "--output", page)
    assert f"{run / 'analysis'}: holds the output of `hrm analyze`" in " ".join(message.split())
    assert page.read_text() == "the previous page"


def embedded(page: Path) -> dict:
    """The data the page embeds (its hrm-data script element)."""
    text = page.read_text()
    start = text.index('<script type="application/json" id="hrm-data">') + len('<script type="application/json" id="hrm-data">')
    return json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))


def test_the_view_stage_takes_its_caps_from_params_yaml(tiny_sudoku_shards, tmp_path):
    """dvc.yaml's view stage: `--config-file params.yaml --section view` sets the caps (the command line wins);
    any other key of the section, a path above all, is refused naming it."""
    import yaml

    stage = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]["view"]
    assert stage["cmd"].split()[:2] == ["hrm", "view"] and "data/view/index.html" in stage["outs"]
    config, page = tmp_path / "params.yaml", tmp_path / "view.html"
    config.write_text("seed: 0\nview:\n  max_groups: 1\n  max_versions: 1\n  max_puzzles: 7\n  max_traced: 3\n")
    base = ("view", "--datasets", tiny_sudoku_shards, "--run", tmp_path / "none", "--output", page,
            "--config-file", config, "--section", "view")
    ok(*base)
    data = embedded(page)
    assert data["caps"] == {"max_groups": 1, "max_versions": 1, "max_puzzles": 7, "max_traced": 3}
    assert all(len(split["groups"]) == 1 for ds in data["datasets"] for split in ds["splits"].values())
    ok(*base, "--max-groups", 2)
    assert embedded(page)["caps"]["max_groups"] == 2
    config.write_text("view:\n  max_groups: 1\n  output: elsewhere.html\n")
    page.unlink()
    message = " ".join(fails(*base).split())
    assert f"{config}: unknown key(s) in view: output" in message and not page.exists()


def test_the_page_reads_only_declared_verified_bytes(run, tmp_path):
    """A clone that pulled the stages' outputs (no run.json: no DVC stage declares it) builds the page: the
    per-puzzle tables record their dataset (name, split, manifest sha256), found under --datasets and used only
    when its manifest and shards have the recorded bytes; a mismatching dataset is refused naming the file."""
    import shutil

    from pipelines.tables import dataset_record
    from hrm.integrity import file_sha256

    vanilla = json.loads((run / "datasets" / "datasets.json").read_text())["vanilla"]
    for stage in ("evaluate", "analysis"):
        assert dataset_record(run / stage / "puzzles.parquet") == {
            "name": vanilla, "split": "test", "manifest_sha256": file_sha256(run / "datasets" / vanilla / "manifest.json")}
    clone, page = tmp_path / "clone", tmp_path / "view.html"
    shutil.copytree(run / "datasets", clone / "datasets")  # a copy: the fixture's folder stays as it is
    declared = {"evaluate": ("puzzles.parquet", "metrics.json"),
                "analysis": ("puzzles.parquet", "traces.parquet", "multistability.parquet", "metrics.json")}
    for stage, names in declared.items():
        (clone / stage).mkdir()
        for name in names:
            shutil.copyfile(run / stage / name, clone / stage / name)
    ok("view", "--run", clone, "--output", page)
    reference = tmp_path / "reference.html"
    ok("view", "--run", run, "--output", reference)
    assert embedded(page)["boards"] == embedded(reference)["boards"] and embedded(page)["boards"]

    manifest = clone / "datasets" / vanilla / "manifest.json"
    original = manifest.read_bytes()
    manifest.write_bytes(original.rstrip() + b" \n")  # the same JSON, other bytes: another build as far as we know
    page.unlink()
    message = " ".join(fails("view", "--run", clone, "--output", page).split())
    assert f"{manifest}: content does not match its recorded sha256" in message and not page.exists()
    manifest.write_bytes(original)
    shard = clone / "datasets" / vanilla / json.loads(original)["splits"]["test"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes() + b"\0")
    message = " ".join(fails("view", "--run", clone, "--output", page).split())
    assert f"{shard}: content does not match its recorded sha256" in message and not page.exists()

    pl.read_parquet(run / "evaluate" / "puzzles.parquet").write_parquet(clone / "evaluate" / "puzzles.parquet")
    message = " ".join(fails("view", "--evaluate", clone / "evaluate", "--run", tmp_path / "none", "--output", page).split())
    assert f"{clone / 'evaluate' / 'puzzles.parquet'}: records no dataset" in message and not page.exists()


def test_the_evaluation_shows_every_pass_of_a_puzzle(run, browser, tmp_path):
    """Item 2: a puzzle's outcome per checkpoint and pass (exact, halted, verified, first halting segment) read back
    from the page against puzzles.parquet's per-pass columns; the exact passes counted in the list; the filters."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from hrm.evaluate.results import unpack_passes
    from pipelines.tables import PASSES_KEY, table_metadata

    page = tmp_path / "view.html"
    ok("view", "--run", run, "--output", page)
    open_page(browser, page)
    path = run / "evaluate" / "puzzles.parquet"
    evaluated, layout = pl.read_parquet(path), table_metadata(path, PASSES_KEY)
    k, p = len(layout["checkpoints"]), layout["passes"]
    names = list(json.loads((run / "evaluate" / "summary.json").read_text())["test"]["per_checkpoint"])
    assert (k, p) == (1, 2) and layout["checkpoints"] == names and layout["perturbation"] == "shift"
    bits = {name: unpack_passes(np.stack(evaluated[f"pass_{name}"].to_numpy()), k * p)
            for name in ("correct", "halted", "verified")}
    segments = np.stack(evaluated["pass_halt_segment"].to_numpy())
    browser.find_element(By.ID, "tab-evaluation").click()
    header = texts(browser, "#eval-table th")
    for i, item in enumerate(browser.find_elements(By.CSS_SELECTOR, ".eval-item")):
        assert item.find_elements(By.TAG_NAME, "td")[header.index("exact_passes")].text == str(int(bits["correct"][i].sum()))
    for i in (0, evaluated.height - 1):
        browser.find_elements(By.CSS_SELECTOR, ".eval-item")[i].click()
        shown = browser.execute_script("return Array.from(document.querySelectorAll('#pass-grid td.pass'), c => "
                                       "[+c.dataset.checkpoint, +c.dataset.pass, +c.dataset.exact, +c.dataset.halted, "
                                       "+c.dataset.verified, +c.dataset.segment])")
        assert shown == [[j // p, j % p, int(bits["correct"][i, j]), int(bits["halted"][i, j]), int(bits["verified"][i, j]),
                          int(segments[i, j])] for j in range(k * p)]
    assert segments.any() and bits["halted"].any()  # the tiny model halts somewhere: the check can tell flags apart
    Select(browser.find_element(By.ID, "eval-filter")).select_by_value("vote")
    only_vote = evaluated["paper_vote"] & ~evaluated["baseline"]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".eval-item")) == int(only_vote.sum())
    Select(browser.find_element(By.ID, "eval-filter")).select_by_value("solved")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".eval-item")) == int(evaluated["paper_vote"].sum())


def test_a_long_evaluation_is_listed_a_page_at_a_time(run, browser, tmp_path):
    """Item 6: 1,200 evaluated puzzles (the tiny run's table repeated, its records kept) are all embedded and all
    counted, drawn 500 rows a page; the pages hold them all, in order, and a filter starts again at page 1."""
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    big = tmp_path / "big"
    shutil.copytree(run / "evaluate", big / "evaluate")
    (big / "datasets").symlink_to(run / "datasets", target_is_directory=True)
    path = big / "evaluate" / "puzzles.parquet"
    table = pl.read_parquet(path)
    repeats = -(-1200 // table.height)
    long = pl.concat([table] * repeats).head(1200)
    long.write_parquet(path, metadata=pl.read_parquet_metadata(path))
    page = tmp_path / "view.html"
    ok("view", "--run", big, "--output", page, "--max-puzzles", 5000)
    open_page(browser, page)
    browser.find_element(By.ID, "tab-evaluation").click()
    count = browser.find_element(By.ID, "eval-count")
    assert count.get_attribute("data-count") == "1200" and "page 1 of 3" in count.text
    seen = []
    for expected in (500, 500, 200):
        items = browser.find_elements(By.CSS_SELECTOR, ".eval-item")
        assert len(items) == expected
        seen += [int(i.get_attribute("data-index")) for i in items]
        if expected == 500:
            browser.find_element(By.ID, "eval-next").click()
    assert seen == list(range(1200)) and not browser.find_element(By.ID, "eval-next").is_enabled()
    Select(browser.find_element(By.ID, "eval-filter")).select_by_value("unsolved")
    unsolved = int((~long["paper_vote"]).sum())
    assert browser.find_element(By.ID, "eval-count").get_attribute("data-count") == str(unsolved)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".eval-item")) == min(unsolved, 500)
