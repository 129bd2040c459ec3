"""``hrm registry``: which exact data trained this model?

Artifacts are declared in ``dvc.yaml`` under ``artifacts:`` (``path``, ``type`` dataset or
model, ``desc``, ``labels``), as DVC and GTO expect. A version is a GTO tag: an annotated git
tag ``NAME@vMAJOR.MINOR.PATCH`` on the commit whose ``dvc.lock`` (or ``.dvc`` file) pins the
artifact's data, created with GTO's API (``gto show``, ``dvc artifacts get . NAME --rev vX.Y.Z``
read it as is). Its message ends with one line ``hrm-registry: {json}``, the record:

- ``content``: ``sha256:`` of the sorted lines ``path<TAB>bytes<TAB>sha256`` of every file of
  the artifact (for a dataset: its shards, ``manifest.json`` and ``README.md``; for a model: its
  ``step_N``, their ``step_N.sha256``, ``all_config.yaml`` and ``dvclive/metrics.json``, never the
  training state, ``run.json`` or ``wandb/``, which differ between identical runs), and ``files``,
  those sizes and hashes per file (so ``verify`` names the file that changed);
- dataset: name, kind, rows / groups / variants per split, params, raw source and revision,
  and the upstream hashes (the hints tables it was cut from, the raw files);
- model: the checkpoints, the training config, and the dataset it was trained on (the
  ``data_path`` of its ``all_config.yaml`` -> that dataset's manifest name, content hash and
  registered version), plus its metrics;
- ``dvc``: the DVC outputs holding the artifact and their hashes at that commit.

A version is immutable: registering it again with the same content does nothing, with other
content it is refused. A version is only created when the artifact's DVC stage is up to date
and committed, so the tagged commit pins exactly the data that was hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from pipelines.io import StageError, log
from hrm.manifest import CARD, DATASETS_INDEX, MANIFEST, ManifestError
from hrm.manifest import file_sha256  # never the stages' cached hash: verification must re-read
from hrm.manifest import read_manifest as read_manifest_file

RECORD_PREFIX = "hrm-registry: "
RECORD_SCHEMA = 1
TYPES = ("dataset", "model")
PROJECT_FILE = "dvc.yaml"
_SEMVER = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")
_STEP = re.compile(r"^step_(\d+)$")


# --------------------------------------------------------------------------- basics


@dataclass
class Artifact:
    name: str
    path: str
    type: str
    desc: str = ""
    labels: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass
class Version:
    name: str
    version: str  # "v1.2.3"
    tag: str
    commit: str
    date: str = ""
    record: dict | None = None
    deregistered: bool = False


def find_root(start: str | os.PathLike = ".") -> Path:
    """The DVC project holding ``start``: the nearest folder with ``.dvc/`` (and ``dvc.yaml``)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise StageError(f"{here}: not inside a DVC project (no .dvc/ folder here or above)")


def git(root: Path, *args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise StageError("git is not installed; the registry keeps its versions as git tags") from None
    if check and proc.returncode != 0:
        raise StageError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def parse_version(text: str) -> str:
    """``1.2.3`` or ``v1.2.3`` (semantic version, optional -prerelease) -> ``v1.2.3``."""
    if not _SEMVER.match(text):
        raise StageError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0 or v1.0.0)")
    return text if text.startswith("v") else f"v{text}"


