"""TRM (hrm/model/trm.py) against the reference code's own outputs (tests/fixtures/trm_*, made by
tests/fixtures/make_trm_fixture.py from SamsungSAILMontreal/TinyRecursiveModels): its checkpoints load through
hrm.load_checkpoint, per-segment logits, Q values, losses, gradients and the ACT rollout agree; and a TRM
selected by name trains, saves and reloads through `hrm train`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import hrm
from golden_helpers import assert_gradients_and_sparse_step_match
from hrm.model import CheckpointError, get_architecture, save_checkpoint
from hrm.model.trm import ARCH_NAME, TRM, TRMConfig
from stage_helpers import fails, ok  # hrm ARGS through click's CliRunner, in this process

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VARIANTS = ("trm_tiny_attn", "trm_tiny_mlp_t")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_ref(variant: str, name: str = "reference.pt") -> dict:
    return torch.load(FIXTURES / variant / name, weights_only=True)


def fixture_model(variant: str, **overrides) -> TRM:
    """The fixture's weights in a TRM built from its config with ``overrides``, in training mode."""
    base = hrm.load_checkpoint(FIXTURES / variant / "step_0", device="cpu", note=lambda _: None)
    model = TRM(TRMConfig(**{**get_architecture(ARCH_NAME).config_to_dict(base.config), **overrides}))
    model.load_state_dict(base.state_dict())
    return model.train()


# ----------------------------------------------------------------------------- the checkpoint and its config


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_reference_checkpoint_loads_with_its_keys_sizes_and_init(variant):
    """State-dict keys (in order), shapes and parameter count are the reference's; the sizes the arch block lacks
    come from the tensors (seq_len from mlp_t's width); the same seed builds the reference's initial weights."""
    ref = load_ref(variant)
    model = hrm.load_checkpoint(FIXTURES / variant / "step_0", device="cpu", note=lambda _: None)
    state = torch.load(FIXTURES / variant / "step_0", weights_only=True)
    assert isinstance(model, TRM) and not model.training
    assert list(model.state_dict()) == list(state)
    assert sum(p.numel() for p in model.parameters()) == ref["parameters"]
    cfg = ref["config"]
    assert get_architecture(ARCH_NAME).config_to_dict(model.config) == {**cfg, "batch_size": 8}
    assert model.arch_dict()["name"] == ARCH_NAME

    torch.manual_seed(ref["init_seed"])  # the reference's construction order: the same draws, the same weights
    fresh = TRM(TRMConfig(**cfg)).state_dict()
    randomised = {"model.inner.q_head.weight", "model.inner.q_head.bias", "model.inner.puzzle_emb.weights"}
    assert all(torch.equal(fresh[k], state[k]) for k in state if k not in randomised)


