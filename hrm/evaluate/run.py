"""The driver: :func:`evaluate_puzzles` streams puzzles through the engine in batches and collects
an :class:`~hrm.evaluate.results.EvalResult`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from hrm.evaluate.calibration import Histogram, critical_step, sigmoid
from hrm.evaluate.engine import Runner
from hrm.evaluate.perturbations import Perturbations
from hrm.evaluate.results import EvalResult
from hrm.evaluate.selection import first_to_halt, label_free_select
from hrm.progress import progress_bar
from hrm.encoding import IGNORE_LABEL

if TYPE_CHECKING:
    from hrm.tasks.base import EvalRules


def _subset_masks(k_count: int, p_count: int) -> np.ndarray:
    """bool [K*P, K*P]: subset t = (k'-1)*P + (p'-1) holds candidates (k, p) with k >= K - k' and p < p'."""
    k = np.repeat(np.arange(k_count), p_count)
    p = np.tile(np.arange(p_count), k_count)
    masks = np.zeros((k_count * p_count, k_count * p_count), bool)
    for kk in range(1, k_count + 1):
        for pp in range(1, p_count + 1):
            masks[(kk - 1) * p_count + pp - 1] = (k >= k_count - kk) & (p < pp)
    return masks


# The per-puzzle outcomes gathered batch by batch: key -> (the axis the batches join on, the dtype of an
# evaluation of no puzzles). Axis 2: [K, P, N] per checkpoint and pass; axis 0: [N], the full ensemble's.
_PER_PUZZLE: dict[str, tuple[int, type]] = {
    "correct": (2, bool), "halted": (2, bool), "q_halt": (2, np.float32), "q_continue": (2, np.float32),
    "verified": (2, bool), "blank_correct": (2, np.int16), "cell_correct": (2, np.int16), "steps": (2, np.int16),
    "stable_from": (2, np.int8), "es_correct": (2, bool), "es_steps": (2, np.int16), "lf_correct": (2, bool),
    "lf_verified": (0, bool), "lf_votes": (0, np.int16), "lf_pool": (0, np.int16), "lf_no_halt": (0, bool),
    "fth_correct": (2, bool), "fth_segment": (0, np.int16), "fth_no_halt": (0, bool),
}


class _Gathered:
    """What :func:`evaluate_puzzles` gathers over its batches of K checkpoints x P passes x S segments:
    the per-puzzle outcomes (joined at the end), per-segment counts and the cells' histograms."""

    def __init__(self, k_count: int, p_count: int, s_count: int, bins: int):
        self.shape = (k_count, p_count, s_count)
        self.per: dict[str, list[np.ndarray]] = {key: [] for key in _PER_PUZZLE}
        self.segment_correct = np.zeros(self.shape, np.int64)
        self.segment_halted = np.zeros(self.shape, np.int64)
        self.cells_base, self.cells_pooled = Histogram(bins), Histogram(bins)

    def joined(self, key: str) -> np.ndarray:
        axis, dtype = _PER_PUZZLE[key]
        parts = self.per[key]
        empty = self.shape[:2] + (0,) if axis == 2 else (0,)
        return np.concatenate(parts, axis=axis) if parts else np.zeros(empty, dtype)


