"""``hrm analyze`` as a job (pipelines/job.py): a stopped analysis continues to the outputs of an
uninterrupted one; a unit's bytes round-trip without pickle; changed settings are refused by name."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from pipelines.job import UnitFormatError, pack, unpack
from test_analysis import puzzles, stage_inputs  # noqa: F401 (fixtures)
from test_evaluate_job import signal_when

REPO = Path(__file__).resolve().parents[1]
# Many small items (12 or 13 traced batches, 3 x 10 easy-probe batches, 8 multistability chunks, 2 landscapes),
# so a kill lands in the middle of the work.
ARGS = ["--sample", "24", "--puzzle-index", "0,30", "--landscape-radius", "2", "--fp-sample", "8", "--shifts", "2",
        "--noise-runs", "1", "--noise", "fork", "--easy-k", "0,1,3", "--batch-size", "2", "--num-threads", "1",
        "--device", "cpu", "--no-progress"]
MODULE = "pipelines.analyze"


def analyze_args(stage_inputs, out: Path, *extra) -> list[str]:  # noqa: F811
    ckpt, ds = stage_inputs
    return ["--checkpoint", str(ckpt.parent), "--dataset", str(ds), *ARGS, "--output", str(out), *map(str, extra)]


def hrm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULE, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file but run.json (timings), by path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.json"}


@pytest.fixture(scope="module")
def one_run(stage_inputs, tmp_path_factory) -> dict[str, bytes]:  # noqa: F811
    out = tmp_path_factory.mktemp("one") / "out"
    r = hrm(*analyze_args(stage_inputs, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out.parent / "out.resume").exists()  # removed once the outputs are in place
    assert json.loads((out / "run.json").read_text())["resumed"] is False
    return outputs(out)


def test_a_killed_analysis_continues_to_the_same_outputs(stage_inputs, one_run, tmp_path):  # noqa: F811
    out, resume = tmp_path / "out", tmp_path / "out.resume"
    args = analyze_args(stage_inputs, out)
    # Killed once some of the easy probe is done: the traces and part of the probe are kept.
    rc, _ = signal_when(args, lambda: list(resume.glob("easy-k1-*.npz")), signal.SIGKILL, MODULE)
    assert rc == -signal.SIGKILL, "the analysis ended before it could be killed"
    assert not out.exists()
    kept = sorted(p.name for p in resume.glob("*.npz"))
    traced = pl.read_parquet(io.BytesIO(one_run["puzzles.parquet"])).height  # the sample and the selected puzzles
    assert sum(n.startswith("traces-") for n in kept) == -(-traced // 2)  # every traced batch (2 puzzles each)
    assert not any(n.startswith(("multistability-", "landscape-")) for n in kept)
    r = hrm(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"continuing {resume}" in r.stderr
    assert outputs(out) == one_run  # every table, metric, plot and figure, the traces streamed from the units
    assert json.loads((out / "run.json").read_text())["resumed"] is True and not resume.exists()


def test_sigterm_keeps_the_work_a_damaged_unit_is_run_again_and_settings_are_checked(stage_inputs, one_run,  # noqa: F811
                                                                                    tmp_path):
    out, resume = tmp_path / "out", tmp_path / "out.resume"
    args = analyze_args(stage_inputs, out)
    rc, err = signal_when(args, lambda: len(list(resume.glob("traces-*.npz"))) >= 3, signal.SIGTERM, MODULE)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "the same command continues from there" in err and "Traceback" not in err
    unit = sorted(resume.glob("traces-*.npz"))[0]
    data = bytearray(unit.read_bytes())
    data[len(data) // 2] ^= 0xFF  # its sha256 no longer matches
    unit.write_bytes(bytes(data))

    changed = hrm(*args, "--seed", "3")
    assert changed.returncode != 0 and "Traceback" not in changed.stderr
    assert "run with other settings" in changed.stderr and "seed" in changed.stderr and "--restart" in changed.stderr
    assert unit.exists()  # a refused run leaves the stopped job as it was

    r = hrm(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{unit}" in r.stderr and "running traces-000000 again" in r.stderr
    assert outputs(out) == one_run

    # --restart drops a stopped job's units and starts over.
    rc, _ = signal_when(args, lambda: list(resume.glob("traces-*.npz")), signal.SIGKILL, MODULE)
    assert rc == -signal.SIGKILL
    r = hrm(*args, "--seed", "3", "--restart")
    assert r.returncode == 0, r.stderr[-3000:]
    assert outputs(out) != one_run and not resume.exists()


def test_a_folder_hrm_did_not_write_is_refused(stage_inputs, tmp_path):  # noqa: F811
    resume = tmp_path / "out.resume"
    resume.mkdir()
    (resume / "notes.txt").write_text("mine")
    r = hrm(*analyze_args(stage_inputs, tmp_path / "out"))
    assert r.returncode != 0 and "is not an `hrm analyze` job folder" in r.stderr and "Traceback" not in r.stderr
    assert (resume / "notes.txt").read_text() == "mine"


@dataclass
class NotOurs:
    x: int


def test_a_units_bytes_round_trip_without_pickle():
    from hrm.analysis.landscape import Landscape

    table = pa.table({"a": pa.array([1, 2, None], pa.int16()), "b": pa.array([[1.5], [], [2.0]], pa.list_(pa.float32()))})
    land = Landscape(radius=1, scale=0.25, center_segment=2, offsets=np.arange(-1, 2), conflicts=np.ones((3, 3), np.int64),
                     digits=np.zeros((3, 3), np.int16), exact=None, dest=np.zeros((3, 3, 2), np.float32),
                     trajectory=np.zeros((4, 2), np.float32), ratio=np.array([0.5, 0.25], np.float32))
    value = {"rows": 3, "states": {7: (torch.arange(6, dtype=torch.float32).reshape(2, 3),
                                       torch.tensor([1.5, -2.25], dtype=torch.bfloat16), np.uint8(4), 12)},
             "table": table, "list": [None, True, 1.0e-300, math.inf, "é"], "scalar": np.float32(0.1),
             "words": np.array(["converged", "drifting"]), "land": land}
    back = unpack(pack(value))
    assert back["rows"] == 3 and back["list"][:4] == [None, True, 1.0e-300, math.inf] and back["list"][4] == "é"
    z, w, u, n = back["states"][7]
    assert torch.equal(z, value["states"][7][0]) and z.dtype == torch.float32
    assert torch.equal(w, value["states"][7][1]) and w.dtype == torch.bfloat16
    assert u == 4 and u.dtype == np.uint8 and n == 12 and isinstance(back["states"][7], tuple)
    assert back["table"].equals(table) and back["table"].schema == table.schema
    assert back["scalar"].dtype == np.float32 and back["scalar"] == np.float32(0.1)
    assert back["words"].tolist() == ["converged", "drifting"]
    assert isinstance(back["land"], Landscape) and back["land"].exact is None
    assert np.array_equal(back["land"].conflicts, land.conflicts) and back["land"].scale == 0.25

    with pytest.raises(TypeError, match="object arrays"):
        pack({"x": np.array([{}, 1], dtype=object)})
    with pytest.raises(TypeError, match="NotOurs"):
        pack(NotOurs(1))  # only the library's dataclasses are rebuilt on reading
    with pytest.raises(UnitFormatError):
        unpack(b"not an npz")
    with pytest.raises(UnitFormatError):
        unpack(pack({"x": 1}).replace(b'"v": 1', b'"q": 1'))  # bytes changed under the zip's CRC
    forged = io.BytesIO()
    np.savez(forged, __structure__=np.frombuffer(b'{"q": 1}', np.uint8))  # an entry pack never writes
    with pytest.raises(UnitFormatError, match="unknown entry"):
        unpack(forged.getvalue())
    forged = io.BytesIO()
    np.savez(forged, __structure__=np.frombuffer(b'{"dataclass": "os:PathLike", "fields": {}}', np.uint8))
    with pytest.raises(UnitFormatError, match="not a dataclass of hrm"):
        unpack(forged.getvalue())


def test_a_second_analyze_on_the_same_output_is_refused_and_nothing_blocks_the_rerun(stage_inputs, one_run,  # noqa: F811
                                                                                    tmp_path):
    """Issue 26: two `hrm analyze` on one output: the second is refused naming the folder and the first's
    pid, touching nothing; the first killed, the same command continues to the one-run outputs and leaves
    no lock file or job folder."""
    from test_evaluate_job import a_second_process_is_refused

    out, resume = tmp_path / "out", tmp_path / "out.resume"
    args = analyze_args(stage_inputs, out)
    a_second_process_is_refused(args, out, lambda: list(resume.glob("*.npz.sha256")), MODULE)
    r = hrm(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert outputs(out) == one_run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