def max_diffs(pred, ev) -> float:
    return max(max((pred.logits[s] - ev["logits"][s]).abs().max().item(),
                   (pred.q_halt[s] - ev["q_halt"][s]).abs().max().item(),
                   (pred.q_continue[s] - ev["q_continue"][s]).abs().max().item()) for s in range(ev["logits"].shape[0]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_rollout_matches_the_reference(variant):
    """Per segment: logits, q_halt, q_continue through predict, and loss, metrics, halting through the ACT loss head."""
    ref = load_ref(variant)
    model = hrm.load_checkpoint(FIXTURES / variant / "step_0", device="cpu", note=lambda _: None)
    batch = ref["batch"]
    pred = model.predict(batch["inputs"], batch["puzzle_identifiers"], trace=True)
    assert pred.logits.shape == ref["eval"]["logits"].shape == (3, 8, 81, 11)
    assert max_diffs(pred, ref["eval"]) <= 1e-5
    assert pred.z_H.shape[0] == 3 * model.config.H_cycles  # one traced state per cycle
    assert torch.equal(pred.halted, pred.q_halt[-1] > 0)  # TRM's own halting rule (no_ACT_continue)

    carry = model.initial_carry(batch)
    with torch.no_grad():
        for s in range(model.config.halt_max_steps):
            carry, loss, metrics, outputs, all_halted = model(carry, batch, return_keys=["logits"])
            assert (outputs["logits"] - ref["eval"]["logits"][s]).abs().max() <= 1e-5
            assert abs(loss.item() - ref["eval"]["loss"][s].item()) <= 1e-5 * max(1.0, abs(loss.item()))
            for k, v in ref["eval"]["metrics"][s].items():
                assert abs(metrics[k].item() - v.item()) <= 1e-5 * max(1.0, abs(v.item())), k
            assert torch.equal(carry.halted, ref["eval"]["halted"][s]) and torch.equal(carry.steps, ref["eval"]["steps"][s])
    assert all_halted


def test_bfloat16_rollout_matches_the_reference():
    """bfloat16 activations on the same weights: within 2e-2 (bf16 keeps 8 bits of mantissa; logits are O(1))."""
    ref = load_ref("trm_tiny_attn")
    model = hrm.load_checkpoint(FIXTURES / "trm_tiny_attn" / "step_0", device="cpu", forward_dtype="bfloat16",
                                note=lambda _: None)
    pred = model.predict(ref["batch"]["inputs"], ref["batch"]["puzzle_identifiers"])
    ev = ref["eval_bf16"]
    assert (pred.logits - ev["logits"].float()).abs().max() <= 2e-2
    assert (pred.q_halt - ev["q_halt"]).abs().max() <= 2e-2 and (pred.q_continue - ev["q_continue"]).abs().max() <= 2e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_matches_the_reference(variant):
    """One step, exploration off: loss (no q_continue term), metrics, gradients of every parameter and of the
    puzzle-embedding rows, and the sign-SGD update, within 1e-5."""
    ref = load_ref(variant, "train_reference.pt")
    ts = ref["train_step"]
    model = fixture_model(variant, halt_exploration_prob=0.0)
    batch = ref["batch"]
    torch.manual_seed(ts["seed"])
    carry, loss, metrics, outputs, _ = model(model.initial_carry(batch), batch,
                                             return_keys=["logits", "q_halt_logits", "q_continue_logits"])
    (loss / model.config.batch_size).backward()
    assert abs(loss.item() - ts["loss"].item()) <= 1e-5 * max(1.0, abs(loss.item()))
    assert "q_continue_loss" not in metrics and set(metrics) == set(ts["metrics"])
    for k, v in ts["metrics"].items():
        assert abs(metrics[k].item() - v.item()) <= 1e-5 * max(1.0, abs(v.item())), k
    for k, v in ts["outputs"].items():
        assert (outputs[k] - v).abs().max() <= 1e-5, k
    assert torch.equal(carry.halted, ts["halted"]) and torch.equal(carry.steps, ts["steps"])

    assert_gradients_and_sparse_step_match(model, ts)


def test_training_rollout_halts_on_q_halt_as_the_reference():
    """6 training steps with exploration, two batches: which rows halt (q_halt > 0 or the last step, after the
    drawn minimum), the step counts and the rows reloaded, step by step; no extra forward for a continue target."""
    ref = load_ref("trm_tiny_attn")
    ro = ref["train_rollout"]
    model = fixture_model("trm_tiny_attn", halt_exploration_prob=ro["halt_exploration_prob"])
    batches = [ref["batch"], ro["batch2"]]
    halted_early = 0
    torch.manual_seed(ro["seed"])
    carry = model.initial_carry(batches[0])
    with torch.no_grad():
        for t, step in enumerate(ro["steps"]):
            carry, loss, metrics, outputs, _ = model(carry, batches[t % 2], return_keys=["q_halt_logits", "target_q_continue"])
            assert "target_q_continue" not in outputs
            assert torch.equal(carry.halted, step["halted"]) and torch.equal(carry.steps, step["steps"]), t
            assert torch.equal(carry.current_data["inputs"], step["inputs"]), t
            assert abs(loss.item() - step["loss"].item()) <= 1e-5 * max(1.0, abs(loss.item())), t
            halted_early += int((carry.halted & (carry.steps < model.config.halt_max_steps)).sum())
    assert halted_early > 0  # the rollout exercises the q_halt > 0 rule, not only the step limit


def test_the_names_it_answers_to():
    """The reference's arch.name by any module path; not its ablations, which share the class name."""
    from hrm.model.registry import UnknownArchitecture

    for name in (ARCH_NAME, "models.recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"):
        assert get_architecture(name).name == ARCH_NAME
    for name in ("recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",
                 "recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1", "recursive_reasoning.trm@Other"):
        with pytest.raises(UnknownArchitecture):
            get_architecture(name)


def test_a_compiled_prefix_and_a_folder_load(tmp_path):
    src = FIXTURES / "trm_tiny_attn"
    state = torch.load(src / "step_0", weights_only=True)
    torch.save({"_orig_mod." + k: v for k, v in state.items()}, tmp_path / "step_5")
    shutil.copy(src / "all_config.yaml", tmp_path / "all_config.yaml")
    ref = load_ref("trm_tiny_attn")
    model = hrm.load_checkpoint(tmp_path, device="cpu", note=lambda _: None)
    assert max_diffs(model.predict(ref["batch"]["inputs"], ref["batch"]["puzzle_identifiers"]), ref["eval"]) <= 1e-5


def test_a_config_the_reference_would_reject_is_one_message_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="H_cycles must be >= 1"):
        TRMConfig(H_cycles=0)
    with pytest.raises(ValueError, match="puzzle_emb_len must be 0 when puzzle_emb_ndim is 0"):
        TRMConfig(puzzle_emb_ndim=0)
    with pytest.raises(ValueError, match="puzzle_emb_len 1 x hidden_size 32 cannot hold puzzle_emb_ndim 64"):
        TRMConfig(hidden_size=32, num_heads=4, puzzle_emb_ndim=64, puzzle_emb_len=1)
    with pytest.raises(ValueError, match="pos_encodings must be one of rope, learned, none"):
        TRMConfig(pos_encodings="alibi")
    with pytest.raises(ValueError, match="mlp_t must be true or false"):
        TRMConfig(mlp_t="yes")
    # mlp_t's MLP is as wide as the positions: a checkpoint for another seq_len is refused, naming the tensors.
    src = FIXTURES / "trm_tiny_mlp_t"
    shutil.copy(src / "step_0", tmp_path / "step_0")
    conf = yaml.safe_load((src / "all_config.yaml").read_text())
    conf["arch"]["seq_len"] = 80
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(CheckpointError, match=r"shape mismatch: model.inner.L_level.layers.0.mlp_t.gate_up_proj.weight"):
        hrm.load_checkpoint(tmp_path / "step_0", device="cpu", note=lambda _: None)


def test_save_and_load_round_trip_keeps_the_architecture(tmp_path):
    model = fixture_model("trm_tiny_mlp_t").eval()
    save_checkpoint(model, tmp_path / "step_1")
    back = hrm.load_checkpoint(tmp_path / "step_1", device="cpu")
    assert isinstance(back, TRM) and back.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))


