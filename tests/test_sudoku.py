import csv

import numpy as np
import pytest

from conftest import REAL_SUDOKU as REAL
from hrm import sudoku as S


@pytest.fixture(scope="module")
def valid():
    with open(REAL / "valid.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return S.strings_to_grids([r["question"] for r in rows]), S.strings_to_grids([r["answer"] for r in rows])


def test_encoding_round_trip(valid):
    questions, _ = valid
    strings = S.grids_to_strings(questions)
    assert (S.strings_to_grids(strings) == questions).all()
    tokens = S.grids_to_tokens(questions)
    assert tokens.dtype == np.uint8 and tokens.min() >= 1 and tokens.max() <= 10
    assert (tokens[questions == 0] == S.BLANK_TOKEN).all()
    assert (S.tokens_to_grids(tokens) == questions).all()
    assert S.strings_to_grids(["0" * 81])[0].sum() == 0  # '0' is a blank too


def test_encoding_matches_reference_bytes():
    # Section 2: '.' -> 0 -> token 1, digit d -> token d + 1.
    grid = S.strings_to_grids(["." + "123456789" * 8 + "12345678"])
    assert grid[0, :4].tolist() == [0, 1, 2, 3]
    assert S.grids_to_tokens(grid)[0, :4].tolist() == [1, 2, 3, 4]


def test_encoding_errors_name_rows():
    with pytest.raises(S.EncodingError, match="rows 1"):
        S.strings_to_grids(["." * 81, "." * 80])
    with pytest.raises(S.EncodingError, match="rows 0, 2"):
        S.strings_to_grids(["x" + "." * 80, "." * 81, "." * 80 + "a"])
    with pytest.raises(S.EncodingError, match="tokens outside"):
        S.tokens_to_grids(np.zeros((1, 81), dtype=np.uint8))


def test_checks(valid):
    questions, answers = valid
    assert S.is_valid_solution(answers).all()
    assert not S.is_valid_solution(questions).any()  # blanks are not a solution
    assert S.agrees_with_givens(questions, answers).all()
    assert (S.conflict_count(answers) == 0).all()
    assert (S.conflict_count(questions) == 0).all()

    broken = answers.copy()
    broken[:, 0] = broken[:, 1]  # a repeat in row 0, column 0 and box 0
    assert not S.is_valid_solution(broken).any()
    assert (S.conflict_count(broken) == 3).all()
    wrong_given = questions.copy()
    cell = np.argmax(questions[0] > 0)
    wrong_given[0, cell] = wrong_given[0, cell] % 9 + 1
    assert S.agrees_with_givens(wrong_given, answers).tolist() == [False] + [True] * (len(answers) - 1)
    assert S.conflict_count(np.full((1, 81), 5, dtype=np.uint8))[0] == 27 * 8


def _reference_transform(grid, t, i):
    """The builder's per-puzzle recipe, written out cell by cell."""
    x = grid.reshape(9, 9)
    if t.transpose[i]:
        x = x.T
    out = np.empty((9, 9), dtype=np.uint8)
    for r in range(9):
        for c in range(9):
            out[r, c] = t.digit_map[i][x[t.row_order[i][r], t.col_order[i][c]]]
    return out.reshape(81)


def test_transforms_match_reference_and_keep_validity(valid):
    questions, answers = valid
    t = S.random_transforms(np.random.default_rng(7), len(answers))
    moved_q, moved_a = S.apply_transforms(questions, t), S.apply_transforms(answers, t)
    for i in range(len(answers)):
        assert (moved_a[i] == _reference_transform(answers[i], t, i)).all()
    assert S.is_valid_solution(moved_a).all()
    assert S.agrees_with_givens(moved_q, moved_a).all()
    assert (S.num_blanks(moved_q) == S.num_blanks(questions)).all()
    assert t.transpose.any() and not t.transpose.all()
    # Row orders keep bands together: each block of 3 holds one band.
    bands = np.sort(t.row_order.reshape(-1, 3, 3) // 3, axis=2)
    assert (bands == bands[:, :, :1]).all()
    assert (t.digit_map[:, 0] == 0).all()


@pytest.mark.parametrize("n", [0, 1, 7, 4096])
def test_random_transforms_are_argsorts_of_the_documented_draws(n):
    rng = np.random.default_rng(n)
    digits = np.argsort(rng.random((n, 9)), axis=1) + 1
    transpose = rng.random(n) < 0.5
    orders = []
    for _ in range(2):
        bands = np.argsort(rng.random((n, 3)), axis=1)
        inner = np.argsort(rng.random((n * 3, 3)), axis=1).reshape(n, 3, 3)
        orders.append((bands[:, :, None] * 3 + inner).reshape(n, 9))
    t = S.random_transforms(np.random.default_rng(n), n)
    assert t.digit_map.dtype == np.uint8 and (t.digit_map[:, 1:] == digits).all() and (t.digit_map[:, 0] == 0).all()
    assert (t.transpose == transpose).all()
    assert (t.row_order == orders[0]).all() and (t.col_order == orders[1]).all()


def test_apply_transforms_rows_gathers_and_converts_tokens(valid):
    questions, _ = valid
    rng = np.random.default_rng(3)
    src = rng.integers(0, len(questions), 200)
    t = S.random_transforms(rng, 200)
    expected = np.stack([_reference_transform(questions[s], t, i) for i, s in enumerate(src)])
    assert (S.apply_transforms_rows(questions, src, t) == expected).all()
    assert (S.apply_transforms_rows(questions, src, t, out_tokens=True) == expected + 1).all()
    assert (S.apply_transforms_rows(questions + 1, src, t, src_tokens=True, out_tokens=True) == expected + 1).all()


def test_transforms_are_seeded_and_identity_is_identity(valid):
    _, answers = valid
    a = S.random_transforms(np.random.default_rng(3), 5)
    b = S.random_transforms(np.random.default_rng(3), 5)
    assert all((getattr(a, f) == getattr(b, f)).all() for f in ("digit_map", "transpose", "row_order", "col_order"))
    assert (S.apply_transforms(answers, S.Transforms.identity(len(answers))) == answers).all()


def test_digit_shift_maps():
    maps = S.digit_shift_maps(range(9))
    assert (maps[0] == np.arange(10)).all()
    assert maps[1, 9] == 1 and maps[1, 1] == 2 and maps[:, 0].max() == 0
    # As tokens: t -> ((t - 2 + p) mod 9) + 2 for t in 2..10 (docs/reference-semantics.md §9).
    tokens = np.arange(2, 11)
    for p in range(9):
        assert (maps[p][tokens - 1] + 1 == (tokens - 2 + p) % 9 + 2).all()
