"""``hrm checkpoint``: published weights in, with where they came from (docs/weights.md).

- ``hrm checkpoint fetch OWNER/REPO [--revision REV] [--file NAME ...] --output DIR``: files of a Hugging Face
  model repo (by default its ``checkpoint``, as sapientinc/HRM-checkpoint-sudoku-extreme, -maze-30x30-hard and
  -ARC-2 hold it, and always ``all_config.yaml``) at a revision, resolved to its commit; each file's bytes are
  checked against what the Hub records for it (its LFS sha256, or git blob id: pipelines/hub.py).
- ``hrm checkpoint import FOLDER --output DIR``: a folder in the official layout, ``step_N`` files (or the Hub's
  ``checkpoint``) and ``all_config.yaml``, e.g. the fork's ``checkpoint_example/`` after ``git lfs pull``. In a
  git clone each file is checked against the commit (its Git LFS pointer's sha256, or its blob id).

Both write the layout of ``hrm train``'s model folder: ``DIR/checkpoints/{step_N, all_config.yaml}``, each
with its ``NAME.sha256`` (so ``hrm evaluate`` / ``hrm analyze`` load them verified), and
``DIR/checkpoints/provenance.json`` (with its sidecar): the origin (repo, asked revision, resolved commit,
licence; or the folder, its git remote and commit), each file's name there and sha256 and what it was checked
against, the dataset identity the weights need (task, seq_len, vocab_size, num_puzzle_identifiers, from the
config and the tensor shapes: hrm.model.checkpoint) and the architecture. Every step_N is loaded once before
the output is put in place. The output is atomic and replaces only a folder the same command wrote; on any
failure nothing is written. No token is read or written by this module (huggingface_hub finds the user's).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import click
import yaml

from pipelines.atomic_replace import atomic_output
from pipelines.hub import HubUse, download_hub_file, verify_hub_file
from pipelines.io import Count, StageError, log
from pipelines.lfs import is_pointer, pointer_oid
from pipelines.output_records import check_apart, claim_output

CHECKPOINTS = "checkpoints"  # DIR/checkpoints/, as hrm train writes it (pipelines/train_run.py)
CONFIG_NAME = "all_config.yaml"  # hrm.model.checkpoint.CONFIG_NAME (not imported here: torch)
HUB_WEIGHTS = "checkpoint"  # the weights file of the official Hub repos
PROVENANCE_FORMAT = 1
OFFLINE = ("download the files by hand (the repo's page on huggingface.co, or a git clone with Git LFS) and "
           "bring them in with `hrm checkpoint import FOLDER --output DIR`")
HUB_USE = HubUse(stage="checkpoint", repo_type="model", needs="hrm checkpoint fetch", repo_option="OWNER/REPO",
                 revision_option="--revision", offline=OFFLINE, not_found_hint=f"; or, offline, {OFFLINE}")
_STEP = re.compile(r"step_(\d+)")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Incoming:
    """One file to bring in: where its bytes are here, its name at the origin and in DIR/checkpoints, and the
    check of its copy against the origin's record (returns what it was checked against; refuses a mismatch)."""

    source: Path
    name: str
    target: str
    check: Callable[[Path], str]


# --------------------------------------------------------------------------- the model folder


def weight_targets(names: list[str], as_step: int) -> list[str]:
    """The step_N name of each weights file: a step_N keeps its name; one file without a step number (the Hub's
    ``checkpoint``) becomes ``step_{as_step}``."""
    plain = [n for n in names if not _STEP.fullmatch(n)]
    if len(plain) > 1:
        raise StageError(f"weights files without a step number: {', '.join(plain)}; only one can be named "
                         f"step_{as_step} (--as-step): bring in the others one command each")
    targets = [n if _STEP.fullmatch(n) else f"step_{as_step}" for n in names]
    if len(set(targets)) < len(targets):
        raise StageError(f"two files would both be {f'step_{as_step}'}: choose another --as-step")
    return targets


