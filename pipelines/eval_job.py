"""The work of ``hrm evaluate`` as a job of chunks: resumable, and shared by torchrun's ranks.

The evaluated puzzles of each set (the test split, then each easy tier) are cut into consecutive
chunks of ``chunk_size`` puzzles, a multiple of the batch size, so a chunk runs exactly the batches
one uninterrupted run would run for those puzzles. A chunk is a *unit*; unit ``i`` (numbered over
all sets) belongs to rank ``i % world_size``. A finished unit is written to the job folder, beside
the output (``OUT.resume/``), atomically with its sha256 (hrm.model.write_verified); a kill loses at
most the units in flight. The same command continues a stopped job: units already there (and
verified) are not run again. A unit holds what the outputs need of its puzzles: the totals
(hrm.evaluate.EvalTotals, integer sums of a size set by K, P and S alone) and, for the test split,
the per-puzzle table. Rank 0 adds the units up in order, one at a time, writes the outputs and
removes the job folder: the outputs equal an uninterrupted one-process run's, and memory holds no
more than the totals and the per-puzzle table, however many puzzles there are.

``OUT.resume/job.json`` holds the job's settings: the checkpoints and the dataset manifest with their
sha256, the evaluated rows, every option that changes a result. A job whose settings changed since
its units were written is refused, naming each changed setting (``--restart`` drops the old units).
The number of ranks and of threads is not a setting: a job may continue on another number of them.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hrm.distributed import Dist, all_gather_object, barrier
from pipelines.io import StageError, log

JOB_FILE = "job.json"
UNIT_SUFFIX = ".npz"
RESUME_SUFFIX = ".resume"


def job_folder(output: Path) -> Path:
    """Where the units of the job writing ``output`` live: ``OUT.resume`` beside it."""
    return output.with_name(output.name + RESUME_SUFFIX)


@dataclass(frozen=True)
class Unit:
    """Puzzles ``lo:hi`` of set ``set_index`` (0 = the test split, then the tiers)."""

    set_index: int
    chunk: int
    lo: int
    hi: int

    @property
    def name(self) -> str:
        return f"set{self.set_index:02d}-chunk{self.chunk:06d}"

    @property
    def puzzles(self) -> int:
        return self.hi - self.lo


def chunk_rows(chunk_size: int, batch_size: int) -> int:
    """Puzzles per chunk: ``chunk_size`` rounded up to a whole number of batches."""
    return max(1, -(-chunk_size // batch_size)) * batch_size


def plan_units(sets: int, n: int, chunk: int) -> list[Unit]:
    """Every unit of ``sets`` sets of ``n`` puzzles in chunks of ``chunk``, set by set, in order."""
    return [Unit(s, c, lo, min(lo + chunk, n)) for s in range(sets) for c, lo in enumerate(range(0, n, chunk))]


def check_ranks_agree(settings: dict[str, Any], d: Dist) -> None:
    """Every rank must evaluate the same files with the same options: stop all of them, before any
    work, naming the first setting a rank sees differently from rank 0."""
    every = all_gather_object(settings, d)
    for rank, other in enumerate(every[1:], start=1):
        differ = changed_settings(every[0], other)
        if differ:
            raise StageError(f"rank {rank} and rank 0 disagree on {differ[0]}: every rank must read the same "
                             f"checkpoints and dataset with the same options")


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One entry per setting that differs: ``key (OLD vs NEW)``, the values as JSON."""
    keys = list(dict.fromkeys([*old, *new]))
    return [f"{k} ({json.dumps(old.get(k))} vs {json.dumps(new.get(k))})" for k in keys if old.get(k) != new.get(k)]


