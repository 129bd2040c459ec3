"""``hrm publish NAME[@VERSION] --repo-id OWNER/NAME``: share a registered dataset on the Hugging Face Hub.

Uploads, in one commit, exactly the registered version's files: its Arrow shards, its
``manifest.json`` (unchanged) and a dataset card generated from the manifest and the registry
record (``README.md``: YAML ``configs`` so ``datasets.load_dataset(REPO_ID)`` reads the shards
as they are, how it was built, params, counts, version and content hash, the source data's
license, citations of both papers). Files already on the Hub's ``main`` that are not part of
the version are deleted in the same commit. The commit is then tagged with the registry
version (``v1.0.0``); a version already tagged on the Hub is refused (versions are immutable).

The data is the workspace's copy when its content is the version's; otherwise the version is
fetched with DVC (cache, then remote) into a temporary folder. ``--dry-run`` prints the files
and sizes and touches no network; ``--save-folder DIR`` also writes the folder as it would be
uploaded (``datasets.load_dataset(DIR)`` reads it).

Credentials: the token comes from ``HF_TOKEN`` or ``hf auth login`` (huggingface_hub resolves
it) and is never printed, logged or written anywhere. ``HF_ENDPOINT`` selects another Hub.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from pipelines.datasets import dataset_card, license_links, license_of, render_card
from pipelines.atomic_replace import atomic_output
from pipelines.io import StageError, human_bytes, log
from pipelines.output_records import check_apart
from pipelines.artifacts import (
    Artifact, Version, check_dataset, content_hash, dataset_files, fetch_version, find_root, read_manifest,
    resolve_version,
)
from hrm.manifest import CARD, MANIFEST
from hrm.tasks import manifest_task

REPO_TYPE = "dataset"
KEEP_ON_HUB = {".gitattributes"}

CITATIONS = """\
@misc{wang2025hierarchicalreasoningmodel,
  title         = {Hierarchical Reasoning Model},
  author        = {Guan Wang and Jin Li and Yuhao Sun and Xing Chen and Changling Liu and Yue Wu and Meng Lu
                   and Sen Song and Yasin Abbasi Yadkori},
  year          = {2025},
  eprint        = {2506.21734},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2506.21734}
}

