"""Evaluation: batched inference over checkpoints x perturbations, voting, a verifier, calibration, tiers.

Pure library (arrays and tensors in and out); ``hrm evaluate`` (pipelines/evaluate.py) reads
checkpoints and datasets and writes the files. docs/reference-semantics.md §2, §6 and §9.

The pieces
----------
- :class:`Perturbations`: P input perturbations, each applied to input and label alike
  (the same P for every puzzle; pass 0 is always the identity):
  ``shift`` the fork's 9 cyclic digit shifts (token t -> ((t - 2 + p) mod 9) + 2; the fork =
  the Augmented HRM paper's code, README "Reference code"),
  ``relabel`` random digit relabellings, ``symmetry`` random full Sudoku symmetries
  (relabelling + transpose + band/row + stack/column orders). Seeded.
- :class:`Engine`: K models -> per pass the final answer, the halting decision, Q values,
  per-cell confidences and the exact correctness after every ACT segment. Each checkpoint
  sees all P perturbed copies of a batch of puzzles as one batch (``max_rows`` caps the rows
  per forward). Paper semantics: every row runs halt_max_steps segments and ``halted`` is
  the model's own decision (q_halt > q_continue) at the last one. ``early_stop=True`` is a
  different setting: a row stops at the first segment where q_halt > q_continue (its answer
  is that segment's), rows that never halt stop at halt_max_steps with ``halted`` False.
- :func:`evaluate_puzzles`: streams puzzles through the engine in batches and collects an
  :class:`EvalResult`, from which :meth:`EvalResult.summary` and :meth:`EvalResult.tables`
  give the numbers.

Exact definitions (N puzzles, K checkpoints in the given order, P passes)
-----------------------------------------------------------------------
- A pass is *correct* when its final prediction equals the label on every labelled cell
  (all 81 for Sudoku). Compared in the perturbed space, which is the same as comparing the
  answer mapped back to original digits and cells (perturbations are bijections).
- *baseline*: the primary checkpoint (the last of the K) on pass 0 (unperturbed): the
  plain single-model number (exact accuracy, official ``accuracy`` = mean per-puzzle
  fraction of labelled cells right, blank-cell accuracy = right blank cells / blank cells,
  halting rate, ``q_halt_accuracy`` = mean of (q_halt >= 0) == correct as the official metric,
  i.e. sigmoid(q_halt) >= 0.5).
- ``paper_vote`` (the fork's rule, reads the labels): for checkpoint k, count the passes
  that are correct AND halted; k solves the puzzle when 2 x counted > number of halted
  passes of k (strictly more than half; no halted pass -> not solved). The puzzle is solved
  when ANY checkpoint solves it.
- ``label_free`` (reads no label): every pass's answer is mapped back to original digits
  and cells. Pool = the passes that halted; if none halted, all passes. Within the pool,
  if some answer passes the verifier (a valid complete grid that agrees with the givens),
  only verified answers stay eligible. Among eligible answers pick the one given by the most
  pool passes; ties -> the highest mean sigmoid(q_halt) over the pool passes that gave it;
  remaining ties -> the answer of the first pass in (checkpoint, pass) order. Accuracy of
  that single answer against the label.
- ``verified_any``: fraction of puzzles for which at least one pass (halted or not) produced
  a verified answer. For puzzles with a unique solution (all of Sudoku-Extreme) a verified
  answer IS the solution, so this is the ceiling of any verifier-based selection.
- Curves: subset (k', p') = the LAST k' checkpoints (k' = 1 is the primary one) and the
  FIRST p' passes (p' = 1 is the unperturbed input); every k' x p' is computed.
- Early-stop view (``summary()["early_stop_view"]``): the same passes read at the first
  segment where q_halt > q_continue (else the last), i.e. what ``early_stop=True`` returns,
  at no extra cost; reported apart from the paper's numbers.
- Per segment: exact accuracy of the answer after segment s = 1..S (argmax of that
  segment's logits; frozen after an early stop). ``stable_from``: the first segment from
  which the answer is right and stays right to the end (0 = never): the "critical step"
  (:func:`critical_step`, which hrm.analysis uses too).
- Calibration: sigmoid(q_halt) at the final segment vs exact correctness, and per-cell
  max-softmax probability at the final segment vs cell correctness over blank cells:
  equal-width bins on [0, 1], ECE = sum_b n_b / n * |acc_b - conf_b|, Pearson r, Brier score.

Mazes (:data:`MAZE_RULES`; Sudoku's are :data:`SUDOKU_RULES`, the default, one code path): the
``swap`` perturbation (at most 2 passes, pass 1 exchanges S and G in input and label, the fork's);
``paper_vote`` is the fork's maze rule (any pass of any checkpoint exactly right, halting not
required); the verifier is ``hrm.maze.verify_paths`` (an optimal S-G path, no label read); the
"blank" cells are the open cells; easy tiers leave k path cells unmarked; the analysis' error
measure is ``hrm.maze.broken_path_cells``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from hrm import maze
from hrm.model.hrm import InnerCarry, initial_inner_carry, run_segments
from hrm.rng import PERTURB as PERTURB_STREAM, TIER as TIER_STREAM  # the seed's stream ids: hrm/rng.py
from hrm.encoding import IGNORE_LABEL
from hrm.sudoku import (
    BLANK_TOKEN,
    SEQ_LEN,
    agrees_with_givens,
    digit_shift_maps,
    is_valid_solution,
    random_transforms,
    Transforms,
)

__all__ = [
    "PERTURBATIONS", "PERTURB_STREAM", "TIER_STREAM", "RATING_EDGES", "BLANK_EDGES",
    "Perturbations", "make_perturbations",
    "Engine", "EngineOutput", "evaluate_puzzles", "EvalResult",
    "paper_vote", "any_pass_solves", "label_free_select", "Selection", "verifier", "maze_verifier",
    "TaskRules", "SUDOKU_RULES", "MAZE_RULES", "task_rules", "reveal_tier", "reveal_tier_rows", "parse_tiers", "tier_name", "critical_step",
    "Histogram", "calibration", "Runner",
]

PERTURBATIONS = ("shift", "relabel", "symmetry", "swap")  # swap: mazes' (the others: Sudoku's)
# Rating (backtracks) buckets [edge_i, edge_{i+1}); the last is open. Blank-count buckets likewise.
RATING_EDGES: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
BLANK_EDGES: tuple[int, ...] = (0, 6, 11, 21, 31, 41, 51, 56, 61, 65)


# ============================================================================ perturbations


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
    """``count`` perturbations of ``kind`` (see the module docstring); pass 0 is the identity.

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


# ============================================================================ engine


@dataclass
class EngineOutput:
    """What the engine returns for M input rows and K models (numpy, on the CPU)."""

    predictions: np.ndarray  # uint8 [K, M, 81]: final answer tokens
    q_halt: np.ndarray  # float32 [K, M]: at the final (or stopping) segment
    q_continue: np.ndarray  # float32 [K, M]
    halted: np.ndarray  # bool [K, M]: q_halt > q_continue at the final (or stopping) segment
    steps: np.ndarray  # int16 [K, M]: segments run
    confidence: np.ndarray  # float32 [K, M, 81]: max softmax probability at the final segment
    segment_halted: np.ndarray  # bool [K, S, M]: q_halt > q_continue after segment s (early stop: stays True)
    segment_correct: np.ndarray | None = None  # bool [K, S, M]: exact after segment s (needs labels)
    segment_predictions: np.ndarray | None = None  # uint8 [K, S, M, 81] when asked for


class Runner(Protocol):
    """What :func:`evaluate_puzzles` needs; :class:`Engine` is the real one (tests may fake it)."""

    num_models: int
    segments: int

    def run(self, inputs: np.ndarray, labels: np.ndarray | None = None, *, early_stop: bool = False) -> EngineOutput: ...


