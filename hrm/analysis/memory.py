"""How much memory :func:`hrm.analysis.analyze` will need, before it runs: :func:`estimate_memory`.

Counted from the code, array shape x dtype size, for the arrays whose size grows with a setting
(segments, batch size, rows, stored states, landscape radius, perturbed runs); what is already
resident when ``hrm analyze`` asks (the interpreter, the imported libraries, the model's weights)
is not counted: the estimate is the growth on top of the process as it is then. One constant
term, measured, not derived: the libraries imported on first use and torch's first-forward
buffers (FIRST_USE).

Every size per row comes from the model's architecture (hrm.model.base.Architecture.row_memory), for
any architecture and any sequence length: the steps per segment, the output cells, the numbers per
state and one forward step's activations. Notation: S segments, C steps per segment (HRM: H_cycles),
T = S x C steps, cells = seq_len output cells (81 for Sudoku, 900 for a maze), P = puzzle_emb_len +
seq_len positions, H = hidden_size, D = P x H numbers per state, B = puzzles per forward batch, N =
traced rows (the sample and the selected puzzles), K = rows whose z_H / z_L are kept.

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
  forward pass of B rows (activations, float32, as the architecture counts them; HRM: per position
  ~10 state-sized tensors, 4 of the SwiGLU width and the logits, plus heads x P x P attention scores twice).
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

from hrm.model.registry import architecture_for
from hrm.resources import available_memory_bytes, format_bytes

__all__ = ["MemoryEstimate", "PhaseEstimate", "estimate_memory", "available_memory_bytes", "format_bytes"]

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
# for a tiny model at 1-4 segments (tests/test_analyze_memory.py measures it the same way); 144 MB since
# a real run at 150 segments grew 2% past the estimate with 128 (2026-12-07: more code loads on first use).
FIRST_USE = 144 * 1000 * 1000


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


@dataclass(frozen=True)
class _Sizes:
    """The sizes the estimate multiplies: from the settings, the row counts and the architecture (RowMemory)."""

    s: int  # segments
    t: int  # steps = segments x steps per segment
    d: int  # numbers per state (positions x hidden)
    b: int  # rows per forward batch
    state: int  # one puzzle's z_H (or z_L) over every step, float32 bytes
    step_row: int  # per (step, puzzle) bytes besides the states
    segment_row: int  # per (segment, puzzle) bytes
    forward_row: int  # activations of one segment step per row


def _sizes(config, settings, n_rows: int) -> _Sizes:
    row = architecture_for(config).row_memory(config)  # the architecture's own sizes: steps, cells, state, activations
    s = int(settings.segments)
    t = s * row.steps_per_segment
    return _Sizes(s=s, t=t, d=row.state_numbers, b=max(1, min(int(settings.batch_size), n_rows)),
                  state=t * row.state_numbers * 4, step_row=per_step_row(row.cells), segment_row=per_segment_row(row.cells),
                  forward_row=row.forward_bytes)


def _trace_terms(z: _Sizes, settings, n_rows: int, n_selected: int) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
    """The traces phase: its terms, and the options that make each grow."""
    store_all = settings.store_states == "all"
    s, t, b, state = z.s, z.t, z.b, z.state
    kept_b = b if store_all else min(n_selected, b)
    # Kept after the traces: the summaries' per-segment arrays, the selected puzzles' states (views of
    # their batch's stacked states: with --store-states all, the whole batch stays).
    retained_rows = min(n_rows, n_selected * b) if store_all else n_selected
    terms = {
        # 3 copies (list, stack, centred) + 1 for the heap holes of the freed per-step states (glibc fragmentation).
        "trajectory PCA states": 4 * state * b,
        "trajectory PCA Gram matrices": 8 * t * t * (3 * b + 2),
        "stored states": 5 * 2 * state * kept_b,
        "per-step arrays": t * b * z.step_row + t * 5 * TENSOR_OVERHEAD + s * (b * z.segment_row + 6 * TENSOR_OVERHEAD),
        "forward pass": b * z.forward_row,
        "per-segment summaries": s * n_rows * SUMMARY_ROW,
        "selected puzzles' states": 2 * state * retained_rows + t * b * 8 * min(n_selected, n_rows),
    }
    tags = {
        "trajectory PCA states": ("--segments", "--batch-size"),
        "trajectory PCA Gram matrices": ("--segments", "--batch-size"),
        "stored states": ("--segments", "--store-states" if store_all else "--puzzle-index"),
        "per-step arrays": ("--segments", "--batch-size"),
        "forward pass": ("--batch-size",),
        "per-segment summaries": ("--segments", "--sample"),
        "selected puzzles' states": ("--segments", "--puzzle-index"),
    }
    return terms, tags


def _later_phases(z: _Sizes, settings, held: int, n_sample: int, n_selected: int
                  ) -> tuple[list[PhaseEstimate], dict[str, tuple[str, ...]]]:
    """The easy probe, multistability and landscape phases, each on top of ``held`` (what the traces keep)."""
    st, phases, tags = settings, [], {}

    def run_phase(name: str, rows: int) -> None:
        run = {f"{name} runs": z.s * (rows * z.segment_row + 6 * TENSOR_OVERHEAD) + (st.lookback + 3) * 2 * rows * z.d * 4,
               "forward pass": rows * z.forward_row}
        phases.append(PhaseEstimate(name, held + sum(run.values()), {"kept": held, **run}, ()))
        tags[f"{name} runs"] = ("--segments", "--batch-size")

    if st.runs_easy:
        run_phase("easy probe", max(1, min(int(st.batch_size), st.easy_sample or n_sample, n_sample)))
    if st.runs_multistability:
        r = max(1, st.shifts) + st.noise_runs * len(st.noise)
        per = max(1, int(st.batch_size) // r)
        run_phase("multistability", r * max(1, min(per, st.fp_sample or n_sample, n_sample)))
    if n_selected:
        grid = (2 * st.landscape_radius + 1) ** 2
        gb = min(grid, max(int(st.batch_size), 64))
        land = {"kept": held,
                "landscape PCA": 4 * z.state + 8 * z.t * z.t * 5,
                "landscape grid": grid * 40 + gb * z.d * 4 * 3 + gb * z.forward_row}
        phases.append(PhaseEstimate("landscapes", sum(land.values()), land, ()))
        tags["landscape PCA"] = ("--segments",)
        tags["landscape grid"] = ("--landscape-radius", "--batch-size")
    return phases, tags


def estimate_memory(config, settings, n_rows: int, n_selected: int, *, n_sample: int | None = None) -> MemoryEstimate:
    """The peak memory growth of ``analyze(model, source, sample_rows, selected, settings)`` per phase.

    ``config``: the model's config (its architecture gives the sizes per row: hrm.model.base.RowMemory);
    ``n_rows``: traced rows (the union of the sample and the selected rows); ``n_selected``: selected
    rows (landscapes); ``n_sample``: the sample's size (default ``n_rows``).
    """
    st = settings
    n_sample = n_rows if n_sample is None else n_sample
    z = _sizes(config, st, n_rows)
    terms, tags = _trace_terms(z, st, n_rows, n_selected)
    phases = [PhaseEstimate("traces", sum(terms.values()), terms, ())]
    held = terms["per-segment summaries"] + terms["selected puzzles' states"]
    tables = z.s * PER_SEGMENT_TABLE
    phases.append(PhaseEstimate("summaries", held + tables, {"per-segment summaries": held, "summary tables": tables}, ()))
    tags["summary tables"] = ("--segments",)
    later, later_tags = _later_phases(z, st, held + tables, n_sample, n_selected)
    phases += later
    tags.update(later_tags)
    tags["kept"] = ("--segments", "--sample")
    for ph in phases:
        ph.terms["libraries and buffers on first use"] = FIRST_USE
        ph.bytes += FIRST_USE
        top = max(ph.terms, key=lambda k: ph.terms[k])
        ph.options = tags.get(top, ())
    values = {"--segments": z.s, "--batch-size": int(st.batch_size), "--sample": n_sample,
              "--puzzle-index": f"({n_selected} puzzle{'s' if n_selected != 1 else ''})", "--store-states": st.store_states,
              "--landscape-radius": st.landscape_radius}
    return MemoryEstimate(phases=phases, values=values)
