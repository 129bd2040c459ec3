"""The Hugging Face Hub, up to the network: download one file of a repo at a revision and check its bytes
against what the Hub records for it. Shared by ``hrm raw --source hf`` (dataset repos) and
``hrm checkpoint fetch`` (model repos); each says, through a :class:`HubUse`, how its messages name its
options and its offline alternative.

huggingface_hub is imported on use; HF_HUB_CACHE and HF_HUB_OFFLINE are read when called, not at import.
No token is read or written here: huggingface_hub finds the user's own (HF_TOKEN, its login) by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.io import StageError, log

SHA = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HubUse:
    """Who downloads, and how its messages read: the stage in the log, the repo type, the command's options
    for the repo and the revision, and what to do offline. The defaults are ``hrm raw --source hf``'s."""

    stage: str = "raw"
    repo_type: str = "dataset"
    needs: str = "--source hf"  # "... needs the huggingface_hub package"
    repo_option: str = "--hf-repo"
    revision_option: str = "--hf-revision"
    offline: str = "use `--source builtin` to generate puzzles offline"
    not_found_hint: str = ""  # appended to the not-found messages (raw: nothing)


RAW_USE = HubUse()


def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_unreachable(repo: str, revision: str, filename: str, why: str, use: HubUse) -> StageError:
    cache = os.environ.get("HF_HUB_CACHE") or "the default Hugging Face cache"
    return StageError(
        f"the Hugging Face Hub could not be reached ({why}) and {filename} of {use.repo_type} {repo} "
        f"at revision {revision} is not in the local cache ({cache}). "
        f"Connect to the internet (and unset HF_HUB_OFFLINE), or {use.offline}."
    )


@contextlib.contextmanager
def quiet_hub_logs():
    """huggingface_hub logs a warning per retry; the stage reports one message instead."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _hub_download(repo: str, revision: str, filename: str, use: HubUse) -> Path:
    """hf_hub_download, a cached commit first; every failure one StageError (:func:`download_hub_file`)."""
    try:
        from huggingface_hub import errors as hub_errors
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise StageError(f"{use.needs} needs the huggingface_hub package (pip install huggingface_hub)") from None

    offline = env_true("HF_HUB_OFFLINE")
    attempts = [True] if offline else ([True, False] if SHA.match(revision) else [False])
    for local_only in attempts:
        if not local_only:
            log(use.stage, f"downloading {filename} of {repo} (revision {revision}) from the Hugging Face Hub")
        try:
            with quiet_hub_logs():
                return Path(hf_hub_download(repo, filename, repo_type=use.repo_type, revision=revision,
                                            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                            local_files_only=local_only))
        except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
            if local_only and len(attempts) > 1:
                continue  # not cached yet: go online
            cause = exc.__cause__ or exc.__context__
            why = ("offline mode: HF_HUB_OFFLINE is set" if offline
                   else f"{type(cause).__name__}: {cause}" if cause else "no connection")
            raise _hub_unreachable(repo, revision, filename, why, use) from None
        except hub_errors.RepositoryNotFoundError:
            raise StageError(f"{use.repo_type} repo {repo} not found on the Hugging Face Hub (or it is private or "
                             f"gated); check {use.repo_option}{use.not_found_hint}") from None
        except hub_errors.RevisionNotFoundError:
            raise StageError(f"revision {revision} not found in {use.repo_type} {repo}; check "
                             f"{use.revision_option}{use.not_found_hint}") from None
        except hub_errors.EntryNotFoundError:
            raise StageError(f"{filename} not found in {use.repo_type} {repo} at revision {revision}"
                             f"{use.not_found_hint}") from None
        except Exception as exc:  # network errors come in many types (httpx, OSError, HfHubHTTPError)
            raise _hub_unreachable(repo, revision, filename, f"{type(exc).__name__}: {exc}", use) from None
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


def download_hub_file(repo: str, revision: str, filename: str, use: HubUse = RAW_USE) -> tuple[Path, str | None]:
    """hf_hub_download one file of a repo; returns (local path, resolved commit sha).

    A file cached for a commit sha is used without contacting the hub (commits are
    immutable); a branch or tag is resolved online, falling back to the cache when
    offline. HF_HUB_CACHE and HF_HUB_OFFLINE are read when called, not at import.
    """
    local = _hub_download(repo, revision, filename, use)
    sha = local.parent.name if local.parent.parent.name == "snapshots" and SHA.match(local.parent.name) else None
    return local, sha


def hub_record(repo: str, revision: str, filename: str, local: Path, use: HubUse = RAW_USE) -> tuple[str | None, str]:
    """(what the Hub records for ``filename`` at ``revision``: its LFS sha256, or for a file outside LFS its
    git blob id; where that comes from). Online: the Hub's API (``HfApi.get_paths_info``). Offline, or the
    API unreachable: the etag huggingface_hub recorded when it downloaded the file, the name of the blob
    the cache's snapshot links to (the same two ids). (None, ...) when neither is there."""
    if not env_true("HF_HUB_OFFLINE"):
        try:
            from huggingface_hub import HfApi

            with quiet_hub_logs():
                infos = HfApi().get_paths_info(repo, [filename], revision=revision, repo_type=use.repo_type)
            info = next((i for i in infos if getattr(i, "path", None) == filename), None)
            if info is not None:
                return (info.lfs.sha256 if info.lfs else info.blob_id), f"the Hub ({repo} at {revision})"
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            log(use.stage, f"note: the Hub could not be asked for the hash of {filename} ({type(exc).__name__}); "
                           "checking it against the etag the cache recorded")
    if local.is_symlink():
        etag = Path(os.readlink(local)).name
        if SHA256.match(etag) or SHA.match(etag):
            return etag, f"the cache's record of the Hub's etag ({local} -> blobs/{etag})"
    return None, f"no record: offline, and {local} is not a link to a blob named by its etag"


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's bytes (what the Hub records for a file outside LFS)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def verify_hub_file(repo: str, revision: str, filename: str, local: Path, use: HubUse = RAW_USE,
                    copy: Path | None = None) -> str:
    """The sha256 of a downloaded (or cached) Hub file, after checking its bytes against what the Hub records
    (:func:`hub_record`); a mismatch, or no record, is a StageError naming the file (and both hashes).
    ``copy``: a copy of ``local`` already made, whose bytes are the ones checked (those that will be used)."""
    from hrm.integrity import file_sha256

    want, where = hub_record(repo, revision, filename, local, use)
    again = f"delete {local.resolve()} (the cache's copy) to download it again"
    if want is None:
        raise StageError(f"{local}: its content cannot be verified ({where}); connect to the Hub (unset "
                         f"HF_HUB_OFFLINE), or {again}")
    checked = local if copy is None else copy
    digest = file_sha256(checked)
    got = digest if SHA256.match(want) else git_blob_sha1(checked)
    if got != want.lower():
        raise StageError(f"{local}: content does not match what the Hub records for {filename} (a corrupt or "
                         f"tampered cache): {where} records {want}, the file has {got}; {again}")
    return digest
