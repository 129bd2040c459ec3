"""The parts of a segment module that HRM (hrm.model.hrm) and TRM (hrm.model.trm) share, under the official
module names: a level of blocks (:class:`ReasoningModule`) and :class:`EmbeddedRecurrence` (token and puzzle
embeddings, position encoding, LM and Q heads, the learned initial states and the carry built from them).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from hrm.model.base import InnerCarry, Recurrence
from hrm.model.layers import CastedEmbedding, CastedLinear, CosSin, RotaryEmbedding, trunc_normal_init_
from hrm.model.sparse_embedding import CastedSparseEmbedding


STATE_PREFIX = "model.inner."  # the segment module's keys in a loss-head model's state dict


def sizes_from_state(arch: dict[str, Any], state: Mapping[str, torch.Tensor], positions_key: str | None,
                     prefix_len: Callable[[Mapping[str, Any]], int]) -> dict[str, Any]:
    """``arch`` with what the tensors tell where it lacks them: vocab_size and num_puzzle_identifiers from the
    embeddings' shapes; seq_len from the tensor ``positions_key`` names (one row per position: learned position
    embeddings, TRM's mlp_t), less the prefix (``prefix_len(arch)``)."""
    arch = dict(arch)
    if "vocab_size" not in arch and STATE_PREFIX + "embed_tokens.embedding_weight" in state:
        arch["vocab_size"] = state[STATE_PREFIX + "embed_tokens.embedding_weight"].shape[0]
    if "num_puzzle_identifiers" not in arch and STATE_PREFIX + "puzzle_emb.weights" in state:
        arch["num_puzzle_identifiers"] = state[STATE_PREFIX + "puzzle_emb.weights"].shape[0]
    if "seq_len" not in arch and positions_key is not None and STATE_PREFIX + positions_key in state:
        arch["seq_len"] = state[STATE_PREFIX + positions_key].shape[0] - prefix_len(arch)
    return arch


class ReasoningModule(nn.Module):
    """One level (HRM's H or L; TRM's one network): add the input injection to the state, then run the blocks."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor, input_injection: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(cos_sin=cos_sin, hidden_states=hidden_states)
        return hidden_states


class EmbeddedRecurrence(Recurrence):
    """What HRM's and TRM's segment modules share, in the official module names: the token + puzzle
    embeddings and position encoding (:meth:`build_io`, :meth:`input_embeddings`), the LM and Q heads,
    and the learned initial states H_init, L_init (:meth:`build_initial_states`, the carry methods).

    A subclass's ``__init__`` calls :meth:`build_io`, builds its levels, then :meth:`build_initial_states`:
    the official order of construction, so that a seed gives the official weights.
    """

    def build_io(self, config: Any, puzzle_emb_len: int) -> None:
        """Embeddings, heads, puzzle embedding (``puzzle_emb_len`` prefix positions) and rope / learned positions."""
        h = config.hidden_size
        self.embed_scale = math.sqrt(h)
        embed_std = 1.0 / self.embed_scale
        self.embed_tokens = CastedEmbedding(config.vocab_size, h, init_std=embed_std, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(h, config.vocab_size, bias=False)
        self.q_head = CastedLinear(h, 2, bias=True)

        self.puzzle_emb_len = puzzle_emb_len
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                config.num_puzzle_identifiers, config.puzzle_emb_ndim, batch_size=config.batch_size, init_std=0, cast_to=self.forward_dtype
            )

        total_len = config.seq_len + self.puzzle_emb_len
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(h // config.num_heads, max_position_embeddings=total_len, base=config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(total_len, h, init_std=embed_std, cast_to=self.forward_dtype)

    def build_initial_states(self, hidden_size: int) -> None:
        """H_init, L_init (saved buffers), and the Q head's start."""
        self.register_buffer("H_init", trunc_normal_init_(torch.empty(hidden_size, dtype=self.forward_dtype), std=1), persistent=True)
        self.register_buffer("L_init", trunc_normal_init_(torch.empty(hidden_size, dtype=self.forward_dtype), std=1), persistent=True)

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

    def segment_outputs(self, z_H: torch.Tensor, z_L: torch.Tensor) -> tuple[InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(detached carry, logits [B, seq_len, vocab] read from z_H, (q_halt, q_continue) float32 [B] from its first position)."""
        new_carry = InnerCarry(z_H=z_H.detach(), z_L=z_L.detach())
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :]
        q = self.q_head(z_H[:, 0]).to(torch.float32)
        return new_carry, logits, (q[..., 0], q[..., 1])
