"""Fixed-point diagnostics and multiple fixed points (the paper's findings (a) and (c)).

Exact definitions (S segments, residuals as in :mod:`hrm.analysis.traces`)
-------------------------------------------------------------------------
- Residual of segment s: r(s) = ||z(s) - z(s-1)|| / ||z(s-1)||, for z_H, z_L and the joint state
  z = (z_H, z_L); z(0) is the initial state.
- Tail: the last W segments, W = ``tail`` or, when 0, max(1, ceil(S / 4)).
- A trajectory *converges* when the joint residual is <= ``tol`` at every tail segment.
  Otherwise it *oscillates* when the final state is much nearer to an older carry than to the
  previous one: min_{k=2..K} ||z(S) - z(S-k)|| < ``return_ratio`` x ||z(S) - z(S-1)|| (K = the
  runner's lookback, older carries only, never the initial state). Otherwise it *drifts*.
- Answer changes: the number of tail segments s >= 2 whose answer (argmax after segment s)
  differs from the answer after segment s - 1 in at least one cell.
- A *fixed-point violation*: the trajectory does not converge AND the answer changed in the tail.

Multiple fixed points
---------------------
Each puzzle is run R times: pass 0 plain; passes 1..P-1 the fork's cyclic digit relabellings
(the fork = the Augmented HRM paper's code, README "Reference code"; token t -> ((t - 2 + p) mod 9) + 2 for digits, blanks kept; the answer mapped back before
comparing); then N_noise runs from a perturbed initial state (H_init + eps_H, L_init + eps_L) per
noise kind, one draw per run shared by all puzzles:

- ``fork`` (the default; the fork's ``reset_carry(use_default=False)``, docs/reference-semantics.md
  §10): eps is ONE vector of hidden size, truncated normal (at 2 standard deviations, scale
  corrected, ``hrm.model.layers.trunc_normal_init_``) with std ``noise_std`` (the fork: 2), the same
  at every position;
- ``iid`` (this project's earlier probe): eps ~ N(0, noise_std^2) per position and hidden unit
  (std 0.5 by default).

Each kind draws from its own ``torch.Generator``: ``iid`` seeded by
``numpy.random.default_rng([NOISE_STREAM, seed])`` (as before), ``fork`` by
``default_rng([NOISE_STREAM, seed, 1])``.
Per puzzle: distinct final answers (exact token equality, after mapping back) over all runs and
over the converged runs; distinct final states over the runs that share the plain input (pass 0
and the noise runs): states are linked when ||a - b|| <= ``cluster_tol`` x (||a|| + ||b||) / 2 and
clusters are the connected components. A run is *trapped* when it converged to a wrong answer
(a stable wrong fixed point: "guessing").

Mazes (``rules`` = hrm.tasks.MAZE.rules): the relabelled pass is the fork's S/G exchange (at most
one: ``shifts`` <= 2), and the error measure of an answer is its broken path cells in place of
Sudoku conflicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hrm.model.hrm import InnerCarry
from hrm.model.layers import trunc_normal_init_
from hrm.analysis.traces import NonFiniteError, initial_state, run_trace, score_predictions
from hrm.distributed import Dist, ResultStore, shared_map
from hrm.tasks import make_perturbations
from hrm.rng import NOISE as NOISE_STREAM  # the seed's stream id: hrm/rng.py

if TYPE_CHECKING:
    from hrm.tasks.base import EvalRules

__all__ = [
    "CONVERGED", "OSCILLATING", "DRIFTING", "CLASS_NAMES", "NOISE_STREAM",
    "tail_window", "classify", "answer_changes", "violations", "fixed_point_summary",
    "residual_curves", "equivalence_classes", "answer_classes", "state_clusters",
    "MultiStability", "NOISE_KINDS", "NOISE_STD", "noise_draws", "PerturbedRuns", "run_perturbed", "multistability_summary",
]

CONVERGED, OSCILLATING, DRIFTING = 0, 1, 2
CLASS_NAMES = ("converged", "oscillating", "drifting")


# ----------------------------------------------------------------------------- one trajectory


def tail_window(segments: int, tail: int = 0) -> int:
    return int(tail) if tail > 0 else max(1, math.ceil(segments / 4))


def classify(seg_res: np.ndarray, seg_return: np.ndarray, tol: float = 0.01, tail: int = 0,
             return_ratio: float = 0.5) -> np.ndarray:
    """int8 [B]: CONVERGED / OSCILLATING / DRIFTING from joint segment residuals [S, B] and the
    return ratios [B] (:attr:`Trace.seg_return`)."""
    seg_res = np.asarray(seg_res)
    w = tail_window(seg_res.shape[0], tail)
    conv = (seg_res[-w:] <= tol).all(0)
    ret = np.asarray(seg_return, dtype=np.float64)
    osc = ~conv & (np.nan_to_num(ret, nan=np.inf) < return_ratio)
    return np.where(conv, CONVERGED, np.where(osc, OSCILLATING, DRIFTING)).astype(np.int8)


def answer_changes(seg_pred: np.ndarray, tail: int = 0) -> np.ndarray:
    """int16 [B]: tail segments s >= 2 whose answer differs from segment s - 1's."""
    seg_pred = np.asarray(seg_pred)
    s = seg_pred.shape[0]
    w = min(tail_window(s, tail), s - 1)
    if w <= 0:
        return np.zeros(seg_pred.shape[1], np.int16)
    changed = (seg_pred[-w:] != seg_pred[-w - 1:-1]).any(-1)
    return changed.sum(0).astype(np.int16)


