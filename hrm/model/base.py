"""What every architecture offers the rest of the library: the :class:`Architecture` interface, the
segment module's contract (:class:`Recurrence`), the carry, and the one loop over segments.

An architecture is one module (HRM: :mod:`hrm.model.hrm`) holding its config dataclass, its segment
module, and an :class:`Architecture` object registered under the official ``arch.name`` of
all_config.yaml (:mod:`hrm.model.registry`). Loading, training, evaluation, the analysis, the FLOP
count and the memory estimates ask that object, never the name.

The contract, for an architecture whose loss-head model is an :class:`hrm.model.act.RecurrentModel`:

- The **config** is a dataclass. Besides its own fields it has the ones the trainer and the
  ACT wrapper set or read: ``batch_size``, ``seq_len``, ``vocab_size``, ``num_puzzle_identifiers``,
  ``forward_dtype`` (set from the data and the run), ``hidden_size``, ``halt_max_steps`` and
  ``halt_exploration_prob``. A field with ``metadata={"help": ...}`` is a setting a user sets (the
  ``hrm train`` options are made from them: :meth:`Architecture.options`).
- The **segment module** (``model.inner``, a :class:`Recurrence`) runs one ACT segment:
  ``inner(carry, batch, trace=None) -> (new carry, logits [B, seq_len, vocab], (q_halt, q_continue))``.
  Its state is an :class:`InnerCarry` of two tensors [B, puzzle_emb_len + seq_len, hidden_size]
  (z_H: the state the answer is read from, z_L: the other); ``trace``, a list, receives (z_H, z_L)
  after every *step* of the segment (:meth:`Architecture.steps_per_segment` of them): what the
  analysis traces and perturbs. ``lm_head(z_H)[..., puzzle_emb_len:, :]`` gives the logits of a state.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn


def option(default: Any, help: str, **limits: Any) -> Any:  # noqa: A002 - click's word
    """A config field a user sets: its help and range (``min``, ``max``, ``min_open``, ``choices``) make its ``hrm train`` option."""
    return field(default=default, metadata={"help": help, **limits})


def mistyped_fields(config: Any) -> list[tuple[str, str, Any]]:
    """(field, expected kind, value) of every int / float / bool / str field of a dataclass whose value
    is something else: a bool is no number, a float field takes any finite real (``expansion: 4``; NaN
    and inf are refused), None passes where the annotation allows it (``int | None``)."""
    wrong = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind = str(f.type).replace(" | None", "")
        if value is None and kind != str(f.type):
            continue
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            wrong.append((f.name, "an integer", value))
        elif kind == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)):
            wrong.append((f.name, "a finite number", value))
        elif kind == "bool" and not isinstance(value, bool):
            wrong.append((f.name, "true or false", value))
        elif kind == "str" and not isinstance(value, str):
            wrong.append((f.name, "a string", value))
    return wrong


# ----------------------------------------------------------------------------- carry


@dataclass
class InnerCarry:
    z_H: torch.Tensor  # [B, puzzle_emb_len + seq_len, hidden]
    z_L: torch.Tensor


@dataclass
class SegmentOutput:
    """What one segment of :func:`run_segments` gives."""

    carry: InnerCarry  # the state after the segment (detached)
    logits: torch.Tensor  # [B, seq_len, vocab]
    q_halt: torch.Tensor  # float32 [B]
    q_continue: torch.Tensor  # float32 [B]
    states: list | None = None  # (z_H, z_L) after every step of the segment, when traced


@dataclass
class Carry:
    inner_carry: InnerCarry
    steps: torch.Tensor  # int32 [B]: segments run on the current data
    halted: torch.Tensor  # bool [B]: the row is done; the next call restarts it on the next batch
    current_data: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the segment module


class Recurrence(nn.Module):
    """The segment module of an architecture (``model.inner``); see the module docstring for its contract.

    Subclasses set ``config``, ``forward_dtype``, ``puzzle_emb_len`` and ``lm_head`` and implement
    :meth:`empty_carry`, :meth:`reset_carry` and :meth:`forward`.
    """

    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> InnerCarry:
        """A carry of ``batch_size`` rows whose values are overwritten before use (:meth:`reset_carry`)."""
        raise NotImplementedError

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        """Rows where ``reset`` (bool [B]) is true go back to the initial state."""
        raise NotImplementedError

    def forward(self, carry: InnerCarry, batch: Mapping[str, torch.Tensor], trace: list | None = None
                ) -> tuple[InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first buffer or parameter (cpu for one that has none)."""
    for t in module.buffers():
        return t.device
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


def initial_inner_carry(inner: nn.Module, batch_size: int) -> InnerCarry:
    """Every row at the initial state (HRM: H_init, L_init broadcast over all positions)."""
    return inner.reset_carry(torch.ones(batch_size, dtype=torch.bool, device=module_device(inner)),
                             inner.empty_carry(batch_size))


