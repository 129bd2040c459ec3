"""The P input perturbations of an evaluation (hrm.evaluate's docstring), each applied to input and
label alike, pass 0 the identity. Which kinds a task has, and how each is drawn, is the task's
(Task.make_perturbations: Sudoku's ``shift``, ``relabel`` and ``symmetry``, the mazes' ``swap``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def identity_cells(count: int, seq_len: int) -> np.ndarray:
    """int64 [count, seq_len]: every pass keeps every cell where it is."""
    return np.tile(np.arange(seq_len, dtype=np.int64), (count, 1))