def version_key(version: str) -> tuple:
    """Semantic-version order: numbers numerically, a pre-release before its release; build metadata
    (``+...``) is ignored, so ``1.0.0+build`` has the key of ``1.0.0``: the same version (SemVer 2.0.0 §10)."""
    m = _SEMVER.match(version)
    assert m, version
    pre = m.group(4)
    pre_key = (1,) if pre is None else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")])
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre_key)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION`` -> (name, ``vX.Y.Z`` or None)."""
    name, sep, version = spec.partition("@")
    if not name:
        raise StageError(f"{spec!r}: expected NAME or NAME@VERSION")
    return name, (parse_version(version) if sep else None)


def read_artifacts(root: Path) -> dict[str, Artifact]:
    """The ``artifacts:`` of ``dvc.yaml``, checked (path given, type dataset or model)."""
    path = root / PROJECT_FILE
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise StageError(f"{path}: not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise StageError(f"{path}: cannot read ({exc})") from None
    out = {}
    for name, spec in (data.get("artifacts") or {}).items():
        if not isinstance(spec, dict) or not spec.get("path"):
            raise StageError(f"{path}: artifact {name!r} needs a `path`")
        kind = spec.get("type")
        if kind not in TYPES:
            raise StageError(f"{path}: artifact {name!r} has type {kind!r}; expected one of {', '.join(TYPES)}")
        out[name] = Artifact(name=name, path=spec["path"], type=kind, desc=spec.get("desc") or "",
                             labels=list(spec.get("labels") or []), meta=dict(spec.get("meta") or {}))
    return out


def get_artifact(root: Path, name: str) -> Artifact:
    artifacts = read_artifacts(root)
    if name in artifacts:
        return artifacts[name]
    declared = ", ".join(sorted(artifacts)) or "none"
    message = f"{name!r} is not declared in {root / PROJECT_FILE} (declared: {declared})."
    built = root / "data" / "datasets" / name / MANIFEST
    if built.is_file():
        message += (f" It is a built dataset: declare it by adding to `artifacts:` in dvc.yaml\n"
                    f"  {name}:\n    path: data/datasets/{name}\n    type: dataset\n"
                    f"and commit dvc.yaml.")
    raise StageError(message)


def parse_record(message: str, tag: str = "") -> dict | None:
    """The record in a tag's message (its last ``hrm-registry:`` line), checked against its schema
    (schemas/registry.py); None for a tag without one (made outside hrm). A record of the wrong shape
    is a StageError naming the tag and the keys."""
    from schemas.registry import registry_record_problems

    for line in reversed(message.splitlines()):
        if line.startswith(RECORD_PREFIX):
            try:
                record = json.loads(line[len(RECORD_PREFIX):])
            except ValueError as exc:
                problems = [f"not JSON ({exc})"]
            else:
                problems = registry_record_problems(record)
            if problems:
                raise StageError(f"tag {tag}: its {RECORD_PREFIX.strip()} record is malformed: "
                                 + "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
                                 + f" (not a record `hrm registry register` writes; remove the tag: `git tag -d {tag}`)")
            return record
    return None


def read_versions(root: Path) -> dict[str, list[Version]]:
    """Every registered version, per artifact name, oldest version first (GTO's tag names)."""
    from gto.tag import parse_name

    fmt = "%(refname:short)%1f%(objectname)%1f%(*objectname)%1f%(creatordate:short)%1f%(contents)%1e"
    out = git(root, "for-each-ref", "refs/tags", f"--format={fmt}")
    versions: dict[str, dict[str, Version]] = {}
    cancelled: set[tuple[str, str]] = set()
    for entry in out.split("\x1e"):
        entry = entry.lstrip("\n")
        if not entry:
            continue
        tag, obj, target, date, message = (entry.split("\x1f") + [""] * 5)[:5]
        parsed = parse_name(tag, raise_on_fail=False)
        if not parsed or "version" not in parsed:
            continue
        name, version = parsed["name"], parsed["version"]
        if tag != f"{name}@{version}":  # GTO's deregistration: NAME@vX.Y.Z!#N
            cancelled.add((name, version))
            continue
        versions.setdefault(name, {})[version] = Version(
            name=name, version=version, tag=tag, commit=target or obj, date=date, record=parse_record(message, tag))
    result = {}
    for name, by_version in versions.items():
        for v in by_version.values():
            v.deregistered = (name, v.version) in cancelled
        result[name] = sorted(by_version.values(), key=lambda v: version_key(v.version))
    return result


def latest(versions: list[Version]) -> Version | None:
    active = [v for v in versions if not v.deregistered]
    return active[-1] if active else None


# --------------------------------------------------------------------------- content


def content_hash(files: dict[str, dict]) -> str:
    """One hash for a set of files: sha256 of the sorted ``path<TAB>bytes<TAB>sha256`` lines."""
    lines = "".join(f"{p}\t{files[p]['bytes']}\t{files[p]['sha256']}\n" for p in sorted(files))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def _walk(directory: Path) -> list[str]:
    """Relative POSIX paths of the files under ``directory`` (hidden temporaries skipped)."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def hash_files(directory: Path, names: list[str]) -> dict[str, dict]:
    return {n: {"bytes": (directory / n).stat().st_size, "sha256": file_sha256(directory / n)} for n in names}


def read_manifest(directory: Path) -> dict:
    """The dataset's manifest (hrm/manifest.py); a StageError when it cannot be used."""
    try:
        return read_manifest_file(directory)
    except ManifestError as exc:
        raise StageError(str(exc)) from None


def manifest_shards(manifest: dict) -> dict[str, dict]:
    return {r["file"]: {"bytes": r["bytes"], "sha256": r["sha256"]}
            for info in manifest["splits"].values() for r in info["shards"]}


def dataset_files(directory: Path, manifest: dict, deep: bool) -> dict[str, dict]:
    """Sizes and sha256 of a dataset's files. ``deep``: every file re-read and hashed; else the
    shards' hashes are taken from the manifest (``verify`` checks them)."""
    shards = manifest_shards(manifest)
    names = [n for n in (CARD, MANIFEST) if (directory / n).is_file()]
    files = hash_files(directory, names)
    if deep:
        files.update(hash_files(directory, [n for n in shards if (directory / n).is_file()]))
    else:
        files.update(shards)
    return files


def check_dataset(directory: Path) -> tuple[dict, dict[str, dict], list[str]]:
    """List *every* problem of a dataset folder: a file the manifest lists that is missing, a
    file it does not list (a stray), no card; and the shard check of ``hrm validate shards``
    (pipelines.validate.dataset_problems: sha256, size, schema, rows, shard schema). Returns
    (manifest, files, problems); ``files`` are the sizes and sha256 of every file there."""
    from pipelines.validate import dataset_problems

    manifest = read_manifest(directory)
    files = dataset_files(directory, manifest, deep=True)
    problems = [f"{directory / name}: missing (listed in the manifest)"
                for name in manifest_shards(manifest) if name not in files]
    for name in _walk(directory):
        if name not in files:
            problems.append(f"{directory / name}: not in the manifest (a stray file; `train/*.arrow` globs "
                            f"would read it)")
    if CARD not in files:
        problems.append(f"{directory / CARD}: missing (the dataset card)")
    # Missing and stray shards are listed above.
    problems += [p.message for p in dataset_problems(directory)[1] if p.kind not in ("missing", "stray")]
    return manifest, files, problems


def _compact_source(source: dict) -> dict:
    return {k: v for k, v in source.items() if k in ("source", "hf_repo", "revision", "resolved_sha", "seed")}


def dataset_summary(manifest: dict) -> dict:
    """What the registry shows of a dataset: counts, params, and what it was built from."""
    splits = manifest["splits"]
    lineage = manifest.get("lineage") or {}
    raw_inputs = ((lineage.get("subsample") or {}).get("inputs")) or {}
    return {
        "dataset": manifest.get("name"),
        "kind": manifest.get("kind"),
        "rows": {s: info["rows"] for s, info in splits.items()},
        "groups": {s: info["groups"] for s, info in splits.items()},
        "variants": {s: info.get("variants") for s, info in splits.items()},
        "params": manifest.get("params") or {},
        "source": _compact_source(manifest.get("source") or {}),
        "built_from": {
            "hints_tables": {f: r.get("sha256") for f, r in (manifest.get("inputs") or {}).items()},
            "raw_files": {f: r.get("sha256") for f, r in raw_inputs.items()},
        },
    }


def _find_config(directory: Path) -> Path | None:
    for candidate in (directory / "all_config.yaml", directory / "checkpoints" / "all_config.yaml"):
        if candidate.is_file():
            return candidate
    found = sorted(directory.rglob("all_config.yaml"))
    return found[0] if found else None


# Where the train stage's run summary lies in its output (pipelines/train_run.py, LIVE_DIR: dvclive's
# metrics.json), then where runs before dvclive kept it. Not imported from there: that module needs torch.
RUN_METRICS = ("dvclive/metrics.json", "metrics.json")


def run_metrics_file(directory: Path) -> Path | None:
    """The run summary of a train stage output, if it has one."""
    return next((directory / rel for rel in RUN_METRICS if (directory / rel).is_file()), None)


def model_files(directory: Path) -> list[str]:
    """The files that are the model (hashed into its content): its checkpoint folder's step_N and
    all_config.yaml with their NAME.sha256, and the run summary (dvclive/metrics.json). Not the training state,
    run.json, wandb/, the metric histories or previous-runs/: they are not deterministic, or not the model, and the train stage keeps
    them outside its DVC outputs, so a rebuilt model (`dvc repro -f train`) has the same content."""
    config = _find_config(directory)
    if config is None:
        return _walk(directory)
    folder = config.parent
    names = [n for n in _walk(folder) if _STEP.match(n.removesuffix(".sha256")) or n.removesuffix(".sha256") == config.name]
    names = [(folder / n).relative_to(directory).as_posix() for n in names]
    metrics = run_metrics_file(directory)
    if metrics is not None and metrics.relative_to(directory).as_posix() not in names:
        names.append(metrics.relative_to(directory).as_posix())
    return sorted(names)


def checkpoint_problems(directory: Path) -> list[str]:
    """Each step_N of the model, and its all_config.yaml, whose bytes differ from their NAME.sha256, or a
    config without one beside verified weights (hrm.model.load_checkpoint's rule)."""
    from hrm.integrity import IntegrityError, hash_file, mismatch, recorded_sha256

    config = _find_config(directory)
    if config is None:
        return []
    problems, verified = [], False
    files = [p for p in sorted(config.parent.iterdir()) if p.is_file() and _STEP.match(p.name)]
    for p in [*files, config]:
        try:
            want = recorded_sha256(p)
        except IntegrityError as exc:
            problems.append(str(exc))
            continue
        if want is None and p == config and verified:
            problems.append(f"{p}: no {hash_file(p).name} beside it, while the step_N beside it are verified: "
                            f"the config cannot be verified")
        verified = verified or want is not None
        if want is not None and (got := file_sha256(p)) != want:
            problems.append(str(mismatch(p, want, got)))
    return problems


def resolve_data_path(root: Path, data_path: str) -> Path | None:
    """The dataset folder a model's ``data_path`` names: as given (absolute, or relative to the
    project), else the dataset of that name under ``data/datasets`` (trained elsewhere)."""
    given = Path(data_path)
    for candidate in (given if given.is_absolute() else root / given, root / "data" / "datasets" / given.name):
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def dataset_identity(root: Path, directory: Path, versions: dict[str, list[Version]],
                     artifacts: dict[str, Artifact]) -> dict:
    """Name, content hash and registered version(s) of the dataset folder ``directory``."""
    manifest = read_manifest(directory)
    content = content_hash(dataset_files(directory, manifest, deep=False))
    ident: dict[str, Any] = {"name": manifest.get("name"), "content": content}
    for art in artifacts.values():
        if art.type == "dataset" and (root / art.path).resolve() == directory.resolve():
            ident["artifact"] = art.name
    matches = [f"{v.name}@{v.version}" for vs in versions.values() for v in vs
               if v.record and v.record.get("type") == "dataset" and v.record.get("content") == content]
    if matches:
        ident["versions"] = matches
    return ident


def model_summary(root: Path, directory: Path, versions: dict[str, list[Version]],
                  artifacts: dict[str, Artifact]) -> dict:
    """Checkpoints, config and the dataset a model (``hrm train`` output) was trained on."""
    config_path = _find_config(directory)
    if config_path is None:
        raise StageError(f"{directory}: no all_config.yaml (expected a checkpoint folder written by `hrm train`)")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StageError(f"{config_path}: cannot read ({exc})") from None
    steps = sorted((int(m.group(1)), p.name) for p in config_path.parent.iterdir() if (m := _STEP.match(p.name)))
    summary: dict[str, Any] = {
        "config": config_path.relative_to(directory).as_posix(),
        "checkpoints": [name for _, name in steps],
        "latest_step": steps[-1][0] if steps else None,
        "arch": {k: v for k, v in (config.get("arch") or {}).items() if not isinstance(v, (dict, list))},
        "train": {k: config.get(k) for k in ("epochs", "global_batch_size", "lr", "seed", "eval_interval")
                  if k in config},
    }
    data_path = config.get("data_path")
    if data_path:
        found = resolve_data_path(root, str(data_path))
        dataset: dict[str, Any] = {"data_path": str(data_path)}
        if found is not None:
            dataset.update(dataset_identity(root, found, versions, artifacts))
        else:
            dataset["name"] = Path(str(data_path)).name
            dataset["content"] = None
        summary["dataset"] = dataset
    for candidate in (run_metrics_file(directory), config_path.parent / "metrics.json"):
        if candidate is None:
            continue
        if candidate.is_file():
            try:
                summary["metrics"] = json.loads(candidate.read_text())
            except (OSError, ValueError):
                summary["metrics"] = None
            break
    return summary


def artifact_record(root: Path, art: Artifact, versions: dict[str, list[Version]],
                    artifacts: dict[str, Artifact], deep: bool) -> dict | None:
    """The record of the artifact as it is in the workspace (None when absent)."""
    directory = root / art.path
    if not directory.exists():
        return None
    record: dict[str, Any] = {"schema": RECORD_SCHEMA, "type": art.type, "artifact": art.name, "path": art.path}
    if art.type == "dataset":
        if deep:
            manifest, files, problems = check_dataset(directory)
            if problems:
                raise StageError(f"{art.name} ({directory}) fails verification:\n  - " + "\n  - ".join(problems))
        else:
            manifest = read_manifest(directory)
            files = dataset_files(directory, manifest, deep=False)
        record.update(dataset_summary(manifest))
    else:
        if directory.is_file():
            files = {directory.name: {"bytes": directory.stat().st_size, "sha256": file_sha256(directory)}}
        else:
            files = hash_files(directory, model_files(directory))
            record.update(model_summary(root, directory, versions, artifacts))
            if deep and (problems := checkpoint_problems(directory)):
                raise StageError(f"{art.name} ({directory}) fails verification:\n  - " + "\n  - ".join(problems))
    record["content"] = content_hash(files)
    record["bytes"] = sum(f["bytes"] for f in files.values())
    record["files"] = files
    return record


# --------------------------------------------------------------------------- DVC state


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def committed_state(root: Path, art: Artifact) -> dict:
    """Check that the artifact's data is exactly what the HEAD commit pins, and return the DVC
    outputs holding it with their hashes. Refuses (StageError) when a DVC stage or ``.dvc`` file
    behind it is out of date, or when its ``dvc.yaml``/``dvc.lock``/``.dvc`` file is not committed."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    path = Path(art.path).as_posix().strip("/")
    try:
        with Repo(str(root)) as repo:
            outs, stages = [], {}
            for stage in repo.index.stages:
                for out in stage.outs:
                    rel = Path(os.path.relpath(out.fs_path, root)).as_posix()
                    if _inside(path, rel) or _inside(rel, path):
                        dvcfile = Path(os.path.relpath(stage.path, root)).as_posix()
                        outs.append({"path": rel, "md5": out.hash_info.value if out.hash_info else None,
                                     "dvcfile": dvcfile})
                        stages[f"{dvcfile}:{stage.name}" if getattr(stage, "name", None) else dvcfile] = stage
            if not outs:
                raise StageError(f"{art.path}: not tracked by DVC (no stage output or .dvc file holds it); "
                                 f"add it to a stage's outs in dvc.yaml, or `dvc add {art.path}`")
            status = {}
            with repo.lock:
                for name, stage in sorted(stages.items()):
                    changes = stage.status()
                    if changes:
                        status[name] = next(iter(changes.values()))
    except DvcException as exc:
        raise StageError(f"DVC cannot read {root}: {exc}") from None
    if status:
        changed = "; ".join(f"{name}: {changes}" for name, changes in status.items())
        raise StageError(f"{art.name}: the workspace differs from what DVC recorded in dvc.lock / .dvc files "
                         f"({changed}). Run `dvc repro` (or `dvc commit` / `dvc add`), commit, then register.")
    files = sorted({o["dvcfile"] for o in outs} | {PROJECT_FILE}
                   | ({"dvc.lock"} if (root / "dvc.lock").is_file() else set()))
    dirty = [line[3:] for line in git(root, "status", "--porcelain", "--", *files).splitlines() if line.strip()]
    if dirty:
        raise StageError(f"{art.name}: commit these first, so the version's commit pins the data: "
                         f"{', '.join(dirty)}")
    return {"outs": outs}


# --------------------------------------------------------------------------- register


def register_version(root: Path, name: str, version: str, message: str | None = None) -> tuple[str, bool, dict]:
    """Tag HEAD as ``NAME@vX.Y.Z``; returns (tag, created, record). Same content again: no-op."""
    from gto.exceptions import GTOException

    art = get_artifact(root, name)
    version = parse_version(version)
    versions = read_versions(root)
    record = artifact_record(root, art, versions, read_artifacts(root), deep=True)
    if record is None:
        raise StageError(f"{root / art.path}: not found (build it, or `dvc pull`), nothing to register")
    tag = f"{name}@{version}"
    for old in versions.get(name, []):
        if version_key(old.version) != version_key(version):  # SemVer: build metadata (+...) is the same version
            continue
        if old.record and old.record.get("content") == record["content"]:
            return old.tag, False, old.record
        had = old.record.get("content") if old.record else "not recorded (tag made outside hrm)"
        newer = _next_patch(versions.get(name, []))
        same = "" if old.version == version else f" ({version} is the same version: build metadata does not make a new one)"
        raise StageError(
            f"{old.tag} already exists{same} (commit {old.commit[:10]}) with content {had}; the workspace has "
            f"{record['content']}. Versions are immutable: register the new content as a new version "
            f"(e.g. `hrm registry register {name} {newer}`).")
    dvc_state = committed_state(root, art)
    if art.type == "model" and (record.get("dataset") or {}).get("content") is None and record.get("dataset"):
        log("registry", f"warning: {name}'s dataset {record['dataset']['data_path']} is not in this "
                        f"project; its content hash cannot be recorded")
    record["dvc"] = dvc_state
    head = f"Registering artifact {name} version {version}" + (f": {message}" if message else "")
    text = f"{head}\n\n{RECORD_PREFIX}{json.dumps(record, sort_keys=True, separators=(',', ':'))}\n"
    try:
        import gto.api

        gto.api.register(str(root), name, "HEAD", version=version, message=text)
    except GTOException as exc:
        raise StageError(f"GTO refused to register {tag}: {exc}") from None
    return tag, True, record


def _next_patch(versions: list[Version]) -> str:
    if not versions:
        return "v1.0.0"
    m = _SEMVER.match(max((v.version for v in versions), key=version_key))
    return f"v{m.group(1)}.{m.group(2)}.{int(m.group(3)) + 1}"


# --------------------------------------------------------------------------- views


def _short(content: str | None) -> str:
    return content[:19] if content else "-"


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(params.items()))


def _fmt_source(source: dict) -> str:
    text = f"raw {source.get('source', 'unknown')}"
    if source.get("hf_repo"):
        text += f" {source['hf_repo']} revision {source.get('resolved_sha') or source.get('revision')}"
    elif source.get("seed") is not None:
        text += f" (seed {source['seed']})"
    return text


def _models_on(content: str | None, models: list[tuple[str, dict]]) -> list[str]:
    return [label for label, rec in models if content and (rec.get("dataset") or {}).get("content") == content]


def _with_dataset_versions(item: dict, versions: dict[str, list[Version]]) -> dict:
    """A model's dataset, with the dataset versions registered with that content *now*
    (a dataset may be registered after the model)."""
    dataset = item.get("dataset")
    if not isinstance(dataset, dict) or not dataset.get("content"):
        return item
    found = [f"{v.name}@{v.version}" for vs in versions.values() for v in vs
             if v.record and v.record.get("type") == "dataset" and v.record.get("content") == dataset["content"]]
    return dict(item, dataset=dict(dataset, versions=found))


def collect(root: Path) -> dict:
    """Everything ``list`` shows, as plain data (also the ``--json`` output)."""
    artifacts = read_artifacts(root)
    versions = read_versions(root)
    entries = []
    workspace: dict[str, dict | None] = {}
    for art in artifacts.values():
        try:
            workspace[art.name] = artifact_record(root, art, versions, artifacts, deep=False)
        except StageError as exc:
            workspace[art.name] = {"error": exc.message}
    models = [(f"{v.name}@{v.version}", v.record) for vs in versions.values() for v in vs
              if v.record and v.record.get("type") == "model" and not v.deregistered]
    for art in artifacts.values():
        ws = workspace[art.name]
        if art.type == "model" and ws and "content" in ws:
            if not any(rec.get("content") == ws["content"] for _, rec in models):
                models.append((f"{art.name} (workspace, unregistered)", ws))
    for art in artifacts.values():
        ws = workspace[art.name]
        items = []
        for v in versions.get(art.name, []):
            rec = v.record or {}
            item = {"version": v.version, "tag": v.tag, "commit": v.commit, "date": v.date,
                    "deregistered": v.deregistered, "content": rec.get("content")}
            for key in ("dataset", "kind", "rows", "groups", "params", "source", "built_from",
                        "checkpoints", "latest_step", "arch", "train", "metrics", "bytes"):
                if key in rec:
                    item[key] = rec[key]
            item = _with_dataset_versions(item, versions)
            if art.type == "dataset":
                item["models"] = _models_on(rec.get("content"), models)
            items.append(item)
        ws_out = None
        if ws is not None:
            if "error" in ws:
                ws_out = {"error": ws["error"]}
            else:
                ws_out = {k: v for k, v in ws.items() if k not in ("files", "schema", "artifact", "type", "path")}
                ws_out["matches"] = [v.version for v in versions.get(art.name, []) if v.record
                                     and v.record.get("content") == ws["content"]]
                if art.type == "dataset":
                    ws_out["models"] = _models_on(ws["content"], models)
                ws_out = _with_dataset_versions(ws_out, versions)
        entries.append({"name": art.name, "type": art.type, "path": art.path, "desc": art.desc,
                        "labels": art.labels, "versions": items, "workspace": ws_out})
    undeclared = []
    index = root / "data" / "datasets" / DATASETS_INDEX
    if index.is_file():
        from pipelines.datasets import read_datasets_index

        try:
            built = [n for n in read_datasets_index(index.parent).values() if n]
        except StageError as exc:  # listed as a note: the artifacts above are what `list` is for
            log("registry", f"note: {exc.message}")
            built = []
        declared = {Path(a.path).as_posix().rstrip("/") for a in artifacts.values()}
        undeclared = [n for n in built if f"data/datasets/{n}" not in declared]
    return {"artifacts": entries, "undeclared_datasets": undeclared}


def _split_order(split: str) -> tuple:
    return ({"train": 0, "test": 1}.get(split, 2), split)


def _echo_details(item: dict, indent: str = "  ") -> None:
    if "rows" in item:
        splits = sorted(item["rows"], key=_split_order)
        groups = item.get("groups") or {}
        rows = "  ".join(f"{s} {item['rows'][s]:,} rows ({groups.get(s, 0):,} groups)" for s in splits)
        click.echo(f"{indent}rows:       {rows}")
    if item.get("params"):
        click.echo(f"{indent}params:     {_fmt_params(item['params'])}")
    if item.get("source") or item.get("built_from"):
        bf = item.get("built_from") or {}
        raw = ", ".join(f"{f} {h[:12]}" for f, h in sorted((bf.get("raw_files") or {}).items()) if h)
        tables = ", ".join(f"{f} {h[:12]}" for f, h in sorted((bf.get("hints_tables") or {}).items()) if h)
        click.echo(f"{indent}built from: {_fmt_source(item.get('source') or {})}; raw files: {raw or '-'}; "
                   f"hints tables: {tables or '-'}")
    if "checkpoints" in item:
        click.echo(f"{indent}checkpoints: {len(item['checkpoints'])} (latest step {item.get('latest_step')})")
    if item.get("arch") or item.get("train"):
        click.echo(f"{indent}config:     {_fmt_params(item.get('arch') or {})}; {_fmt_params(item.get('train') or {})}")
    if item.get("metrics"):
        click.echo(f"{indent}metrics:    {json.dumps(item['metrics'], sort_keys=True)[:200]}")
    if item.get("dataset") and isinstance(item["dataset"], dict):
        d = item["dataset"]
        on = ", ".join(d.get("versions") or []) or "unregistered"
        click.echo(f"{indent}trained on: {d.get('name')} {_short(d.get('content'))} ({on})")
    if item.get("models") is not None and "rows" in item:
        click.echo(f"{indent}models:     {', '.join(item['models']) or '-'}")


def show_list(data: dict) -> None:
    if not data["artifacts"]:
        click.echo("No artifacts declared in dvc.yaml (`artifacts:` section).")
    for entry in data["artifacts"]:
        head = f"{entry['name']}  [{entry['type']}]  {entry['path']}"
        click.echo(head)
        if entry["desc"]:
            click.echo(f"  {entry['desc']}")
        if entry["labels"]:
            click.echo(f"  labels: {', '.join(entry['labels'])}")
        if not entry["versions"]:
            click.echo("  versions:   none registered")
        for item in entry["versions"]:
            gone = "  (deregistered)" if item["deregistered"] else ""
            click.echo(f"  {item['version']:<10}  {item['date']}  commit {item['commit'][:10]}  "
                       f"{_short(item['content'])}{gone}")
        ws = entry["workspace"]
        if ws is None:
            click.echo("  workspace:  absent (`dvc pull`, or build it)")
        elif "error" in ws:
            click.echo(f"  workspace:  unreadable: {ws['error']}")
        else:
            same = f"= {', '.join(ws['matches'])}" if ws["matches"] else "unregistered content"
            click.echo(f"  workspace:  {_short(ws['content'])} ({same})")
        shown = entry["versions"][-1] if entry["versions"] else None
        if ws and "error" not in ws:
            shown = dict(ws, models=ws.get("models"))
        if shown:
            _echo_details(shown, indent="  ")
        click.echo("")
    if data["undeclared_datasets"]:
        click.echo("Built but not declared in dvc.yaml (declare them to register): "
                   + ", ".join(data["undeclared_datasets"]))


# --------------------------------------------------------------------------- commands


@click.group("registry")
@click.option("-C", "--project", "project", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="The DVC project (a folder inside it).")
@click.pass_context
def registry(ctx: click.Context, project: Path) -> None:
    """Datasets and models: versions (git tags), content hashes, lineage, integrity.

    Artifacts are declared in dvc.yaml (`artifacts:`); a version is a GTO tag NAME@vX.Y.Z
    whose message records the content hash, counts, params and lineage.
    """
    ctx.obj = find_root(project)


@registry.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_cmd(root: Path, as_json: bool) -> None:
    """Every dataset and model: versions, content hash, rows, params, lineage, models trained on it."""
    data = collect(root)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        show_list(data)


def version_view(name: str, v: Version, versions: dict[str, list[Version]]) -> dict:
    """One registered version in full (``show NAME@VERSION``)."""
    record = _with_dataset_versions(v.record, versions) if v.record else None
    out = {"name": name, "version": v.version, "tag": v.tag, "commit": v.commit, "date": v.date,
           "deregistered": v.deregistered, "record": record}
    if v.record and v.record.get("type") == "dataset":
        out["models"] = _models_on(v.record.get("content"), [
            (f"{x.name}@{x.version}", x.record) for xs in versions.values() for x in xs
            if x.record and x.record.get("type") == "model" and not x.deregistered])
    return out


def _echo_version(out: dict, art: Artifact) -> None:
    click.echo(f"{out['name']}@{out['version']}  [{art.type}]  {art.path}")
    click.echo(f"  tag {out['tag']}  commit {out['commit']}  {out['date']}"
               + ("  (deregistered)" if out["deregistered"] else ""))
    rec = out["record"]
    if not rec:
        click.echo("  no hrm record in the tag message (registered outside hrm)")
        return
    click.echo(f"  content:    {rec.get('content')}  ({rec.get('bytes', 0):,} bytes)")
    _echo_details(dict(rec, models=out.get("models")), indent="  ")
    source = rec.get("source") or {}
    if source:
        click.echo(f"  source:     {json.dumps(source, sort_keys=True)}")
    for f, info in sorted((rec.get("files") or {}).items()):
        click.echo(f"  file:       {f}  {info['bytes']:,} B  sha256 {info['sha256']}")
    for o in (rec.get("dvc") or {}).get("outs", []):
        click.echo(f"  dvc out:    {o['path']}  md5 {o['md5']}  ({o['dvcfile']})")


@registry.command("show")
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show_cmd(root: Path, spec: str, as_json: bool) -> None:
    """One artifact in full: NAME (the workspace and every version) or NAME@VERSION."""
    name, version = parse_spec(spec)
    art = get_artifact(root, name)
    versions = read_versions(root)
    mine = versions.get(name, [])
    if version is not None:
        found = [v for v in mine if v.version == version]
        if not found:
            raise StageError(f"{name}@{version} is not registered (versions: "
                             f"{', '.join(v.version for v in mine) or 'none'})")
        out = version_view(name, found[0], versions)
        if as_json:
            click.echo(json.dumps(out, indent=2, sort_keys=True))
        else:
            _echo_version(out, art)
        return
    entry = next(e for e in collect(root)["artifacts"] if e["name"] == name)
    views = [version_view(name, v, versions) for v in mine]
    if as_json:
        click.echo(json.dumps(dict(entry, versions=views), indent=2, sort_keys=True))
        return
    show_list({"artifacts": [entry], "undeclared_datasets": []})
    for view in views:
        _echo_version(view, art)
        click.echo("")


@registry.command("register")
@click.argument("name")
@click.argument("version")
@click.option("-m", "--message", default=None, help="A note for the tag message.")
@click.pass_obj
def register_cmd(root: Path, name: str, version: str, message: str | None) -> None:
    """Register the workspace's NAME as VERSION (a GTO tag on HEAD). Immutable: the same
    version with other content is refused."""
    tag, created, record = register_version(root, name, version, message)
    if not created:
        click.echo(f"{tag} is already registered with this content ({record['content']}); nothing to do.")
        return
    click.echo(f"Registered {tag}: {record['content']} ({record['bytes']:,} bytes, {len(record['files'])} files)")
    click.echo(f"Share it: git push origin {tag} && dvc push")


@registry.command("verify")
@click.argument("spec")
@click.pass_obj
def verify_cmd(root: Path, spec: str) -> None:
    """Re-hash NAME's files against its manifest (and NAME@VERSION's record); name every
    corrupt, missing or unexpected file. Exit 1 on any problem."""
    name, version = parse_spec(spec)
    art = get_artifact(root, name)
    directory = root / art.path
    if not directory.exists():
        raise StageError(f"{directory}: not found (build it, or `dvc pull`)")
    mine = read_versions(root).get(name, [])
    problems: list[str] = []
    if art.type == "dataset":
        _, files, problems = check_dataset(directory)
    else:
        files = hash_files(directory, model_files(directory)) if directory.is_dir() else \
            {directory.name: {"bytes": directory.stat().st_size, "sha256": file_sha256(directory)}}
        if directory.is_dir():
            try:
                summary = model_summary(root, directory, {}, {})
                if not summary["checkpoints"]:
                    problems.append(f"{directory}: no step_N checkpoint next to {summary['config']}")
            except StageError as exc:
                problems.append(exc.message)
            problems += checkpoint_problems(directory)
    content = content_hash(files)
    target = None
    if version is not None:
        found = [v for v in mine if v.version == version]
        if not found:
            raise StageError(f"{name}@{version} is not registered")
        target = found[0]
    elif art.type == "model":
        target = next((v for v in reversed(mine) if v.record and v.record.get("content") == content), None) \
            or latest(mine)
    if target is not None and target.record and target.record.get("content") != content:
        want = target.record.get("files") or {}
        for f, info in sorted(want.items()):
            got = files.get(f)
            if got is None:
                problems.append(f"{directory / f}: missing ({target.tag} has it)")
            elif got["sha256"] != info["sha256"]:
                problems.append(f"{directory / f}: differs from {target.tag} (corrupt or modified)")
        for f in sorted(set(files) - set(want)):
            problems.append(f"{directory / f}: not in {target.tag}")
        if not want:
            problems.append(f"content {content} differs from {target.tag}'s {target.record.get('content')}")
    if problems:
        raise StageError(f"{name}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    matches = [v.version for v in mine if v.record and v.record.get("content") == content]
    total = sum(f["bytes"] for f in files.values())
    click.echo(f"OK {name}: {len(files)} files, {total:,} bytes, {content} "
               f"({'= ' + ', '.join(matches) if matches else 'not a registered version'})")


@registry.command("get")
@click.argument("spec")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder to write it to.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.pass_obj
def get_cmd(root: Path, spec: str, out: Path, force: bool) -> None:
    """Fetch NAME@VERSION (default: the latest version) from DVC's cache or remote into --out,
    and check it against the version's record."""
    tag, record = fetch_version(root, spec, out, force)
    click.echo(f"Fetched {tag} to {out}: {record.get('content')}")


