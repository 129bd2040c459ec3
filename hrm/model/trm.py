"""The Tiny Recursive Model (TRM, "Less is More: Recursive Reasoning with Tiny Networks"; docs/architecture.md, "TRM"): one
architecture (hrm.model.base), registered as ``recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1``,
with the reference's config names and state-dict keys, so that its checkpoints (state dict + all_config.yaml)
load through :func:`hrm.model.load_checkpoint`.

One network (``L_level``: ``L_layers`` blocks; ``H_layers`` is read and ignored, as by the reference) updates
two states: z_L ("z", the latent reasoning) ``L_cycles`` times from (z_L, z_H + x), then z_H ("y", the answer)
once from (z_H, z_L): one *cycle*. A segment runs ``H_cycles`` cycles, all but the last without gradient; the
logits and Q values are read from z_H. A block mixes positions with attention, or with ``mlp_t`` a SwiGLU
across the positions (seq_len + puzzle_emb_len wide). The puzzle embedding takes ``puzzle_emb_len`` prefix
positions (16 by default; 0: ceil(puzzle_emb_ndim / hidden_size), as HRM). Halting: with
``no_ACT_continue`` (the default) a row halts when q_halt > 0 and the loss has no q_continue term.

:data:`ARCHITECTURE` is what the rest of the library asks: config from a dict, the model, steps and FLOPs per
segment, memory per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from hrm.model.act import ACTModel, RecurrentModel
from hrm.model.base import Architecture, InnerCarry, RowMemory, mistyped_fields, option
from hrm.model.layers import CosSin, PostNormBlock, SwiGLU, rms_norm, swiglu_width
from hrm.model.token_recurrence import EmbeddedRecurrence, ReasoningModule, sizes_from_state

ARCH_NAME = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
POS_ENCODINGS = ("rope", "learned", "none")


@dataclass
class TRMConfig:
    """The reference's config (TinyRecursiveReasoningModel_ACTV1Config) with its names. Defaults: its
    config/arch/trm.yaml (the attention variant; the Sudoku run sets mlp_t and pos_encodings none)."""

    batch_size: int = 768  # per-device training batch (size of the puzzle-embedding gradient buffer)
    seq_len: int = 81
    puzzle_emb_ndim: int = option(512, "Puzzle embedding width (0: none; the paper: hidden_size).", min=0)
    num_puzzle_identifiers: int = 1
    vocab_size: int = 11

    H_cycles: int = option(3, "Cycles per ACT segment (all but the last without gradient).", min=1)
    L_cycles: int = option(6, "z_L updates per cycle (then one z_H update).", min=1)
    H_layers: int = 0  # read and ignored, as by the reference (one network)
    L_layers: int = option(2, "Blocks in the one network.", min=1)

    hidden_size: int = option(512, "Model width.", min=1)
    expansion: float = option(4, "SwiGLU expansion factor.", min=0, min_open=True)
    num_heads: int = option(8, "Attention heads (hidden_size must be a multiple).", min=1)
    pos_encodings: str = option("rope", "Position encoding.", choices=POS_ENCODINGS)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = option(16, "Most ACT segments per puzzle.", min=1)
    halt_exploration_prob: float = option(0.1, "Probability of a random minimum number of segments.", min=0, max=1)

    forward_dtype: str = "bfloat16"  # "float32" | "bfloat16"

    mlp_t: bool = option(False, "Mix positions with an MLP across them instead of attention.")
    puzzle_emb_len: int = option(16, "Prefix positions of the puzzle embedding (0: ceil(puzzle_emb_ndim / hidden_size)).",
                                 min=0)
    no_ACT_continue: bool = option(True, "Halt on q_halt > 0 with no q_continue loss (else HRM's Q-learning).")

    def __post_init__(self) -> None:
        problems = [f"{name} must be {kind}, not {value!r}" for name, kind, value in mistyped_fields(self)]
        if not problems:  # the value checks assume numbers
            problems = self._value_problems()
        if problems:
            raise ValueError("invalid TRMConfig: " + "; ".join(problems))

    def _value_problems(self) -> list[str]:
        problems = [f"{name} must be >= 1" for name in ("batch_size", "seq_len", "vocab_size", "num_puzzle_identifiers",
                                                         "H_cycles", "L_cycles", "L_layers", "hidden_size", "num_heads",
                                                         "halt_max_steps") if getattr(self, name) < 1]
        problems += [f"{name} must be >= 0" for name in ("puzzle_emb_ndim", "puzzle_emb_len", "H_layers") if getattr(self, name) < 0]
        problems += [f"{name} must be > 0" for name in ("expansion", "rms_norm_eps", "rope_theta") if getattr(self, name) <= 0]
        if self.num_heads >= 1 and self.hidden_size % self.num_heads and (not self.mlp_t or self.pos_encodings == "rope"):
            problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.pos_encodings not in POS_ENCODINGS:
            problems.append(f"pos_encodings must be one of {', '.join(POS_ENCODINGS)}, not {self.pos_encodings!r}")
        if self.forward_dtype not in _DTYPES:
            problems.append(f"forward_dtype must be one of {sorted(_DTYPES)}, not {self.forward_dtype!r}")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            problems.append("halt_exploration_prob must be in [0, 1]")
        if problems:
            return problems
        # The prefix must hold the puzzle embedding, and exist only with one (the reference fails on a shape).
        if self.puzzle_emb_ndim == 0 and self.puzzle_emb_len > 0:
            problems.append(f"puzzle_emb_len must be 0 when puzzle_emb_ndim is 0, not {self.puzzle_emb_len}")
        elif self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            problems.append(f"puzzle_emb_len {self.puzzle_emb_len} x hidden_size {self.hidden_size} cannot hold "
                            f"puzzle_emb_ndim {self.puzzle_emb_ndim}")
        return problems

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.forward_dtype]

    @property
    def prefix_len(self) -> int:
        """Positions taken by the puzzle embedding: puzzle_emb_len, or for 0 ceil(puzzle_emb_ndim / hidden_size)."""
        return self.puzzle_emb_len if self.puzzle_emb_len else -(-self.puzzle_emb_ndim // self.hidden_size)

    @property
    def positions(self) -> int:
        """Positions of a state: prefix + seq_len (the width of mlp_t's MLP)."""
        return self.seq_len + self.prefix_len


# ----------------------------------------------------------------------------- modules


class MLPMixerBlock(nn.Module):
    """The ``mlp_t`` block: x = rms_norm over positions of (x + mlp_t across positions), then rms_norm(x + mlp(x)).
    The first norm runs on the transposed state, across positions, as the reference does."""

    def __init__(self, positions: int, hidden_size: int, expansion: float, rms_norm_eps: float):
        super().__init__()
        self.mlp_t = SwiGLU(positions, expansion)
        self.mlp = SwiGLU(hidden_size, expansion)
        self.norm_eps = rms_norm_eps

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        across = hidden_states.transpose(1, 2)  # [B, hidden, positions]
        hidden_states = rms_norm(across + self.mlp_t(across), self.norm_eps).transpose(1, 2)
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)


