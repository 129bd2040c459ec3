"""Issue 30, items 1 and 2: published weights in (`hrm checkpoint fetch` / `import`), verified, with their
provenance, and known to the registry.

Real files to the network boundary: a Hugging Face cache laid out as huggingface_hub lays it out (as
tests/test_raw.py's fake_hub_cache) holding a model repo in the official Hub layout (`checkpoint`,
`all_config.yaml`, a model card), offline; the Hub's API and download faked at huggingface_hub for the
online paths. The weights are the official code's own tiny checkpoint (tests/fixtures/official_tiny_rope),
the fork's run folder is step_N files of it in a git clone whose commit holds their Git LFS pointers, and
the fetched model is evaluated and analysed by the real stages on a tiny real split.
"""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hrm.model.checkpoint import load_checkpoint, step_files
from pipelines.cli import cli
from registry_helpers import FAKE_TOKEN, env_for, sh

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "official_tiny_rope"
REPO_ID = "sapientinc/HRM-checkpoint-sudoku-extreme"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
CARD = "---\nlicense: apache-2.0\n---\n# HRM checkpoint\n"
FORK_STEPS = (40362, 41664, 42966)


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def refused(result, out: Path) -> str:
    """One message, no traceback, nothing written."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert [line[:6] for line in result.output.splitlines()].count("Error:") == 1, result.output
    assert not out.exists()
    return " ".join(result.output.split())


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def fake_model_repo(root: Path, files: dict[str, bytes], sha: str = COMMIT, repo_id: str = REPO_ID,
                    lfs: tuple[str, ...] = ("checkpoint",)) -> Path:
    """A Hugging Face cache holding model repo ``repo_id`` at commit ``sha`` (`main` pointing to it): each file
    of the snapshot a relative link to ``blobs/ETAG``, the etag of an LFS file its sha256, of another its git
    blob id (what the Hub records for each)."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest() if name in lfs else git_blob_id(data)
        (repo / "blobs" / etag).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", etag))
    return root


def hub_files(folder: Path = FIXTURE, card: bool = True) -> dict[str, bytes]:
    """The official Hub repo's layout: the weights as `checkpoint`, all_config.yaml (and a model card)."""
    files = {"checkpoint": (folder / "step_0").read_bytes(), "all_config.yaml": (folder / "all_config.yaml").read_bytes()}
    return {**files, "README.md": CARD.encode()} if card else files


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)  # a user's token: never written anywhere
    hub = fake_model_repo(tmp_path / "hub", hub_files())
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


def snapshot_file(hub: Path, name: str, repo_id: str = REPO_ID) -> Path:
    return hub / ("models--" + repo_id.replace("/", "--")) / "snapshots" / COMMIT / name


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


# ----------------------------------------------------------------------------- fetch


