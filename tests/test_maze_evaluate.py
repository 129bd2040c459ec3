"""Evaluation on mazes: the fork's two passes (as is, S and G exchanged), its any-pass rule, the
label-free verifier (any optimal path), easy tiers that mark part of the path, and ``hrm evaluate``
on a maze dataset end to end (a trained tiny checkpoint; a Sudoku checkpoint refused by name)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrm import maze as M
from hrm.evaluate.engine import EngineOutput
from hrm.evaluate.results import EvalTotals
from hrm.evaluate.run import evaluate_puzzles
from hrm.evaluate.selection import paper_vote
from hrm.evaluate.tiers import reveal_tier_rows
from hrm.tasks import MAZE, make_perturbations
from hrm.tasks.maze import maze_verifier
from stage_helpers import fails, ok
from test_maze import TWIN, TWIN_BOTTOM, TWIN_TOP, U, U_ANSWER


@pytest.fixture(scope="module")
def mazes():
    g = M.generate_mazes(6, seed=21)
    return g.questions, g.answers


class MazeRunner:
    """Not a model: answers each row with its (perturbed) label where ``right[k, p]``, else with the
    question unchanged (no path: wrong and unverified); ``answer`` overrides pass 0's answers."""

    def __init__(self, k, p, right, halt, answer=None, segments=2):
        self.num_models, self.segments, self.p = k, segments, p
        self.right, self.halt, self.answer = np.asarray(right, bool), np.asarray(halt, bool), answer

    def run(self, inputs, labels=None, *, early_stop=False):
        m = inputs.shape[0]
        b, k = m // self.p, self.num_models
        pred = np.where(np.repeat(self.right, b, axis=1)[..., None], labels[None].astype(np.uint8), inputs[None])
        if self.answer is not None:
            pred[:, :b] = self.answer
        halted = np.repeat(self.halt, b, axis=1)
        exact = (pred == labels[None]).all(-1)
        return EngineOutput(
            predictions=pred.astype(np.uint8), q_halt=np.where(halted, 2.0, -2.0).astype(np.float32),
            q_continue=np.zeros((k, m), np.float32), halted=halted, steps=np.full((k, m), self.segments, np.int16),
            confidence=np.full((k, m, M.SEQ_LEN), 0.9, np.float32),
            segment_halted=np.repeat(halted[:, None], self.segments, 1),
            segment_q_halt=np.repeat(np.where(halted, 2.0, -2.0).astype(np.float32)[:, None], self.segments, 1),
            segment_correct=np.repeat(exact[:, None], self.segments, 1))


def test_the_swap_pass_exchanges_start_and_goal_and_restores(mazes):
    q, a = mazes
    pert = make_perturbations("swap", 2)
    x = pert.apply(q)
    assert np.array_equal(x[0], q) and np.array_equal(x[1], M.swap_start_goal(q))
    assert M.verify_paths(x[1], pert.apply(a)[1]).all()  # the same path, walked the other way
    assert np.array_equal(pert.restore(pert.apply(a)), np.broadcast_to(a, x.shape))
    with pytest.raises(ValueError, match="a maze has 2 passes"):
        make_perturbations("swap", 3)


def test_any_pass_of_any_checkpoint_solves_a_maze_halted_or_not(mazes):
    q, a = mazes
    pert = make_perturbations("swap", 2)
    # Only checkpoint 0's S/G pass is right, and nothing halts: the fork's maze rule solves every maze,
    # the Sudoku vote (which counts halted passes only) none.
    right, halt = [[False, True], [False, False]], np.zeros((2, 2), bool)
    res = evaluate_puzzles(MazeRunner(2, 2, right, halt), q, a, perturbations=pert, rules=MAZE.rules,
                              batch_size=4)
    assert res.task == "maze" and res.paper_vote().all() and not paper_vote(res.correct, res.halted).any()
    assert not res.baseline().any()
    assert res.verified_any().all() and res.label_free().all()  # the verified answer, mapped back, is the label
    totals = res.totals()
    assert totals.summary()["paper_vote"] == 1.0 and totals.solved("paper_vote", 1, 2) == 0.0  # the last checkpoint alone
    again = EvalTotals.from_arrays(totals.as_arrays(), names=totals.names, perturbation="swap", early_stop=False,
                                      task="maze")
    assert again.summary() == totals.summary()


def test_the_verifier_takes_any_optimal_path_without_the_label():
    questions = np.stack([TWIN, TWIN, U])
    labels = np.stack([TWIN_TOP, TWIN_TOP, U_ANSWER])
    answer = np.stack([TWIN_BOTTOM, TWIN, U_ANSWER])  # the other shortest path; no path; the label
    assert maze_verifier(questions, answer).tolist() == [True, False, True]
    res = evaluate_puzzles(MazeRunner(1, 2, [[False, False]], [[True, True]], answer=answer), questions, labels,
                              perturbations=make_perturbations("swap", 2), rules=MAZE.rules)
    assert res.verified.any(axis=(0, 1)).tolist() == [True, False, True]
    assert res.correct[0, 0].tolist() == [False, False, True]  # exact compares with the label


