"""Optimiser and learning-rate schedule of the official trainer (docs/reference-semantics.md §7).

- :class:`AdamATan2`: Adam with ``atan2`` in place of the division by ``sqrt(v) + eps``
  (the ``adam-atan2`` package, whose kernel is CUDA-only; this one runs anywhere).
  Per step ``t``, in float32, for every parameter ``p`` with gradient ``g``::

      p *= 1 - lr * weight_decay                       # decoupled weight decay
      m  = lerp(m, g, 1 - beta1)                       # = beta1 * m + (1 - beta1) * g
      v  = beta2 * v + (1 - beta2) * g^2
      p -= lr / (1 - beta1^t) * atan2(m, sqrt(v) / sqrt(1 - beta2^t))

  No epsilon (atan2 is bounded, so ``v = 0`` is harmless) and no extra scale factors.
- :func:`cosine_schedule_lr`: linear warm-up from 0 over ``warmup_steps`` steps, then a
  half cosine from ``base_lr`` down to ``base_lr * min_ratio``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch


class AdamATan2(torch.optim.Optimizer):
    """Adam-atan2 with decoupled weight decay; see the module docstring for the exact update.

    Vectorised with ``torch._foreach_*`` ops over each parameter group (atan2 has no
    foreach kernel, so that single op runs per tensor). State per parameter:
    ``step`` (float32 scalar tensor on the CPU), ``exp_avg`` and ``exp_avg_sq``
    (like the parameter), so ``state_dict()`` / ``load_state_dict()`` work as for
    ``torch.optim.Adam``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 1e-2,
    ):
        if lr < 0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas} (each must be in [0, 1))")
        if weight_decay < 0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if params:
                beta1, beta2 = group["betas"]
                adam_atan2_(params, grads, exp_avgs, exp_avg_sqs, steps, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"])
        return loss


def adam_atan2_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """One AdamATan2 update of the given tensors, in place (functional form of :class:`AdamATan2`)."""
    torch._foreach_add_(steps, 1.0)

    if weight_decay != 0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)

    # Parameters usually share the step count; group by it so the scalars are computed once.
    by_step: dict[float, list[int]] = {}
    for i, s in enumerate(steps):
        by_step.setdefault(float(s.item()), []).append(i)
    for t, idx in by_step.items():
        bias_correction1 = 1.0 - beta1**t
        bias_correction2 = 1.0 - beta2**t
        step_size = lr / bias_correction1
        denom = torch._foreach_sqrt([exp_avg_sqs[i] for i in idx])
        torch._foreach_div_(denom, math.sqrt(bias_correction2))
        # No foreach kernel for atan2: one op per tensor, written into the denominator buffers.
        for j, i in enumerate(idx):
            torch.atan2(exp_avgs[i], denom[j], out=denom[j])
        torch._foreach_add_([params[i] for i in idx], denom, alpha=-step_size)


def cosine_schedule_lr(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, num_cycles: float = 0.5) -> float:
    """The official ``cosine_schedule_with_warmup_lr_lambda``: the learning rate at ``step``.

    The official trainer increments its step counter *before* computing the rate, so
    its first update uses ``step = 1`` (``base_lr / warmup_steps`` during warm-up).
    Warm-up: ``base_lr * step / max(1, warmup_steps)`` while ``step < warmup_steps``.
    Then ``base_lr * (min_ratio + max(0, (1 - min_ratio) * (1 + cos(2 pi num_cycles p)) / 2))``
    with progress ``p = (step - warmup) / max(1, total_steps - warmup)``.
    """
    if step < warmup_steps:
        return base_lr * float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + max(0.0, (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))))