def evaluate_puzzles(
    runner: Runner,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    perturbations: Perturbations,
    ratings: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    early_stop: bool = False,
    bins: int = 10,
    progress: bool = False,
    desc: str = "evaluate",
    on_batch: Callable[[int], None] | None = None,
    rules: EvalRules,
) -> EvalResult:
    """Run N puzzles (tokens [N, L]; labels tokens, -100 ignored) through K checkpoints x P passes.

    ``batch_size`` puzzles per batch: each checkpoint then sees batch_size x P rows.
    Returns an :class:`EvalResult`; nothing here depends on the batch size except speed.
    ``on_batch(puzzles)`` is called after each batch (a caller's own progress report).
    ``rules``: the task's (hrm.tasks: ``SUDOKU.rules``, ``MAZE.rules`` for mazes of 900 tokens).
    """
    inputs, labels = _checked_tokens(inputs, labels, rules.seq_len, batch_size)
    n = inputs.shape[0]
    K, P, S = runner.num_models, len(perturbations), runner.segments
    names = list(names) if names is not None else [f"checkpoint_{k}" for k in range(K)]
    if len(names) != K:
        raise ValueError(f"{len(names)} names for {K} checkpoints")
    masks = _subset_masks(K, P)
    got = _Gathered(K, P, S, bins)

    bar = progress_bar(n, desc, "puzzle", enabled=progress)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            q = inputs[start:start + batch_size]
            _evaluate_batch(runner, perturbations, rules, q, labels[start:start + batch_size], early_stop, masks, got)
            bar.update(q.shape[0])
            if on_batch is not None:
                on_batch(q.shape[0])
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    return EvalResult(
        names=names, perturbation=perturbations.kind, early_stop=early_stop,
        blanks=rules.blank_cells(inputs, labels).sum(1).astype(np.int16),
        rating=(np.asarray(ratings, np.int32) if ratings is not None else np.full(n, -1, np.int32)),
        label_cells=(labels != IGNORE_LABEL).sum(1).astype(np.int16),
        **{key: got.joined(key) for key in _PER_PUZZLE},
        segment_correct=got.segment_correct, segment_halted=got.segment_halted,
        cells_base=got.cells_base, cells_pooled=got.cells_pooled, seconds=seconds, rows=n * P, task=rules.task,
    )


