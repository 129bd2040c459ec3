"""SIGKILL at random moments of every stage but augment (tests/test_reliability.py covers that one):
real `hrm` processes, killed at seeded random moments within the measured length of an uninterrupted
run of the same command (so a slower machine still kills mid-run), then the same command rerun.

At every kill (a) the previous complete output or the complete new one is in place, never a
missing or partial one; after the rerun (b) the output is byte-identical to the uninterrupted
run's and (c) no temporary (``.NAME.tmp-PID-XXXXXXXX``, ``NAME.tmp-PID``) is left.

Every command runs with a relative ``--output out`` (``run`` for train) in a folder of its own, as
`dvc repro` runs it, so that an output recording its own path still compares byte for byte.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from stage_helpers import digest_tree, ok
from test_reliability import stage_args
from test_train import TINY_FLAGS, data  # noqa: F401 - the tiny real dataset of the trainer tests (module fixtures)

REPO = Path(__file__).resolve().parents[1]
HRM = str(Path(sys.executable).with_name("hrm"))
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true")
TEMPORARY = re.compile(r"\.tmp-\d+")  # .NAME.tmp-PID-XXXXXXXX (pipelines.io), NAME.tmp-PID (hrm.model.checkpoint)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the in-process reruns of train, evaluate, analyze

View = Callable[[Path], dict[str, str]]


def timed(args: list[str], cwd: Path) -> float:
    """Run `hrm ARGS` to completion in ``cwd``; its wall time in seconds."""
    cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run([HRM, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - t0


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if TEMPORARY.search(p.name))


def kill_then_rerun(args: list[str], cwd: Path, monkeypatch, *, duration: float, seed: int, kills: int = 2,
                    whole: Callable[[], None]) -> list[bool]:
    """Start `hrm ARGS` in ``cwd`` ``kills`` times, SIGKILL it at a seeded random moment (one in each
    equal slice of 25-100 % of ``duration``, the measured length of an uninterrupted run), call
    ``whole()`` (the check of what is in place) after each kill; then rerun the same command to
    completion. Returns, per kill, whether it hit a running process."""
    rng = random.Random(seed)
    hit = []
    for i in range(kills):
        at = duration * rng.uniform(0.25 + 0.75 * i / kills, 0.25 + 0.75 * (i + 1) / kills)
        proc = subprocess.Popen([HRM, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            pass
        hit.append(proc.poll() is None)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        whole()
    assert hit[0], "the first kill came after the run had ended: nothing was tested"
    monkeypatch.chdir(cwd)
    ok(*args)  # the rerun: the same command
    return hit


def atomic_stage(tmp_path, monkeypatch, args: list[str], old_args: list[str], *, seed: int,
                 view: View = digest_tree) -> None:
    """A stage that replaces its output folder as a whole: an old output (``old_args``) is in place when
    ``args`` is killed; (a) ``view`` of the output is the old one or the uninterrupted run's at every
    kill, (b) that of the uninterrupted run after the rerun, (c) ``cwd`` then holds the output only."""
    ref_dir, cwd = tmp_path / "ref", tmp_path / "kill"
    duration = timed(args, ref_dir)
    ref = view(ref_dir / "out")
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    ok(*old_args)
    old = view(cwd / "out")
    assert old != ref  # else (a) could not tell the old output from the new one

    def whole():
        assert (cwd / "out").is_dir(), "no output in place after a kill"
        assert view(cwd / "out") in (old, ref)  # the complete old output or the complete new one

    kill_then_rerun(args, cwd, monkeypatch, duration=duration, seed=seed, whole=whole)
    assert view(cwd / "out") == ref
    assert sorted(p.name for p in cwd.iterdir()) == ["out"] and temporaries(cwd) == []


def with_seed(args: list[str], seed: str) -> list[str]:
    i = args.index("--seed")
    return [*args[: i + 1], seed, *args[i + 2:]]


# ----------------------------------------------------------------------------- dataset stages


def test_raw_killed_then_rerun(tmp_path, monkeypatch):
    args = ["raw", "--source", "builtin", "--train-size", "12", "--test-size", "4", "--seed", "3", "--output", "out"]
    atomic_stage(tmp_path, monkeypatch, args, with_seed(args, "4"), seed=1)


@pytest.mark.parametrize("stage", ["subsample", "hints", "shard"])
def test_dataset_stage_killed_then_rerun(built, tmp_path, monkeypatch, stage):
    root, _ = built
    args = stage_args(root, stage, Path("out"))
    if stage == "shard":  # no seed: other params, another manifest
        old = [*args[:-1], "0.01"]
    else:
        old = with_seed(args, "4")
    atomic_stage(tmp_path, monkeypatch, args, old, seed=2)


# ----------------------------------------------------------------------------- train

TRAIN_FLAGS = [*TINY_FLAGS, "--global-batch-size", "8", "--epochs", "12", "--eval-interval", "2", "--eval-size", "8",
               "--lr", "3e-3", "--lr-warmup-steps", "4", "--num-threads", "1", "--wandb-mode", "disabled", "--no-progress"]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One uninterrupted `hrm train` process (36 steps, a checkpoint every 6): (cwd, its run folder, seconds)."""
    cwd = tmp_path_factory.mktemp("kills_train_ref")
    duration = timed(["train", "--dataset", str(data), "--output", "run", *TRAIN_FLAGS], cwd)
    return cwd, cwd / "run", duration


