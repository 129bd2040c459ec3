"""hrm.analysis and `hrm analyze`: shapes, determinism and properties with known answers.

Models: a tiny random HRM (deterministic seed); a hand-built "copy" HRM whose every state is a
fixed point that decodes to the input (all attention / MLP outputs zeroed, one-hot embedding
and LM head, zero initial states), so its answers and residuals are known exactly; and small
fake segment maps (identity, negation, drift, contraction) with known convergence behaviour.
Puzzles: the real ones in tests/data/real-sudoku/valid.csv.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from conftest import REAL_SUDOKU as REAL
from hrm.analysis import (
    CONVERGED, DRIFTING, OSCILLATING, aligned_curve, answer_changes, answer_classes, classify, critical_histogram,
    critical_step, critical_summary, decode, easy_probe, equivalence_classes, first_correct, initial_state, landscape,
    PerturbedRuns, multistability_summary, pca_basis, relative_residual, reveal_all_but,
    run_perturbed, run_segment, run_trace, score_predictions, state_clusters, trajectory_pca, violations,
)
from hrm.model import HRM, HRMConfig, InnerCarry, save_checkpoint
from hrm.tasks import SUDOKU
from hrm.sudoku import BLANK_TOKEN, grids_to_tokens, is_valid_solution, strings_to_grids, tokens_to_grids
from pipelines.cli import cli

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def puzzles() -> tuple[np.ndarray, np.ndarray]:
    df = pl.read_csv(REAL / "valid.csv", infer_schema=False)  # shipped with the tests: missing is a failure
    x = grids_to_tokens(strings_to_grids(df["question"].to_list())).astype(np.int32)
    y = grids_to_tokens(strings_to_grids(df["answer"].to_list())).astype(np.int32)
    return x, y


def tiny_config(**kw) -> HRMConfig:
    base = dict(hidden_size=32, num_heads=4, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2, halt_max_steps=4,
                puzzle_emb_ndim=32, forward_dtype="float32", batch_size=8)
    return HRMConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> HRM:
    torch.manual_seed(seed)
    model = HRM(tiny_config(**kw))
    with torch.no_grad():  # make the Q head and the puzzle embedding matter
        model.inner.q_head.weight.normal_(0, 0.3)
    return model.eval()


def copy_model(**kw) -> HRM:
    """Every block is x -> rmsnorm(x); one-hot token (and puzzle) embedding and LM head; zero initial states.

    From the zero state, z_L = rmsnorm(x) and z_H = rmsnorm(z_L) are proportional to the one-hot
    of the cell's token and stay there: a fixed point whose answer is the input itself.
    """
    model = tiny_model(**kw)
    inner = model.inner
    h = inner.config.hidden_size
    with torch.no_grad():
        for level in (inner.H_level, inner.L_level):
            for layer in level.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
        inner.H_init.zero_()
        inner.L_init.zero_()
        eye = torch.zeros(inner.config.vocab_size, h)
        eye[torch.arange(inner.config.vocab_size), torch.arange(inner.config.vocab_size)] = 1
        inner.embed_tokens.embedding_weight.copy_(eye)
        inner.lm_head.weight.copy_(eye)
        inner.puzzle_emb.weights.zero_()
        inner.puzzle_emb.weights[:, h - 1] = 1  # the prefix position gets an input too (an unused unit)
    return model


class FakeInner(nn.Module):
    """A segment = one H update z -> f(z) on both levels; LM and Q heads are fixed random linears."""

    def __init__(self, f, segments: int = 6, hidden: int = 8):
        super().__init__()
        self.config = HRMConfig(hidden_size=hidden, num_heads=1, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1,
                                halt_max_steps=segments, puzzle_emb_ndim=0, forward_dtype="float32", batch_size=1)
        self.forward_dtype = torch.float32
        self.puzzle_emb_len = 0
        self.f = f
        g = torch.Generator().manual_seed(0)
        self.register_buffer("H_init", torch.ones(hidden))
        self.register_buffer("L_init", torch.ones(hidden))
        self.lm_head = nn.Linear(hidden, 11, bias=False)
        self.q_head = nn.Linear(hidden, 2)
        with torch.no_grad():
            self.lm_head.weight.copy_(torch.randn(11, hidden, generator=g))
            self.q_head.weight.copy_(torch.randn(2, hidden, generator=g))

    def empty_carry(self, b: int) -> InnerCarry:
        z = torch.zeros(b, self.config.seq_len, self.config.hidden_size)
        return InnerCarry(z, z.clone())

    def reset_carry(self, reset, carry):
        flag = reset.view(-1, 1, 1)
        return InnerCarry(torch.where(flag, self.H_init, carry.z_H), torch.where(flag, self.L_init, carry.z_L))

    def forward(self, carry, batch, trace=None):
        z_h, z_l = self.f(carry.z_H), self.f(carry.z_L)
        if trace is not None:
            trace.append((z_h, z_l))
        q = self.q_head(z_h[:, 0])
        return InnerCarry(z_h, z_l), self.lm_head(z_h), (q[..., 0], q[..., 1])


# ----------------------------------------------------------------------------- traces


def test_trace_shapes_and_agreement_with_predict(puzzles):
    x, y = puzzles
    model = tiny_model()
    tr = run_trace(model, x[:6], keep_states=np.array([1, 4]), keep_final=True)
    s, c = 4, 2
    assert tr.steps == s * c
    assert tr.predictions.shape == (s * c, 6, 81) and tr.predictions.dtype == np.uint8
    assert tr.seg_predictions.shape == (s, 6, 81)
    for a in (tr.res_H, tr.res_L, tr.norm_H, tr.norm_L):
        assert a.shape == (s * c, 6)
    assert tr.seg_res_H.shape == tr.q_halt.shape == (s, 6)
    assert tr.pcs.shape == (s * c, 6, 2) and tr.pca_ratio.shape == (6, 2)
    assert tr.z_H.shape == (s * c, 2, 82, 32) and list(tr.kept_rows) == [1, 4]
    # Same numbers as HRM.predict (the model's own inference API).
    p = model.predict(x[:6], trace=True)
    np.testing.assert_array_equal(tr.final_predictions, p.predictions.numpy())
    np.testing.assert_array_equal(tr.seg_predictions, p.logits.argmax(-1).numpy())
    np.testing.assert_array_equal(tr.predictions[c - 1::c], tr.seg_predictions)  # segment end = segment answer
    np.testing.assert_allclose(tr.q_halt, p.q_halt.numpy())
    torch.testing.assert_close(tr.z_H, p.z_H[:, [1, 4]])
    torch.testing.assert_close(tr.final_z_H, p.z_H[-1])
    # Step residuals chain the states: step t vs step t-1.
    expect = relative_residual(p.z_H[3], p.z_H[2]).numpy()
    np.testing.assert_allclose(tr.res_H[3], expect, rtol=1e-6)
    np.testing.assert_allclose(tr.seg_res_H[1], relative_residual(p.z_H[3], p.z_H[1]).numpy(), rtol=1e-6)


def test_trace_is_deterministic_and_batch_independent(puzzles):
    x, _ = puzzles
    model = tiny_model()
    a = run_trace(model, x[:6])
    b = run_trace(model, x[:6])
    for name in ("predictions", "res_H", "res_L", "pcs", "q_halt", "seg_return"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    halves = [run_trace(model, x[:3]), run_trace(model, x[3:6])]
    np.testing.assert_array_equal(a.predictions, np.concatenate([h.predictions for h in halves], axis=1))
    np.testing.assert_allclose(a.res_H, np.concatenate([h.res_H for h in halves], axis=1), rtol=1e-5)


def test_residual_of_unchanged_state_is_zero(puzzles):
    x, _ = puzzles
    z = torch.randn(3, 82, 32)
    assert relative_residual(z, z.clone()).tolist() == [0.0, 0.0, 0.0]
    assert relative_residual(z + 1, torch.zeros_like(z)).isinf().all()  # from the zero state: undefined -> inf
    # A segment map that feeds the state back unchanged: every residual exactly 0, converged.
    tr = run_trace(FakeInner(lambda z: z), x[:4])
    assert (tr.res_H == 0).all() and (tr.res_L == 0).all() and (tr.seg_res == 0).all()
    cls = classify(tr.seg_res, tr.seg_return)
    assert (cls == CONVERGED).all()
    assert not violations(cls, answer_changes(tr.seg_predictions)).any()


def test_convergence_classes_of_known_dynamics(puzzles):
    x, _ = puzzles
    c = torch.full((8,), 3.0)
    cases = {
        CONVERGED: lambda z: 0.1 * z + 0.9 * c,  # contraction to c
        OSCILLATING: lambda z: -z,  # period 2
        DRIFTING: lambda z: z + 1.0,  # steady drift: distance grows with the lag
    }
    for expected, f in cases.items():
        tr = run_trace(FakeInner(f), x[:3])
        assert (classify(tr.seg_res, tr.seg_return) == expected).all(), expected
    tr = run_trace(FakeInner(lambda z: -z), x[:3])
    assert (tr.seg_return == 0).all()  # z(S) == z(S-2)
    assert (answer_changes(tr.seg_predictions) > 0).all()  # lm_head(-z) flips the argmax
    assert violations(classify(tr.seg_res, tr.seg_return), answer_changes(tr.seg_predictions)).all()
    # The arithmetic of classify alone.
    res = np.array([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.005, 0.5, 0.5]])
    ret = np.array([np.nan, 0.1, 0.9])
    assert classify(res, ret, tol=0.01, tail=1).tolist() == [CONVERGED, OSCILLATING, DRIFTING]


def test_copy_model_is_a_fixed_point_that_copies_the_input(puzzles):
    x, y = puzzles
    model = copy_model()
    both = np.concatenate([x[:4], y[:2]])  # 4 puzzles with blanks, 2 complete grids
    tr = run_trace(model, both)
    np.testing.assert_array_equal(tr.final_predictions, both)  # blanks stay blank
    assert np.isinf(tr.res_H[0]).all()  # from the zero initial state
    assert (tr.res_H[1:] < 1e-5).all() and (tr.seg_res[1:] < 1e-5).all()
    assert (classify(tr.seg_res, tr.seg_return) == CONVERGED).all()
    assert decode(model, torch.zeros(1, 82, 32)).shape == (1, 81)


# ----------------------------------------------------------------------------- conflicts, scores, critical step


def test_conflicts_known_answers(puzzles):
    x, y = puzzles
    assert is_valid_solution(tokens_to_grids(y)).all()
    assert (SUDOKU.rules.errors(None, y) == 0).all()  # valid grids
    assert (SUDOKU.rules.errors(None, x) == 0).all()  # valid partial grids: blanks ignored
    bad = y[:1].copy()
    bad[0, 0] = bad[0, 1]  # duplicate in row 0, box 0 and (the digit already sits in column 0) column 0
    assert SUDOKU.rules.errors(None, bad).tolist() == [3]
    assert SUDOKU.rules.errors(None, np.zeros((2, 3, 81), np.uint8)).shape == (2, 3)


def test_scores(puzzles):
    x, y = puzzles
    sc = score_predictions(y[:3], y[:3], SUDOKU.rules.blank_cells(x[:3], y[:3]))
    assert sc["exact"].all() and (sc["cell_acc"] == 1).all() and (sc["blank_acc"] == 1).all()
    sc = score_predictions(x[:3], y[:3], SUDOKU.rules.blank_cells(x[:3], y[:3]))  # the puzzle as its own answer: givens right, blanks wrong
    assert not sc["exact"].any() and (sc["blank_acc"] == 0).all()
    np.testing.assert_allclose(sc["cell_acc"], (x[:3] != BLANK_TOKEN).mean(1), rtol=1e-6)
    assert np.isnan(score_predictions(y[:1], y[:1], SUDOKU.rules.blank_cells(y[:1], y[:1]))["blank_acc"]).all()  # no blanks: undefined


def test_critical_step_known_answers(puzzles):
    correct = np.array([[0, 0, 1, 1], [1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0]], bool).T  # [S, N]
    assert critical_step(correct).tolist() == [3, 1, 3, 0, 0]
    assert first_correct(correct).tolist() == [3, 1, 1, 0, 2]
    blank = np.array([[0.2, 0.6, 1, 1], [1, 1, 1, 1], [1, 0.5, 1, 1], [0, 0, 0, 0], [0.1, 1, 1, 0.9]]).T
    s = critical_summary(correct, blank)
    assert s["solved"] == pytest.approx(0.6) and s["lost"] == pytest.approx(0.2) and s["relapsed"] == pytest.approx(0.2)
    assert s["jumps"] == 2 and s["blank_acc_before_mean"] == pytest.approx(0.55) and s["jump_mean"] == pytest.approx(0.45)
    hist = critical_histogram(critical_step(correct), 4)
    assert [r["count"] for r in hist] == [1, 0, 2, 0, 2] and hist[-1]["label"] == "never"
    curve = {r["offset"]: r["blank_acc"] for r in aligned_curve(blank, critical_step(correct), [-1, 0])}
    assert curve[0] == pytest.approx(1.0) and curve[-1] == pytest.approx(0.55)
    # A puzzle with zero blanks, through a model that copies its givens: critical step 1.
    x, y = puzzles
    model = copy_model()
    inputs = np.concatenate([y[:2], x[:2]])
    tr = run_trace(model, inputs, steps=False)
    seg = score_predictions(tr.seg_predictions, np.concatenate([y[:2], y[:2]]), SUDOKU.rules.blank_cells(inputs, None))
    assert critical_step(seg["exact"]).tolist() == [1, 1, 0, 0]


# ----------------------------------------------------------------------------- easy probe


def test_reveal_all_but_k(puzzles):
    x, y = puzzles
    blanks = (x == BLANK_TOKEN).sum(1)
    for k in (0, 1, 5, 81):
        e = reveal_all_but(x, y, k, seed=3, rules=SUDOKU.rules)
        assert ((e == BLANK_TOKEN).sum(1) == np.minimum(k, blanks)).all()
        filled = e != BLANK_TOKEN
        assert (e[filled] == y[filled]).all()
        np.testing.assert_array_equal(e, reveal_all_but(x, y, k, seed=3, rules=SUDOKU.rules))
    assert not np.array_equal(reveal_all_but(x, y, 5, seed=3, rules=SUDOKU.rules), reveal_all_but(x, y, 5, seed=4, rules=SUDOKU.rules))


def test_easy_probe_known_answers(puzzles):
    x, y = puzzles
    model = copy_model()
    rows = easy_probe(model, x[:8], y[:8], [0, 1, 2], batch_size=3, rules=SUDOKU.rules)
    assert [r["k"] for r in rows] == [0, 1, 2]
    assert rows[0]["exact"] == 1.0 and rows[1]["exact"] == 0.0 and rows[2]["exact"] == 0.0
    assert rows[1]["blank_acc"] == 0.0 and rows[1]["blanks_left"] == 1.0
    assert all(r["converged"] == 1.0 and r["violation_rate"] == 0.0 for r in rows)
    # Batch size does not change the result (random model).
    rnd = tiny_model()
    assert easy_probe(rnd, x[:6], y[:6], [1, 10], batch_size=2, rules=SUDOKU.rules) == easy_probe(rnd, x[:6], y[:6], [1, 10], batch_size=64, rules=SUDOKU.rules)


# ----------------------------------------------------------------------------- multiple fixed points


def test_equivalence_classes():
    linked = np.zeros((1, 5, 5), bool)
    linked[0, 0, 1] = linked[0, 1, 2] = linked[0, 4, 3] = True  # components {0, 1, 2}, {3, 4}
    count, label = equivalence_classes(linked)
    assert count.tolist() == [2] and label.tolist() == [[0, 0, 0, 3, 3]]
    answers = np.array([[[1, 2]], [[1, 2]], [[2, 2]]], np.uint8)  # [R=3, N=1, 2]
    count, label = answer_classes(answers)
    assert count.tolist() == [2] and label[:, 0].tolist() == [0, 0, 2]
    count, _ = answer_classes(answers, among=np.array([[True], [False], [False]]))
    assert count.tolist() == [1]
    states = torch.tensor([[[1.0, 0.0]], [[1.0, 0.001]], [[0.0, 1.0]]])  # [R, N, D]
    assert state_clusters(states, tol=0.05)[0].tolist() == [2]


def test_multistability_known_answers(puzzles):
    x, y = puzzles
    # The copy model commutes with digit relabelling and forgets small initial noise: one end state.
    ms = run_perturbed(copy_model(), x[:5], y[:5], PerturbedRuns(shifts=4, noise_runs=2, noise_std=1e-4, batch_size=2),
                       rules=SUDOKU.rules)
    assert ms.answers.shape == (6, 5, 81) and list(ms.kind) == ["plain"] + ["shift"] * 3 + ["noise_fork"] * 2
    assert (ms.n_answers == 1).all() and (ms.n_state_clusters == 1).all()
    np.testing.assert_array_equal(ms.answers[0], x[:5])
    assert ms.trapped.all()  # converged, and wrong (the blanks stay blank)
    s = multistability_summary(ms)
    assert s["trapped_runs"] == 1.0 and s["mean_distinct_answers"] == 1.0 and s["any_run_correct"] == 0.0
    # A random model: shapes, determinism, the seed matters.
    rnd = tiny_model()
    a = run_perturbed(rnd, x[:4], y[:4], PerturbedRuns(shifts=3, noise_runs=3, seed=1, batch_size=2),
                      rules=SUDOKU.rules)
    b = run_perturbed(rnd, x[:4], y[:4], PerturbedRuns(shifts=3, noise_runs=3, seed=1, batch_size=64),
                      rules=SUDOKU.rules)
    c = run_perturbed(rnd, x[:4], y[:4], PerturbedRuns(shifts=3, noise_runs=3, seed=2), rules=SUDOKU.rules)
    np.testing.assert_array_equal(a.answers, b.answers)
    np.testing.assert_array_equal(a.state_id, b.state_id)
    assert not np.array_equal(a.answers[3:], c.answers[3:])
    np.testing.assert_array_equal(a.answers[:3], c.answers[:3])  # relabellings do not depend on the seed
    assert (a.n_answers >= 1).all() and (a.n_answers <= 6).all() and a.exact.shape == (6, 4)
    # Shift runs are the plain run on relabelled puzzles, mapped back.
    from fork_reference import cyclic_shift_tokens

    tr = run_trace(rnd, cyclic_shift_tokens(x[:4], 2), steps=False)
    np.testing.assert_array_equal(cyclic_shift_tokens(a.answers[2], 2), tr.final_predictions)


def test_fork_noise_is_one_truncated_normal_vector_shared_by_every_position():
    """docs/reference-semantics.md §10: the fork's reset_carry(use_default=False) adds to H_init (and to
    L_init) one vector of hidden size drawn from a normal of std 2 truncated at 2 standard deviations
    (scale corrected: hrm.model.layers.trunc_normal_init_), the same at every position. Checked against
    that description: shape, sharing, the bounds, the moments of the truncated normal."""
    from hrm.analysis.fixed_points import noise_draws

    model = tiny_model()
    draws = noise_draws(model, 400, "fork", seed=3)
    assert len(draws) == 400 and all(h.shape == (32,) and l.shape == (32,) for h, l in draws)
    eps = torch.stack([e for pair in draws for e in pair]).flatten().double()  # 25,600 values
    # The standard normal truncated to [-2, 2] has variance 0.7737413: the draws are N(0, (2 / sqrt(v))^2) cut there.
    bound = 2 * 2 / math.sqrt(0.7737413)
    assert eps.abs().max() <= bound + 1e-5 and eps.abs().max() > 0.9 * bound
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 2.0) < 0.05
    kurtosis = ((eps - eps.mean()) ** 4).mean() / eps.var() ** 2
    assert 2.2 < kurtosis < 2.6  # a truncated normal's (2.36), well below the normal's 3
    # Added to H_init at every position of every puzzle alike.
    state = initial_state(model, 3, noise=draws[0])
    delta = state.z_H - initial_state(model, 3).z_H
    assert torch.allclose(delta, draws[0][0].expand_as(delta))
    # Its own seeded stream; the iid kind keeps the earlier draws (per position and unit, std 0.5).
    assert torch.equal(noise_draws(model, 2, "fork", seed=3)[1][0], draws[1][0])
    iid = noise_draws(model, 2, "iid", seed=3)
    assert iid[0][0].shape == (82, 32) and 0.4 < torch.cat([e.flatten() for pair in iid for e in pair]).std() < 0.6
    with pytest.raises(ValueError, match="noise kind"):
        noise_draws(model, 1, "gaussian")


def test_multistability_is_reported_per_perturbation(puzzles):
    x, y = puzzles
    ms = run_perturbed(tiny_model(), x[:4], y[:4], PerturbedRuns(shifts=3, noise_runs=2, noise=("fork", "iid"), seed=1),
                       rules=SUDOKU.rules)
    assert list(ms.kind) == ["plain", "shift", "shift", "noise_fork", "noise_fork", "noise_iid", "noise_iid"]
    per = multistability_summary(ms)["by_perturbation"]
    assert list(per) == ["shift", "noise_fork", "noise_iid"]
    for name, rates in per.items():
        runs = (ms.kind == "plain") | (ms.kind == name)
        several = np.array([len({a.tobytes() for a in ms.answers[runs, i]}) > 1 for i in range(4)])
        assert rates["runs_per_puzzle"] == 3 and rates["puzzles_with_several_answers"] == several.mean()


def test_initial_state_noise(puzzles):
    model = tiny_model()
    base = initial_state(model, 2)
    assert torch.equal(base.z_H[0, 5], model.inner.H_init) and base.z_H.shape == (2, 82, 32)
    g = torch.Generator().manual_seed(0)
    noisy = initial_state(model, 2, noise_std=0.5, generator=g)
    d = (noisy.z_H - base.z_H).std().item()
    assert 0.4 < d < 0.6


# ----------------------------------------------------------------------------- PCA and landscape


def test_trajectory_pca_matches_svd():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(3, 7, 50, generator=g) * torch.tensor([5.0, 2.0] + [0.1] * 48)
    scores, ratio = trajectory_pca(states)
    for b in range(3):
        x = states[b].double().numpy()
        xc = x - x.mean(0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        ref = u[:, :2] * s[:2]
        np.testing.assert_allclose(np.abs(scores[b].numpy()), np.abs(ref), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(ratio[b].numpy(), (s[:2] ** 2) / (s ** 2).sum(), rtol=1e-4)
    basis = pca_basis(states[0])
    comps = basis["components"]
    torch.testing.assert_close(comps @ comps.T, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close((states[0] - basis["mean"]) @ comps.T, basis["scores"], atol=1e-3, rtol=1e-3)
    # Fewer directions of variance than components: the basis is completed, still orthonormal.
    line = torch.outer(torch.arange(4.0), torch.ones(10))
    c2 = pca_basis(line)["components"]
    torch.testing.assert_close(c2 @ c2.T, torch.eye(2), atol=1e-5, rtol=0)


def test_landscape(puzzles):
    x, y = puzzles
    model = tiny_model()
    tr = run_trace(model, x[:1], keep_states=True)
    z_h, z_l = tr.z_H[:, 0], tr.z_L[:, 0]
    land = landscape(model, x[0], z_h, (z_h[-1], z_l[-1]), center_segment=4, labels=y[0], radius=3, batch_size=5, rules=SUDOKU.rules)
    assert land.conflicts.shape == (7, 7) and land.dest.shape == (7, 7, 2) and land.trajectory.shape == (8, 2)
    assert land.scale == pytest.approx(np.sqrt(82 * 32) / 8)
    np.testing.assert_allclose(land.trajectory[-1], 0, atol=1e-5)  # the centre is the last state
    # Centre point: the model's own final answer and its next segment.
    assert land.conflicts[3, 3] == SUDOKU.rules.errors(None, tr.final_predictions)[0]
    nxt, *_ = run_segment(model, z_h[-1:], z_l[-1:], x[:1])
    comps = pca_basis(z_h)["components"]
    expect = ((nxt.reshape(1, -1) - z_h[-1].reshape(1, -1)) @ comps.T / land.scale).numpy()[0]
    np.testing.assert_allclose(land.dest[3, 3], expect, rtol=1e-4, atol=1e-4)
    # The grid runs batched: the batch size changes nothing.
    again = landscape(model, x[0], z_h, (z_h[-1], z_l[-1]), labels=y[0], radius=3, batch_size=100, rules=SUDOKU.rules)
    np.testing.assert_array_equal(land.conflicts, again.conflicts)
    np.testing.assert_allclose(land.dest, again.dest, rtol=1e-4, atol=1e-4)
    # The copy model decodes its centre to the valid puzzle: 0 conflicts there.
    cm = copy_model()
    ct = run_trace(cm, x[:1], keep_states=True)
    cl = landscape(cm, x[0], ct.z_H[:, 0], (ct.z_H[-1, 0], ct.z_L[-1, 0]), radius=1, flow=False, rules=SUDOKU.rules)
    assert cl.conflicts[1, 1] == 0 and cl.dest is None
    assert cl.digits[1, 1] == (x[0] != BLANK_TOKEN).sum()  # blanks decode as blank: not digits


# ----------------------------------------------------------------------------- the stage


def write_dataset(root: Path, x: np.ndarray, y: np.ndarray, raw_index: np.ndarray | None = None) -> Path:
    """A minimal dataset directory as `hrm shard` lays it out: manifest + one Arrow shard per split.
    ``raw_index``: each puzzle's row in the raw file (default: the split row)."""
    (root / "test").mkdir(parents=True)
    n = x.shape[0]
    tokens = pa.list_(pa.uint8(), 81)
    table = pa.table({
        "group_id": pa.array(np.arange(n, dtype=np.int32)), "puzzle_id": pa.array(np.arange(n, dtype=np.int32)),
        "rating": pa.array(np.zeros(n, np.int32)),
        "raw_index": pa.array(np.arange(n, dtype=np.int32) if raw_index is None else np.asarray(raw_index, np.int32)),
        "inputs": pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.uint8).ravel()), 81).cast(tokens),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(y.astype(np.uint8).ravel()), 81).cast(tokens),
    })
    with pa.ipc.new_file(root / "test" / "shard_00000.arrow", table.schema) as w:
        w.write_table(table)
    manifest = {"splits": {"test": {"rows": n, "groups": n,
                                    "shards": [{"file": "test/shard_00000.arrow", "rows": [0, n], "groups": [0, n]}]}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory, puzzles):
    x, y = puzzles
    root = tmp_path_factory.mktemp("analyze")
    ckpt = save_checkpoint(tiny_model(), root / "model" / "step_7")
    return ckpt, write_dataset(root / "ds", x, y)


def invoke(*args):
    return CliRunner().invoke(cli, ["analyze", *map(str, args)], catch_exceptions=False)


STAGE_ARGS = ["--sample", "6", "--puzzle-index", "0,30", "--landscape-radius", "2", "--fp-sample", "3",
              "--shifts", "2", "--noise-runs", "2", "--easy-k", "0,1,3", "--batch-size", "4", "--no-progress"]


def test_stage_end_to_end(stage_inputs, tmp_path):
    ckpt, ds = stage_inputs
    out = tmp_path / "out"
    result = invoke("--checkpoint", ckpt.parent, "--dataset", ds, "--output", out, *STAGE_ARGS)
    assert result.exit_code == 0, result.output
    for name in ("traces.parquet", "puzzles.parquet", "multistability.parquet", "landscape.parquet", "metrics.json",
                 "report.md", "plots/residuals.csv", "figures/residuals.png", "plots/critical.csv", "figures/critical.png",
                 "plots/easy.csv", "figures/easy.png", "figures/trajectory_raw0.png", "figures/landscape_raw30.png",
                 "figures/multistability.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "summary.json").read_text())
    assert metrics["run"]["puzzles"] == 6 and metrics["run"]["segments"] == 4
    headline = json.loads((out / "metrics.json").read_text())  # what dvc metrics show: a few keys, all in summary.json
    assert set(headline) == {"exact_accuracy", "blank_accuracy", "fixed_point", "critical", "easy", "multistability"}
    assert headline["fixed_point"]["converged"] == metrics["fixed_point"]["converged"]
    assert headline["easy"] == {k: v for k, v in metrics["easy"].items() if not k.startswith("violations_")}
    assert {"exact_accuracy", "fixed_point", "critical", "easy", "multistability", "landscapes"} <= set(metrics)
    # 2 shifts + 2 runs of each noise kind (the fork's and iid, the defaults), reported per perturbation too.
    assert metrics["multistability"]["runs_per_puzzle"] == 6 and "skipped" not in metrics
    assert list(metrics["multistability"]["by_perturbation"]) == ["shift", "noise_fork", "noise_iid"]
    assert {"several_stable_answers_noise_fork", "several_stable_answers_noise_iid"} <= set(headline["multistability"])
    assert "noise (fork) runs only" in (out / "report.md").read_text()
    from hrm.analysis import EASY_COLUMNS
    from pipelines.analyze import MULTISTABILITY_CSV, landscape_schema, multistability_schema  # a skipped run's, too

    MULTISTABILITY_SCHEMA, LANDSCAPE_SCHEMA = multistability_schema(SUDOKU.rules), landscape_schema(SUDOKU.rules)

    assert dict(pl.read_parquet_schema(out / "multistability.parquet")) == MULTISTABILITY_SCHEMA
    assert dict(pl.read_parquet_schema(out / "landscape.parquet")) == LANDSCAPE_SCHEMA
    assert pl.read_csv(out / "plots" / "easy.csv").columns == list(EASY_COLUMNS)
    assert pl.read_csv(out / "plots" / "multistability.csv").columns == list(MULTISTABILITY_CSV)
    traces = pq.read_table(out / "traces.parquet")
    n_rows = len(set(pl.read_parquet(out / "puzzles.parquet")["row"]))
    assert traces.num_rows == n_rows * 8  # puzzles x (segments x H_cycles)
    t = pl.from_arrow(traces.drop(["prediction", "z_H", "z_L"]))
    assert t.filter(pl.col("in_sample")).select(pl.col("row").n_unique()).item() == 6
    stored = traces.filter(pa.compute.is_valid(traces["z_H"]))
    assert sorted(set(stored["row"].to_pylist())) == [0, 30] and len(stored["z_H"][0]) == 82 * 32
    assert t.filter(~pl.col("segment_end"))["q_halt"].null_count() == t.filter(~pl.col("segment_end")).height
    # Stored states reproduce the model: the last state of puzzle 0 decodes to its traced prediction.
    row0 = stored.filter(pa.compute.equal(stored["row"], 0))
    z_last = torch.tensor(np.asarray(row0["z_H"][7].as_py(), np.float32)).reshape(1, 82, 32)
    assert decode(_load(ckpt), z_last).numpy().tolist()[0] == row0["prediction"][7].as_py()
    report = (out / "report.md").read_text()
    assert "figures/landscape_raw30.png" in report and "Easy-puzzle probe" in report
    assert report.startswith("# HRM mechanistic analysis\n") and json.loads((out / "run.json").read_text())["arch"]["label"] == "HRM"
    # Same inputs, same outputs.
    out2 = tmp_path / "again"
    assert invoke("--checkpoint", ckpt.parent, "--dataset", ds, "--output", out2, *STAGE_ARGS).exit_code == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out2) for p in out2.rglob("*") if p.is_file())
    different = [str(f) for f in files if (out / f).read_bytes() != (out2 / f).read_bytes()]
    assert different == ["run.json"]  # byte-identical, figures included; run.json holds the timings


