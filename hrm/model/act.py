"""Adaptive computation time around any segment module, the loss head, and inference
(docs/reference-semantics.md §6): shared by every architecture (hrm.model.base).

- :class:`ACTModel` (``model``): the ACT wrapper. It owns the carry (states, step counts,
  halted flags, the batch each row is working on) and the halting policy.
- :class:`RecurrentModel`: the loss head around it (``ACTLossHead``) plus the inference API
  :meth:`RecurrentModel.predict`. An architecture's model subclasses it and names its
  :class:`~hrm.model.base.Architecture` (``architecture``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from hrm.model.base import Architecture, Carry, module_device, run_segments
from hrm.model.losses import ACTLossHead


class ACTModel(nn.Module):
    """ACT wrapper: every call advances each row by one segment (docs/reference-semantics.md §6).

    Rows that halted in the previous call are first reset to the initial state and
    loaded with the corresponding rows of ``batch``; the others keep their data.
    Training: a row halts at halt_max_steps, or where :meth:`halt_signal` says (HRM: q_halt >
    q_continue), but with probability halt_exploration_prob it must first reach a minimum drawn
    from uniform{2..halt_max_steps}; ``outputs["target_q_continue"]`` is :meth:`continue_target`
    (HRM: the bootstrap target from one extra no-grad segment). Evaluation: every row halts
    exactly at halt_max_steps. An architecture with other halting rules (TRM) overrides the two.
    """

    def __init__(self, config: Any, inner: nn.Module):
        super().__init__()
        self.config = config
        self.inner = inner

    @property
    def puzzle_emb(self):
        return self.inner.puzzle_emb

    def initial_carry(self, batch: Mapping[str, torch.Tensor]) -> Carry:
        """A carry in which every row is halted, so the first call loads the whole batch."""
        b = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return Carry(
            inner_carry=self.inner.empty_carry(b, device=device),
            steps=torch.zeros(b, dtype=torch.int32, device=device),
            halted=torch.ones(b, dtype=torch.bool, device=device),
            current_data={k: torch.zeros_like(v) for k, v in batch.items()},
        )

    def forward(self, carry: Carry, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> tuple[Carry, dict[str, torch.Tensor]]:
        """One ACT step. ``generator`` drives exploration (None: torch's global RNG, as the official code)."""
        cfg = self.config
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {
            k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v) for k, v in carry.current_data.items()
        }

        inner_carry, logits, (q_halt, q_continue) = self.inner(inner_carry, data)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            steps = steps + 1
            is_last_step = steps >= cfg.halt_max_steps
            halted = is_last_step

            if self.training and cfg.halt_max_steps > 1:
                halted = halted | self.halt_signal(q_halt, q_continue)
                # Exploration: some rows must run a random minimum number of steps first.
                # (Both draws always happen, keeping the RNG stream of the official code.)
                explore = torch.rand(q_halt.shape, dtype=q_halt.dtype, device=q_halt.device, generator=generator) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint(
                    2, cfg.halt_max_steps + 1, steps.shape, dtype=steps.dtype, device=steps.device, generator=generator
                )
                halted = halted & (steps >= min_steps)

                target = self.continue_target(inner_carry, data, is_last_step)
                if target is not None:
                    outputs["target_q_continue"] = target

        return Carry(inner_carry, steps, halted, data), outputs

    def halt_signal(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """Where the model asks to stop (bool [B]): HRM's q_halt > q_continue (an architecture may say otherwise)."""
        return q_halt > q_continue

    def continue_target(self, inner_carry: Any, data: Mapping[str, torch.Tensor], is_last_step: torch.Tensor) -> torch.Tensor | None:
        """The training target of q_continue (None: no q_continue loss). HRM's: the Q values after one more
        no-grad segment, bootstrapped; no replay buffer or target network, the many rows of a batch play that role."""
        _, _, (next_q_halt, next_q_continue) = self.inner(inner_carry, data)
        return torch.sigmoid(torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue)))


