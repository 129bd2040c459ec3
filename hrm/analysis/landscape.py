"""The error landscape on the trajectory's principal plane (the fork's ``landscape.py`` / demo).

"The fork" is the Augmented HRM paper's code (README, "Reference code").

Exact definition, for one puzzle
--------------------------------
- PCA (2 components) of the puzzle's z_H states after every H update over all segments
  (:func:`hrm.analysis.traces.pca_basis`): unit directions d1, d2 in the flattened state space
  of D = (prefix + seq_len) x hidden numbers.
- Centre: the carry (z_H, z_L) after segment ``center_segment`` (the fork: the last segment).
- Grid: offsets (i, j) for i, j in -R..R; the point is z = z_H(centre) + scale * (i d1 + j d2),
  scale = sqrt(D) / ``divisor`` (the fork: sqrt(82 x 512) / 8).
- Error at a point: the Sudoku conflict count (excess repeats of digits per row, column and box)
  of argmax(lm_head(z)) over the 81 output cells (non-digit cells ignored), unclipped here (the
  fork clips its plot at 40). Cells decoded as blank or pad are not digits and never conflict,
  as in the fork; ``digits`` counts the cells decoded as digits. Mazes (``rules`` MAZE.rules): the
  error is the broken path cells of the decoded answer in its maze (hrm.maze.broken_path_cells) and
  ``digits`` counts the cells decoded as a path mark.
- Flow at a point: one segment run from (z, z_L(centre)) on the puzzle; the new z_H, projected:
  dest = ((z' - z_H(centre)) . (d1, d2)) / scale, in grid units. The arrow goes from (i, j) to dest.
- Trajectory: every traced z_H in the same coordinates, ((z_t - z_H(centre)) . (d1, d2)) / scale.
All grid points run through the model in batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
from dataclasses import dataclass

import numpy as np
import torch

from hrm.analysis.traces import NonFiniteError, decode, pca_basis, require_finite, run_segment

if TYPE_CHECKING:
    from hrm.tasks.base import EvalRules

__all__ = ["Landscape", "landscape"]


@dataclass
class Landscape:
    radius: int
    scale: float
    center_segment: int
    offsets: np.ndarray  # int [2R + 1]: -R..R
    conflicts: np.ndarray  # int64 [2R + 1, 2R + 1], indexed [j + R, i + R] (rows: PC2, columns: PC1): the task's errors
    digits: np.ndarray  # int16 [2R + 1, 2R + 1]: cells decoded as a digit (mazes: a path mark; EvalRules.marks)
    exact: np.ndarray | None  # bool [2R + 1, 2R + 1]: decoded answer equals the label (when labels given)
    dest: np.ndarray | None  # float32 [2R + 1, 2R + 1, 2]: where one segment takes the point (grid units)
    trajectory: np.ndarray  # float32 [T, 2]
    ratio: np.ndarray  # float32 [2]: explained variance ratios of the plane

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(I, J) [2R + 1, 2R + 1] coordinates matching ``conflicts``."""
        return np.meshgrid(self.offsets, self.offsets)


@torch.no_grad()
def landscape(model, inputs: np.ndarray, z_H_trace: torch.Tensor, center: tuple[torch.Tensor, torch.Tensor], *,
              center_segment: int = 0, labels: np.ndarray | None = None, radius: int = 20, divisor: float = 8.0,
              flow: bool = True, batch_size: int = 256, puzzle_identifier: int = 0,
              rules: EvalRules) -> Landscape:
    """The landscape of one puzzle: ``inputs`` tokens [81], ``z_H_trace`` [T, positions, hidden]
    (the PCA data), ``center`` = (z_H, z_L) [positions, hidden] (the carry after the centre segment)."""
    traj = z_H_trace.reshape(z_H_trace.shape[0], -1).to(torch.float32).cpu()
    basis = pca_basis(traj)  # components [2, D]
    d = traj.shape[1]
    scale = math.sqrt(d) / divisor
    c_h = center[0].reshape(-1).to(torch.float32).cpu()
    c_l = center[1].to(torch.float32).cpu()
    shape = center[0].shape

    x = np.asarray(inputs).reshape(1, -1)
    lab = None if labels is None else np.asarray(labels).reshape(1, -1).astype(np.int64)
    try:
        return _grid_landscape(model, x, lab, traj, basis, scale, c_h, c_l, shape, radius, center_segment, flow, batch_size,
                               puzzle_identifier, rules)
    except NonFiniteError as e:  # the grid's step is sqrt(D) / divisor: a tiny divisor puts it past float32
        raise NonFiniteError(f"the landscape's {e.what}", "--landscape-divisor") from None


def _grid_landscape(model, x, lab, traj, basis, scale, c_h, c_l, shape, radius, center_segment, flow, batch_size,
                    puzzle_identifier, rules) -> Landscape:
    comps = basis["components"]
    offsets = np.arange(-radius, radius + 1)
    jj, ii = np.meshgrid(offsets, offsets, indexing="ij")  # [n, n]: row j, column i
    coef = torch.as_tensor(np.stack([ii.ravel(), jj.ravel()], 1), dtype=torch.float32)  # [G, 2]
    g = coef.shape[0]
    conflicts = np.zeros(g, np.int64)
    digits = np.zeros(g, np.int16)
    exact = np.zeros(g, bool) if lab is not None else None
    dest = np.zeros((g, 2), np.float32) if flow else None
    for lo in range(0, g, batch_size):
        cf = coef[lo:lo + batch_size]
        z = c_h.unsqueeze(0) + (cf * scale) @ comps  # [b, D]
        require_finite(z, "grid states")
        z = z.reshape((cf.shape[0],) + tuple(shape))
        pred = decode(model, z).cpu().numpy()
        conflicts[lo:lo + cf.shape[0]] = rules.errors(x, pred)
        digits[lo:lo + cf.shape[0]] = rules.marks(pred)
        if exact is not None:
            exact[lo:lo + cf.shape[0]] = ((pred == lab) | (lab == -100)).all(-1)
        if flow:
            b = cf.shape[0]
            new_h, _, _, _, _ = run_segment(model, z, c_l.unsqueeze(0).expand(b, -1, -1), np.repeat(x, b, 0),
                                            np.full(b, puzzle_identifier))
            moved = new_h.reshape(b, -1).to(torch.float32).cpu() - c_h.unsqueeze(0)
            dest[lo:lo + b] = ((moved @ comps.T) / scale).numpy()
    if dest is not None and not np.isfinite(dest).all():
        raise NonFiniteError("flow arrows")
    n = len(offsets)
    trajectory = ((traj - c_h.unsqueeze(0)) @ comps.T / scale).numpy().astype(np.float32)
    return Landscape(
        radius=radius, scale=scale, center_segment=center_segment, offsets=offsets,
        conflicts=conflicts.reshape(n, n), digits=digits.reshape(n, n), exact=None if exact is None else exact.reshape(n, n),
        dest=None if dest is None else dest.reshape(n, n, 2), trajectory=trajectory,
        ratio=basis["ratio"].numpy().astype(np.float32),
    )