def _load(ckpt):
    from hrm.model import load_checkpoint

    return load_checkpoint(ckpt, device="cpu")


def test_stage_bad_inputs(stage_inputs, puzzles, tmp_path):
    ckpt, ds = stage_inputs
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(tmp_path / "nope"), "--dataset", str(ds), "-o", str(out)])
    assert r.exit_code != 0 and "nope" in r.output and "not found" in r.output
    # A checkpoint whose config does not match its tensors: named, with the mismatching key.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "step_1").write_bytes(ckpt.read_bytes())
    cfg = yaml.safe_load((ckpt.parent / "all_config.yaml").read_text())
    cfg["arch"]["hidden_size"] = 64
    (bad / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(bad / "step_1"), "--dataset", str(ds), "-o", str(out)])
    assert r.exit_code != 0 and str(bad / "step_1") in r.output and "shape mismatch" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(ckpt), "--dataset", str(tmp_path), "-o", str(out)])
    assert r.exit_code != 0 and "manifest" in r.output
    r = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(ckpt), "--dataset", str(ds), "-o", str(out),
                                 "--puzzle-index", "999"])
    assert r.exit_code != 0 and "999" in r.output and str(ds) in r.output
    # Tokens outside the encoding: the dataset and the rows are named.
    x, y = puzzles
    y_bad = y.copy()
    y_bad[2, 5] = 1
    bad_ds = write_dataset(tmp_path / "bad_ds", x, y_bad)
    r = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(ckpt), "--dataset", str(bad_ds), "-o", str(out),
                                 "--sample", "0"])
    assert r.exit_code != 0 and "rows [2]" in r.output and str(bad_ds) in r.output
    assert not out.exists()  # nothing half-written