@dataclass
class Prediction:
    """Result of :meth:`RecurrentModel.predict` (S segments, B puzzles, all float32 / on the model's device)."""

    logits: torch.Tensor  # [S, B, seq_len, vocab]
    q_halt: torch.Tensor  # [S, B]
    q_continue: torch.Tensor  # [S, B]
    predictions: torch.Tensor  # [B, seq_len] int64 tokens: argmax of the last segment
    halted: torch.Tensor  # [B] bool: the model asks to halt at the last segment (ACTModel.halt_signal)
    z_H: torch.Tensor | None = None  # [S * steps per segment, B, puzzle_emb_len + seq_len, hidden], after every step
    z_L: torch.Tensor | None = None  # same shape, z_L at those moments

    def to(self, device: torch.device | str) -> "Prediction":
        return Prediction(**{f.name: (None if (v := getattr(self, f.name)) is None else v.to(device)) for f in dataclasses.fields(self)})

    def numpy(self) -> dict[str, np.ndarray]:
        return {f.name: v.cpu().numpy() for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


class RecurrentModel(ACTLossHead):
    """An architecture's model + ACT + loss head: the module the official trainer saves, plus inference helpers.

    ``model(carry, batch)`` -> (carry, loss, metrics, outputs, all_halted); see :class:`ACTLossHead`.
    Its ``state_dict()`` keys are ``model.inner....``.
    """

    architecture: ClassVar[Architecture]

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def inner(self) -> nn.Module:
        return self.model.inner

    @property
    def puzzle_emb(self):
        return self.model.inner.puzzle_emb

    @property
    def sparse_embedding(self) -> nn.Module | None:
        """The puzzle embedding trained by sign-SGD, or None when the model has none."""
        return getattr(self.model.inner, "puzzle_emb", None)

    @property
    def device(self) -> torch.device:
        return module_device(self.model.inner)

    def arch_dict(self) -> dict[str, Any]:
        """The ``arch`` block of all_config.yaml (official names, plus the data-derived sizes)."""
        d = self.architecture.config_to_dict(self.config)
        return {"name": self.architecture.name, "loss": {"name": "losses@ACTLossHead", "loss_type": self.loss_type}, **d}

    def _as_tokens(self, inputs, name: str, shape_tail: tuple[int, ...]) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be integer tokens, got dtype {t.dtype}")
        if t.ndim == len(shape_tail):
            t = t.unsqueeze(0)
        if tuple(t.shape[1:]) != shape_tail:
            raise ValueError(f"{name} must have shape [B, {', '.join(map(str, shape_tail))}], got {list(t.shape)}")
        return t.to(device=self.device, dtype=torch.int32)

    def _predict_batch(self, inputs, puzzle_identifiers) -> dict[str, torch.Tensor]:
        """The checked batch of :meth:`predict`."""
        cfg = self.config
        x = self._as_tokens(inputs, "inputs", (cfg.seq_len,))
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab_size):
            raise ValueError(f"inputs hold tokens outside 0..{cfg.vocab_size - 1}")
        b = x.shape[0]
        if puzzle_identifiers is None:
            ids = torch.zeros(b, dtype=torch.int32, device=self.device)
        else:
            ids = self._as_tokens(puzzle_identifiers, "puzzle_identifiers", ()).reshape(-1)
            if ids.shape[0] != b:
                raise ValueError(f"puzzle_identifiers has {ids.shape[0]} rows, inputs has {b}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.num_puzzle_identifiers):
                raise ValueError(f"puzzle_identifiers outside 0..{cfg.num_puzzle_identifiers - 1}")
        return {"inputs": x, "puzzle_identifiers": ids}

    @torch.no_grad()
    def predict(self, inputs, puzzle_identifiers=None, segments: int | None = None, trace: bool = False) -> Prediction:
        """Run ``segments`` (default halt_max_steps) segments from the initial state on every puzzle.

        Evaluation semantics: no halting inside the run; ``halted`` is the model's own
        decision at the last segment (:meth:`ACTModel.halt_signal`; HRM: q_halt > q_continue). More segments than
        halt_max_steps simply keep iterating from the carried state.
        ``inputs``: int tokens [B, seq_len] (torch or numpy; Sudoku: 1 = blank, 2..10 = digits).
        """
        batch = self._predict_batch(inputs, puzzle_identifiers)
        segments = self.config.halt_max_steps if segments is None else int(segments)
        if segments < 1:
            raise ValueError("segments must be >= 1")

        was_training = self.training
        self.eval()
        try:
            logits, q_halt, q_cont, states = [], [], [], []
            for seg in run_segments(self.inner, batch, segments, trace=trace):
                logits.append(seg.logits.to(torch.float32))
                q_halt.append(seg.q_halt)
                q_cont.append(seg.q_continue)
                states += seg.states or []
        finally:
            self.train(was_training)

        out = Prediction(
            logits=torch.stack(logits),
            q_halt=torch.stack(q_halt),
            q_continue=torch.stack(q_cont),
            predictions=logits[-1].argmax(-1),
            halted=self.model.halt_signal(q_halt[-1], q_cont[-1]),
        )
        if trace:
            out.z_H = torch.stack([s[0] for s in states]).to(torch.float32)
            out.z_L = torch.stack([s[1] for s in states]).to(torch.float32)
        return out
