"""The P input perturbations of an evaluation (hrm.evaluate's docstring): Sudoku's ``shift``,
``relabel`` and ``symmetry``, the mazes' ``swap``; each applied to input and label alike, pass 0
the identity."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hrm import maze
from hrm.rng import PERTURB as PERTURB_STREAM  # the seed's stream id: hrm/rng.py
from hrm.sudoku import SEQ_LEN, Transforms, digit_shift_maps, random_transforms

PERTURBATIONS = ("shift", "relabel", "symmetry", "swap")  # swap: mazes' (the others: Sudoku's)


@dataclass(frozen=True)
class Perturbations:
    """P perturbations, the same for every puzzle; pass p maps a row of tokens x to
    ``out[i] = token_maps[p][x[cell_index[p, i]]]`` (Sudoku: digit tokens relabelled, pad and blank
    kept; mazes: S and G exchanged)."""

    kind: str
    token_maps: np.ndarray  # uint8 [P, 256]: token -> perturbed token, each a permutation keeping 0 (pad)
    cell_index: np.ndarray  # int64 [P, L]

    def __post_init__(self) -> None:
        p = self.token_maps.shape[0]
        if self.token_maps.shape != (p, 256) or self.cell_index.ndim != 2 or self.cell_index.shape[0] != p or p < 1:
            raise ValueError("token_maps must be [P, 256] and cell_index [P, L] with P >= 1")
        if not (np.sort(self.token_maps, axis=1) == np.arange(256)).all() or (self.token_maps[:, 0] != 0).any():
            raise ValueError("every token map must be a permutation of 0..255 that keeps 0 (padding)")
        if not (np.sort(self.cell_index, axis=1) == np.arange(self.cell_index.shape[1])).all():
            raise ValueError("every cell_index must be a permutation of the cells")

    def __len__(self) -> int:
        return self.token_maps.shape[0]

    @property
    def digit_map(self) -> np.ndarray:
        """uint8 [P, 10]: a Sudoku perturbation's relabelling of grid values (0 = blank kept)."""
        return (self.token_maps[:, 1:11] - 1).astype(np.uint8)

    @property
    def inverse_token_maps(self) -> np.ndarray:
        return np.argsort(self.token_maps, axis=1).astype(np.uint8)

    @property
    def inverse_cell_index(self) -> np.ndarray:
        return np.argsort(self.cell_index, axis=1)

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [N, L] (uint8, or int with IGNORE_LABEL = -100 kept) -> [P, N, L], same dtype."""
        tokens = np.asarray(tokens)
        return _map_tokens(tokens, self.cell_index, self.token_maps)

    def restore(self, tokens: np.ndarray) -> np.ndarray:
        """Map answers of the perturbed passes back: tokens [..., P, N, L] -> original tokens and cells."""
        tokens = np.asarray(tokens)
        if tokens.shape[-3] != len(self):
            raise ValueError(f"expected {len(self)} passes in axis -3, got shape {tokens.shape}")
        out = np.empty_like(tokens)
        inv_cells, inv_maps = self.inverse_cell_index, self.inverse_token_maps
        for p in range(len(self)):
            out[..., p, :, :] = _lut(tokens[..., p, :, :][..., inv_cells[p]], inv_maps[p])
        return out


def _digit_token_maps(digit_map: np.ndarray) -> np.ndarray:
    """uint8 [P, 256] token maps of Sudoku digit relabellings [P, 10] (0 pad and 1 blank fixed)."""
    lut = np.tile(np.arange(256, dtype=np.uint8), (len(digit_map), 1))
    lut[:, 1:11] = np.asarray(digit_map, np.uint8) + 1
    return lut


def _lut(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map tokens through lut; negative values (IGNORE_LABEL) stay as they are."""
    if x.dtype.kind == "i":
        return np.where(x >= 0, lut[np.clip(x, 0, 255)], x).astype(x.dtype)
    return lut[x]


def _map_tokens(tokens: np.ndarray, cell_index: np.ndarray, luts: np.ndarray) -> np.ndarray:
    out = np.empty((len(luts),) + tokens.shape, dtype=tokens.dtype)
    for p in range(len(luts)):
        out[p] = _lut(tokens[..., cell_index[p]], luts[p])
    return out


def _cell_index(t: Transforms) -> np.ndarray:
    """int64 [N, 81]: output cell i of transform n takes input cell index[n, i] (Transforms semantics:
    optional transpose, then out[r, c] = x[row_order[r], col_order[c]])."""
    cells = np.arange(SEQ_LEN)
    rows = t.row_order[:, cells // 9].astype(np.int64)  # source row in the (maybe transposed) grid
    cols = t.col_order[:, cells % 9].astype(np.int64)
    return np.where(np.asarray(t.transpose)[:, None], cols * 9 + rows, rows * 9 + cols)


def make_perturbations(kind: str = "shift", count: int = 9, seed: int = 0) -> Perturbations:
    """``count`` perturbations of ``kind`` (see hrm.evaluate's docstring); pass 0 is the identity.

    ``shift``: shifts 0..count-1 (count <= 9). ``relabel`` / ``symmetry``: passes 1.. are drawn
    from ``numpy.random.default_rng([PERTURB_STREAM, seed])``. ``swap`` (mazes, count <= 2): pass 1
    exchanges S and G, the fork's second maze pass.
    """
    if count < 1:
        raise ValueError(f"need at least 1 perturbation, got {count}")
    if kind == "swap":
        if count > 2:
            raise ValueError(f"a maze has 2 passes (as is, and with S and G exchanged), asked for {count}")
        maps = np.tile(np.arange(256, dtype=np.uint8), (count, 1))
        maps[1:, [maze.START, maze.GOAL]] = maps[1:, [maze.GOAL, maze.START]]
        return Perturbations(kind, maps, np.tile(np.arange(maze.SEQ_LEN, dtype=np.int64), (count, 1)))
    identity_cells = np.tile(np.arange(SEQ_LEN, dtype=np.int64), (count, 1))
    if kind == "shift":
        if count > 9:
            raise ValueError(f"there are only 9 cyclic digit shifts, asked for {count}")
        return Perturbations(kind, _digit_token_maps(digit_shift_maps(np.arange(count))), identity_cells)
    rng = np.random.default_rng([PERTURB_STREAM, seed])
    if kind == "relabel":
        maps = np.tile(np.arange(10, dtype=np.uint8), (count, 1))
        if count > 1:
            maps[1:, 1:] = (np.argsort(rng.random((count - 1, 9)), axis=1) + 1).astype(np.uint8)
        return Perturbations(kind, _digit_token_maps(maps), identity_cells)
    if kind == "symmetry":
        t = Transforms.identity(count)
        if count > 1:
            r = random_transforms(rng, count - 1)
            t = Transforms(*(np.concatenate([a[:1], b]) for a, b in zip(dataclasses.astuple(t), dataclasses.astuple(r))))
        return Perturbations(kind, _digit_token_maps(t.digit_map), _cell_index(t))
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {', '.join(PERTURBATIONS)}")

