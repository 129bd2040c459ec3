"""hrm.solver on real third-party puzzles (tests/data/real-sudoku) and edge cases."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import REAL_SUDOKU as REAL
from hrm.solver import SEVERAL, SolveResult, count_solutions, rate, solve
from hrm.sudoku import apply_transforms, random_transforms, strings_to_grids

# We reproduce tdoku's rating exactly on 37 of the 39 rows (rho = 0.979).
MIN_SPEARMAN = 0.95


def _rows(name: str) -> list[dict]:
    with open(REAL / name, newline="") as f:  # shipped with the tests: missing is a failure
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def valid():
    rows = _rows("valid.csv")
    return (
        strings_to_grids([r["question"] for r in rows]),
        strings_to_grids([r["answer"] for r in rows]),
        np.array([int(r["rating"]) for r in rows]),
        [r["source"] for r in rows],
    )


@pytest.fixture(scope="module")
def solved(valid):
    return solve(valid[0])


def test_valid_puzzles_solve_to_their_answer_uniquely(valid, solved):
    questions, answers, _, _ = valid
    assert isinstance(solved, SolveResult)
    assert solved.solution.dtype == np.uint8 and solved.solution.shape == questions.shape
    assert solved.num_solutions.dtype == np.int64 and solved.rating.dtype == np.int64
    np.testing.assert_array_equal(solved.solution, answers)
    np.testing.assert_array_equal(solved.num_solutions, np.ones(len(questions)))


def test_no_unique_solution_rows_are_counted():
    rows = _rows("no-unique-solution.csv")
    grids = strings_to_grids([r["question"] for r in rows])
    expected = np.array([{"none": 0, "several": SEVERAL}[r["solutions"]] for r in rows])
    assert set(expected) == {0, SEVERAL}
    np.testing.assert_array_equal(count_solutions(grids), expected)
    result = solve(grids)
    # A solution is reported exactly when one exists; none -> all zeros.
    assert (result.solution[expected == 0] == 0).all()
    assert (result.solution[expected > 0] > 0).all()


def test_tdoku_zero_ratings_are_zero(valid, solved):
    _, _, tdoku, sources = valid
    zero = tdoku == 0
    assert zero.sum() >= 10 and sources.index("hard20") == 0 and tdoku[0] == 0
    np.testing.assert_array_equal(solved.rating[zero], 0)
    assert (solved.rating[~zero] > 0).all()


def test_rating_follows_tdoku(valid, solved):
    from scipy.stats import spearmanr

    tdoku = valid[2]
    assert spearmanr(solved.rating, tdoku).statistic >= MIN_SPEARMAN
    # Same constraints and branching rule as tdoku: most ratings are identical, and the
    # Sudoku-Extreme row gives the dataset's 18.
    assert (solved.rating == tdoku).sum() >= 35
    assert solved.rating[-1] == 18 == tdoku[-1]


def test_rate_and_count_agree_with_solve(valid, solved):
    questions = valid[0]
    np.testing.assert_array_equal(rate(questions), solved.rating)
    # The rating counts guesses up to the first solution only, so the limit does not change it.
    np.testing.assert_array_equal(solve(questions, limit=5).rating, solved.rating)
    np.testing.assert_array_equal(count_solutions(questions, limit=1), np.ones(len(questions)))


def test_symmetric_copies_solve_to_transformed_answers(valid):
    questions, answers, _, _ = valid
    t = random_transforms(np.random.default_rng(0), len(questions))
    result = solve(apply_transforms(questions, t))
    np.testing.assert_array_equal(result.solution, apply_transforms(answers, t))
    np.testing.assert_array_equal(result.num_solutions, 1)


def test_full_grid_rates_zero_and_counts_one(valid):
    answers = valid[1][:3]
    result = solve(answers)
    np.testing.assert_array_equal(result.solution, answers)
    np.testing.assert_array_equal(result.num_solutions, 1)
    np.testing.assert_array_equal(result.rating, 0)


def test_empty_grid_has_several_solutions():
    empty = np.zeros((1, 81), dtype=np.uint8)
    assert count_solutions(empty)[0] == SEVERAL
    assert count_solutions(empty, limit=7)[0] == 7
    result = solve(empty)
    assert sorted(result.solution[0, :9]) == list(range(1, 10))


def test_invalid_grids_have_no_solution(valid):
    answer = valid[1][0]
    conflicting = np.zeros(81, dtype=np.uint8)
    conflicting[0] = conflicting[1] = 5  # same digit twice in row 0
    wrong_full = answer.copy()
    wrong_full[[0, 1]] = wrong_full[[1, 0]]  # a full grid with two cells swapped
    out_of_range = np.zeros(81, dtype=np.uint8)
    out_of_range[40] = 12
    grids = np.stack([conflicting, wrong_full, out_of_range, answer])
    result = solve(grids)
    np.testing.assert_array_equal(result.num_solutions, [0, 0, 0, 1])
    np.testing.assert_array_equal(result.rating[:3], 0)
    assert (result.solution[:3] == 0).all()
    # Wider integer dtypes are accepted; negative or large values count as invalid.
    wide = grids.astype(np.int64)
    wide[3, 0] = -1
    np.testing.assert_array_equal(count_solutions(wide), [0, 0, 0, 0])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 80), np.uint8),
        np.zeros(81, np.uint8),
        np.zeros((1, 81), np.float32),
        np.zeros((1, 81), bool),
    ],
)
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        solve(bad)


def test_bad_limit_raises_value_error():
    with pytest.raises(ValueError):
        solve(np.zeros((1, 81), np.uint8), limit=0)


def test_empty_batch():
    result = solve(np.zeros((0, 81), np.uint8))
    assert result.solution.shape == (0, 81) and len(result.num_solutions) == 0 and len(result.rating) == 0