# ----------------------------------------------------------------------------- trained by hrm train


@pytest.fixture(scope="module")
def dataset(tiny_sudoku_shards) -> Path:
    return tiny_sudoku_shards


TINY_RUN = ("--variant", "vanilla", "--global-batch-size", 4, "--epochs", 2, "--eval-interval", 2, "--eval-size", 4,
            "--hidden-size", 16, "--num-heads", 2, "--l-layers", 1, "--h-cycles", 2, "--l-cycles", 2, "--halt-max-steps", 2,
            "--puzzle-emb-ndim", 16, "--lr-warmup-steps", 1, "--no-progress")


def test_hrm_train_trains_a_trm_selected_by_name_saves_and_reloads_it(dataset, tmp_path):
    """--arch with TRM's settings (mlp_t, pos_encodings none); the same from a params file's arch.name (what
    `dvc exp run -S +train.arch.name=...` writes) gives the same weights."""
    out = tmp_path / "run"
    ok("train", "--dataset", dataset, "--output", out, "--arch", ARCH_NAME, "--mlp-t", "--pos-encodings", "none",
       "--puzzle-emb-len", 2, *TINY_RUN)
    arch = yaml.safe_load((out / "checkpoints" / "all_config.yaml").read_text())["arch"]
    assert arch["name"] == ARCH_NAME and arch["mlp_t"] is True and arch["pos_encodings"] == "none"
    model = hrm.load_checkpoint(out / "checkpoints", device="cpu")
    assert isinstance(model, TRM) and model.config.mlp_t and model.config.puzzle_emb_len == 2
    assert model.config.seq_len == 81 and model.config.L_layers == 1
    logged = json.loads((out / "dvclive" / "metrics.json").read_text())  # dvclive as for HRM
    assert logged["step"] == logged["total_steps"] > 0 and 0.0 <= logged["eval"]["accuracy"] <= 1.0

    # Evaluated and analysed by the stages as they are.
    ok("evaluate", "--checkpoint", out, "--dataset", dataset, "--variant", "vanilla", "--permutations", 2, "--tiers", "1-2",
       "--output", tmp_path / "eval", "--no-progress")
    evaluated = json.loads((tmp_path / "eval" / "summary.json").read_text())["test"]
    assert evaluated["puzzles"] == 4 and 0.0 <= evaluated["first_to_halt"] <= 1.0  # its own halting rule, per segment
    assert 1.0 <= evaluated["first_to_halt_detail"]["mean_segment"] <= 2.0  # --halt-max-steps 2
    assert set(json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]) == {
        "baseline", "paper_vote", "label_free", "first_to_halt", "verified_any"}
    ok("analyze", "--checkpoint", out, "--dataset", dataset, "--variant", "vanilla", "--output", tmp_path / "analysis",
       "--sample", 4, "--segments", 3, "--shifts", 2, "--noise-runs", 1, "--fp-sample", 2, "--easy-k", "0,1",
       "--landscape-radius", 1, "--no-flow", "--no-progress")
    assert json.loads((tmp_path / "analysis" / "summary.json").read_text())["run"]["h_cycles"] == 2  # traced cycles
    # Their records say which architecture ran: run.json (name and label) and the reports' titles.
    for stage, title in (("eval", "# TRM evaluation\n"), ("analysis", "# TRM mechanistic analysis\n")):
        assert json.loads((tmp_path / stage / "run.json").read_text())["arch"] == {"name": ARCH_NAME, "label": "TRM"}
        assert (tmp_path / stage / "report.md").read_text().startswith(title)

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"arch": {"name": ARCH_NAME, "mlp_t": True, "pos_encodings": "none",
                                                         "puzzle_emb_len": 2}}}))
    again = tmp_path / "again"
    ok("train", "--dataset", dataset, "--output", again, "--config-file", params, "--section", "train", *TINY_RUN)
    second = hrm.load_checkpoint(again / "checkpoints", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict().values(), model.state_dict().values()))


