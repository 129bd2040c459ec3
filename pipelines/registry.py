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
  ``data_path`` of its ``all_config.yaml`` -> that dataset's manifest name, content hash, manifest
  sha256 and registered version; ``trained_on``: the build the checkpoint records, whose versions
  ``list`` and ``show`` give as ``needs``), plus its metrics; published weights (``hrm checkpoint fetch`` /
  ``import``, docs/weights.md) also their ``provenance``, and ``list`` names those not declared;
- ``dvc``: the DVC outputs holding the artifact and their hashes at that commit.

A version is immutable: registering it again with the same content does nothing, with other
content it is refused. A version is only created when the artifact's DVC stage is up to date
and committed, so the tagged commit pins exactly the data that was hashed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.artifacts import (
    PROVENANCE, Artifact, Version, artifact_record, check_dataset, checkpoint_problems, content_hash, fetch_version,
    find_root, get_artifact, hash_files, imported_origin, latest, model_files, model_summary, parse_spec,
    read_artifacts, read_versions, register_version,
)
from pipelines.io import StageError, log
from hrm.manifest import DATASETS_INDEX, MANIFEST
from hrm.manifest import file_sha256  # never the stages' cached hash: verification must re-read


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


def _dataset_versions(versions: dict[str, list[Version]], match) -> list[str]:
    return [f"{v.name}@{v.version}" for vs in versions.values() for v in vs
            if v.record and v.record.get("type") == "dataset" and match(v.record)]


def _manifest_sha256(record: dict) -> str | None:
    return ((record.get("files") or {}).get(MANIFEST) or {}).get("sha256")


def _with_dataset_versions(item: dict, versions: dict[str, list[Version]]) -> dict:
    """A model's dataset, with the dataset versions registered with that content *now* (a dataset may be
    registered after the model), and ``needs``: those whose manifest.json is the one it was trained on."""
    dataset = item.get("dataset")
    if not isinstance(dataset, dict):
        return item
    dataset = dict(dataset)
    if dataset.get("content"):
        dataset["versions"] = _dataset_versions(versions, lambda r: r.get("content") == dataset["content"])
    trained_on = dataset.get("trained_on")
    if isinstance(trained_on, dict):
        dataset["needs"] = _dataset_versions(versions, lambda r: _manifest_sha256(r) == trained_on.get("manifest_sha256"))
    return dict(item, dataset=dataset)


def _echo_needs(dataset: dict, indent: str) -> None:
    """The dataset build a model needs (hrm.model.coupling: evaluate refuses another)."""
    need = dataset["trained_on"]
    n = need.get("num_puzzle_identifiers")
    where = ", ".join(dataset.get("needs") or []) or "no registered version"
    other = dataset.get("manifest_sha256") not in (None, need.get("manifest_sha256"))
    click.echo(f"{indent}needs:      {need.get('name')} manifest sha256 {str(need.get('manifest_sha256'))[:12]}, "
               f"{n} puzzle identifier{'s' if n != 1 else ''} ({where})"
               + (f"; {dataset.get('data_path')} now holds another build" if other else ""))


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
                        "checkpoints", "latest_step", "arch", "train", "metrics", "bytes", "provenance"):
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
    return {"artifacts": entries, "undeclared_datasets": undeclared,
            "undeclared_imported_models": imported_models(root, artifacts)}


def imported_models(root: Path, artifacts: dict) -> list[dict]:
    """Published weights brought in under data/models (`hrm checkpoint fetch` / `import`: a provenance.json
    beside their checkpoints) that no artifact declares: where they are and their origin."""
    declared = {(root / a.path).resolve() for a in artifacts.values()}
    found = []
    for record in sorted((root / "data" / "models").glob(f"*/checkpoints/{PROVENANCE}")):
        folder = record.parent.parent
        if folder.resolve() not in declared:
            try:
                shown = imported_origin(record.parent) or {}
            except StageError as exc:
                shown = {"error": exc.message}
            found.append({"path": folder.relative_to(root).as_posix(), **shown})
    return found


def _fmt_origin(origin: dict) -> str:
    """Where published weights came from: ``hf OWNER/REPO@COMMIT`` or the folder (and its clone's commit)."""
    if origin.get("kind") == "hub":
        licence = origin.get("licence") or "no licence recorded"
        return f"hf {origin.get('repo_id')}@{origin.get('commit')} (revision {origin.get('revision')}; {licence})"
    git = origin.get("git") or {}
    where = f" ({git.get('remote') or 'a git clone'}@{git.get('commit')} {git.get('path')})" if git else ""
    return f"folder {origin.get('path')}{where}"


def _echo_imported(provenance: dict, indent: str) -> None:
    """The origin of published weights and the dataset identity they need."""
    click.echo(f"{indent}imported:   {_fmt_origin(provenance.get('origin') or {})}")
    d = provenance.get("dataset") or {}
    if d:
        click.echo(f"{indent}needs:      {' or '.join(d.get('tasks') or []) or 'no known task'}: seq_len "
                   f"{d.get('seq_len')}, vocab_size {d.get('vocab_size')}, {d.get('num_puzzle_identifiers')} "
                   "puzzle identifier(s)")


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
    if isinstance(item.get("provenance"), dict):
        _echo_imported(item["provenance"], indent)
    if item.get("arch") or item.get("train"):
        click.echo(f"{indent}config:     {_fmt_params(item.get('arch') or {})}; {_fmt_params(item.get('train') or {})}")
    if item.get("metrics"):
        click.echo(f"{indent}metrics:    {json.dumps(item['metrics'], sort_keys=True)[:200]}")
    if item.get("dataset") and isinstance(item["dataset"], dict):
        d = item["dataset"]
        on = ", ".join(d.get("versions") or []) or "unregistered"
        click.echo(f"{indent}trained on: {d.get('name')} {_short(d.get('content'))} ({on})")
        if isinstance(d.get("trained_on"), dict):
            _echo_needs(d, indent)
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
    for model in data.get("undeclared_imported_models") or []:
        click.echo(f"Imported, not declared in dvc.yaml (declare it to register): {model['path']}  "
                   + (model["error"] if "error" in model else _fmt_origin(model.get("origin") or {})))


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