def segment_flops(model: torch.nn.Module) -> float:
    """Multiply-add FLOPs of one ACT segment of one row, as the model's architecture counts them
    (hrm.model.base.Architecture.segment_flops): the unit of work an early exit saves. A pass of the
    paper's procedure is ``halt_max_steps`` of them."""
    from hrm.model.registry import architecture_of

    return architecture_of(model).segment_flops(model.config)


def auto_max_rows(device: torch.device | str) -> int | None:
    """Rows per forward when the user sets none.

    On a CPU the model is compute-bound and chunks whose activations stay cache-sized run
    faster per row than one big batch (quick profile, 2 threads: 32 rows 12.6 s vs 144
    rows 17.9 s for the same passes); an accelerator takes every row at once.
    """
    return 32 if torch.device(device).type == "cpu" else None


class Engine:
    """Batched inference for K HRM checkpoints of one architecture (seq_len, vocab, halt_max_steps).

    ``run(inputs [M, 81])``: every model sees the M rows (e.g. P perturbed copies of B puzzles,
    concatenated), ``max_rows`` rows per forward (None: all at once). Runs on the models' device
    (all K must share it), segment by segment through the models' inner modules under
    ``torch.inference_mode``: the numbers of ``HRM.predict`` without keeping every segment's logits.

    ``compile=True``: one ``torch.compile``d functional segment shared by all K checkpoints
    (weights passed as inputs, so they do not trigger recompilation; with ``max_rows`` every
    chunk is padded to that many rows, else a second row count compiles a dynamic-shape
    version once). Numerically close to eager, not bit-identical. Eager with ``early_stop``.
    """

    def __init__(self, models: Sequence[torch.nn.Module], *, max_rows: int | None = None, compile: bool = False):
        if not models:
            raise ValueError("need at least one model")
        self.models = list(models)
        cfgs = [m.config for m in self.models]
        for name in ("seq_len", "vocab_size", "halt_max_steps"):
            values = {getattr(c, name) for c in cfgs}
            if len(values) > 1:
                raise ValueError(f"checkpoints disagree on {name}: {sorted(values)}")
        devices = {m.device for m in self.models}
        if len(devices) > 1:
            raise ValueError(f"models are on different devices: {devices}")
        self.device = devices.pop()
        self.config = cfgs[0]
        self.num_models = len(self.models)
        self.segments = self.config.halt_max_steps
        self.max_rows = max_rows if max_rows and max_rows > 0 else None
        self.compile = bool(compile)
        self._compiled = None
        if self.compile and len({_config_key(c.to_dict()) for c in cfgs}) > 1:
            raise ValueError("compile=True needs checkpoints of one architecture (identical configs)")

    def _forward(self, inner, early_stop: bool = False) -> Callable:
        """One segment of one model, with the call signature of ``inner`` (HRMInner)."""
        if not self.compile or early_stop:
            return inner
        if self._compiled is None:
            import copy

            from torch.func import functional_call

            # A weightless copy: every call swaps in one checkpoint's tensors (no guard on identity).
            base = copy.deepcopy(self.models[0].inner).to("meta")

            def step(state, z_h, z_l, x, ids):
                carry, logits, (qh, qc) = functional_call(base, state, (InnerCarry(z_h, z_l), {"inputs": x, "puzzle_identifiers": ids}))
                return carry.z_H, carry.z_L, logits, qh, qc
            self._compiled = torch.compile(step)
        state = {**dict(inner.named_parameters()), **dict(inner.named_buffers())}
        compiled = self._compiled

        def segment(carry, batch, trace=None):
            z_h, z_l, logits, qh, qc = compiled(state, carry.z_H, carry.z_L, batch["inputs"], batch["puzzle_identifiers"])
            return InnerCarry(z_h, z_l), logits, (qh, qc)
        return segment

    def run(self, inputs, labels=None, *, early_stop: bool = False, segments: int | None = None,
            keep_segment_predictions: bool = False) -> EngineOutput:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.int32)
        lab = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        m = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.config.seq_len:
            raise ValueError(f"inputs must be [M, {self.config.seq_len}], got {list(x.shape)}")
        if m and (int(x.min()) < 0 or int(x.max()) >= self.config.vocab_size):
            raise ValueError(f"inputs hold tokens outside 0..{self.config.vocab_size - 1}")
        if lab is not None and lab.shape != x.shape:
            raise ValueError(f"labels must have the shape of inputs {list(x.shape)}, got {list(lab.shape)}")
        s_count = self.segments if segments is None else int(segments)
        if s_count < 1:
            raise ValueError("segments must be >= 1")
        chunk = self.max_rows or max(m, 1)
        pad_to = self.max_rows if (self.compile and not early_stop) else None
        empty = [_empty_rows(s_count, self.config.seq_len, lab is not None, keep_segment_predictions)]
        parts: list[list[dict[str, np.ndarray]]] = []
        for model in self.models:
            was_training = model.training
            model.eval()
            try:
                forward = self._forward(model.inner, early_stop)
                with torch.inference_mode():
                    if early_stop:  # one queue of all M rows, ``chunk`` of them in the batch at a time
                        parts.append([_run_rows_continuous(
                            model.inner, forward, x.to(self.device), None if lab is None else lab.to(self.device),
                            s_count, keep_segment_predictions, chunk)] if m else empty)
                        continue
                    parts.append([
                        _run_rows(model.inner, forward, x[i:i + chunk].to(self.device),
                                  None if lab is None else lab[i:i + chunk].to(self.device),
                                  s_count, keep_segment_predictions, pad_to)
                        for i in range(0, m, chunk)
                    ] or empty)
            finally:
                model.train(was_training)
        out = {}
        for key in parts[0][0]:
            axis = 1 if key.startswith("segment_") else 0  # segment arrays are [S, rows, ...]
            out[key] = np.stack([np.concatenate([c[key] for c in chunks], axis=axis) for chunks in parts])
        return EngineOutput(**out)


def _config_key(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True, default=str)


def _empty_rows(s: int, seq_len: int, with_labels: bool, keep: bool) -> dict[str, np.ndarray]:
    out = {
        "predictions": np.zeros((0, seq_len), np.uint8), "q_halt": np.zeros(0, np.float32),
        "q_continue": np.zeros(0, np.float32), "halted": np.zeros(0, bool), "steps": np.zeros(0, np.int16),
        "confidence": np.zeros((0, seq_len), np.float32), "segment_halted": np.zeros((s, 0), bool),
    }
    if with_labels:
        out["segment_correct"] = np.zeros((s, 0), bool)
    if keep:
        out["segment_predictions"] = np.zeros((s, 0, seq_len), np.uint8)
    return out