def run_segments(inner: nn.Module, batch: Mapping[str, torch.Tensor], segments: int, *, carry: InnerCarry | None = None,
                 trace: bool = False, step: Callable | None = None) -> Iterator[SegmentOutput]:
    """Run ``segments`` ACT segments of ``inner`` on every row of ``batch``, from ``carry`` (default:
    the initial state), with no halting inside the run; yields each segment's output in turn.

    The one loop behind :meth:`RecurrentModel.predict`, the evaluation engine and the analysis traces.
    ``trace``: each output also holds the (z_H, z_L) after every step of its segment.
    ``step``: what runs one segment, with ``inner``'s call signature (default ``inner`` itself;
    the evaluation passes a compiled one).
    """
    step = inner if step is None else step
    carry = initial_inner_carry(inner, batch["inputs"].shape[0]) if carry is None else carry
    for _ in range(segments):
        states: list | None = [] if trace else None
        carry, logits, (q_halt, q_continue) = step(carry, batch, trace=states)
        yield SegmentOutput(carry, logits, q_halt, q_continue, states)


# ----------------------------------------------------------------------------- the architecture


@dataclass(frozen=True)
class ArchOption:
    """A config field a user sets (an ``hrm train`` option): its kind, range or choices, and help."""

    name: str
    kind: str  # "int" | "float" | "str"
    help: str
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False  # minimum excluded
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowMemory:
    """What :func:`hrm.analysis.estimate_memory` needs of an architecture, per row (one puzzle)."""

    steps_per_segment: int  # traced states per segment
    cells: int  # output cells (seq_len)
    positions: int  # positions of a state (prefix + seq_len)
    state_numbers: int  # numbers in one state (z_H or z_L): positions x hidden
    forward_bytes: int  # activations of one segment step, float32


class Architecture(ABC):
    """One architecture, as the library asks it. ``name``: the official ``arch.name`` of all_config.yaml."""

    name: str
    config_class: type
    option_order: tuple[str, ...] = ()  # the order of the options (default: the config's field order)

    @property
    def label(self) -> str:
        """The short name reports give it (HRM, TRM: a class attribute there); by default arch.name's class part."""
        return self.name.rpartition("@")[2]

    def accepts(self, name: str) -> bool:
        """Whether ``arch.name`` (of a checkpoint or a config) names this architecture."""
        return name == self.name

    def config_keys(self) -> set[str]:
        """The keys of an arch block this architecture reads (its config's fields)."""
        return {f.name for f in dataclasses.fields(self.config_class)}

    def config_from_dict(self, d: Mapping[str, Any]) -> Any:
        """The config from an arch block; other keys (name, loss, ...) are ignored. Bad values: ValueError / TypeError."""
        names = self.config_keys()
        return self.config_class(**{k: v for k, v in d.items() if k in names})

    def config_to_dict(self, config: Any) -> dict[str, Any]:
        return dataclasses.asdict(config)

    def sizes_from_state(self, arch: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """``arch`` with the data-derived sizes a checkpoint's tensors tell (vocab_size, ...) where it lacks them."""
        return arch

    def config_from_checkpoint(self, arch: Mapping[str, Any]) -> Any:
        """The config from a checkpoint's arch block (sizes filled in): its official defaults and required keys."""
        return self.config_from_dict(arch)

    def options(self) -> list[ArchOption]:
        """The config fields a user sets (those with a ``help`` in their metadata), in ``option_order``."""
        found = {}
        for f in dataclasses.fields(self.config_class):
            meta = f.metadata
            if "help" in meta:
                found[f.name] = ArchOption(f.name, str(f.type), meta["help"], meta.get("min"), meta.get("max"),
                                           bool(meta.get("min_open", False)), tuple(meta.get("choices", ())))
        order = [n for n in self.option_order if n in found] + [n for n in found if n not in self.option_order]
        return [found[n] for n in order]

    @abstractmethod
    def build(self, config: Any, loss_type: str = "stablemax_cross_entropy") -> nn.Module:
        """The loss-head model, freshly initialised (consuming torch's global RNG as the official code)."""

    def initial_carry(self, model: nn.Module, batch_size: int) -> InnerCarry:
        """Every row of ``batch_size`` at the initial state."""
        return initial_inner_carry(model.inner, batch_size)

    @abstractmethod
    def steps_per_segment(self, config: Any) -> int:
        """States a segment passes through (what a trace records per segment; HRM: H updates)."""

    @abstractmethod
    def segment_flops(self, config: Any) -> float:
        """Multiply-add FLOPs of one segment of one row (matmuls and attention)."""

    @abstractmethod
    def row_memory(self, config: Any) -> RowMemory:
        """Per-row sizes for the analysis memory estimate."""

    @abstractmethod
    def train_activation_bytes(self, config: Any) -> int:
        """Activations of one training step on the config's batch_size rows."""