def _checked_tokens(inputs: np.ndarray, labels: np.ndarray, seq_len: int,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """inputs as uint8 and labels as int16 tokens [N, seq_len], once their shapes (and the batch size) hold."""
    inputs = np.asarray(inputs)
    labels = np.asarray(labels)
    if inputs.ndim != 2 or inputs.shape[1] != seq_len or labels.shape != inputs.shape:
        raise ValueError(f"inputs and labels must both be [N, {seq_len}]; got {inputs.shape} and {labels.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return inputs.astype(np.uint8), labels.astype(np.int16)


def _evaluate_batch(runner: Runner, perturbations: Perturbations, rules: EvalRules, q: np.ndarray, lab: np.ndarray,
                    early_stop: bool, masks: np.ndarray, got: _Gathered) -> None:
    """One batch of B puzzles (tokens q, labels lab [B, L]): its K x P passes run, their outcomes added to ``got``."""
    (K, P, S), b, L = got.shape, q.shape[0], rules.seq_len
    xp = perturbations.apply(q)  # [P, B, 81]
    yp = perturbations.apply(lab)
    res = runner.run(xp.reshape(P * b, L), yp.reshape(P * b, L), early_stop=early_stop)

    def kpb(a: np.ndarray) -> np.ndarray:
        return a.reshape((K, P, b) + a.shape[2:])

    pred = kpb(res.predictions)  # [K, P, B, 81] perturbed space
    seg = res.segment_correct.reshape(K, S, P, b).transpose(0, 2, 1, 3)  # [K, P, S, B]
    seg_h = res.segment_halted.reshape(K, S, P, b).transpose(0, 2, 1, 3)
    seg_q = res.segment_q_halt.reshape(K, S, P, b).transpose(0, 2, 1, 3)
    correct = seg[:, :, -1] if S else np.zeros((K, P, b), bool)
    halted = kpb(res.halted)
    qh = kpb(res.q_halt)
    labelled = yp[None] != IGNORE_LABEL
    cell_ok = (pred == yp[None]) & labelled  # [K, P, B, 81]
    blank = rules.blank_cells(xp, yp)[None] & labelled
    answers = perturbations.restore(pred)  # [K, P, B, L] original space
    verified = rules.verify(q[None, None], answers)

    per = got.per
    per["correct"].append(correct)
    per["halted"].append(halted)
    per["q_halt"].append(qh)
    per["q_continue"].append(kpb(res.q_continue))
    per["verified"].append(verified)
    per["blank_correct"].append((cell_ok & blank).sum(-1).astype(np.int16))
    per["cell_correct"].append(cell_ok.sum(-1).astype(np.int16))
    per["steps"].append(kpb(res.steps).astype(np.int16))
    per["stable_from"].append(critical_step(np.moveaxis(seg, 2, 0)).astype(np.int8))
    # The early-stop view, read off the full run: the answer at the first segment where
    # the model halts (its architecture's halt signal; or the last). Equals the run itself under early_stop.
    halts = seg_h.any(2)
    es_steps = np.where(halts, seg_h.argmax(2) + 1, S).astype(np.int16)  # [K, P, B]
    per["es_steps"].append(es_steps)
    es_correct = np.take_along_axis(seg, es_steps[:, :, None].astype(np.int64) - 1, 2)[:, :, 0]
    per["es_correct"].append(es_correct)
    got.segment_correct += seg.sum(-1)
    got.segment_halted += seg_h.sum(-1)
    conf = kpb(res.confidence)
    got.cells_base.add(conf[-1, 0][blank[0, 0]], cell_ok[-1, 0][blank[0, 0]])
    bmask = np.broadcast_to(blank, cell_ok.shape)
    got.cells_pooled.add(conf[bmask], cell_ok[bmask])
    for key, value in _label_free_outcomes(answers, halted, qh, verified, lab, masks).items():
        per[key].append(value)
    for key, value in _first_to_halt_outcomes(seg_h, seg_q, es_correct, masks).items():
        per[key].append(value)


def _label_free_outcomes(answers: np.ndarray, halted: np.ndarray, q_halt: np.ndarray, verified: np.ndarray,
                         lab: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The label-free choice of one batch (answers [K, P, B, L] in the original space) for every subset
    of ``masks``: whether it is right for each subset, and the full ensemble's details."""
    K, P, b = halted.shape
    L = lab.shape[1]
    sel = label_free_select(answers.reshape(K * P, b, L), halted.reshape(K * P, b),
                            sigmoid(q_halt).reshape(K * P, b), verified.reshape(K * P, b), masks)
    # Correctness of the chosen answer, judged in the original space.
    orig_ok = _exact_np(answers, lab[None, None]).reshape(K * P, b)
    chosen_ok = np.take_along_axis(orig_ok.T[None], sel.index[..., None], -1)[..., 0]  # [T, B]
    return {"lf_correct": chosen_ok.reshape(K, P, b), "lf_verified": sel.verified[-1],
            "lf_votes": sel.votes[-1].astype(np.int16), "lf_pool": sel.pool[-1].astype(np.int16),
            "lf_no_halt": sel.no_halt[-1]}


def _first_to_halt_outcomes(seg_halted: np.ndarray, seg_q_halt: np.ndarray, es_correct: np.ndarray,
                            masks: np.ndarray) -> dict[str, np.ndarray]:
    """The first-to-halt choice of one batch (per segment halt signals and q_halt [K, P, S, B]) for every
    subset of ``masks``: whether it is right for each subset, and the full ensemble's segment and no-halt flag.
    The chosen pass's answer is the one at its first halt (else the last segment), whose exactness is the
    early-stop view's ``es_correct`` [K, P, B] (judged against the label as every pass is: perturbations are
    bijections of input and label, so the perturbed space and the original give the same verdict)."""
    K, P, S, b = seg_halted.shape
    sel = first_to_halt(seg_halted.reshape(K * P, S, b), seg_q_halt.reshape(K * P, S, b), masks)
    chosen_ok = np.take_along_axis(es_correct.reshape(K * P, b).T[None], sel.index[..., None], -1)[..., 0]  # [T, B]
    return {"fth_correct": chosen_ok.reshape(K, P, b), "fth_segment": sel.segment[-1].astype(np.int16),
            "fth_no_halt": sel.no_halt[-1]}


def _exact_np(pred: np.ndarray, lab: np.ndarray) -> np.ndarray:
    return ((pred == lab) | (lab == IGNORE_LABEL)).all(-1)
