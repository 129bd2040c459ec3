"""hrm.progress: under a non-terminal stderr (dvc repro, a log) the long stages write plain progress
lines (rate, ETA) at most every interval and a last one; ``--no-progress`` writes none. Real
``hrm train`` and ``hrm evaluate`` processes with stderr to a pipe, and the line logic on a fake clock."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hrm.progress import INTERVAL_ENV, INTERVAL_S, NoProgress, ProgressLines, clock_text, interval_s, progress_bar, rate_text
from test_train import TINY_FLAGS, data  # noqa: F401 - the tiny real dataset of the trainer tests (a module fixture)

REPO = Path(__file__).resolve().parents[1]
RATE = r"(?:\d[\d.]* \w+s/s|\d[\d.]* s/\w+)"
CLOCK = r"\d+:\d\d:\d\d"
PROGRESS = re.compile(r"^train: step [\d,]+/[\d,]+ \(")  # a progress line, not "train: step 6/12 eval ..."


def line_re(desc: str, unit: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(desc)}: {unit} (?P<n>[\d,]+)/(?P<total>[\d,]+) \((?P<pct>\d+)%\), {RATE}, "
                      rf"elapsed {CLOCK}, ETA (?P<eta>{CLOCK})(?:, .*)?$")


# ----------------------------------------------------------------------------- the line logic, fake clock
class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_lines_at_most_every_interval_and_a_last_one():
    clock, out = Clock(), io.StringIO()
    bar = ProgressLines(31_200, "train", "step", initial=1_000, file=out, interval=30, clock=clock)
    for _ in range(100):  # 100 steps of 2 s: a line every 15 steps (30 s), the first at 30 s
        clock.t += 2
        bar.update(1)
    bar.set_postfix(loss="1.234", acc="0.567", refresh=False)
    clock.t += 2
    bar.update(1)
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 100 // 15 + 1  # 6 on the interval + the last (step 1,101)
    assert lines[0] == "train: step 1,015/31,200 (3%), 2.0 s/step, elapsed 0:00:30, ETA 16:46:10"
    assert lines[-1] == ("train: step 1,101/31,200 (3%), 2.0 s/step, elapsed 0:03:22, ETA 16:43:18, "
                         "loss=1.234 acc=0.567")
    assert all(line_re("train", "step").match(x) for x in lines)


def test_last_line_not_repeated_fast_rates_and_unknowns():
    clock, out = Clock(), io.StringIO()
    bar = ProgressLines(10, "evaluate test", "puzzle", file=out, interval=0, clock=clock)
    clock.t += 0.5
    bar.update(5)
    clock.t += 0.5
    bar.update(5)
    bar.close()
    assert out.getvalue().splitlines() == [
        "evaluate test: puzzle 5/10 (50%), 10.00 puzzles/s, elapsed 0:00:00, ETA 0:00:00",
        "evaluate test: puzzle 10/10 (100%), 10.00 puzzles/s, elapsed 0:00:01, ETA 0:00:00"]  # not printed again at close
    # closed before any progress: rate and ETA unknown, still one line
    out = io.StringIO()
    ProgressLines(10, "x", "step", file=out, interval=30, clock=Clock()).close()
    assert out.getvalue() == "x: step 0/10 (0%), ? steps/s, elapsed 0:00:00, ETA ?\n"
    assert rate_text(0.05, "step") == "20.0 s/step" and rate_text(250.0, "puzzle") == "250.0 puzzles/s"
    assert clock_text(90_061) == "25:01:01"


def test_mode_choice_and_interval(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_s() == INTERVAL_S == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert interval_s() == 0.5
    assert progress_bar(3, "d", "step", file=io.StringIO()).interval == 0.5
    for bad in ("-1", "nan", "soon"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=INTERVAL_ENV):
            interval_s()
    monkeypatch.delenv(INTERVAL_ENV)
    assert isinstance(progress_bar(3, "d", "step", file=io.StringIO()), ProgressLines)  # not a terminal
    off = io.StringIO()
    bar = progress_bar(3, "d", "step", enabled=False, file=off)
    assert isinstance(bar, NoProgress)
    bar.update(3)
    bar.set_postfix(loss=1)
    bar.close()
    assert off.getvalue() == "" and bar.n == 3

    class Tty(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    bar = progress_bar(3, "d", "step", file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    with pytest.raises(ValueError):
        progress_bar(3, "d", "step", mode="sometimes")


# ----------------------------------------------------------------------------- real processes
def run_timed(args, interval: float | None):
    """Run ``python -m pipelines.cli ARGS`` with stderr to a pipe (not a terminal): (rc, [(seconds, stderr line bytes)])."""
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(REPO))
    env.pop(INTERVAL_ENV, None)
    if interval is not None:
        env[INTERVAL_ENV] = str(interval)
    proc = subprocess.Popen([sys.executable, "-c", "from pipelines.cli import cli; cli(prog_name='hrm')", *map(str, args)],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[tuple[float, bytes]] = []

    def read():
        for raw in iter(proc.stderr.readline, b""):
            lines.append((time.monotonic(), raw))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rc = proc.wait(timeout=300)
    reader.join(timeout=30)
    return rc, lines


def train_args(data, out, *extra):
    return ["train", "--dataset", data, "--output", out, *TINY_FLAGS, "--global-batch-size", "8", "--epochs", "40",
            "--eval-interval", "20", "--eval-size", "8", "--lr", "3e-3", "--lr-warmup-steps", "4", "--num-threads", "1", *extra]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A real `hrm train` (120 steps) with the interval at 0.2 s: (run folder, rc, stderr lines)."""
    out = tmp_path_factory.mktemp("progress_run") / "run"
    rc, lines = run_timed(train_args(data, out), 0.2)
    return out, rc, lines


