"""Figures (PNG, matplotlib, Agg back end). Every function takes the data and an explicit path.

matplotlib is imported on first use, so importing hrm.analysis stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_trajectory", "plot_landscape", "plot_residuals", "plot_critical", "plot_easy", "plot_multistability",
           "plot_grid_segments"]

DPI = 110
_META = {"Software": None}  # no version string in the file: same data, same bytes for a given matplotlib


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG with no version string (same data, same bytes for a given matplotlib) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=_META)
    pyplot().close(fig)
    return path


def plot_trajectory(scores: np.ndarray, path: str | os.PathLike, *, h_cycles: int = 1, title: str = "Reasoning trajectory",
                    ratio: Sequence[float] | None = None) -> Path:
    """Arrows between successive PCA coordinates [T, 2] of a z_H trajectory, coloured by step;
    segment ends (every ``h_cycles`` steps) marked with dots."""
    plt = pyplot()
    scores = np.asarray(scores, dtype=np.float64)
    t = scores.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 5.2), layout="constrained")
    cmap = plt.get_cmap("plasma")
    if t >= 2:
        colors = cmap(np.linspace(0, 1, t - 1))
        d = np.diff(scores, axis=0)
        ax.quiver(scores[:-1, 0], scores[:-1, 1], d[:, 0], d[:, 1], color=colors, angles="xy", scale_units="xy",
                  scale=1, width=0.006, headwidth=4, headlength=5, zorder=2)
    ends = scores[h_cycles - 1::h_cycles]
    ax.scatter(ends[:, 0], ends[:, 1], s=12, c="k", zorder=3, label="segment end")
    ax.scatter(scores[:1, 0], scores[:1, 1], s=40, marker="s", c=[cmap(0.0)], edgecolors="k", zorder=4, label="step 1")
    ax.scatter(scores[-1:, 0], scores[-1:, 1], s=60, marker="*", c=[cmap(1.0)], edgecolors="k", zorder=4,
               label=f"step {t}")
    lo, hi = scores.min(0), scores.max(0)
    mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * 1.1
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_aspect("equal", adjustable="box")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vmin=1, vmax=max(t, 2)))
    fig.colorbar(sm, ax=ax, shrink=0.85, label="Reasoning step (H update)")
    pct = ["", ""] if ratio is None else [f" ({100 * float(v):.0f}% of variance)" for v in ratio[:2]]
    ax.set(xlabel="PC1" + pct[0], ylabel="PC2" + pct[1], title=title)
    ax.grid(True, alpha=0.2)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_landscape(land, path: str | os.PathLike, *, clip: float = 0, arrow_stride: int = 0,
                   title: str = "Error landscape on the principal plane", error_label: str = "Sudoku conflicts") -> Path:
    """Conflict-count heat map on the PC1/PC2 grid, the trajectory, one-step flow arrows (every
    ``arrow_stride``-th grid point per axis; 0 = about 10 per axis) and the cells where the decoded
    answer is exactly right (outlined). The colour scale spans the grid's own conflict counts
    (``clip`` 0), or 0..``clip`` with counts above it capped (the fork: 40), which a badly trained
    model's grid (all above 40) shows as one colour. ``error_label``: what the counts are (mazes: broken
    path cells)."""
    plt = pyplot()
    r = land.radius
    extent = (-r - 0.5, r + 0.5, -r - 0.5, r + 0.5)
    fig, ax = plt.subplots(figsize=(6.8, 6.0), layout="constrained")
    conflicts = np.asarray(land.conflicts)
    if clip > 0:
        shown, lo, hi, label = np.minimum(conflicts, clip), 0, clip, f"{error_label} (capped at {clip:g})"
    else:
        lo, hi = float(conflicts.min()), float(conflicts.max())
        shown, hi, label = conflicts, (hi if hi > lo else lo + 1), error_label
    im = ax.imshow(shown, origin="lower", extent=extent, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    if land.exact is not None and land.exact.any():
        ax.contour(land.offsets, land.offsets, land.exact.astype(float), levels=[0.5], colors="white",
                   linewidths=1.2, linestyles="--")
    if land.dest is not None:
        stride = arrow_stride if arrow_stride > 0 else max(1, (2 * r + 1) // 10)
        i_grid, j_grid = land.grid()
        sl = (slice(r % stride, None, stride), slice(r % stride, None, stride))
        x0, y0 = i_grid[sl].ravel(), j_grid[sl].ravel()
        d = land.dest[sl].reshape(-1, 2) - np.stack([x0, y0], 1)
        ax.quiver(x0, y0, d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color="cyan", width=0.004,
                  zorder=3)
    tr = land.trajectory
    ax.plot(tr[:, 0], tr[:, 1], color="red", lw=1.5, marker="o", ms=3, zorder=4, label="trajectory")
    ax.scatter([0], [0], marker="*", s=120, c="white", edgecolors="k", zorder=5,
               label=f"centre (segment {land.center_segment})")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set(xlabel=f"PC1 (x {land.scale:.3g})", ylabel=f"PC2 (x {land.scale:.3g})", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_residuals(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Median (and quartile band) segment residual of z_H and z_L vs segment, all / correct / wrong."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained", sharey=True)
    styles = {"all": ("k", "-"), "correct": ("tab:green", "--"), "wrong": ("tab:red", ":")}
    for ax, name in zip(axes, ("res_H", "res_L")):
        for group, (color, ls) in styles.items():
            rs = [r for r in rows if r["group"] == group]
            if not rs:
                continue
            s = np.array([r["segment"] for r in rs])
            med = np.array([r[f"{name}_median"] for r in rs])
            ax.plot(s, med, color=color, ls=ls, marker="o", ms=3, label=f"{group} (n={rs[0]['n']})")
            ax.fill_between(s, [r[f"{name}_q25"] for r in rs], [r[f"{name}_q75"] for r in rs], color=color, alpha=0.12)
        ax.set_yscale("log")
        ax.set(xlabel="segment", title=f"{'z_H' if name == 'res_H' else 'z_L'}: ||z(s) - z(s-1)|| / ||z(s-1)||")
        ax.grid(True, alpha=0.3, which="both")
    axes[0].set_ylabel("relative residual (median, quartiles)")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_critical(rows: list[dict[str, Any]], path: str | os.PathLike, aligned: list[dict[str, Any]] | None = None) -> Path:
    """Histogram of the critical step (plus 'never'); with ``aligned``, the blank-cell accuracy
    around the critical step as a second panel."""
    plt = pyplot()
    ncols = 2 if aligned else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4), layout="constrained", squeeze=False)
    ax = axes[0, 0]
    labels = [r["label"] for r in rows]
    counts = [r["count"] for r in rows]
    colors = ["tab:blue"] * (len(rows) - 1) + ["tab:gray"]
    ax.bar(range(len(rows)), counts, color=colors)
    ax.set_xticks(range(len(rows)), labels, rotation=90 if len(rows) > 20 else 0, fontsize=8)
    ax.set(xlabel="critical segment (answer correct from here on)", ylabel="puzzles", title="Critical step")
    if aligned:
        ax2 = axes[0, 1]
        pts = [(r["offset"], r["blank_acc"]) for r in aligned if r["blank_acc"] is not None]
        if pts:
            o, a = zip(*pts)
            ax2.plot(o, a, marker="o")
        ax2.axvline(0, color="gray", ls="--")
        ax2.set(xlabel="segment - critical segment", ylabel="mean blank-cell accuracy", ylim=(-0.02, 1.02),
                title="Accuracy around the critical step")
        ax2.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_easy(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Exact accuracy (and violation rate) vs k, the number of cells left blank."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ks = [r["k"] for r in rows]
    ax.plot(ks, [r["exact"] for r in rows], marker="o", label="exact accuracy")
    if any(r.get("exact_if_solved") is not None for r in rows):
        ax.plot(ks, [r.get("exact_if_solved") for r in rows], marker=".", ls="--", label="on originally solved")
        ax.plot(ks, [r.get("exact_if_unsolved") for r in rows], marker=".", ls=":", label="on originally unsolved")
    ax.plot(ks, [r["violation_rate"] for r in rows], marker="x", color="tab:red", alpha=0.7,
            label="fixed-point violations")
    if ks and max(ks) > 0:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="cells left blank (k)", ylabel="fraction", ylim=(-0.02, 1.02), title="Easy-puzzle probe")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_multistability(n_answers: np.ndarray, n_stable: np.ndarray, path: str | os.PathLike) -> Path:
    """Puzzles by number of distinct end answers over the perturbed runs (all runs / converged runs)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    top = int(max(np.max(n_answers, initial=1), np.max(n_stable, initial=1)))
    x = np.arange(0, top + 1)
    a = np.bincount(np.asarray(n_answers, np.int64), minlength=top + 1)
    s = np.bincount(np.asarray(n_stable, np.int64), minlength=top + 1)
    ax.bar(x - 0.2, a, width=0.4, label="all runs")
    ax.bar(x + 0.2, s, width=0.4, label="converged runs")
    ax.set_xticks(x)
    ax.set(xlabel="distinct final answers per puzzle", ylabel="puzzles", title="Multiple fixed points")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_grid_segments(grids: Sequence[np.ndarray], titles: Sequence[str], palette: Sequence[str],
                       path: str | os.PathLike, title: str) -> Path:
    """Colour grids side by side (an input, its label, then the model's answer after each segment: the
    intermediate reasoning steps); ``palette[c]`` draws colour c; an empty grid (no answer read) is left blank."""
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(1.7 * len(grids), 2.2), layout="constrained", squeeze=False)
    cmap = ListedColormap(list(palette))
    for ax, grid, name in zip(axes[0], grids, titles):
        if grid.size:
            ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(palette) - 1, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
