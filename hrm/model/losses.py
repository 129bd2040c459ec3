"""Losses and the ACT loss head (docs/reference-semantics.md §7).

Per-token loss: stablemax cross-entropy in float64 (the paper's default) or
softmax cross-entropy in float32, averaged over each sequence's label tokens
and summed over the batch. The ACT head adds 0.5 * (q_halt_loss + q_continue_loss):
BCE of q_halt against "the sequence is exactly right", and, in training, BCE of
q_continue against the bootstrapped target from the ACT wrapper. Metrics are
sums over the sequences that halted in this step (divide by ``count``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL_ID = -100


def _stablemax_s(x: torch.Tensor, epsilon: float = 1e-30) -> torch.Tensor:
    """s(x) = 1 / (1 - x) for x < 0, x + 1 otherwise (a positive, linear-growth stand-in for exp)."""
    return torch.where(x < 0, 1 / (1 - x + epsilon), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _stablemax_s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-token -log stablemax(logits)[label], in float64; 0 where label == ignore_index."""
    logprobs = log_stablemax(logits.to(torch.float64), dim=-1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, 0).to(torch.long)
    picked = logprobs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-token softmax cross-entropy in float32; 0 where label == ignore_index."""
    flat = F.cross_entropy(
        logits.to(torch.float32).reshape(-1, logits.shape[-1]),
        labels.to(torch.long).reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return flat.view(labels.shape)


LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


class ACTStepResult(NamedTuple):
    """What one ACT step of the loss head returns (unpacks like the official 5-tuple)."""

    carry: Any
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    all_halted: torch.Tensor


class ACTLossHead(nn.Module):
    """Wraps an ACT model (``initial_carry(batch)``, ``forward(carry, batch) -> (carry, outputs)``).

    The wrapped model is stored as ``self.model``, so state-dict keys start with ``model.``.
    """

    def __init__(self, model: nn.Module, loss_type: str = "stablemax_cross_entropy"):
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {sorted(LOSS_FUNCTIONS)}")
        self.model = model
        self.loss_type = loss_type
        self.loss_fn = LOSS_FUNCTIONS[loss_type]

    def initial_carry(self, batch: dict[str, torch.Tensor]):
        return self.model.initial_carry(batch)

    def forward(self, carry, batch: dict[str, torch.Tensor], return_keys: Sequence[str] = (), **model_kwargs) -> ACTStepResult:
        new_carry, outputs = self.model(carry, batch, **model_kwargs)
        labels = new_carry.current_data["labels"]
        logits = outputs["logits"]
        q_halt = outputs["q_halt_logits"]

        with torch.no_grad():
            mask = labels != IGNORE_LABEL_ID
            loss_counts = mask.sum(-1)
            loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)

            is_correct = mask & (logits.argmax(-1) == labels)
            seq_is_correct = is_correct.sum(-1) == loss_counts

            valid = new_carry.halted & (loss_counts > 0)
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid & seq_is_correct).sum(),
                "q_halt_accuracy": (valid & ((q_halt >= 0) == seq_is_correct)).sum(),
                "steps": torch.where(valid, new_carry.steps, 0).sum(),
            }

        lm_loss = (self.loss_fn(logits, labels, ignore_index=IGNORE_LABEL_ID) / loss_divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_is_correct.to(q_halt.dtype), reduction="sum")
        metrics["lm_loss"] = lm_loss.detach()
        metrics["q_halt_loss"] = q_halt_loss.detach()

        q_continue_loss: torch.Tensor | int = 0
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum")
            metrics["q_continue_loss"] = q_continue_loss.detach()

        loss = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
        kept = {k: outputs[k].detach() for k in return_keys if k in outputs}
        return ACTStepResult(new_carry, loss, metrics, kept, new_carry.halted.all())
