"""The per-pass record of an evaluation (issue 31, item 2; hrm.evaluate.results.EvalResult.pass_table): for every
puzzle and every (checkpoint, pass), exact, halted and verified as bits and the first halting segment, through a
scripted runner whose every pass is known."""

from __future__ import annotations

import numpy as np

from hrm.evaluate.results import unpack_passes
from hrm.evaluate.run import evaluate_puzzles
from hrm.tasks import SUDOKU, make_perturbations
from test_first_to_halt import ScriptedRunner, real_puzzles  # noqa: F401 - the fixture: 12 real puzzles


def test_every_pass_of_every_puzzle_is_recorded(real_puzzles):
    q, a, ratings = real_puzzles
    # K = 2 checkpoints x P = 3 passes, 4 segments: pass (k, p) halts from halt_at[k][p] (0: never) and is right
    # from right_from[k][p] (0: never; a right answer is the label, which the verifier accepts).
    halt_at, right_from = [[2, 3, 0], [4, 0, 1]], [[2, 0, 1], [4, 1, 0]]
    runner = ScriptedRunner(halt_at=halt_at, right_from=right_from, q=[[0.0, 0.0, 5.0], [1.0, 2.0, -1.0]])
    res = evaluate_puzzles(runner, q, a, perturbations=make_perturbations("shift", 3), ratings=ratings, batch_size=5,
                           rules=SUDOKU.rules)
    table = res.puzzle_table()
    n = len(q)
    assert table["pass_correct"].shape == table["pass_halted"].shape == table["pass_verified"].shape == (n, 1)
    assert table["pass_halt_segment"].shape == (n, 6) and table["pass_halt_segment"].dtype == np.uint8
    right = np.array(right_from).reshape(-1) > 0  # column k * P + p
    assert (unpack_passes(table["pass_correct"], 6) == right).all()
    assert (unpack_passes(table["pass_verified"], 6) == right).all()
    assert (unpack_passes(table["pass_halted"], 6) == (np.array(halt_at).reshape(-1) > 0)).all()
    assert (table["pass_halt_segment"] == np.array(halt_at).reshape(-1)).all()
    # The puzzle's outcomes are functions of its passes.
    assert (table["baseline"] == right[3]).all() and (table["verified_any"] == right.any()).all()
    assert (table["first_to_halt_segment"] == 1).all()  # pass (1, 2) halts first


def test_the_record_is_the_same_whatever_the_batches_and_grows_with_the_passes(real_puzzles):
    q, a, ratings = real_puzzles
    runner = ScriptedRunner(halt_at=[[1, 0, 3, 4, 2, 0, 0, 1, 2]], right_from=[[1, 0, 0, 2, 0, 3, 4, 0, 1]],
                            q=[[0.0] * 9])
    whole = evaluate_puzzles(runner, q, a, perturbations=make_perturbations("shift", 9), batch_size=len(q),
                             rules=SUDOKU.rules).puzzle_table()
    parts = [evaluate_puzzles(runner, q[lo:lo + 3], a[lo:lo + 3], perturbations=make_perturbations("shift", 9),
                              batch_size=2, rules=SUDOKU.rules).puzzle_table() for lo in range(0, len(q), 3)]
    for name in ("pass_correct", "pass_halted", "pass_verified", "pass_halt_segment"):
        assert np.array_equal(np.concatenate([p[name] for p in parts]), whole[name]), name
    # 9 passes: 2 bytes of bits each (bit 8 in the second byte), one byte of segment a pass: 15 bytes a puzzle.
    assert sum(whole[k].shape[1] for k in ("pass_correct", "pass_halted", "pass_verified", "pass_halt_segment")) == 15
    assert (whole["pass_correct"][:, 1] == 1).all() and (unpack_passes(whole["pass_correct"], 9)[:, 8]).all()
    assert (whole["pass_correct"][:, 0] == 0b01101001).all()  # passes 0, 3, 5, 6 right: bit p of the first byte
