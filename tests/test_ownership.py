"""Ownership by record (issue 26, class 1): a command replaces an output folder only when the folder's
record (`.hrm-record.json`) says this command wrote every file in it, with the bytes it has. Real stages
on the real puzzles, real files planted where a user would put them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrm.integrity import file_sha256
from hrm.model import HRM, HRMConfig, save_checkpoint
from pipelines import atomic_replace
from pipelines import output_records
from pipelines import io as stage_io
from stage_helpers import digest_tree, fails, ok

REPO = Path(__file__).resolve().parents[1]
EVAL_ARGS = ["--test-size", "2", "--permutations", "1", "--tiers", "none", "--no-progress"]
ANALYZE_ARGS = ["--sample", "2", "--easy-k", "none", "--shifts", "0", "--puzzle-index", "none", "--no-progress"]


@pytest.fixture(scope="module")
def model_run(built, tmp_path_factory):
    """A tiny checkpoint (run folder) and the hint dataset of the built chain."""
    root, _ = built
    dataset = root / "datasets" / json.loads((root / "datasets" / "datasets.json").read_text())["hint"]
    torch.manual_seed(0)
    model = HRM(HRMConfig(batch_size=2, seq_len=81, puzzle_emb_ndim=8, num_puzzle_identifiers=1, vocab_size=11,
                          H_cycles=1, L_cycles=1, H_layers=1, L_layers=1, hidden_size=8, expansion=2, num_heads=2,
                          halt_max_steps=2, forward_dtype="float32"))
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(model, run / "checkpoints" / "step_1", {"seed": 0})
    return run, dataset


def evaluate_args(model_run, out: Path) -> list[str]:
    run, dataset = model_run
    return ["evaluate", "--checkpoint", str(run), "--dataset", str(dataset), "--output", str(out), *EVAL_ARGS]


def analyze_args(model_run, out: Path) -> list[str]:
    run, dataset = model_run
    return ["analyze", "--checkpoint", str(run), "--dataset", str(dataset), "--output", str(out), *ANALYZE_ARGS]


def test_every_output_folder_carries_its_record(built, model_run, tmp_path):
    root, _ = built
    ok(*evaluate_args(model_run, tmp_path / "ev"))
    for out, stage in ((root / "subsample", "subsample"), (root / "datasets", "shard"), (tmp_path / "ev", "evaluate")):
        record = json.loads((out / output_records.RECORD).read_text())
        assert record["command"] == stage
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != output_records.RECORD)
        assert sorted(record["files"]) == files
        for rel, sha in record["files"].items():  # every hash is the file's; run.json's timings have none
            assert sha == (None if rel == "run.json" else file_sha256(out / rel))


@pytest.mark.parametrize("planted", ["plots/my_plot.csv", "my_notes.md"])
def test_evaluate_keeps_a_users_file_in_its_output(model_run, tmp_path, planted):
    out = tmp_path / "ev"
    ok(*evaluate_args(model_run, out))
    (out / planted).write_text("mine\n")
    before = digest_tree(out)
    msg = fails(*evaluate_args(model_run, out))
    assert str(out) in msg and planted.split("/")[0] in msg and "did not write" in msg
    assert digest_tree(out) == before


def test_analyze_keeps_a_users_figure(model_run, tmp_path):
    out = tmp_path / "an"
    ok(*analyze_args(model_run, out))
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "my_photo.png").write_bytes(b"\x89PNG mine")
    before = digest_tree(out)
    assert "figures/" in fails(*analyze_args(model_run, out))
    assert digest_tree(out) == before


def test_a_file_changed_since_the_command_wrote_it_is_kept(model_run, tmp_path):
    out = tmp_path / "ev"
    ok(*evaluate_args(model_run, out))
    (out / "report.md").write_text("my edited report\n")
    before = digest_tree(out)
    assert "report.md (changed since)" in fails(*evaluate_args(model_run, out))
    assert digest_tree(out) == before


def test_one_commands_output_is_not_replaced_by_another(built, model_run, tmp_path):
    root, _ = built
    ev = tmp_path / "ev"
    ok(*evaluate_args(model_run, ev))
    before = digest_tree(ev)
    assert "holds the output of `hrm evaluate`" in fails(*analyze_args(model_run, ev))
    assert digest_tree(ev) == before
    hints = root / "hints"
    copy = tmp_path / "hints-copy"
    subprocess.run(["cp", "-a", str(hints), str(copy)], check=True)
    before = digest_tree(copy)
    msg = fails("augment", "--input", str(root / "subsample"), "--output", str(copy), "--num-aug", "4")
    assert "holds the output of `hrm hints`" in msg and digest_tree(copy) == before


@pytest.mark.parametrize("planted", ["README.md", "other/manifest.json"])
def test_shard_keeps_a_folder_it_has_no_record_of(built, tmp_path, planted):
    root, _ = built
    out = tmp_path / "datasets"
    (out / planted).parent.mkdir(parents=True)
    (out / planted).write_text("{}\n")
    before = digest_tree(out)
    msg = fails("shard", "--input", str(root / "hints"), "--output", str(out))
    assert planted.split("/")[0] in msg and digest_tree(out) == before


def test_a_malformed_record_is_refused_by_name(built, tmp_path):
    root, _ = built
    out = tmp_path / "sub"
    ok("subsample", "--input", str(root / "raw"), "--output", str(out), "--seed", "3", "--subsample-size", "20",
       "--test-size", "0")
    (out / output_records.RECORD).write_text('{"format": 1, "command": "subsample", "files": ["x"]}\n')
    before = digest_tree(out)
    msg = fails("subsample", "--input", str(root / "raw"), "--output", str(out), "--seed", "3", "--subsample-size", "20",
                "--test-size", "0")
    assert output_records.RECORD in msg and "not a record" in msg and digest_tree(out) == before


def test_outputs_inside_an_input_are_refused(built, model_run, tmp_path):
    """Train, evaluate and analyze writing into the dataset (the next `hrm shard` would delete them) or
    into the checkpoints' run folder: refused before any work, nothing written."""
    run, dataset = model_run
    inside = dataset / "runs"
    assert "must not be the input" in fails("train", "--dataset", str(dataset), "--output", str(inside), "--epochs", "1")
    assert "must not be the input" in fails(*evaluate_args(model_run, dataset / "ev"))
    assert "must not be the input" in fails(*analyze_args(model_run, run / "checkpoints" / "an"))
    assert "must not be the input" in fails(*evaluate_args(model_run, run))  # above the checkpoints folder
    assert not inside.exists() and not (dataset / "ev").exists() and not (run / "checkpoints" / "an").exists()


