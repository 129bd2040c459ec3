"""What ``hrm compare`` reads of a revision: its committed results (git) and the summaries DVC cached for it.

A revision is what `dvc metrics diff` takes: a branch, tag or commit, else an experiment's name (its ref under
refs/exps; several of that name: the one whose baseline is HEAD, as DVC resolves them). Of its commit:
dvc.lock (the dataset each stage read, the params it ran with, the md5 of every output), evaluate's and the
analysis's metrics.json and the plot CSVs the comparison needs (git-tracked, ``cache: false``), and their
summary.json files, which DVC caches: read from the local DVC cache by the md5 that commit's dvc.lock records,
and checked against it. A missing file, a file its dvc.lock does not vouch for, or two runs that did not
evaluate the same puzzles are one message naming the revisions and the file; nothing is guessed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hrm.comparison import ANALYSIS_METRICS, ANALYSIS_SUMMARY, EVALUATE_METRICS, EVALUATE_SUMMARY, RunResults, dig
from pipelines.io import StageError

RUN = "data"  # the output folder of the pipeline's stages: hrm.comparison names the results inside it
LOCK = "dvc.lock"
DATASET = f"{RUN}/datasets"
# plot table (RunResults.tables key) -> its committed CSV
TABLES = {"rating": "evaluate/plots/rating.csv", "blanks": "evaluate/plots/blanks.csv",
          "segments": "evaluate/plots/segments.csv", "critical": "analysis/plots/critical.csv"}
# result file -> the dvc.lock stage that wrote it; git: committed (cache: false), else in DVC's cache
FILES = {EVALUATE_METRICS: ("evaluate", True), EVALUATE_SUMMARY: ("evaluate", False),
         ANALYSIS_METRICS: ("analyze", True), ANALYSIS_SUMMARY: ("analyze", False)}
# The params that choose WHICH puzzles a stage reads (the seeded samples, the split, the tiers): equal in
# every run compared, or the table would set accuracies on different puzzles side by side.
SAMPLE_PARAMS = {"evaluate": ("seed", "evaluate.variant", "evaluate.test_size", "evaluate.tiers"),
                 "analyze": ("seed", "analyze.variant", "analyze.sample", "analyze.fp_sample")}


@dataclass(frozen=True)
class Revision:
    label: str  # as the user named it
    commit: str

    def __str__(self) -> str:
        return f"{self.label} ({self.commit[:12]})" if self.label != self.commit else self.commit[:12]


@dataclass(frozen=True)
class LoadedRun:
    revision: Revision
    lock: dict[str, Any]
    results: RunResults


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def experiment_refs(root: Path, name: str) -> list[tuple[str, str]]:
    """(baseline commit, experiment commit) of every experiment called ``name`` (refs/exps/AB/CDEF.../NAME)."""
    listed = _git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.decode()
    found = []
    for line in listed.splitlines():
        ref, _, commit = line.partition(" ")
        parts = ref.split("/")
        if len(parts) == 5 and len(parts[2]) == 2 and len(parts[3]) == 38 and parts[4] == name:
            found.append((parts[2] + parts[3], commit))
    return found


def resolve(root: Path, name: str) -> Revision:
    """A branch, tag or commit, else an experiment's name (one of them, or the one whose baseline is HEAD)."""
    if _git(root, "rev-parse", "--git-dir").returncode != 0:
        raise StageError(f"{root}: not a git repository (hrm compare reads the revisions' committed results)")
    commit = _git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}").stdout.decode().strip()
    if commit:
        return Revision(name, commit)
    found = experiment_refs(root, name)
    if len(found) > 1:
        head = _git(root, "rev-parse", "HEAD").stdout.decode().strip()
        found = [f for f in found if f[0] == head] or found
    if len(found) == 1:
        return Revision(name, found[0][1])
    if found:
        raise StageError(f"{name}: {len(found)} experiments of this name, none on HEAD's baseline: name one by its "
                         "commit (dvc exp show --sha)")
    raise StageError(f"{name}: no such branch, tag, commit or experiment in {root} (dvc exp show lists the experiments)")


def committed(root: Path, rev: Revision, path: str) -> bytes:
    shown = _git(root, "show", f"{rev.commit}:{path}")
    if shown.returncode != 0:
        raise StageError(f"{rev}: {path} is not in the commit (was the pipeline run and its results committed "
                         "there? `dvc exp run` commits them)")
    return shown.stdout


def read_lock(root: Path, rev: Revision) -> dict[str, Any]:
    try:
        lock = yaml.safe_load(committed(root, rev, LOCK))
    except yaml.YAMLError:
        raise StageError(f"{rev}: {LOCK} is not valid YAML") from None
    for stage in ("train", "evaluate", "analyze"):
        if not isinstance(dig(lock, f"stages.{stage}"), dict):
            raise StageError(f"{rev}: {LOCK} has no stage {stage!r} (its evaluate and analysis never ran there)")
    return lock


def _entry(lock: dict[str, Any], stage: str, kind: str, path: str) -> dict[str, Any] | None:
    return next((e for e in lock["stages"][stage].get(kind) or [] if e.get("path") == path), None)


def locked_params(lock: dict[str, Any], stage: str) -> dict[str, Any]:
    return (lock["stages"][stage].get("params") or {}).get("params.yaml") or {}


