"""How much memory :func:`hrm.analysis.analyze` will need, before it runs: :func:`estimate_memory`.

Counted from the code, array shape x dtype size, for the arrays whose size grows with a setting
(segments, batch size, rows, stored states, landscape radius, perturbed runs); what is already
resident when ``hrm analyze`` asks (the interpreter, the imported libraries, the model's weights)
is not counted: the estimate is the growth on top of the process as it is then. One constant
term, measured, not derived: the libraries imported on first use and torch's first-forward
buffers (FIRST_USE).

Notation: S segments, C = H_cycles, T = S x C steps, P = puzzle_emb_len + seq_len positions, H =
hidden_size, D = P x H numbers per state, B = puzzles per forward batch, N = traced rows (the
sample and the selected puzzles), K = rows whose z_H / z_L are kept.

Per phase (each is what that phase holds at its peak, on top of what the earlier phases keep):

- ``traces`` (one batch of B puzzles at a time; :func:`~hrm.analysis.traces.run_trace`):
  the trajectory PCA keeps every step's z_H (float32, T x B x D x 4 bytes), stacks it (a copy)
  and centres it (another): 3 x, plus one more for the heap holes the freed per-step states leave
  (glibc's fragmentation; measured, not derived): 4 x; its T x T Gram matrix per puzzle, float64, with the
  eigenvectors, their flipped copy and LAPACK's workspace: 8 x T^2 x (3B + 2). The kept states
  (z_H and z_L, float32) of the batch: listed, stacked, then copied again into the Arrow table:
  5 x 2 x T x K_b x D x 4. Per (step, puzzle): the predictions (uint8 [T, B, cells], torch list +
  numpy copy), their scoring, conflict and change masks and the per-step table:
  PER_STEP_ROW bytes; per (segment, puzzle): the segment answers and their scores,
  PER_SEGMENT_ROW; per step, the small torch tensors of the lists (TENSOR_OVERHEAD each). And one
  forward pass of B rows (activations, float32).
  Kept across batches: per (segment, row) the summaries' [S, N] arrays (19 bytes, concatenated
  and sliced: x 4) and the z_H / z_L of the selected puzzles for the landscapes.
- ``summaries``: per segment, the residual / critical tables as Python rows (PER_SEGMENT_TABLE).
- ``easy``, ``multistability``: :func:`run_trace` without steps on B (or R x batch_size // R)
  rows: per (segment, row) PER_SEGMENT_ROW, and a forward pass.
- ``landscapes`` (one selected puzzle at a time): its PCA (centred copies and a float64 copy of
  the states, 4 x T x D x 4; the T x T Gram 8 x T^2 x 5) and the grid's forward batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hrm.model.layers import swiglu_width
from hrm.resources import available_memory_bytes, format_bytes

__all__ = ["MemoryEstimate", "PhaseEstimate", "estimate_memory", "available_memory_bytes", "format_bytes"]

SEQ_OUT = 81  # output cells per puzzle when the config does not say (Sudoku's)


def per_step_row(cells: int) -> int:
    """Bytes per (step, puzzle) besides the states, for puzzles of ``cells`` output cells: predictions
    uint8 (torch list + numpy stack = 2 x cells), score_predictions' int16 copy and five bool masks
    (7 x cells), the error count's int16 / bool / uint8 copies (4 x cells), the change mask (cells), the
    per-step table's prediction column and its transposed copy (2 x cells); residuals, norms and PCA
    scores (4 x 4 x 2 + 8) and the table's ~25 other columns (~120)."""
    return cells * 16 + 40 + 120


def per_segment_row(cells: int) -> int:
    """Bytes per (segment, puzzle) of a run: answers uint8 (list + stack: 2 x cells), scoring (7 x cells),
    blank errors (2 x cells), answer changes (2 x cells); Q values and residuals (5 x 4 x 2)."""
    return cells * 13 + 40