def test_easy_tiers_mark_all_but_k_path_cells(mazes):
    q, a = mazes
    rows = np.arange(len(q))
    easy = reveal_tier_rows(q, a, 3, 3, 0, rows, MAZE.rules)
    left = ((easy == M.OPEN) & (a == M.PATH)).sum(1)
    assert (left == 3).all()
    assert np.array_equal(np.where(easy == M.PATH, M.OPEN, easy), q)  # only path cells are marked, from the label
    assert ((easy == M.PATH) <= (a == M.PATH)).all()
    assert np.array_equal(easy, reveal_tier_rows(q, a, 3, 3, 0, rows, MAZE.rules))  # seeded per row


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from test_maze_datasets import build_mazes
    from test_train import TINY_FLAGS

    root = tmp_path_factory.mktemp("maze_eval")
    datasets = build_mazes(root, num_aug=0)
    ok("train", "--dataset", str(datasets), "--output", str(root / "run"), "--variant", "vanilla", *TINY_FLAGS,
       "--epochs", "4", "--eval-interval", "2", "--global-batch-size", "4", "--eval-size", "2",
       "--lr-warmup-steps", "1")
    return datasets, root / "run"


def test_hrm_evaluate_on_a_maze_dataset(trained, tmp_path):
    datasets, run = trained
    out = tmp_path / "eval"
    ok("evaluate", "--checkpoint", str(run), "--last", "2", "--dataset", str(datasets), "--variant", "vanilla",
       "--perturbation", "swap", "--permutations", "2", "--tiers", "1-2", "--output", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["puzzles"] == 5 and summary["test"]["passes"] == 2 and summary["test"]["checkpoints"] == 2
    report = (out / "report.md").read_text()
    assert "the fork's maze rule" in report and "optimal S-G path" in report and "open-cell accuracy" in report
    import polars as pl

    table = pl.read_parquet(out / "puzzles.parquet")
    assert table.height == 5 and table["blanks"].min() > 100  # open cells of a 30x30 maze


def test_hrm_evaluate_refuses_the_other_tasks_options_and_checkpoints(trained, tmp_path):
    datasets, run = trained
    args = ["evaluate", "--checkpoint", str(run), "--dataset", str(datasets), "--variant", "vanilla",
            "--output", str(tmp_path / "e")]
    manifest = next(datasets.glob("*/manifest.json"))
    assert f"--perturbation shift: {manifest} holds maze examples" in fails(*args)
    assert "a maze has 2 passes" in fails(*args, "--perturbation", "swap", "--permutations", "3")
    assert "bad tier 1-1000: need 1 <= LO <= HI <= 900" in fails(*args, "--perturbation", "swap", "--permutations", "2",
                                                                 "--tiers", "1-1000")
    assert not (tmp_path / "e").exists()


def test_a_sudoku_checkpoint_is_refused_on_maze_data(trained, tmp_path):
    import torch

    from hrm.model import HRM, HRMConfig
    from test_maze_model import ARCH, official_layout

    datasets, _ = trained
    torch.manual_seed(0)
    sudoku = HRM(HRMConfig(batch_size=4, seq_len=81, vocab_size=11, forward_dtype="float32", **ARCH))
    step = official_layout(sudoku, tmp_path / "sudoku")  # vocabulary 11: a Sudoku model
    out = fails("evaluate", "--checkpoint", str(step), "--dataset", str(datasets), "--variant", "vanilla",
                "--perturbation", "swap", "--permutations", "2", "--output", str(tmp_path / "e"))
    assert f"{step}: the model expects seq_len 81 and vocab_size 11; the maze dataset needs seq_len 900" in out
    assert not (tmp_path / "e").exists()


def test_hrm_analyze_on_a_maze_dataset(trained, tmp_path):
    import polars as pl

    from hrm.analysis import reveal_all_but

    datasets, run = trained
    out = tmp_path / "analysis"
    ok("analyze", "--checkpoint", str(run), "--dataset", str(datasets), "--variant", "vanilla", "--output", str(out),
       "--sample", "4", "--shifts", "2", "--noise-runs", "1", "--fp-sample", "3", "--easy-k", "0,2", "--easy-sample", "3",
       "--landscape-radius", "2")
    puzzles = pl.read_parquet(out / "puzzles.parquet")
    assert "broken_path_cells" in puzzles.columns and "conflicts" not in puzzles.columns
    traces = pl.read_parquet(out / "traces.parquet", columns=["row", "step", "prediction", "broken_path_cells"])
    from hrm.data import PuzzleDataset

    ds = PuzzleDataset(next(datasets.glob("*/manifest.json")).parent, "test")
    rows = traces["row"].to_numpy()
    ds_inputs = ds.gather(rows)["inputs"].astype(np.uint8)
    preds = traces["prediction"].to_numpy().astype(np.uint8)
    # The error column is the maze's own measure of each step's answer, in its maze.
    assert np.array_equal(traces["broken_path_cells"].to_numpy(), M.broken_path_cells(ds_inputs, preds))
    kinds = set(pl.read_parquet(out / "multistability.parquet")["kind"].to_list())
    assert kinds == {"plain", "swap", "noise_fork", "noise_iid"}
    land = pl.read_parquet(out / "landscape.parquet")
    assert {"broken_path_cells", "path_cells"} <= set(land.columns) and land.height == 25
    easy = {r["k"]: r for r in pl.read_csv(out / "plots" / "easy.csv").iter_rows(named=True)}
    assert easy[0]["blanks_left"] == 0 and easy[2]["blanks_left"] == 2  # path cells left unmarked
    q = ds.gather(np.arange(3))
    shown = reveal_all_but(q["inputs"], q["labels"], 2, seed=0, rules=MAZE.rules)
    assert (((shown == M.OPEN) & (q["labels"] == M.PATH)).sum(1) == 2).all()
    assert fails("analyze", "--checkpoint", str(run), "--dataset", str(datasets), "--variant", "vanilla",
                 "--output", str(tmp_path / "a2"), "--shifts", "3").count("holds mazes, which have 2 relabellings") == 1