def resolve_version(root: Path, spec: str) -> tuple[Artifact, Version]:
    name, version = parse_spec(spec)
    art = get_artifact(root, name)
    mine = read_versions(root).get(name, [])
    if version is None:
        found = latest(mine)
        if found is None:
            raise StageError(f"{name} has no registered version (`hrm registry register {name} 1.0.0`)")
        return art, found
    for v in mine:
        if v.version == version:
            return art, v
    raise StageError(f"{name}@{version} is not registered (versions: {', '.join(v.version for v in mine) or 'none'})")


def fetch_version(root: Path, spec: str, out: Path, force: bool = False) -> tuple[str, dict]:
    """``dvc artifacts get`` of a registered version into a temporary beside ``out``, checked against its
    record, then put in place (pipelines.io.atomic_output): refused bytes never reach ``out``, and an
    ``out`` that was there (``--force``) stays as it was."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from pipelines.io import atomic_output

    art, v = resolve_version(root, spec)
    if out.exists() and not force:
        raise StageError(f"{out}: already exists (use --force to replace it)")
    record = v.record or {}
    if not record.get("content"):
        log("registry", f"note: {v.tag} has no recorded content hash (a tag made outside hrm): fetched unverified")
    with atomic_output(out, stage="registry get") as tmp:  # --force: replaces an earlier `registry get` only
        try:
            with Repo(str(root)) as repo:  # the local project: its cache, then its default remote
                repo.artifacts.download(v.name, version=v.version, out=str(tmp))
        except DvcException as exc:
            raise StageError(f"cannot fetch {v.tag} with DVC: {exc} (is it pushed to the DVC remote? `dvc push`)") \
                from None
        files = hash_files(tmp, model_files(tmp) if art.type == "model" else _walk(tmp)) if tmp.is_dir() else \
            {out.name: {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}}
        if record.get("content") and content_hash(files) != record["content"]:
            raise StageError(f"{out}: fetched content {content_hash(files)} differs from {v.tag}'s "
                             f"{record['content']} (corrupt cache or remote?); nothing was written to {out}")
    return v.tag, record
