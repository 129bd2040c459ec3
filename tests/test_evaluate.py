"""hrm.evaluate and ``hrm evaluate``: perturbations, the engine, paper_vote, label_free, tiers, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import REAL_SUDOKU as REAL
from fork_reference import cyclic_shift_tokens
from hrm.evaluate.calibration import calibration
from hrm.evaluate.engine import Engine, EngineOutput
from hrm.rng import PERTURB as PERTURB_STREAM
from hrm.tasks import SUDOKU, make_perturbations
from hrm.tasks.sudoku import verifier
from hrm.evaluate.run import evaluate_puzzles
from hrm.evaluate.selection import label_free_select, paper_vote
from hrm.evaluate.tiers import TIER_STREAM, parse_tiers, reveal_tier, reveal_tier_rows
from hrm.model import HRM, HRMConfig, save_checkpoint
from hrm.sudoku import (
    Transforms, apply_transforms, digit_shift_maps, grids_to_tokens, is_valid_solution, random_transforms,
    strings_to_grids,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real():
    df = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    q = grids_to_tokens(strings_to_grids(df["question"].to_list()))
    a = grids_to_tokens(strings_to_grids(df["answer"].to_list()))
    return q, a.astype(np.int16), df["rating"].cast(pl.Int32).to_numpy()


def tiny_config(**kw) -> HRMConfig:
    base = dict(batch_size=4, seq_len=81, puzzle_emb_ndim=16, num_puzzle_identifiers=1, vocab_size=11, H_cycles=1,
                L_cycles=1, H_layers=1, L_layers=1, hidden_size=16, expansion=2, num_heads=2, pos_encodings="rope",
                halt_max_steps=3, halt_exploration_prob=0.1, forward_dtype="float32")
    return HRMConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> HRM:
    torch.manual_seed(seed)
    m = HRM(tiny_config(**kw))
    with torch.no_grad():  # make the Q head (and so halting) matter
        m.inner.q_head.weight.normal_(0, 0.5)
        m.inner.q_head.bias.zero_()
    return m.eval()


def write_dataset(root: Path, inputs: np.ndarray, labels: np.ndarray, ratings: np.ndarray, encoding: dict | None = None) -> Path:
    """A dataset directory as `hrm shard` lays it out (test split only), built by hand."""
    n = len(inputs)
    (root / "test").mkdir(parents=True)
    tok = pa.list_(pa.uint8(), 81)
    table = pa.table({
        "group_id": pa.array(np.arange(n, dtype=np.int32)), "puzzle_id": pa.array(np.arange(n, dtype=np.int32)),
        "rating": pa.array(np.asarray(ratings, np.int32)),
        "raw_index": pa.array(2 * np.arange(n, dtype=np.int32) + 1),  # not the split row, as after a test cap
        "inputs": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(inputs, np.uint8).ravel()), type=tok),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(labels, np.uint8).ravel()), type=tok),
    })
    with pa.ipc.new_file(root / "test" / "data-00000-of-00001.arrow", table.schema) as w:
        w.write_table(table)
    manifest = {"name": root.name, "splits": {"test": {"rows": n, "groups": n, "shards": [
        {"file": "test/data-00000-of-00001.arrow", "rows": [0, n], "groups": [0, n]}]}},
        "encoding": encoding or {"seq_len": 81, "vocab_size": 11, "pad": 0, "blank": 1}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_run(root: Path, steps=(1, 2, 3), **kw) -> Path:
    """A training run directory: checkpoints/step_N + all_config.yaml, different weights per step."""
    for i, s in enumerate(steps):
        save_checkpoint(tiny_model(seed=i, **kw), root / "checkpoints" / f"step_{s}", {"seed": 0, "data_path": "x"})
    return root


# ============================================================================ perturbations


def test_cyclic_shifts_are_the_forks_and_digit_shift_maps(real):
    q, a, _ = real
    pert = make_perturbations("shift", 9)
    assert np.array_equal(pert.digit_map, digit_shift_maps(np.arange(9)))
    shifted = pert.apply(q)
    for p in range(9):
        assert np.array_equal(shifted[p], cyclic_shift_tokens(q, p))
        assert np.array_equal(pert.apply(a)[p], cyclic_shift_tokens(a, p))
    assert np.array_equal(shifted[0], q)  # pass 0 = the unperturbed puzzle
    with pytest.raises(ValueError, match="only 9"):
        make_perturbations("shift", 10)


@pytest.mark.parametrize("kind", ["shift", "relabel", "symmetry"])
def test_perturbations_keep_validity_and_restore(real, kind):
    q, a, _ = real
    pert = make_perturbations(kind, 5, seed=3)
    pa_ = pert.apply(a)
    assert all(is_valid_solution(pa_[p] - 1).all() for p in range(5))
    assert np.array_equal(pert.restore(pa_), np.broadcast_to(a, pa_.shape))  # a perturbed right answer maps back
    assert np.array_equal(pert.restore(pert.apply(q)), np.broadcast_to(q, pa_.shape))
    labels = a.copy()
    labels[:, :3] = -100  # ignored labels stay ignored
    assert (pert.apply(labels)[:, :, :] == -100).sum() == 5 * 3 * len(a)
    again = make_perturbations(kind, 5, seed=3)
    assert np.array_equal(again.digit_map, pert.digit_map) and np.array_equal(again.cell_index, pert.cell_index)


def test_symmetry_perturbation_is_sudoku_apply_transforms(real):
    _, a, _ = real
    pert = make_perturbations("symmetry", 4, seed=1)
    t = random_transforms(np.random.default_rng([PERTURB_STREAM, 1]), 3)
    g = (a - 1).astype(np.uint8)
    for i in range(3):
        ti = Transforms(*(np.repeat(x[i:i + 1], len(g), 0) for x in (t.digit_map, t.transpose, t.row_order, t.col_order)))
        assert np.array_equal(pert.apply(a)[i + 1] - 1, apply_transforms(g, ti))


# ============================================================================ selection rules


def test_paper_vote_hand_made():
    # K = 1, P = 3; columns = puzzles.
    halted = np.array([[[1, 1, 1, 1, 0, 1],
                        [1, 1, 1, 0, 0, 1],
                        [1, 1, 0, 0, 0, 0]]], bool)
    correct = np.array([[[1, 1, 1, 1, 1, 1],
                         [1, 0, 0, 0, 1, 0],
                         [0, 0, 1, 0, 1, 1]]], bool)
    # puzzle 0: 2 of 3 halted passes right -> 4 > 3 solved; 1: 1 of 3 -> no; 2: 1 of 2 halted right
    # (pass 2 right but not halted) -> 2 > 2 no; 3: 1 of 1 -> yes; 4: right but never halted -> no;
    # 5: 1 of 2 halted right (the right non-halted pass does not count) -> no.
    assert paper_vote(correct, halted).tolist() == [True, False, False, True, False, False]
    # ANY checkpoint: a second checkpoint that solves puzzle 1 and 5.
    h2 = np.ones((1, 3, 6), bool)
    c2 = np.array([[[0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]], bool)
    both = paper_vote(np.concatenate([correct, c2]), np.concatenate([halted, h2]))
    assert both.tolist() == [True, True, False, True, False, True]


def _answers(real):
    q, a, _ = real
    q0, a0 = q[0].astype(np.uint8), a[0].astype(np.uint8)
    invalid = a0.copy()
    invalid[[0, 1]] = invalid[[1, 0]] if invalid[0] != invalid[1] else (2, 2)  # two swapped cells: not valid
    relabelled = make_perturbations("shift", 2).apply(a0[None])[1, 0]  # valid, but breaks the givens
    return q0, a0, invalid, relabelled


def select(cands, halted, q, verified):
    cands = np.asarray(cands)[:, None]  # [M, 1, 81]
    s = label_free_select(cands, np.asarray(halted, bool)[:, None], np.asarray(q, float)[:, None],
                             np.asarray(verified, bool)[:, None])
    return int(s.index[0, 0])


def test_label_free_rules(real):
    q0, a0, bad, other = _answers(real)
    assert verifier(q0, a0) and not verifier(q0, bad) and not verifier(q0, other)
    assert is_valid_solution((other - 1)[None])[0]
    v = lambda c: [bool(verifier(q0, x)) for x in c]  # noqa: E731
    # Majority among halted passes.
    c = [bad, other, other]
    assert select(c, [1, 1, 1], [0.5] * 3, v(c)) == 1
    # Only halted passes vote: the lone halted answer beats two non-halted ones.
    assert select(c, [1, 0, 0], [0.5] * 3, v(c)) == 0
    # None halted: all passes vote.
    assert select(c, [0, 0, 0], [0.5] * 3, v(c)) == 1
    # The verifier first: one verified answer beats a majority of unverified ones.
    c = [other, other, a0]
    assert select(c, [1, 1, 1], [0.9, 0.9, 0.1], v(c)) == 2
    # ... but only inside the pool: a verified non-halted answer does not enter.
    assert select(c, [1, 1, 0], [0.9, 0.9, 0.1], v(c)) in (0, 1)
    # Ties: the higher mean sigmoid(q_halt) over the passes giving the answer.
    c = [bad, other]
    assert select(c, [1, 1], [0.9, 0.2], v(c)) == 0
    assert select(c, [1, 1], [0.2, 0.9], v(c)) == 1
    c = [bad, bad, other, other]
    assert select(c, [1, 1, 1, 1], [0.9, 0.1, 0.6, 0.6], v(c)) == 2  # means 0.5 vs 0.6
    # An exact tie: the first pass.
    assert select(c, [1, 1, 1, 1], [0.5] * 4, v(c)) == 0
    # Votes outrank q: two low-q votes beat one high-q vote.
    c = [bad, other, other]
    assert select(c, [1, 1, 1], [0.99, 0.01, 0.01], v(c)) == 1


def test_label_free_subsets_and_pool(real):
    q0, a0, bad, other = _answers(real)
    cands = np.stack([bad, a0, other])[:, None]
    subsets = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], bool)
    ver = np.array([[0], [1], [0]], bool)
    s = label_free_select(cands, np.array([[1], [1], [0]], bool), np.full((3, 1), 0.5), ver, subsets)
    assert s.index[:, 0].tolist() == [0, 1, 1]
    assert s.pool[:, 0].tolist() == [1, 2, 2] and s.verified[:, 0].tolist() == [False, True, True]
    assert not s.no_halt.any()


# ============================================================================ fake runners (vote logic only)


class LabelRunner:
    """Not a model: answers every row with its (perturbed) label; ``halt``/``right`` masks per pass."""

    def __init__(self, k: int, p: int, segments: int = 2, halt=None, right=None):
        self.num_models, self.segments, self.p = k, segments, p
        self.halt = np.ones((k, p), bool) if halt is None else np.asarray(halt, bool)
        self.right = np.ones((k, p), bool) if right is None else np.asarray(right, bool)

    def run(self, inputs, labels=None, *, early_stop=False):
        m = inputs.shape[0]
        b = m // self.p
        k = self.num_models
        pred = np.broadcast_to(labels.astype(np.uint8), (k, m, 81)).copy()
        wrong = ~np.repeat(self.right, b, axis=1)  # [K, M]
        pred[wrong, 0] = 1  # a blank left: invalid and wrong
        halted = np.repeat(self.halt, b, axis=1)
        ok = ~wrong
        return EngineOutput(
            predictions=pred, q_halt=np.where(halted, 2.0, -2.0).astype(np.float32),
            q_continue=np.zeros((k, m), np.float32), halted=halted, steps=np.full((k, m), self.segments, np.int16),
            confidence=np.full((k, m, 81), 0.9, np.float32),
            segment_halted=np.repeat(halted[:, None], self.segments, 1),
            segment_q_halt=np.repeat(np.where(halted, 2.0, -2.0).astype(np.float32)[:, None], self.segments, 1),
            segment_correct=np.stack([np.zeros_like(ok), ok], 1) if self.segments == 2 else np.repeat(ok[:, None], self.segments, 1),
        )


@pytest.mark.parametrize("kind", ["shift", "symmetry"])
def test_identity_runner_solves_everything(real, kind):
    q, a, r = real
    pert = make_perturbations(kind, 4, seed=0)
    res = evaluate_puzzles(LabelRunner(2, 4), q, a, perturbations=pert, ratings=r, batch_size=7, rules=SUDOKU.rules)
    s = res.summary()
    assert s["baseline_exact"] == s["paper_vote"] == s["label_free"] == s["verified_any"] == 1.0
    assert s["baseline"]["blank_accuracy"] == 1.0 and s["baseline"]["q_halt_accuracy"] == 1.0
    assert s["critical_segment"]["mean"] == 2.0  # right from segment 2 on
    assert res.lf_verified.all() and (res.lf_votes == 8).all()
    t = res.tables()
    assert [row["baseline"] for row in t["segments"]] == [0.0, 1.0]
    assert all(row["label_free"] == 1.0 for row in t["ensemble_grid"])


def test_vote_logic_end_to_end_with_known_outcomes(real):
    q, a, r = real
    pert = make_perturbations("shift", 3)
    # Checkpoint 0: passes right = (T, F, T), halted = (T, T, F): 1 of 2 halted right -> not solved.
    # Checkpoint 1 (primary): right = (F, F, T), halted = (F, F, F): nothing counted.
    runner = LabelRunner(2, 3, right=[[1, 0, 1], [0, 0, 1]], halt=[[1, 1, 0], [0, 0, 0]])
    res = evaluate_puzzles(runner, q, a, perturbations=pert, ratings=r, batch_size=16, rules=SUDOKU.rules)
    assert not res.paper_vote().any()  # reads labels, and still says no
    assert not res.baseline().any()  # primary checkpoint, pass 0 is wrong
    assert res.verified_any().all()  # some pass found the solution
    # label_free: pool = the 2 halted passes of checkpoint 0 (one right, one wrong); the right one is
    # verified, so it wins.
    assert res.label_free().all() and res.lf_verified.all() and (res.lf_pool == 2).all()
    # With only the primary checkpoint, no pass halted: all 3 vote, the verified one wins.
    assert res.label_free(k=1).all() and not res.paper_vote(k=1).any()
    # With one pass (pass 0) of the primary checkpoint: wrong.
    assert not res.label_free(k=1, p=1).any() and not res.verified_any(k=1, p=1).any()
    # Checkpoint 0 with only its first pass halted and right -> 1 of 1: solved by paper_vote.
    runner = LabelRunner(2, 3, right=[[1, 0, 1], [0, 0, 0]], halt=[[1, 0, 0], [0, 0, 0]])
    assert evaluate_puzzles(runner, q, a, perturbations=pert, batch_size=16, rules=SUDOKU.rules).paper_vote().all()


# ============================================================================ the real engine


def test_engine_matches_predict(real):
    q, a, _ = real
    models = [tiny_model(0), tiny_model(1)]
    x = np.concatenate([q[:6], make_perturbations("shift", 2).apply(q[:6])[1]])
    for max_rows in (None, 5):
        out = Engine(models, max_rows=max_rows).run(x, make_perturbations("shift", 2).apply(a[:6]).reshape(-1, 81),
                                                       keep_segment_predictions=True)
        for k, m in enumerate(models):
            ref = m.predict(x)
            assert np.array_equal(out.predictions[k], ref.predictions.numpy())
            assert np.array_equal(out.halted[k], ref.halted.numpy())
            assert np.allclose(out.q_halt[k], ref.q_halt[-1].numpy(), atol=1e-6)
            assert np.array_equal(out.segment_predictions[k], ref.logits.argmax(-1).numpy())
            conf = torch.softmax(ref.logits[-1], -1).amax(-1).numpy()
            assert np.allclose(out.confidence[k], conf, atol=1e-6)


def test_engine_early_stop(real):
    q, _, _ = real
    model = tiny_model(2, halt_max_steps=4)
    out = Engine([model]).run(q[:12], early_stop=True)
    full = model.predict(q[:12])
    first_halt = (full.q_halt > full.q_continue).numpy()  # [S, B]
    for i in range(12):
        stop = int(np.argmax(first_halt[:, i])) + 1 if first_halt[:, i].any() else 4
        assert out.steps[0, i] == stop and out.halted[0, i] == first_halt[:, i].any()
        assert np.array_equal(out.predictions[0, i], full.logits[stop - 1, i].argmax(-1).numpy())
    assert 0 < out.steps.mean() <= 4


def test_evaluate_puzzles_does_not_depend_on_batch_size(real):
    q, a, r = real
    engine = Engine([tiny_model(0), tiny_model(1)])
    pert = make_perturbations("relabel", 3, seed=5)
    r1 = evaluate_puzzles(engine, q[:10], a[:10], perturbations=pert, ratings=r[:10], batch_size=3, rules=SUDOKU.rules)
    r2 = evaluate_puzzles(engine, q[:10], a[:10], perturbations=pert, ratings=r[:10], batch_size=10, rules=SUDOKU.rules)
    assert json.dumps(r1.summary()) == json.dumps(r2.summary())
    for key in ("correct", "halted", "verified", "lf_correct", "stable_from"):
        assert np.array_equal(getattr(r1, key), getattr(r2, key))
    # Perturbed-space correctness == correctness of the answers mapped back (checked on all passes).
    assert (r1.correct <= r1.verified).all()


# ============================================================================ tiers, calibration


def test_reveal_tier(real):
    q, a, _ = real
    easy = reveal_tier(q, a, 6, 10, np.random.default_rng(0), rules=SUDOKU.rules)
    blanks = (easy == 1).sum(1)
    assert ((blanks >= 6) & (blanks <= 10)).all()
    assert ((q == 1) | (easy == q)).all()  # givens stay
    assert ((easy == 1) | (easy == a)).all()  # revealed cells come from the answer
    assert ((easy == 1) <= (q == 1)).all()  # blanks only where the puzzle had blanks
    assert np.array_equal(easy, reveal_tier(q, a, 6, 10, np.random.default_rng(0), rules=SUDOKU.rules))
    # Per puzzle (the stage's draw): a puzzle's easy copy depends on its row only, so any cut of the work,
    # or any sample holding the puzzle, gives it the same copy; the rule, written out for one row.
    rows = np.arange(len(q)) * 3 + 7
    per_row = reveal_tier_rows(q, a, 6, 10, 4, rows, rules=SUDOKU.rules)
    parts = np.concatenate([reveal_tier_rows(q[i:i + 5], a[i:i + 5], 6, 10, 4, rows[i:i + 5], rules=SUDOKU.rules) for i in range(0, len(q), 5)])
    assert np.array_equal(per_row, parts) and not np.array_equal(per_row, reveal_tier_rows(q, a, 6, 10, 5, rows, rules=SUDOKU.rules))
    g = np.random.default_rng([TIER_STREAM, 4, 6, 10, int(rows[3])])
    k, scores = g.integers(6, 11), g.random(81)
    blank = np.flatnonzero(q[3] == 1)
    keep = blank[np.argsort(scores[blank], kind="stable")[:min(k, blank.size)]]
    assert np.array_equal(np.flatnonzero(per_row[3] == 1), np.sort(keep))
    blanks = (per_row == 1).sum(1)
    assert ((blanks >= 6) & (blanks <= 10)).all() and ((per_row == 1) | (per_row == a)).all()
    assert parse_tiers("1-5, 6-10,11-20", seq_len=SUDOKU.seq_len) == [(1, 5), (6, 10), (11, 20)]
    assert parse_tiers("none", seq_len=SUDOKU.seq_len) == [] and parse_tiers("3", seq_len=SUDOKU.seq_len) == [(3, 3)]
    with pytest.raises(ValueError, match="bad tier"):
        parse_tiers("5-1", seq_len=SUDOKU.seq_len)


def test_calibration_histogram():
    rng = np.random.default_rng(0)
    conf = np.full(10_000, 0.8)
    ok = rng.random(10_000) < 0.8
    s = calibration(conf, ok).summary()
    assert s["ece"] < 0.02 and s["pearson_r"] is None  # no spread in confidence: r undefined
    conf = rng.random(10_000)
    s = calibration(conf, rng.random(10_000) < conf).summary()
    assert s["ece"] < 0.03 and 0.4 < s["pearson_r"] < 0.7
    s = calibration(np.full(100, 0.9), np.zeros(100, bool)).summary()
    assert abs(s["ece"] - 0.9) < 1e-9 and abs(s["brier"] - 0.81) < 1e-9


# ============================================================================ the CLI


def _cli(args):
    from pipelines.cli import cli

    return CliRunner().invoke(cli, ["evaluate", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, real):
    q, a, r = real
    return write_dataset(tmp_path_factory.mktemp("ds") / "sudoku-test", q, a, r)


def _numbers(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _numbers(v)
        else:
            yield v


def test_cli_end_to_end_is_deterministic(tmp_path, dataset_dir):
    run = write_run(tmp_path / "run")
    args = ["--checkpoint", run, "--last", 2, "--dataset", dataset_dir, "--permutations", 3, "--test-size", 12,
            "--tiers", "1-5", "--batch-size", 5, "--device", "cpu", "--no-progress"]
    r1 = _cli([*args, "--output", tmp_path / "out1"])
    assert r1.exit_code == 0, r1.output
    r2 = _cli([*args, "--output", tmp_path / "out2"])
    assert r2.exit_code == 0, r2.output
    out = tmp_path / "out1"
    metrics = json.loads((out / "summary.json").read_text())
    t = metrics["test"]
    assert t["puzzles"] == 12 and t["checkpoints"] == 2 and t["passes"] == 3
    for key in ("baseline_exact", "paper_vote", "label_free", "first_to_halt", "verified_any"):
        assert 0.0 <= t[key] <= 1.0 and 0.0 <= metrics["tiers"]["1-5"][key] <= 1.0
    assert 1.0 <= t["first_to_halt_detail"]["mean_segment"] <= 3.0
    # metrics.json (what `dvc metrics show` compares): those five of the test split and of each tier, nothing else.
    headline = json.loads((out / "metrics.json").read_text())
    five = {"baseline": t["baseline_exact"],
            **{k: t[k] for k in ("paper_vote", "label_free", "first_to_halt", "verified_any")}}
    assert headline["test"] == five and set(headline["tiers"]) == {"1-5"} and set(headline) == {"test", "tiers"}
    assert headline["tiers"]["1-5"]["first_to_halt"] == metrics["tiers"]["1-5"]["first_to_halt"]
    assert t["label_free"] <= t["verified_any"]
    assert set(t["per_checkpoint"]) == {"step_2", "step_3"}
    for name in ev_plots():
        assert (out / "plots" / f"{name}.csv").is_file()
    assert all(isinstance(v, (int, float)) or v is None for v in _numbers(metrics))
    seg = pl.read_csv(out / "plots" / "segments.csv")
    assert seg["segment"].to_list() == [1, 2, 3] and "tier_1-5" in seg.columns
    assert pl.read_csv(out / "plots" / "ensemble_grid.csv").height == 6
    for name in ("passes", "checkpoints", "ensemble_grid", "rating", "blanks", "tiers"):
        assert "first_to_halt" in pl.read_csv(out / "plots" / f"{name}.csv").columns, name
    report = (out / "report.md").read_text()
    assert "reads labels" in report and "| first_to_halt (" in report and "- first_to_halt: " in report
    assert f"first_to_halt read its answers at segment {t['first_to_halt_detail']['mean_segment']:.3f}" in report
    assert "| checkpoints | passes | paper_vote | label_free | first_to_halt | verified_any |" in report
    assert (out / "report.md").read_text().startswith("# HRM evaluation\n") and "arch" not in metrics
    assert json.loads((out / "run.json").read_text())["arch"] == {"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
                                                                  "label": "HRM"}
    puzzles = pl.read_parquet(out / "puzzles.parquet")
    assert puzzles.height == 12 and (puzzles["raw_index"] == 2 * puzzles["row"] + 1).all()  # each row's raw-file row
    assert_pass_columns_agree(out / "puzzles.parquet", puzzles, checkpoints=["step_2", "step_3"], passes=3, segments=3)
    assert puzzles["first_to_halt"].mean() == pytest.approx(t["first_to_halt"])
    assert puzzles["first_to_halt_segment"].is_between(1, 3).all()
    assert puzzles["first_to_halt_segment"].mean() == pytest.approx(t["first_to_halt_detail"]["mean_segment"])
    for rel in ["metrics.json", "summary.json", "report.md", "puzzles.parquet", *[f"plots/{p}.csv" for p in ev_plots()]]:
        assert (out / rel).read_bytes() == (tmp_path / "out2" / rel).read_bytes(), rel


def assert_pass_columns_agree(path, puzzles: pl.DataFrame, *, checkpoints: list[str], passes: int, segments: int):
    """puzzles.parquet's per-pass columns (EvalResult.pass_table) give back its per-puzzle outcomes: the baseline is
    the primary's pass 0, paper_vote the task's vote over the passes, verified_any any verified pass, and
    first_to_halt_segment the earliest halting segment (none: the last)."""
    from hrm.evaluate.results import unpack_passes
    from pipelines.tables import PASSES_KEY, table_metadata

    assert table_metadata(path, PASSES_KEY) == {"checkpoints": checkpoints, "passes": passes, "perturbation": "shift",
                                               "segments": segments}
    k, p, n = len(checkpoints), passes, puzzles.height
    bits = {name: unpack_passes(np.stack(puzzles[f"pass_{name}"].to_numpy()), k * p)
            for name in ("correct", "halted", "verified")}
    halt_segment = np.stack(puzzles["pass_halt_segment"].to_numpy())
    assert halt_segment.shape == (n, k * p) and halt_segment.max() <= segments
    assert (bits["correct"][:, (k - 1) * p] == puzzles["baseline"].to_numpy()).all()
    per_pass = {name: b.T.reshape(k, p, n) for name, b in bits.items()}
    assert (SUDOKU.rules.solves(per_pass["correct"], per_pass["halted"]) == puzzles["paper_vote"].to_numpy()).all()
    assert (bits["verified"].any(1) == puzzles["verified_any"].to_numpy()).all()
    assert (bits["halted"][:, (k - 1) * p] == puzzles["halted"].to_numpy()).all()
    earliest = np.where(halt_segment > 0, halt_segment, segments).min(1)
    assert (earliest == puzzles["first_to_halt_segment"].to_numpy()).all()


def ev_plots():
    from pipelines.evaluate import PLOTS

    return PLOTS


def test_plot_csv_spellings(tmp_path):
    """One writer, two spellings: as_text is the csv module's (Python's str of each value), the
    default polars' typed columns; a table without rows keeps its header."""
    import csv
    import io

    from pipelines.plot_csv import write_plot_csv

    rows = [{"tier": "1-5", "n": 1, "x": 1e-06, "y": None}, {"tier": "128+", "n": 2.5, "x": 0.25, "z": float("nan")}]
    write_plot_csv(tmp_path / "text.csv", rows, as_text=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["tier", "n", "x", "y", "z"], lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None or v != v else v) for k, v in r.items()} for r in rows)
    assert (tmp_path / "text.csv").read_text() == buf.getvalue() == "tier,n,x,y,z\n1-5,1,1e-06,,\n128+,2.5,0.25,,\n"
    write_plot_csv(tmp_path / "typed.csv", [{"k": 1, "v": 1e-6}, {"k": 2, "v": None}])
    assert (tmp_path / "typed.csv").read_text() == "k,v\n1,1e-6\n2,\n"
    write_plot_csv(tmp_path / "rounded.csv", [{"v": 0.1234567}], digits=6, as_text=True)
    assert (tmp_path / "rounded.csv").read_text() == "v\n0.123457\n"
    write_plot_csv(tmp_path / "empty.csv", [], header=("a", "b"))
    assert (tmp_path / "empty.csv").read_text() == "a,b\n"