def dvc_stage_args(ckpt: Path, ds: Path, out: Path, **overrides) -> list[str]:
    """The `analyze` command of dvc.yaml with params.yaml (its analyze section with ``overrides``, written
    beside ``out``) filled in, paths redirected."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["analyze"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["analyze"].update(overrides)
    config = out.parent / "params.yaml"
    config.write_text(yaml.safe_dump(params))
    values = {**{f"analyze.{k}": v for k, v in params["analyze"].items()}, "seed": params["seed"]}
    cmd = re.sub(r"\$\{([\w.]+)\}", lambda m: str(values[m.group(1)]), stage["cmd"])
    args = shlex.split(cmd)
    assert args[:2] == ["hrm", "analyze"]
    args = args[2:]
    paths = {"--checkpoint": ckpt, "--dataset": ds, "--output": out, "--config-file": config}
    return [str(paths[args[i - 1]]) if i and args[i - 1] in paths else a for i, a in enumerate(args)]


def declared_outputs() -> list[str]:
    """Every path the `analyze` stage declares (outs, metrics, plots, top-level plots), under data/analysis/."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stage = spec["stages"]["analyze"]
    paths = [next(iter(o)) if isinstance(o, dict) else o
             for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]
    for plot in spec.get("plots", []):
        for entry in plot.values():
            y = entry.get("y") if isinstance(entry, dict) else None
            paths += list(y) if isinstance(y, dict) else []
    prefix = "data/analysis/"
    return sorted({p[len(prefix):] for p in paths if p.startswith(prefix)})


