"""First-to-halt selection (issue 29, item 4; hrm.evaluate.selection.first_to_halt): hand-made arrays with known
answers, the evaluation's wiring through a scripted runner, and the real engine on tiny HRM and TRM checkpoints
against a brute force that reads each chosen answer at its segment and judges it in the original space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrm.evaluate.engine import Engine, EngineOutput
from hrm.evaluate.run import evaluate_puzzles
from hrm.evaluate.selection import first_to_halt
from hrm.model import HRM, HRMConfig
from hrm.model.trm import TRM, TRMConfig
from hrm.sudoku import BLANK_TOKEN
from hrm.tasks import SUDOKU, make_perturbations

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def passes(halt_at: list[int], q: list[float] | list[list[float]], s: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """M passes of one puzzle: pass i's halt signal fires from segment halt_at[i] on (0: never); q_halt per pass
    (the same at every segment) or per pass and segment. -> segment_halted [M, S, 1], segment_q_halt [M, S, 1]."""
    seg = np.arange(1, s + 1)
    halted = np.array([(seg >= h) if h else np.zeros(s, bool) for h in halt_at])
    q = np.asarray(q, np.float64)
    q = np.repeat(q[:, None], s, 1) if q.ndim == 1 else q
    return halted[..., None], q[..., None]


# ============================================================================ the rule on hand-made arrays


def test_the_earliest_halt_wins_whatever_the_confidence():
    sel = first_to_halt(*passes([3, 2, 0, 4], [5.0, -3.0, 9.0, 9.0]))
    assert sel.index.tolist() == [[1]] and sel.segment.tolist() == [[2]] and not sel.no_halt.any()


def test_a_signal_that_fires_once_counts_from_its_first_firing():
    halted = np.array([[0, 1, 0, 0], [0, 0, 1, 1]], bool)[..., None]  # pass 0 halts at 2 (then not), pass 1 at 3
    sel = first_to_halt(halted, np.zeros((2, 4, 1)))
    assert sel.index.tolist() == [[0]] and sel.segment.tolist() == [[2]]


def test_ties_go_to_the_confidence_at_the_halting_segment_not_the_final_one():
    # Both halt at segment 2; pass 1 is more confident there, pass 0 at the end.
    q = [[0.0, 0.5, 0.5, 3.0], [0.0, 1.5, 1.5, -1.0], [9.0, 9.0, 9.0, 9.0]]
    sel = first_to_halt(*passes([2, 2, 3], q))
    assert sel.index.tolist() == [[1]] and sel.segment.tolist() == [[2]]


def test_confidences_that_saturate_the_sigmoid_still_rank():
    # sigmoid(40) == sigmoid(50) == 1.0 in float64: the rule compares q_halt itself, which orders them.
    assert 1 / (1 + np.exp(-40.0)) == 1 / (1 + np.exp(-50.0)) == 1.0
    sel = first_to_halt(*passes([1, 1, 1], [40.0, 50.0, 45.0]))
    assert sel.index.tolist() == [[1]]


def test_remaining_ties_go_to_the_first_pass_and_nan_ranks_lowest():
    assert first_to_halt(*passes([2, 2, 2], [1.0, 1.0, 1.0])).index.tolist() == [[0]]
    assert first_to_halt(*passes([2, 3, 2], [0.5, 9.0, 0.5])).index.tolist() == [[0]]
    assert first_to_halt(*passes([2, 2, 2], [np.nan, -7.0, -7.0])).index.tolist() == [[1]]
    assert first_to_halt(*passes([2, 2], [-np.inf, -np.inf])).index.tolist() == [[0]]


def test_no_pass_halts_all_tie_at_the_last_segment_and_the_final_confidence_decides():
    q = [[5.0, 5.0, 5.0, -1.0], [-5.0, -5.0, -5.0, 2.0], [0.0, 0.0, 0.0, 0.5]]
    sel = first_to_halt(*passes([0, 0, 0], q))
    assert sel.index.tolist() == [[1]] and sel.segment.tolist() == [[4]] and sel.no_halt.tolist() == [[True]]


def test_halting_at_the_last_segment_beats_never_halting():
    sel = first_to_halt(*passes([0, 4, 0], [9.0, -9.0, 9.0]))
    assert sel.index.tolist() == [[1]] and sel.segment.tolist() == [[4]] and not sel.no_halt.any()


def test_every_subset_and_every_puzzle_chooses_within_itself():
    # Puzzle 0: passes halt at (3, never, 2, 1); puzzle 1: (never, never, 4, never).
    h0, q0 = passes([3, 0, 2, 1], [0.0, 0.0, 0.0, 0.0])
    h1, q1 = passes([0, 0, 4, 0], [0.0, 3.0, -1.0, 2.0])
    halted, q = np.concatenate([h0, h1], -1), np.concatenate([q0, q1], -1)
    subsets = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 0, 1]], bool)
    sel = first_to_halt(halted, q, subsets)
    assert sel.index.tolist() == [[0, 0], [0, 1], [2, 2], [3, 2], [3, 1]]
    assert sel.segment.tolist() == [[3, 4], [3, 4], [2, 4], [1, 4], [1, 4]]
    assert sel.no_halt.tolist() == [[False, True], [False, True], [False, False], [False, False], [False, True]]
    whole = first_to_halt(halted, q)
    assert whole.index.tolist() == [[3, 2]] and whole.segment.tolist() == [[1, 4]]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least one segment"):
        first_to_halt(np.zeros((2, 0, 1), bool), np.zeros((2, 0, 1)))
    with pytest.raises(ValueError, match="at least one candidate"):
        first_to_halt(*passes([1, 2], [0.0, 0.0]), np.array([[1, 0], [0, 0]], bool))


# ============================================================================ the evaluation's wiring (no model)


class ScriptedRunner:
    """Not a model: pass (k, p) halts from segment halt_at[k, p] on (0: never), with q_halt q[k, p] at every
    segment, and its answer is the (perturbed) label from segment right_from[k, p] on (0: never), else the
    label with one cell blanked."""

    def __init__(self, halt_at, right_from, q, segments: int = 4):
        self.halt_at, self.right_from = np.asarray(halt_at), np.asarray(right_from)
        self.q = np.asarray(q, np.float32)
        self.num_models, self.p = self.halt_at.shape
        self.segments = segments

    def run(self, inputs, labels=None, *, early_stop=False):
        k, s, m = self.num_models, self.segments, inputs.shape[0]
        per_row = lambda a: np.repeat(a, m // self.p, axis=1)  # noqa: E731 - [K, P] -> [K, M], rows pass-major
        seg = np.arange(1, s + 1)[None, :, None]
        halt_at, right_from = per_row(self.halt_at)[:, None], per_row(self.right_from)[:, None]
        seg_halted = (halt_at > 0) & (seg >= halt_at)  # [K, S, M]
        seg_ok = (right_from > 0) & (seg >= right_from)
        pred = np.broadcast_to(labels.astype(np.uint8), (k, m, 81)).copy()
        pred[~seg_ok[:, -1], 0] = BLANK_TOKEN
        q = np.broadcast_to(per_row(self.q)[:, None], (k, s, m)).copy()
        return EngineOutput(
            predictions=pred, q_halt=q[:, -1], q_continue=np.zeros((k, m), np.float32), halted=seg_halted[:, -1],
            steps=np.full((k, m), s, np.int16), confidence=np.full((k, m, 81), 0.9, np.float32),
            segment_halted=seg_halted, segment_q_halt=q, segment_correct=seg_ok)


def test_the_evaluation_reports_the_first_pass_to_halt_for_every_subset(real_puzzles):
    q, a, ratings = real_puzzles
    # Checkpoint 0: passes halt at (2, 3, never), right from (2, 0, 1); checkpoint 1 (primary): (3, 3, 1), right
    # from (4, 1, 0). Pass (1, 2) halts first (segment 1) and is wrong; (0, 0) halts at 2 and is right at 2;
    # (1, 0) and (1, 1) tie at 3, (1, 1) is more confident and right there ((1, 0) is right only from 4).
    runner = ScriptedRunner(halt_at=[[2, 3, 0], [3, 3, 1]], right_from=[[2, 0, 1], [4, 1, 0]],
                            q=[[0.0, 0.0, 5.0], [1.0, 2.0, -1.0]])
    res = evaluate_puzzles(runner, q, a, perturbations=make_perturbations("shift", 3), ratings=ratings, batch_size=5,
                           rules=SUDOKU.rules)
    # Subsets: the last k checkpoints, the first p passes.
    expected = {(1, 1): False, (1, 2): True, (1, 3): False, (2, 1): True, (2, 2): True, (2, 3): False}
    for (k, p), right in expected.items():
        assert (res.first_to_halt(k, p) == right).all(), (k, p)
    assert (res.fth_segment == 1).all() and not res.fth_no_halt.any()
    s = res.summary()
    assert s["first_to_halt"] == 0.0 and s["first_to_halt_detail"] == {"mean_segment": 1.0, "no_pass_halted": 0.0}
    assert s["paper_vote"] == s["label_free"] == s["verified_any"] == 1.0  # the other rules, for the columns below
    grid = {(r["checkpoints"], r["passes"]): r["first_to_halt"] for r in res.tables()["ensemble_grid"]}
    assert grid == {kp: float(right) for kp, right in expected.items()}
    for name in ("rating", "blanks"):
        rows = res.tables()[name]
        assert sum(r["puzzles"] for r in rows) == len(q)
        assert all(r["first_to_halt"] == 0.0 and r["paper_vote"] == r["label_free"] == r["verified_any"] == 1.0
                   for r in rows)
    table = res.puzzle_table()
    assert not table["first_to_halt"].any() and (table["first_to_halt_segment"] == 1).all()
    # The early-stop view reads each pass at its own halt; first_to_halt picks one pass of the ensemble.
    assert s["early_stop_view"]["exact_accuracy"] == 0.0 and res.es_steps[-1, 0].tolist() == [3] * len(q)


def test_no_pass_halting_falls_back_to_the_final_confidence(real_puzzles):
    q, a, _ = real_puzzles
    runner = ScriptedRunner(halt_at=[[0, 0], [0, 0]], right_from=[[0, 3], [0, 0]], q=[[0.0, 2.0], [1.0, -1.0]])
    res = evaluate_puzzles(runner, q, a, perturbations=make_perturbations("shift", 2), batch_size=7,
                           rules=SUDOKU.rules)
    assert res.first_to_halt().all() and res.fth_no_halt.all() and (res.fth_segment == 4).all()
    assert not res.first_to_halt(1, 2).any()  # the primary's passes alone: (1, 0) is the more confident, and wrong
    assert res.summary()["first_to_halt_detail"] == {"mean_segment": 4.0, "no_pass_halted": 1.0}


@pytest.fixture(scope="module")
def real_puzzles():
    import polars as pl

    from conftest import REAL_SUDOKU
    from hrm.sudoku import grids_to_tokens, strings_to_grids

    df = pl.read_csv(REAL_SUDOKU / "valid.csv", infer_schema=False).head(12)
    q = grids_to_tokens(strings_to_grids(df["question"].to_list()))
    a = grids_to_tokens(strings_to_grids(df["answer"].to_list()))
    return q, a.astype(np.int16), df["rating"].cast(pl.Int32).to_numpy()


# ============================================================================ the real engine, HRM and TRM


def tiny_hrm(seed: int) -> HRM:
    torch.manual_seed(seed)
    model = HRM(HRMConfig(batch_size=4, seq_len=81, puzzle_emb_ndim=16, num_puzzle_identifiers=1, vocab_size=11,
                          H_cycles=1, L_cycles=1, H_layers=1, L_layers=1, hidden_size=16, expansion=2, num_heads=2,
                          pos_encodings="rope", halt_max_steps=4, halt_exploration_prob=0.1, forward_dtype="float32"))
    with torch.no_grad():  # a Q head that halts some passes, at different segments
        model.inner.q_head.weight.normal_(0, 0.5)
        model.inner.q_head.bias.copy_(torch.tensor([-3.0, 0.0]))
    return model.eval()


def tiny_trm(seed: int) -> TRM:
    torch.manual_seed(seed)
    model = TRM(TRMConfig(batch_size=4, seq_len=81, vocab_size=11, puzzle_emb_ndim=16, puzzle_emb_len=1, hidden_size=16,
                          num_heads=2, expansion=2, L_layers=1, H_cycles=2, L_cycles=1, halt_max_steps=4,
                          forward_dtype="float32"))
    with torch.no_grad():
        model.inner.q_head.weight.normal_(0, 0.5)
        model.inner.q_head.bias.copy_(torch.tensor([-1.0, 0.3]))
    return model.eval()


@pytest.mark.parametrize("make", [tiny_hrm, tiny_trm], ids=["hrm", "trm"])
def test_the_engine_records_q_halt_after_every_segment(make):
    model = make(3)
    x = torch.randint(1, 11, (10, 81), generator=torch.Generator().manual_seed(4)).numpy()
    ref = model.predict(x)
    out = Engine([model], max_rows=4).run(x)
    assert out.segment_q_halt.shape == (1, 4, 10) and out.segment_q_halt.dtype == np.float32
    assert np.allclose(out.segment_q_halt[0], ref.q_halt.numpy(), atol=1e-6)
    assert np.array_equal(out.segment_q_halt[:, -1], out.q_halt)
    # Early stop: the value at the stop stands for the later segments, as the halt flags do.
    early = Engine([model], max_rows=3).run(x, early_stop=True)
    at_stop = np.take_along_axis(early.segment_q_halt, early.steps[:, None].astype(np.int64) - 1, 1)[:, 0]
    assert np.array_equal(at_stop, early.q_halt) and np.array_equal(early.segment_q_halt[:, -1], early.q_halt)
    first = np.where(out.segment_halted.any(1), out.segment_halted.argmax(1) + 1, 4)
    assert np.array_equal(early.steps, first)
    assert np.allclose(np.take_along_axis(out.segment_q_halt, first[:, None] - 1, 1)[:, 0], early.q_halt, atol=1e-6)


def brute_force(engine: Engine, pert, inputs: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """Per subset (k, p): each puzzle's first-to-halt answer read off the engine's own segment predictions, mapped back
    to the original space and compared there with the label, by sorting the candidates by (segment, -q_halt, order);
    and the full ensemble's segment."""
    K, P, n, S = engine.num_models, len(pert), len(inputs), engine.segments
    out = engine.run(pert.apply(inputs).reshape(P * n, 81), pert.apply(labels).reshape(P * n, 81),
                     keep_segment_predictions=True)
    halted = out.segment_halted.reshape(K, S, P, n)
    q = out.segment_q_halt.reshape(K, S, P, n)
    answers = pert.restore(out.segment_predictions.reshape(K, S, P, n, 81).transpose(1, 0, 2, 3, 4))  # [S, K, P, n, 81]
    right, segments = {}, np.zeros(n, np.int64)
    for k in range(1, K + 1):
        for p in range(1, P + 1):
            ok = []
            for i in range(n):
                cands = []
                for kk in range(K - k, K):
                    for pp in range(p):
                        fires = np.flatnonzero(halted[kk, :, pp, i])
                        seg = fires[0] + 1 if fires.size else S
                        cands.append((seg if fires.size else S + 1, -float(q[kk, seg - 1, pp, i]), kk * P + pp, seg))
                _, _, index, seg = min(cands)
                kk, pp = divmod(index, P)
                ok.append(bool((answers[seg - 1, kk, pp, i] == labels[i]).all()))
                if (k, p) == (K, P):
                    segments[i] = seg
            right[k, p] = np.array(ok)
    return right, segments


