"""ARC in the analyses (issue 28): the error measure read from an answer alone, the colour
permutations that relabel a pair, and the multistability runs fed each row's puzzle identifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hrm.arc as arc
from hrm.analysis import PerturbedRuns, run_perturbed
from hrm.tasks import ARC_AGI_1, make_perturbations
from test_analysis import copy_model, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RULES = ARC_AGI_1.rules


def grids(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 10, (rng.integers(1, 31), rng.integers(1, 31))).astype(np.uint8) for _ in range(n)]


def test_crop_shapes_are_the_one_board_crop_on_encoded_and_noisy_boards():
    shown = grids(64)
    assert arc.crop_shapes(arc.encode_grids(shown)).tolist() == [list(g.shape) for g in shown]
    noisy = np.random.default_rng(1).integers(0, 12, (64, 900)).astype(np.uint8)
    noisy[:32, :40] = 5  # some boards with a colour run at the origin
    expected = [list(arc.decode_board(b).shape) for b in noisy]
    assert arc.crop_shapes(noisy).tolist() == expected
    assert arc.crop_shapes(noisy.reshape(8, 8, 900)).shape == (8, 8, 2)


def test_malformed_cells_count_the_breaks_of_the_grid_format():
    boards = arc.encode_grids(grids(16, seed=2))
    assert (arc.malformed_cells(boards) == 0).all()  # every encoded grid is well formed
    grid = np.full((3, 4), 7, np.uint8)
    board = arc.encode_grids([grid])[0].reshape(30, 30)
    broken = board.copy()
    broken[3, 1] = arc.PAD  # a missing end-of-grid cell below the grid
    broken[10, 10] = 2 + 4  # a stray colour far outside
    broken[0, 4] = arc.PAD  # the end-of-grid column broken on row 0
    assert arc.malformed_cells(broken.reshape(1, 900)).tolist() == [3]
    assert arc.malformed_cells(np.zeros((2, 900), np.uint8)).tolist() == [0, 0]  # nothing read, nothing broken
    # The rules' error measure: the answer's alone, shaped as the answers, the questions unread.
    answers = np.stack([boards[:4], np.stack([broken.reshape(900)] * 4)])
    assert RULES.errors(boards[None, :4], answers).tolist() == [[0, 0, 0, 0], [3, 3, 3, 3]]
    assert RULES.error_name == "malformed_cells" and RULES.marks(boards[:1]).tolist() == [(boards[0] >= 2).sum()]


def test_the_decided_cells_are_the_output_grid_cells():
    inputs, labels = arc.encode_grids(grids(4, seed=3)), arc.encode_grids(grids(4, seed=4)).astype(np.int16)
    labels[labels == arc.PAD] = -100  # as the loader hands them
    cells = RULES.blank_cells(inputs, labels)
    assert cells.sum(1).tolist() == [g.size for g in grids(4, seed=4)]


def test_colour_permutations_keep_0_are_distinct_seeded_and_refuse_other_kinds():
    p = make_perturbations("colours", 40, seed=3)
    assert p.kind == "colours" and len(p) == 40
    colour_maps = p.token_maps[:, 2:12] - 2
    assert (colour_maps[0] == np.arange(10)).all() and (colour_maps[:, 0] == 0).all()
    assert len({tuple(m) for m in colour_maps.tolist()}) == 40
    assert (p.token_maps[:, :2] == [0, 1]).all() and (p.token_maps[:, 12:] == np.arange(12, 256)).all()
    assert np.array_equal(make_perturbations("colours", 40, seed=3).token_maps, p.token_maps)
    assert not np.array_equal(make_perturbations("colours", 40, seed=4).token_maps, p.token_maps)
    with pytest.raises(ValueError, match="relabelling is colours"):
        ARC_AGI_1.make_perturbations("shift", 3, 0)


ARC_SHAPE = dict(seq_len=900, vocab_size=12, num_puzzle_identifiers=5, halt_max_steps=2)


def arc_model(identity: bool, seed: int = 0):
    """A tiny ARC-shaped model (900 cells, 12 tokens, 5 identifiers); ``identity``: test_analysis' copy
    model, each answer its input (a fixed point) whatever the colours; else random, the puzzle embedding too."""
    if identity:
        return copy_model(**ARC_SHAPE)
    model = tiny_model(seed, **ARC_SHAPE)
    with torch.no_grad():
        model.inner.puzzle_emb.weights.normal_(0, 1)
    return model


def test_recoloured_runs_are_mapped_back_before_they_are_compared():
    """A copy puzzle through a model that copies: every recoloured run's answer, its colours mapped back,
    is the label, well formed, so one answer per puzzle and every run exact."""
    boards = arc.encode_grids(grids(3, seed=5)).astype(np.int32)
    runs = PerturbedRuns(shifts=4, noise_runs=0, noise=(), segments=2)
    ms = run_perturbed(arc_model(identity=True), boards, boards, runs, identifiers=np.array([1, 2, 3]), rules=RULES)
    assert list(ms.kind) == ["plain", "colours", "colours", "colours"]
    assert ms.exact.all() and (ms.conflicts == 0).all() and (ms.n_answers == 1).all()
    assert (ms.answers == boards[None].astype(np.uint8)).all()


def test_each_row_runs_with_its_own_puzzle_identifier():
    boards = arc.encode_grids(grids(2, seed=6)).astype(np.int32)
    runs = PerturbedRuns(shifts=2, noise_runs=0, noise=(), segments=2)
    model = arc_model(identity=False, seed=1)
    blank = run_perturbed(model, boards, boards, runs, rules=RULES)
    again = run_perturbed(model, boards, boards, runs, identifiers=np.zeros(2, np.int64), rules=RULES)
    own = run_perturbed(model, boards, boards, runs, identifiers=np.array([3, 4]), rules=RULES)
    assert np.array_equal(blank.final_res, again.final_res)  # None is the blank identifier 0
    assert not np.array_equal(blank.final_res, own.final_res)  # the identifiers reach the model