# One small torch tensor in a per-step list (Python object, TensorImpl, storage, allocator block).
TENSOR_OVERHEAD = 512
# Per segment, the Python rows of the summary tables: the wide residual row (22 keys), three long
# residual rows (9 keys), a critical-histogram row and two aligned-curve rows, floats included.
PER_SEGMENT_TABLE = 8192
# Per (segment, traced row) kept for the summaries: exact bool, blank_acc f32, blank_wrong i16, res_H /
# res_L / res f32 = 19 bytes; the per-batch lists, their concatenation and the sample's slices: x 4.
SUMMARY_ROW = 19 * 4
# What a run adds whatever its size: the libraries the stage imports on first use (plots, Parquet
# writers) and torch's first-forward buffers. Measured, not derived: 106-113 MB of resident growth
# for a tiny model at 1-4 segments (tests/test_analyze_memory.py measures it the same way).
FIRST_USE = 128 * 1000 * 1000


@dataclass
class PhaseEstimate:
    name: str
    bytes: int
    terms: dict[str, int]  # what makes it up
    options: tuple[str, ...]  # the options that make the largest term grow


@dataclass
class MemoryEstimate:
    phases: list[PhaseEstimate]
    values: dict[str, Any] = field(default_factory=dict)  # the option values behind it (for the message)

    @property
    def peak(self) -> PhaseEstimate:
        return max(self.phases, key=lambda p: p.bytes)

    @property
    def bytes(self) -> int:
        return self.peak.bytes

    def settings(self) -> str:
        """The values of the options behind the peak: ``--segments 800 x --batch-size 64``."""
        return " x ".join(f"{o} {self.values[o]}" for o in self.peak.options if o in self.values)

    def describe(self, verb: str = "") -> str:
        """``--segments 800 x --batch-size 64: about 1.2 GB[ verb] for the traces``."""
        what, p = self.settings(), self.peak
        return f"{what + ': ' if what else ''}about {format_bytes(p.bytes)}{' ' + verb if verb else ''} for the {p.name}"


def _config(config, name: str, default: Any) -> Any:
    return getattr(config, name, default)


def _forward(rows: int, p: int, h: int, heads: int, inter: int, vocab: int) -> int:
    """Activations of one segment step on ``rows`` rows (float32): per position ~10 state-sized tensors
    (q, k, v, rotary copies, attention output, projection, residual, norm), 4 of the SwiGLU width and the
    LM head's logits; the attention scores (heads x P x P, twice: scores and softmax)."""
    return rows * 4 * (p * (10 * h + 4 * inter + vocab) + 2 * heads * p * p)