def test_cli_settings_from_a_config_file_section(tmp_path, dataset_dir):
    """--config-file/--section give every option (params.yaml's `checkpoints` is --last); the command line wins."""
    run = write_run(tmp_path / "run")
    params = tmp_path / "params.yaml"
    section = {"checkpoints": 2, "permutations": 2, "test_size": 6, "tiers": "none", "batch_size": 5,
               "early_stop": False, "compile": False, "device": "cpu", "wandb_mode": "disabled"}
    params.write_text(yaml.safe_dump({"seed": 0, "stages": {"evaluate": section}}))
    common = ["--checkpoint", run, "--dataset", dataset_dir, "--no-progress"]
    r = _cli([*common, "--config-file", params, "--section", "stages.evaluate", "--test-size", 4,
              "--output", tmp_path / "file"])
    assert r.exit_code == 0, r.output
    r = _cli([*common, "--last", 2, "--permutations", 2, "--test-size", 4, "--tiers", "none", "--batch-size", 5,
              "--device", "cpu", "--output", tmp_path / "flags"])
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "file" / "summary.json").read_text())["test"]
    assert (t["puzzles"], t["checkpoints"], t["passes"]) == (4, 2, 2)
    for rel in ["metrics.json", "summary.json", "report.md", "puzzles.parquet", *[f"plots/{p}.csv" for p in ev_plots()]]:
        assert (tmp_path / "file" / rel).read_bytes() == (tmp_path / "flags" / rel).read_bytes(), rel
    # A key no option has, and a value an option refuses: one message naming the file and the key.
    params.write_text(yaml.safe_dump({"evaluate": {**section, "permutation": 3}}))
    r = _cli([*common, "--config-file", params, "--output", tmp_path / "bad"])
    assert r.exit_code != 0 and str(params) in r.output and "unknown key(s) in evaluate: permutation" in r.output
    params.write_text(yaml.safe_dump({"evaluate": {**section, "perturbation": "rotate"}}))
    r = _cli([*common, "--config-file", params, "--output", tmp_path / "bad"])
    assert r.exit_code != 0 and "evaluate.perturbation" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad").exists()