def test_train_progress_lines_in_a_pipe(trained):
    out, rc, lines = trained
    text = b"".join(raw for _, raw in lines).decode()
    assert rc == 0, text
    assert "\r" not in text and "\x1b" not in text  # no bar redraws, no cursor moves
    pat = line_re("train", "step")
    prog = [(t, pat.match(raw.decode().rstrip("\n"))) for t, raw in lines if PROGRESS.match(raw.decode())]
    assert prog and all(m for _, m in prog), text
    counts = [int(m["n"].replace(",", "")) for _, m in prog]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # each line new progress
    assert all(m["total"] == "120" for _, m in prog)
    assert counts[-1] == 120 and prog[-1][1]["pct"] == "100" and prog[-1][1]["eta"] == "0:00:00"  # the last line
    assert len(prog) >= 3, text  # lines along the way, not just at the end
    # at least one line per interval (0.2 s) while the loop runs; generous slack for a busy machine
    gaps = [b[0] - a[0] for a, b in zip(prog, prog[1:])]
    assert max(gaps) < 0.2 + 3.0, gaps
    assert "loss=" in prog[-1][1].group(0)  # the postfix (loss, acc, exact, lr) rides along
    # the other messages (evaluations, checkpoints) stay whole lines of their own
    assert any(raw.decode().startswith("train: step 60/120 eval") for _, raw in lines), text


def test_train_no_progress_writes_none(data, tmp_path):
    rc, lines = run_timed(train_args(data, tmp_path / "run", "--epochs", "4", "--eval-interval", "2", "--no-progress"), 0)
    text = b"".join(raw for _, raw in lines).decode()
    assert rc == 0, text
    assert not any(PROGRESS.match(raw.decode()) for _, raw in lines) and "steps/s" not in text and "\r" not in text
    assert "train: step 12/12 eval" in text  # the run's own messages are still there


def eval_args(trained, data, out, *extra):
    return ["evaluate", "--checkpoint", trained[0], "--last", 1, "--dataset", data, "--variant", "hint", "--permutations", 2,
            "--batch-size", 1, "--tiers", "1-5", "--device", "cpu", "--num-threads", 1, "--output", out, *extra]


def test_evaluate_progress_lines_in_a_pipe(trained, data, tmp_path):
    """Interval 0: a line at every batch (here one puzzle), one count for the whole job (the test split, then the
    tier: hrm evaluate's units); none repeated at the end."""
    assert trained[1] == 0
    rc, lines = run_timed(eval_args(trained, data, tmp_path / "ev"), 0)
    text = b"".join(raw for _, raw in lines).decode()
    assert rc == 0, text
    assert "\r" not in text and "\x1b" not in text
    pat = line_re("evaluate", "puzzle")
    prog = [pat.match(raw.decode().rstrip("\n")) for _, raw in lines if raw.decode().startswith("evaluate: puzzle ")]
    assert prog and all(prog), text
    assert [int(m["n"]) for m in prog] == list(range(1, 25))  # 12 test puzzles, then 12 of the tier, one per batch
    assert prog[-1]["pct"] == "100" and prog[-1]["eta"] == "0:00:00"
    rc, lines = run_timed(eval_args(trained, data, tmp_path / "ev2", "--no-progress"), 0)
    text = b"".join(raw for _, raw in lines).decode()
    assert rc == 0, text
    assert not re.search(r"^evaluate [^:]+: puzzle \d", text, re.M) and "ETA" not in text and "\r" not in text
    assert "evaluate: test: 12 puzzles, " in text  # the stage's own summary line stays