def dvc_outputs(run_dir: Path) -> dict[str, str]:
    """What the train stage declares to DVC: checkpoints/ (step_N, step_N.sha256, all_config.yaml), dvclive/
    (metrics.json, the histories plots/metrics/{train,eval}/*.tsv)."""
    files = {f"checkpoints/{k}": v for k, v in digest_tree(run_dir / "checkpoints").items()}
    files |= {f"dvclive/{k}": v for k, v in digest_tree(run_dir / "dvclive").items()}
    return files


def test_train_killed_then_rerun(data, trained, tmp_path, monkeypatch):
    """Killed at random moments (some after checkpoints were written), the same command resumes from
    OUT/train_state.pt (or starts over); compared byte for byte with the uninterrupted run: every file
    of checkpoints/ (step_N, step_N.sha256, all_config.yaml) and dvclive/ (metrics.json, the histories).
    train_state.pt, run.json and previous-runs/ are no DVC outputs and legitimately differ.

    Train builds its output over the run, so at every kill (a) means: each declared file present is
    the uninterrupted run's, whole (a history: a prefix of it; metrics.json, rewritten at every
    evaluation: the uninterrupted run's summary at that evaluation; a temporary being written aside)."""
    _, ref_run, duration = trained
    ref = dvc_outputs(ref_run)
    histories = sorted(k[len("dvclive/"):] for k in ref if k.endswith(".tsv"))
    assert {"checkpoints/step_6", "checkpoints/step_36.sha256", "checkpoints/all_config.yaml", "dvclive/metrics.json",
            "dvclive/plots/metrics/train/lm_loss.tsv", "dvclive/plots/metrics/eval/accuracy.tsv"} <= set(ref)
    ref_metrics = json.loads((ref_run / "dvclive" / "metrics.json").read_text())
    ref_evals: dict[int, dict[str, float]] = {}
    for path in sorted((ref_run / "dvclive" / "plots" / "metrics" / "eval").glob("*.tsv")):
        with open(path, newline="") as f:
            for r in csv.DictReader(f, delimiter="\t"):
                ref_evals.setdefault(int(r["step"]), {})[path.stem] = float(r[path.stem])
    cwd = tmp_path / "kill"
    cwd.mkdir()
    run = cwd / "run"
    states = []

    def whole():
        ckpt = run / "checkpoints"
        present = sorted(p.name for p in ckpt.iterdir() if not TEMPORARY.search(p.name)) if ckpt.is_dir() else []
        for name in present:
            assert (ckpt / name).read_bytes() == (ref_run / "checkpoints" / name).read_bytes(), name
        for name in histories:
            if (run / "dvclive" / name).is_file():
                assert (ref_run / "dvclive" / name).read_bytes().startswith((run / "dvclive" / name).read_bytes()), name
        summary = run / "dvclive" / "metrics.json"
        if summary.is_file():  # written at every evaluation: the summary of the run so far
            metrics = json.loads(summary.read_text())
            if metrics["step"] == ref_metrics["step"]:
                assert summary.read_bytes() == (ref_run / "dvclive" / "metrics.json").read_bytes()
            else:  # that of the uninterrupted run at that evaluation
                assert metrics["total_steps"] == ref_metrics["total_steps"]
                assert {k: float(v) for k, v in metrics["eval"].items()} == ref_evals[metrics["step"]]
        states.append(any(n.startswith("step_") for n in present))

    args = ["train", "--dataset", str(data), "--output", "run", *TRAIN_FLAGS]
    hit = kill_then_rerun(args, cwd, monkeypatch, duration=duration, seed=3, kills=3, whole=whole)
    assert any(h and s for h, s in zip(hit, states)), (hit, states)  # one kill came mid-run, after checkpoints
    assert dvc_outputs(run) == ref
    assert temporaries(cwd) == []
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]
    allowed = {"checkpoints", "dvclive", "run.json", "train_state.pt", "train_state.pt.sha256", ".train.lock", "previous-runs"}
    assert {p.name for p in run.iterdir()} <= allowed


