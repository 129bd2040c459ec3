"""Running an HRM segment by segment and recording what happens (docs/reference-semantics.md §10).

Everything here works on a batch of puzzles at once, on the model's device, and starts from any
state: the default initial state (H_init, L_init broadcast over positions, as ``HRM.predict``), a
perturbed one (:func:`initial_state` with noise), or any carry the caller has.

Vocabulary (B puzzles, S segments, C = H_cycles, T = S * C steps):

- a *step* is one H update; step t = (s - 1) * C + c for segment s = 1..S and cycle c = 1..C.
  The state after step t is (z_H, z_L) as the model's trace records it: z_H right after that
  H update and the z_L it read. The state after the last step of segment s is segment s's carry.
- the *prediction* after a step is argmax(lm_head(z_H)) over the ``seq_len`` output positions
  (the puzzle-embedding prefix dropped): for the last step of a segment, exactly the
  segment's answer; for the other steps the answer the model would give if it stopped there.
- the *residual* of a state z_t is ||z_t - z_{t-1}|| / ||z_{t-1}||, norms of the whole flattened
  state (all positions, prefix included) in float32; z_0 is the initial state. Segment residuals
  compare segment carries (z after segment s vs after s - 1).
- *trajectory PCA* of a puzzle: PCA (2 components, data centred, no scaling) of its T flattened
  z_H states after every step, as the fork's ``plot_trajectory`` (the fork = the Augmented HRM
  paper's code, README "Reference code"); computed for every puzzle of a batch at once through
  the T x T Gram matrix. Sign convention: in each component the score
  with the largest magnitude is positive.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from hrm.encoding import IGNORE_LABEL
from hrm.model.base import InnerCarry, initial_inner_carry, module_device, run_segments
from hrm.model.hrm import HRM
from hrm.model.registry import architecture_of

__all__ = [
    "Trace", "initial_state", "decode", "run_segment", "run_trace", "relative_residual",
    "score_predictions", "trajectory_pca", "pca_basis",
]


@dataclass
class Trace:
    """What :func:`run_trace` records for B puzzles over S segments (numpy on the CPU unless noted)."""

    segments: int
    h_cycles: int
    # per segment
    seg_predictions: np.ndarray  # uint8 [S, B, seq_len]: answer tokens after segment s
    q_halt: np.ndarray  # float32 [S, B]
    q_continue: np.ndarray  # float32 [S, B]
    seg_res_H: np.ndarray  # float32 [S, B]: ||zH(s) - zH(s-1)|| / ||zH(s-1)||, zH(0) = initial state
    seg_res_L: np.ndarray  # float32 [S, B]
    seg_res: np.ndarray  # float32 [S, B]: the same for the joint state (z_H, z_L)
    seg_return: np.ndarray  # float32 [B]: min over lags k = 2..K of ||z(S) - z(S-k)|| / ||z(S) - z(S-1)|| (joint; NaN if none)
    # per step (None unless steps=True)
    predictions: np.ndarray | None = None  # uint8 [T, B, seq_len]
    res_H: np.ndarray | None = None  # float32 [T, B]
    res_L: np.ndarray | None = None
    norm_H: np.ndarray | None = None  # float32 [T, B]: ||z_H|| after the step
    norm_L: np.ndarray | None = None
    pcs: np.ndarray | None = None  # float32 [T, B, 2]: trajectory PCA scores of z_H
    pca_ratio: np.ndarray | None = None  # float32 [B, 2]: explained variance ratios
    # states (torch float32 on the CPU; only when asked)
    z_H: torch.Tensor | None = None  # [T, b, prefix + seq_len, hidden] for the kept rows
    z_L: torch.Tensor | None = None
    kept_rows: np.ndarray | None = None  # int64 [b]: which of the B rows z_H / z_L hold
    final_z_H: torch.Tensor | None = None  # [B, prefix + seq_len, hidden] carry after segment S
    final_z_L: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        return self.segments * self.h_cycles

    @property
    def final_predictions(self) -> np.ndarray:
        return self.seg_predictions[-1]


# ----------------------------------------------------------------------------- the model, piece by piece


def _inner(model):
    """The segment module (hrm.model.base.Recurrence) of a model, of its ACT wrapper, or the module itself."""
    return getattr(model, "inner", model)


@contextlib.contextmanager
def _evaluating(inner):
    """Eval mode for the block (the puzzle embedding behaves differently in training), restored after."""
    was_training = inner.training
    inner.eval()
    try:
        yield
    finally:
        inner.train(was_training)


def initial_state(model: HRM, batch_size: int, noise_std: float = 0.0, generator: torch.Generator | None = None,
                  noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> InnerCarry:
    """The initial carry for ``batch_size`` puzzles: H_init / L_init broadcast over all positions.

    ``noise_std`` > 0 adds N(0, noise_std^2) noise per element ([B, positions, hidden], drawn on
    the CPU from ``generator``); ``noise`` = (eps_H, eps_L) adds given tensors instead (broadcast).
    """
    carry = initial_inner_carry(_inner(model), batch_size)
    if noise is not None:
        eps_h, eps_l = (e.to(device=carry.z_H.device, dtype=torch.float32) for e in noise)
        return InnerCarry(z_H=(carry.z_H.float() + eps_h).to(carry.z_H.dtype),
                          z_L=(carry.z_L.float() + eps_l).to(carry.z_L.dtype))
    if noise_std > 0:
        shape = tuple(carry.z_H.shape)
        eps_h = torch.randn(shape, generator=generator, dtype=torch.float32) * noise_std
        eps_l = torch.randn(shape, generator=generator, dtype=torch.float32) * noise_std
        return initial_state(model, batch_size, noise=(eps_h, eps_l))
    return carry


class NonFiniteError(ValueError):
    """A state or its logits came out NaN or inf (the weights are checked finite when loaded): a setting
    scaled the states past what float32 holds, and every figure computed from them would be meaningless
    (an argmax of NaN logits is digit 0: "0 conflicts"). ``option``: the setting, where known."""

    def __init__(self, what: str, option: str | None = None) -> None:
        self.what, self.option = what, option
        super().__init__(f"{what} came out NaN or inf" + (f" ({option} scales the states past float32)" if option else ""))


def require_finite(t: torch.Tensor, what: str, option: str | None = None) -> None:
    """Raise :class:`NonFiniteError` if ``t`` holds a NaN or inf."""
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteError(what, option)


@torch.no_grad()
def decode(model: HRM, z_H: torch.Tensor) -> torch.Tensor:
    """argmax(lm_head(z_H)) over the output positions: [..., prefix + seq_len, hidden] -> int64 [..., seq_len];
    NaN or inf logits raise :class:`NonFiniteError`."""
    inner = _inner(model)
    z = z_H.to(device=module_device(inner), dtype=inner.forward_dtype)
    logits = inner.lm_head(z)[..., inner.puzzle_emb_len:, :]
    require_finite(logits, "the logits")
    return logits.argmax(-1)


def _batch(model: HRM, inputs, puzzle_identifiers=None) -> dict[str, torch.Tensor]:
    inner = _inner(model)
    cfg = inner.config
    device = module_device(inner)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    if x.ndim != 2 or x.shape[1] != cfg.seq_len or x.is_floating_point():
        raise ValueError(f"inputs must be integer tokens [B, {cfg.seq_len}], got {x.dtype} {list(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab_size):
        raise ValueError(f"inputs hold tokens outside 0..{cfg.vocab_size - 1}")
    x = x.to(device=device, dtype=torch.int32)
    if puzzle_identifiers is None:
        ids = torch.zeros(x.shape[0], dtype=torch.int32, device=device)
    else:
        ids = torch.as_tensor(np.asarray(puzzle_identifiers)).to(device=device, dtype=torch.int32).reshape(-1)
    return {"inputs": x, "puzzle_identifiers": ids}


@torch.no_grad()
def run_segment(model: HRM, z_H: torch.Tensor, z_L: torch.Tensor, inputs, puzzle_identifiers=None,
                trace: list | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ACT segment from an arbitrary state: (z_H, z_L) [B, prefix + seq_len, hidden] ->
    (z_H', z_L', logits [B, seq_len, vocab], q_halt [B], q_continue [B]).

    States are cast to the model's forward dtype and device (as the fork's landscape does).
    """
    inner = _inner(model)
    dev, dt = module_device(inner), inner.forward_dtype
    carry = InnerCarry(z_H=z_H.to(device=dev, dtype=dt), z_L=z_L.to(device=dev, dtype=dt))
    with _evaluating(inner):
        new, logits, (qh, qc) = inner(carry, _batch(model, inputs, puzzle_identifiers), trace=trace)
    return new.z_H, new.z_L, logits, qh, qc


