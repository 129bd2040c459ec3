"""`hrm publish`: the dataset card, the dry run, the folder it uploads (read back with
`datasets`), and the upload itself against a local fake Hub (HF_ENDPOINT on 127.0.0.1, the
real huggingface_hub client, no network). The token never lands in a file or a log."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pytest
import yaml

from pipelines.publish import publish
from pipelines.artifacts import read_versions
from pipelines.registry import registry
from registry_helpers import FAKE_TOKEN, HINT, REPO, VANILLA, build_datasets, invoke, make_project, ok

REPO_ID = "hrm-test/sudoku-tiny"


# --------------------------------------------------------------------------- a local Hub


class FakeHub:
    """The Hub endpoints one `hrm publish` uses, in memory: create repo, refs, tree, validate-yaml,
    preupload (every file "regular", so the commit carries the bytes), commit, tag."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.requests: list[tuple[str, str, bool]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seed(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos[repo_id] = {"visibility": "public", "files": dict(files), "head": "0" * 40, "tags": {}}

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while (size := int(self.rfile.readline().strip() or b"0", 16)):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                body = self._body() if method == "POST" else b""
                path = unquote(urlparse(self.path).path)
                authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
                hub.requests.append((method, path, authorized))
                if not authorized:
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                if method == "POST" and path == "/api/repos/create":
                    spec = json.loads(body)
                    repo_id = f"{spec['organization']}/{spec['name']}"
                    assert spec.get("type") == "dataset", spec
                    if repo_id in hub.repos:
                        return self._send(409, {"error": "You already created this dataset repo",
                                                "url": f"{hub.url}/datasets/{repo_id}"})
                    hub.seed(repo_id, {".gitattributes": b"*.arrow filter=lfs\n"})
                    hub.repos[repo_id]["visibility"] = spec.get("visibility", "public")
                    return self._send(200, {"url": f"{hub.url}/datasets/{repo_id}"})
                if method == "POST" and path == "/api/validate-yaml":
                    return self._send(200, {})
                parts = path.split("/")  # /api/datasets/OWNER/NAME/ACTION/REV...
                if len(parts) < 6 or parts[:3] != ["", "api", "datasets"]:
                    return self._send(404, {"error": f"unknown route {path}"})
                repo_id, action, rest = f"{parts[3]}/{parts[4]}", parts[5], "/".join(parts[6:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._send(404, {"error": "Repository not found"})
                if method == "GET" and action == "refs":
                    return self._send(200, {
                        "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo["head"]}],
                        "converts": [],
                        "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo["tags"].items()],
                    })
                if method == "GET" and action == "tree":
                    return self._send(200, [
                        {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for p, b in sorted(repo["files"].items())])
                if method == "POST" and action == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if method == "POST" and action == "commit":
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    header = lines[0]["value"]
                    ops = []
                    for item in lines[1:]:
                        value = item["value"]
                        if item["key"] == "file":
                            repo["files"][value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "deletedFile":
                            repo["files"].pop(value["path"], None)
                        ops.append((item["key"], value["path"]))
                    oid = hashlib.sha1(f"{repo['head']}{len(hub.commits)}".encode()).hexdigest()
                    repo["head"] = oid
                    hub.commits.append({"repo": repo_id, "oid": oid, "summary": header["summary"],
                                        "description": header.get("description"), "ops": ops,
                                        "revision": rest})
                    return self._send(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}",
                                            "commitOid": oid})
                if method == "POST" and action == "tag":
                    tag = json.loads(body)["tag"]
                    if tag in repo["tags"]:
                        return self._send(409, {"error": "tag exists"})
                    repo["tags"][tag] = rest
                    return self._send(200, {})
                return self._send(404, {"error": f"unknown route {method} {path}"})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        return Handler


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A project with the hint dataset registered as v1.0.0."""
    base = tmp_path_factory.mktemp("publish")
    datasets = build_datasets(base / "build", seed=3)
    home = base / "home"
    home.mkdir()
    root = base / "origin"
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        make_project(root, datasets, home)
        ok(registry, "-C", root, "register", HINT, "1.0.0")
    finally:
        if old is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old
    return {"root": root, "home": home, "base": base}


@pytest.fixture
def hub():
    server = FakeHub(FAKE_TOKEN)
    yield server
    server.close()


def run_publish(root: Path, home: Path, *args: str, token: str | None = FAKE_TOKEN, endpoint: str | None = None,
                offline: bool = False, debug: bool = False):
    """`hrm publish` in its own process, as a user runs it (HF_* from the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_TELEMETRY="1",
               DVC_NO_ANALYTICS="1", PYTHONPATH=str(REPO))
    if debug:  # huggingface_hub's own request logs, to scan them for the token too
        env["HF_HUB_VERBOSITY"] = "debug"
    if token is not None:
        env["HF_TOKEN"] = token
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    code = "import sys; from pipelines.publish import publish; publish(sys.argv[1:], prog_name='hrm publish')"
    return subprocess.run([sys.executable, "-c", code, *args, "-C", str(root)], capture_output=True, text=True,
                          env=env, cwd=root)


def read_rows(folder: Path, split: str) -> pa.Table:
    files = sorted((folder / split).glob("*.arrow"))
    return pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files])


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


