"""The HRM on Maze-30x30-Hard's encoding (seq_len 900, vocab 6): a real training step on generated
mazes, and a checkpoint in the official layout (an arch block without seq_len or vocab_size, as the
official code takes them from the dataset) loading as a maze model, refused for Sudoku by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hrm import maze as M
from hrm.model import HRM, HRMConfig, load_checkpoint
from hrm.tasks import MAZE

ARCH = dict(H_cycles=1, L_cycles=1, H_layers=1, L_layers=1, hidden_size=32, expansion=2, num_heads=4,
            puzzle_emb_ndim=32, pos_encodings="rope", halt_max_steps=2, halt_exploration_prob=0.1)


def maze_model(seed: int = 0) -> HRM:
    torch.manual_seed(seed)
    return HRM(HRMConfig(batch_size=4, seq_len=MAZE.seq_len, vocab_size=MAZE.vocab_size, forward_dtype="float32",
                         **ARCH))


@pytest.fixture(scope="module")
def mazes():
    return M.generate_mazes(4, seed=5)


def test_a_training_step_on_real_mazes(mazes):
    model = maze_model().train()
    batch = {"inputs": torch.as_tensor(mazes.questions, dtype=torch.int32),
             "labels": torch.as_tensor(mazes.answers, dtype=torch.int32),
             "puzzle_identifiers": torch.zeros(4, dtype=torch.int32)}
    carry = model.initial_carry(batch)
    carry, loss, metrics, _, _ = model(carry, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    out = model.eval().predict(batch["inputs"])
    assert out.predictions.shape == (4, MAZE.seq_len) and int(out.predictions.max()) < MAZE.vocab_size


def official_layout(model: HRM, folder: Path) -> Path:
    """step_0 + all_config.yaml as the official trainer writes them: no seq_len / vocab_size in arch."""
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "step_0")
    arch = {"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
            "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}, **ARCH,
            "forward_dtype": "float32"}
    (folder / "all_config.yaml").write_text(yaml.safe_dump(
        {"arch": arch, "data_path": "data/maze-30x30-hard-1k", "global_batch_size": 4}, sort_keys=False))
    return folder / "step_0"


def test_an_official_maze_checkpoint_loads_as_a_maze_model(mazes, tmp_path):
    model = maze_model(1).eval()
    loaded = load_checkpoint(official_layout(model, tmp_path / "official"), device="cpu")
    assert (loaded.config.seq_len, loaded.config.vocab_size) == (900, 6)  # from the vocabulary, the task's
    x = torch.as_tensor(mazes.questions, dtype=torch.int32)
    want, got = model.predict(x), loaded.predict(x)
    assert np.array_equal(want.predictions, got.predictions) and np.array_equal(want.halted, got.halted)


def test_an_official_checkpoint_of_no_known_vocabulary_names_the_missing_seq_len(tmp_path):
    # The official arch block gives no seq_len (the dataset does); with RoPE no tensor holds it either. A
    # vocabulary that is no task's is refused, naming the file: never a silent 81 cells.
    from hrm.model import CheckpointError

    torch.manual_seed(0)
    odd = HRM(HRMConfig(batch_size=4, seq_len=900, vocab_size=7, forward_dtype="float32", **ARCH))
    step = official_layout(odd, tmp_path / "official")
    with pytest.raises(CheckpointError, match=r"all_config.yaml: the arch block gives no seq_len, and vocab_size 7 is "
                                              r"that of no task \(sudoku 11, maze 6, arc-agi-1 12, arc-agi-2 12\): add the dataset's seq_len"):
        load_checkpoint(step, device="cpu")


def test_a_maze_checkpoint_is_refused_for_sudoku_by_name(tmp_path):
    from pipelines.io import StageError
    from hrm.tasks import SUDOKU
    from pipelines.model_inputs import load_task_model

    step = official_layout(maze_model(), tmp_path / "official")
    with pytest.raises(StageError, match=rf"{step}: the model expects seq_len 900 and vocab_size 6; Sudoku"):
        load_task_model(step, "cpu", None, SUDOKU)
