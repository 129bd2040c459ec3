"""An architecture added as one file: this one. It defines a trivial recurrent model (one shared transformer
block, applied to a latent state and to an answer state in turn), registers it under its own arch.name, and
trains, evaluates and analyses it on a tiny Sudoku dataset through the entry points the CLI uses: the run
folder of `hrm train` (pipelines.train_run.run on a TrainConfig), `hrm evaluate` and `hrm analyze`, and the
library's evaluation engine and fixed-point runs. Nothing outside this file knows it exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from hrm.model import (ACTModel, Architecture, CheckpointError, InnerCarry, Recurrence, RecurrentModel, RowMemory,
                       UnknownArchitecture, get_architecture, load_checkpoint, register, registered_names)
from hrm.model.layers import PostNormBlock, RotaryEmbedding
from hrm.train import TrainConfig, TrainError
from stage_helpers import ok  # hrm ARGS through click's CliRunner, in this process

NAME = "tests.shared_block@SharedBlockACT"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- the architecture


@dataclass
class SharedBlockConfig:
    # set by the trainer from the data and the run
    batch_size: int = 8
    seq_len: int = 81
    vocab_size: int = 11
    num_puzzle_identifiers: int = 1
    forward_dtype: str = "float32"
    # the architecture's own settings
    hidden_size: int = field(default=16, metadata={"help": "Model width.", "min": 1})
    num_heads: int = 2
    cycles: int = field(default=2, metadata={"help": "Block applications per segment.", "min": 1})
    halt_max_steps: int = 2
    halt_exploration_prob: float = 0.1


class SharedBlockInner(Recurrence):
    """One segment: ``cycles`` times z <- block(z + y + x), y <- block(y + z), the same block both times."""

    def __init__(self, config: SharedBlockConfig):
        super().__init__()
        self.config, self.forward_dtype, self.puzzle_emb_len = config, torch.float32, 0
        h = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, h)
        self.rotary = RotaryEmbedding(h // config.num_heads, max_position_embeddings=config.seq_len, base=10000.0)
        self.block = PostNormBlock(h, config.num_heads, 2.0, 1e-5)
        self.lm_head = nn.Linear(h, config.vocab_size, bias=False)
        self.q_head = nn.Linear(h, 2)
        self.register_buffer("init", torch.zeros(h))

    def empty_carry(self, batch_size, device=None):
        z = torch.zeros(batch_size, self.config.seq_len, self.config.hidden_size, device=device or self.init.device)
        return InnerCarry(z_H=z, z_L=z.clone())

    def reset_carry(self, reset, carry):
        flag = reset.view(-1, 1, 1)
        return InnerCarry(torch.where(flag, self.init, carry.z_H), torch.where(flag, self.init, carry.z_L))

    def forward(self, carry, batch, trace=None):
        x, cos_sin = self.embed(batch["inputs"].long()), self.rotary()
        y, z = carry.z_H, carry.z_L
        for _ in range(self.config.cycles):
            z = self.block(cos_sin=cos_sin, hidden_states=z + y + x)
            y = self.block(cos_sin=cos_sin, hidden_states=y + z)
            if trace is not None:
                trace.append((y.detach(), z.detach()))
        q = self.q_head(y[:, 0]).float()
        return InnerCarry(y.detach(), z.detach()), self.lm_head(y), (q[..., 0], q[..., 1])


class SharedBlockModel(RecurrentModel):
    def __init__(self, config: SharedBlockConfig, loss_type: str = "stablemax_cross_entropy"):
        super().__init__(ACTModel(config, SharedBlockInner(config)), loss_type=loss_type)


class SharedBlockArchitecture(Architecture):
    name = NAME
    config_class = SharedBlockConfig

    def build(self, config, loss_type="stablemax_cross_entropy"):
        return SharedBlockModel(config, loss_type)

    def steps_per_segment(self, config):
        return config.cycles

    def segment_flops(self, config):
        t, h = config.seq_len, config.hidden_size
        per_token = 2 * h * 4 * h + 4 * t * h + 2 * h * 3 * 2 * h
        return float(t * (2 * config.cycles * per_token + 2 * h * config.vocab_size))

    def row_memory(self, config):
        p, h = config.seq_len, config.hidden_size
        return RowMemory(steps_per_segment=config.cycles, cells=p, positions=p, state_numbers=p * h,
                         forward_bytes=4 * (p * (20 * h + config.vocab_size) + 2 * config.num_heads * p * p))

    def train_activation_bytes(self, config):
        return config.batch_size * 2 * config.cycles * self.row_memory(config).forward_bytes


ARCHITECTURE = register(SharedBlockArchitecture())
SharedBlockModel.architecture = ARCHITECTURE


# ----------------------------------------------------------------------------- the proof


@pytest.fixture(scope="module")
def dataset(tiny_sudoku_shards) -> Path:
    return tiny_sudoku_shards


def test_a_registered_architecture_trains_evaluates_and_analyses(dataset, tmp_path):
    from hrm.evaluate.engine import Engine, segment_flops
    from hrm.evaluate.run import evaluate_puzzles
    from hrm.tasks import SUDOKU, make_perturbations
    from hrm.analysis import PerturbedRuns, run_perturbed, run_trace
    from hrm.data import PuzzleDataset
    from pipelines.datasets import resolve_dataset
    from pipelines.train_run import run as train_run

    assert NAME in registered_names() and get_architecture(NAME) is ARCHITECTURE
    data_dir = resolve_dataset(dataset, "vanilla")
    arch = {"name": NAME, "hidden_size": 16, "cycles": 2, "loss_type": "softmax_cross_entropy"}
    cfg = TrainConfig(data_path=str(data_dir), output_dir=str(tmp_path / "run"), arch=arch, global_batch_size=4,
                      epochs=2, eval_interval=2, lr=1e-3, lr_warmup_steps=1, eval_size=4, progress=False)
    result = train_run(cfg)  # what `hrm train` runs: the loop, its run folder, step_N + all_config.yaml
    assert isinstance(result.model, SharedBlockModel) and result.step == 4
    assert result.metrics["eval"]["count"] == 4 and np.isfinite(result.metrics["train"]["lm_loss"])
    written = yaml.safe_load((tmp_path / "run" / "checkpoints" / "all_config.yaml").read_text())["arch"]
    assert written["name"] == NAME and written["cycles"] == 2 and written["seq_len"] == 81

    model = load_checkpoint(tmp_path / "run" / "checkpoints", device="cpu")  # by its arch.name, through the registry
    assert isinstance(model, SharedBlockModel) and model.loss_type == "softmax_cross_entropy"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model.state_dict().values()))

    # Evaluation: the engine the evaluate stage runs, and its FLOP count.
    test = PuzzleDataset(data_dir, "test").gather(np.arange(4))
    engine = Engine([model])
    res = evaluate_puzzles(engine, test["inputs"], test["labels"], perturbations=make_perturbations("shift", 2),
                           rules=SUDOKU.rules)
    assert res.correct.shape == (1, 2, 4) and segment_flops(model) == ARCHITECTURE.segment_flops(model.config)
    answers = model.predict(test["inputs"]).predictions.numpy()
    assert np.array_equal(engine.run(test["inputs"]).predictions[0], answers)
    assert np.array_equal(res.correct[0, 0], (answers == test["labels"]).all(-1))  # the unshifted pass: predict's answers

    # Analysis: a trace (one state per block pair), and the fixed-point runs from shifted and noisy starts.
    tr = run_trace(model, test["inputs"], segments=3, keep_states=True)
    assert tr.h_cycles == 2 and tr.predictions.shape == (6, 4, 81) and tr.z_H.shape == (6, 4, 81, 16)
    assert np.array_equal(tr.seg_predictions[-1], model.predict(test["inputs"], segments=3).predictions.numpy())
    ms = run_perturbed(model, test["inputs"], test["labels"], PerturbedRuns(shifts=2, noise_runs=1, segments=3),
                       rules=SUDOKU.rules)
    assert ms.n_answers.shape == (4,) and (ms.n_answers >= 1).all()

    # The stages themselves, unchanged: `hrm evaluate` and `hrm analyze` on the checkpoint.
    ok("evaluate", "--checkpoint", tmp_path / "run", "--dataset", dataset, "--variant", "vanilla", "--permutations", 2,
       "--tiers", "1-2", "--output", tmp_path / "eval", "--no-progress")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["test"]["puzzles"] == 4
    ok("analyze", "--checkpoint", tmp_path / "run", "--dataset", dataset, "--variant", "vanilla", "--output",
       tmp_path / "analysis", "--sample", 4, "--segments", 3, "--shifts", 2, "--noise-runs", 1, "--fp-sample", 2,
       "--easy-k", "0,1", "--landscape-radius", 1, "--no-flow", "--no-progress")
    assert json.loads((tmp_path / "analysis" / "summary.json").read_text())["run"]["h_cycles"] == 2


def test_an_unknown_or_missing_arch_name():
    """An unknown name is one error listing the registered architectures, in training and in loading; an arch
    block without a name is HRM's (the official all_config.yaml always names it)."""
    with pytest.raises(TrainError, match=r"arch.name is 'nope@Nothing'; only a registered architecture is supported "
                                         r"\(.*HierarchicalReasoningModel_ACTV1.*SharedBlockACT"):
        TrainConfig(data_path="x", arch={"name": "nope@Nothing"})
    with pytest.raises(TrainError, match="unknown arch keys: H_cycles"):
        TrainConfig(data_path="x", arch={"name": NAME, "H_cycles": 2})  # another architecture's key
    assert get_architecture(None).name.endswith("@HierarchicalReasoningModel_ACTV1")
    with pytest.raises(UnknownArchitecture):
        get_architecture(["not", "a", "name"])


def test_a_checkpoint_of_an_unregistered_architecture_is_refused(tmp_path):
    torch.manual_seed(0)
    model = ARCHITECTURE.build(SharedBlockConfig())
    from hrm.model import save_checkpoint

    step = save_checkpoint(model, tmp_path / "step_1")
    conf = yaml.safe_load((tmp_path / "all_config.yaml").read_text())
    assert load_checkpoint(step, device="cpu", note=lambda _: None).config == SharedBlockConfig()
    conf["arch"]["name"] = "tests.other@Unregistered"
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(conf))
    (tmp_path / "all_config.yaml.sha256").unlink()
    (tmp_path / "step_1.sha256").unlink()
    with pytest.raises(CheckpointError, match="'tests.other@Unregistered'; only a registered architecture is supported"):
        load_checkpoint(step, device="cpu", note=lambda _: None)