def test_hrm_train_refuses_a_setting_of_another_architecture(dataset, tmp_path):
    output = fails("train", "--dataset", dataset, "--output", tmp_path / "run", "--mlp-t", *TINY_RUN)
    assert "mlp_t is a setting of recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1, not of " \
           "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1" in " ".join(output.split())
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- evaluated by its own halting rule


def halting_trm(seed: int = 0) -> TRM:
    """A tiny TRM (attention) whose Q head answers both ways: q_halt > 0 and q_halt > q_continue disagree on some rows."""
    torch.manual_seed(seed)
    model = TRM(TRMConfig(batch_size=4, seq_len=81, vocab_size=11, puzzle_emb_ndim=16, puzzle_emb_len=1, hidden_size=16,
                          num_heads=2, expansion=2, L_layers=1, H_cycles=2, L_cycles=1, halt_max_steps=3,
                          forward_dtype="float32"))
    with torch.no_grad():
        model.inner.q_head.weight.normal_(0, 0.5)
        model.inner.q_head.bias.copy_(torch.tensor([0.0, 0.3]))
    return model.eval()


def test_evaluate_halts_a_trm_on_q_halt_above_zero(tmp_path):
    """hrm.evaluate asks the checkpoint's architecture when it halts: a TRM checkpoint's halted flags (final and per
    segment, paper procedure and early stop) are q_halt > 0, not HRM's q_halt > q_continue."""
    from hrm.evaluate.engine import Engine
    from hrm.evaluate.run import evaluate_puzzles
    from hrm.tasks import SUDOKU, make_perturbations

    save_checkpoint(halting_trm(), tmp_path / "step_1")
    model = hrm.load_checkpoint(tmp_path, device="cpu", note=lambda _: None)
    assert isinstance(model, TRM)
    x = torch.randint(1, 11, (24, 81), generator=torch.Generator().manual_seed(1)).numpy()
    ref = model.predict(x)
    assert torch.equal(ref.halted, ref.q_halt[-1] > 0)
    out = Engine([model], max_rows=7).run(x)
    per_segment = (ref.q_halt > 0).numpy()
    assert (out.halted[0] == per_segment[-1]).all() and (out.segment_halted[0] == per_segment).all()
    other = (ref.q_halt > ref.q_continue).numpy()
    assert (per_segment != other).any() and per_segment.any() and not per_segment.all()  # the rules differ here

    early = Engine([model], max_rows=5).run(x, early_stop=True)
    first = np.where(per_segment.any(0), per_segment.argmax(0) + 1, per_segment.shape[0])
    assert (early.steps[0] == first).all() and (early.halted[0] == per_segment.any(0)).all()
    assert (early.halted[0] == (early.q_halt[0] > 0)).all()

    labels = x.astype(np.int16)
    result = evaluate_puzzles(Engine([model]), x, labels, perturbations=make_perturbations("shift", 2), batch_size=10,
                              rules=SUDOKU.rules)
    assert (result.halted == (result.q_halt > 0)).all() and (result.halted != (result.q_halt > result.q_continue)).any()
    assert (result.halted[0, 0] == per_segment[-1]).all()
