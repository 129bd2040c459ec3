"""hrm.model: structure at the paper config, golden equivalence with the official code, ACT semantics."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from golden_helpers import assert_gradients_and_sparse_step_match
import hrm
from hrm.model import HRM, CastedSparseEmbedding, CheckpointError, HRMConfig, SparseEmbeddingSignSGD, save_checkpoint
from hrm.model.hrm import resolve_device
from hrm.model.layers import swiglu_width, trunc_normal_init_
from hrm.model.losses import softmax_cross_entropy, stablemax_cross_entropy

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAPER_PARAMS = 27_275_266


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**kw):
    base = dict(batch_size=4, seq_len=81, puzzle_emb_ndim=32, num_puzzle_identifiers=2, vocab_size=11, H_cycles=2, L_cycles=2,
                H_layers=2, L_layers=2, hidden_size=32, expansion=2, num_heads=4, pos_encodings="rope", halt_max_steps=4,
                halt_exploration_prob=0.1, forward_dtype="float32")
    return HRMConfig(**{**base, **kw})


def sudoku_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 11, (n, 81), generator=g, dtype=torch.int32)
    inputs = torch.where(torch.rand(n, 81, generator=g) < 0.5, labels, torch.ones_like(labels))
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(n, dtype=torch.int32)}


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = HRM(tiny_config(**kw))
    with torch.no_grad():  # make the Q head matter
        model.inner.q_head.weight.normal_(0, 0.3)
    return model


# ----------------------------------------------------------------------------- paper config


def paper_expected_keys():
    keys = {
        "model.inner.H_init": (512,),
        "model.inner.L_init": (512,),
        "model.inner.embed_tokens.embedding_weight": (11, 512),
        "model.inner.lm_head.weight": (11, 512),
        "model.inner.q_head.weight": (2, 512),
        "model.inner.q_head.bias": (2,),
        "model.inner.puzzle_emb.weights": (1, 512),
    }
    for level in "HL":
        for n in range(4):
            p = f"model.inner.{level}_level.layers.{n}."
            keys[p + "self_attn.qkv_proj.weight"] = (1536, 512)
            keys[p + "self_attn.o_proj.weight"] = (512, 512)
            keys[p + "mlp.gate_up_proj.weight"] = (3072, 512)
            keys[p + "mlp.down_proj.weight"] = (512, 1536)
    return keys


@pytest.fixture(scope="module")
def paper_meta():
    with torch.device("meta"):
        return HRM(HRMConfig())


def test_paper_config_parameter_count(paper_meta):
    assert sum(p.numel() for p in paper_meta.parameters()) == PAPER_PARAMS
    assert swiglu_width(512, 4) == 1536


def test_paper_config_state_dict_keys(paper_meta):
    got = {k: tuple(v.shape) for k, v in paper_meta.state_dict().items()}
    assert got == paper_expected_keys()


# ----------------------------------------------------------------------------- golden equivalence


def load_ref(pos, name="reference.pt"):
    return torch.load(FIXTURES / f"official_tiny_{pos}" / name, weights_only=True)


def max_diffs(pred, ev):
    return [
        max((pred.logits[s] - ev["logits"][s]).abs().max().item(),
            (pred.q_halt[s] - ev["q_halt"][s]).abs().max().item(),
            (pred.q_continue[s] - ev["q_continue"][s]).abs().max().item())
        for s in range(ev["logits"].shape[0])
    ]


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_golden_eval_matches_official(pos):
    ref = load_ref(pos)
    model = hrm.load_checkpoint(FIXTURES / f"official_tiny_{pos}" / "step_0", device="cpu")
    assert not model.training
    cfg = model.config
    assert (cfg.pos_encodings, cfg.hidden_size, cfg.num_puzzle_identifiers, cfg.seq_len, cfg.vocab_size) == (pos, 32, 3, 81, 11)
    batch = ref["batch"]
    pred = model.predict(batch["inputs"], batch["puzzle_identifiers"])
    assert pred.logits.shape == ref["eval"]["logits"].shape
    assert max(max_diffs(pred, ref["eval"])) <= 1e-4

    # The same through the ACT wrapper + loss head in eval mode: losses, metrics, halting.
    carry = model.initial_carry(batch)
    with torch.no_grad():
        for s in range(cfg.halt_max_steps):
            carry, loss, metrics, outputs, all_halted = model(carry, batch, return_keys=["logits"])
            assert (outputs["logits"] - ref["eval"]["logits"][s]).abs().max() <= 1e-4
            assert abs(loss.item() - ref["eval"]["loss"][s].item()) <= 1e-4
            for k, v in ref["eval"]["metrics"][s].items():
                assert abs(metrics[k].item() - v.item()) <= 1e-4, k
            assert torch.equal(carry.halted, ref["eval"]["halted"][s])
            assert torch.equal(carry.steps, ref["eval"]["steps"][s])
    assert all_halted


def test_golden_orig_mod_prefix(tmp_path):
    src = FIXTURES / "official_tiny_rope"
    state = torch.load(src / "step_0", weights_only=True)
    torch.save({"_orig_mod." + k: v for k, v in state.items()}, tmp_path / "step_7")
    shutil.copy(src / "all_config.yaml", tmp_path / "all_config.yaml")
    ref = load_ref("rope")
    model = hrm.load_checkpoint(tmp_path, device="cpu")  # a folder: its latest step_N
    pred = model.predict(ref["batch"]["inputs"], ref["batch"]["puzzle_identifiers"])
    assert max(max_diffs(pred, ref["eval"])) <= 1e-4


def test_golden_bfloat16():
    ref = load_ref("rope")
    model = hrm.load_checkpoint(FIXTURES / "official_tiny_rope" / "step_0", device="cpu", forward_dtype="bfloat16")
    pred = model.predict(ref["batch"]["inputs"], ref["batch"]["puzzle_identifiers"])
    ev = ref["eval_bf16"]
    assert (pred.logits - ev["logits"].float()).abs().max() <= 2e-2
    assert (pred.q_halt - ev["q_halt"]).abs().max() <= 2e-2


def fixture_model(**overrides):
    base = hrm.load_checkpoint(FIXTURES / "official_tiny_rope" / "step_0", device="cpu")
    model = HRM(HRMConfig.from_dict({**base.config.to_dict(), **overrides}))
    model.load_state_dict(base.state_dict())
    return model.train()


def test_golden_training_step():
    ref = load_ref("rope", "train_reference.pt")
    ts = ref["train_step"]
    model = fixture_model(halt_exploration_prob=0.0)
    batch = ref["batch"]
    torch.manual_seed(ts["seed"])
    carry, loss, metrics, outputs, _ = model(model.initial_carry(batch), batch, return_keys=["q_halt_logits", "q_continue_logits", "target_q_continue"])
    (loss / model.config.batch_size).backward()
    assert abs(loss.item() - ts["loss"].item()) <= 1e-5
    for k, v in ts["metrics"].items():
        assert abs(metrics[k].item() - v.item()) <= 1e-5, k
    for k, v in ts["outputs"].items():
        assert (outputs[k] - v).abs().max() <= 1e-5, k
    assert torch.equal(carry.halted, ts["halted"]) and torch.equal(carry.steps, ts["steps"])

    assert_gradients_and_sparse_step_match(model, ts)


def test_golden_training_rollout_with_exploration():
    ref = load_ref("rope", "train_reference.pt")
    ro = ref["train_rollout"]
    model = fixture_model(halt_exploration_prob=ro["halt_exploration_prob"])
    batches = [ref["batch"], ro["batch2"]]
    torch.manual_seed(ro["seed"])
    carry = model.initial_carry(batches[0])
    with torch.no_grad():
        for t, step in enumerate(ro["steps"]):
            carry, loss, metrics, outputs, _ = model(carry, batches[t % 2], return_keys=["target_q_continue"])
            assert torch.equal(carry.halted, step["halted"]), t
            assert torch.equal(carry.steps, step["steps"]), t
            assert torch.equal(carry.current_data["inputs"], step["inputs"]), t
            assert abs(loss.item() - step["loss"].item()) <= 1e-4, t
            assert (outputs["target_q_continue"] - step["outputs"]["target_q_continue"]).abs().max() <= 1e-5


# ----------------------------------------------------------------------------- checkpoint I/O


def test_wrong_shape_checkpoint_lists_every_problem(tmp_path):
    src = FIXTURES / "official_tiny_rope"
    state = torch.load(src / "step_0", weights_only=True)
    state["model.inner.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "step_1")
    cfg = yaml.safe_load((src / "all_config.yaml").read_text())
    cfg["arch"]["H_layers"] = 3  # missing layer-2 keys
    cfg["arch"]["expansion"] = 16  # SwiGLU width 512 instead of 256: shape mismatches
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError) as err:
        hrm.load_checkpoint(tmp_path / "step_1", device="cpu")
    msg = str(err.value)
    assert str(tmp_path / "step_1") in msg
    for k in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
        assert f"missing key: model.inner.H_level.layers.2.{k}.weight" in msg
    assert "unexpected key: model.inner.extra.weight (shape [3])" in msg
    assert "shape mismatch: model.inner.L_level.layers.1.mlp.gate_up_proj.weight: expected [1024, 32], found [512, 32]" in msg
    assert "shape mismatch: model.inner.H_level.layers.0.mlp.down_proj.weight: expected [32, 512], found [32, 256]" in msg
    assert msg.count("shape mismatch") == 8  # gate_up and down of H layers 0-1 and L layers 0-1
    assert msg.count("missing key") == 4


def test_missing_config_names_expected_path(tmp_path):
    shutil.copy(FIXTURES / "official_tiny_rope" / "step_0", tmp_path / "step_0")
    with pytest.raises(CheckpointError, match="all_config.yaml") as err:
        hrm.load_checkpoint(tmp_path / "step_0", device="cpu")
    assert str(tmp_path / "all_config.yaml") in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        hrm.load_checkpoint(tmp_path / "nope", device="cpu")
    cfg = yaml.safe_load((FIXTURES / "official_tiny_rope" / "all_config.yaml").read_text())
    cfg["arch"]["name"] = "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1"  # a TRM ablation
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="only .* is supported"):
        hrm.load_checkpoint(tmp_path / "step_0", device="cpu")


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(pos_encodings="learned", seq_len=81).eval()
    path = save_checkpoint(model, tmp_path / "run" / "step_3", extra_config={"lr": 1e-4})
    cfg = yaml.safe_load((path.parent / "all_config.yaml").read_text())
    assert cfg["lr"] == 1e-4 and cfg["arch"]["hidden_size"] == 32 and cfg["arch"]["loss"]["loss_type"] == "stablemax_cross_entropy"
    loaded = hrm.load_checkpoint(path, device="cpu")
    assert loaded.config == model.config
    x = sudoku_batch(3)["inputs"]
    assert torch.equal(loaded.predict(x).logits, model.predict(x).logits)


# ----------------------------------------------------------------------------- inference API


def test_predict_shapes_trace_and_determinism():
    model = tiny_model().eval()
    cfg = model.config
    x = sudoku_batch(3)["inputs"].numpy().astype(np.uint8)
    a = model.predict(x, trace=True)
    S, B = cfg.halt_max_steps, 3
    assert a.logits.shape == (S, B, 81, 11) and a.logits.dtype == torch.float32
    assert a.q_halt.shape == a.q_continue.shape == (S, B)
    assert a.predictions.shape == (B, 81) and torch.equal(a.predictions, a.logits[-1].argmax(-1))
    assert torch.equal(a.halted, a.q_halt[-1] > a.q_continue[-1])
    assert a.z_H.shape == a.z_L.shape == (S * cfg.H_cycles, B, 82, cfg.hidden_size)
    # the last traced state decodes to the last logits
    assert torch.allclose(model.inner.lm_head(a.z_H[-1])[:, 1:], a.logits[-1], atol=1e-6)
    b = model.predict(torch.as_tensor(x), puzzle_identifiers=np.zeros(3, dtype=np.int64))
    assert torch.equal(a.logits, b.logits) and b.z_H is None
    two = model.predict(x, segments=2)
    assert torch.equal(two.logits, a.logits[:2])
    six = model.predict(x[0], segments=6)  # one puzzle; more segments than halt_max_steps
    assert six.logits.shape == (6, 1, 81, 11) and torch.equal(six.logits[:S], a.logits[:, :1])
    with pytest.raises(ValueError, match="shape"):
        model.predict(x[:, :80])
    with pytest.raises(ValueError, match="outside"):
        model.predict(np.full((1, 81), 11))
    flat = tiny_model(puzzle_emb_ndim=0, pos_encodings="learned").predict(x, segments=1, trace=True)
    assert flat.z_H.shape == (cfg.H_cycles, B, 81, cfg.hidden_size)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_bfloat16_forward_on_cpu():
    model = tiny_model(forward_dtype="bfloat16")
    pred = model.predict(sudoku_batch(2)["inputs"], trace=True)
    assert torch.isfinite(pred.logits).all() and torch.isfinite(pred.z_H).all()
    assert model.inner.embed_tokens.embedding_weight.dtype == torch.float32  # fp32 master weights
    batch = sudoku_batch(4)
    carry, loss, *_ = model.train()(model.initial_carry(batch), batch)
    loss.backward()
    assert carry.inner_carry.z_H.dtype == torch.bfloat16
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ----------------------------------------------------------------------------- training semantics


def test_training_step_one_step_gradient():
    model = tiny_model().train()
    cfg = model.config
    calls = {"H": [], "L": []}
    for name in "HL":
        getattr(model.inner, f"{name}_level").register_forward_hook(lambda m, i, o, name=name: calls[name].append(torch.is_grad_enabled()))
    batch = sudoku_batch(cfg.batch_size)
    carry = model.initial_carry(batch)
    for _ in range(2):
        for v in calls.values():
            v.clear()
        carry, loss, metrics, _, _ = model(carry, batch)
        # one segment + the target-Q segment; only the final L and H updates of the first carry grad
        assert calls["L"] == [False] * (cfg.H_cycles * cfg.L_cycles - 1) + [True] + [False] * cfg.H_cycles * cfg.L_cycles
        assert calls["H"] == [False] * (cfg.H_cycles - 1) + [True] + [False] * cfg.H_cycles
        model.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert model.puzzle_emb.local_weights.grad is not None
        assert not carry.inner_carry.z_H.requires_grad and carry.inner_carry.z_H.grad_fn is None
        assert not carry.inner_carry.z_L.requires_grad and carry.inner_carry.z_L.grad_fn is None
        assert set(metrics) == {"count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss", "q_continue_loss"}
        assert not any(v.requires_grad for v in metrics.values())


def run_steps(model, batch, n, **kw):
    carry = model.initial_carry(batch)
    out = []
    with torch.no_grad():
        for _ in range(n):
            carry, loss, metrics, outputs, all_halted = model(carry, batch, **kw)
            out.append((carry.steps.clone(), carry.halted.clone(), outputs, all_halted))
    return out


def set_q_bias(model, halt, cont):
    with torch.no_grad():
        model.inner.q_head.weight.zero_()
        model.inner.q_head.bias.copy_(torch.tensor([halt, cont]))


def test_halting_train_mode():
    batch = sudoku_batch(16)
    model = tiny_model(batch_size=16, halt_exploration_prob=0.0).train()
    set_q_bias(model, -5.0, 5.0)  # never wants to halt: halts at halt_max_steps
    H = model.config.halt_max_steps
    out = run_steps(model, batch, H + 1, return_keys=["target_q_continue"])
    for t, (steps, halted, outputs, all_halted) in enumerate(out[:H]):
        assert (steps == t + 1).all() and bool(halted.all()) == (t == H - 1) and "target_q_continue" in outputs
    assert (out[H][0] == 1).all()  # restarted on the next batch

    set_q_bias(model, 5.0, -5.0)  # wants to halt at once
    out = run_steps(model, batch, 1)
    assert out[0][1].all()

    model = tiny_model(batch_size=16, halt_exploration_prob=1.0).train()
    set_q_bias(model, 5.0, -5.0)  # exploration: every row first runs a minimum of uniform{2..H} steps
    g = torch.Generator().manual_seed(0)
    out = run_steps(model, batch, H, generator=g)
    halt_step = torch.full((16,), H + 1)
    for t, (steps, halted, _, _) in enumerate(out):
        halt_step = torch.where(halted & (halt_step > H), t + 1, halt_step)
    assert (halt_step >= 2).all() and (halt_step <= H).all() and len(set(halt_step.tolist())) > 1


def test_halting_eval_mode():
    batch = sudoku_batch(8)
    model = tiny_model(batch_size=8, halt_exploration_prob=1.0).eval()
    set_q_bias(model, 5.0, -5.0)  # wants to halt, but evaluation always runs halt_max_steps
    H = model.config.halt_max_steps
    out = run_steps(model, batch, H)
    for t, (steps, halted, outputs, all_halted) in enumerate(out):
        assert (steps == t + 1).all() and bool(halted.any()) == (t == H - 1) and bool(all_halted) == (t == H - 1)
        assert "target_q_continue" not in outputs


def test_halted_rows_reload_the_next_batch():
    model = tiny_model(batch_size=4, halt_exploration_prob=0.0).train()
    b1, b2 = sudoku_batch(4, seed=1), sudoku_batch(4, seed=2)
    with torch.no_grad():
        model.inner.q_head.weight.zero_()
        model.inner.q_head.bias.copy_(torch.tensor([-5.0, 5.0]))
        carry = model.initial_carry(b1)
        carry, *_ = model(carry, b1)
        carry.halted[:] = torch.tensor([True, False, True, False])  # pretend rows 0 and 2 halted
        carry, *_ = model(carry, b2)
    expect = torch.where(torch.tensor([True, False, True, False])[:, None], b2["inputs"], b1["inputs"])
    assert torch.equal(carry.current_data["inputs"], expect)
    assert carry.steps.tolist() == [1, 2, 1, 2]


# ----------------------------------------------------------------------------- pieces


def test_sparse_embedding_updates_only_used_rows():
    emb = CastedSparseEmbedding(5, 3, batch_size=4, init_std=1.0, cast_to=torch.float32).train()
    before = emb.weights.clone()
    ids = torch.tensor([1, 3, 1, 3], dtype=torch.int32)
    (emb(ids) * torch.tensor([[1.0, -1.0, 0.0]])).sum().backward()
    SparseEmbeddingSignSGD(emb.buffers(), lr=0.1, weight_decay=0.5).step()
    assert torch.equal(emb.weights[[0, 2, 4]], before[[0, 2, 4]])
    expect = before[[1, 3]] * (1 - 0.05) - 0.1 * torch.tensor([1.0, -1.0, 0.0])
    assert torch.allclose(emb.weights[[1, 3]], expect)
    emb.to(torch.device("cpu"), torch.float32)
    assert emb.local_weights.is_leaf and emb.local_weights.requires_grad
    with pytest.raises(ValueError, match="batch_size"):
        emb(torch.zeros(3, dtype=torch.int32))


def test_loss_functions():
    logits = torch.tensor([[[2.0, -1.0, 0.5]], [[-3.0, 0.0, 1.0]]])
    labels = torch.tensor([[0], [-100]])
    s = torch.where(logits < 0, 1 / (1 - logits), logits + 1).double()
    expect = -torch.log(s[0, 0, 0] / s[0, 0].sum())
    got = stablemax_cross_entropy(logits, labels)
    assert got.dtype == torch.float64 and torch.allclose(got[0, 0], expect) and got[1, 0] == 0
    soft = softmax_cross_entropy(logits, labels)
    assert torch.allclose(soft[0, 0], torch.nn.functional.cross_entropy(logits[0], labels[0])) and soft[1, 0] == 0


def test_truncated_normal_init_std():
    t = trunc_normal_init_(torch.empty(200_000), std=0.5, generator=torch.Generator().manual_seed(0))
    assert abs(t.std().item() - 0.5) < 0.01 and abs(t.mean().item()) < 0.01
    assert t.abs().max() <= 2 * 0.5 / math.sqrt(0.7737413) + 1e-6  # clipped at 2 (corrected) std
    assert trunc_normal_init_(torch.ones(3), std=0).eq(0).all()
