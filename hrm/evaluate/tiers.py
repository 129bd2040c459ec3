"""Easy tiers: copies of the puzzles with most of the answer revealed, k cells left to the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from hrm.rng import TIER as TIER_STREAM  # the seed's stream id: hrm/rng.py

if TYPE_CHECKING:
    from hrm.tasks.base import EvalRules


def parse_tiers(text: str | Sequence[tuple[int, int]] | None, seq_len: int) -> list[tuple[int, int]]:
    """"1-5,6-10,11-20" (or "5" for 5-5; "", "none" for no tiers) -> [(1, 5), (6, 10), (11, 20)].

    A sequence of (lo, hi) pairs is checked (at most ``seq_len`` cells left) and returned as a list.
    """
    if text is None:
        return []
    if isinstance(text, str):
        text = text.strip()
        if text.lower() in ("", "none", "off"):
            return []
        pairs = []
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            try:
                pairs.append((int(lo), int(hi or lo)))
            except ValueError:
                raise ValueError(f"bad tier {part.strip()!r}: expected K or LO-HI (blanks left), e.g. 1-5") from None
    else:
        pairs = [(int(a), int(b)) for a, b in text]
    for lo, hi in pairs:
        if not 1 <= lo <= hi <= seq_len:
            raise ValueError(f"bad tier {lo}-{hi}: need 1 <= LO <= HI <= {seq_len}")
    return pairs


def tier_name(tier: tuple[int, int]) -> str:
    return f"{tier[0]}-{tier[1]}" if tier[0] != tier[1] else str(tier[0])


def reveal_tier(inputs: np.ndarray, labels: np.ndarray, lo: int, hi: int, rng: np.random.Generator,
                rules: "EvalRules") -> np.ndarray:
    """Easy copies: each puzzle keeps k ~ uniform{lo..hi} blanks (at most its own), chosen
    uniformly among its blank cells; every other cell is revealed from the answer. Tokens in, tokens out.
    (Mazes, ``rules`` MAZE.rules: k cells of the shortest path are left open, the rest of it is marked.)"""
    n = np.asarray(inputs).shape[0]
    k = rng.integers(lo, hi + 1, size=n)
    return _reveal(inputs, labels, k, rng.random((n, rules.seq_len)), rules)


def reveal_tier_rows(inputs: np.ndarray, labels: np.ndarray, lo: int, hi: int, seed: int,
                     rows: np.ndarray, rules: "EvalRules") -> np.ndarray:
    """:func:`reveal_tier` with one generator per puzzle, ``default_rng([TIER_STREAM, seed, lo, hi, row])``
    (``rows``: each puzzle's row in its split), drawing its k, then its cell scores: a puzzle's easy copy
    depends on its own row only, not on the other puzzles evaluated or on how the work is cut up."""
    n = np.asarray(inputs).shape[0]
    k = np.empty(n, np.int64)
    scores = np.empty((n, rules.seq_len))
    for i, row in enumerate(np.asarray(rows, np.int64).tolist()):
        g = np.random.default_rng([TIER_STREAM, seed, lo, hi, row])
        k[i] = g.integers(lo, hi + 1)
        scores[i] = g.random(rules.seq_len)
    return _reveal(inputs, labels, k, scores, rules)


def _reveal(inputs: np.ndarray, labels: np.ndarray, k: np.ndarray, scores: np.ndarray,
            rules: "EvalRules") -> np.ndarray:
    """Keep the k revealable cells of lowest score in each puzzle (at most its own), reveal the rest."""
    inputs = np.asarray(inputs)
    labels = np.asarray(labels)
    blank = rules.revealable(inputs, labels)
    k = np.minimum(k, blank.sum(1))
    scores = np.where(blank, scores, np.inf)
    rank = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")
    reveal = blank & (rank >= k[:, None])
    return np.where(reveal, labels, inputs).astype(inputs.dtype)

