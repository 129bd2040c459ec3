"""What every task's encoding shares: the padding and ignored-label ids, the error that names bad
rows, the integer check of generator controls, and the lazily compiled numba kernel.

Generic on purpose: a task module (hrm/sudoku.py, hrm/maze.py) imports these; an edit of one task's
rules then reruns only what depends on that task.
"""

from __future__ import annotations

import functools

import numpy as np

PAD_TOKEN = 0  # token 0 pads every sequence, whatever the task
IGNORE_LABEL = -100  # a label the loss skips (the official IGNORE_LABEL_ID)


class EncodingError(ValueError):
    """A string or array that is not in its task's expected encoding; names the rows."""

    def __init__(self, message: str, rows: np.ndarray):
        self.rows = np.asarray(rows)
        shown = ", ".join(str(r) for r in self.rows[:10])
        more = f" (and {len(self.rows) - 10} more)" if len(self.rows) > 10 else ""
        super().__init__(f"{message}: rows {shown}{more}")


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (no upper bound when ``hi`` is None), else a ValueError naming
    ``name``: the controls of both seeded generators (hrm.generate, hrm.maze)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)


def numba_kernel(fn):
    """``numba.njit(cache=True)``, applied on first call, so that importing a module that
    defines kernels does not pay numba's import and start-up (~0.7 s)."""
    compiled = None

    @functools.wraps(fn)
    def call(*args):
        nonlocal compiled
        if compiled is None:
            from numba import njit

            compiled = njit(cache=True)(fn)
        return compiled(*args)

    return call
