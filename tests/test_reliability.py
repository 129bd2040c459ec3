"""A command replaces only what it wrote itself, the old or the new output is always whole, and
killed runs leave nothing behind (docs/reliability.md). Real stages on the real puzzles."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import atomic_replace
from pipelines import output_records
from pipelines import io as stage_io
from stage_helpers import digest_tree, fails, ok

REPO = Path(__file__).resolve().parents[1]


def plant_foreign_files(folder: Path) -> dict[str, str]:
    """A folder a user also keeps other things in: a model, raw data, a git checkout."""
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "step_1").write_bytes(b"weights")
    (folder / "raw").mkdir()
    (folder / "raw" / "train.parquet").write_bytes(b"not ours")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return digest_tree(folder)


def stage_args(built_root: Path, stage: str, output: Path) -> list[str]:
    inputs = {"subsample": "raw", "augment": "subsample", "hints": "augment", "shard": "hints"}
    extra = {"subsample": ["--seed", "3", "--subsample-size", "20", "--test-size", "0"],
             "augment": ["--seed", "3", "--num-aug", "4"], "hints": ["--seed", "3", "--enabled", "true"],
             "shard": ["--shard-max-mb", "0.02"]}
    return [stage, "--input", str(built_root / inputs[stage]), "--output", str(output), *extra[stage]]


@pytest.mark.parametrize("stage", ["subsample", "augment", "hints", "shard"])
def test_dataset_stage_refuses_an_output_holding_other_files(built, tmp_path, stage):
    root, _ = built
    out = tmp_path / "v" / "data"
    before = plant_foreign_files(out)
    msg = fails(*stage_args(root, stage, out))
    assert str(out) in msg and f"`hrm {stage}` did not write" in msg and ".git/" in msg and "models/" in msg
    assert len(msg.strip().splitlines()) == 1
    assert digest_tree(out) == before  # nothing deleted, nothing added


def test_raw_refuses_an_output_holding_other_files(tmp_path):
    out = tmp_path / "data"
    before = plant_foreign_files(out)
    msg = fails("raw", "--source", "builtin", "--train-size", "3", "--test-size", "2", "--output", str(out))
    assert "`hrm raw` did not write" in msg and digest_tree(out) == before


@pytest.mark.parametrize("stage", ["subsample", "shard"])
def test_a_rerun_replaces_its_own_output_and_keeps_dvc_files(built, tmp_path, stage):
    root, _ = built
    out = tmp_path / stage
    ok(*stage_args(root, stage, out))
    first = digest_tree(out)
    (out / ".gitignore").write_text("/train.parquet\n")  # DVC's, beside outputs it tracks one by one
    ok(*stage_args(root, stage, out))
    assert (out / ".gitignore").read_text() == "/train.parquet\n"
    (out / ".gitignore").unlink()
    assert digest_tree(out) == first


def test_evaluate_and_analyze_refuse_the_working_directory(built, tmp_path, monkeypatch):
    """`--output .` in a project folder: refused before any work, nothing touched."""
    import json

    import torch

    from hrm.model import HRM, HRMConfig, save_checkpoint

    root, _ = built
    dataset = root / "datasets" / json.loads((root / "datasets" / "datasets.json").read_text())["hint"]
    torch.manual_seed(0)
    model = HRM(HRMConfig(batch_size=2, seq_len=81, puzzle_emb_ndim=8, num_puzzle_identifiers=1, vocab_size=11, H_cycles=1,
                          L_cycles=1, H_layers=1, L_layers=1, hidden_size=8, expansion=2, num_heads=2, halt_max_steps=2,
                          forward_dtype="float32"))
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "step_1", {"seed": 0})
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "notes.md").write_text("mine\n")
    before = digest_tree(project)
    monkeypatch.chdir(project)
    common = ["--checkpoint", str(tmp_path / "run"), "--dataset", str(dataset), "--output", ".", "--no-progress"]
    msg = fails("evaluate", *common, "--test-size", "2", "--permutations", "1", "--tiers", "none")
    assert "`hrm evaluate` did not write (dvc.yaml, notes.md)" in msg
    msg = fails("analyze", *common, "--sample", "2", "--easy-k", "none", "--shifts", "0", "--puzzle-index", "none")
    assert "`hrm analyze` did not write (dvc.yaml, notes.md)" in msg
    assert digest_tree(project) == before


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(built, tmp_path):
    root, _ = built
    out = tmp_path / "subsample"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    leftover = tmp_path / f".subsample.tmp-{dead.pid}-0123abcd"
    (leftover / "half").mkdir(parents=True)
    alive = tmp_path / f".subsample.tmp-{os.getppid()}-4567cdef"  # a running process's temporary stays
    alive.mkdir()
    ok(*stage_args(root, "subsample", out))
    assert not leftover.exists() and alive.exists()


def test_a_folder_is_replaced_in_one_exchange(tmp_path, monkeypatch):
    """Where the system can swap two paths in one step (Linux), no instant passes without an output."""
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    output_records.write_record(final, "test")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(atomic_replace.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    with atomic_replace.atomic_output(final, stage="test") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    if not atomic_replace._exchange(tmp_path / "x", tmp_path / "y"):
        pytest.skip("this system has no renameat2 exchange: the two-rename fallback is used")
    (tmp_path / "x").rmdir()
    (tmp_path / "y").rmdir()
    assert renames == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_exchange_errors_are_raised(tmp_path):
    with pytest.raises(OSError):
        atomic_replace._exchange(tmp_path / "missing-a", tmp_path / "missing-b")


def test_sigkill_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(built, tmp_path):
    root, _ = built
    ref = tmp_path / "ref"
    ok(*stage_args(root, "augment", ref))
    out = tmp_path / "out"
    ok(*stage_args(root, "augment", out))  # an old output that must survive the kill whole
    old = digest_tree(out)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [str(Path(sys.executable).with_name("hrm")), *stage_args(root, "augment", out)]
    rng = random.Random(0)
    for _ in range(3):
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert digest_tree(out) in (old, digest_tree(ref))  # the complete old output or the complete new one
    ok(*stage_args(root, "augment", out))
    assert digest_tree(out) == digest_tree(ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]  # no temporary left


# --------------------------------------------------------------------------- class 8: Ctrl-C is never lost


def test_an_interrupt_python_dropped_is_raised_at_the_next_check_point(tmp_path):
    """Python drops an exception raised in a finalizer (numba and llvmlite compile in such code):
    the next log line or output commit raises it again, and the output is not put in place."""
    class Finalizer:
        def __del__(self):
            raise KeyboardInterrupt  # what a Ctrl-C arriving inside a finalizer amounts to

    with stage_io.Interrupts():
        Finalizer()  # dropped here: Python only reports it
        with pytest.raises(KeyboardInterrupt):
            stage_io.log("test", "the next message")
        stage_io.log("test", "raised once, not again")
        final = tmp_path / "out"
        with pytest.raises(KeyboardInterrupt):
            with atomic_replace.atomic_output(final, stage="test") as tmp:
                tmp.mkdir()
                Finalizer()
        assert not final.exists() and list(tmp_path.iterdir()) == []


def test_ctrl_c_and_sigterm_stop_a_stage_during_jit_compilation(tmp_path):
    """`hrm raw --source builtin` compiles the generator's numba kernels on every run (cache=False),
    most of its run time: SIGINT or SIGTERM at random moments exits 128 + the signal, one line on
    stderr and no traceback, nothing put in place, no temporary left; unless the run had finished its
    command before the signal reached it: then it exits 0 with its whole output (never killed by the
    signal during Python's finalization, never a crash after an interrupted JIT compilation)."""
    exe = str(Path(sys.executable).with_name("hrm"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "raw"
    args = [exe, "raw", "--output", str(out), "--source", "builtin", "--train-size", "30", "--test-size", "5"]
    started = time.time()
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
    length = time.time() - started
    ref = digest_tree(out)
    atomic_replace._remove(out)
    rng = random.Random(1)
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 0.9) * length)
        proc.send_signal(sig)
        stderr = proc.communicate()[1]
        if proc.returncode == 0:  # too late: the command had finished
            assert digest_tree(out) == ref and "stopped by" not in stderr, stderr
            atomic_replace._remove(out)
            continue
        assert proc.returncode == 128 + sig, stderr
        assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
        assert f"hrm: stopped by {signal.Signals(sig).name}" in stderr
        assert not out.exists() or digest_tree(out) == ref  # signalled after the output was put in place: whole
        assert [p.name for p in tmp_path.iterdir()] in ([], ["raw"])  # no temporary
        atomic_replace._remove(out)
