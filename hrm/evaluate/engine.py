"""The engine: K checkpoints x M input rows, segment by segment, with every segment's halting
decision and exactness (hrm.evaluate's docstring: the paper's procedure and ``early_stop``)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch.func import functional_call

from hrm.encoding import IGNORE_LABEL
from hrm.model.base import InnerCarry, initial_inner_carry, run_segments
from hrm.model.registry import architecture_of
from hrm.sudoku import BLANK_TOKEN


@dataclass
class EngineOutput:
    """What the engine returns for M input rows and K models (numpy, on the CPU)."""

    predictions: np.ndarray  # uint8 [K, M, 81]: final answer tokens
    q_halt: np.ndarray  # float32 [K, M]: at the final (or stopping) segment
    q_continue: np.ndarray  # float32 [K, M]
    halted: np.ndarray  # bool [K, M]: the model's halt signal at the final (or stopping) segment (HRM: q_halt > q_continue)
    steps: np.ndarray  # int16 [K, M]: segments run
    confidence: np.ndarray  # float32 [K, M, 81]: max softmax probability at the final segment
    segment_halted: np.ndarray  # bool [K, S, M]: the halt signal after segment s (early stop: stays True)
    segment_q_halt: np.ndarray  # float32 [K, S, M]: q_halt after segment s (early stop: its value at the stop stays)
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
    return architecture_of(model).segment_flops(model.config)


def halt_rule(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Where a model asks to stop, from (q_halt, q_continue): its ACT wrapper's rule (hrm.model.act.ACTModel.halt_signal;
    HRM: q_halt > q_continue, TRM: q_halt > 0)."""
    return getattr(model, "_orig_mod", model).model.halt_signal


def auto_max_rows(device: torch.device | str) -> int | None:
    """Rows per forward when the user sets none.

    On a CPU the model is compute-bound and chunks whose activations stay cache-sized run
    faster per row than one big batch (quick profile, 2 threads: 32 rows 12.6 s vs 144
    rows 17.9 s for the same passes); an accelerator takes every row at once.
    """
    return 32 if torch.device(device).type == "cpu" else None