FAST = dict(sample=4, batch_size=4, segments=2, easy_sample=2, fp_sample=2, landscape_radius=1, num_threads=1)


@pytest.mark.parametrize("switches", [
    dict(easy_k="none", shifts=0, puzzle_index="none"),
    dict(easy_k="", shifts=1, noise_runs=0, puzzle_index="0"),
])
def test_stage_switched_off_analyses_still_write_every_declared_output(stage_inputs, tmp_path, switches):
    from hrm.analysis import EASY_COLUMNS
    from pipelines.analyze import MULTISTABILITY_CSV, landscape_schema, multistability_schema

    MULTISTABILITY_SCHEMA, LANDSCAPE_SCHEMA = multistability_schema(SUDOKU.rules), landscape_schema(SUDOKU.rules)

    ckpt, ds = stage_inputs
    out = tmp_path / "out"
    args = dvc_stage_args(ckpt.parent, ds, out, **FAST, **switches)
    result = invoke(*args, "--no-flow")  # --no-flow must not change the landscape schema either
    assert result.exit_code == 0, result.output
    declared = declared_outputs()
    assert {"multistability.parquet", "landscape.parquet", "metrics.json", "summary.json", "plots",
            "figures"} <= set(declared)
    assert [p for p in declared if not (out / p).exists()] == []
    ms = pl.read_parquet(out / "multistability.parquet")
    assert ms.height == 0 and dict(ms.schema) == MULTISTABILITY_SCHEMA
    land = pl.read_parquet(out / "landscape.parquet")
    assert dict(land.schema) == LANDSCAPE_SCHEMA
    easy = pl.read_csv(out / "plots" / "easy.csv")
    assert easy.height == 0 and easy.columns == list(EASY_COLUMNS)
    hist = pl.read_csv(out / "plots" / "multistability.csv")
    assert hist.height == 0 and hist.columns == list(MULTISTABILITY_CSV)
    # Skips are reported with their reason, and no number stands in for a skipped analysis.
    metrics = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    expect = {"easy", "multistability"} | ({"landscapes"} if switches["puzzle_index"] == "none" else set())
    assert set(metrics["skipped"]) == expect
    assert "easy" not in metrics and "multistability" not in metrics
    assert "## Skipped" in report and all(why in report for why in metrics["skipped"].values())
    assert not (out / "figures" / "easy.png").exists() and not (out / "figures" / "multistability.png").exists()
    if switches["puzzle_index"] == "none":
        assert land.height == 0 and metrics["landscapes"] == {} and not list(out.glob("figures/*_*.png"))
        assert "--puzzle-index" in metrics["skipped"]["landscapes"]
    else:
        assert land.height == 9 and land["dest_i"].null_count() == 9 and set(land["row"]) == {0}
    assert "--shifts" in metrics["skipped"]["multistability"] and "--easy-k" in metrics["skipped"]["easy"]