# --------------------------------------------------------------------------- tests


def test_dry_run_prints_files_and_sizes(published):
    root = published["root"]
    result = invoke(publish, HINT, "--repo-id", REPO_ID, "--dry-run", "-C", root)
    assert result.exit_code == 0, result.output
    dataset = root / "data" / "datasets" / HINT
    manifest = json.loads((dataset / "manifest.json").read_text())
    shards = [s for info in manifest["splits"].values() for s in info["shards"]]
    assert f"Would publish {HINT}@v1.0.0 to {REPO_ID}" in result.output and "tag v1.0.0" in result.output
    for shard in shards:
        assert f"{shard['file']}" in result.output and f"{shard['bytes']:,} B" in result.output
    size = (dataset / "manifest.json").stat().st_size
    assert "manifest.json" in result.output and f"{size:,} B" in result.output
    lines = [line.split() for line in result.output.splitlines() if line.startswith("  ")]
    assert [line[0] for line in lines] == ["README.md", "manifest.json", *[s["file"] for s in shards], "total"]
    total = sum(int(line[1].replace(",", "")) for line in lines[:-1])
    assert int(lines[-1][1].replace(",", "")) == total
    assert "nothing uploaded" in result.output


def test_published_folder_loads_with_datasets(published, tmp_path):
    """The folder the commit would create: `datasets.load_dataset(folder)` (and streaming) give
    the shards' rows; the card has the required sections; the manifest is byte for byte the registered one."""
    from datasets import load_dataset

    root = published["root"]
    folder = tmp_path / "upload"
    ok(publish, HINT, "--repo-id", REPO_ID, "--dry-run", "--save-folder", folder, "-C", root)
    dataset = root / "data" / "datasets" / HINT
    assert (folder / "manifest.json").read_bytes() == (dataset / "manifest.json").read_bytes()
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        [".hrm-record.json", "README.md", "manifest.json",  # the record: what `hrm publish` wrote there
         *[p.relative_to(dataset).as_posix() for p in dataset.rglob("*.arrow")]])

    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["configs"][0]["data_files"] == [{"split": "test", "path": "test/*.arrow"},
                                                {"split": "train", "path": "train/*.arrow"}]
    assert meta["license"] == "other" and meta["size_categories"] == ["n<1K"]
    record = read_versions(root)[HINT][0].record
    for needed in ("2506.21734", "2601.10679", "Hierarchical Reasoning Model",
                   "Are Your Reasoning Models Reasoning or Guessing?", "## License", "## How it was built",
                   "| `num_aug` | 4 |", "| train | 200 |", "v1.0.0", record["content"], "user-supplied CSV"):
        assert needed in card, needed

    cache = tmp_path / "hf-cache"
    loaded = load_dataset(str(folder), cache_dir=str(cache))
    streamed = load_dataset(str(folder), streaming=True)
    for split in ("train", "test"):
        want = read_rows(dataset, split).to_pylist()
        assert loaded[split].to_list() == want
        assert list(streamed[split]) == want


def test_card_license_follows_the_source():
    from hrm.tasks import SUDOKU
    from pipelines.publish import license_of

    assert license_of({"source": "builtin"}, SUDOKU)[0] == "apache-2.0"
    lic, text = license_of({"source": "hf", "hf_repo": "sapientinc/sudoku-extreme", "resolved_sha": "abc123"}, SUDOKU)
    assert lic == "other" and "sapientinc/sudoku-extreme" in text and "abc123" in text