@pytest.mark.parametrize("make,kind", [(tiny_hrm, "symmetry"), (tiny_trm, "shift")], ids=["hrm", "trm"])
def test_first_to_halt_on_real_checkpoints_matches_a_brute_force(make, kind):
    """Labels made from the models' own answers (some pass's answer at its first halt, mapped back), so that some
    passes are right and the rule's choice decides; the evaluation's numbers equal the brute force's. Random
    boards: on these the tiny models' halting varies with the input (on real puzzles it hardly does)."""
    q = torch.randint(1, 11, (12, 81), generator=torch.Generator().manual_seed(4)).numpy().astype(np.uint8)
    engine = Engine([make(2), make(5)], max_rows=8)
    pert = make_perturbations(kind, 3, seed=1)
    n, K, P, S = len(q), 2, 3, engine.segments
    out = engine.run(pert.apply(q).reshape(P * n, 81), keep_segment_predictions=True)
    answers = pert.restore(out.segment_predictions.reshape(K, S, P, n, 81).transpose(1, 0, 2, 3, 4))
    # Each puzzle's label: a random pass's answer at its own first halt (else its last segment).
    halted = out.segment_halted.reshape(K, S, P, n)
    own = np.where(halted.any(1), halted.argmax(1), S - 1)  # [K, P, n]
    g = np.random.default_rng(0)
    k, p, i = g.integers(0, K, n), g.integers(0, P, n), np.arange(n)
    labels = answers[own[k, p, i], k, p, i].astype(np.int16)
    res = evaluate_puzzles(engine, q, labels, perturbations=pert, batch_size=5, rules=SUDOKU.rules)
    right, segments = brute_force(engine, pert, q, labels)
    for (k, p), ok in right.items():
        assert np.array_equal(res.first_to_halt(k, p), ok), (k, p)
    assert np.array_equal(res.fth_segment, segments)
    assert right[K, P].any() and not right[K, P].all()  # the labels make the choice matter
    assert len(set(segments.tolist())) > 1  # puzzles whose first halt comes at different segments
    if make is tiny_hrm:
        assert res.fth_no_halt.any() and (res.fth_segment[res.fth_no_halt] == S).all()  # and some where none halts
    early = evaluate_puzzles(engine, q, labels, perturbations=pert, batch_size=6, early_stop=True, rules=SUDOKU.rules)
    assert np.array_equal(early.fth_correct, res.fth_correct) and np.array_equal(early.fth_segment, res.fth_segment)