# ----------------------------------------------------------------------------- small pure helpers


def relative_residual(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """||new - old|| / ||old|| per row (all but the first dim flattened), float32; 0 when new == old."""
    a = new.reshape(new.shape[0], -1).to(torch.float32)
    b = old.reshape(old.shape[0], -1).to(torch.float32)
    diff = torch.linalg.vector_norm(a - b, dim=1)
    base = torch.linalg.vector_norm(b, dim=1)
    return _ratio(diff, base)


def _ratio(diff: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """diff / base with 0 / x = 0 and x / 0 = inf (a residual from the zero state)."""
    safe = torch.where(base > 0, base, torch.ones_like(base))
    return torch.where(diff == 0, torch.zeros_like(diff), torch.where(base > 0, diff / safe, torch.full_like(diff, float("inf"))))


def score_predictions(pred: np.ndarray, labels: np.ndarray, blank_cells: np.ndarray) -> dict[str, np.ndarray]:
    """pred [..., B, L] tokens against labels [B, L] (IGNORE_LABEL cells skipped).

    Returns ``exact`` (bool: every labelled cell right, the official exact accuracy), ``cell_acc``
    (fraction of labelled cells right) and ``blank_acc`` (fraction of the ``blank_cells`` [B, L] right,
    the cells the model decides, EvalRules.blank_cells: a Sudoku's blanks, a maze's open cells, an ARC
    output grid's cells; NaN for a puzzle without any), all shaped [..., B].
    """
    pred = np.asarray(pred).astype(np.int16)
    lab = np.asarray(labels).astype(np.int16)
    labelled = lab != IGNORE_LABEL
    right = (pred == lab) & labelled
    blank = np.asarray(blank_cells) & labelled
    n_lab = labelled.sum(-1)
    n_blank = blank.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_acc = right.sum(-1) / np.maximum(n_lab, 1)
        blank_acc = np.where(n_blank > 0, (right & blank).sum(-1) / np.maximum(n_blank, 1), np.nan)
    exact = (right | ~labelled).all(-1)
    return {"exact": exact, "cell_acc": cell_acc.astype(np.float32), "blank_acc": blank_acc.astype(np.float32)}


# ----------------------------------------------------------------------------- PCA


def _flip_signs(u: torch.Tensor) -> torch.Tensor:
    """Sign per column (last dim) so that the entry of largest magnitude along dim -2 is positive."""
    idx = u.abs().argmax(dim=-2, keepdim=True)
    sign = torch.sign(torch.gather(u, -2, idx))
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def trajectory_pca(states: torch.Tensor, components: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched PCA of trajectories: states [B, T, D] -> (scores [B, T, k], explained ratio [B, k]).

    Each row's T states are centred on their mean; scores = projections on its top-k principal
    directions (computed from the T x T Gram matrix, so D may be large). Directions with zero
    variance give zero scores.
    """
    x = states.to(torch.float32)
    xc = x - x.mean(dim=1, keepdim=True)
    gram = torch.bmm(xc, xc.transpose(1, 2)).to(torch.float64)
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    k = min(components, x.shape[1])
    lam = evals.flip(-1)[:, :k].clamp_min(0)
    u = evecs.flip(-1)[:, :, :k]
    u = u * _flip_signs(u)
    scores = u * lam.sqrt().unsqueeze(1)
    total = evals.clamp_min(0).sum(-1, keepdim=True)
    ratio = torch.where(total > 0, lam / total.clamp_min(1e-300), torch.zeros_like(lam))
    if k < components:
        pad = components - k
        scores = torch.nn.functional.pad(scores, (0, pad))
        ratio = torch.nn.functional.pad(ratio, (0, pad))
    return scores.to(torch.float32), ratio.to(torch.float32)


def pca_basis(states: torch.Tensor, components: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """PCA of one trajectory, states [T, D] (float32): ``mean`` [D], ``components`` [k, D] (orthonormal),
    ``scores`` [T, k], ``ratio`` [k]. Same sign convention as :func:`trajectory_pca`.

    A trajectory with fewer than k directions of variance gets its basis completed by seeded random
    directions (orthonormalised), so a landscape plane always exists.
    """
    x = states.reshape(states.shape[0], -1).to(torch.float32)
    mean = x.mean(0)
    xc = x - mean
    scores, ratio = trajectory_pca(x.unsqueeze(0), components)
    scores, ratio = scores[0], ratio[0]
    norms = torch.linalg.vector_norm(scores, dim=0)  # = sqrt(eigenvalue)
    comps = []
    for k in range(components):
        if norms[k] > 1e-6 * max(float(norms[0]), 1e-30):
            v = (xc.T.to(torch.float64) @ scores[:, k].to(torch.float64)) / float(norms[k]) ** 2
            comps.append(v.to(torch.float32))
        else:
            comps.append(None)
    g = torch.Generator().manual_seed(seed)
    basis: list[torch.Tensor] = []
    for v in comps:
        if v is None:
            v = torch.randn(x.shape[1], generator=g, dtype=torch.float32)
        for b in basis:  # Gram-Schmidt (PCA directions are already orthogonal; this fixes fallbacks)
            v = v - (v @ b) * b
        basis.append(v / torch.linalg.vector_norm(v).clamp_min(1e-30))
    return {"mean": mean, "components": torch.stack(basis), "scores": scores, "ratio": ratio}


# ----------------------------------------------------------------------------- the runner


def _norm(z: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(z.reshape(z.shape[0], -1).to(torch.float32), dim=1)


def _diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm((a.to(torch.float32) - b.to(torch.float32)).reshape(a.shape[0], -1), dim=1)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _kept_rows(keep_states: bool | np.ndarray, b: int) -> np.ndarray:
    """The rows whose states run_trace returns: ``keep_states`` True (all), False (none), or a bool mask or
    index array."""
    if isinstance(keep_states, (bool, np.bool_)):
        return np.arange(b) if keep_states else np.zeros(0, np.int64)
    ks = np.asarray(keep_states)
    return np.flatnonzero(ks) if ks.dtype == bool else ks.astype(np.int64)


def _return_distance(history: deque, s_count: int, b: int) -> torch.Tensor:
    """Return distance at the last segment: is z(S) nearer to an older carry than to the previous one?
    ``history``: the last carries (z_H, z_L), oldest first; NaN per row without lags to compare."""
    last_h, last_l = history[-1]
    ret = torch.full((b,), float("nan"), device=last_h.device)
    if len(history) >= 3:
        d1 = torch.sqrt(_diff(last_h, history[-2][0]) ** 2 + _diff(last_l, history[-2][1]) ** 2)
        # history[0] may be the initial state; lags reaching it are skipped (they are not "returns").
        oldest = 1 if (len(history) == s_count + 1) else 0
        lags = [torch.sqrt(_diff(last_h, h_) ** 2 + _diff(last_l, l_) ** 2)
                for h_, l_ in list(history)[oldest:-2]]
        if lags:
            dk = torch.stack(lags).amin(0)
            ret = _ratio(dk, d1)
    return ret


class _StepRecord:
    """What run_trace records of every H update (``steps``): predictions, residuals and norms; z_H for
    the trajectory PCA (``pca``, kept in memory while running); the z_H and z_L of the ``kept`` rows."""

    def __init__(self, model: HRM, carry: InnerCarry, kept: np.ndarray, pca: bool):
        self.model, self.kept, self.pca = model, kept, pca
        self.kept_t = torch.as_tensor(kept, device=carry.z_H.device)
        self.prev_h, self.prev_l = carry.z_H, carry.z_L
        self.pred, self.res_h, self.res_l, self.norm_h, self.norm_l = [], [], [], [], []
        self.flat_h, self.keep_h, self.keep_l = [], [], []

    def add(self, z_h: torch.Tensor, z_l: torch.Tensor) -> None:
        b = z_h.shape[0]
        self.pred.append(decode(self.model, z_h).to(torch.uint8))
        self.res_h.append(relative_residual(z_h, self.prev_h))
        self.res_l.append(relative_residual(z_l, self.prev_l))
        self.norm_h.append(_norm(z_h))
        self.norm_l.append(_norm(z_l))
        if self.pca:
            self.flat_h.append(z_h.reshape(b, -1).to(torch.float32))
        if self.kept.size:
            self.keep_h.append(z_h.index_select(0, self.kept_t).to(torch.float32).cpu())
            self.keep_l.append(z_l.index_select(0, self.kept_t).to(torch.float32).cpu())
        self.prev_h, self.prev_l = z_h, z_l

    def fill(self, out: Trace) -> None:
        """Put the per-step arrays into ``out``."""
        out.predictions = _np(torch.stack(self.pred))
        out.res_H, out.res_L = _np(torch.stack(self.res_h)), _np(torch.stack(self.res_l))
        out.norm_H, out.norm_L = _np(torch.stack(self.norm_h)), _np(torch.stack(self.norm_l))
        if self.pca:
            scores, ratio = trajectory_pca(torch.stack(self.flat_h, dim=1))
            out.pcs = _np(scores.transpose(0, 1))
            out.pca_ratio = _np(ratio)
            self.flat_h = []  # the batch's z_H states: freed before the kept rows' are stacked
        if self.kept.size:
            out.z_H, out.z_L = torch.stack(self.keep_h), torch.stack(self.keep_l)
            out.kept_rows = self.kept


@torch.no_grad()
def run_trace(model: HRM, inputs, *, puzzle_identifiers=None, segments: int | None = None,
              init: InnerCarry | None = None, steps: bool = True, pca: bool = True,
              keep_states: bool | np.ndarray = False, keep_final: bool = False, lookback: int = 4) -> Trace:
    """Run ``segments`` (default halt_max_steps) segments on every puzzle and record them.

    ``inputs``: int tokens [B, seq_len]. ``init``: starting carry (default :func:`initial_state`).
    ``steps``: also record every H update (predictions, residuals, norms; ``pca`` adds the
    trajectory PCA of z_H, which keeps the batch's z_H states in memory while running).
    ``keep_states``: True, or a bool mask / index array of rows, to return their z_H and z_L after
    every step (float32, CPU). ``keep_final``: return the carry after the last segment.
    ``lookback``: largest lag K of the return distance ``seg_return``.
    """
    inner = _inner(model)
    cfg = inner.config
    with _evaluating(inner):
        batch = _batch(model, inputs, puzzle_identifiers)
        b = batch["inputs"].shape[0]
        s_count = cfg.halt_max_steps if segments is None else int(segments)
        if s_count < 1:
            raise ValueError("segments must be >= 1")
        carry = initial_state(model, b) if init is None else init
        if carry.z_H.shape[0] != b:
            raise ValueError(f"init has {carry.z_H.shape[0]} rows, inputs {b}")
        record = _StepRecord(model, carry, _kept_rows(keep_states, b), pca)

        history: deque = deque(maxlen=lookback + 1)
        history.append((carry.z_H, carry.z_L))
        seg_pred, q_h, q_c, seg_rh, seg_rl, seg_r = [], [], [], [], [], []
        for seg in run_segments(inner, batch, s_count, carry=carry, trace=steps):
            old_h, old_l = carry.z_H, carry.z_L
            carry = seg.carry
            seg_pred.append(seg.logits.argmax(-1).to(torch.uint8))
            q_h.append(seg.q_halt.float())
            q_c.append(seg.q_continue.float())
            dh, dl = _diff(carry.z_H, old_h), _diff(carry.z_L, old_l)
            nh, nl = _norm(old_h), _norm(old_l)
            seg_rh.append(_ratio(dh, nh))
            seg_rl.append(_ratio(dl, nl))
            seg_r.append(_ratio(torch.sqrt(dh ** 2 + dl ** 2), torch.sqrt(nh ** 2 + nl ** 2)))
            history.append((carry.z_H, carry.z_L))
            if steps:
                for z_h, z_l in seg.states:
                    record.add(z_h, z_l)

        ret = _return_distance(history, s_count, b)
        out = Trace(
            segments=s_count, h_cycles=architecture_of(inner).steps_per_segment(cfg),
            seg_predictions=_np(torch.stack(seg_pred)), q_halt=_np(torch.stack(q_h)), q_continue=_np(torch.stack(q_c)),
            seg_res_H=_np(torch.stack(seg_rh)).astype(np.float32), seg_res_L=_np(torch.stack(seg_rl)).astype(np.float32),
            seg_res=_np(torch.stack(seg_r)).astype(np.float32), seg_return=_np(ret).astype(np.float32),
        )
        if steps:
            record.fill(out)
        if keep_final:
            out.final_z_H = carry.z_H.to(torch.float32).cpu()
            out.final_z_L = carry.z_L.to(torch.float32).cpu()
        return out