def test_cli_official_checkpoint_with_compile_prefix(tmp_path, real):
    # The fixture's puzzle-embedding table has 3 rows: it runs on a dataset of 3 identifiers (hrm.model.coupling).
    q, a, r = real
    dataset_dir = write_dataset(tmp_path / "sudoku-3-ids", q, a, r, encoding={"seq_len": 81, "vocab_size": 11, "pad": 0,
                                                                             "blank": 1, "num_puzzle_identifiers": 3})
    src = FIXTURES / "official_tiny_rope"
    state = torch.load(src / "step_0", weights_only=True)
    run = tmp_path / "official"
    run.mkdir()
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, run / "step_0")
    shutil.copy(src / "all_config.yaml", run / "all_config.yaml")
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(src / "step_0", plain / "step_0")
    shutil.copy(src / "all_config.yaml", plain / "all_config.yaml")
    common = ["--dataset", dataset_dir, "--permutations", 2, "--test-size", 4, "--tiers", "none", "--device", "cpu",
              "--no-progress"]
    r = _cli(["--checkpoint", run / "step_0", *common, "--output", tmp_path / "o1"])
    assert r.exit_code == 0, r.output
    r = _cli(["--checkpoint", plain, *common, "--output", tmp_path / "o2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o1" / "plots" / "segments.csv").read_bytes() == (tmp_path / "o2" / "plots" / "segments.csv").read_bytes()


def test_cli_bad_inputs(tmp_path, dataset_dir, real):
    from hrm.integrity import record_sha256

    q, a, r = real
    run = write_run(tmp_path / "run", steps=(1,))
    out = tmp_path / "out"
    common = ["--dataset", dataset_dir, "--tiers", "none", "--test-size", 2, "--device", "cpu", "--no-progress",
              "--output", out]

    # Weights of another shape than the config beside them.
    wrong = tmp_path / "wrong"
    save_checkpoint(tiny_model(0, hidden_size=32, num_heads=2), wrong / "step_1")
    shutil.copy(run / "checkpoints" / "all_config.yaml", wrong / "all_config.yaml")
    record_sha256(wrong / "all_config.yaml")  # recorded: the check past the hash is what is tested
    res = _cli(["--checkpoint", wrong / "step_1", *common])
    assert res.exit_code != 0 and "shape mismatch" in res.output and str(wrong / "step_1") in res.output
    assert "expected [" in res.output and "found [" in res.output

    # Another architecture.
    other = tmp_path / "other"
    save_checkpoint(tiny_model(0), other / "step_1")
    cfg = yaml.safe_load((other / "all_config.yaml").read_text())
    cfg["arch"]["name"] = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
    (other / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    record_sha256(other / "all_config.yaml")
    res = _cli(["--checkpoint", other / "step_1", *common])
    assert res.exit_code != 0 and "TinyRecursiveReasoningModel_ACTV1" in res.output

    # No config beside the checkpoint.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "checkpoints" / "step_1", bare / "step_1")
    res = _cli(["--checkpoint", bare / "step_1", *common])
    assert res.exit_code != 0 and "all_config.yaml" in res.output

    # A model of another vocabulary.
    vocab = tmp_path / "vocab"
    save_checkpoint(tiny_model(0, vocab_size=12), vocab / "step_1")
    res = _cli(["--checkpoint", vocab / "step_1", *common])
    assert res.exit_code != 0 and "vocab_size 12" in res.output and "vocab_size 11" in res.output

    # A test split built with another encoding (0 = blank, digits 1..9).
    old = write_dataset(tmp_path / "old-encoding", q - 1, a - 1, r)
    res = _cli(["--checkpoint", run, *[c if c != dataset_dir else old for c in common]])
    assert res.exit_code != 0 and "another encoding" in res.output and "expected 1..10" in res.output
    assert str(old / "test") in res.output

    # The manifest says another encoding.
    seq = write_dataset(tmp_path / "seq", q, a, r, encoding={"seq_len": 900, "vocab_size": 11})
    res = _cli(["--checkpoint", run, *[c if c != dataset_dir else seq for c in common]])
    assert res.exit_code != 0 and "seq_len 900" in res.output and "seq_len 81" in res.output

    # Checkpoints that disagree on halt_max_steps; a missing checkpoint.
    steps5 = tmp_path / "steps5"
    save_checkpoint(tiny_model(0, halt_max_steps=5), steps5 / "step_1")
    res = _cli(["--checkpoint", run, "--checkpoint", steps5, *common])
    assert res.exit_code != 0 and "halt_max_steps is 5" in res.output
    res = _cli(["--checkpoint", tmp_path / "nope", *common])
    assert res.exit_code != 0 and "not found" in res.output
    res = _cli(["--checkpoint", run, "--perturbation", "shift", "--permutations", 10, *common])
    assert res.exit_code != 0 and "only 9" in res.output
    assert not out.exists()  # every check ran before any work or output


def test_cli_early_stop_and_random_perturbations(tmp_path, dataset_dir):
    run = write_run(tmp_path / "run", steps=(1, 2))
    res = _cli(["--checkpoint", run, "--last", 2, "--dataset", dataset_dir, "--permutations", 3, "--perturbation",
                "symmetry", "--test-size", 8, "--tiers", "none", "--early-stop", "--device", "cpu", "--no-progress",
                "--output", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "out" / "summary.json").read_text())["test"]
    assert 1.0 <= t["baseline"]["mean_steps"] <= t["segments"]
    assert "early stop" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tiers"] == {}


@pytest.mark.slow
def test_compiled_engine_makes_the_same_decisions(real):
    q, a, _ = real
    models = [tiny_model(0), tiny_model(1)]
    pert = make_perturbations("shift", 3)
    eager = evaluate_puzzles(Engine(models, max_rows=16), q[:12], a[:12], perturbations=pert, batch_size=6, rules=SUDOKU.rules)
    comp = evaluate_puzzles(Engine(models, max_rows=16, compile=True), q[:12], a[:12], perturbations=pert, batch_size=6, rules=SUDOKU.rules)
    for key in ("correct", "halted", "verified", "lf_correct"):
        assert np.array_equal(getattr(eager, key), getattr(comp, key))
    assert np.allclose(eager.q_halt, comp.q_halt, atol=1e-4)


def test_early_stop_refills_the_batch_and_runs_fewer_segments(real):
    """Continuous batching (issue 18): with a batch of 3 rows, a halted row leaves and a waiting one takes its
    place; every row's outcome is the one it gets with all 24 rows in one batch, and the segments run are the
    segments the rows needed, which the summary reports as work saved."""
    q, a, _ = real
    models = [tiny_model(2, halt_max_steps=4), tiny_model(5, halt_max_steps=4)]
    x = make_perturbations("shift", 2).apply(q[:12]).reshape(-1, 81)
    y = make_perturbations("shift", 2).apply(a[:12]).reshape(-1, 81)
    wide = Engine(models).run(x, y, early_stop=True, keep_segment_predictions=True)
    narrow = Engine(models, max_rows=3).run(x, y, early_stop=True, keep_segment_predictions=True)
    for name in ("predictions", "halted", "steps", "segment_halted", "segment_correct", "segment_predictions"):
        assert np.array_equal(getattr(narrow, name), getattr(wide, name)), name
    assert np.allclose(narrow.q_halt, wide.q_halt, atol=1e-6) and np.allclose(narrow.confidence, wide.confidence, atol=1e-6)
    # A stopped row's flags stand for every later segment.
    last = np.take_along_axis(narrow.segment_halted, (narrow.steps[:, None].astype(np.int64) - 1), 1)[:, 0]
    assert np.array_equal(last, narrow.halted) and (narrow.segment_halted[:, -1] == narrow.halted).all()
    res = evaluate_puzzles(Engine(models, max_rows=3), q[:12], a[:12],
                              perturbations=make_perturbations("shift", 2), batch_size=12, early_stop=True, rules=SUDOKU.rules)
    work = res.summary()["work"]
    assert work["segments_run"] == int(res.steps.sum()) and work["segments_of_all_segment_passes"] == 2 * 2 * 12 * 4
    assert 0 < work["saved_fraction"] == 1 - res.steps.sum() / (2 * 2 * 12 * 4)
    full = evaluate_puzzles(Engine(models), q[:12], a[:12], perturbations=make_perturbations("shift", 2),
                               batch_size=12, rules=SUDOKU.rules)
    assert full.summary()["work"]["saved_fraction"] == 0.0  # the paper's procedure runs every segment


def test_early_stop_view_equals_an_early_stop_run(real):
    q, a, _ = real
    engine = Engine([tiny_model(2, halt_max_steps=4), tiny_model(5, halt_max_steps=4)])  # these halt sometimes
    pert = make_perturbations("shift", 2)
    full = evaluate_puzzles(engine, q[:16], a[:16], perturbations=pert, batch_size=8, rules=SUDOKU.rules)
    early = evaluate_puzzles(engine, q[:16], a[:16], perturbations=pert, batch_size=8, early_stop=True, rules=SUDOKU.rules)
    assert np.array_equal(full.es_steps, early.steps) and np.array_equal(full.es_correct, early.correct)
    assert np.array_equal(early.es_steps, early.steps)
    assert full.summary()["early_stop_view"]["mean_steps"] == early.summary()["baseline"]["mean_steps"]
    assert 1 < early.steps.mean() < 4  # some passes stop early, some do not