def test_stage_rerun_keeps_only_the_current_per_puzzle_figures(stage_inputs, tmp_path):
    ckpt, ds = stage_inputs
    out = tmp_path / "out"
    fast = ["--sample", "3", "--easy-k", "none", "--shifts", "0", "--landscape-radius", "1", "--no-flow",
            "--no-progress"]
    assert invoke("--checkpoint", ckpt, "--dataset", ds, "-o", out, "--puzzle-index", "0,30", *fast).exit_code == 0
    first = sorted(p.name for p in (out / "figures").glob("*_*.png"))
    assert first == ["landscape_raw0.png", "landscape_raw30.png", "trajectory_raw0.png", "trajectory_raw30.png"]
    result = invoke("--checkpoint", ckpt, "--dataset", ds, "-o", out, "--puzzle-index", "5", *fast)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "figures").glob("*_*.png")) == ["landscape_raw5.png", "trajectory_raw5.png"]
    assert set(pl.read_parquet(out / "landscape.parquet")["row"]) == {5}
    assert list(json.loads((out / "summary.json").read_text())["landscapes"]) == ["5"]
    report = (out / "report.md").read_text()
    assert "landscape_raw5.png" in report and "_raw30.png" not in report and "_raw0.png" not in report
    # The run's other outputs are all there.
    for name in ("traces.parquet", "puzzles.parquet", "multistability.parquet", "metrics.json", "run.json",
                 "report.md", "plots/residuals.csv", "figures/residuals.png", "figures/critical.png", "plots/easy.csv"):
        assert (out / name).is_file(), name