def violations(classes: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """bool [B]: no convergence while the answer keeps changing."""
    return (np.asarray(classes) != CONVERGED) & (np.asarray(changes) > 0)


def _rate(mask: np.ndarray, within: np.ndarray | None = None) -> float | None:
    mask = np.asarray(mask, bool)
    if within is not None:
        mask = mask[np.asarray(within, bool)]
    return float(mask.mean()) if mask.size else None


def fixed_point_summary(classes: np.ndarray, violation: np.ndarray, correct: np.ndarray,
                        seg_res_H: np.ndarray, seg_res_L: np.ndarray) -> dict[str, Any]:
    """Convergence classes and violations related to final exactness, over B puzzles."""
    classes, violation, correct = np.asarray(classes), np.asarray(violation, bool), np.asarray(correct, bool)
    out: dict[str, Any] = {"n": int(classes.size)}
    for code, name in enumerate(CLASS_NAMES):
        m = classes == code
        out[name] = _rate(m)
        out[f"accuracy_if_{name}"] = _rate(correct, m)
    out["violation_rate"] = _rate(violation)
    out["accuracy_if_violation"] = _rate(correct, violation)
    out["accuracy_if_no_violation"] = _rate(correct, ~violation)
    out["violation_rate_if_wrong"] = _rate(violation, ~correct)
    out["violation_rate_if_correct"] = _rate(violation, correct)
    if classes.size:
        out["final_res_H_median"] = float(np.median(seg_res_H[-1]))
        out["final_res_L_median"] = float(np.median(seg_res_L[-1]))
    return out


def residual_curves(seg_res_H: np.ndarray, seg_res_L: np.ndarray, correct: np.ndarray) -> list[dict[str, Any]]:
    """Rows (segment, group in all / correct / wrong, n, median and quartiles of the z_H and z_L residuals)."""
    seg_res_H, seg_res_L, correct = np.asarray(seg_res_H), np.asarray(seg_res_L), np.asarray(correct, bool)
    rows = []
    for group, mask in (("all", np.ones_like(correct)), ("correct", correct), ("wrong", ~correct)):
        if not mask.any():
            continue
        for s in range(seg_res_H.shape[0]):
            row: dict[str, Any] = {"segment": s + 1, "group": group, "n": int(mask.sum())}
            for name, arr in (("res_H", seg_res_H), ("res_L", seg_res_L)):
                q25, q50, q75 = np.quantile(arr[s, mask].astype(np.float64), [0.25, 0.5, 0.75])
                row.update({f"{name}_median": float(q50), f"{name}_q25": float(q25), f"{name}_q75": float(q75)})
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- clustering


def equivalence_classes(linked: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of symmetric boolean graphs [N, R, R].

    Returns (count [N], label [N, R]: the smallest member index of each node's component). All N
    graphs are one block-diagonal sparse graph of N x R nodes for scipy's connected_components.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a = (linked.cpu().numpy() if isinstance(linked, torch.Tensor) else np.asarray(linked)).astype(bool)
    n, r = a.shape[:2]
    if n * r == 0:
        return np.zeros(n, np.int16), np.zeros((n, r), np.int16)
    g, i, j = np.nonzero(a)
    graph = coo_matrix((np.ones(g.size, np.int8), (g * r + i, g * r + j)), shape=(n * r, n * r))
    k, comp = connected_components(graph, directed=False)  # undirected: a | a.T, every node in a component
    first = np.full(k, n * r, np.int64)
    np.minimum.at(first, comp, np.arange(n * r))  # each component's smallest node
    label = (first[comp] % r).reshape(n, r)
    count = np.bincount(first // r, minlength=n)  # components per graph
    return count.astype(np.int16), label.astype(np.int16)


def answer_classes(answers: np.ndarray, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct answers per puzzle: answers [R, N, 81] -> (count [N], label [R, N]).

    ``among`` bool [R, N]: count only those runs (others get label -1).
    """
    ans = torch.as_tensor(np.ascontiguousarray(np.asarray(answers).transpose(1, 0, 2)))  # [N, R, 81]
    same = (ans.unsqueeze(2) == ans.unsqueeze(1)).all(-1)
    if among is not None:
        m = torch.as_tensor(np.asarray(among, bool).T)  # [N, R]
        same = same & m.unsqueeze(2) & m.unsqueeze(1)
        count, label = equivalence_classes(same)
        label = np.where(m.numpy(), label, -1)
        count = ((label == np.arange(label.shape[1])[None, :]) & m.numpy()).sum(1).astype(np.int16)
        return count, label.T
    count, label = equivalence_classes(same)
    return count, label.T


def state_clusters(states: torch.Tensor, tol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of final states per puzzle: states [R, N, ...] -> (count [N], label [R, N]).

    Two states are linked when ||a - b|| <= tol * (||a|| + ||b||) / 2 (float32, flattened).
    """
    x = states.reshape(states.shape[0], states.shape[1], -1).to(torch.float32).transpose(0, 1)  # [N, R, D]
    dist = torch.cdist(x, x)
    norms = torch.linalg.vector_norm(x, dim=2)
    linked = dist <= tol * (norms.unsqueeze(2) + norms.unsqueeze(1)) / 2
    count, label = equivalence_classes(linked)
    return count, label.T


# ----------------------------------------------------------------------------- perturbed runs


@dataclass
class MultiStability:
    """R runs of N puzzles (see the module docstring); arrays are [R, N] unless noted."""

    kind: np.ndarray  # str [R]: "plain", "shift" (mazes: "swap"), "noise_fork", "noise_iid"
    param: np.ndarray  # int [R]: the shift p, or the noise run number (1-based)
    answers: np.ndarray  # uint8 [R, N, L], mapped back to the original digits (S and G)
    exact: np.ndarray  # bool
    classes: np.ndarray  # int8 (CONVERGED / OSCILLATING / DRIFTING)
    conflicts: np.ndarray  # int: the task's error measure of each answer (EvalRules.errors: Sudoku conflicts)
    final_res: np.ndarray  # float32: joint residual of the last segment
    answer_id: np.ndarray  # int16: answer class (smallest run index with that answer)
    state_id: np.ndarray  # int16 [R, N]: state cluster among same-input runs (-1 for shifted runs)
    n_answers: np.ndarray = field(default=None)  # type: ignore[assignment]  # int [N]
    n_stable_answers: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_state_clusters: np.ndarray = field(default=None)  # type: ignore[assignment]
    error_name: str = "conflicts"  # what ``conflicts`` counts (EvalRules.error_name)

    @property
    def converged(self) -> np.ndarray:
        return self.classes == CONVERGED

    @property
    def trapped(self) -> np.ndarray:
        return self.converged & ~self.exact


NOISE_KINDS = ("fork", "iid")
NOISE_STD = {"fork": 2.0, "iid": 0.5}  # each kind's std when none is given (the fork's 2; the earlier probe's 0.5)


def noise_draws(model, runs: int, kind: str, noise_std: float | None = None, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``runs`` pairs (eps_H, eps_L) of the noise ``kind`` (the module docstring): [hidden] for fork
    (broadcast over positions), [positions, hidden] for iid."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind {kind!r}: one of {', '.join(NOISE_KINDS)}")
    std = NOISE_STD[kind] if noise_std is None else float(noise_std)
    if not std * 4 < float(np.finfo(np.float32).max):  # the noise is float32, truncated at 2 std (x 2: a margin)
        raise NonFiniteError("the initial-state noise", "--noise-std")
    inner = getattr(model, "inner", model)
    hidden = inner.config.hidden_size
    key = [NOISE_STREAM, seed] if kind == "iid" else [NOISE_STREAM, seed, 1]
    g = torch.Generator().manual_seed(int(np.random.default_rng(key).integers(2 ** 62)))
    if kind == "fork":
        return [(trunc_normal_init_(torch.empty(hidden), std=std, generator=g),
                 trunc_normal_init_(torch.empty(hidden), std=std, generator=g)) for _ in range(runs)]
    shape = (inner.puzzle_emb_len + inner.config.seq_len, hidden)
    return [(torch.randn(shape, generator=g) * std, torch.randn(shape, generator=g) * std) for _ in range(runs)]


@dataclass(frozen=True)
class PerturbedRuns:
    """What :func:`run_perturbed` runs (the module docstring)."""

    shifts: int = 9  # relabelled runs, the plain run included
    noise_runs: int = 8  # runs of each noise kind
    noise_std: float | None = None  # None: each kind's own std (NOISE_STD)
    noise: tuple[str, ...] = ("fork",)  # noise kinds (NOISE_KINDS)
    seed: int = 0  # of the noise
    segments: int | None = None  # ACT segments per run (None: halt_max_steps)
    tol: float = 0.01  # convergence: joint segment residual <= tol on the tail
    tail: int = 0  # tail segments (0: max(1, ceil(segments / 4)))
    cluster_tol: float = 0.05  # of the state clusters (state_clusters)
    batch_size: int = 64  # puzzles per chunk


@torch.no_grad()
def run_perturbed(model, inputs: np.ndarray, labels: np.ndarray, runs: PerturbedRuns = PerturbedRuns(), *,
                  progress=None, d: Dist | None = None, store: ResultStore | None = None,
                  identifiers: np.ndarray | None = None, rules: EvalRules) -> MultiStability:
    """The ``runs`` of the module docstring for puzzles ``inputs`` / ``labels`` (tokens [N, 81]), streamed
    in chunks of ``runs.batch_size`` puzzles (each chunk runs R x chunk rows in one batch):
    ``runs.noise_runs`` runs of each kind in ``runs.noise`` (``noise_std`` None: each kind's own std,
    NOISE_STD). ``d``: ranks share the chunks (hrm.distributed.shared_map; every rank gets the same
    result), kept in ``store`` when given. ``identifiers``: int [N], each puzzle's row of the puzzle
    embedding (None: 0), the same in all its runs."""
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    n = inputs.shape[0]
    ids = np.zeros(n, np.int32) if identifiers is None else np.asarray(identifiers)
    shifts = max(1, int(runs.shifts))
    noise_runs, noise_std, noise, seed = runs.noise_runs, runs.noise_std, runs.noise, runs.seed
    segments, tol, tail, cluster_tol, batch_size = runs.segments, runs.tol, runs.tail, runs.cluster_tol, runs.batch_size
    # The evaluation's relabellings, the task's first kind: Sudoku's cyclic digit shifts (at most 9),
    # the mazes' S/G exchange (at most 2), ARC's seeded colour permutations; make_perturbations refuses
    # more than a task has, naming the limit.
    shift = make_perturbations(rules.perturbations[0], shifts, seed)
    luts, inv = shift.token_maps, shift.inverse_token_maps
    noise_kinds = tuple(dict.fromkeys(noise))
    draws = [e for k in noise_kinds for e in noise_draws(model, noise_runs, k, noise_std, seed)]
    n_noise = len(draws)
    r = shifts + n_noise
    kind = np.array(["plain"] + [shift.kind] * (shifts - 1) + [f"noise_{k}" for k in noise_kinds for _ in range(noise_runs)])
    param = np.concatenate([np.arange(shifts)] + [np.arange(1, noise_runs + 1)] * len(noise_kinds)).astype(np.int64)
    parts: dict[str, list] = {k: [] for k in ("answers", "classes", "final_res", "states")}

    def chunk(lo: int) -> dict[str, Any]:
        x = inputs[lo:lo + batch_size].astype(np.int64)
        b = x.shape[0]
        shifted = np.stack([luts[p][x] for p in range(shifts)])  # [P, b, 81]
        run_inputs = np.concatenate([shifted.reshape(-1, x.shape[1])] + [x] * n_noise)
        plain = initial_state(model, b * shifts)
        noisy = [initial_state(model, b, noise=e) for e in draws]
        z_h = torch.cat([plain.z_H] + [c.z_H for c in noisy])
        z_l = torch.cat([plain.z_L] + [c.z_L for c in noisy])
        try:
            tr = run_trace(model, run_inputs, puzzle_identifiers=np.tile(ids[lo:lo + b], r), segments=segments,
                           init=InnerCarry(z_h, z_l), steps=False, keep_final=True)
        except NonFiniteError as e:  # the noise put the initial states past float32
            raise NonFiniteError(f"the noisy runs' {e.what}", "--noise-std" if n_noise else None) from None
        ans = tr.final_predictions.reshape(r, b, -1)
        for p in range(shifts):  # map shifted answers back to the original digits
            ans[p] = inv[p][ans[p]]
        same_input = [0] + list(range(shifts, r))
        fz = torch.cat([tr.final_z_H.flatten(1), tr.final_z_L.flatten(1)], dim=1).reshape(r, b, -1)
        if n_noise and (np.isnan(tr.seg_res).any() or not bool(torch.isfinite(fz[shifts:]).all())):  # inf: x / 0
            raise NonFiniteError("the noisy runs' states", "--noise-std")
        return {"answers": ans, "classes": classify(tr.seg_res, tr.seg_return, tol, tail).reshape(r, b),
                "final_res": tr.seg_res[-1].reshape(r, b), "states": state_clusters(fz[same_input], cluster_tol)}

    for part in shared_map(chunk, range(0, n, batch_size), d, store, "multistability"):
        for key, value in part.items():
            parts[key].append(value)
        if progress is not None:
            progress(part["classes"].shape[1])
    answers = np.concatenate(parts["answers"], axis=1) if parts["answers"] else np.zeros((r, 0, inputs.shape[1]), np.uint8)
    classes = np.concatenate(parts["classes"], axis=1) if parts["classes"] else np.zeros((r, 0), np.int8)
    final_res = np.concatenate(parts["final_res"], axis=1) if parts["final_res"] else np.zeros((r, 0), np.float32)
    exact = score_predictions(answers, labels, rules.blank_cells(inputs, labels))["exact"]
    n_answers, answer_id = answer_classes(answers)
    n_stable, _ = answer_classes(answers, among=classes == CONVERGED)
    state_id = np.full((r, n), -1, np.int16)
    n_states = np.zeros(n, np.int16)
    if parts["states"]:
        counts = np.concatenate([c for c, _ in parts["states"]])
        labels_same = np.concatenate([lab for _, lab in parts["states"]], axis=1)  # [1 + noise, N], index into same_input
        same_input = np.array([0] + list(range(shifts, r)))
        state_id[same_input] = same_input[labels_same]
        n_states = counts
    return MultiStability(kind=kind, param=param, answers=answers, exact=exact, classes=classes,
                          conflicts=rules.errors(inputs[None], answers), final_res=final_res, answer_id=answer_id,
                          state_id=state_id, n_answers=n_answers, n_stable_answers=n_stable,
                          n_state_clusters=n_states, error_name=rules.error_name)


def multistability_summary(m: MultiStability) -> dict[str, Any]:
    """How many distinct end states occur and how often a wrong one is stable."""
    r, n = m.exact.shape
    if n == 0:
        return {"puzzles": 0, "runs_per_puzzle": r}
    trapped = m.trapped
    conv = m.converged
    stable_right = (conv & m.exact).any(0)
    stable_wrong = trapped.any(0)
    return {
        "puzzles": int(n),
        "runs_per_puzzle": int(r),
        "mean_distinct_answers": float(m.n_answers.mean()),
        "puzzles_with_several_answers": float((m.n_answers > 1).mean()),
        "mean_distinct_stable_answers": float(m.n_stable_answers.mean()),
        "puzzles_with_several_stable_answers": float((m.n_stable_answers > 1).mean()),
        "mean_state_clusters": float(m.n_state_clusters.mean()),
        "puzzles_with_several_states": float((m.n_state_clusters > 1).mean()),
        "run_accuracy": float(m.exact.mean()),
        "converged_runs": float(conv.mean()),
        "trapped_runs": float(trapped.mean()),
        "trapped_runs_if_converged": float(trapped.sum() / max(conv.sum(), 1)),
        "puzzles_with_trapped_run": float(stable_wrong.mean()),
        "puzzles_stable_right_and_wrong": float((stable_right & stable_wrong).mean()),
        "plain_accuracy": float(m.exact[0].mean()),
        "any_run_correct": float(m.exact.any(0).mean()),
        f"mean_{m.error_name}_trapped": float(m.conflicts[trapped].mean()) if trapped.any() else None,
        "by_perturbation": by_perturbation(m),
    }


def by_perturbation(m: MultiStability) -> dict[str, dict[str, float]]:
    """The headline rates over the plain run plus the runs of one perturbation each (the shifts; each
    noise kind), so that a reader sees how much a conclusion depends on the perturbation."""
    out = {}
    for name in dict.fromkeys(k for k in m.kind.tolist() if k != "plain"):
        runs = (m.kind == "plain") | (m.kind == name)
        answers, conv, exact = m.answers[runs], m.converged[runs], m.exact[runs]
        n_answers, _ = answer_classes(answers)
        n_stable, _ = answer_classes(answers, among=conv)
        out[name] = {"runs_per_puzzle": int(runs.sum()),
                     "puzzles_with_several_answers": float((n_answers > 1).mean()),
                     "puzzles_with_several_stable_answers": float((n_stable > 1).mean()),
                     "puzzles_with_trapped_run": float((conv & ~exact).any(0).mean())}
    return out