class Engine:
    """Batched inference for K checkpoints of one architecture (seq_len, vocab, halt_max_steps).

    ``run(inputs [M, 81])``: every model sees the M rows (e.g. P perturbed copies of B puzzles,
    concatenated), ``max_rows`` rows per forward (None: all at once). Runs on the models' device
    (all K must share it), segment by segment through the models' inner modules under
    ``torch.inference_mode``: the numbers of ``RecurrentModel.predict`` without keeping every segment's logits.
    A row's halting decision is its model's own (:func:`halt_rule`).

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
            keep_segment_predictions: bool = False, puzzle_identifiers=None) -> EngineOutput:
        """``puzzle_identifiers``: int [M], each row's (the puzzle embedding's row; None: all 0)."""
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.int32)
        ids = torch.zeros(x.shape[0], dtype=torch.int32) if puzzle_identifiers is None else \
            torch.as_tensor(np.asarray(puzzle_identifiers), dtype=torch.int32)
        lab = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        m = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.config.seq_len:
            raise ValueError(f"inputs must be [M, {self.config.seq_len}], got {list(x.shape)}")
        if m and (int(x.min()) < 0 or int(x.max()) >= self.config.vocab_size):
            raise ValueError(f"inputs hold tokens outside 0..{self.config.vocab_size - 1}")
        if lab is not None and lab.shape != x.shape:
            raise ValueError(f"labels must have the shape of inputs {list(x.shape)}, got {list(lab.shape)}")
        if ids.shape != (m,):
            raise ValueError(f"puzzle_identifiers must be [{m}], got {list(ids.shape)}")
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
                halts = halt_rule(model)
                with torch.inference_mode():
                    if early_stop:  # one queue of all M rows, ``chunk`` of them in the batch at a time
                        parts.append([_run_rows_continuous(
                            model.inner, forward, x.to(self.device), None if lab is None else lab.to(self.device),
                            s_count, keep_segment_predictions, chunk, ids.to(self.device), halts)] if m else empty)
                        continue
                    parts.append([
                        _run_rows(model.inner, forward, x[i:i + chunk].to(self.device),
                                  None if lab is None else lab[i:i + chunk].to(self.device),
                                  s_count, keep_segment_predictions, pad_to, ids[i:i + chunk].to(self.device), halts)
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
    return json.dumps(d, sort_keys=True, default=str)


def _empty_rows(s: int, seq_len: int, with_labels: bool, keep: bool) -> dict[str, np.ndarray]:
    out = {
        "predictions": np.zeros((0, seq_len), np.uint8), "q_halt": np.zeros(0, np.float32),
        "q_continue": np.zeros(0, np.float32), "halted": np.zeros(0, bool), "steps": np.zeros(0, np.int16),
        "confidence": np.zeros((0, seq_len), np.float32), "segment_halted": np.zeros((s, 0), bool),
        "segment_q_halt": np.zeros((s, 0), np.float32),
    }
    if with_labels:
        out["segment_correct"] = np.zeros((s, 0), bool)
    if keep:
        out["segment_predictions"] = np.zeros((s, 0, seq_len), np.uint8)
    return out


def _exact(pred: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    return ((pred == lab) | (lab == IGNORE_LABEL)).all(-1)


def _run_rows(inner, forward: Callable, x: torch.Tensor, lab: torch.Tensor | None, s_count: int, keep: bool,
              pad_to: int | None = None, ids: torch.Tensor | None = None, halts: Callable = torch.gt) -> dict[str, np.ndarray]:
    """One model, one chunk of rows: s_count segments from the initial state (the paper's procedure).

    ``pad_to``: run exactly that many rows (blank puzzles appended) and drop the extra ones. ``ids``:
    the rows' puzzle identifiers (None: 0). ``halts(q_halt, q_continue)``: the model's halting rule
    (:func:`halt_rule`; default HRM's q_halt > q_continue).
    """
    real = x.shape[0]
    ids = torch.zeros(real, dtype=torch.int32, device=x.device) if ids is None else ids
    if pad_to is not None and real < pad_to:
        x = torch.cat([x, torch.full((pad_to - real, x.shape[1]), BLANK_TOKEN, dtype=x.dtype, device=x.device)])
        if lab is not None:
            lab = torch.cat([lab, torch.full((pad_to - real, lab.shape[1]), IGNORE_LABEL, dtype=lab.dtype, device=lab.device)])
        ids = torch.cat([ids, torch.zeros(pad_to - real, dtype=ids.dtype, device=ids.device)])
        out = _run_rows(inner, forward, x, lab, s_count, keep, ids=ids, halts=halts)
        return {k: (v[:, :real] if k.startswith("segment_") else v[:real]) for k, v in out.items()}

    m = x.shape[0]
    dev = x.device
    seg_halt = torch.zeros(s_count, m, dtype=torch.bool, device=dev)
    seg_q = torch.zeros(s_count, m, dtype=torch.float32, device=dev)
    seg_ok = torch.zeros(s_count, m, dtype=torch.bool, device=dev) if lab is not None else None
    seg_pred = torch.zeros(s_count, m, x.shape[1], dtype=torch.uint8, device=dev) if keep else None
    for s, seg in enumerate(run_segments(inner, {"inputs": x, "puzzle_identifiers": ids}, s_count, step=forward)):
        logits, qh, qc = seg.logits, seg.q_halt, seg.q_continue
        pred = logits.argmax(-1)
        seg_halt[s] = halts(qh, qc)
        seg_q[s] = qh.float()
        if seg_ok is not None:
            seg_ok[s] = _exact(pred, lab)
        if seg_pred is not None:
            seg_pred[s] = pred.to(torch.uint8)
    conf = torch.softmax(logits.to(torch.float32), dim=-1).amax(-1)
    out = {
        "predictions": pred.to(torch.uint8), "q_halt": qh.float(), "q_continue": qc.float(),
        "halted": halts(qh, qc), "steps": torch.full((m,), s_count, dtype=torch.int16, device=dev), "confidence": conf,
        "segment_halted": seg_halt, "segment_q_halt": seg_q,
    }
    if seg_ok is not None:
        out["segment_correct"] = seg_ok
    if seg_pred is not None:
        out["segment_predictions"] = seg_pred
    return {k: v.cpu().numpy() for k, v in out.items()}


def _run_rows_continuous(inner, forward: Callable, x: torch.Tensor, lab: torch.Tensor | None, s_count: int,
                         keep: bool, width: int, ids: torch.Tensor, halts: Callable = torch.gt) -> dict[str, np.ndarray]:
    """One model, all M rows, each stopped at its own first halt (``early_stop``), by continuous
    batching: at most ``width`` rows run a segment together, each at its own segment; a row that
    halts (or ends its last segment) leaves the batch and the next waiting row takes its place, so
    the segments run, and the FLOPs, fall with the halting rate. A row's numbers do not depend on
    which rows share its batch. After a row stops, its per-segment flags keep their last value.
    ``halts``: the model's halting rule (:func:`halt_rule`)."""
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
        "segment_q_halt": torch.zeros(s_count, m, dtype=torch.float32, device=dev),
    }
    if lab is not None:
        out["segment_correct"] = torch.zeros(s_count, m, dtype=torch.bool, device=dev)
    if keep:
        out["segment_predictions"] = torch.zeros(s_count, m, cells, dtype=torch.uint8, device=dev)
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
        carry, logits, (qh, qc) = forward(carry, {"inputs": x[active], "puzzle_identifiers": ids[active]})
        pred = logits.argmax(-1).to(torch.uint8)
        halt_now = halts(qh, qc)
        stop = halt_now | (segment == s_count - 1)
        # This segment's flags; a stopping row's also stand for every later segment.
        later = (segments >= segment[None]) & (stop[None] | (segments == segment[None]))  # [S, rows]
        values = {"segment_halted": halt_now, "segment_q_halt": qh.float()}
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

