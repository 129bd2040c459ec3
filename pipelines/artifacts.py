"""The registry's artifacts and their versions, shared by ``hrm registry`` (pipelines/registry.py,
where the record a version carries is described) and ``hrm publish``: artifacts declared in
``dvc.yaml``, versions (GTO tags and their records), content hashes, the dataset and model checks,
registering a version, and resolving and fetching one.
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

import yaml

from pipelines.atomic_replace import atomic_output
from pipelines.io import StageError, log
from hrm.manifest import CARD, MANIFEST, ManifestError
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
    names = [n for n in (CARD, MANIFEST, *(manifest.get("files") or {})) if (directory / n).is_file()]
    files = hash_files(directory, names)
    if deep:
        files.update(hash_files(directory, [n for n in shards if (directory / n).is_file()]))
    else:
        files.update(shards)
    return files


def check_dataset(directory: Path) -> tuple[dict, dict[str, dict], list[str]]:
    """List *every* problem of a dataset folder: a file the manifest lists that is missing, a
    file it does not list (a stray), no card; and the shard check of ``hrm validate shards``
    (pipelines.dataset_checks.dataset_problems: sha256, size, schema, rows, shard schema). Returns
    (manifest, files, problems); ``files`` are the sizes and sha256 of every file there."""
    from pipelines.dataset_checks import dataset_problems

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
# Beside the step_N of published weights (`hrm checkpoint fetch` / `import`): where they came from
# (hrm.model.checkpoint.PROVENANCE_NAME; not imported from there: torch).
PROVENANCE = "provenance.json"


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
    names = [n for n in _walk(folder) if _STEP.match(n.removesuffix(".sha256"))
             or n.removesuffix(".sha256") in (config.name, PROVENANCE)]
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
    provenance = [config.parent / PROVENANCE] if (config.parent / PROVENANCE).is_file() else []
    for p in [*files, config, *provenance]:
        try:
            want = recorded_sha256(p)
        except IntegrityError as exc:
            problems.append(str(exc))
            continue
        if want is None and p.name in (config.name, PROVENANCE) and verified:
            problems.append(f"{p}: no {hash_file(p).name} beside it, while the step_N beside it are verified: "
                            f"the config cannot be verified")
        verified = verified or want is not None
        if want is not None and (got := file_sha256(p)) != want:
            problems.append(str(mismatch(p, want, got)))
    return problems


def imported_origin(folder: Path) -> dict | None:
    """What the registry shows of published weights in ``folder`` (their provenance.json): the origin, the
    dataset identity they need and the architecture; None for a trained model."""
    path = folder / PROVENANCE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: cannot read ({exc})") from None
    if not isinstance(record, dict):
        raise StageError(f"{path}: not a provenance record (a JSON object)")
    return {k: record[k] for k in ("origin", "dataset", "arch") if k in record}


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
    files = dataset_files(directory, manifest, deep=False)
    content = content_hash(files)
    ident: dict[str, Any] = {"name": manifest.get("name"), "content": content,
                             "manifest_sha256": files[MANIFEST]["sha256"]}
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
        if isinstance(config.get("trained_on"), dict):  # the build it needs, as training recorded it (hrm.model.coupling)
            dataset["trained_on"] = config["trained_on"]
        summary["dataset"] = dataset
    if (imported := imported_origin(config_path.parent)) is not None:
        summary["provenance"] = imported
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


# --------------------------------------------------------------------------- resolve and fetch


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
    record, then put in place (pipelines.atomic_replace.atomic_output): refused bytes never reach ``out``, and an
    ``out`` that was there (``--force``) stays as it was."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

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
