"""Progress reporting for the long loops (training steps, evaluated puzzles, analysed puzzles).

One factory, :func:`progress_bar`, used by ``hrm train`` (pipelines/train_run.py, rank 0),
:func:`hrm.evaluate.evaluate_puzzles` and :func:`hrm.analysis.run.analyze`:

- stderr is a terminal (or a notebook): a tqdm bar, as always;
- stderr is not a terminal (``dvc repro``, a log file, CI): plain lines, no carriage returns,
  at most one every :data:`INTERVAL_S` seconds (30; the environment variable
  ``HRM_PROGRESS_INTERVAL`` sets another, in seconds) and a last one when the loop ends::

      train: step 1,234/31,200 (4%), 2.10 steps/s, elapsed 0:09:47, ETA 4:07:10, loss=1.234 acc=0.567

  The rate is the mean since the bar started (so pauses such as evaluations inside training count),
  the ETA the remaining count at that rate. A line is written when the count moves: a single
  step longer than the interval gives one line per step.
- ``enabled=False`` (``--no-progress``): nothing at all.

Every object returned has tqdm's ``update(n)``, ``set_postfix(**kw)``, ``write(msg)``, ``close()``
and ``n`` (and is a context manager).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, TextIO

INTERVAL_S = 30.0  # seconds between two progress lines when stderr is not a terminal
INTERVAL_ENV = "HRM_PROGRESS_INTERVAL"
MODES = ("auto", "bar", "lines", "off")


def interval_s() -> float:
    """:data:`INTERVAL_S`, or ``HRM_PROGRESS_INTERVAL`` (seconds, >= 0) when set."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: must be a finite number of seconds >= 0")
    return value


def _is_terminal(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def clock_text(seconds: float) -> str:
    """H:MM:SS (hours not wrapped at 24)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def rate_text(rate: float | None, unit: str) -> str:
    """``2.10 steps/s``; below one per second ``12.3 s/step``; ``? steps/s`` when unknown."""
    if rate is None or rate <= 0:
        return f"? {unit}s/s"
    if rate >= 1:
        return f"{rate:.{1 if rate >= 100 else 2}f} {unit}s/s"
    return f"{1 / rate:.1f} s/{unit}"


class ProgressLines:
    """A progress report as plain lines (see the module docstring); tqdm's methods that the stages use.

    ``clock`` (seconds, monotonic) and ``interval`` are parameters so that tests can drive it.
    """

    def __init__(self, total: int | None, desc: str, unit: str, *, initial: int = 0, file: TextIO | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.initial = initial
        self.file = file if file is not None else sys.stderr
        self.interval = interval_s() if interval is None else interval
        self.clock = clock
        self.start_t = clock()
        self.last_print_t = self.start_t
        self.last_print_n: int | None = None
        self.postfix = ""
        self.closed = False

    # -- tqdm's interface
    def update(self, n: int = 1) -> None:
        if self.closed:
            return
        self.n += n
        now = self.clock()
        if now - self.last_print_t >= self.interval:
            self._print(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def write(self, message: str, file: TextIO | None = None, end: str = "\n") -> None:
        out = file if file is not None else self.file
        out.write(f"{message}{end}")
        out.flush()

    def refresh(self) -> None:
        self._print(self.clock())

    def close(self) -> None:
        """The last line (unless the last one printed already says the same count)."""
        if self.closed:
            return
        self.closed = True
        if self.last_print_n != self.n:
            self._print(self.clock())

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the line
    def line(self, now: float) -> str:
        elapsed = now - self.start_t
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        parts = []
        if self.total:
            parts.append(f"{self.unit} {self.n:,}/{self.total:,} ({int(100 * self.n / self.total)}%)")
        else:
            parts.append(f"{self.unit} {self.n:,}")
        parts.append(rate_text(rate, self.unit))
        parts.append(f"elapsed {clock_text(elapsed)}")
        if self.total:
            left = max(0, self.total - self.n)
            parts.append(f"ETA {clock_text(left / rate) if rate else ('0:00:00' if left == 0 else '?')}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts)

    def _print(self, now: float) -> None:
        self.write(self.line(now))
        self.last_print_t = now
        self.last_print_n = self.n


class NoProgress:
    """``--no-progress``: the same methods, nothing written (``write`` still writes: it is a message)."""

    def __init__(self, initial: int = 0, file: TextIO | None = None):
        self.n = initial
        self.file = file

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, message: str, file: TextIO | None = None, end: str = "\n") -> None:
        out = file or self.file or sys.stderr
        out.write(f"{message}{end}")
        out.flush()

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(total: int | None, desc: str, unit: str, *, enabled: bool = True, mode: str = "auto",
                 initial: int = 0, file: TextIO | None = None, leave: bool = False, **tqdm_kwargs: Any):
    """A progress report of ``total`` ``unit``\\ s: a tqdm bar on a terminal, lines otherwise, nothing when
    not ``enabled`` (see the module docstring). ``mode``: ``auto`` (that choice), ``bar``, ``lines`` or
    ``off``; ``tqdm_kwargs`` go to the bar only (``smoothing``, ...)."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}: one of {', '.join(MODES)}")
    file = file if file is not None else sys.stderr
    if not enabled or mode == "off":
        return NoProgress(initial, file)
    if mode == "auto":
        mode = "bar" if _is_terminal(file) or _in_notebook() else "lines"
    if mode == "lines":
        return ProgressLines(total, desc, unit, initial=initial, file=file)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file, leave=leave, dynamic_ncols=True,
                **tqdm_kwargs)