@misc{arxiv2601.10679,
  title         = {Are Your Reasoning Models Reasoning or Guessing?},
  year          = {2026},
  eprint        = {2601.10679},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2601.10679}
}"""


# --------------------------------------------------------------------------- card


def publish_card(manifest: dict, record: dict, version: Version, repo_id: str, license_id: str | None = None) -> str:
    """The published dataset card: the shard stage's card (its Hub metadata: license, task and size
    categories, tags, source datasets, lineage, ``configs``; its columns, loading), the license
    overridden by ``--license``, plus the registry version, how it was built, the license note and
    citations."""
    from huggingface_hub import DatasetCard

    card = DatasetCard(dataset_card(manifest))
    body = card.text
    data = card.data
    source = manifest.get("source") or {}
    task = manifest_task(manifest)
    _, license_text = license_of(source, task)
    noun = task.words["card"]["examples"]
    if license_id:
        data.license = license_id
        for key in ("license_name", "license_link"):
            data.pop(key)
        for key, value in license_links(source, license_id, task).items():
            data[key] = value
    params = manifest.get("params") or {}
    lineage = manifest.get("lineage") or {}
    raw_files = ((lineage.get("subsample") or {}).get("inputs")) or {}
    revision = source.get("resolved_sha") or source.get("revision")
    origin = f"`{source.get('source', 'unknown')}`" + (f" ({source.get('hf_repo')} at `{revision}`)" if revision else "")
    lines = [
        body.rstrip("\n"),
        "",
        "## Version",
        "",
        f"This is `{version.name}` version `{version.version}` of the `hrm-pipeline` registry (Hub tag "
        f"`{version.version}`), registered at git commit `{version.commit}`.",
        f"Content hash: `{record.get('content')}` (sha256 of the sorted `path<TAB>bytes<TAB>sha256` lines of "
        f"the registered files: the shards, `manifest.json` and the shard stage's card); `manifest.json` lists "
        f"each shard's sha256.",
        "",
        "## How it was built",
        "",
        f"`dvc repro shard` in `hrm-pipeline`: raw source {origin} -> `hrm subsample` (`subsample_size` "
        f"{params.get('subsample_size')} train {noun} drawn uniformly without replacement; test capped to "
        f"`test_size` {params.get('test_size')}, 0 = all) -> `hrm augment` (`num_aug` {params.get('num_aug')} "
        + task.words["card"]["build"]
        + " -> `hrm shard` (Arrow IPC shards of whole groups). Every stage validates its input "
        "and output; the same params give byte-identical files.",
        "",
        "| param | value |",
        "| --- | --- |",
    ]
    lines += [f"| `{k}` | {str(v).lower() if isinstance(v, bool) else v} |" for k, v in sorted(params.items())]
    lines += ["", "Upstream sha256 (from `manifest.json`'s lineage):", ""]
    lines += [f"- raw `{f}`: `{r.get('sha256')}`" for f, r in sorted(raw_files.items())]
    lines += [f"- hints table `{f}`: `{r.get('sha256')}`" for f, r in sorted((manifest.get("inputs") or {}).items())]
    lines += [
        "",
        "## License",
        "",
        license_text,
        "",
        "## Citation",
        "",
        "The model and the Sudoku-Extreme benchmark, and the study whose hint datasets this pipeline builds:",
        "",
        "```bibtex",
        CITATIONS,
        "```",
        "",
        f"Load it: `datasets.load_dataset(\"{repo_id}\", revision=\"{version.version}\")`.",
        "",
    ]
    return render_card(data, "\n".join(lines))


# --------------------------------------------------------------------------- the upload


def locate(root: Path, art: Artifact, version: Version, scratch: Path) -> Path:
    """A folder holding exactly the version's files: the workspace's, or a DVC fetch of it."""
    record = version.record or {}
    if not record.get("content"):
        raise StageError(f"{version.tag} has no hrm record (tag made outside hrm); register it with "
                         f"`hrm registry register`")
    directory = root / art.path
    if (directory / MANIFEST).is_file():
        try:
            same = content_hash(dataset_files(directory, read_manifest(directory), deep=False)) == record["content"]
        except (StageError, OSError, KeyError):
            same = False
        if same:
            return directory
    log("publish", f"the workspace's {art.path} is not {version.tag}; fetching it with DVC")
    out = scratch / art.name
    fetch_version(root, f"{art.name}@{version.version}", out)
    return out


def plan_upload(directory: Path, manifest: dict, card: str) -> list[tuple[str, Path | bytes, int]]:
    """(path in the repo, local file or bytes, size) of every file of the commit, in order."""
    plan: list[tuple[str, Path | bytes, int]] = [(CARD, card.encode(), len(card.encode()))]
    plan.append((MANIFEST, directory / MANIFEST, (directory / MANIFEST).stat().st_size))
    for info in manifest["splits"].values():
        for shard in info["shards"]:
            plan.append((shard["file"], directory / shard["file"], shard["bytes"]))
    return plan


def write_folder(plan: list[tuple[str, Path | bytes, int]], out: Path) -> None:
    """Write the folder the commit would create (hard links for shards where possible); an existing
    folder is replaced only when it holds nothing but such files."""
    with atomic_output(out, stage="publish") as tmp:
        tmp.mkdir(parents=True)
        for path_in_repo, source, _ in plan:
            dest = tmp / path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                dest.write_bytes(source)
                continue
            try:
                os.link(source, dest)
            except OSError:
                shutil.copyfile(source, dest)


def _hub_error(exc: Exception, repo_id: str, step: str, endpoint: str) -> StageError:
    """One clear message for a Hub failure (never the token: huggingface_hub keeps it out of errors)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return StageError(
            f"the Hugging Face Hub ({endpoint}) refused the credentials (HTTP {status}) while {step} {repo_id}: "
            f"the token from HF_TOKEN or `hf auth login` is invalid, expired, or cannot write to this "
            f"namespace. Create a token with write access at https://huggingface.co/settings/tokens, then "
            f"`export HF_TOKEN=...` or `hf auth login`.")
    if status is not None:
        server = (getattr(exc, "server_message", None) or str(exc).splitlines()[0]).strip()
        return StageError(f"the Hugging Face Hub ({endpoint}) answered HTTP {status} while {step} {repo_id}: {server}")
    return StageError(f"cannot reach the Hugging Face Hub at {endpoint} while {step} {repo_id} "
                      f"({type(exc).__name__}: {exc}); check the network, or HF_ENDPOINT")