def test_publish_to_a_local_hub_one_commit_then_tag(published, hub, tmp_path):
    root, home = published["root"], published["home"]
    stale = "train/data-00009-of-00009.arrow"  # left by an older version: deleted in the same commit
    hub.seed(REPO_ID, {".gitattributes": b"*.arrow filter=lfs\n", stale: b"old", "README.md": b"old card"})
    saved = tmp_path / "saved"
    proc = run_publish(root, home, HINT, "--repo-id", REPO_ID, "--save-folder", str(saved), endpoint=hub.url,
                       debug=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Published {HINT}@v1.0.0" in proc.stdout
    assert "/commit/main" in proc.stderr  # debug logs were on

    assert len(hub.commits) == 1
    commit = hub.commits[0]
    dataset = root / "data" / "datasets" / HINT
    expected = sorted(["README.md", "manifest.json",
                       *[p.relative_to(dataset).as_posix() for p in dataset.rglob("*.arrow")]])
    assert sorted(p for key, p in commit["ops"] if key == "file") == expected
    assert [p for key, p in commit["ops"] if key == "deletedFile"] == [stale]
    assert commit["summary"] == f"{HINT} v1.0.0" and commit["revision"] == "main"
    files = hub.repos[REPO_ID]["files"]
    assert sorted(files) == sorted([".gitattributes", *expected])
    for name in expected:
        want = (saved / name).read_bytes()
        assert files[name] == want, name
        if name != "README.md":
            assert want == (dataset / name).read_bytes()
    assert hub.repos[REPO_ID]["tags"] == {"v1.0.0": commit["oid"]}
    assert all(authorized for _, _, authorized in hub.requests)  # the token from HF_TOKEN was sent

    # The token is nowhere: not in the output, nor in any file written (project, HOME, folder).
    needle = FAKE_TOKEN.encode()
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    assert files_containing(published["base"], needle) == []
    assert files_containing(tmp_path, needle) == []
    assert all(needle not in b for b in files.values())
    tags = subprocess.run(["git", "for-each-ref", "refs/tags", "--format=%(contents)"], cwd=root,
                          capture_output=True, text=True).stdout
    assert "hrm-registry:" in tags and FAKE_TOKEN not in tags  # git objects are compressed: read them back

    # The Hub's tag is immutable too.
    again = run_publish(root, home, HINT, "--repo-id", REPO_ID, endpoint=hub.url)
    assert again.returncode == 1 and "already has tag v1.0.0" in again.stderr and len(hub.commits) == 1
    # A new repository, private: created so, then the same one commit and tag.
    other = "hrm-test/sudoku-private"
    proc = run_publish(root, home, f"{HINT}@1.0.0", "--repo-id", other, "--private", endpoint=hub.url, debug=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert hub.repos[other]["visibility"] == "private" and list(hub.repos[other]["tags"]) == ["v1.0.0"]
    assert len(hub.commits) == 2 and FAKE_TOKEN not in proc.stdout + proc.stderr


def test_auth_failure_is_one_clear_message(published, hub):
    hub.token = "hf_theRightTokenIsAnotherOne"
    proc = run_publish(published["root"], published["home"], HINT, "--repo-id", REPO_ID, endpoint=hub.url)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), proc.stderr
    assert "refused the credentials (HTTP 401)" in errors[0] and "HF_TOKEN" in errors[0]
    assert "Traceback" not in proc.stderr and FAKE_TOKEN not in proc.stdout + proc.stderr
    assert hub.commits == []


def test_no_token_or_offline_is_one_clear_message(published, hub):
    proc = run_publish(published["root"], published["home"], HINT, "--repo-id", REPO_ID, token=None,
                       endpoint=hub.url)
    assert proc.returncode == 1 and "no Hugging Face token" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_publish(published["root"], published["home"], HINT, "--repo-id", REPO_ID, endpoint=hub.url,
                       offline=True)
    assert proc.returncode == 1 and "HF_HUB_OFFLINE is set" in proc.stderr and "Traceback" not in proc.stderr
    assert hub.requests == []


def test_publish_needs_a_registered_dataset_version(published):
    root = published["root"]
    result = invoke(publish, VANILLA, "--repo-id", REPO_ID, "--dry-run", "-C", root)
    assert result.exit_code == 1 and "no registered version" in result.output
    result = invoke(publish, HINT, "--repo-id", "not-a-repo-id", "--dry-run", "-C", root)
    assert result.exit_code == 1 and "OWNER/NAME" in result.output
