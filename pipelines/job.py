"""The work of a long stage as a job of units: resumable, and shared by torchrun's ranks.

``hrm evaluate`` and ``hrm analyze`` both run as a job. A unit is one piece of the work whose result
is written, once finished, to the job folder beside the output (``OUT.resume/``), atomically with its
sha256 (hrm.integrity.write_verified); a kill loses at most the units in flight. The same command
continues a stopped job: units already there (and verified) are not run again. Rank 0 joins the
units in order, writes the outputs and removes the job folder, so the outputs equal an
uninterrupted one-process run's.

- ``hrm evaluate``: the evaluated puzzles of each set (the test split, then each easy tier) are cut
  into consecutive chunks of ``chunk_size`` puzzles, a multiple of the batch size, so a chunk runs
  exactly the batches one uninterrupted run would run (:class:`Unit`, :func:`plan_units`); unit
  ``i`` (numbered over all sets) belongs to rank ``i % world_size``. A unit holds what the outputs
  need of its puzzles: the totals (hrm.evaluate.EvalTotals, of a size set by K, P and S alone) and,
  for the test split, the per-puzzle table.
- ``hrm analyze``: a unit is one item of hrm.distributed.shared_map (a traced batch, a batch of the
  easy probe, a multistability chunk, a landscape), the job being the store it reads and writes.

A unit's file is an ``.npz`` of plain arrays (no pickle: :func:`pack`) holding any nesting of dicts,
lists, tuples, numbers, strings, numpy arrays, Arrow tables and the library's dataclasses.

``OUT.resume/job.json`` holds the job's settings: the inputs with their sha256 and every option that
changes a result. A job whose settings changed since its units were written is refused, naming each
changed setting (``--restart`` drops the old units). The number of ranks and of threads is not a
setting: a job may continue on another number of them. Each unit carries its job's identity, the
digest of those settings (:func:`settings_digest`, inside the hashed bytes): a unit of another job
(copied from another job folder, its own hash intact) is named and run again, never merged.

One process writes a job at a time: rank 0 holds ``.OUT.lock`` beside the output
(:func:`job_lock`, pipelines.output_lock.output_lock) from before the job folder is opened until the outputs
are in place; a second ``hrm evaluate`` / ``hrm analyze`` on the same output is refused naming the
folder and the holder's pid, and touches nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hrm.distributed import Dist, all_gather_object, barrier
from pipelines.io import StageError, log
from pipelines.output_lock import output_lock

JOB_FILE = "job.json"
UNIT_SUFFIX = ".npz"
RESUME_SUFFIX = ".resume"


def job_folder(output: Path) -> Path:
    """Where the units of the job writing ``output`` live: ``OUT.resume`` beside it."""
    return output.with_name(output.name + RESUME_SUFFIX)


def lock_file(output: Path) -> Path:
    """The lock of the job writing ``output``: ``.OUT.lock`` beside it (removed when released)."""
    output = Path(os.path.abspath(output))  # "." or "a/..": the folder's own name
    return output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def job_lock(output: Path, d: Dist, stage: str) -> Iterator[None]:
    """Rank 0 holds the lock of the job writing ``output`` (:func:`lock_file`) while inside; a second
    process on the same output is refused, and every rank learns it (they all stop, before any work)."""
    with contextlib.ExitStack() as held:
        outcome: dict[str, Any] = {}
        if d.rank == 0:
            try:
                held.enter_context(output_lock(lock_file(output), output, stage, "this output", remove=True))
            except StageError as e:
                outcome["error"] = str(e)
        outcome = all_gather_object(outcome, d)[0]
        if "error" in outcome:
            raise StageError(outcome["error"])
        yield


def settings_digest(settings: dict[str, Any]) -> str:
    """The identity of a job: sha256 of its settings as canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    """Every rank must work on the same files with the same options: stop all of them, before any
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


class Job:
    """The job folder of one run of ``stage`` (see the module docstring). As a store of
    hrm.distributed.shared_map: ``load(name)`` / ``save(name, value)``."""

    def __init__(self, folder: Path, settings: dict[str, Any], d: Dist, stage: str) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.digest = settings_digest(settings)
        self.d = d
        self.stage = stage

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
                raise StageError(f"{self.folder}: exists and is not an `hrm {self.stage}` job folder (no {JOB_FILE}, "
                                 f"or files it does not write); move it away or choose another --output")
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
        from hrm.integrity import HASH_SUFFIX

        def ours(p: Path) -> bool:
            name = p.name.split(".tmp-")[0]  # a write a kill interrupted
            return p.is_file() and (name in (JOB_FILE, f".{JOB_FILE}.tmp") or name.endswith(UNIT_SUFFIX)
                                    or name.endswith(UNIT_SUFFIX + HASH_SUFFIX))

        return all(ours(p) for p in self.folder.iterdir())

    def remove(self) -> None:
        """Delete the folder: only ever the job's own files (checked first)."""
        if self.folder.exists():
            if not self._holds_only_units():
                raise StageError(f"{self.folder}: holds files `hrm {self.stage}` does not write; not removing it")
            shutil.rmtree(self.folder)

    # -- units

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{UNIT_SUFFIX}"

    def mine(self, units: Sequence[Unit]) -> list[Unit]:
        return [u for i, u in enumerate(units) if i % self.d.world_size == self.d.rank]

    def done(self, name: str) -> bool:
        """The unit's file is there with a matching sha256 (a damaged one is removed and run again)."""
        return self.load(name) is not None

    def save(self, name: str, value: Any) -> None:
        from hrm.integrity import write_verified

        data = pack({JOB_KEY: self.digest, "unit": value})
        write_verified(self.path(name), lambda tmp: tmp.write_bytes(data))

    def load(self, name: str) -> Any | None:
        """The unit's value, read from bytes checked against their sha256 and written by this job (its
        settings digest); None when it is not done (a damaged unit, or another job's, is run again)."""
        from hrm.integrity import IntegrityError, hash_file, read_verified

        path = self.path(name)
        if not path.is_file():
            return None
        try:
            data, verified = read_verified(path)
            value = self._own_unit(path, unpack(data)) if verified else None
        except (IntegrityError, UnitFormatError) as e:
            log(self.stage, f"{e}; running {name} again")
            value = None
        if value is None:  # no sidecar (the write was cut short), or damaged
            path.unlink(missing_ok=True)
            hash_file(path).unlink(missing_ok=True)
        return value

    def _own_unit(self, path: Path, stored: Any) -> Any:
        """The value of a unit this job wrote; UnitFormatError naming the unit for another job's."""
        theirs = stored.get(JOB_KEY) if isinstance(stored, dict) else None
        if theirs != self.digest:
            raise UnitFormatError(f"{path}: a unit of another job (settings digest {str(theirs)[:16]}, this job's "
                                  f"{self.digest[:16]}), not merged")
        return stored["unit"]

    def wait_for_all(self) -> None:
        barrier(self.d)