def _exact(pred: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    return ((pred == lab) | (lab == IGNORE_LABEL)).all(-1)


def _run_rows(inner, forward: Callable, x: torch.Tensor, lab: torch.Tensor | None, s_count: int, keep: bool,
              pad_to: int | None = None) -> dict[str, np.ndarray]:
    """One model, one chunk of rows: s_count segments from the initial state (the paper's procedure).

    ``pad_to``: run exactly that many rows (blank puzzles appended) and drop the extra ones.
    """
    real = x.shape[0]
    if pad_to is not None and real < pad_to:
        x = torch.cat([x, torch.full((pad_to - real, x.shape[1]), BLANK_TOKEN, dtype=x.dtype, device=x.device)])
        if lab is not None:
            lab = torch.cat([lab, torch.full((pad_to - real, lab.shape[1]), IGNORE_LABEL, dtype=lab.dtype, device=lab.device)])
        out = _run_rows(inner, forward, x, lab, s_count, keep)
        return {k: (v[:, :real] if k.startswith("segment_") else v[:real]) for k, v in out.items()}

    m = x.shape[0]
    dev = x.device
    ids = torch.zeros(m, dtype=torch.int32, device=dev)
    seg_halt = torch.zeros(s_count, m, dtype=torch.bool, device=dev)
    seg_ok = torch.zeros(s_count, m, dtype=torch.bool, device=dev) if lab is not None else None
    seg_pred = torch.zeros(s_count, m, x.shape[1], dtype=torch.uint8, device=dev) if keep else None
    for s, seg in enumerate(run_segments(inner, {"inputs": x, "puzzle_identifiers": ids}, s_count, step=forward)):
        logits, qh, qc = seg.logits, seg.q_halt, seg.q_continue
        pred = logits.argmax(-1)
        seg_halt[s] = qh > qc
        if seg_ok is not None:
            seg_ok[s] = _exact(pred, lab)
        if seg_pred is not None:
            seg_pred[s] = pred.to(torch.uint8)
    conf = torch.softmax(logits.to(torch.float32), dim=-1).amax(-1)
    out = {
        "predictions": pred.to(torch.uint8), "q_halt": qh.float(), "q_continue": qc.float(),
        "halted": qh > qc, "steps": torch.full((m,), s_count, dtype=torch.int16, device=dev), "confidence": conf,
        "segment_halted": seg_halt,
    }
    if seg_ok is not None:
        out["segment_correct"] = seg_ok
    if seg_pred is not None:
        out["segment_predictions"] = seg_pred
    return {k: v.cpu().numpy() for k, v in out.items()}


def _run_rows_continuous(inner, forward: Callable, x: torch.Tensor, lab: torch.Tensor | None, s_count: int,
                         keep: bool, width: int) -> dict[str, np.ndarray]:
    """One model, all M rows, each stopped at its own first halt (``early_stop``), by continuous
    batching: at most ``width`` rows run a segment together, each at its own segment; a row that
    halts (or ends its last segment) leaves the batch and the next waiting row takes its place, so
    the segments run, and the FLOPs, fall with the halting rate. A row's numbers do not depend on
    which rows share its batch. After a row stops, its per-segment flags keep their last value."""
    m, dev, cells = x.shape[0], x.device, x.shape[1]
    width = max(1, min(width, m))
    out = {
        "predictions": torch.zeros(m, cells, dtype=torch.uint8, device=dev),
        "q_halt": torch.zeros(m, dtype=torch.float32, device=dev),
        "q_continue": torch.zeros(m, dtype=torch.float32, device=dev),
        "halted": torch.zeros(m, dtype=torch.bool, device=dev),
        "steps": torch.zeros(m, dtype=torch.int16, device=dev),
        "confidence": torch.zeros(m, cells, dtype=torch.float32, device=dev),
        "segment_halted": torch.zeros(s_count, m, dtype=torch.bool, device=dev),
    }
    if lab is not None:
        out["segment_correct"] = torch.zeros(s_count, m, dtype=torch.bool, device=dev)
    if keep:
        out["segment_predictions"] = torch.zeros(s_count, m, cells, dtype=torch.uint8, device=dev)
    ids = torch.zeros(width, dtype=torch.int32, device=dev)
    segments = torch.arange(s_count, device=dev)[:, None]
    active = torch.zeros(0, dtype=torch.long, device=dev)  # rows in the batch
    segment = torch.zeros(0, dtype=torch.long, device=dev)  # the segment each of them runs next
    carry: InnerCarry | None = None
    waiting = 0  # rows waiting..m-1 have not started
    while True:
        free = width - active.numel()
        if free and waiting < m:  # fill the batch from the queue, at the initial state
            new = torch.arange(waiting, min(m, waiting + free), device=dev)
            waiting += new.numel()
            fresh = initial_inner_carry(inner, new.numel())
            carry = fresh if carry is None else InnerCarry(torch.cat([carry.z_H, fresh.z_H]), torch.cat([carry.z_L, fresh.z_L]))
            active = torch.cat([active, new])
            segment = torch.cat([segment, torch.zeros_like(new)])
        if active.numel() == 0:
            break
        carry, logits, (qh, qc) = forward(carry, {"inputs": x[active], "puzzle_identifiers": ids[:active.numel()]})
        pred = logits.argmax(-1).to(torch.uint8)
        halt_now = qh > qc
        stop = halt_now | (segment == s_count - 1)
        # This segment's flags; a stopping row's also stand for every later segment.
        later = (segments >= segment[None]) & (stop[None] | (segments == segment[None]))  # [S, rows]
        values = {"segment_halted": halt_now}
        if lab is not None:
            values["segment_correct"] = _exact(pred.long(), lab[active])
        if keep:
            values["segment_predictions"] = pred
        for key, value in values.items():
            block = out[key][:, active]
            mask = later if block.ndim == 2 else later[..., None]
            out[key][:, active] = torch.where(mask, value[None].expand_as(block), block)
        rows = active[stop]
        if rows.numel():
            out["predictions"][rows] = pred[stop]
            out["q_halt"][rows] = qh[stop].float()
            out["q_continue"][rows] = qc[stop].float()
            out["halted"][rows] = halt_now[stop]
            out["steps"][rows] = (segment[stop] + 1).to(torch.int16)
            out["confidence"][rows] = torch.softmax(logits[stop].to(torch.float32), dim=-1).amax(-1)
        go_on = ~stop
        active, segment = active[go_on], segment[go_on] + 1
        carry = InnerCarry(carry.z_H[go_on], carry.z_L[go_on])
    return {k: v.cpu().numpy() for k, v in out.items()}


# ============================================================================ selection rules


def paper_vote(correct: np.ndarray, halted: np.ndarray) -> np.ndarray:
    """The fork's rule. correct, halted: bool [K, P, N] -> bool [N].

    Checkpoint k solves a puzzle when its passes that are correct AND halted are more than
    half of its halted passes; the puzzle is solved when any checkpoint solves it. Reads labels.
    """
    correct, halted = np.asarray(correct, bool), np.asarray(halted, bool)
    counted = (correct & halted).sum(axis=1)
    halted_n = halted.sum(axis=1)
    return (2 * counted > halted_n).any(axis=0)


def digit_values(tokens: np.ndarray) -> np.ndarray:
    """Sudoku tokens (2..10 digits) -> grid values 1..9; anything else (blank 1, pad 0, -100) -> 0."""
    t = np.asarray(tokens).astype(np.int16)
    return np.where((t >= 2) & (t <= 10), t - 1, 0).astype(np.uint8)


def verifier(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """bool [...]: answer tokens form a valid complete grid that keeps the question's givens.

    questions: tokens [..., 81] (1 = blank), answers: tokens [..., 81] (any 0..10).
    """
    q = np.asarray(questions)
    a = np.asarray(answers)
    q, a = np.broadcast_arrays(q, a)
    shape = a.shape[:-1]
    qg = np.where(q >= 1, q - 1, 0).astype(np.uint8).reshape(-1, SEQ_LEN)
    ag = digit_values(a).reshape(-1, SEQ_LEN)
    return (is_valid_solution(ag) & agrees_with_givens(qg, ag)).reshape(shape)


def _answer_keys(answers: np.ndarray) -> np.ndarray:
    """answers uint8 [..., L] -> uint64 [..., ceil(L / 8)]: equal rows <=> equal keys (exact, padded bytes)."""
    a = np.ascontiguousarray(answers, dtype=np.uint8)
    width = a.shape[-1]
    padded = np.zeros(a.shape[:-1] + (-(-width // 8) * 8,), dtype=np.uint8)
    padded[..., :width] = a
    return padded.view(np.uint64)


@dataclass
class Selection:
    """Label-free selection for B puzzles and a set of candidate subsets."""

    index: np.ndarray  # int64 [T, B]: selected candidate (index into the M candidates)
    votes: np.ndarray  # int64 [T, B]: pool passes that gave the selected answer
    pool: np.ndarray  # int64 [T, B]: pool size
    verified: np.ndarray  # bool [T, B]: the selected answer passes the verifier
    no_halt: np.ndarray  # bool [T, B]: no candidate of the subset halted (pool = all candidates)


def label_free_select(answers: np.ndarray, halted: np.ndarray, q_prob: np.ndarray, verified: np.ndarray,
                      subsets: np.ndarray | None = None) -> Selection:
    """The label-free rule (module docstring) for M candidate answers per puzzle.

    answers uint8 [M, B, L] (original space), halted / verified bool [M, B], q_prob float [M, B]
    (sigmoid of the final q_halt); subsets bool [T, M] (default: one subset of all M).
    """
    answers = np.asarray(answers)
    m, b = answers.shape[:2]
    subsets = np.ones((1, m), bool) if subsets is None else np.asarray(subsets, bool)
    keys = _answer_keys(answers).transpose(1, 0, 2)  # [B, M, 11]
    same = (keys[:, :, None, :] == keys[:, None, :, :]).all(-1).astype(np.float64)  # [B, M, M]
    hal = np.asarray(halted, bool).T  # [B, M]
    ver = np.asarray(verified, bool).T
    q = np.asarray(q_prob, np.float64).T
    cand = subsets[:, None, :]  # [T, 1, M]
    halted_in = cand & hal[None]  # [T, B, M]
    no_halt = ~halted_in.any(-1)  # [T, B]
    pool = np.where(no_halt[..., None], cand, halted_in)  # [T, B, M]
    poolf = pool.astype(np.float64)
    # votes[t, b, i] = pool members with candidate i's answer; qsum likewise weighted by q.
    # (``same`` is symmetric: a batched matmul [B, T, M] @ [B, M, M] does it with BLAS.)
    votes = np.matmul(poolf.transpose(1, 0, 2), same).transpose(1, 0, 2)
    qsum = np.matmul((poolf * q[None]).transpose(1, 0, 2), same).transpose(1, 0, 2)
    qmean = qsum / np.maximum(votes, 1)
    has_ver = (pool & ver[None]).any(-1, keepdims=True)
    eligible = pool & (ver[None] | ~has_ver)
    # Integer votes first; the mean q (in [0, 1]) scaled below 1 breaks ties; argmax takes the
    # first index on exact ties.
    key = np.where(eligible, votes + 0.5 * qmean, -np.inf)
    index = key.argmax(-1)  # [T, B]
    take = lambda a: np.take_along_axis(a, index[..., None], -1)[..., 0]  # noqa: E731
    return Selection(
        index=index,
        votes=take(votes).round().astype(np.int64),
        pool=pool.sum(-1).astype(np.int64),
        verified=np.take_along_axis(np.broadcast_to(ver[None], pool.shape), index[..., None], -1)[..., 0],
        no_halt=no_halt,
    )


# ============================================================================ the tasks


def any_pass_solves(correct: np.ndarray, halted: np.ndarray) -> np.ndarray:
    """The fork's maze rule. correct, halted: bool [K, P, N] -> bool [N]: a maze is solved when any
    pass of any checkpoint is exactly right; halting is not required. Reads labels."""
    return np.asarray(correct, bool).any(axis=(0, 1))


def _maze_rows(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], questions: np.ndarray,
               answers: np.ndarray) -> np.ndarray:
    """``fn`` of hrm.maze (rows of questions, rows of answers -> one value per row) over answers
    [..., 900], questions broadcast against them; shaped [...]."""
    q, a = np.broadcast_arrays(np.asarray(questions), np.asarray(answers))
    width = a.shape[-1]
    out = fn(q.reshape(-1, width).astype(np.uint8), np.clip(a, 0, 255).reshape(-1, width).astype(np.uint8))
    return out.reshape(a.shape[:-1])


def maze_verifier(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """bool [...]: the answer is an optimal S-G path of the maze (hrm.maze.verify_paths), no label read."""
    return _maze_rows(maze.verify_paths, questions, answers)


def _sudoku_revealable(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(inputs) == BLANK_TOKEN


def sudoku_conflicts(questions: np.ndarray | None, answers: np.ndarray) -> np.ndarray:
    """int64 [...]: the fork's error measure of answer tokens [..., 81]: excess repeats of digits per
    row, column and box, summed (cells not decoded as a digit ignored; the question is not read)."""
    from hrm.sudoku import conflict_count

    t = np.asarray(answers)
    return conflict_count(digit_values(t).reshape(-1, t.shape[-1])).reshape(t.shape[:-1])


def maze_broken_cells(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """int64 [...]: cells where the answer [..., 900] breaks a local rule of a path in its maze
    (hrm.maze.broken_path_cells); questions [..., 900] broadcast against it."""
    return _maze_rows(maze.broken_path_cells, questions, answers)


def _maze_revealable(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(inputs) == maze.OPEN) & (np.asarray(labels) == maze.PATH)


@dataclass(frozen=True)
class TaskRules:
    """What evaluating a task needs of it: Sudoku's (``SUDOKU_RULES``) or the mazes' (``MAZE_RULES``).

    ``decided``: the token of the cells the model fills in (a Sudoku blank, a maze's open cell), whose
    accuracy and calibration are reported; ``verify(questions, answers)``: the label-free verifier;
    ``solves(correct, halted)``: the paper's rule over checkpoints x passes; ``revealable(inputs, labels)``:
    the cells an easy tier reveals from the label (Sudoku blanks; the maze's shortest-path cells).
    ``errors(questions, answers)``: the analysis' error measure of an answer (``error_name``: Sudoku
    conflicts, a maze's broken path cells), read on the cells of ``mark_token`` .. ``mark_last``
    (``mark_name``: digits, path marks). ``input_tokens`` / ``label_tokens``: the encoding's ranges.
    """

    task: str
    seq_len: int
    decided: int
    perturbations: tuple[str, ...]
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray]
    solves: Callable[[np.ndarray, np.ndarray], np.ndarray]
    revealable: Callable[[np.ndarray, np.ndarray], np.ndarray]
    rating_edges: tuple[int, ...]
    blank_edges: tuple[int, ...]
    input_tokens: tuple[int, int]
    label_tokens: tuple[int, int]
    errors: Callable[[np.ndarray, np.ndarray], np.ndarray]
    error_name: str
    mark_tokens: tuple[int, int]
    mark_name: str

    def marks(self, answers: np.ndarray) -> np.ndarray:
        """int [...]: cells of answers [..., L] decoded as a mark the error measure reads."""
        a = np.asarray(answers)
        return ((a >= self.mark_tokens[0]) & (a <= self.mark_tokens[1])).sum(-1)


SUDOKU_RULES = TaskRules("sudoku", SEQ_LEN, BLANK_TOKEN, ("shift", "relabel", "symmetry"), verifier, paper_vote,
                         _sudoku_revealable, RATING_EDGES, BLANK_EDGES, (1, 10), (2, 10), sudoku_conflicts, "conflicts",
                         (2, 10), "digits")
# Mazes: 2 passes (the fork's S/G swap), a path is right when exact (any pass, halted or not), rated by
# its moves (the hard set: more than 110), "blanks" are the open cells the model decides.
MAZE_RULES = TaskRules("maze", maze.SEQ_LEN, maze.OPEN, ("swap",), maze_verifier, any_pass_solves, _maze_revealable,
                       (0, 111, 121, 131, 141, 161, 181), (0, 300, 350, 400, 450, 500), (maze.WALL, maze.GOAL),
                       (maze.WALL, maze.PATH), maze_broken_cells, "broken_path_cells", (maze.PATH, maze.PATH),
                       "path_cells")
RULES = {r.task: r for r in (SUDOKU_RULES, MAZE_RULES)}


def task_rules(task: str) -> TaskRules:
    try:
        return RULES[task]
    except KeyError:
        raise ValueError(f"no evaluation rules for task {task!r}: one of {', '.join(RULES)}") from None


# ============================================================================ easy tiers


def parse_tiers(text: str | Sequence[tuple[int, int]] | None, seq_len: int = SEQ_LEN) -> list[tuple[int, int]]:
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
                rules: "TaskRules | None" = None) -> np.ndarray:
    """Easy copies: each puzzle keeps k ~ uniform{lo..hi} blanks (at most its own), chosen
    uniformly among its blank cells; every other cell is revealed from the answer. Tokens in, tokens out.
    (Mazes, ``rules`` MAZE_RULES: k cells of the shortest path are left open, the rest of it is marked.)"""
    rules = rules or SUDOKU_RULES
    n = np.asarray(inputs).shape[0]
    k = rng.integers(lo, hi + 1, size=n)
    return _reveal(inputs, labels, k, rng.random((n, rules.seq_len)), rules)


def reveal_tier_rows(inputs: np.ndarray, labels: np.ndarray, lo: int, hi: int, seed: int,
                     rows: np.ndarray, rules: "TaskRules | None" = None) -> np.ndarray:
    """:func:`reveal_tier` with one generator per puzzle, ``default_rng([TIER_STREAM, seed, lo, hi, row])``
    (``rows``: each puzzle's row in its split), drawing its k, then its cell scores: a puzzle's easy copy
    depends on its own row only, not on the other puzzles evaluated or on how the work is cut up."""
    rules = rules or SUDOKU_RULES
    n = np.asarray(inputs).shape[0]
    k = np.empty(n, np.int64)
    scores = np.empty((n, rules.seq_len))
    for i, row in enumerate(np.asarray(rows, np.int64).tolist()):
        g = np.random.default_rng([TIER_STREAM, seed, lo, hi, row])
        k[i] = g.integers(lo, hi + 1)
        scores[i] = g.random(rules.seq_len)
    return _reveal(inputs, labels, k, scores, rules)


def _reveal(inputs: np.ndarray, labels: np.ndarray, k: np.ndarray, scores: np.ndarray,
            rules: "TaskRules") -> np.ndarray:
    """Keep the k revealable cells of lowest score in each puzzle (at most its own), reveal the rest."""
    inputs = np.asarray(inputs)
    labels = np.asarray(labels)
    blank = rules.revealable(inputs, labels)
    k = np.minimum(k, blank.sum(1))
    scores = np.where(blank, scores, np.inf)
    rank = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")
    reveal = blank & (rank >= k[:, None])
    return np.where(reveal, labels, inputs).astype(inputs.dtype)


# ============================================================================ calibration


_Q = float(2**30)  # fixed-point scale: the sums below are integers, so streaming order cannot change them


@dataclass
class Histogram:
    """Streaming reliability histogram + moments for ECE, Pearson r and the Brier score.

    Every quantity is summed as an integer (value x 2^30, rounded per element), so the result
    does not depend on how the data was split into batches.
    """

    bins: int = 10
    count: np.ndarray = field(default=None)  # type: ignore[assignment]
    conf_sum: np.ndarray = field(default=None)  # type: ignore[assignment]  # fixed point
    ok_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    moments: np.ndarray = field(default=None)  # type: ignore[assignment]  # n, sx, sy, sxx, syy, sxy, brier (fixed point)

    def __post_init__(self) -> None:
        if self.count is None:
            self.count = np.zeros(self.bins, np.int64)
            self.conf_sum = np.zeros(self.bins, np.int64)
            self.ok_sum = np.zeros(self.bins, np.int64)
            self.moments = np.zeros(7, np.int64)

    def add(self, conf: np.ndarray, ok: np.ndarray) -> None:
        x = np.clip(np.asarray(conf, np.float64).reshape(-1), 0.0, 1.0)
        y = np.asarray(ok, bool).reshape(-1)
        idx = np.minimum((x * self.bins).astype(np.int64), self.bins - 1)
        xq = np.rint(x * _Q).astype(np.int64)
        self.count += np.bincount(idx, minlength=self.bins)
        for b in np.unique(idx):
            sel = idx == b
            self.conf_sum[b] += int(xq[sel].sum())
            self.ok_sum[b] += int(y[sel].sum())
        self.moments += np.array([
            x.size, xq.sum(), y.sum(), np.rint(x * x * _Q).astype(np.int64).sum(), y.sum(), xq[y].sum(),
            np.rint((x - y) ** 2 * _Q).astype(np.int64).sum(),
        ], dtype=np.int64)

    def merge(self, other: "Histogram") -> None:
        """Add ``other``'s counts: the histogram of both parts' data (the sums are integers, so exact)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge a {other.bins}-bin histogram into a {self.bins}-bin one")
        for name in ("count", "conf_sum", "ok_sum", "moments"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, float | None]:
        n = int(self.moments[0])
        if n == 0:
            return {"ece": None, "pearson_r": None, "brier": None, "mean_confidence": None, "accuracy": None, "n": 0}
        sx, sy, sxx, syy, sxy, brier = (float(v) for v in self.moments[1:])
        sx, sxx, sxy, brier = sx / _Q, sxx / _Q, sxy / _Q, brier / _Q
        used = self.count > 0
        acc = self.ok_sum[used] / self.count[used]
        conf = self.conf_sum[used] / _Q / self.count[used]
        ece = float((self.count[used] / n * np.abs(acc - conf)).sum())
        var = (n * sxx - sx * sx) * (n * syy - sy * sy)
        r = float((n * sxy - sx * sy) / math.sqrt(var)) if var > 1e-9 * float(n) ** 4 else None
        return {"ece": ece, "pearson_r": r, "brier": brier / n, "mean_confidence": sx / n, "accuracy": sy / n, "n": n}

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for b in range(self.bins):
            c = int(self.count[b])
            rows.append({
                "bin": b, "bin_low": b / self.bins, "bin_high": (b + 1) / self.bins, "count": c,
                "confidence": float(self.conf_sum[b] / _Q / c) if c else None,
                "accuracy": float(self.ok_sum[b] / c) if c else None,
            })
        return rows


def calibration(conf: np.ndarray, ok: np.ndarray, bins: int = 10) -> Histogram:
    h = Histogram(bins)
    h.add(conf, ok)
    return h


# ============================================================================ driver


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def critical_step(correct: np.ndarray) -> np.ndarray:
    """The critical step: correct bool [S, ...] (exact after segment s) -> int16 [...], the first
    1-based segment from which the answer is right at every later segment; 0 = never."""
    c = np.asarray(correct, bool)
    if c.shape[0] == 0:
        return np.zeros(c.shape[1:], np.int16)
    tail = np.logical_and.accumulate(c[::-1], axis=0)[::-1]
    return np.where(tail.any(0), tail.argmax(0) + 1, 0).astype(np.int16)


@dataclass
class EvalResult:
    """Per-puzzle, per-(checkpoint, pass) outcomes of one evaluated set of N puzzles."""

    names: list[str]  # K checkpoint names
    perturbation: str
    early_stop: bool
    blanks: np.ndarray  # int16 [N]
    rating: np.ndarray  # int32 [N] (-1 unknown)
    label_cells: np.ndarray  # int16 [N] labelled cells
    correct: np.ndarray  # bool [K, P, N]
    halted: np.ndarray  # bool [K, P, N]
    q_halt: np.ndarray  # float32 [K, P, N]
    q_continue: np.ndarray  # float32 [K, P, N]
    verified: np.ndarray  # bool [K, P, N]
    blank_correct: np.ndarray  # int16 [K, P, N]
    cell_correct: np.ndarray  # int16 [K, P, N] labelled cells right
    steps: np.ndarray  # int16 [K, P, N]
    stable_from: np.ndarray  # int8 [K, P, N]
    es_correct: np.ndarray  # bool [K, P, N]: exact at the first segment with q_halt > q_continue (else the last)
    es_steps: np.ndarray  # int16 [K, P, N]: that segment
    lf_correct: np.ndarray  # bool [K, P, N]: label_free with the last k'+1 checkpoints, first p'+1 passes
    lf_verified: np.ndarray  # bool [N] full ensemble: the selected answer is verified
    lf_votes: np.ndarray  # int16 [N]
    lf_pool: np.ndarray  # int16 [N]
    lf_no_halt: np.ndarray  # bool [N]
    segment_correct: np.ndarray  # int64 [K, P, S] puzzles exact after segment s
    segment_halted: np.ndarray  # int64 [K, P, S]
    cells_base: Histogram
    cells_pooled: Histogram
    seconds: float = 0.0
    rows: int = 0  # model rows run per checkpoint (N * P)
    task: str = "sudoku"  # whose rules (TaskRules) decide paper_vote and the buckets

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.correct.shape  # type: ignore[return-value]

    @property
    def n(self) -> int:
        return self.correct.shape[2]

    def _subset(self, k: int | None = None, p: int | None = None) -> tuple[slice, slice]:
        K, P, _ = self.shape
        k, p = K if k is None else k, P if p is None else p
        if not (1 <= k <= K and 1 <= p <= P):
            raise ValueError(f"subset ({k}, {p}) outside 1..{K} checkpoints, 1..{P} passes")
        return slice(K - k, K), slice(0, p)

    # -- per-puzzle decisions
    def baseline(self) -> np.ndarray:
        return self.correct[-1, 0]

    def paper_vote(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        """The paper's rule of the task: the fork's vote for Sudoku, any exact pass for mazes."""
        ks, ps = self._subset(k, p)
        return task_rules(self.task).solves(self.correct[ks, ps], self.halted[ks, ps])

    def label_free(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        K, P, _ = self.shape
        return self.lf_correct[(K if k is None else k) - 1, (P if p is None else p) - 1]

    def verified_any(self, k: int | None = None, p: int | None = None) -> np.ndarray:
        ks, ps = self._subset(k, p)
        return self.verified[ks, ps].any(axis=(0, 1))

    # -- numbers
    def q_calibration(self, pooled: bool = False, bins: int = 10) -> Histogram:
        if pooled:
            return calibration(_sigmoid(self.q_halt), self.correct, bins)
        return calibration(_sigmoid(self.q_halt[-1, 0]), self.correct[-1, 0], bins)

    def summary(self, detail: bool = True) -> dict[str, Any]:
        return self.totals().summary(detail)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return self.totals().tables()

    # -- what the outputs need, in a size that does not grow with the puzzles (but the per-puzzle table)

    def puzzle_table(self) -> dict[str, np.ndarray]:
        """Per puzzle: blanks, each method's outcome, the primary pass's halt, sigmoid(q_halt) and critical segment."""
        return {
            "blanks": self.blanks.astype(np.int16), "baseline": self.baseline(), "paper_vote": self.paper_vote(),
            "label_free": self.label_free(), "verified_any": self.verified_any(), "label_free_verified": self.lf_verified,
            "halted": self.halted[-1, 0], "q_halt_prob": _sigmoid(self.q_halt[-1, 0]).astype(np.float32),
            "critical_segment": self.stable_from[-1, 0],
        }

    def totals(self) -> "EvalTotals":
        """The sums every reported number is made of (:class:`EvalTotals`): the totals of consecutive
        parts of an evaluation add up to the totals of the whole."""
        K, P, S = self.segment_correct.shape
        n = self.n
        grid = np.zeros((3, K, P), np.int64)
        for k in range(1, K + 1):
            for p in range(1, P + 1):
                grid[:, k - 1, p - 1] = (self.paper_vote(k, p).sum(), self.label_free(k, p).sum(),
                                         self.verified_any(k, p).sum())
        p0 = 0
        cells = np.maximum(self.label_cells, 1)
        checkpoint = np.array([[
            self.correct[k, p0].sum(), _fixed(self.cell_correct[k, p0] / cells).sum(), self.blank_correct[k, p0].sum(),
            self.halted[k, p0].sum(), ((self.q_halt[k, p0] >= 0) == self.correct[k, p0]).sum(), self.steps[k, p0].sum(),
        ] for k in range(K)], np.int64).reshape(K, 6)
        primary = self.stable_from[-1, 0].astype(np.int64)
        base, vote, lf, va = self.baseline(), self.paper_vote(), self.label_free(), self.verified_any()
        rules = task_rules(self.task)
        return EvalTotals(
            names=list(self.names), perturbation=self.perturbation, early_stop=self.early_stop, n=n, grid=grid,
            pass_exact=np.int64(self.correct.sum()), checkpoint=checkpoint, blank_cells=np.int64(self.blanks.sum()),
            label_free_detail=np.array([self.lf_verified.sum(), self.lf_no_halt.sum(),
                                        _fixed(self.lf_votes / np.maximum(self.lf_pool, 1)).sum()], np.int64),
            early_stop_view=np.array([self.es_correct[-1, 0].sum(), self.es_steps[-1, 0].sum(), self.es_correct.sum()],
                                     np.int64),
            steps_run=self.steps.astype(np.int64).sum(axis=(1, 2)),
            critical=np.bincount(primary, minlength=S + 1).astype(np.int64)[:S + 1],
            segment_correct=self.segment_correct.copy(), segment_halted=self.segment_halted.copy(),
            rating_buckets=_bucket_sums(self.rating, rules.rating_edges, base, vote, lf, va),
            blank_buckets=_bucket_sums(self.blanks, rules.blank_edges, base, vote, lf, va),
            q_halt=self.q_calibration(), q_halt_pooled=self.q_calibration(pooled=True),
            cells_base=self.cells_base, cells_pooled=self.cells_pooled, seconds=self.seconds, rows=self.rows,
            task=self.task,
        )


def _fixed(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as integers of 2^-30 (the histograms' fixed point): sums that any split adds up to."""
    return np.rint(np.asarray(x, np.float64) * _Q).astype(np.int64)


def _bucket_sums(values: np.ndarray, edges: Sequence[int], *decisions: np.ndarray) -> np.ndarray:
    """int64 [len(edges), 1 + len(decisions)]: per bucket [edges[i], edges[i+1]) (the last one open),
    the puzzles and how many of them each decision solves."""
    which = np.searchsorted(np.asarray(edges), np.asarray(values), side="right") - 1  # -1: below the first edge
    out = np.zeros((len(edges), 1 + len(decisions)), np.int64)
    keep = which >= 0
    out[:, 0] = np.bincount(which[keep], minlength=len(edges))
    for j, d in enumerate(decisions, start=1):
        out[:, j] = np.bincount(which[keep], weights=np.asarray(d, bool)[keep], minlength=len(edges)).astype(np.int64)
    return out


_HISTOGRAMS = ("q_halt", "q_halt_pooled", "cells_base", "cells_pooled")
_SCALARS = ("names", "perturbation", "early_stop", "task")  # the evaluation's, not summed


@dataclass
class EvalTotals:
    """The sums behind every number of an evaluation: integers (fractions in fixed point, as the
    histograms), so the totals of parts add up exactly to the totals of the whole whatever the split.
    Their size depends on K, P, S only, never on the number of puzzles."""

    names: list[str]
    perturbation: str
    early_stop: bool
    n: int  # puzzles
    grid: np.ndarray  # int64 [3, K, P]: puzzles paper_vote / label_free / verified_any solve with the last k+1 checkpoints, first p+1 passes
    pass_exact: np.int64  # exact passes, all K x P
    checkpoint: np.ndarray  # int64 [K, 6] at pass 0: exact, cell accuracy (fixed point), blank cells right, halted, q_halt right, segments
    blank_cells: np.int64
    label_free_detail: np.ndarray  # int64 [3]: selected answer verified, no pass halted, vote share (fixed point)
    early_stop_view: np.ndarray  # int64 [3]: primary exact at its first halt, its segments, all passes exact there
    steps_run: np.ndarray  # int64 [K]: row-segments each checkpoint ran
    critical: np.ndarray  # int64 [S + 1]: primary unperturbed puzzles by critical segment (0 = never)
    segment_correct: np.ndarray  # int64 [K, P, S]
    segment_halted: np.ndarray  # int64 [K, P, S]
    rating_buckets: np.ndarray  # int64 [len(rating_edges), 5]: puzzles, baseline, paper_vote, label_free, verified_any
    blank_buckets: np.ndarray  # int64 [len(blank_edges), 5] (the task's edges, TaskRules)
    q_halt: Histogram  # sigmoid(q_halt) of the primary unperturbed pass vs its exactness
    q_halt_pooled: Histogram  # of every pass
    cells_base: Histogram
    cells_pooled: Histogram
    seconds: float = 0.0
    rows: int = 0
    task: str = "sudoku"

    def add(self, other: "EvalTotals") -> "EvalTotals":
        """The totals of both parts (the same evaluation: task, checkpoints, perturbation, early stop)."""
        if (other.names, other.perturbation, other.early_stop, other.grid.shape, other.task) != (
                self.names, self.perturbation, self.early_stop, self.grid.shape, self.task):
            raise ValueError("totals of different evaluations (task, checkpoints, perturbation or early stop differ)")
        out: dict[str, Any] = {k: getattr(self, k) for k in _SCALARS}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in out:
                continue
            if isinstance(a, Histogram):
                h = Histogram(a.bins)
                h.merge(a)
                h.merge(b)
                out[f.name] = h
            else:
                out[f.name] = a + b
        return EvalTotals(**out)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Every number as arrays (``numpy.savez``), histograms as ``<name>.<field>``; :meth:`from_arrays`
        rebuilds the totals with the scalars of the evaluation (names, perturbation, early_stop)."""
        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Histogram):
                out.update({f"{f.name}.{k}": getattr(v, k) for k in ("count", "conf_sum", "ok_sum", "moments")})
            elif f.name not in _SCALARS:
                out[f.name] = np.asarray(v)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, names: Sequence[str], perturbation: str,
                    early_stop: bool, task: str = "sudoku") -> "EvalTotals":
        values: dict[str, Any] = {"names": list(names), "perturbation": perturbation, "early_stop": early_stop,
                                  "task": task}
        for f in fields(cls):
            if f.name in values:
                continue
            if f.name in _HISTOGRAMS:
                parts = [np.asarray(arrays[f"{f.name}.{k}"]) for k in ("count", "conf_sum", "ok_sum", "moments")]
                values[f.name] = Histogram(len(parts[0]), *parts)
            else:
                a = np.asarray(arrays[f.name])
                values[f.name] = (int(a) if f.name in ("n", "rows") else float(a) if f.name == "seconds"
                                  else a if a.ndim else np.int64(a))
        return cls(**values)

    # -- the numbers

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.segment_correct.shape  # type: ignore[return-value]

    def solved(self, method: str, k: int | None = None, p: int | None = None) -> float | None:
        """Fraction of puzzles ``method`` (paper_vote, label_free, verified_any) solves with the last k
        checkpoints and first p passes (default: all)."""
        K, P, _ = self.shape
        k, p = K if k is None else k, P if p is None else p
        row = {"paper_vote": 0, "label_free": 1, "verified_any": 2}[method]
        return float(self.grid[row, k - 1, p - 1] / self.n) if self.n else None

    def checkpoint_metrics(self, k: int) -> dict[str, float | None]:
        """Checkpoint k's unperturbed passes."""
        n, c = self.n, self.checkpoint[k]
        if n == 0:
            return {}
        return {
            "exact_accuracy": float(c[0] / n), "accuracy": float(c[1] / _Q / n),
            "blank_accuracy": float(c[2] / self.blank_cells) if self.blank_cells else None,
            "halt_rate": float(c[3] / n), "q_halt_accuracy": float(c[4] / n), "mean_steps": float(c[5] / n),
        }

    def summary(self, detail: bool = True) -> dict[str, Any]:
        K, P, S = self.shape
        n = self.n
        out: dict[str, Any] = {"puzzles": n, "checkpoints": K, "passes": P, "segments": S}
        if n == 0:
            return out
        out["baseline_exact"] = float(self.checkpoint[K - 1, 0] / n)
        for method in ("paper_vote", "label_free", "verified_any"):
            out[method] = self.solved(method)
        out["mean_pass_exact"] = float(self.pass_exact / (K * P * n))
        out["baseline"] = self.checkpoint_metrics(K - 1)
        lf = self.label_free_detail
        out["label_free_detail"] = {"selected_verified": float(lf[0] / n), "no_pass_halted": float(lf[1] / n),
                                    "mean_vote_share": float(lf[2] / _Q / n)}
        all_segments = K * P * n * S
        out["work"] = {  # row-segments the model ran: each costs the same FLOPs (segment_flops)
            "segments_run": int(self.steps_run.sum()), "segments_of_all_segment_passes": all_segments,
            "saved_fraction": 1.0 - int(self.steps_run.sum()) / all_segments if S else 0.0,
        }
        es = self.early_stop_view
        out["early_stop_view"] = {  # the same passes read at the model's own halt (a different setting)
            "exact_accuracy": float(es[0] / n), "mean_steps": float(es[1] / n), "mean_pass_exact": float(es[2] / (K * P * n)),
        }
        solved = int(self.critical[1:].sum())
        out["critical_segment"] = {
            "mean": float((np.arange(1, S + 1) * self.critical[1:]).sum() / solved) if solved else None,
            "solved_by_final_segment": float(solved / n),
        }
        out["calibration"] = {
            "q_halt": self.q_halt.summary(), "q_halt_pooled": self.q_halt_pooled.summary(),
            "cells": self.cells_base.summary(), "cells_pooled": self.cells_pooled.summary(),
        }
        if detail:
            out["per_checkpoint"] = {name: self.checkpoint_metrics(k) for k, name in enumerate(self.names)}
        return out

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Plot tables: rows of plain values (CSV-ready)."""
        K, P, S = self.shape
        n = max(self.n, 1)
        t: dict[str, list[dict[str, Any]]] = {}
        t["segments"] = [{
            "segment": s + 1,
            "baseline": float(self.segment_correct[-1, 0, s] / n),
            "all_passes": float(self.segment_correct[:, :, s].sum() / (n * K * P)),
            "halted": float(self.segment_halted[-1, 0, s] / n),
            "critical": float(self.critical[s + 1] / n),
        } for s in range(S)]
        t["passes"] = [self._row("passes", p, K, p) for p in range(1, P + 1)]
        t["checkpoints"] = [self._row("checkpoints", k, k, P) for k in range(1, K + 1)]
        t["ensemble_grid"] = [
            {"checkpoints": k, "passes": p, **{k2: v for k2, v in self._row("x", 0, k, p).items() if k2 != "x"}}
            for k in range(1, K + 1) for p in range(1, P + 1)
        ]
        rules = task_rules(self.task)
        t["rating"] = self._buckets(self.rating_buckets, rules.rating_edges, "rating")
        t["blanks"] = self._buckets(self.blank_buckets, rules.blank_edges, "blanks")
        t["reliability_q_halt"] = self.q_halt.table()
        t["reliability_cells"] = self.cells_base.table()
        return t

    def _row(self, key: str, value: int, k: int, p: int) -> dict[str, Any]:
        return {key: value, **{m: self.solved(m, k, p) for m in ("paper_vote", "label_free", "verified_any")}}

    @staticmethod
    def _buckets(sums: np.ndarray, edges: Sequence[int], name: str) -> list[dict[str, Any]]:
        rows = []
        bounds = list(edges) + [None]
        for (lo, hi), (count, base, vote, lf, va) in zip(zip(bounds[:-1], bounds[1:]), sums.tolist()):
            if not count:
                continue
            label = f"{lo}+" if hi is None else (str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}")
            rows.append({name: label, "puzzles": count, "baseline": base / count, "paper_vote": vote / count,
                         "label_free": lf / count, "verified_any": va / count})
        return rows


def _subset_masks(k_count: int, p_count: int) -> np.ndarray:
    """bool [K*P, K*P]: subset t = (k'-1)*P + (p'-1) holds candidates (k, p) with k >= K - k' and p < p'."""
    k = np.repeat(np.arange(k_count), p_count)
    p = np.tile(np.arange(p_count), k_count)
    masks = np.zeros((k_count * p_count, k_count * p_count), bool)
    for kk in range(1, k_count + 1):
        for pp in range(1, p_count + 1):
            masks[(kk - 1) * p_count + pp - 1] = (k >= k_count - kk) & (p < pp)
    return masks


def evaluate_puzzles(
    runner: Runner,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    perturbations: Perturbations,
    ratings: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    early_stop: bool = False,
    bins: int = 10,
    progress: bool = False,
    desc: str = "evaluate",
    on_batch: Callable[[int], None] | None = None,
    rules: TaskRules | None = None,
) -> EvalResult:
    """Run N puzzles (tokens [N, 81]; labels tokens, -100 ignored) through K checkpoints x P passes.

    ``batch_size`` puzzles per batch: each checkpoint then sees batch_size x P rows.
    Returns an :class:`EvalResult`; nothing here depends on the batch size except speed.
    ``on_batch(puzzles)`` is called after each batch (a caller's own progress report).
    ``rules``: the task's (default Sudoku's; ``MAZE_RULES`` for mazes of 900 tokens).
    """
    rules = rules or SUDOKU_RULES
    L = rules.seq_len
    inputs = np.asarray(inputs)
    labels = np.asarray(labels)
    if inputs.ndim != 2 or inputs.shape[1] != L or labels.shape != inputs.shape:
        raise ValueError(f"inputs and labels must both be [N, {L}]; got {inputs.shape} and {labels.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    inputs = inputs.astype(np.uint8)
    labels = labels.astype(np.int16)
    n = inputs.shape[0]
    K, P, S = runner.num_models, len(perturbations), runner.segments
    names = list(names) if names is not None else [f"checkpoint_{k}" for k in range(K)]
    if len(names) != K:
        raise ValueError(f"{len(names)} names for {K} checkpoints")
    masks = _subset_masks(K, P)

    per: dict[str, list[np.ndarray]] = {k: [] for k in (
        "correct", "halted", "q_halt", "q_continue", "verified", "blank_correct", "cell_correct", "steps",
        "stable_from", "es_correct", "es_steps", "lf_correct", "lf_verified", "lf_votes", "lf_pool", "lf_no_halt")}
    seg_ok = np.zeros((K, P, S), np.int64)
    seg_halt = np.zeros((K, P, S), np.int64)
    cells_base, cells_pooled = Histogram(bins), Histogram(bins)

    from hrm.progress import progress_bar

    bar = progress_bar(n, desc, "puzzle", enabled=progress)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            q = inputs[start:start + batch_size]
            lab = labels[start:start + batch_size]
            b = q.shape[0]
            xp = perturbations.apply(q)  # [P, B, 81]
            yp = perturbations.apply(lab)
            res = runner.run(xp.reshape(P * b, L), yp.reshape(P * b, L), early_stop=early_stop)

            def kpb(a: np.ndarray) -> np.ndarray:
                return a.reshape((K, P, b) + a.shape[2:])

            pred = kpb(res.predictions)  # [K, P, B, 81] perturbed space
            seg = res.segment_correct.reshape(K, S, P, b).transpose(0, 2, 1, 3)  # [K, P, S, B]
            seg_h = res.segment_halted.reshape(K, S, P, b).transpose(0, 2, 1, 3)
            correct = seg[:, :, -1] if S else np.zeros((K, P, b), bool)
            halted = kpb(res.halted)
            qh = kpb(res.q_halt)
            labelled = yp[None] != IGNORE_LABEL
            cell_ok = (pred == yp[None]) & labelled  # [K, P, B, 81]
            blank = (xp == rules.decided)[None] & labelled
            answers = perturbations.restore(pred)  # [K, P, B, L] original space
            verified = rules.verify(q[None, None], answers)

            per["correct"].append(correct)
            per["halted"].append(halted)
            per["q_halt"].append(qh)
            per["q_continue"].append(kpb(res.q_continue))
            per["verified"].append(verified)
            per["blank_correct"].append((cell_ok & blank).sum(-1).astype(np.int16))
            per["cell_correct"].append(cell_ok.sum(-1).astype(np.int16))
            per["steps"].append(kpb(res.steps).astype(np.int16))
            per["stable_from"].append(critical_step(np.moveaxis(seg, 2, 0)).astype(np.int8))
            # The early-stop view, read off the full run: the answer at the first segment where
            # q_halt > q_continue (or the last). Equals the run itself under early_stop.
            halts = seg_h.any(2)
            es_steps = np.where(halts, seg_h.argmax(2) + 1, S).astype(np.int16)  # [K, P, B]
            per["es_steps"].append(es_steps)
            per["es_correct"].append(np.take_along_axis(seg, es_steps[:, :, None].astype(np.int64) - 1, 2)[:, :, 0])
            seg_ok += seg.sum(-1)
            seg_halt += seg_h.sum(-1)
            conf = kpb(res.confidence)
            cells_base.add(conf[-1, 0][blank[0, 0]], cell_ok[-1, 0][blank[0, 0]])
            bmask = np.broadcast_to(blank, cell_ok.shape)
            cells_pooled.add(conf[bmask], cell_ok[bmask])

            sel = label_free_select(answers.reshape(K * P, b, L), halted.reshape(K * P, b),
                                    _sigmoid(qh).reshape(K * P, b), verified.reshape(K * P, b), masks)
            # Correctness of the chosen answer, judged in the original space.
            orig_ok = _exact_np(answers, lab[None, None]).reshape(K * P, b)
            chosen_ok = np.take_along_axis(orig_ok.T[None], sel.index[..., None], -1)[..., 0]  # [T, B]
            per["lf_correct"].append(chosen_ok.reshape(K, P, b))
            per["lf_verified"].append(sel.verified[-1])
            per["lf_votes"].append(sel.votes[-1].astype(np.int16))
            per["lf_pool"].append(sel.pool[-1].astype(np.int16))
            per["lf_no_halt"].append(sel.no_halt[-1])

            bar.update(b)
            if on_batch is not None:
                on_batch(b)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    def cat(key: str, axis: int, empty_shape: tuple, dtype) -> np.ndarray:
        parts = per[key]
        return np.concatenate(parts, axis=axis) if parts else np.zeros(empty_shape, dtype)

    kp0 = (K, P, 0)
    return EvalResult(
        names=names, perturbation=perturbations.kind, early_stop=early_stop,
        blanks=(inputs == rules.decided).sum(1).astype(np.int16),
        rating=(np.asarray(ratings, np.int32) if ratings is not None else np.full(n, -1, np.int32)),
        label_cells=(labels != IGNORE_LABEL).sum(1).astype(np.int16),
        correct=cat("correct", 2, kp0, bool), halted=cat("halted", 2, kp0, bool),
        q_halt=cat("q_halt", 2, kp0, np.float32), q_continue=cat("q_continue", 2, kp0, np.float32),
        verified=cat("verified", 2, kp0, bool), blank_correct=cat("blank_correct", 2, kp0, np.int16),
        cell_correct=cat("cell_correct", 2, kp0, np.int16), steps=cat("steps", 2, kp0, np.int16),
        stable_from=cat("stable_from", 2, kp0, np.int8), es_correct=cat("es_correct", 2, kp0, bool),
        es_steps=cat("es_steps", 2, kp0, np.int16), lf_correct=cat("lf_correct", 2, kp0, bool),
        lf_verified=cat("lf_verified", 0, (0,), bool), lf_votes=cat("lf_votes", 0, (0,), np.int16),
        lf_pool=cat("lf_pool", 0, (0,), np.int16), lf_no_halt=cat("lf_no_halt", 0, (0,), bool),
        segment_correct=seg_ok, segment_halted=seg_halt, cells_base=cells_base, cells_pooled=cells_pooled,
        seconds=seconds, rows=n * P, task=rules.task,
    )


def _exact_np(pred: np.ndarray, lab: np.ndarray) -> np.ndarray:
    return ((pred == lab) | (lab == IGNORE_LABEL)).all(-1)
