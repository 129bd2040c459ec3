"""The fork's formulas written out on their own, for tests to check the library against
(the fork: the Augmented HRM paper's code, see the README's "Reference code")."""

from __future__ import annotations

import numpy as np


def cyclic_shift_tokens(tokens: np.ndarray, p: int) -> np.ndarray:
    """The fork's shift on tokens: t -> ((t - 2 + p) mod 9) + 2 for digit tokens 2..10, others unchanged."""
    t = np.asarray(tokens)
    digit = (t >= 2) & (t <= 10)
    return np.where(digit, (t - 2 + p) % 9 + 2, t).astype(t.dtype)