def test_puzzle_index_names_raw_rows_by_default(puzzles, stage_inputs, tmp_path):
    """--puzzle-index numbers rows of the raw file (the fork's demo indexes the full test file) unless
    --index-by row; here split row r is raw row 3r + 2, as a capped test split would make it."""
    x, y = puzzles
    ckpt, _ = stage_inputs
    n = 10
    ds = write_dataset(tmp_path / "capped", x[:n], y[:n], raw_index=3 * np.arange(n) + 2)
    fast = ["--sample", "3", "--easy-k", "none", "--shifts", "0", "--landscape-radius", "1", "--no-flow", "--no-progress"]
    out = tmp_path / "out"
    result = invoke("--checkpoint", ckpt, "--dataset", ds, "-o", out, "--puzzle-index", "17", *fast)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["puzzle_index"] == {"by": "raw", "asked": [17], "rows": [5], "raw_index": [17]}
    assert sorted(p.name for p in (out / "figures").glob("*_*.png")) == ["landscape_raw17.png", "trajectory_raw17.png"]
    assert set(pl.read_parquet(out / "landscape.parquet")["row"]) == {5}
    puzzles_table = pl.read_parquet(out / "puzzles.parquet")
    assert puzzles_table.filter(pl.col("row") == 5)["raw_index"].to_list() == [17]
    assert (puzzles_table["raw_index"] == 3 * puzzles_table["row"] + 2).all()
    stored = pq.read_table(out / "traces.parquet").filter(pa.compute.is_valid(pq.read_table(out / "traces.parquet")["z_H"]))
    assert set(stored["raw_index"].to_pylist()) == {17}
    assert "raw test file row 17, split row 5" in (out / "report.md").read_text()
    # --index-by row: the same puzzle as split row 5.
    out_row = tmp_path / "by_row"
    result = invoke("--checkpoint", ckpt, "--dataset", ds, "-o", out_row, "--puzzle-index", "5", "--index-by", "row", *fast)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out_row / "figures").glob("*_*.png")) == ["landscape_row5.png", "trajectory_row5.png"]
    assert (out_row / "landscape.parquet").read_bytes() == (out / "landscape.parquet").read_bytes()
    # A raw row the split does not hold is refused, naming rows it holds; no traceback.
    result = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(ckpt), "--dataset", str(ds), "-o",
                                      str(tmp_path / "x"), "--puzzle-index", "16", *fast])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--puzzle-index [16]" in result.output and "17" in result.output and "--index-by row" in result.output
    result = CliRunner().invoke(cli, ["analyze", "--checkpoint", str(ckpt), "--dataset", str(ds), "-o",
                                      str(tmp_path / "x"), "--puzzle-index", "10", "--index-by", "row", *fast])
    assert result.exit_code == 1 and "outside the test split's rows 0..9" in result.output