def test_a_concurrent_winner_of_the_same_output_is_replaced_not_a_crash(tmp_path):
    """Two processes make the same new output: the one that commits second finds the first one's folder
    (the same command's, by its record) and exchanges it; a foreign folder that appeared is refused."""
    final = tmp_path / "out"
    with atomic_replace.atomic_output(final, stage="test") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("second")
        final.mkdir()  # the winner commits while this one runs
        (final / "a.txt").write_text("first")
        output_records.write_record(final, "test")
    assert (final / "a.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    other = tmp_path / "other"
    with pytest.raises(stage_io.StageError, match="did not write"):
        with atomic_replace.atomic_output(other, stage="test") as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text("mine")
            other.mkdir()
            (other / "users.txt").write_text("theirs")
    assert [p.name for p in other.iterdir()] == ["users.txt"]


def test_two_real_processes_commit_the_same_new_output(built, tmp_path):
    root, _ = built
    out = tmp_path / "sub"
    args = [str(Path(sys.executable).with_name("hrm")), "subsample", "--input", str(root / "raw"), "--output", str(out),
            "--seed", "3", "--subsample-size", "20", "--test-size", "0"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert all("Traceback" not in e for e in errors)
    ok(*args[1:])  # a third run replaces it: the folder is the stage's own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_train_pruning_deletes_only_checkpoints_the_run_wrote(model_run, tmp_path):
    """`keep_checkpoints 1` on resume: a step_N the user put in checkpoints/ while the run was stopped
    survives; the run's own older checkpoints go."""
    from hrm.train import TrainConfig
    from pipelines.train_run import run as train

    _, dataset = model_run
    out = tmp_path / "run"
    cfg = TrainConfig(data_path=str(dataset), arch=dict(hidden_size=8, num_heads=2, puzzle_emb_ndim=8, H_layers=1,
                                                        L_layers=1, H_cycles=1, L_cycles=1, halt_max_steps=2),
                      global_batch_size=8, epochs=4, eval_interval=1, eval_size=4, keep_checkpoints=1,
                      output_dir=str(out), progress=False)

    def stop_after_a_checkpoint(step, metrics):
        if list((out / "checkpoints").glob("step_*")):
            raise KeyboardInterrupt

    assert train(cfg, callback=stop_after_a_checkpoint, log=lambda s: None).interrupted
    user_step = out / "checkpoints" / "step_999"
    user_step.write_bytes(b"my own model")
    result = train(cfg, log=lambda s: None)
    assert not result.interrupted and user_step.read_bytes() == b"my own model"
    steps = sorted(p.name for p in user_step.parent.glob("step_*") if not p.name.endswith(".sha256"))
    assert steps == sorted([result.checkpoint.name, "step_999"])


def test_the_committed_results_are_their_commands_own(tmp_path):
    """A fresh clone holds the git-tracked results of raw, evaluate and analyze (DVC keeps them: persist)
    and their records: `dvc repro` there finds each folder its stage's own (README set-up command 1)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "data"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    for folder, stage in (("raw", "raw"), ("evaluate", "evaluate"), ("analysis", "analyze")):
        out = tmp_path / "data" / folder
        assert (out / output_records.RECORD).is_file(), f"data/{folder}: its record is not committed"
        output_records.claim_output(out, stage)  # raises StageError naming what is not the stage's
