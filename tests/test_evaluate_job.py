"""``hrm evaluate`` as a job (pipelines/job.py): chunks joined back, a stopped run continued,
settings checked, and torchrun's ranks (2 CPU processes on gloo) giving the one-process outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hrm.evaluate.engine import Engine
from hrm.evaluate.results import EvalTotals
from hrm.evaluate.run import evaluate_puzzles
from hrm.tasks import SUDOKU, make_perturbations
from test_evaluate import real, tiny_model, write_dataset, write_run  # noqa: F401 (real: a fixture)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, real):  # noqa: F811
    q, a, r = real
    root = tmp_path_factory.mktemp("job")
    return write_run(root / "run"), write_dataset(root / "sudoku-test", q, a, r)


def evaluate_args(inputs, out: Path, *extra) -> list[str]:
    run, dataset = inputs
    return [str(a) for a in ("--checkpoint", run, "--last", 2, "--dataset", dataset, "--permutations", 3,
                             "--tiers", "1-5", "--batch-size", 3, "--chunk-size", 3, "--device", "cpu",
                             "--no-progress", "--output", out, *extra)]


def hrm(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.evaluate", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


def signal_when(args: list[str], ready, sig: int, module: str = "pipelines.evaluate") -> tuple[int, str]:
    """Start the stage ``module`` (`hrm evaluate`) with ``args``, send it ``sig`` once ``ready()`` holds
    (or it ended, or 120 s passed) and return its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(sig)
    _, err = proc.communicate()
    return proc.returncode, err


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file but run.json (timings), by path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.json"}


@pytest.fixture(scope="module")
def one_run(inputs, tmp_path_factory) -> dict[str, bytes]:
    """The outputs of one uninterrupted one-process run: what every other way must give."""
    out = tmp_path_factory.mktemp("one") / "out"
    r = hrm(*evaluate_args(inputs, out))
    assert r.returncode == 0, r.stderr
    assert not (out.parent / "out.resume").exists()  # the units are removed once the outputs are in place
    run = json.loads((out / "run.json").read_text())
    assert run["units"] == 26 and run["chunk_rows"] == 3 and run["world_size"] == 1 and not run["resumed"]
    return outputs(out)


def test_the_totals_of_chunks_add_up_to_one_evaluation(real):  # noqa: F811
    q, a, r = real
    engine = Engine([tiny_model(0), tiny_model(1)])
    pert = make_perturbations("relabel", 3, seed=5)
    whole = evaluate_puzzles(engine, q[:12], a[:12], perturbations=pert, ratings=r[:12], batch_size=4, rules=SUDOKU.rules)
    parts = [evaluate_puzzles(engine, q[lo:lo + 4], a[lo:lo + 4], perturbations=pert, ratings=r[lo:lo + 4],
                                 batch_size=4, rules=SUDOKU.rules) for lo in (0, 4, 8)]
    saved = [EvalTotals.from_arrays(p.totals().as_arrays(), names=p.names, perturbation=p.perturbation,
                                       early_stop=p.early_stop, task=p.task) for p in parts]  # through the unit files' arrays
    joined = saved[0].add(saved[1]).add(saved[2])
    assert json.dumps(joined.summary()) == json.dumps(whole.summary())
    assert json.dumps(joined.tables()) == json.dumps(whole.tables())
    for name, value in whole.totals().as_arrays().items():
        if name != "seconds":
            assert np.array_equal(joined.as_arrays()[name], value), name
    tables = [p.puzzle_table() for p in parts]
    for name, value in whole.puzzle_table().items():
        assert np.array_equal(np.concatenate([t[name] for t in tables]), value), name
    # The totals' size does not depend on the number of puzzles.
    assert sum(v.nbytes for v in whole.totals().as_arrays().values()) == sum(
        v.nbytes for v in parts[0].totals().as_arrays().values())
    with pytest.raises(ValueError, match="different evaluations"):
        saved[0].add(evaluate_puzzles(engine, q[:4], a[:4], perturbations=pert, batch_size=4,
                                         early_stop=True, rules=SUDOKU.rules).totals())