def test_fetch_writes_a_verified_model_folder_with_its_provenance(offline_hub, tmp_path):
    out = tmp_path / "official"
    result = run("checkpoint", "fetch", REPO_ID, "--output", out)
    assert result.exit_code == 0, result.output
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "all_config.yaml", "all_config.yaml.sha256", "provenance.json", "provenance.json.sha256", "step_0",
        "step_0.sha256"]
    assert (folder / "step_0").read_bytes() == (FIXTURE / "step_0").read_bytes()
    record = json.loads((folder / "provenance.json").read_text())
    weights = hashlib.sha256((FIXTURE / "step_0").read_bytes()).hexdigest()
    assert record["origin"] == {"kind": "hub", "repo_id": REPO_ID, "repo_type": "model", "revision": "main",
                                "commit": COMMIT, "url": f"https://huggingface.co/{REPO_ID}/tree/{COMMIT}",
                                "licence": "apache-2.0"}
    assert record["files"]["step_0"] == {"from": "checkpoint", "bytes": (FIXTURE / "step_0").stat().st_size,
                                         "sha256": weights, "checked_against": "hub"}
    assert record["files"]["all_config.yaml"]["from"] == "all_config.yaml"
    assert record["dataset"] == {"tasks": ["sudoku"], "seq_len": 81, "vocab_size": 11, "num_puzzle_identifiers": 3}
    assert record["arch"]["label"] == "HRM"
    assert f"--revision {COMMIT}" in result.output  # main resolved: how to fetch exactly these again
    notes = []
    model = load_checkpoint(out / "checkpoints", device="cpu", note=notes.append)
    assert notes == []  # verified: no "unverified" note
    reference = torch.load(FIXTURE / "step_0", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    assert FAKE_TOKEN.encode() not in all_bytes(out)

    again = run("checkpoint", "fetch", REPO_ID, "--revision", COMMIT, "--output", out)  # its own output: replaced
    assert again.exit_code == 0, again.output
    assert json.loads((folder / "provenance.json").read_text())["origin"]["revision"] == COMMIT
    (out / "notes.txt").write_text("mine")
    text = refused(run("checkpoint", "fetch", REPO_ID, "--output", out), tmp_path / "never")
    assert "refusing to replace this folder" in text and "notes.txt" in text
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("repo_id, rows, seq_len, vocab_size, tasks", [
    ("sapientinc/HRM-checkpoint-sudoku-extreme", 1, 81, 11, ["sudoku"]),
    ("sapientinc/HRM-checkpoint-maze-30x30-hard", 1, 900, 6, ["maze"]),
    ("sapientinc/HRM-checkpoint-ARC-2", 7, 900, 12, ["arc-agi-1", "arc-agi-2"]),
])
def test_each_official_hub_repo_gives_the_dataset_identity_it_needs(repo_id, rows, seq_len, vocab_size, tasks,
                                                                    tmp_path, monkeypatch):
    """The three official repos' layout (`checkpoint`, all_config.yaml without dataset sizes): the task, seq_len,
    vocabulary and puzzle identifiers are read from the tensors (the vocabulary names the task and its length)."""
    from test_checkpoint_dataset import official_checkpoint

    path = official_checkpoint(tmp_path / "official", rows=rows, seq_len=seq_len, vocab_size=vocab_size)
    files = {"checkpoint": path.read_bytes(), "all_config.yaml": (path.parent / "all_config.yaml").read_bytes()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_model_repo(tmp_path / "hub", files, repo_id=repo_id)))
    result = run("checkpoint", "fetch", repo_id, "--output", tmp_path / "o")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "checkpoints" / "provenance.json").read_text())
    assert record["dataset"] == {"tasks": tasks, "seq_len": seq_len, "vocab_size": vocab_size,
                                 "num_puzzle_identifiers": rows}
    assert record["origin"]["repo_id"] == repo_id and record["origin"]["commit"] == COMMIT
    assert f"for {' or '.join(tasks)} (seq_len {seq_len}" in result.output


