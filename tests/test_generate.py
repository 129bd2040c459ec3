"""hrm.generate: seeded, unique-solution puzzles with the requested controls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrm.generate import GeneratedPuzzles, describe, generate_puzzles
from hrm.solver import count_solutions, solve
from hrm.sudoku import agrees_with_givens, is_valid_solution, num_blanks


@pytest.fixture(scope="module")
def batch() -> GeneratedPuzzles:
    return generate_puzzles(300, seed=123)


def test_types_and_shapes(batch):
    assert batch.questions.dtype == np.uint8 and batch.questions.shape == (300, 81)
    assert batch.answers.dtype == np.uint8 and batch.answers.shape == (300, 81)
    assert batch.ratings.dtype == np.int64 and batch.ratings.shape == (300,)


def test_every_puzzle_has_its_answer_as_unique_solution(batch):
    np.testing.assert_array_equal(count_solutions(batch.questions), 1)
    assert is_valid_solution(batch.answers).all()
    assert agrees_with_givens(batch.questions, batch.answers).all()
    result = solve(batch.questions)
    np.testing.assert_array_equal(result.solution, batch.answers)
    np.testing.assert_array_equal(result.rating, batch.ratings)


def test_puzzles_are_minimal(batch):
    # Every given is needed: removing any one of them allows a second solution.
    q = batch.questions[:20]
    for i in range(len(q)):
        givens = np.flatnonzero(q[i])
        fewer = np.repeat(q[i : i + 1], len(givens), axis=0)
        fewer[np.arange(len(givens)), givens] = 0
        assert (count_solutions(fewer) == 2).all()


def test_same_seed_same_bytes(batch):
    again = generate_puzzles(300, seed=123)
    assert again.questions.tobytes() == batch.questions.tobytes()
    assert again.answers.tobytes() == batch.answers.tobytes()
    assert again.ratings.tobytes() == batch.ratings.tobytes()


def test_prefix_property(batch):
    small = generate_puzzles(100, seed=123)
    np.testing.assert_array_equal(small.questions, batch.questions[:100])
    np.testing.assert_array_equal(small.answers, batch.answers[:100])
    np.testing.assert_array_equal(small.ratings, batch.ratings[:100])


def test_different_seeds_differ(batch):
    other = generate_puzzles(300, seed=124)
    assert not np.array_equal(other.questions, batch.questions)
    assert len({q.tobytes() for q in np.concatenate([batch.questions, other.questions])}) == 600
    assert len({a.tobytes() for a in batch.answers}) == 300


def test_min_blanks_and_min_rating_respected():
    hard = generate_puzzles(100, seed=5, min_rating=1)
    assert (hard.ratings >= 1).all()
    np.testing.assert_array_equal(solve(hard.questions).rating, hard.ratings)
    sparse = generate_puzzles(100, seed=5, min_blanks=58)
    assert (num_blanks(sparse.questions) >= 58).all()
    np.testing.assert_array_equal(count_solutions(sparse.questions), 1)


def test_max_blanks_caps_blanks():
    easy = generate_puzzles(50, seed=9, max_blanks=30)
    np.testing.assert_array_equal(num_blanks(easy.questions), 30)
    np.testing.assert_array_equal(count_solutions(easy.questions), 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1, "seed": 0},
        {"n": 1, "seed": 1.5},
        {"n": 1, "seed": 0, "min_blanks": 65},
        {"n": 1, "seed": 0, "max_blanks": 70},
        {"n": 1, "seed": 0, "min_blanks": 40, "max_blanks": 30},
        {"n": 1, "seed": 0, "min_rating": -1},
    ],
)
def test_bad_controls_raise(kwargs):
    with pytest.raises(ValueError):
        generate_puzzles(**kwargs)


def test_unsatisfiable_controls_raise():
    with pytest.raises(ValueError, match="attempts"):
        generate_puzzles(1, seed=0, min_blanks=64)


def test_zero_puzzles_and_wrapping_seeds():
    assert generate_puzzles(0, seed=0).questions.shape == (0, 81)
    # Seeds are taken modulo 2**64.
    a, b = generate_puzzles(3, seed=-1), generate_puzzles(3, seed=2**64 - 1)
    np.testing.assert_array_equal(a.questions, b.questions)


def test_describe_is_json_able(batch):
    summary = describe(batch.questions, batch.ratings)
    json.dumps(summary)
    assert summary["count"] == 300
    assert sum(summary["rating"]["histogram"].values()) == 300
    assert sum(summary["blanks"]["histogram"].values()) == 300
    blanks = num_blanks(batch.questions)
    assert summary["blanks"]["min"] == blanks.min() and summary["blanks"]["max"] == blanks.max()
    assert summary["rating"]["max"] == batch.ratings.max()
    assert describe(batch.questions[:0], batch.ratings[:0])["rating"]["median"] is None