def test_a_killed_run_continues_to_the_same_outputs(inputs, one_run, tmp_path):
    out = tmp_path / "out"
    resume = tmp_path / "out.resume"
    args = evaluate_args(inputs, out)
    rc, _ = signal_when(args, lambda: list(resume.glob("*.npz.sha256")), signal.SIGKILL)
    assert rc == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    done = len(list(resume.glob("*.npz")))  # renamed into place after its sha256 was written: complete
    assert 1 <= done < 26
    r = hrm(*args)
    assert r.returncode == 0, r.stderr
    assert f"continuing {resume}: {done} of this rank's 26 already done" in r.stderr
    assert outputs(out) == one_run
    assert json.loads((out / "run.json").read_text())["resumed"] and not resume.exists()


def test_sigterm_keeps_the_units_and_says_how_to_continue(inputs, one_run, tmp_path):
    out = tmp_path / "out"
    resume = tmp_path / "out.resume"
    args = evaluate_args(inputs, out)
    rc, err = signal_when(args, lambda: list(resume.glob("*.npz.sha256")), signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, err
    assert "the same command continues from there" in err and "Traceback" not in err
    assert not out.exists() and list(resume.glob("*.npz"))
    assert hrm(*args).returncode == 0 and outputs(out) == one_run


def test_a_damaged_unit_is_run_again(inputs, one_run, tmp_path):
    out = tmp_path / "out"
    resume = tmp_path / "out.resume"
    args = evaluate_args(inputs, out)
    rc, _ = signal_when(args, lambda: len(list(resume.glob("*.npz.sha256"))) >= 2, signal.SIGKILL)
    assert rc == -signal.SIGKILL, "the run ended before it could be killed"
    unit = sorted(resume.glob("*.npz"))[0]
    data = bytearray(unit.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: its sha256 no longer matches
    unit.write_bytes(bytes(data))
    r = hrm(*args)
    assert r.returncode == 0, r.stderr
    assert f"{unit}: content does not match its recorded sha256" in r.stderr and f"running {unit.stem} again" in r.stderr
    assert outputs(out) == one_run


def test_changed_settings_are_refused_by_name_and_restart_drops_the_units(inputs, one_run, tmp_path):
    out = tmp_path / "out"
    resume = tmp_path / "out.resume"
    resume.mkdir()
    args = evaluate_args(inputs, out)
    # A folder there that this command did not write is never taken over (nor deleted).
    (resume / "notes.txt").write_text("mine")
    r = hrm(*args)
    assert r.returncode == 1 and "is not an `hrm evaluate` job folder" in r.stderr and "Traceback" not in r.stderr
    assert (resume / "notes.txt").read_text() == "mine"
    (resume / "notes.txt").unlink()
    # A run killed before it wrote its settings left an empty folder (or its half-written settings): taken over.
    (resume / ".job.json.tmp").write_text("{")
    r = hrm(*args)
    assert r.returncode == 0, r.stderr
    assert outputs(out) == one_run and not resume.exists()
    shutil.rmtree(out)
    # A stopped job (its settings and no units yet), continued with another seed and permutations.
    from pipelines.job import JOB_FILE

    rc, _ = signal_when(args, lambda: (resume / JOB_FILE).is_file(), signal.SIGKILL)
    assert rc == -signal.SIGKILL
    r = hrm(*evaluate_args(inputs, out, "--seed", 4))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "run with other settings: seed (0 vs 4)" in r.stderr and "--restart" in r.stderr
    r = hrm(*evaluate_args(inputs, out, "--permutations", 2))
    assert "permutations (3 vs 2)" in r.stderr
    # A job folder of code whose units held less (before first_to_halt: no unit format; before the per-pass
    # columns: 2) is refused by name.
    from pipelines.evaluate import UNIT_FORMAT

    settings = json.loads((resume / JOB_FILE).read_text())
    (resume / JOB_FILE).write_text(json.dumps({k: v for k, v in settings.items() if k != "units"}))
    r = hrm(*args)
    assert r.returncode == 1 and f"units (null vs {UNIT_FORMAT})" in r.stderr and "Traceback" not in r.stderr
    (resume / JOB_FILE).write_text(json.dumps({**settings, "units": 2}))
    r = hrm(*args)
    assert r.returncode == 1 and f"units (2 vs {UNIT_FORMAT})" in r.stderr and UNIT_FORMAT == 3
    r = hrm(*args, "--restart")
    assert r.returncode == 0, r.stderr
    assert outputs(out) == one_run and not resume.exists()


def test_two_ranks_on_gloo_give_the_one_process_outputs(inputs, one_run, tmp_path):
    out = tmp_path / "out"
    args = [a for a in evaluate_args(inputs, out) if a != "--no-progress"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(29500 + os.getpid() % 1000), "-m", "pipelines.evaluate", *args],
                       cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HRM_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    # One progress count for the whole job (2 sets of 39 puzzles), on rank 0 only, reaching its end.
    counts = [int(m.group(1)) for m in re.finditer(r"^evaluate: puzzle (\d+)/78 ", r.stderr, re.M)]
    assert counts and counts[-1] == 78 and counts == sorted(counts), r.stderr[-3000:]
    assert outputs(out) == one_run  # every metric, puzzles.parquet and every plot CSV, byte for byte
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["units"] == 26


def _disagree(rank: int, world: int, init: str, queue) -> None:
    import torch.distributed as dist

    from hrm.distributed import Dist
    from pipelines.job import check_ranks_agree
    from pipelines.io import StageError

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        check_ranks_agree({"checkpoints": [{"file": "step_2", "sha256": "ab" if rank == 0 else "cd"}], "seed": 0},
                          Dist(rank=rank, world_size=world))
        queue.put((rank, "no error"))
    except StageError as e:
        queue.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def test_ranks_that_disagree_on_a_checkpoint_stop_before_any_work(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_disagree, args=(rank, 2, init, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    messages = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    # Both ranks stop, with the same message naming the setting and both values.
    assert messages[0] == messages[1]
    assert messages[0].startswith("rank 1 and rank 0 disagree on checkpoints")
    assert '"ab"' in messages[0] and '"cd"' in messages[0]


# ----------------------------------------------------------------------------- issue 26: one job, one process


def a_second_process_is_refused(args: list[str], out: Path, ready, module: str = "pipelines.evaluate") -> None:
    """Start the stage on ``args``, stop it (SIGSTOP) once ``ready()`` holds, when it holds its lock and is
    mid-job; the same command in a second process is refused with one message naming the output folder and
    the first one's pid, and changes nothing there. The first is then killed (SIGKILL), as a crash would."""
    stage = module.split(".")[-1]
    first = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ready() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first run ended before the second could start"
        files = lambda: sorted((str(p), p.stat().st_size) for p in out.parent.rglob("*") if p.is_file())  # noqa: E731
        before = files()
        second = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
        assert second.stderr.count("Error:") == 1
        assert f"{out}: another `hrm {stage}` (pid {first.pid}) is writing this output" in second.stderr
        assert files() == before  # nothing written, nothing removed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_a_second_evaluate_on_the_same_output_is_refused_and_nothing_blocks_the_rerun(inputs, one_run, tmp_path):
    out, resume = tmp_path / "out", tmp_path / "out.resume"
    args = evaluate_args(inputs, out)
    a_second_process_is_refused(args, out, lambda: list(resume.glob("*.npz.sha256")))
    r = hrm(*args)  # the first one was killed: its lock is free, its units are continued
    assert r.returncode == 0, r.stderr
    assert outputs(out) == one_run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file, no job folder left


def test_a_unit_of_another_job_is_named_and_run_again(inputs, one_run, tmp_path):
    """A unit copied from another job's folder (seed 4; its own sha256 intact) into this job's: not
    merged; named and run again, the outputs those of one uninterrupted run."""
    out, resume = tmp_path / "out", tmp_path / "out.resume"
    other, other_resume = tmp_path / "other", tmp_path / "other.resume"
    args = evaluate_args(inputs, out)
    for a, folder in ((args, resume), (evaluate_args(inputs, other, "--seed", 4), other_resume)):
        rc, _ = signal_when(a, lambda: len(list(folder.glob("*.npz.sha256"))) >= 2, signal.SIGKILL)
        assert rc == -signal.SIGKILL, "the run ended before it could be killed"
    unit = sorted(resume.glob("*.npz"))[0]
    for name in (unit.name, unit.name + ".sha256"):
        shutil.copyfile(other_resume / name, resume / name)
    r = hrm(*args)
    assert r.returncode == 0, r.stderr
    assert f"{unit}: a unit of another job" in r.stderr and f"running {unit.stem} again" in r.stderr
    assert outputs(out) == one_run
