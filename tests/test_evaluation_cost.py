"""An evaluation says what it costs before it runs (hrm.evaluate.cost), and ``--dry-run`` stops there:
the passes and FLOPs counted from the run's settings, the hours from a real trial on the device."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hrm.evaluate.cost import EvaluationCost, evaluation_cost
from hrm.evaluate.engine import Engine, segment_flops
from test_evaluate import _cli, dataset_dir, real, tiny_model, write_run  # noqa: F401 (fixtures)


def test_the_cost_counts_every_segment_of_every_pass_and_times_a_trial(real):  # noqa: F811
    q, _, _ = real
    models = [tiny_model(seed=0), tiny_model(seed=1)]
    cost = evaluation_cost(Engine(models), rows_per_checkpoint=10, trial_inputs=q[:6])
    assert (cost.passes, cost.segments, cost.row_segments, cost.trial_rows) == (20, 3, 60, 6)
    assert cost.flops == pytest.approx(2 * segment_flops(models[0]) * 10 * 3)
    assert cost.rate > 0 and cost.hours == pytest.approx(60 / cost.rate / 3600)
    chunked = evaluation_cost(Engine(models, max_rows=4), rows_per_checkpoint=10, trial_inputs=q[:6])
    assert chunked.trial_rows == 4  # a chunking engine is timed on one chunk: its rate per row is the run's


def test_the_line_names_the_work_and_bounds_an_early_stop():
    cost = EvaluationCost(passes=1_000, segments=16, flops=3.2e12, rate=400.0, trial_rows=32)
    line = cost.describe(early_stop=False)
    assert line.startswith("1,000 passes x 16 segments = 16,000 row-segments, 3.2 TFLOP; a trial of 32 rows")
    assert line.endswith("400.0 row-segments/s here: 40.0 s")
    assert cost.describe(early_stop=True).endswith("here: at most 40.0 s")
    assert EvaluationCost(passes=3_600_000, segments=16, flops=1.0, rate=400.0, trial_rows=32).describe(False) \
        .endswith("here: 40.00 h")


def _cost_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("evaluate: cost: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_a_dry_run_prints_the_cost_and_writes_nothing(tmp_path, dataset_dir):  # noqa: F811
    run = write_run(tmp_path / "run")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = _cli(["--checkpoint", run, "--last", 2, "--dataset", dataset_dir, "--permutations", 3, "--test-size", 12,
                   "--tiers", "1-5", "--batch-size", 5, "--device", "cpu", "--no-progress", "--dry-run",
                   "--output", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    # 2 checkpoints x 3 passes x 12 puzzles x (the split + one tier), 3 segments each
    line = _cost_line(result.output)
    assert "144 passes x 3 segments = 432 row-segments" in line and "a trial of 15 rows" in line
    assert re.search(r"row-segments/s here: [\d.]+ (s|min|h)$", line), line
    assert "--dry-run: stopped before evaluating; nothing written" in result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no output, lock or job folder


def test_a_run_says_its_cost_before_it_evaluates(tmp_path, dataset_dir):  # noqa: F811
    run = write_run(tmp_path / "run")
    result = _cli(["--checkpoint", run, "--dataset", dataset_dir, "--permutations", 2, "--test-size", 4, "--tiers",
                   "none", "--device", "cpu", "--no-progress", "--early-stop", "--output", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    line = _cost_line(result.output)
    assert "8 passes x 3 segments" in line and "here: at most " in line  # an early stop can only save
    assert result.output.index(line) < result.output.index("evaluate: wrote ")
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert np.isfinite(float(re.search(r"ran ([\d,.]+) row-segments/s", line).group(1).replace(",", "")))
