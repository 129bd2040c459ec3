"""hrm.optim: AdamATan2 against the formula of docs/reference-semantics.md §7, and the lr schedule."""

import math

import numpy as np
import pytest
import torch

from hrm.optim import AdamATan2, cosine_schedule_lr


def naive_adam_atan2(p0, grads, lr, beta1, beta2, wd):
    """The formula, element by element, in float32 (numpy scalars)."""
    f = np.float32
    p = p0.astype(np.float32).ravel().copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float32).ravel()
        bc1 = f(1 - beta1**t)
        bc2 = f(1 - beta2**t)
        for i in range(p.size):
            p[i] = p[i] * f(1 - lr * wd)
            m[i] = m[i] + f(1 - beta1) * (g[i] - m[i])
            v[i] = f(beta2) * v[i] + f(1 - beta2) * g[i] * g[i]
            p[i] = p[i] - f(lr) / bc1 * np.arctan2(m[i], np.sqrt(v[i]) / np.sqrt(bc2))
    return p.reshape(p0.shape)


@pytest.mark.parametrize("wd", [0.0, 1.0])
def test_adam_atan2_matches_formula(wd):
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    steps = 6
    grads = [[rng.normal(scale=10 ** rng.uniform(-3, 1), size=s).astype(np.float32) for s in shapes] for _ in range(steps)]
    grads[2][1][:] = 0  # a zero gradient: v may be 0 for some elements, atan2(0, 0) = 0
    lr, beta1, beta2 = 3e-2, 0.9, 0.95

    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    opt = AdamATan2(params, lr=lr, betas=(beta1, beta2), weight_decay=wd)
    for t in range(steps):
        for p, g in zip(params, grads[t]):
            p.grad = torch.from_numpy(g)
        opt.step()
    for k, p in enumerate(params):
        want = naive_adam_atan2(init[k], [grads[t][k] for t in range(steps)], lr, beta1, beta2, wd)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=0, atol=2e-6)
        assert opt.state[p]["step"].item() == steps


def test_adam_atan2_first_step_is_sign_like():
    # t = 1: m = (1-b1) g, sqrt(v)/sqrt(1-b2) = |g|, so p -= lr * atan2((1-b1) g, |g|) / (1-b1).
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    p.grad = torch.tensor([4.0, -0.01, 0.0])
    AdamATan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0).step()
    want = torch.tensor([1.0, -2.0, 0.5]) - 0.1 / 0.1 * torch.atan2(0.1 * torch.tensor([4.0, -0.01, 0.0]), torch.tensor([4.0, 0.01, 0.0]))
    assert torch.allclose(p.detach(), want, atol=1e-7)


def test_adam_atan2_skips_params_without_grad_and_uses_group_lr():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = AdamATan2([a, b], lr=0.0, weight_decay=0.5)
    a.grad = torch.ones(3)
    opt.param_groups[0]["lr"] = 0.01  # the trainer sets the rate every step
    opt.step()
    assert not torch.equal(a.detach(), torch.ones(3))
    assert torch.equal(b.detach(), torch.ones(3)) and b not in opt.state
    opt2 = AdamATan2([torch.nn.Parameter(torch.ones(2))], lr=0.0)
    opt2.param_groups[0]["params"][0].grad = torch.ones(2)
    opt2.step()  # lr = 0 is allowed (the official CUDA optimiser allows it too) and changes nothing
    assert torch.equal(opt2.param_groups[0]["params"][0].detach(), torch.ones(2))


def test_adam_atan2_state_dict_roundtrip():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(16, 4)

    def step(m, opt):
        m.zero_grad()
        m(x).square().sum().backward()
        opt.step()

    opt = AdamATan2(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(3):
        step(model, opt)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = opt.state_dict()
    import io

    buf = io.BytesIO()
    torch.save(saved_opt, buf)
    for _ in range(3):
        step(model, opt)
    want = {k: v.clone() for k, v in model.state_dict().items()}

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model2.load_state_dict(saved_model)
    opt2 = AdamATan2(model2.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(3):
        step(model2, opt2)
    for k in want:
        assert torch.equal(model2.state_dict()[k], want[k]), k


def test_adam_atan2_rejects_bad_args():
    p = [torch.nn.Parameter(torch.ones(1))]
    with pytest.raises(ValueError):
        AdamATan2(p, lr=-1)
    with pytest.raises(ValueError):
        AdamATan2(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        AdamATan2(p, weight_decay=-0.1)


def test_cosine_schedule_key_points():
    kw = dict(base_lr=1e-3, warmup_steps=100, total_steps=1100)
    assert cosine_schedule_lr(0, **kw) == 0.0
    assert cosine_schedule_lr(1, **kw) == pytest.approx(1e-5)
    assert cosine_schedule_lr(50, **kw) == pytest.approx(5e-4)
    assert cosine_schedule_lr(100, **kw) == pytest.approx(1e-3)  # end of warm-up: the full rate
    assert cosine_schedule_lr(600, **kw) == pytest.approx(5e-4)  # half way down the cosine
    assert cosine_schedule_lr(1100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert cosine_schedule_lr(1100, min_ratio=0.1, **kw) == pytest.approx(1e-4)
    assert cosine_schedule_lr(600, min_ratio=0.1, **kw) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert cosine_schedule_lr(350, min_ratio=0.1, **kw) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))))
    # Past the end the cosine would rise again; max(0, .) only clips negatives: same as the official.
    assert cosine_schedule_lr(1600, **kw) == pytest.approx(5e-4)
    # Paper: min_ratio 1.0 -> constant after warm-up.
    for s in (2000, 10_000, 26_000):
        assert cosine_schedule_lr(s, base_lr=1e-4, warmup_steps=2000, total_steps=26_000, min_ratio=1.0) == pytest.approx(1e-4)
    assert cosine_schedule_lr(0, base_lr=1e-3, warmup_steps=0, total_steps=10) == pytest.approx(1e-3)
