"""Sudoku encoding, checks and symmetry transforms, vectorised over N puzzles.

Three representations (docs/reference-semantics.md §2):
- string: 81 characters, ``.`` (or ``0``) for a blank, ``1``-``9`` for a digit;
- grid:   uint8 [N, 81], 0 = blank, 1..9 = digit;
- tokens: uint8 [N, 81], grid + 1 (1 = blank, 2..10 = digits); 0 is padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hrm.encoding import EncodingError, numba_kernel

SEQ_LEN = 81
VOCAB_SIZE = 11
BLANK_TOKEN = 1

_CELLS = np.arange(SEQ_LEN)
ROW_OF = _CELLS // 9
COL_OF = _CELLS % 9
BOX_OF = (ROW_OF // 3) * 3 + COL_OF // 3
# UNITS[u] lists the 9 cells of unit u: rows 0-8, columns 9-17, boxes 18-26.
UNITS = np.concatenate(
    [np.stack([np.flatnonzero(of == i) for i in range(9)]) for of in (ROW_OF, COL_OF, BOX_OF)]
)

# byte -> grid value; 255 marks a character that is not allowed.
_CHAR_TO_VALUE = np.full(256, 255, dtype=np.uint8)
_CHAR_TO_VALUE[ord(".")] = 0
_CHAR_TO_VALUE[ord("0")] = 0
for _d in range(1, 10):
    _CHAR_TO_VALUE[ord(str(_d))] = _d


def strings_to_grids(strings: Sequence[str] | np.ndarray) -> np.ndarray:
    """81-character strings -> uint8 grids [N, 81]. Raises EncodingError naming bad rows."""
    strings = np.asarray(strings, dtype=object)
    n = len(strings)
    if n == 0:
        return np.zeros((0, SEQ_LEN), dtype=np.uint8)
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=n)
    bad_len = np.flatnonzero(lengths != SEQ_LEN)
    if len(bad_len):
        raise EncodingError(f"expected {SEQ_LEN} characters", bad_len)
    raw = np.frombuffer("".join(strings).encode("latin-1", "replace"), dtype=np.uint8)
    grids = _CHAR_TO_VALUE[raw].reshape(n, SEQ_LEN)
    bad_char = np.flatnonzero((grids == 255).any(axis=1))
    if len(bad_char):
        raise EncodingError("characters other than '.', '0'-'9'", bad_char)
    return grids


def grids_to_strings(grids: np.ndarray, blank: str = ".") -> list[str]:
    """uint8 grids [N, 81] -> 81-character strings with ``blank`` for 0."""
    grids = np.asarray(grids, dtype=np.uint8)
    chars = (grids + ord("0")).astype(np.uint8)
    chars[grids == 0] = ord(blank)
    data = chars.tobytes().decode("ascii")
    return [data[i : i + SEQ_LEN] for i in range(0, len(data), SEQ_LEN)]


def grids_to_tokens(grids: np.ndarray) -> np.ndarray:
    return np.asarray(grids, dtype=np.uint8) + np.uint8(1)


def tokens_to_grids(tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens)
    bad = np.flatnonzero(((tokens < 1) | (tokens > 10)).any(axis=-1).reshape(-1))
    if len(bad):
        raise EncodingError("tokens outside 1..10", bad)
    return (tokens - 1).astype(np.uint8)


_CHUNK = 32768  # rows per step: bounds the temporaries of the unit checks to a few MB


def _chunks(n: int):
    for start in range(0, n, _CHUNK):
        yield slice(start, min(start + _CHUNK, n))


def is_valid_solution(grids: np.ndarray, *, offset: int = 0) -> np.ndarray:
    """bool [N]: every cell holds 1..9 and every row, column and box holds each digit once.

    A cell holding v means digit v - ``offset``: 0 for grid values, 1 for tokens (the
    examples checks call it through ``hrm.build.valid_solution_tokens``).
    """
    if not 0 <= offset <= 246:  # the kernel's table has 256 entries
        raise ValueError(f"offset {offset} outside 0..246")
    grids = np.asarray(grids)
    if grids.dtype != np.uint8:
        grids = np.clip(grids, 0, 255).astype(np.uint8)  # clip: a wrapped value could pass as a digit
    return _valid_solutions(np.ascontiguousarray(grids), np.int64(offset))


def agrees_with_givens(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """bool [N]: every given (non-zero) cell of the question holds the same digit in the answer."""
    questions, answers = np.asarray(questions), np.asarray(answers)
    return ((questions == 0) | (questions == answers)).all(axis=1)


def conflict_count(grids: np.ndarray) -> np.ndarray:
    """int64 [N]: excess repeats of digits per row, column and box, summed (blanks ignored).

    A valid (partial) grid scores 0; the paper's landscape metric.
    """
    grids = np.asarray(grids)
    out = np.empty(len(grids), dtype=np.int64)
    for sl in _chunks(len(grids)):
        units = grids[sl][:, UNITS]  # [n, 27, 9]
        counts = (units[..., None] == np.arange(1, 10, dtype=units.dtype)).sum(axis=2)  # [n, 27, 9]
        out[sl] = np.maximum(counts - 1, 0).sum(axis=(1, 2))
    return out


def conflict_cells(grids: np.ndarray) -> np.ndarray:
    """bool [N, 81]: the cells whose digit repeats in their row, column or box (blanks ignored): where the
    repeats :func:`conflict_count` counts are (no cell is marked exactly when it counts 0)."""
    grids = np.asarray(grids)
    units = grids[:, UNITS]  # [n, 27, 9]
    repeated = ((units[..., :, None] == units[..., None, :]).sum(-1) > 1) & (units > 0)  # [n, 27, 9]
    out = np.zeros(grids.shape, bool)
    for unit, cells in enumerate(UNITS):
        out[:, cells] |= repeated[:, unit]
    return out


def num_blanks(grids: np.ndarray) -> np.ndarray:
    return (np.asarray(grids) == 0).sum(axis=1)


# ---------------------------------------------------------------- compiled kernels


@numba_kernel
def _valid_solutions(cells, offset):
    # Each row, column and box ORs the bits of its 9 cells; all 27 must hold digits 1..9,
    # which for 9 cells means each digit exactly once. A lookup table keeps it branch-free.
    n = cells.shape[0]
    out = np.empty(n, dtype=np.bool_)
    lut = np.zeros(256, dtype=np.uint16)
    for d in range(1, 10):
        lut[d + offset] = 1 << d
    full = np.uint16(0x3FE)
    bits = np.empty(81, dtype=np.uint16)
    cols = np.empty(9, dtype=np.uint16)
    for i in range(n):
        for c in range(81):
            bits[c] = lut[cells[i, c]]
        ok = True
        for c in range(9):
            cols[c] = 0
        for r in range(9):
            m = np.uint16(0)
            for c in range(9):
                b = bits[r * 9 + c]
                m |= b
                cols[c] |= b
            ok &= m == full
        for c in range(9):
            ok &= cols[c] == full
        for br in range(0, 9, 3):
            for bc in range(0, 9, 3):
                m = np.uint16(0)
                for r in range(3):
                    for c in range(3):
                        m |= bits[(br + r) * 9 + bc + c]
                ok &= m == full
        out[i] = ok
    return out


# ---------------------------------------------------------------- symmetry transforms


@dataclass(frozen=True)
class Transforms:
    """N validity-preserving Sudoku symmetries (docs/reference-semantics.md §3).

    Applied as: optional transpose, then ``out[r, c] = x[row_order[r], col_order[c]]``,
    then digits relabelled through ``digit_map`` (digit_map[0] = 0 keeps blanks blank).
    """

    digit_map: np.ndarray  # uint8 [N, 10]
    transpose: np.ndarray  # bool [N]
    row_order: np.ndarray  # uint8 [N, 9]
    col_order: np.ndarray  # uint8 [N, 9]

    def __len__(self) -> int:
        return len(self.transpose)

    @staticmethod
    def identity(n: int) -> "Transforms":
        return Transforms(
            digit_map=np.tile(np.arange(10, dtype=np.uint8), (n, 1)),
            transpose=np.zeros(n, dtype=bool),
            row_order=np.tile(np.arange(9, dtype=np.uint8), (n, 1)),
            col_order=np.tile(np.arange(9, dtype=np.uint8), (n, 1)),
        )


@numba_kernel
def _argsort_rows(keys):
    """Row-wise argsort of small rows, as uint8: the rank of each key (ties broken by
    position, as a stable sort does) inverted. Equal to np.argsort on distinct keys."""
    n, k = keys.shape
    out = np.empty((n, k), dtype=np.uint8)
    for i in range(n):
        for j in range(k):
            v = keys[i, j]
            rank = 0
            for m in range(k):
                w = keys[i, m]
                rank += (w < v) or (w == v and m < j)
            out[i, rank] = j
    return out


def _line_orders(rng: np.random.Generator, n: int) -> np.ndarray:
    bands = _argsort_rows(rng.random((n, 3)))
    inner = _argsort_rows(rng.random((n * 3, 3))).reshape(n, 3, 3)
    return (bands[:, :, None] * np.uint8(3) + inner).reshape(n, 9)


def random_transforms(rng: np.random.Generator, n: int) -> Transforms:
    """n random symmetries: digit relabelling, transpose with p = 0.5, band/row and stack/column orders.

    Each permutation is the argsort of uniform draws (digits, then transposes, then row
    orders, then column orders), so a seed fixes the transforms on any machine.
    """
    digit_map = np.zeros((n, 10), dtype=np.uint8)
    digit_map[:, 1:] = _argsort_rows(rng.random((n, 9))) + np.uint8(1)
    transpose = rng.random(n) < 0.5
    row_order = _line_orders(rng, n)
    col_order = _line_orders(rng, n)
    return Transforms(digit_map, transpose, row_order, col_order)


@numba_kernel
def _apply_rows(src, src_row, src_offset, digit_map, transpose, row_order, col_order, out_offset, out):
    """out[i] = transform i applied to src[src_row[i]] (values shifted by the offsets)."""
    for i in range(out.shape[0]):
        s = src_row[i]
        tr = transpose[i]
        for r in range(9):
            rr = np.int64(row_order[i, r])
            for c in range(9):
                cc = np.int64(col_order[i, c])
                if tr:
                    v = src[s, cc * 9 + rr]
                else:
                    v = src[s, rr * 9 + cc]
                out[i, r * 9 + c] = digit_map[i, v - src_offset] + out_offset


def apply_transforms_rows(
    src: np.ndarray, src_row: np.ndarray, t: Transforms, *, src_tokens: bool = False, out_tokens: bool = False
) -> np.ndarray:
    """Transform ``n`` applied to ``src[src_row[n]]``, without materialising the gather.

    Semantics of :class:`Transforms` (optional transpose, then
    ``out[r, c] = x[row_order[r], col_order[c]]``, then digit relabel). ``src`` holds grid
    values, or tokens with ``src_tokens``; the result is grid values, or tokens with
    ``out_tokens``. uint8 [len(src_row), 81].
    """
    src = np.ascontiguousarray(src, dtype=np.uint8)
    src_row = np.ascontiguousarray(src_row, dtype=np.int64)
    if len(src_row) != len(t):
        raise ValueError(f"{len(src_row)} rows but {len(t)} transforms")
    out = np.empty((len(src_row), SEQ_LEN), dtype=np.uint8)
    _apply_rows(src, src_row, np.uint8(src_tokens), t.digit_map, t.transpose, t.row_order, t.col_order,
                np.uint8(out_tokens), out)
    return out


def apply_transforms(grids: np.ndarray, t: Transforms) -> np.ndarray:
    """Apply transform n to grid n (grid values, 0 = blank). Returns uint8 [N, 81]."""
    grids = np.asarray(grids, dtype=np.uint8)
    if len(grids) != len(t):
        raise ValueError(f"{len(grids)} grids but {len(t)} transforms")
    return apply_transforms_rows(grids, np.arange(len(grids)), t)


def digit_shift_maps(shifts: Sequence[int] | np.ndarray) -> np.ndarray:
    """digit_map [P, 10] for the paper's cyclic relabellings d -> ((d - 1 + p) mod 9) + 1."""
    p = np.asarray(shifts, dtype=np.int64)[:, None]
    digits = np.arange(1, 10)[None, :]
    maps = np.zeros((len(p), 10), dtype=np.uint8)
    maps[:, 1:] = (digits - 1 + p) % 9 + 1
    return maps