def test_stage_missing_inputs_fail_first_naming_the_path(stage_inputs, puzzles, tmp_path, monkeypatch):
    import hrm.model

    ckpt, ds = stage_inputs
    x, y = puzzles
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous output")

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(hrm.model, "load_checkpoint", no_load)
    no_shard = write_dataset(tmp_path / "no_shard", x[:3], y[:3])
    (no_shard / "test" / "shard_00000.arrow").unlink()
    cases = [
        (["--checkpoint", tmp_path / "nope" / "step_1", "--dataset", ds], tmp_path / "nope" / "step_1", "not found"),
        (["--checkpoint", tmp_path / "nope", "--dataset", tmp_path / "no_ds"], tmp_path / "nope", "not found"),
        (["--checkpoint", ckpt, "--dataset", tmp_path / "no_ds"], tmp_path / "no_ds", "dataset not found"),
        (["--checkpoint", ckpt, "--dataset", ds, "--split", "train"], ds / "manifest.json", "no split 'train'"),
        (["--checkpoint", ckpt, "--dataset", no_shard], no_shard / "test" / "shard_00000.arrow", "not found"),
    ]
    for args, path, what in cases:
        r = CliRunner().invoke(cli, ["analyze", *map(str, args), "-o", str(out), "--no-progress"])
        assert r.exit_code == 1 and r.exception is not None and isinstance(r.exception, SystemExit), (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and what in lines[0], (args, r.output)
        assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the previous output untouched