class EvalJob:
    """The job folder of one evaluation (see the module docstring)."""

    def __init__(self, folder: Path, settings: dict[str, Any], d: Dist) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.d = d

    # -- the folder

    def open(self, restart: bool) -> bool:
        """Create the folder, or take up the job in it; True when earlier units may be there.
        Rank 0 decides; every rank learns the outcome (a refusal stops them all)."""
        outcome: dict[str, Any] = {}
        if self.d.rank == 0:
            try:
                outcome["resumed"] = self._open_on_rank0(restart)
            except StageError as e:
                outcome["error"] = str(e)
        outcome = all_gather_object(outcome, self.d)[0]
        if "error" in outcome:
            raise StageError(outcome["error"])
        return outcome["resumed"]

    def _open_on_rank0(self, restart: bool) -> bool:
        job = self.folder / JOB_FILE
        started = self.folder / f".{JOB_FILE}.tmp"
        if self.folder.is_dir() and not job.is_file() and all(p == started for p in self.folder.iterdir()):
            started.unlink(missing_ok=True)  # a run killed before it wrote its settings: nothing to keep
            self.folder.rmdir()
        if self.folder.exists():
            if not job.is_file() or not self._holds_only_units():
                raise StageError(f"{self.folder}: exists and is not an `hrm evaluate` job folder (no {JOB_FILE}, or "
                                 f"files it does not write); move it away or choose another --output")
            if restart:
                self.remove()
            else:
                try:
                    old = json.loads(job.read_text())
                except (OSError, ValueError) as e:
                    raise StageError(f"{job}: cannot read the job's settings ({e}); rerun with --restart to drop "
                                     f"its units") from None
                differ = changed_settings(old, self.settings)
                if differ:
                    raise StageError(f"{self.folder}: the stopped job there was run with other settings: "
                                     f"{'; '.join(differ)}. Rerun it with the same ones to continue it, or with "
                                     f"--restart to drop its units and start over (under `dvc repro`: delete "
                                     f"{self.folder})")
                return True
        self.folder.mkdir(parents=True)
        started.write_text(json.dumps(self.settings, indent=2, sort_keys=True) + "\n")
        started.replace(job)
        return False

    def _holds_only_units(self) -> bool:
        from hrm.model.checkpoint import HASH_SUFFIX

        def ours(p: Path) -> bool:
            name = p.name.split(".tmp-")[0]  # a write a kill interrupted
            return p.is_file() and (name in (JOB_FILE, f".{JOB_FILE}.tmp") or name.endswith(UNIT_SUFFIX)
                                    or name.endswith(UNIT_SUFFIX + HASH_SUFFIX))

        return all(ours(p) for p in self.folder.iterdir())

    def remove(self) -> None:
        """Delete the folder: only ever the job's own files (checked first)."""
        if self.folder.exists():
            if not self._holds_only_units():
                raise StageError(f"{self.folder}: holds files `hrm evaluate` does not write; not removing it")
            shutil.rmtree(self.folder)

    # -- units

    def path(self, unit: Unit) -> Path:
        return self.folder / f"{unit.name}{UNIT_SUFFIX}"

    def mine(self, units: Sequence[Unit]) -> list[Unit]:
        return [u for i, u in enumerate(units) if i % self.d.world_size == self.d.rank]

    def done(self, unit: Unit) -> bool:
        """The unit's file is there with a matching sha256 (a damaged one is removed and run again)."""
        return self.load(unit) is not None

    def save(self, unit: Unit, arrays: dict[str, np.ndarray]) -> None:
        from hrm.model.checkpoint import write_verified

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        write_verified(self.path(unit), write)

    def load(self, unit: Unit) -> dict[str, np.ndarray] | None:
        """The unit's arrays, read from bytes checked against their sha256; None when it is not done."""
        from hrm.model import CheckpointError
        from hrm.model.checkpoint import hash_file, read_verified

        path = self.path(unit)
        if not path.is_file():
            return None
        try:
            data, verified = read_verified(path)
        except CheckpointError as e:
            log("evaluate", f"{e}; running {unit.name} again")
            verified = False
        if not verified:  # no sidecar: the write was cut short
            path.unlink(missing_ok=True)
            hash_file(path).unlink(missing_ok=True)
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def wait_for_all(self) -> None:
        barrier(self.d)
