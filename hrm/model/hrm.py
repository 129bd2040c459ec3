"""The Hierarchical Reasoning Model with adaptive computation time (docs/reference-semantics.md §5 and §6):
one architecture (hrm.model.base), registered as ``hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1``.

Three nested modules, named so that the state dict matches the official checkpoints:

- :class:`HRMInner` (``model.inner``): embeddings, the H and L reasoning levels, the
  LM and Q heads, and the initial states. One call = one ACT segment.
- :class:`HRMACT` (``model``): the ACT wrapper (hrm.model.act.ACTModel). It owns the carry
  (states, step counts, halted flags, the batch each row is working on) and the halting policy.
- :class:`HRM`: the loss head around it (``ACTLossHead``) plus the inference API
  :meth:`HRM.predict`. Its ``state_dict()`` has exactly the official keys.

:data:`ARCHITECTURE` is what the rest of the library asks: config from a dict, the model, steps and
FLOPs per segment, memory per row.

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
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from hrm.model.act import ACTModel, Prediction, RecurrentModel
from hrm.model.base import (Architecture, Carry, InnerCarry, Recurrence, RowMemory, SegmentOutput,  # noqa: F401 - re-exported
                            initial_inner_carry, mistyped_fields, option, run_segments)
from hrm.model.device import DeviceError, resolve_device  # noqa: F401 - re-exported
from hrm.model.layers import (CastedEmbedding, CastedLinear, CosSin, PostNormBlock, RotaryEmbedding,  # noqa: F401 - re-exported
                              swiglu_width, trunc_normal_init_)
from hrm.model.sparse_embedding import CastedSparseEmbedding  # noqa: F401 - re-exported
from hrm.model.token_recurrence import EmbeddedRecurrence, ReasoningModule, sizes_from_state  # noqa: F401 - re-exported

ARCH_NAME = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


_option = option


@dataclass
class HRMConfig:
    """Architecture and ACT settings, with the official field names. Defaults = the paper's Sudoku run."""

    batch_size: int = 768  # per-device training batch (size of the puzzle-embedding gradient buffer)
    seq_len: int = 81
    puzzle_emb_ndim: int = _option(512, "Puzzle embedding width (0: none; the paper: hidden_size).", min=0)
    num_puzzle_identifiers: int = 1
    vocab_size: int = 11

    H_cycles: int = _option(2, "High-level updates per ACT segment.", min=1)
    L_cycles: int = _option(2, "Low-level updates per high-level update.", min=1)
    H_layers: int = _option(4, "Blocks in the high-level module.", min=1)
    L_layers: int = _option(4, "Blocks in the low-level module.", min=1)

    hidden_size: int = _option(512, "Model width.", min=1)
    expansion: float = _option(4, "SwiGLU expansion factor.", min=0, min_open=True)
    num_heads: int = _option(8, "Attention heads (hidden_size must be a multiple).", min=1)
    pos_encodings: str = _option("rope", "Position encoding.", choices=("rope", "learned"))
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = _option(16, "Most ACT segments per puzzle.", min=1)
    halt_exploration_prob: float = _option(0.1, "Probability of a random minimum number of segments.", min=0, max=1)

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


# ----------------------------------------------------------------------------- modules


class HRMInner(EmbeddedRecurrence):
    """One ACT segment: H_cycles x (L_cycles L updates, one H update), 1-step gradient."""

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = config
        self.forward_dtype = config.dtype
        self.build_io(config, config.puzzle_emb_len)

        def block() -> PostNormBlock:
            return PostNormBlock(config.hidden_size, config.num_heads, config.expansion, config.rms_norm_eps)

        self.H_level = ReasoningModule([block() for _ in range(config.H_layers)])
        self.L_level = ReasoningModule([block() for _ in range(config.L_layers)])
        self.build_initial_states(config.hidden_size)

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

        return self.segment_outputs(z_H, z_L)


class HRMACT(ACTModel):
    """The ACT wrapper around :class:`HRMInner` (hrm.model.act.ACTModel; the official HierarchicalReasoningModel_ACTV1)."""

    def __init__(self, config: HRMConfig):
        super().__init__(config, HRMInner(config))


class HRM(RecurrentModel):
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


# ----------------------------------------------------------------------------- the architecture

def _prefix_len(arch: Mapping[str, Any]) -> int:
    """The puzzle embedding's prefix positions an arch block implies: ceil(puzzle_emb_ndim / hidden_size)."""
    hidden = int(arch.get("hidden_size", HRMConfig.hidden_size))
    return -(-int(arch.get("puzzle_emb_ndim", 0)) // hidden)


# The keys the official config class requires (no default there); a checkpoint's arch block must have them.
REQUIRED_KEYS = ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "expansion", "num_heads", "pos_encodings",
                 "halt_max_steps", "halt_exploration_prob")