class TRMInner(EmbeddedRecurrence):
    """One ACT segment: H_cycles cycles of (L_cycles z_L updates, one z_H update) by one network; gradient
    through the last cycle only."""

    def __init__(self, config: TRMConfig):
        super().__init__()
        self.config = config
        self.forward_dtype = config.dtype
        self.build_io(config, config.prefix_len)

        def block() -> nn.Module:
            if config.mlp_t:
                return MLPMixerBlock(config.positions, config.hidden_size, config.expansion, config.rms_norm_eps)
            return PostNormBlock(config.hidden_size, config.num_heads, config.expansion, config.rms_norm_eps)

        self.L_level = ReasoningModule([block() for _ in range(config.L_layers)])
        self.build_initial_states(config.hidden_size)

    def cycle(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_cycles updates of z_L from (z_L, z_H + x), then one of z_H from (z_H, z_L): one traced step."""
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
        return self.L_level(z_H, z_L, cos_sin=cos_sin), z_L

    def forward(
        self, carry: InnerCarry, batch: Mapping[str, torch.Tensor], trace: list | None = None
    ) -> tuple[InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run one segment. Returns (detached new carry, logits [B, seq_len, vocab], (q_halt, q_continue) float32 [B]).

        With ``trace`` a list, appends (z_H, z_L) detached after every cycle (H_cycles entries).
        """
        cos_sin = self.rotary_emb() if hasattr(self, "rotary_emb") else None
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                z_H, z_L = self.cycle(z_H, z_L, x, cos_sin)
                if trace is not None:
                    trace.append((z_H.detach(), z_L.detach()))
        z_H, z_L = self.cycle(z_H, z_L, x, cos_sin)  # the one cycle with gradient
        if trace is not None:
            trace.append((z_H.detach(), z_L.detach()))
        return self.segment_outputs(z_H, z_L)


class TRMACT(ACTModel):
    """The ACT wrapper around :class:`TRMInner` (the reference's TinyRecursiveReasoningModel_ACTV1)."""

    def __init__(self, config: TRMConfig):
        super().__init__(config, TRMInner(config))

    def halt_signal(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        return q_halt > 0 if self.config.no_ACT_continue else q_halt > q_continue

    def continue_target(self, inner_carry: Any, data: Mapping[str, torch.Tensor], is_last_step: torch.Tensor) -> torch.Tensor | None:
        # no_ACT_continue: no extra forward, no q_continue loss. Without it the reference fails (it unpacks the
        # segment's 3 outputs into 5); HRM's bootstrapped target is what its code means.
        return None if self.config.no_ACT_continue else super().continue_target(inner_carry, data, is_last_step)


class TRM(RecurrentModel):
    """TRM + ACT + loss head: the module the reference trainer saves (state-dict keys ``model.inner....``)."""

    def __init__(self, config: TRMConfig | None = None, loss_type: str = "stablemax_cross_entropy"):
        super().__init__(TRMACT(config or TRMConfig()), loss_type=loss_type)


# ----------------------------------------------------------------------------- the architecture

# The keys the reference config class requires (no default there); a checkpoint's arch block must have them.
REQUIRED_KEYS = ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "expansion", "num_heads", "pos_encodings",
                 "halt_max_steps", "halt_exploration_prob")


def _prefix_len(arch: Mapping[str, Any]) -> int:
    """The puzzle embedding's prefix positions an arch block implies: puzzle_emb_len (default 16), for 0 HRM's."""
    hidden = int(arch.get("hidden_size", TRMConfig.hidden_size))
    return int(arch.get("puzzle_emb_len", 16)) or -(-int(arch.get("puzzle_emb_ndim", 0)) // hidden)


class TRMArchitecture(Architecture):
    """TRM as the library asks it (hrm.model.base.Architecture)."""

    name = ARCH_NAME
    label = "TRM"
    config_class = TRMConfig
    option_order = ("hidden_size", "num_heads", "expansion", "L_layers", "H_cycles", "L_cycles", "halt_max_steps",
                    "halt_exploration_prob", "pos_encodings", "puzzle_emb_ndim", "puzzle_emb_len", "mlp_t", "no_ACT_continue")

    def accepts(self, name: str) -> bool:
        # Any path to the reference's trm module (models.recursive_reasoning.trm, ...) with its class; not the
        # ablations trm_singlez and trm_hier6, other models under the same class name.
        module, _, cls = str(name).rpartition("@")
        return cls == "TinyRecursiveReasoningModel_ACTV1" and module.rpartition(".")[2] == "trm"

    def build(self, config: TRMConfig, loss_type: str = "stablemax_cross_entropy") -> TRM:
        return TRM(config, loss_type=loss_type)

    def sizes_from_state(self, arch: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """vocab_size and num_puzzle_identifiers from the embeddings' shapes; seq_len from the positions that
        learned position embeddings or mlp_t's MLP are made for, less the prefix."""
        positions = None
        if arch.get("pos_encodings") == "learned":
            positions = "embed_pos.embedding_weight"
        elif arch.get("mlp_t"):
            positions = "L_level.layers.0.mlp_t.down_proj.weight"
        return sizes_from_state(arch, state, positions, _prefix_len)

    def config_from_checkpoint(self, arch: Mapping[str, Any]) -> TRMConfig:
        arch = dict(arch)
        arch.setdefault("puzzle_emb_ndim", 0)  # the reference's default
        missing = [k for k in REQUIRED_KEYS if k not in arch]
        if missing:
            raise ValueError(f"arch block lacks {', '.join(missing)}")
        return self.config_from_dict(arch)

    def steps_per_segment(self, config: TRMConfig) -> int:
        return config.H_cycles  # one traced state per z_H update

    def _block_flops(self, config: TRMConfig) -> float:
        """Multiply-add FLOPs of one block on one row: the position mixing (attention or mlp_t) and the SwiGLU."""
        c = config
        t, h = c.positions, c.hidden_size
        channel_mlp = t * 2 * h * 3 * swiglu_width(h, c.expansion)
        if c.mlp_t:
            return float(channel_mlp + h * 2 * t * 3 * swiglu_width(t, c.expansion))
        return float(channel_mlp + t * (2 * h * 4 * h + 2 * 2 * t * h))  # qkv + out, scores + values

    def segment_flops(self, config: TRMConfig) -> float:
        """Multiply-add FLOPs of one ACT segment of one row (matmuls and attention; norms and activations left out):
        H_cycles x (L_cycles + 1) passes of the L_layers blocks, and the LM head."""
        c = config
        passes = c.H_cycles * (c.L_cycles + 1) * c.L_layers
        return passes * self._block_flops(c) + float(c.positions * 2 * c.hidden_size * c.vocab_size)

    def _mixing_numbers(self, config: TRMConfig) -> int:
        """Activations of the position mixing on one row beyond the state-sized ones: attention scores (heads x P x P,
        twice) or mlp_t's hidden layer (hidden x 4 of its width)."""
        c = config
        if c.mlp_t:
            return 4 * c.hidden_size * swiglu_width(c.positions, c.expansion)
        return 2 * c.num_heads * c.positions**2

    def row_memory(self, config: TRMConfig) -> RowMemory:
        """Activations of one block step on one row (float32), as HRM's estimate: per position ~10 state-sized tensors,
        4 of the SwiGLU width and the logits; plus the position mixing (:meth:`_mixing_numbers`)."""
        c = config
        p, h = c.positions, c.hidden_size
        inter = swiglu_width(h, float(c.expansion))
        return RowMemory(steps_per_segment=c.H_cycles, cells=c.seq_len, positions=p, state_numbers=p * h,
                         forward_bytes=4 * (p * (10 * h + 4 * inter + c.vocab_size) + self._mixing_numbers(c)))

    def train_activation_bytes(self, config: TRMConfig) -> int:
        """Activations of one step on the per-process batch (fp32): the carry, the blocks of the cycle that keeps its
        graph ((L_cycles + 1) x L_layers), one more for the no-grad cycles, and the logits with their loss."""
        c = config
        p, h = c.positions, c.hidden_size
        per_block = p * (10 * h + 4 * swiglu_width(h, c.expansion)) + self._mixing_numbers(c)
        blocks = (c.L_cycles + 1) * c.L_layers + 1
        return 4 * c.batch_size * (blocks * per_block + 2 * p * h + 3 * p * c.vocab_size)


ARCHITECTURE = TRMArchitecture()
TRM.architecture = ARCHITECTURE

# The reference's class names, for readers coming from its code.
TinyRecursiveReasoningModel_ACTV1Config = TRMConfig
TinyRecursiveReasoningModel_ACTV1_Inner = TRMInner
TinyRecursiveReasoningModel_ACTV1 = TRMACT