# ----------------------------------------------------------------------------- a unit's bytes

STRUCTURE_KEY = "__structure__"
JOB_KEY = "job"  # a unit's bytes: {"job": its job's settings digest, "unit": the value}


class UnitFormatError(ValueError):
    """Bytes that are not a unit :func:`pack` wrote."""


def pack(value: Any) -> bytes:
    """``value`` as the bytes of an ``.npz``: its arrays as members ``a0, a1, ...`` and its nesting as
    JSON (member ``__structure__``). Dicts, lists, tuples, None, bools, ints, floats, strings, numpy
    arrays and scalars (dtype kept), pyarrow Tables (Arrow IPC bytes) and dataclasses of ``hrm``
    modules, torch tensors (read back on the CPU); anything else (an object array, say) is refused with TypeError."""
    arrays: dict[str, np.ndarray] = {}

    def array(a: np.ndarray) -> str:
        if a.dtype.hasobject:
            raise TypeError("object arrays cannot be stored without pickle")
        key = f"a{len(arrays)}"
        arrays[key] = a
        return key

    def enc(o: Any) -> Any:
        import dataclasses

        import pyarrow as pa
        import torch

        if o is None or isinstance(o, (bool, int, float, str)) and not isinstance(o, np.generic):
            return {"v": o}
        if isinstance(o, np.ndarray):
            return {"a": array(o)}
        if isinstance(o, np.generic):
            return {"s": array(np.asarray(o))}
        if isinstance(o, torch.Tensor):  # on the CPU; bfloat16 (no numpy dtype) as its int16 bits
            t = o.detach().cpu()
            bits = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
            return {"torch": array(bits.numpy().copy()), "dtype": str(t.dtype).removeprefix("torch.")}
        if isinstance(o, pa.Table):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, o.schema) as w:
                w.write_table(o)
            return {"arrow": array(np.frombuffer(sink.getvalue(), np.uint8))}
        if isinstance(o, dict):
            return {"dict": [[enc(k), enc(v)] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return {"list" if isinstance(o, list) else "tuple": [enc(x) for x in o]}
        if dataclasses.is_dataclass(o) and not isinstance(o, type) and type(o).__module__.startswith("hrm."):
            return {"dataclass": f"{type(o).__module__}:{type(o).__qualname__}",
                    "fields": {f.name: enc(getattr(o, f.name)) for f in dataclasses.fields(o)}}
        raise TypeError(f"cannot store a {type(o).__name__} in a unit")

    structure = json.dumps(enc(value)).encode()
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{STRUCTURE_KEY: np.frombuffer(structure, np.uint8)})
    return buf.getvalue()


def unpack(data: bytes) -> Any:
    """The value :func:`pack` wrote (raises UnitFormatError for other bytes)."""
    import dataclasses
    import importlib

    import pyarrow as pa
    import torch

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        structure = json.loads(arrays.pop(STRUCTURE_KEY).tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise UnitFormatError(f"not a unit ({e})") from None

    def dec(o: dict) -> Any:
        (kind, body), *rest = o.items()
        if kind == "v":
            return body
        if kind == "a":
            return arrays[body]
        if kind == "s":
            return arrays[body][()]
        if kind == "torch":
            t = torch.from_numpy(arrays[body])
            return t.view(torch.bfloat16) if rest and rest[0][1] == "bfloat16" else t
        if kind == "arrow":
            return pa.ipc.open_stream(pa.py_buffer(arrays[body].tobytes())).read_all()
        if kind == "dict":
            return {dec(k): dec(v) for k, v in body}
        if kind in ("list", "tuple"):
            items = [dec(x) for x in body]
            return items if kind == "list" else tuple(items)
        if kind == "dataclass":
            module, _, name = body.partition(":")
            cls = getattr(importlib.import_module(module), name, None) if module.startswith("hrm.") else None
            if cls is None or not dataclasses.is_dataclass(cls):
                raise UnitFormatError(f"not a dataclass of hrm: {body}")
            fields = rest[0][1] if rest else {}
            return cls(**{k: dec(v) for k, v in fields.items()})
        raise UnitFormatError(f"unknown entry {kind!r}")

    try:
        return dec(structure)
    except (KeyError, TypeError, ValueError, AttributeError, ImportError) as e:
        raise UnitFormatError(f"not a unit ({e})") from None
