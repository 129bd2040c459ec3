"""Puzzle embeddings and their optimiser (docs/reference-semantics.md §5 and §7).

The table ``weights`` [num_puzzle_identifiers, dim] is a persistent *buffer*, not
a parameter: it is not counted in the parameter total, not touched by the main
optimiser, and saved as ``...puzzle_emb.weights``. In training mode the rows of
the batch are copied into ``local_weights`` [batch_size, dim], a leaf tensor that
requires grad; after backward, :class:`SparseEmbeddingSignSGD` sums the gradient
per identifier and updates only those rows with sign-SGD plus decoupled weight
decay. In eval mode the rows are read straight from ``weights``.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from hrm.model.layers import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.register_buffer("weights", trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std), persistent=True)
        self.register_buffer("local_weights", torch.zeros(batch_size, embedding_dim, requires_grad=True), persistent=False)
        self.register_buffer("local_ids", torch.zeros(batch_size, dtype=torch.int32), persistent=False)

    def _apply(self, fn, recurse=True):
        # Moving a module (.to / .cuda) maps buffers through fn, which turns the
        # grad-requiring leaf ``local_weights`` into a non-leaf copy; make it a leaf again.
        super()._apply(fn, recurse)
        local = self.local_weights
        if local is not None and local.is_floating_point() and not (local.is_leaf and local.requires_grad):
            self.local_weights = local.detach().requires_grad_(True)
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[ids].to(self.cast_to)
        if ids.shape[0] != self.local_weights.shape[0]:
            raise ValueError(
                f"training batch has {ids.shape[0]} rows but the puzzle embedding was built for batch_size="
                f"{self.local_weights.shape[0]} (config.batch_size); build the model with the per-device batch size"
            )
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights.to(self.cast_to)


class SparseEmbeddingSignSGD(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay on the rows of a :class:`CastedSparseEmbedding` used in the batch.

    ``params`` is the embedding's buffers (``module.buffers()``: weights,
    local_weights, local_ids), as the official trainer passes them. Per step,
    for every identifier that occurs in the batch (gathered over all ranks when
    ``world_size > 1``): g = sum of its local gradients;
    w <- w * (1 - lr * weight_decay) - lr * sign(g). Other rows are untouched.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, weight_decay: float = 1e-2, world_size: int = 1):
        if lr < 0:
            raise ValueError(f"invalid learning rate: {lr}")
        if weight_decay < 0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, world_size=world_size))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            grad = ids = weights = None
            for p in group["params"]:
                if p.requires_grad:
                    grad = p.grad
                elif p.ndim == 1:
                    ids = p
                elif p.ndim == 2:
                    weights = p
            if ids is None or weights is None:
                raise ValueError("SparseEmbeddingSignSGD expects the buffers of a CastedSparseEmbedding (weights, local_weights, local_ids)")
            if grad is None:
                continue  # no backward since the last step
            sparse_sign_sgd_(weights, grad, ids, lr=group["lr"], weight_decay=group["weight_decay"], world_size=group["world_size"])
        return loss


def sparse_sign_sgd_(weights: torch.Tensor, local_grad: torch.Tensor, local_ids: torch.Tensor, lr: float, weight_decay: float, world_size: int = 1) -> None:
    """In place: sign-SGD with decoupled weight decay on the rows of ``weights`` named in ``local_ids``."""
    if world_size > 1:
        n, d = local_grad.shape
        all_grad = local_grad.new_empty(world_size * n, d)
        all_ids = local_ids.new_empty(world_size * n)
        dist.all_gather_into_tensor(all_grad, local_grad.contiguous())
        dist.all_gather_into_tensor(all_ids, local_ids.contiguous())
        local_grad, local_ids = all_grad, all_ids

    rows, inverse = local_ids.unique(return_inverse=True)
    summed = torch.zeros(len(rows), local_grad.shape[1], dtype=local_grad.dtype, device=local_grad.device)
    summed.index_add_(0, inverse, local_grad)
    updated = weights[rows] * (1.0 - lr * weight_decay) - lr * torch.sign(summed)
    weights[rows] = updated.to(weights.dtype)