def estimate_memory(config, settings, n_rows: int, n_selected: int, *, n_sample: int | None = None) -> MemoryEstimate:
    """The peak memory growth of ``analyze(model, source, sample_rows, selected, settings)`` per phase.

    ``config``: the model's HRMConfig; ``n_rows``: traced rows (the union of the sample and the
    selected rows); ``n_selected``: selected rows (landscapes); ``n_sample``: the sample's size
    (default ``n_rows``).
    """
    st = settings
    n_sample = n_rows if n_sample is None else n_sample
    c = int(_config(config, "H_cycles", 2))
    s = int(st.segments)
    t = s * c
    cells = int(_config(config, "seq_len", SEQ_OUT))  # 81 for Sudoku, 900 for mazes
    p = cells + int(_config(config, "puzzle_emb_len", 0))
    step_row, segment_row = per_step_row(cells), per_segment_row(cells)
    h = int(_config(config, "hidden_size", 512))
    d = p * h
    heads = int(_config(config, "num_heads", 8))
    inter = swiglu_width(h, float(_config(config, "expansion", 4)))
    vocab = int(_config(config, "vocab_size", 11))
    b = max(1, min(int(st.batch_size), n_rows))
    store_all = st.store_states == "all"
    kept_b = b if store_all else min(n_selected, b)
    state = t * d * 4  # one puzzle's z_H (or z_L) over every step, float32

    # Kept after the traces: the summaries' per-segment arrays, the selected puzzles' states (views of
    # their batch's stacked states: with --store-states all, the whole batch stays).
    retained_rows = min(n_rows, n_selected * b) if store_all else n_selected
    kept_summary = s * n_rows * SUMMARY_ROW
    kept_states = 2 * state * retained_rows + t * b * 8 * min(n_selected, n_rows)
    terms = {
        # 3 copies (list, stack, centred) + 1 for the heap holes of the freed per-step states (glibc fragmentation).
        "trajectory PCA states": 4 * state * b,
        "trajectory PCA Gram matrices": 8 * t * t * (3 * b + 2),
        "stored states": 5 * 2 * state * kept_b,
        "per-step arrays": t * b * step_row + t * 5 * TENSOR_OVERHEAD + s * (b * segment_row + 6 * TENSOR_OVERHEAD),
        "forward pass": _forward(b, p, h, heads, inter, vocab),
        "per-segment summaries": kept_summary,
        "selected puzzles' states": kept_states,
    }
    phases = [PhaseEstimate("traces", sum(terms.values()), terms, ())]
    tags = {
        "trajectory PCA states": ("--segments", "--batch-size"),
        "trajectory PCA Gram matrices": ("--segments", "--batch-size"),
        "stored states": ("--segments", "--store-states" if store_all else "--puzzle-index"),
        "per-step arrays": ("--segments", "--batch-size"),
        "forward pass": ("--batch-size",),
        "per-segment summaries": ("--segments", "--sample"),
        "selected puzzles' states": ("--segments", "--puzzle-index"),
    }
    held = kept_summary + kept_states
    tables = s * PER_SEGMENT_TABLE
    phases.append(PhaseEstimate("summaries", held + tables, {"per-segment summaries": held, "summary tables": tables}, ()))
    tags["summary tables"] = ("--segments",)
    held += tables

    def run_phase(name: str, rows: int) -> None:
        run = {f"{name} runs": s * (rows * segment_row + 6 * TENSOR_OVERHEAD) + (st.lookback + 3) * 2 * rows * d * 4,
               "forward pass": _forward(rows, p, h, heads, inter, vocab)}
        phases.append(PhaseEstimate(name, held + sum(run.values()), {"kept": held, **run}, ()))

    if st.runs_easy:
        run_phase("easy probe", max(1, min(int(st.batch_size), st.easy_sample or n_sample, n_sample)))
        tags["easy probe runs"] = ("--segments", "--batch-size")
    if st.runs_multistability:
        r = max(1, st.shifts) + st.noise_runs * len(st.noise)
        per = max(1, int(st.batch_size) // r)
        run_phase("multistability", r * max(1, min(per, st.fp_sample or n_sample, n_sample)))
        tags["multistability runs"] = ("--segments", "--batch-size")
    if n_selected:
        grid = (2 * st.landscape_radius + 1) ** 2
        gb = min(grid, max(int(st.batch_size), 64))
        land = {"kept": held,
                "landscape PCA": 4 * state + 8 * t * t * 5,
                "landscape grid": grid * 40 + gb * d * 4 * 3 + _forward(gb, p, h, heads, inter, vocab)}
        phases.append(PhaseEstimate("landscapes", sum(land.values()), land, ()))
        tags["landscape PCA"] = ("--segments",)
        tags["landscape grid"] = ("--landscape-radius", "--batch-size")
    tags["kept"] = ("--segments", "--sample")
    for ph in phases:
        ph.terms["libraries and buffers on first use"] = FIRST_USE
        ph.bytes += FIRST_USE
        top = max(ph.terms, key=lambda k: ph.terms[k])
        ph.options = tags.get(top, ())
    values = {"--segments": s, "--batch-size": int(st.batch_size), "--sample": n_sample,
              "--puzzle-index": f"({n_selected} puzzle{'s' if n_selected != 1 else ''})", "--store-states": st.store_states,
              "--landscape-radius": st.landscape_radius}
    return MemoryEstimate(phases=phases, values=values)