def test_a_model_card_without_a_licence_and_other_file_names(tmp_path, monkeypatch):
    """No model card: the licence is not recorded (a note says why); weights named step_N keep their name, and
    a `checkpoint` takes the step --as-step gives."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = hub_files(card=False)
    hub = fake_model_repo(tmp_path / "hub", {**files, "step_7": files["checkpoint"]}, lfs=("checkpoint", "step_7"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    result = run("checkpoint", "fetch", REPO_ID, "--file", "step_7", "--file", "checkpoint", "--as-step", "9",
                 "--output", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "the licence is not recorded" in result.output
    record = json.loads((tmp_path / "o" / "checkpoints" / "provenance.json").read_text())
    assert record["origin"]["licence"] is None
    assert {k: v["from"] for k, v in record["files"].items()} == {"step_7": "step_7", "step_9": "checkpoint",
                                                                "all_config.yaml": "all_config.yaml"}


def test_a_tampered_download_is_refused_and_named(offline_hub, tmp_path):
    """The cache's copy changed after download (its etag, the Hub's LFS sha256, kept): refused, naming the
    file and both hashes; nothing written."""
    cached = snapshot_file(offline_hub, "checkpoint")
    want = hashlib.sha256(cached.read_bytes()).hexdigest()
    data = bytearray(cached.resolve().read_bytes())
    data[len(data) // 2] ^= 0x01
    cached.resolve().write_bytes(bytes(data))
    got = hashlib.sha256(data).hexdigest()
    text = refused(run("checkpoint", "fetch", REPO_ID, "--output", tmp_path / "o"), tmp_path / "o")
    assert f"{cached}: content does not match what the Hub records for checkpoint" in text
    assert want in text and got in text
    assert not list(tmp_path.glob(".o.tmp-*"))


def test_online_the_hubs_record_is_what_the_download_is_checked_against(offline_hub, tmp_path, monkeypatch):
    """Online, the Hub's API says what each file at the commit holds (faked at HfApi.get_paths_info; the
    files are cached for that commit, so nothing is downloaded): other bytes than the Hub's are refused."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    monkeypatch.delenv("HF_HUB_OFFLINE")
    records = {name: (hashlib.sha256(data).hexdigest(), git_blob_id(data)) for name, data in hub_files().items()}
    asked = []

    def get_paths_info(self, repo_id, paths, *, revision=None, repo_type=None, **kw):
        asked.append((repo_id, tuple(paths), revision, repo_type))
        return [RepoFile(path=p, size=1, oid=records[p][1],
                         lfs={"size": 1, "oid": records[p][0], "pointerSize": 130} if p == "checkpoint" else None)
                for p in paths]

    monkeypatch.setattr(HfApi, "get_paths_info", get_paths_info)
    result = run("checkpoint", "fetch", REPO_ID, "--revision", COMMIT, "--output", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert {(REPO_ID, (n,), COMMIT, "model") for n in ("checkpoint", "all_config.yaml", "README.md")} <= set(asked)
    records["checkpoint"] = ("f" * 64, records["checkpoint"][1])  # the Hub holds other bytes at that commit
    text = refused(run("checkpoint", "fetch", REPO_ID, "--revision", COMMIT, "--output", tmp_path / "p"),
                   tmp_path / "p")
    assert f"the Hub ({REPO_ID} at {COMMIT}) records {'f' * 64}" in text


def _raiser(error):
    def hf_hub_download(*args, **kw):
        if kw.get("local_files_only"):
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        raise error

    return hf_hub_download


def _http_error(kind, message):
    import httpx2

    return kind(message, response=httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/x")))


def test_unreachable_hub_missing_file_and_wrong_revision_are_one_message_each(tmp_path, monkeypatch):
    """Each failure: one message, naming what was asked and pointing to the offline alternative (import a
    folder downloaded by hand); nothing written. Online failures are faked at hf_hub_download."""
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "o"
    text = refused(run("checkpoint", "fetch", REPO_ID, "--output", out), out)
    assert "could not be reached (offline mode: HF_HUB_OFFLINE is set)" in text
    assert f"checkpoint of model {REPO_ID} at revision main is not in the local cache" in text
    assert "hrm checkpoint import FOLDER" in text

    monkeypatch.delenv("HF_HUB_OFFLINE")
    cases = [
        (_http_error(errors.RevisionNotFoundError, "no such revision"), ("--revision", "v9"),
         f"revision v9 not found in model {REPO_ID}; check --revision"),
        (_http_error(errors.RemoteEntryNotFoundError, "no such file"), ("--file", "weights.pt"),
         f"weights.pt not found in model {REPO_ID} at revision main"),
        (_http_error(errors.RepositoryNotFoundError, "no such repo"), (),
         f"model repo {REPO_ID} not found on the Hugging Face Hub (or it is private or gated); check OWNER/REPO"),
        (OSError("Network is unreachable"), (), "could not be reached (OSError: Network is unreachable)"),
    ]
    for error, args, expected in cases:
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raiser(error))
        text = refused(run("checkpoint", "fetch", REPO_ID, *args, "--output", out), out)
        assert expected in text and "hrm checkpoint import FOLDER" in text, text
    text = refused(run("checkpoint", "fetch", "not-a-repo", "--output", out), out)
    assert "expected a model repo as OWNER/REPO" in text


# ----------------------------------------------------------------------------- import


def fork_clone(root: Path, env: dict, token: str = FAKE_TOKEN) -> Path:
    """The fork's clone after `git lfs pull`: checkpoint_example/ with step_N files (the official tiny
    checkpoint, each step's weights nudged) and all_config.yaml; the commit holds each step_N as its Git LFS
    pointer (oid sha256, size), the work tree the bytes themselves. Its remote URL carries a token."""
    folder = root / "checkpoint_example"
    folder.mkdir(parents=True)
    state = torch.load(FIXTURE / "step_0", weights_only=True)
    shutil.copy(FIXTURE / "all_config.yaml", folder / "all_config.yaml")
    pulled = {}
    for i, step in enumerate(FORK_STEPS):
        nudged = {k: v + i * 1e-3 if v.is_floating_point() else v for k, v in state.items()}
        torch.save(nudged, folder / f"step_{step}")
        data = (folder / f"step_{step}").read_bytes()
        pulled[step] = data
        (folder / f"step_{step}").write_text(f"version https://git-lfs.github.com/spec/v1\n"
                                             f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n")
    sh(root, "git", "init", "-q", "-b", "main", env=env)
    sh(root, "git", "remote", "add", "origin",
       f"https://renrua52:{token}@github.com/renrua52/hrm-mechanistic-analysis.git", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "checkpoints", env=env)
    for step, data in pulled.items():  # what `git lfs pull` puts in the work tree
        (folder / f"step_{step}").write_bytes(data)
    return folder


def test_import_the_forks_run_folder_checked_against_its_commit(tmp_path):
    env = env_for(tmp_path / "home")
    folder = fork_clone(tmp_path / "fork", env)
    commit = sh(folder, "git", "rev-parse", "HEAD", env=env).stdout.strip()
    out = tmp_path / "fork-model"
    result = run("checkpoint", "import", folder, "--output", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "checkpoints" / "provenance.json").read_text())
    assert record["origin"] == {"kind": "folder", "path": str(folder.resolve()), "git": {
        "remote": "https://github.com/renrua52/hrm-mechanistic-analysis.git", "commit": commit,
        "path": "checkpoint_example"}}
    assert {k: v["checked_against"] for k, v in record["files"].items()} == {
        **{f"step_{s}": "git-lfs" for s in FORK_STEPS}, "all_config.yaml": "git-blob"}
    assert FAKE_TOKEN.encode() not in all_bytes(out)
    for step in FORK_STEPS:
        assert (out / "checkpoints" / f"step_{step}").read_bytes() == (folder / f"step_{step}").read_bytes()
        notes = []
        load_checkpoint(out / "checkpoints" / f"step_{step}", device="cpu", note=notes.append)
        assert notes == []

    one = run("checkpoint", "import", folder, "--step", FORK_STEPS[1], "--output", tmp_path / "one")
    assert one.exit_code == 0, one.output
    assert [p.name for _, p in step_files(tmp_path / "one" / "checkpoints")] == [f"step_{FORK_STEPS[1]}"]
    text = refused(run("checkpoint", "import", folder, "--step", 1, "--output", tmp_path / "p"), tmp_path / "p")
    assert "no step_1" in text

    last = folder / f"step_{FORK_STEPS[-1]}"
    data = bytearray(last.read_bytes())
    data[-100] ^= 0x01  # a corrupt download: not the bytes the commit's pointer names
    last.write_bytes(bytes(data))
    text = refused(run("checkpoint", "import", folder, "--output", tmp_path / "p"), tmp_path / "p")
    assert f"{last}: content does not match commit {commit[:12]}" in text
    assert hashlib.sha256(data).hexdigest() in text
    sh(folder, "git", "checkout", "--", last.name, env=env)  # the pointer itself, as before `git lfs pull`
    text = refused(run("checkpoint", "import", folder, "--output", tmp_path / "p"), tmp_path / "p")
    assert f"{last}: a Git LFS pointer, not the file itself: run `git lfs pull`" in text


def test_import_a_folder_outside_git_and_refuse_an_input_as_output(tmp_path):
    folder = tmp_path / "downloaded"
    folder.mkdir()
    for name, data in hub_files(card=False).items():  # the Hub's files, downloaded by hand
        (folder / name).write_bytes(data)
    result = run("checkpoint", "import", folder, "--output", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "not in a git clone" in result.output
    record = json.loads((tmp_path / "o" / "checkpoints" / "provenance.json").read_text())
    assert record["origin"] == {"kind": "folder", "path": str(folder.resolve()), "git": None}
    assert record["files"]["step_0"]["from"] == "checkpoint" and record["files"]["step_0"]["checked_against"] == "none"
    text = refused(run("checkpoint", "import", folder, "--output", folder / "model"), folder / "model")
    assert "must not be the input" in text


# ----------------------------------------------------------------------------- evaluate and analyze


def _official_rows_1(folder: Path) -> dict[str, bytes]:
    """An official-layout checkpoint with one puzzle identifier (as the vanilla Sudoku split has)."""
    from test_checkpoint_dataset import official_checkpoint

    path = official_checkpoint(folder, rows=1)
    return {"checkpoint": path.read_bytes(), "all_config.yaml": (folder / "all_config.yaml").read_bytes(),
            "README.md": CARD.encode()}


def test_a_fetched_model_evaluates_and_analyses_verified_with_its_provenance(tiny_sudoku_shards, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = _official_rows_1(tmp_path / "official")
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_model_repo(tmp_path / "hub", files)))
    model = tmp_path / "model"
    assert run("checkpoint", "fetch", REPO_ID, "--output", model).exit_code == 0
    dataset = tiny_sudoku_shards / json.loads((tiny_sudoku_shards / "datasets.json").read_text())["vanilla"]
    common = ["--dataset", dataset, "--device", "cpu", "--no-progress"]
    evaluate = ["evaluate", "--test-size", 2, "--permutations", 1, "--tiers", "none", *common]
    fetched = run(*evaluate, "--checkpoint", model, "--output", tmp_path / "eval")
    assert fetched.exit_code == 0, fetched.output
    assert "unverified" not in fetched.output
    run_json = json.loads((tmp_path / "eval" / "run.json").read_text())
    step = str(model / "checkpoints" / "step_0")
    assert run_json["checkpoints"] == [step]
    assert run_json["provenance"][step]["origin"]["commit"] == COMMIT
    plain = run(*evaluate, "--checkpoint", tmp_path / "official", "--output", tmp_path / "eval-plain")
    assert plain.exit_code == 0 and "loaded unverified" in plain.output  # the same weights without sidecars
    assert "provenance" not in json.loads((tmp_path / "eval-plain" / "run.json").read_text())
    assert (tmp_path / "eval" / "metrics.json").read_bytes() == (tmp_path / "eval-plain" / "metrics.json").read_bytes()

    analysed = run("analyze", "--sample", 2, "--easy-k", "none", "--shifts", 2, "--noise-runs", 0, "--puzzle-index",
                   "none", *common, "--checkpoint", model, "--output", tmp_path / "analysis")
    assert analysed.exit_code == 0, analysed.output
    assert "unverified" not in analysed.output
    assert json.loads((tmp_path / "analysis" / "run.json").read_text())["provenance"][step]["origin"]["repo_id"] == REPO_ID

    (model / "checkpoints" / "provenance.json").write_text("{}\n")  # edited: refused, named
    text = refused(run(*evaluate, "--checkpoint", model, "--output", tmp_path / "eval-2"), tmp_path / "eval-2")
    assert f"{model / 'checkpoints' / 'provenance.json'}: content does not match its recorded sha256" in text


# ----------------------------------------------------------------------------- the registry


def test_the_registry_lists_imported_models_and_registers_one(offline_hub, tmp_path):
    home = tmp_path / "home"
    env = env_for(home)
    root = tmp_path / "project"
    root.mkdir()
    sh(root, "git", "init", "-q", "-b", "main", env=env)
    sh(root, "git", "config", "user.name", "Registry Test", env=env)
    sh(root, "git", "config", "user.email", "registry@test.invalid", env=env)
    sh(root, "dvc", "init", "-q", env=env)
    (root / "dvc.yaml").write_text("artifacts:\n  hrm-official-sudoku:\n    path: data/models/official\n"
                                   "    type: model\n    desc: the official Sudoku-Extreme checkpoint\n")
    assert run("checkpoint", "fetch", REPO_ID, "--output", root / "data" / "models" / "official").exit_code == 0
    fork = fork_clone(tmp_path / "fork", env)
    assert run("checkpoint", "import", fork, "--output", root / "data" / "models" / "fork").exit_code == 0

    listed = run("registry", "-C", root, "list")
    assert listed.exit_code == 0, listed.output
    assert f"imported:   hf {REPO_ID}@{COMMIT} (revision main; apache-2.0)" in listed.output
    assert "needs:      sudoku: seq_len 81, vocab_size 11, 3 puzzle identifier(s)" in listed.output
    assert ("Imported, not declared in dvc.yaml (declare it to register): data/models/fork  folder "
            f"{fork.resolve()} (https://github.com/renrua52/hrm-mechanistic-analysis.git@") in listed.output

    sh(root, "dvc", "add", "-q", "data/models/official", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "the official checkpoint", env=env)
    registered = run("registry", "-C", root, "register", "hrm-official-sudoku", "1.0.0")
    assert registered.exit_code == 0, registered.output
    shown = json.loads(run("registry", "-C", root, "show", "hrm-official-sudoku@1.0.0", "--json").output)
    record = shown["record"]
    assert record["provenance"]["origin"]["commit"] == COMMIT and record["provenance"]["dataset"]["seq_len"] == 81
    assert {"checkpoints/provenance.json", "checkpoints/provenance.json.sha256",
            "checkpoints/step_0"} <= set(record["files"])
    assert run("registry", "-C", root, "verify", "hrm-official-sudoku").exit_code == 0
    provenance = root / "data" / "models" / "official" / "checkpoints" / "provenance.json"
    provenance.write_text(provenance.read_text().replace("apache-2.0", "mit"))
    bad = run("registry", "-C", root, "verify", "hrm-official-sudoku")
    assert bad.exit_code == 1 and f"{provenance}: content does not match its recorded sha256" in bad.output
    tags = subprocess.run(["git", "-C", str(root), "for-each-ref", "refs/tags", "--format=%(contents)"],
                          capture_output=True, text=True).stdout
    assert "hrm-registry:" in tags and FAKE_TOKEN not in tags