def upload(plan: list[tuple[str, Path | bytes, int]], repo_id: str, version: Version, private: bool,
           record: dict) -> str:
    """One commit with every file (and deletions of stale ones), then the version tag. Returns its URL."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if constants.is_offline_mode():
        raise StageError("HF_HUB_OFFLINE is set: unset it to publish (or use --dry-run)")
    if not get_token():
        raise StageError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access; "
                         "it is read from there only, never from params or files of this project)")
    api = HfApi(endpoint=endpoint)
    step = "creating"
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=True if private else None, exist_ok=True)
        step = "reading the tags of"
        refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
        tagged = next((t for t in refs.tags if t.name == version.version), None)
        if tagged is not None:
            raise StageError(f"{repo_id} already has tag {version.version} (commit {tagged.target_commit}); "
                             f"published versions are immutable: register and publish a new version")
        step = "listing the files of"
        present = set(api.list_repo_files(repo_id, repo_type=REPO_TYPE))
        wanted = {p for p, _, _ in plan}
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=s if isinstance(s, bytes) else str(s))
                      for p, s, _ in plan]
        operations += [CommitOperationDelete(path_in_repo=p) for p in sorted(present - wanted - KEEP_ON_HUB)]
        step = "committing to"
        info = api.create_commit(
            repo_id, operations, repo_type=REPO_TYPE,
            commit_message=f"{version.name} {version.version}",
            commit_description=f"hrm-pipeline registry {version.tag} (git commit {version.commit}), "
                               f"content {record.get('content')}",
        )
        step = "tagging"
        api.create_tag(repo_id, tag=version.version, revision=info.oid, repo_type=REPO_TYPE,
                       tag_message=f"{version.tag} {record.get('content')}")
    except StageError:
        raise
    except Exception as exc:  # HfHubHTTPError, httpx / OS network errors
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, (HfHubHTTPError, OSError)) or type(exc).__module__.startswith(("httpx", "httpcore")):
            raise _hub_error(exc, repo_id, step, endpoint) from None
        raise
    return f"{endpoint}/datasets/{repo_id}/tree/{version.version}"


@click.command("publish")
@click.argument("spec", metavar="NAME[@VERSION]")
@click.option("--repo-id", required=True, help="The Hub dataset repository, OWNER/NAME (created if absent).")
@click.option("--private", is_flag=True, help="Create the Hub repository private.")
@click.option("--dry-run", is_flag=True, help="Print the files and sizes that would be uploaded; no network.")
@click.option("--save-folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the folder as it would be uploaded (datasets.load_dataset reads it).")
@click.option("--license", "license_id", default=None,
              help="License id for the card's metadata (default: from the raw source).")
@click.option("-C", "--project", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="The DVC project (a folder inside it).")
def publish(spec: str, repo_id: str, private: bool, dry_run: bool, save_folder: Path | None,
            license_id: str | None, project: Path) -> None:
    """Upload a registered dataset version (default: the latest) to the Hugging Face Hub in one
    commit, with its dataset card and manifest, and tag the Hub revision with the version."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise StageError(f"--repo-id {repo_id!r}: expected OWNER/NAME")
    root = find_root(project)
    art, version = resolve_version(root, spec)
    if art.type != "dataset":
        raise StageError(f"{art.name} is a {art.type}; `hrm publish` publishes datasets")
    record = version.record or {}
    with tempfile.TemporaryDirectory(prefix="hrm-publish-") as scratch:
        directory = locate(root, art, version, Path(scratch))
        manifest, files, problems = check_dataset(directory)
        if problems:
            raise StageError(f"{directory} fails verification, nothing uploaded:\n  - " + "\n  - ".join(problems))
        if content_hash(files) != record.get("content"):
            raise StageError(f"{directory}: content {content_hash(files)} is not {version.tag}'s "
                             f"{record.get('content')}; nothing uploaded")
        card = publish_card(manifest, record, version, repo_id, license_id)
        plan = plan_upload(directory, manifest, card)
        if save_folder is not None:
            check_apart(save_folder, [directory], "--save-folder")
            write_folder(plan, save_folder)
            log("publish", f"wrote the folder to upload to {save_folder}")
        total = sum(size for _, _, size in plan)
        verb = "Would publish" if dry_run else "Publishing"
        click.echo(f"{verb} {version.tag} to {repo_id} (dataset repo{', private' if private else ''}): "
                   f"one commit of {len(plan)} files, {human_bytes(total)}, then tag {version.version}")
        width = max(len(p) for p, _, _ in plan)
        for path_in_repo, _, size in plan:
            click.echo(f"  {path_in_repo:<{width}}  {size:>14,} B")
        click.echo(f"  {'total':<{width}}  {total:>14,} B")
        if dry_run:
            click.echo("Dry run: nothing uploaded. Files on the Hub's main that are not listed are deleted "
                       "in the same commit.")
            return
        url = upload(plan, repo_id, version, private, record)
    click.echo(f"Published {version.tag}: {url}")
