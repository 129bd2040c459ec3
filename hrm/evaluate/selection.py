"""The votes over checkpoints x passes: the fork's ``paper_vote`` (Sudoku's), ``any_pass_solves``
(the mazes'), and the label-free selections of one answer, by vote (``label_free_select``) and by the
first pass to halt (``first_to_halt``) (hrm.evaluate's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def paper_vote(correct: np.ndarray, halted: np.ndarray) -> np.ndarray:
    """The fork's rule. correct, halted: bool [K, P, N] -> bool [N].

    Checkpoint k solves a puzzle when its passes that are correct AND halted are more than
    half of its halted passes; the puzzle is solved when any checkpoint solves it. Reads labels.
    """
    correct, halted = np.asarray(correct, bool), np.asarray(halted, bool)
    counted = (correct & halted).sum(axis=1)
    halted_n = halted.sum(axis=1)
    return (2 * counted > halted_n).any(axis=0)


def _answer_keys(answers: np.ndarray) -> np.ndarray:
    """answers uint8 [..., L] -> uint64 [..., ceil(L / 8)]: equal rows <=> equal keys (exact, padded bytes)."""
    a = np.ascontiguousarray(answers, dtype=np.uint8)
    width = a.shape[-1]
    padded = np.zeros(a.shape[:-1] + (-(-width // 8) * 8,), dtype=np.uint8)
    padded[..., :width] = a
    return padded.view(np.uint64)


@dataclass
class Selection:
    """Label-free selection for B puzzles and a set of candidate subsets."""

    index: np.ndarray  # int64 [T, B]: selected candidate (index into the M candidates)
    votes: np.ndarray  # int64 [T, B]: pool passes that gave the selected answer
    pool: np.ndarray  # int64 [T, B]: pool size
    verified: np.ndarray  # bool [T, B]: the selected answer passes the verifier
    no_halt: np.ndarray  # bool [T, B]: no candidate of the subset halted (pool = all candidates)


def label_free_select(answers: np.ndarray, halted: np.ndarray, q_prob: np.ndarray, verified: np.ndarray,
                      subsets: np.ndarray | None = None) -> Selection:
    """The label-free rule (hrm.evaluate's docstring) for M candidate answers per puzzle.

    answers uint8 [M, B, L] (original space), halted / verified bool [M, B], q_prob float [M, B]
    (sigmoid of the final q_halt); subsets bool [T, M] (default: one subset of all M).
    """
    answers = np.asarray(answers)
    m, b = answers.shape[:2]
    subsets = np.ones((1, m), bool) if subsets is None else np.asarray(subsets, bool)
    keys = _answer_keys(answers).transpose(1, 0, 2)  # [B, M, 11]
    same = (keys[:, :, None, :] == keys[:, None, :, :]).all(-1).astype(np.float64)  # [B, M, M]
    hal = np.asarray(halted, bool).T  # [B, M]
    ver = np.asarray(verified, bool).T
    q = np.asarray(q_prob, np.float64).T
    cand = subsets[:, None, :]  # [T, 1, M]
    halted_in = cand & hal[None]  # [T, B, M]
    no_halt = ~halted_in.any(-1)  # [T, B]
    pool = np.where(no_halt[..., None], cand, halted_in)  # [T, B, M]
    poolf = pool.astype(np.float64)
    # votes[t, b, i] = pool members with candidate i's answer; qsum likewise weighted by q.
    # (``same`` is symmetric: a batched matmul [B, T, M] @ [B, M, M] does it with BLAS.)
    votes = np.matmul(poolf.transpose(1, 0, 2), same).transpose(1, 0, 2)
    qsum = np.matmul((poolf * q[None]).transpose(1, 0, 2), same).transpose(1, 0, 2)
    qmean = qsum / np.maximum(votes, 1)
    has_ver = (pool & ver[None]).any(-1, keepdims=True)
    eligible = pool & (ver[None] | ~has_ver)
    # Integer votes first; the mean q (in [0, 1]) scaled below 1 breaks ties; argmax takes the
    # first index on exact ties.
    key = np.where(eligible, votes + 0.5 * qmean, -np.inf)
    index = key.argmax(-1)  # [T, B]
    take = lambda a: np.take_along_axis(a, index[..., None], -1)[..., 0]  # noqa: E731
    return Selection(
        index=index,
        votes=take(votes).round().astype(np.int64),
        pool=pool.sum(-1).astype(np.int64),
        verified=np.take_along_axis(np.broadcast_to(ver[None], pool.shape), index[..., None], -1)[..., 0],
        no_halt=no_halt,
    )


@dataclass
class FirstToHalt:
    """First-to-halt selection for B puzzles and a set of candidate subsets."""

    index: np.ndarray  # int64 [T, B]: selected candidate (index into the M candidates)
    segment: np.ndarray  # int64 [T, B]: the segment (1..S) whose answer it gives: its first halt, else S
    no_halt: np.ndarray  # bool [T, B]: no candidate of the subset halted at any segment


def first_to_halt(segment_halted: np.ndarray, segment_q_halt: np.ndarray,
                  subsets: np.ndarray | None = None) -> FirstToHalt:
    """The first-to-halt rule (hrm.evaluate's docstring) for M candidate passes per puzzle. Reads no label.

    segment_halted bool [M, S, B]: each pass's halt signal after segment s (its architecture's,
    hrm.model.act.ACTModel.halt_signal); segment_q_halt float [M, S, B]: its q_halt there; subsets
    bool [T, M] (default: one subset of all M). A pass's segment is the first whose signal fires, else S.
    Within a subset: the smallest segment wins, a pass that never halts ranking after one that halts at S;
    ties -> the highest sigmoid(q_halt) at that segment (compared as q_halt, the same order without
    float saturation at 1; NaN ranks lowest); remaining ties -> the first candidate (in (checkpoint,
    pass) order). No candidate halted: all tie at S, so the highest final sigmoid(q_halt) wins.
    """
    halted = np.asarray(segment_halted, bool)
    m, s, b = halted.shape
    if s < 1:
        raise ValueError("first_to_halt needs at least one segment")
    subsets = np.ones((1, m), bool) if subsets is None else np.asarray(subsets, bool)
    if not subsets.any(-1).all():
        raise ValueError("every subset needs at least one candidate")
    ever = halted.any(1)  # [M, B]
    segment = np.where(ever, halted.argmax(1) + 1, s)  # the answer's segment (1-based)
    rank = np.where(ever, segment, s + 1)  # never halting ranks after halting at the last segment
    q = np.take_along_axis(np.asarray(segment_q_halt, np.float64), (segment - 1)[:, None], 1)[:, 0]
    q = np.where(np.isnan(q), -np.inf, q)
    cand = subsets[:, None, :]  # [T, 1, M]
    ranked = np.where(cand, rank.T[None], s + 2)  # [T, B, M]
    tied = ranked == ranked.min(-1, keepdims=True)  # only candidates: every subset has one
    conf = np.where(tied, q.T[None], -np.inf)
    best = tied & (conf == conf.max(-1, keepdims=True))  # -inf == -inf keeps an all -inf tie
    index = best.argmax(-1)  # the first of the best
    return FirstToHalt(
        index=index,
        segment=np.take_along_axis(np.broadcast_to(segment.T[None], ranked.shape), index[..., None], -1)[..., 0],
        no_halt=~(cand & ever.T[None]).any(-1),
    )


def any_pass_solves(correct: np.ndarray, halted: np.ndarray) -> np.ndarray:
    """The fork's maze rule. correct, halted: bool [K, P, N] -> bool [N]: a maze is solved when any
    pass of any checkpoint is exactly right; halting is not required. Reads labels."""
    return np.asarray(correct, bool).any(axis=(0, 1))