class HRMArchitecture(Architecture):
    """HRM as the library asks it (hrm.model.base.Architecture)."""

    name = ARCH_NAME
    label = "HRM"
    config_class = HRMConfig
    # The hrm train options' order (the CLI's since its first version), not the config's field order.
    option_order = ("hidden_size", "num_heads", "expansion", "H_layers", "L_layers", "H_cycles", "L_cycles", "halt_max_steps",
                    "halt_exploration_prob", "pos_encodings", "puzzle_emb_ndim")

    def accepts(self, name: str) -> bool:
        # Any module path of the official class (the official code has moved it between releases).
        return str(name).endswith("HierarchicalReasoningModel_ACTV1")

    def build(self, config: HRMConfig, loss_type: str = "stablemax_cross_entropy") -> HRM:
        return HRM(config, loss_type=loss_type)

    def sizes_from_state(self, arch: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """vocab_size and num_puzzle_identifiers from the embeddings' shapes; seq_len from learned positions."""
        learned = "embed_pos.embedding_weight" if arch.get("pos_encodings") == "learned" else None
        return sizes_from_state(arch, state, learned, _prefix_len)

    def config_from_checkpoint(self, arch: Mapping[str, Any]) -> HRMConfig:
        arch = dict(arch)
        # The official config class has no default for puzzle_emb_ndim other than 0.
        arch.setdefault("puzzle_emb_ndim", 0)
        # Required in the official config; default only what the official defaults.
        missing = [k for k in REQUIRED_KEYS if k not in arch]
        if missing:
            raise ValueError(f"arch block lacks {', '.join(missing)}")
        return self.config_from_dict(arch)

    def steps_per_segment(self, config: HRMConfig) -> int:
        return config.H_cycles  # one traced state per H update

    def segment_flops(self, config: HRMConfig) -> float:
        """Multiply-add FLOPs of one ACT segment of one row (matmuls and attention; norms and activations
        left out): the unit of work an early exit saves. A pass of the paper's procedure is
        ``halt_max_steps`` of them."""
        c = config
        t, h = c.seq_len + c.puzzle_emb_len, c.hidden_size
        inter = swiglu_width(h, c.expansion)
        per_token_layer = 2 * h * 4 * h + 2 * 2 * t * h + 2 * h * 3 * inter  # qkv + out, scores + values, SwiGLU
        layers = c.H_cycles * (c.L_cycles * c.L_layers + c.H_layers)
        return float(t * (layers * per_token_layer + 2 * h * c.vocab_size))

    def row_memory(self, config: HRMConfig) -> RowMemory:
        """Activations of one segment step on one row (float32): per position ~10 state-sized tensors (q, k, v,
        rotary copies, attention output, projection, residual, norm), 4 of the SwiGLU width and the LM head's
        logits; the attention scores (heads x P x P, twice: scores and softmax)."""
        c = config
        p, h = c.seq_len + c.puzzle_emb_len, c.hidden_size
        inter = swiglu_width(h, float(c.expansion))
        return RowMemory(steps_per_segment=c.H_cycles, cells=c.seq_len, positions=p, state_numbers=p * h,
                         forward_bytes=4 * (p * (10 * h + 4 * inter + c.vocab_size) + 2 * c.num_heads * p * p))

    def train_activation_bytes(self, config: HRMConfig) -> int:
        """Activations of one step on the per-process batch B of P = seq_len + puzzle_emb_len positions (fp32,
        4 bytes; bf16 needs less): the carry (z_H, z_L), the blocks that keep their graph for the one-step
        gradient (H_layers + L_layers), each ~10 state-sized tensors and 4 of the SwiGLU width per position and
        the attention scores (heads x P x P, scores and softmax), one more block's worth for the no-grad
        updates, and the logits with their loss (3 x P x vocab)."""
        c = config
        positions = c.seq_len + c.puzzle_emb_len
        per_block = positions * (10 * c.hidden_size + 4 * swiglu_width(c.hidden_size, c.expansion)) + 2 * c.num_heads * positions**2
        return 4 * c.batch_size * ((c.H_layers + c.L_layers + 1) * per_block + 2 * positions * c.hidden_size
                                   + 3 * positions * c.vocab_size)


ARCHITECTURE = HRMArchitecture()
HRM.architecture = ARCHITECTURE

# Official class names, for readers coming from the reference code.
HierarchicalReasoningModel_ACTV1Config = HRMConfig
HierarchicalReasoningModel_ACTV1_Inner = HRMInner
HierarchicalReasoningModel_ACTV1 = HRMACT