def _cache_dir(root: Path) -> Path:
    """The repository's DVC cache (`dvc cache dir`: .dvc/cache unless configured elsewhere)."""
    shown = subprocess.run(["dvc", "cache", "dir"], cwd=root, capture_output=True, text=True, check=False)
    lines = shown.stdout.strip().splitlines()
    return Path(lines[-1]) if shown.returncode == 0 and lines else root / ".dvc" / "cache"


def result_file(root: Path, rev: Revision, lock: dict[str, Any], path: str, cache: Path | None) -> bytes:
    """``path``'s bytes in ``rev``: from the commit (metrics.json) or DVC's cache (summary.json), equal to the md5
    the commit's dvc.lock records for its stage's output (else the commit holds another run's file)."""
    stage, in_git = FILES[path.removeprefix(f"{RUN}/")]
    out = _entry(lock, stage, "outs", path)
    if out is None or not out.get("md5"):
        raise StageError(f"{rev}: {LOCK} records no output {path} of stage {stage}")
    if in_git:
        data = committed(root, rev, path)
    else:
        cached = (cache or root / ".dvc" / "cache") / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
        if not cached.is_file():
            raise StageError(f"{rev}: {path} (md5 {out['md5']}) is not in the DVC cache {cache}: fetch it "
                             f"(`dvc pull` / `dvc exp pull`), or run the experiment here")
        data = cached.read_bytes()
    if hashlib.md5(data).hexdigest() != out["md5"]:
        raise StageError(f"{rev}: {path} is not the file its {LOCK} records (md5 {out['md5']}): the commit holds "
                         "results of another run; commit the pipeline's results together with dvc.lock")
    return data


def _json(rev: Revision, path: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise StageError(f"{rev}: {path} is not a JSON object")
    return value


def _table(rev: Revision, path: str, data: bytes) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(data.decode())))
    except (UnicodeDecodeError, csv.Error):
        raise StageError(f"{rev}: {path} is not a CSV table") from None


def architecture_label(name: Any) -> str:
    """HRM, TRM (the registry's short name); a name the registry lacks: the class part of arch.name."""
    from hrm.model.registry import UnknownArchitecture, get_architecture

    try:
        return get_architecture(name).label
    except UnknownArchitecture:
        return str(name).rpartition("@")[2] or str(name)


def load_run(root: Path, rev: Revision, cache: Path | None = None) -> LoadedRun:
    """Every file the comparison reads of ``rev``, checked (see the module docstring)."""
    lock = read_lock(root, rev)
    files = {name: _json(rev, f"{RUN}/{name}", result_file(root, rev, lock, f"{RUN}/{name}", cache)) for name in FILES}
    tables = {name: _table(rev, f"{RUN}/{path}", committed(root, rev, f"{RUN}/{path}"))
              for name, path in TABLES.items()}
    arch = dig(locked_params(lock, "train"), "train.arch.name")
    return LoadedRun(rev, lock, RunResults(rev.label, rev.commit, architecture_label(arch), files, tables))


def load_runs(root: Path, names: list[str]) -> list[LoadedRun]:
    revisions = [resolve(root, name) for name in names]
    cache = _cache_dir(root)
    runs = [load_run(root, rev, cache) for rev in revisions]
    check_same_puzzles(runs)
    return runs


def dataset_md5(run: LoadedRun, stage: str) -> str:
    dep = _entry(run.lock, stage, "deps", DATASET)
    if dep is None or not dep.get("md5"):
        raise StageError(f"{run.revision}: {LOCK} records no dependency {DATASET} of stage {stage}")
    return dep["md5"]


def check_same_puzzles(runs: list[LoadedRun]) -> None:
    """Every run's evaluate and analyze read the same dataset build (the md5 of data/datasets in its dvc.lock)
    and the same samples of it (SAMPLE_PARAMS); else one message naming both revisions and what differs."""
    first = runs[0]
    for run in runs[1:]:
        for stage, keys in SAMPLE_PARAMS.items():
            a, b = dataset_md5(first, stage), dataset_md5(run, stage)
            if a != b:
                raise StageError(f"{first.revision} and {run.revision} did not evaluate the same dataset: {LOCK}'s "
                                 f"{stage} stage read {DATASET} md5 {a} in {first.revision.label} and {b} in "
                                 f"{run.revision.label}; compare runs of one dataset build")
            for key in keys:
                a, b = dig(locked_params(first.lock, stage), key), dig(locked_params(run.lock, stage), key)
                if a != b:
                    raise StageError(f"{first.revision} and {run.revision} did not evaluate the same puzzles: "
                                     f"{LOCK}'s {stage} stage ran with {key} = {a!r} in {first.revision.label} and "
                                     f"{b!r} in {run.revision.label}")


def notes(runs: list[LoadedRun]) -> list[str]:
    """What the runs share (dataset, samples) and how each evaluated (its ensemble), for comparison.md."""
    first = runs[0]
    params = locked_params(first.lock, "evaluate")
    lines = [f"Dataset: {DATASET} md5 {dataset_md5(first, 'evaluate')} in every run ({LOCK}); seed {params.get('seed')}, "
             f"evaluate.test_size {dig(params, 'evaluate.test_size')}, tiers {dig(params, 'evaluate.tiers')}, "
             f"analyze.sample {dig(locked_params(first.lock, 'analyze'), 'analyze.sample')}."]
    for run in runs:
        p = locked_params(run.lock, "evaluate")
        lines.append(f"- {run.results.title}: ensemble of {dig(p, 'evaluate.checkpoints')} checkpoints x "
                     f"{dig(p, 'evaluate.permutations')} passes ({dig(p, 'evaluate.perturbation')})")
    return lines
