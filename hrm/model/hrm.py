"""The Hierarchical Reasoning Model with adaptive computation time (docs/reference-semantics.md §5 and §6).

Three nested modules, named so that the state dict matches the official checkpoints:

- :class:`HRMInner` (``model.inner``): embeddings, the H and L reasoning levels, the
  LM and Q heads, and the initial states. One call = one ACT segment.
- :class:`HRMACT` (``model``): the ACT wrapper. It owns the carry (states, step
  counts, halted flags, the batch each row is working on) and the halting policy.
- :class:`HRM`: the loss head around it (``ACTLossHead``) plus the inference API
  :meth:`HRM.predict`. Its ``state_dict()`` has exactly the official keys.

Training loop sketch::

    model = HRM(HRMConfig(batch_size=768, ...)).train()
    carry = model.initial_carry(batch)
    for batch in batches:
        carry, loss, metrics, _, _ = model(carry, batch)
        (loss / batch_size).backward()
        ...

Evaluation: ``model.eval()`` and call it halt_max_steps times on one batch (every
row halts at the last step), or use :meth:`HRM.predict`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from hrm.model.layers import CastedEmbedding, CastedLinear, CosSin, PostNormBlock, RotaryEmbedding, trunc_normal_init_
from hrm.model.losses import ACTLossHead
from hrm.model.sparse_embedding import CastedSparseEmbedding

ARCH_NAME = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


@dataclass
class HRMConfig:
    """Architecture and ACT settings, with the official field names. Defaults = the paper's Sudoku run."""

    batch_size: int = 768  # per-device training batch (size of the puzzle-embedding gradient buffer)
    seq_len: int = 81
    puzzle_emb_ndim: int = 512
    num_puzzle_identifiers: int = 1
    vocab_size: int = 11

    H_cycles: int = 2
    L_cycles: int = 2
    H_layers: int = 4
    L_layers: int = 4

    hidden_size: int = 512
    expansion: float = 4
    num_heads: int = 8
    pos_encodings: str = "rope"  # "rope" | "learned"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1

    forward_dtype: str = "bfloat16"  # "float32" | "bfloat16"

    def __post_init__(self) -> None:
        problems = [f"{name} must be {kind}, not {value!r}" for name, kind, value in mistyped_fields(self)]
        if problems:  # the value checks below assume numbers
            raise ValueError("invalid HRMConfig: " + "; ".join(problems))
        for name in ("batch_size", "seq_len", "vocab_size", "num_puzzle_identifiers", "H_layers", "L_layers", "hidden_size",
                     "num_heads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.puzzle_emb_ndim < 0:
            problems.append("puzzle_emb_ndim must be >= 0")
        if self.expansion <= 0 or self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            problems.append("expansion, rms_norm_eps and rope_theta must be > 0")
        if self.num_heads >= 1 and self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.pos_encodings not in ("rope", "learned"):
            problems.append(f"pos_encodings must be 'rope' or 'learned', not {self.pos_encodings!r}")
        if self.forward_dtype not in _DTYPES:
            problems.append(f"forward_dtype must be one of {sorted(_DTYPES)}, not {self.forward_dtype!r}")
        if self.halt_max_steps < 1:
            problems.append("halt_max_steps must be >= 1")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            problems.append("halt_exploration_prob must be in [0, 1]")
        if min(self.H_cycles, self.L_cycles) < 1:
            problems.append("H_cycles and L_cycles must be >= 1")
        if problems:
            raise ValueError("invalid HRMConfig: " + "; ".join(problems))

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.forward_dtype]

    @property
    def puzzle_emb_len(self) -> int:
        """Prefix positions taken by the puzzle embedding: ceil(puzzle_emb_ndim / hidden_size)."""
        return -(-self.puzzle_emb_ndim // self.hidden_size)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HRMConfig":
        """Build from a mapping with the official names; other keys (name, loss, causal, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    states: list | None = None  # (z_H, z_L) after every H update of the segment, when traced


@dataclass
class Carry:
    inner_carry: InnerCarry
    steps: torch.Tensor  # int32 [B]: segments run on the current data
    halted: torch.Tensor  # bool [B]: the row is done; the next call restarts it on the next batch
    current_data: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------- modules


class ReasoningModule(nn.Module):
    """One level (H or L): add the input injection to the state, then run the blocks."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor, input_injection: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(cos_sin=cos_sin, hidden_states=hidden_states)
        return hidden_states


class HRMInner(nn.Module):
    """One ACT segment: H_cycles x (L_cycles L updates, one H update), 1-step gradient."""

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = config
        self.forward_dtype = config.dtype
        h = config.hidden_size

        self.embed_scale = math.sqrt(h)
        embed_std = 1.0 / self.embed_scale
        self.embed_tokens = CastedEmbedding(config.vocab_size, h, init_std=embed_std, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(h, config.vocab_size, bias=False)
        self.q_head = CastedLinear(h, 2, bias=True)

        self.puzzle_emb_len = config.puzzle_emb_len
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                config.num_puzzle_identifiers, config.puzzle_emb_ndim, batch_size=config.batch_size, init_std=0, cast_to=self.forward_dtype
            )

        total_len = config.seq_len + self.puzzle_emb_len
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(h // config.num_heads, max_position_embeddings=total_len, base=config.rope_theta)
        else:
            self.embed_pos = CastedEmbedding(total_len, h, init_std=embed_std, cast_to=self.forward_dtype)

        def block() -> PostNormBlock:
            return PostNormBlock(h, config.num_heads, config.expansion, config.rms_norm_eps)

        self.H_level = ReasoningModule([block() for _ in range(config.H_layers)])
        self.L_level = ReasoningModule([block() for _ in range(config.L_layers)])

        self.register_buffer("H_init", trunc_normal_init_(torch.empty(h, dtype=self.forward_dtype), std=1), persistent=True)
        self.register_buffer("L_init", trunc_normal_init_(torch.empty(h, dtype=self.forward_dtype), std=1), persistent=True)

        # Q starts near "never halt" (sigmoid(-5)) so that halting is learned from a clean start.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """[B, seq_len] tokens -> [B, puzzle_emb_len + seq_len, hidden], scaled by sqrt(hidden)."""
        h = self.config.hidden_size
        emb = self.embed_tokens(inputs.to(torch.int32))
        if self.config.puzzle_emb_ndim > 0:
            prefix = self.puzzle_emb(puzzle_identifiers)
            pad = self.puzzle_emb_len * h - prefix.shape[-1]
            if pad > 0:
                prefix = nn.functional.pad(prefix, (0, pad))
            emb = torch.cat((prefix.view(-1, self.puzzle_emb_len, h), emb), dim=-2)
        if self.config.pos_encodings == "learned":
            # 1/sqrt(2) keeps the variance of token + position at that of one embedding.
            emb = 0.707106781 * (emb + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * emb

    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> InnerCarry:
        shape = (batch_size, self.config.seq_len + self.puzzle_emb_len, self.config.hidden_size)
        device = self.H_init.device if device is None else device
        return InnerCarry(
            z_H=torch.zeros(shape, dtype=self.forward_dtype, device=device),
            z_L=torch.zeros(shape, dtype=self.forward_dtype, device=device),
        )

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        """Rows where ``reset`` is true go back to the initial states H_init, L_init."""
        flag = reset.view(-1, 1, 1)
        return InnerCarry(z_H=torch.where(flag, self.H_init, carry.z_H), z_L=torch.where(flag, self.L_init, carry.z_L))

    def forward(
        self, carry: InnerCarry, batch: Mapping[str, torch.Tensor], trace: list | None = None
    ) -> tuple[InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run one segment. Returns (detached new carry, logits [B, seq_len, vocab], (q_halt, q_continue) float32 [B]).

        With ``trace`` a list, appends (z_H, z_L) detached after every H update (H_cycles entries).
        """
        cos_sin = self.rotary_emb() if hasattr(self, "rotary_emb") else None
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        cfg = self.config

        # Every update but the last L and the last H runs without gradient.
        with torch.no_grad():
            z_H, z_L = carry.z_H, carry.z_L
            for h_step in range(cfg.H_cycles):
                last_cycle = h_step == cfg.H_cycles - 1
                for l_step in range(cfg.L_cycles):
                    if not (last_cycle and l_step == cfg.L_cycles - 1):
                        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
                if not last_cycle:
                    z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
                    if trace is not None:
                        trace.append((z_H.detach(), z_L.detach()))

        # 1-step gradient: the final L and H updates.
        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
        if trace is not None:
            trace.append((z_H.detach(), z_L.detach()))

        new_carry = InnerCarry(z_H=z_H.detach(), z_L=z_L.detach())
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :]
        q = self.q_head(z_H[:, 0]).to(torch.float32)
        return new_carry, logits, (q[..., 0], q[..., 1])


def initial_inner_carry(inner: HRMInner, batch_size: int) -> InnerCarry:
    """Every row at the initial states: H_init, L_init broadcast over all positions."""
    return inner.reset_carry(torch.ones(batch_size, dtype=torch.bool, device=inner.H_init.device),
                             inner.empty_carry(batch_size))


def run_segments(inner: HRMInner, batch: Mapping[str, torch.Tensor], segments: int, *, carry: InnerCarry | None = None,
                 trace: bool = False, step: Callable | None = None) -> Iterator[SegmentOutput]:
    """Run ``segments`` ACT segments of ``inner`` on every row of ``batch``, from ``carry`` (default:
    the initial state), with no halting inside the run; yields each segment's output in turn.

    The one loop behind :meth:`HRM.predict`, the evaluation engine and the analysis traces.
    ``trace``: each output also holds the (z_H, z_L) after every H update of its segment.
    ``step``: what runs one segment, with ``inner``'s call signature (default ``inner`` itself;
    the evaluation passes a compiled one).
    """
    step = inner if step is None else step
    carry = initial_inner_carry(inner, batch["inputs"].shape[0]) if carry is None else carry
    for _ in range(segments):
        states: list | None = [] if trace else None
        carry, logits, (q_halt, q_continue) = step(carry, batch, trace=states)
        yield SegmentOutput(carry, logits, q_halt, q_continue, states)


class HRMACT(nn.Module):
    """ACT wrapper: every call advances each row by one segment (docs/reference-semantics.md §6).

    Rows that halted in the previous call are first reset to the initial state and
    loaded with the corresponding rows of ``batch``; the others keep their data.
    Training: a row halts at halt_max_steps, or when q_halt > q_continue, but with
    probability halt_exploration_prob it must first reach a minimum drawn from
    uniform{2..halt_max_steps}; ``outputs["target_q_continue"]`` is the bootstrap
    target from one extra no-grad segment. Evaluation: every row halts exactly at
    halt_max_steps.
    """

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = config
        self.inner = HRMInner(config)

    @property
    def puzzle_emb(self) -> CastedSparseEmbedding:
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
                halted = halted | (q_halt > q_continue)
                # Exploration: some rows must run a random minimum number of steps first.
                # (Both draws always happen, keeping the RNG stream of the official code.)
                explore = torch.rand(q_halt.shape, dtype=q_halt.dtype, device=q_halt.device, generator=generator) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint(
                    2, cfg.halt_max_steps + 1, steps.shape, dtype=steps.dtype, device=steps.device, generator=generator
                )
                halted = halted & (steps >= min_steps)

                # Bootstrapped target for q_continue: the Q values after one more segment.
                # No replay buffer or target network; the many rows of a batch play that role.
                _, _, (next_q_halt, next_q_continue) = self.inner(inner_carry, data)
                outputs["target_q_continue"] = torch.sigmoid(torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue)))

        return Carry(inner_carry, steps, halted, data), outputs


# ----------------------------------------------------------------------------- top level


@dataclass
class Prediction:
    """Result of :meth:`HRM.predict` (S segments, B puzzles, all float32 / on the model's device)."""

    logits: torch.Tensor  # [S, B, seq_len, vocab]
    q_halt: torch.Tensor  # [S, B]
    q_continue: torch.Tensor  # [S, B]
    predictions: torch.Tensor  # [B, seq_len] int64 tokens: argmax of the last segment
    halted: torch.Tensor  # [B] bool: q_halt > q_continue at the last segment
    z_H: torch.Tensor | None = None  # [S * H_cycles, B, puzzle_emb_len + seq_len, hidden], after every H update
    z_L: torch.Tensor | None = None  # same shape, z_L at those moments

    def to(self, device: torch.device | str) -> "Prediction":
        return Prediction(**{f.name: (None if (v := getattr(self, f.name)) is None else v.to(device)) for f in dataclasses.fields(self)})

    def numpy(self) -> dict[str, np.ndarray]:
        return {f.name: v.cpu().numpy() for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


class DeviceError(ValueError):
    """A device this machine or this torch build does not have."""


def resolve_device(device: torch.device | str | None = "auto") -> torch.device:
    """"auto" (or None) -> cuda if available, else mps, else cpu. A device that is not here
    (``cuda`` on a CPU build, ``cuda:3`` on a one-GPU machine, an unknown name) is a DeviceError."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise DeviceError(f"no CUDA device is available here: {build}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"cuda:{dev.index} does not exist ({torch.cuda.device_count()} CUDA device(s) here)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("MPS is not available here")
    return dev


class HRM(ACTLossHead):
    """HRM + ACT + loss head: the module the official trainer saves, plus inference helpers.

    ``HRM(config)(carry, batch)`` -> (carry, loss, metrics, outputs, all_halted); see :class:`ACTLossHead`.
    """

    def __init__(self, config: HRMConfig | None = None, loss_type: str = "stablemax_cross_entropy"):
        super().__init__(HRMACT(config or HRMConfig()), loss_type=loss_type)

    @property
    def config(self) -> HRMConfig:
        return self.model.config

    @property
    def inner(self) -> HRMInner:
        return self.model.inner

    @property
    def puzzle_emb(self) -> CastedSparseEmbedding:
        return self.model.inner.puzzle_emb

    @property
    def device(self) -> torch.device:
        return self.model.inner.H_init.device

    def arch_dict(self) -> dict[str, Any]:
        """The ``arch`` block of all_config.yaml (official names, plus the data-derived sizes)."""
        d = self.config.to_dict()
        return {"name": ARCH_NAME, "loss": {"name": "losses@ACTLossHead", "loss_type": self.loss_type}, **d}

    def _as_tokens(self, inputs, name: str, shape_tail: tuple[int, ...]) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be integer tokens, got dtype {t.dtype}")
        if t.ndim == len(shape_tail):
            t = t.unsqueeze(0)
        if tuple(t.shape[1:]) != shape_tail:
            raise ValueError(f"{name} must have shape [B, {', '.join(map(str, shape_tail))}], got {list(t.shape)}")
        return t.to(device=self.device, dtype=torch.int32)

    @torch.no_grad()
    def predict(self, inputs, puzzle_identifiers=None, segments: int | None = None, trace: bool = False) -> Prediction:
        """Run ``segments`` (default halt_max_steps) segments from the initial state on every puzzle.

        Evaluation semantics: no halting inside the run; ``halted`` is the model's own
        decision (q_halt > q_continue) at the last segment. More segments than
        halt_max_steps simply keep iterating from the carried state.
        ``inputs``: int tokens [B, seq_len] (torch or numpy; 1 = blank, 2..10 = digits).
        """
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
        segments = cfg.halt_max_steps if segments is None else int(segments)
        if segments < 1:
            raise ValueError("segments must be >= 1")

        was_training = self.training
        self.eval()
        try:
            batch = {"inputs": x, "puzzle_identifiers": ids}
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
            halted=q_halt[-1] > q_cont[-1],
        )
        if trace:
            out.z_H = torch.stack([s[0] for s in states]).to(torch.float32)
            out.z_L = torch.stack([s[1] for s in states]).to(torch.float32)
        return out


# Official class names, for readers coming from the reference code.
HierarchicalReasoningModel_ACTV1Config = HRMConfig
HierarchicalReasoningModel_ACTV1_Inner = HRMInner
HierarchicalReasoningModel_ACTV1 = HRMACT