# A process that SIGKILLs itself half-way through writing the temporary of WHICH (torch.save: step_N, train_state.pt).
KILLED_WHILE_WRITING = """
import os, signal, sys
import torch
save = torch.save
def killing_save(obj, f, *a, **k):
    save(obj, f, *a, **k)
    if os.path.basename(str(f)).startswith(sys.argv[1] + ".tmp-"):
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = killing_save
from pipelines.cli import cli
cli(sys.argv[2:], prog_name="hrm")
"""


def test_train_killed_while_writing_a_checkpoint(data, trained, tmp_path, monkeypatch):
    """The moment the random kills rarely hit on a tiny model, but a real one spends seconds in: half of
    checkpoints/step_18's temporary written. The rerun (resuming at step 12) leaves no temporary, and
    checkpoints/ and dvclive/ equal the uninterrupted run's byte for byte."""
    _, ref_run, _ = trained
    args = ["train", "--dataset", str(data), "--output", "run", *TRAIN_FLAGS]
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, "step_18", *args], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckpt = tmp_path / "run" / "checkpoints"
    assert len(list(ckpt.glob("step_18.tmp-*"))) == 1 and not (ckpt / "step_18").exists()  # killed mid-write
    monkeypatch.chdir(tmp_path)
    ok(*args)
    assert dvc_outputs(tmp_path / "run") == dvc_outputs(ref_run)
    assert temporaries(tmp_path) == []


# ----------------------------------------------------------------------------- evaluate, analyze


def without_run_json(out: Path) -> dict[str, str]:
    """The folder less run.json (its timings differ from run to run), which must be there, whole."""
    files = digest_tree(out)
    assert "run.json" in files and json.loads((out / "run.json").read_text())
    del files["run.json"]
    return files


@pytest.mark.parametrize("stage", ["evaluate", "analyze"])
def test_evaluate_and_analyze_killed_then_rerun(data, trained, tmp_path, monkeypatch, stage):
    _, ref_run, _ = trained
    common = ["--checkpoint", str(ref_run), "--dataset", str(data), "--output", "out", "--num-threads", "1", "--no-progress"]
    if stage == "evaluate":
        args = ["evaluate", *common, "--test-size", "4", "--permutations", "2", "--tiers", "none", "--seed", "0"]
    else:
        args = ["analyze", *common, "--sample", "4", "--easy-k", "0,2", "--easy-sample", "2", "--shifts", "2",
                "--noise-runs", "1", "--fp-sample", "2", "--landscape-radius", "2", "--seed", "0"]
    atomic_stage(tmp_path, monkeypatch, args, with_seed(args, "1"), seed=4, view=without_run_json)
