"""`hrm registry` and the DVC remotes: real git repositories, real DVC, real datasets (tiny).

Versions are GTO tags; the default remote is the repo's own .dvc/config (HOME points into
the test folder); the S3 remote runs against moto's server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.publish import publish
from pipelines.artifacts import content_hash, parse_version, read_versions, version_key
from pipelines.registry import registry
from registry_helpers import (
    HINT, MODEL, REPO, VANILLA, build_datasets, digest_tree, invoke, make_project, ok, replace_datasets,
    sh, write_model,
)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Two builds of the same tiny datasets with different seeds: two contents of each name."""
    root = tmp_path_factory.mktemp("registry-data")
    return {seed: build_datasets(root / f"seed{seed}", seed) for seed in (3, 4)}


@pytest.fixture
def project(tmp_path, built, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # in-process DVC expands ~ of the default remote with it
    root = tmp_path / "origin"
    env = make_project(root, built[3], home)
    return root, env


def reg(root: Path, *args: str):
    return invoke(registry, "-C", root, *args)


def listing(root: Path) -> dict:
    result = reg(root, "list", "--json")
    assert result.exit_code == 0, result.output
    return {a["name"]: a for a in json.loads(result.output)["artifacts"]}


def test_version_strings():
    assert parse_version("1.2.3") == "v1.2.3" and parse_version("v0.1.0-rc.1") == "v0.1.0-rc.1"
    for bad in ("1.0", "v1", "01.0.0", "latest"):
        with pytest.raises(Exception, match="not a semantic version"):
            parse_version(bad)
    order = ["v0.9.0", "v1.0.0-rc.1", "v1.0.0-rc.2", "v1.0.0", "v1.2.0", "v1.10.0", "v2.0.0"]
    assert sorted(reversed(order), key=version_key) == order


def test_the_registry_reads_the_run_summary_where_the_train_stage_writes_it():
    """pipelines.artifacts keeps its own copy of the run folder's summary path (importing the run folder
    would load torch): held here to the train stage's."""
    from pipelines.artifacts import RUN_METRICS
    from pipelines.train_run import LIVE_DIR

    assert RUN_METRICS[0] == f"{LIVE_DIR}/metrics.json"


def test_repo_declares_artifacts_and_an_offline_default_remote():
    """The project's own dvc.yaml and .dvc/config: what a fresh clone gets."""
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    kinds = {name: a["type"] for name, a in artifacts.items()}
    assert kinds["sudoku-builtin-1k-aug-100"] == kinds["sudoku-builtin-1k-aug-100-hint"] == "dataset"
    assert artifacts["hrm"] == {**artifacts["hrm"], "type": "model", "path": "data/models/hrm"}
    for name, a in artifacts.items():
        assert a["desc"] and a["labels"]
        if a["type"] == "dataset":
            assert a["path"] == f"data/datasets/{name}"
    config = (REPO / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = ~/.cache/hrm-pipeline/dvc-remote" in config


def test_register_list_show_and_immutable_versions(project, built):
    root, env = project
    result = reg(root, "register", VANILLA, "1.0.0", "-m", "first")
    assert result.exit_code == 0, result.output
    assert f"Registered {VANILLA}@v1.0.0" in result.output
    # A GTO tag: annotated, NAME@vX.Y.Z, on HEAD, its message holding the record.
    head = sh(root, "git", "rev-parse", "HEAD", env=env).stdout.strip()
    assert sh(root, "git", "cat-file", "-t", f"{VANILLA}@v1.0.0", env=env).stdout.strip() == "tag"
    assert sh(root, "git", "rev-list", "-n1", f"{VANILLA}@v1.0.0", env=env).stdout.strip() == head
    gto = json.loads(sh(root, "gto", "show", "--json", env=env).stdout)  # GTO reads them as its own
    assert gto[VANILLA]["version"] == "v1.0.0" and gto[VANILLA]["registered"]
    record = read_versions(root)[VANILLA][0].record
    first = record["content"]
    assert record["rows"] == {"train": 100, "test": 9} and record["params"]["num_aug"] == 4
    assert record["dvc"]["outs"][0]["path"] == "data/datasets"
    assert first == content_hash({f: {"bytes": i["bytes"], "sha256": i["sha256"]} for f, i in record["files"].items()})

    entry = listing(root)[VANILLA]
    assert [v["version"] for v in entry["versions"]] == ["v1.0.0"]
    version = entry["versions"][0]
    assert version["content"] == first == entry["workspace"]["content"] and entry["workspace"]["matches"] == ["v1.0.0"]
    assert version["rows"] == {"train": 100, "test": 9}
    assert version["params"]["seed"] == 3 and version["source"] == {"source": "csv"}
    assert set(version["built_from"]["raw_files"]) == {"train.parquet", "test.parquet", "stats.json"}
    assert set(version["built_from"]["hints_tables"]) == {"train.arrow", "test.arrow"}
    assert listing(root)[HINT]["versions"] == []
    text = reg(root, "list").output
    assert f"{VANILLA}  [dataset]" in text and "v1.0.0" in text and first[:19] in text and "train 100 rows" in text

    # The same version with the same content: nothing to do, no new tag.
    result = reg(root, "register", VANILLA, "v1.0.0")
    assert result.exit_code == 0 and "already registered with this content" in result.output
    # New content (another seed), committed: v1.0.0 is refused, v1.1.0 is made.
    replace_datasets(root, built[4], env, "seed 4")
    result = reg(root, "register", VANILLA, "1.0.0")
    assert result.exit_code == 1
    assert "immutable" in result.output and first in result.output and "v1.0.1" in result.output
    assert "Traceback" not in result.output
    ok(registry, "-C", root, "register", VANILLA, "1.1.0")
    versions = listing(root)[VANILLA]["versions"]
    assert [v["version"] for v in versions] == ["v1.0.0", "v1.1.0"]
    assert versions[0]["content"] == first != versions[1]["content"]
    assert versions[1]["params"]["seed"] == 4

    shown = json.loads(reg(root, "show", f"{VANILLA}@v1.0.0", "--json").output)
    assert shown["record"]["content"] == first and shown["commit"] == head
    assert "README.md" in shown["record"]["files"]
    text = reg(root, "show", VANILLA).output
    assert f"{VANILLA}@v1.0.0" in text and f"{VANILLA}@v1.1.0" in text and "train/data-00000-of-00002.arrow" in text
    missing = reg(root, "show", f"{VANILLA}@v9.0.0")
    assert missing.exit_code == 1 and "not registered" in missing.output


def test_register_refuses_what_the_commit_does_not_pin(project, built):
    root, env = project
    # A dataset built but not declared in dvc.yaml: told how to declare it.
    result = reg(root, "register", "sudoku-other", "1.0.0")
    assert result.exit_code == 1 and "not declared" in result.output
    # Data changed, not `dvc add`-ed: DVC sees the change.
    card = root / "data" / "datasets" / VANILLA / "README.md"
    card.write_text(card.read_text() + "\nedited\n")
    result = reg(root, "register", VANILLA, "1.0.0")
    assert result.exit_code == 1 and "differs from what DVC recorded" in result.output, result.output
    # `dvc add`-ed, not committed: git sees it.
    sh(root, "dvc", "add", "-q", "data/datasets", env=env)
    result = reg(root, "register", VANILLA, "1.0.0")
    assert result.exit_code == 1 and "commit these first" in result.output and "data/datasets.dvc" in result.output
    assert read_versions(root) == {}


def test_models_record_the_dataset_they_were_trained_on(project):
    root, env = project
    write_model(root, dataset=HINT)
    sh(root, "dvc", "add", "-q", f"data/models/{MODEL}", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "model", env=env)
    ok(registry, "-C", root, "register", MODEL, "1.0.0")  # before its dataset is registered
    ok(registry, "-C", root, "register", HINT, "1.0.0")
    entries = listing(root)
    hint_version = entries[HINT]["versions"][0]
    assert hint_version["models"] == [f"{MODEL}@v1.0.0"]
    assert entries[VANILLA]["workspace"]["models"] == []
    model = entries[MODEL]["versions"][0]
    assert model["checkpoints"] == ["step_10"] and model["latest_step"] == 10
    assert model["dataset"]["name"] == HINT and model["dataset"]["content"] == hint_version["content"]
    assert model["dataset"]["versions"] == [f"{HINT}@v1.0.0"]
    assert model["metrics"]["eval"]["exact_accuracy"] == 0.25
    text = reg(root, "show", f"{MODEL}@v1.0.0").output
    assert f"trained on: {HINT}" in text and f"{HINT}@v1.0.0" in text and "checkpoints/step_10" in text
    text = reg(root, "show", f"{HINT}@v1.0.0").output
    assert f"models:     {MODEL}@v1.0.0" in text


def test_a_model_lists_the_dataset_build_it_needs(project, built):
    """The model's all_config.yaml records the build it was trained on (trained_on, hrm.model.coupling): the registry
    lists which dataset version that is, also after the workspace's dataset was rebuilt as another build."""
    from hrm.manifest import dataset_identity, read_manifest

    root, env = project
    dataset = root / "data" / "datasets" / HINT
    trained_on = dataset_identity(dataset, read_manifest(dataset)).record()
    config = write_model(root, dataset=HINT) / "checkpoints" / "all_config.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "trained_on": trained_on}, sort_keys=False))
    sh(root, "dvc", "add", "-q", f"data/models/{MODEL}", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "model", env=env)
    ok(registry, "-C", root, "register", MODEL, "1.0.0")
    ok(registry, "-C", root, "register", HINT, "1.0.0")
    model = listing(root)[MODEL]["versions"][0]
    assert model["dataset"]["trained_on"] == trained_on and model["dataset"]["needs"] == [f"{HINT}@v1.0.0"]
    assert model["dataset"]["manifest_sha256"] == trained_on["manifest_sha256"]
    need = f"needs:      {HINT} manifest sha256 {trained_on['manifest_sha256'][:12]}, 1 puzzle identifier ({HINT}@v1.0.0)"
    assert need in reg(root, "show", f"{MODEL}@v1.0.0").output
    assert need + "\n" in reg(root, "list").output

    replace_datasets(root, built[4], env, "seed 4")  # data_path now holds another build
    ok(registry, "-C", root, "register", HINT, "1.1.0")
    entry = listing(root)[MODEL]
    assert entry["workspace"]["dataset"]["needs"] == [f"{HINT}@v1.0.0"]
    assert entry["workspace"]["dataset"]["versions"] == [f"{HINT}@v1.1.0"]
    assert f"{need}; data/datasets/{HINT} now holds another build" in reg(root, "list").output


def test_verify_names_every_corrupt_missing_or_stray_file(project):
    root, env = project
    ok(registry, "-C", root, "register", HINT, "1.0.0")
    result = ok(registry, "-C", root, "verify", HINT)
    assert f"OK {HINT}" in result.output and "= v1.0.0" in result.output
    dataset = root / "data" / "datasets" / HINT
    shards = sorted((dataset / "train").glob("*.arrow"))
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    shards[1].unlink()
    (dataset / "train" / "extra.arrow").write_bytes(b"stray")
    result = reg(root, "verify", HINT)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "3 problem(s)" in result.output
    assert f"{shards[0]}: sha256" in result.output and "corrupt or modified" in result.output
    assert f"{shards[1]}: missing" in result.output
    assert "extra.arrow: not in the manifest" in result.output
    # Shards intact again, the card edited: the files pass, the version does not.
    sh(root, "dvc", "checkout", "-q", "--force", "data/datasets", env=env)
    (dataset / "train" / "extra.arrow").unlink(missing_ok=True)
    ok(registry, "-C", root, "verify", HINT)
    (dataset / "README.md").write_text("# edited\n")
    result = ok(registry, "-C", root, "verify", HINT)
    assert "not a registered version" in result.output
    result = reg(root, "verify", f"{HINT}@v1.0.0")
    assert result.exit_code == 1 and "README.md: differs from" in result.output


def test_verify_model_files(project):
    root, env = project
    model = write_model(root)
    ok(registry, "-C", root, "verify", MODEL)
    (model / "checkpoints" / "step_10").unlink()
    result = reg(root, "verify", MODEL)
    assert result.exit_code == 1 and "no step_N checkpoint" in result.output


def test_push_pull_round_trip_in_fresh_clones(project, built, tmp_path):
    """`dvc push` to the default remote, fresh clones: `dvc pull` gives identical bytes, and any
    registered version can be fetched (`hrm registry get`, `dvc artifacts get`)."""
    root, env = project
    ok(registry, "-C", root, "register", VANILLA, "1.0.0")
    sh(root, "dvc", "push", "-q", env=env)
    remote = tmp_path / "home" / ".cache" / "hrm-pipeline" / "dvc-remote"
    assert any(remote.rglob("*")), "the default remote is ~/.cache/hrm-pipeline/dvc-remote"
    first = digest_tree(root / "data" / "datasets")
    replace_datasets(root, built[4], env, "seed 4")
    ok(registry, "-C", root, "register", VANILLA, "1.1.0")
    sh(root, "dvc", "push", "-q", env=env)  # the remote keeps every pushed version
    second = digest_tree(root / "data" / "datasets")
    assert first != second

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(root), str(clone), env=env)
    assert not (clone / "data" / "datasets").exists()
    sh(clone, "dvc", "pull", "-q", env=env)
    assert digest_tree(clone / "data" / "datasets") == second
    result = ok(registry, "-C", clone, "verify", VANILLA)
    assert "= v1.1.0" in result.output
    assert listing(clone)[VANILLA]["workspace"]["matches"] == ["v1.1.0"]

    # Another fresh clone, nothing pulled: fetch the older version from the remote.
    bare = tmp_path / "clone2"
    sh(tmp_path, "git", "clone", "-q", str(root), str(bare), env=env)
    out = tmp_path / "v1.0.0"
    result = ok(registry, "-C", bare, "get", f"{VANILLA}@v1.0.0", "-o", out)
    assert "Fetched" in result.output
    fetched = digest_tree(out)
    assert fetched.pop(".hrm-record.json")  # what `hrm registry get` wrote there, so a later --force may replace it
    assert fetched == {k.split("/", 1)[1]: v for k, v in first.items() if k.startswith(f"{VANILLA}/")}
    # `hrm publish NAME@VERSION` of a version the workspace does not hold fetches it the same way.
    folder = tmp_path / "to-upload"
    result = ok(publish, f"{VANILLA}@1.0.0", "--repo-id", "me/x", "--dry-run", "--save-folder", folder, "-C", bare)
    assert "fetching it with DVC" in result.output and "Would publish" in result.output
    assert (folder / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    # The DVC ecosystem's own command reads the same tags.
    sh(bare, "dvc", "artifacts", "get", ".", VANILLA, "--rev", "v1.1.0", "-o", str(tmp_path / "v1.1.0"), env=env)
    assert digest_tree(tmp_path / "v1.1.0") == {k.split("/", 1)[1]: v for k, v in second.items()
                                                if k.startswith(f"{VANILLA}/")}


@pytest.mark.slow
def test_s3_remote_against_moto_server(project, tmp_path, monkeypatch):
    """The documented S3 configuration (docs/registry.md) against moto's S3 server on loopback."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed (pip install dvc-s3)")
    moto_server = pytest.importorskip("moto.server", reason="moto[s3] + flask + flask-cors are not installed")
    boto3 = pytest.importorskip("boto3", reason="boto3 (with moto) is not installed")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}
        for k, v in creds.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="hrm-dvc")
        root, env = project
        env = {**env, **creds}
        # Committed: the remote's name and bucket; per clone (--local): the endpoint.
        sh(root, "dvc", "remote", "add", "s3", "s3://hrm-dvc/hrm-pipeline", env=env)
        sh(root, "git", "commit", "-qam", "s3 remote", env=env)
        sh(root, "dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint, env=env)
        sh(root, "dvc", "push", "-q", "-r", "s3", env=env)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="hrm-dvc").get("Contents", [])]
        assert keys and all(k.startswith("hrm-pipeline/files/md5/") for k in keys)

        clone = tmp_path / "s3-clone"
        sh(tmp_path, "git", "clone", "-q", str(root), str(clone), env=env)
        sh(clone, "dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint, env=env)
        sh(clone, "dvc", "pull", "-q", "-r", "s3", env=env)
        assert digest_tree(clone / "data" / "datasets") == digest_tree(root / "data" / "datasets")
        assert "testing" not in (clone / ".dvc" / "config").read_text()  # credentials stay in the environment
    finally:
        server.stop()


def test_registry_outside_a_project(tmp_path):
    result = invoke(registry, "-C", tmp_path, "list")
    assert result.exit_code == 1 and "not inside a DVC project" in result.output


def test_gto_tag_names_are_parsed_like_gto(project):
    """Deregistration tags (GTO's NAME@vX.Y.Z!#N) mark a version; other tags are ignored."""
    root, env = project
    ok(registry, "-C", root, "register", VANILLA, "1.0.0")
    sh(root, "git", "tag", "-a", f"{VANILLA}@v1.0.0!#1", "-m", "Deregistering", env=env)
    sh(root, "git", "tag", "release-2025", env=env)
    versions = read_versions(root)
    assert list(versions) == [VANILLA] and versions[VANILLA][0].deregistered
    assert listing(root)[VANILLA]["versions"][0]["deregistered"] is True


# --------------------------------------------------------------------------- issue 26: records, versions, get


def test_a_malformed_tag_record_is_one_message_naming_the_tag_and_key(project):
    """A tag whose hrm-registry record has a key of the wrong type: `show`, `verify`, `get` and `list`
    each say so in one message naming the tag and the key, no traceback."""
    root, env = project
    ok(registry, "-C", root, "register", VANILLA, "1.0.0")
    record = dict(read_versions(root)[VANILLA][0].record)
    record["files"] = {"README.md": {"bytes": "12", "sha256": "x"}}
    tag = f"{VANILLA}@v2.0.0"
    sh(root, "git", "tag", "-a", tag, "-m", f"Registering\n\nhrm-registry: {json.dumps(record)}", env=env)
    for args in (["show", VANILLA], ["show", tag], ["verify", tag], ["get", tag, "-o", root.parent / "got"],
                 ["list"]):
        result = reg(root, *args)
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        assert result.output.count("Error:") == 1 and f"tag {tag}: " in result.output, (args, result.output)
        assert "key files.README.md.bytes" in result.output and "key files.README.md.sha256" in result.output
    assert not (root.parent / "got").exists()


def test_build_metadata_is_the_same_version(project, built):
    """SemVer: 1.0.0+build is 1.0.0. Registering it with other content is refused as a re-registration of
    v1.0.0; with the same content it is already there."""
    root, env = project
    ok(registry, "-C", root, "register", VANILLA, "1.0.0")
    result = reg(root, "register", VANILLA, "1.0.0+build.7")
    assert result.exit_code == 0 and "already registered with this content" in result.output, result.output
    replace_datasets(root, built[4], env, "seed 4")
    result = reg(root, "register", VANILLA, "1.0.0+build.7")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{VANILLA}@v1.0.0 already exists (v1.0.0+build.7 is the same version" in result.output
    assert "immutable" in result.output
    assert [v.version for v in read_versions(root)[VANILLA]] == ["v1.0.0"]


def test_get_of_corrupt_bytes_leaves_nothing_at_the_output(project, tmp_path):
    """The DVC cache holding a flipped byte of the registered dataset: `hrm registry get -o DIR` refuses
    the fetched content and leaves nothing at DIR (nor a temporary beside it)."""
    root, env = project
    ok(registry, "-C", root, "register", VANILLA, "1.0.0")
    cache = root / ".dvc" / "cache"
    for obj in [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".dir")]:
        obj.chmod(0o644)
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0x01
        obj.write_bytes(bytes(data))
    got = tmp_path / "fetched"
    got.mkdir()
    out = got / "v1"
    result = reg(root, "get", f"{VANILLA}@v1.0.0", "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{out}: fetched content" in result.output and "nothing was written" in result.output
    assert list(got.iterdir()) == []