def _dataset_of(config: Any) -> dict[str, Any]:
    """The dataset identity a model needs: its task(s) (hrm.tasks, by vocabulary and length) and sizes."""
    from hrm.tasks import TASKS

    tasks = [t.name for t in TASKS.values() if t.vocab_size == config.vocab_size and t.seq_len == config.seq_len]
    return {"tasks": tasks, "seq_len": int(config.seq_len), "vocab_size": int(config.vocab_size),
            "num_puzzle_identifiers": int(config.num_puzzle_identifiers)}


def check_loads(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Load every step_N of ``folder`` as evaluate does (verified: a note would mean a missing sidecar; the
    keys, shapes and finite weights checked); returns the dataset identity they need and the architecture."""
    from hrm.model.checkpoint import CheckpointError, load_checkpoint, step_files
    from hrm.model.registry import architecture_record

    found: dict[str, Any] = {}
    arch: dict[str, str] = {}
    for _, file in step_files(folder):
        notes: list[str] = []
        try:
            model = load_checkpoint(file, device="cpu", note=notes.append)
        except CheckpointError as e:
            raise StageError(str(e)) from None
        if notes:  # pragma: no cover - every file here was written with its sidecar
            raise StageError(f"{file}: {notes[0]}")
        dataset, arch = _dataset_of(model.config), architecture_record([model])
        if found and dataset != found:
            raise StageError(f"{file}: needs {dataset}, the other step_N {found}: files of different runs; "
                             "bring them in one folder each")
        found = dataset
        del model
    return found, arch


def write_model(tmp: Path, files: list[Incoming], origin: dict[str, Any]) -> dict[str, Any]:
    """Copy ``files`` into ``tmp``/checkpoints, each with its sidecar and checked against the origin's record,
    load them, and write provenance.json; returns the record."""
    from hrm.integrity import recorded_sha256, write_verified
    from hrm.model.checkpoint import PROVENANCE_NAME

    folder = tmp / CHECKPOINTS
    folder.mkdir(parents=True)
    entries: dict[str, dict[str, Any]] = {}
    for f in files:
        dest = folder / f.target
        write_verified(dest, lambda t, src=f.source: shutil.copyfile(src, t))
        checked = f.check(dest)  # the copy's bytes, the ones every later load reads
        entries[f.target] = {"from": f.name, "bytes": dest.stat().st_size, "sha256": recorded_sha256(dest),
                             "checked_against": checked}
    dataset, arch = check_loads(folder)
    record = {"format": PROVENANCE_FORMAT, "origin": origin, "files": entries, "dataset": dataset, "arch": arch}
    write_verified(folder / PROVENANCE_NAME, lambda t: t.write_text(json.dumps(record, indent=2) + "\n"))
    return record


def _report(output: Path, record: dict[str, Any], stage: str) -> None:
    steps = [n for n in record["files"] if _STEP.fullmatch(n)]
    d = record["dataset"]
    log(stage, f"wrote {output / CHECKPOINTS}: {', '.join(steps)} and {CONFIG_NAME} (each with its sha256), "
               f"provenance.json; {record['arch']['label']} for {' or '.join(d['tasks']) or 'no known task'} "
               f"(seq_len {d['seq_len']}, vocab_size {d['vocab_size']}, {d['num_puzzle_identifiers']} puzzle "
               f"identifier(s)); evaluate it with `hrm evaluate --checkpoint {output} ...`")


# --------------------------------------------------------------------------- the Hub


def _hub_check(repo: str, commit: str, name: str, local: Path) -> Callable[[Path], str]:
    def check(copy: Path) -> str:
        verify_hub_file(repo, commit, name, local, HUB_USE, copy=copy)
        return "hub"  # what the Hub records (its API; offline, the etag the cache recorded at download)

    return check


def _front_matter_licence(text: str) -> str | None:
    """The ``license`` of a model card's YAML front matter."""
    parts = text.split("---", 2)
    if not text.startswith("---") or len(parts) < 3:
        return None
    try:
        meta = yaml.safe_load(parts[1])
    except yaml.YAMLError:
        return None
    licence = meta.get("license") if isinstance(meta, dict) else None
    return str(licence) if licence is not None else None


def hub_licence(repo: str, commit: str) -> str | None:
    """The licence the repo's model card (README.md at ``commit``, checked as the weights are) declares; None
    with a note when there is no card, it cannot be had, or it declares none."""
    try:
        local, _ = download_hub_file(repo, commit, "README.md", HUB_USE)
        verify_hub_file(repo, commit, "README.md", local, HUB_USE)
        licence = _front_matter_licence(local.read_text(errors="replace"))
    except StageError as e:
        log("checkpoint", f"note: the licence is not recorded: the model card could not be read ({e.message})")
        return None
    if licence is None:
        log("checkpoint", f"note: the model card of {repo} declares no licence")
    return licence


def _resolved_commit(repo: str, revision: str, shas: set[str | None]) -> str:
    if len(shas) != 1 or None in shas:
        raise StageError(f"{repo} at revision {revision}: the files did not resolve to one commit ({shas}); "
                         f"pass the commit itself: --revision SHA")
    return next(iter(shas))


# --------------------------------------------------------------------------- a folder


def _git(folder: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def public_url(url: str) -> str:
    """A git remote without the user name and password (a token) that an https URL may carry."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def git_origin(folder: Path) -> dict[str, Any] | None:
    """The clone ``folder`` is in: its remote (no credentials), HEAD commit and the folder's path in it."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "HEAD")
    if not top or not commit:
        return None
    remote = _git(folder, "remote", "get-url", "origin")
    return {"remote": public_url(remote) if remote else None, "commit": commit,
            "path": folder.resolve().relative_to(Path(top).resolve()).as_posix() or "."}


def _git_check(folder: Path, git: dict[str, Any] | None, name: str) -> Callable[[Path], str]:
    """The check of a copy of ``folder/name`` against the clone's HEAD: its Git LFS pointer's sha256, or its
    blob id; "none" outside a clone or for a file the commit does not hold."""
    from hrm.integrity import file_sha256
    from pipelines.hub import git_blob_sha1

    def check(copy: Path) -> str:
        if git is None:
            return "none"
        spec = f"HEAD:./{name}"
        blob = _git(folder, "rev-parse", spec)
        if blob is None:
            return "none"
        size = _git(folder, "cat-file", "-s", spec)
        oid = pointer_oid(_git(folder, "cat-file", "blob", spec) or "") if size and int(size) < 1024 else None
        want, got, kind = (oid, file_sha256(copy), "git-lfs") if oid else (blob, git_blob_sha1(copy), "git-blob")
        if want != got:
            raise StageError(f"{folder / name}: content does not match commit {git['commit'][:12]} of its clone "
                             f"(modified, or a corrupt download): the commit's {'Git LFS pointer' if oid else 'blob'} "
                             f"records {want}, the file has {got}; `git lfs pull` (or `git checkout -- {name}`) "
                             "gets the committed bytes back")
        return kind

    return check


def folder_files(folder: Path, steps: tuple[int, ...], as_step: int) -> tuple[list[Path], list[str]]:
    """The weights files of ``folder`` to import (its step_N, those of ``steps`` if given; else the Hub's
    ``checkpoint``) and their names in the output; an LFS pointer where weights should be is refused."""
    from hrm.model.checkpoint import step_files

    found = step_files(folder)
    if steps:
        missing = sorted(set(steps) - {n for n, _ in found})
        if missing:
            raise StageError(f"{folder}: no step_{missing[0]} (it holds {', '.join(p.name for _, p in found) or 'none'})")
        found = [(n, p) for n, p in found if n in steps]
    files = [p for _, p in found] or ([folder / HUB_WEIGHTS] if (folder / HUB_WEIGHTS).is_file() else [])
    if not files:
        raise StageError(f"{folder}: no step_N files and no `{HUB_WEIGHTS}` file: not a checkpoint folder in the "
                         "official layout")
    for f in [*files, folder / CONFIG_NAME]:
        if not f.is_file():
            raise StageError(f"{f}: not found (the official layout has {CONFIG_NAME} beside the weights)")
        if is_pointer(f):
            raise StageError(f"{f}: a Git LFS pointer, not the file itself: run `git lfs pull` in the clone first")
    return files, weight_targets([f.name for f in files], as_step)


# --------------------------------------------------------------------------- commands


@click.group("checkpoint")
def checkpoint() -> None:
    """Published weights in, verified, with their provenance (docs/weights.md)."""


@checkpoint.command("fetch")
@click.argument("repo")
@click.option("--revision", default="main", help="Branch, tag or commit; the commit it resolves to is recorded.")
@click.option("--file", "files", multiple=True, default=(HUB_WEIGHTS,),
              help=f"A weights file of the repo (repeat for several); {CONFIG_NAME} is always fetched.")
@click.option("--as-step", type=Count(0), default=0,
              help="The step_N name of a weights file without a step number (the Hub's `checkpoint`).")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="The model folder to write.")
def fetch(repo: str, revision: str, files: tuple[str, ...], as_step: int, output: Path) -> None:
    """Download a model repo's checkpoint from the Hugging Face Hub into a verified model folder."""
    stage = "checkpoint fetch"
    if not _REPO.match(repo):
        raise StageError(f"{repo!r}: expected a model repo as OWNER/REPO (e.g. sapientinc/HRM-checkpoint-sudoku-extreme)")
    if CONFIG_NAME in files:
        raise StageError(f"--file {CONFIG_NAME}: it is always fetched; name the weights files only")
    targets = weight_targets(list(files), as_step)
    claim_output(output, stage)  # before any download
    got = [(name, *download_hub_file(repo, revision, name, HUB_USE)) for name in (*files, CONFIG_NAME)]
    commit = _resolved_commit(repo, revision, {sha for _, _, sha in got})
    origin = {"kind": "hub", "repo_id": repo, "repo_type": "model", "revision": revision, "commit": commit,
              "url": f"https://huggingface.co/{repo}/tree/{commit}", "licence": hub_licence(repo, commit)}
    incoming = [Incoming(local, name, target, _hub_check(repo, commit, name, local))
                for (name, local, _), target in zip(got, [*targets, CONFIG_NAME])]
    with atomic_output(output, stage=stage) as tmp:
        record = write_model(tmp, incoming, origin)
    _report(output, record, stage)
    if revision != commit:
        log(stage, f"{repo} revision {revision} is commit {commit}: pass --revision {commit} to fetch exactly these "
                   "files again")


@checkpoint.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--step", "steps", type=Count(0), multiple=True, help="Import this step_N only (repeat).")
@click.option("--as-step", type=Count(0), default=0,
              help="The step_N name of a weights file without a step number (the Hub's `checkpoint`).")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="The model folder to write.")
def import_(folder: Path, steps: tuple[int, ...], as_step: int, output: Path) -> None:
    """Bring a folder of checkpoints in the official layout into a verified model folder."""
    stage = "checkpoint import"
    check_apart(output, [folder])
    claim_output(output, stage)
    files, targets = folder_files(folder, steps, as_step)
    git = git_origin(folder)
    if git is None:
        log(stage, f"note: {folder} is not in a git clone: nothing records its files' bytes; provenance.json "
                   "records them as imported")
    origin = {"kind": "folder", "path": str(folder.resolve()), "git": git}
    incoming = [Incoming(src, src.name, target, _git_check(folder, git, src.name))
                for src, target in zip([*files, folder / CONFIG_NAME], [*targets, CONFIG_NAME])]
    with atomic_output(output, stage=stage) as tmp:
        record = write_model(tmp, incoming, origin)
    _report(output, record, stage)

