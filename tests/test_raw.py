"""`hrm raw`: builtin, csv and hf sources, real files, real CLI runs."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import REAL_SUDOKU as REAL
from pipelines.cli import cli
from pipelines.raw import DEFAULT_HF_REPO, DEFAULT_HF_REVISION, derive_seeds
from hrm.tasks import SUDOKU
from schemas.raw import RAW_COLUMNS, raw_validator

validate_raw = raw_validator(SUDOKU)

FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def valid() -> pl.DataFrame:
    return pl.read_csv(REAL / "valid.csv", infer_schema=False)


def run(*args: str):
    return CliRunner().invoke(cli, ["raw", *args], catch_exceptions=False)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def write_split_csvs(directory: Path, train: pl.DataFrame, test: pl.DataFrame) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    train.write_csv(directory / "train.csv")
    test.write_csv(directory / "test.csv")
    return directory


def assert_raw_table(path: Path) -> pl.DataFrame:
    table = pl.read_parquet(path)
    assert table.columns == list(RAW_COLUMNS)
    assert table.schema["rating"] == pl.Int64
    assert validate_raw(table, check_unique=False).ok
    return table


# ----------------------------------------------------------------------------- builtin


def test_builtin_is_deterministic(tmp_path):
    args = ["--train-size", "40", "--test-size", "15", "--seed", "3"]
    first = run(*args, "--output", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    assert run(*args, "--output", str(tmp_path / "b")).exit_code == 0
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert sorted(a) == [".hrm-record.json", "metrics.json", "stats.json", "test.parquet", "train.parquet"]
    assert a == b  # byte-identical Parquet files and stats
    other = run("--train-size", "40", "--test-size", "15", "--seed", "4", "--output", str(tmp_path / "c"))
    assert other.exit_code == 0
    assert files_of(tmp_path / "c")["train.parquet"] != a["train.parquet"]

    train = assert_raw_table(tmp_path / "a" / "train.parquet")
    test = assert_raw_table(tmp_path / "a" / "test.parquet")
    assert (train.height, test.height) == (40, 15)
    assert set(train["source"]) == {"builtin"}
    assert validate_raw(train, check_unique=True).ok  # generated puzzles are well-posed
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["source"] == "builtin" and stats["check_unique"] is True
    assert stats["splits"]["train"]["rows"] == 40 and stats["splits"]["test"]["rows"] == 15
    assert stats["splits"]["train"]["distribution"]["count"] == 40
    assert "histogram" in stats["splits"]["test"]["distribution"]["blanks"]
    assert stats["builtin"]["split_seeds"] == derive_seeds(3)
    headline = json.loads((tmp_path / "a" / "metrics.json").read_text())  # what `dvc metrics show` compares
    assert headline["train"] == {"puzzles": 40, "rejected": 0, "blanks_mean": stats["splits"]["train"]["distribution"]["blanks"]["mean"],
                                 "rating_mean": stats["splits"]["train"]["distribution"]["rating"]["mean"]}
    assert headline["test"]["puzzles"] == 15 and headline["questions_in_both_splits"] == 0
    assert derive_seeds(3)["train"] != derive_seeds(3)["test"]
    # the log names what was written
    assert "train.parquet: 40 rows" in first.output


def test_builtin_respects_blank_and_rating_bounds(tmp_path):
    result = run("--train-size", "20", "--test-size", "5", "--min-blanks", "50", "--min-rating", "1",
                 "--output", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    train = assert_raw_table(tmp_path / "o" / "train.parquet")
    assert (train["question"].str.count_matches(".", literal=True) >= 50).all()
    assert (train["rating"] >= 1).all()


# ----------------------------------------------------------------------------- csv


def test_csv_source_computes_empty_ratings(valid, tmp_path):
    src = write_split_csvs(
        tmp_path / "in",
        valid.head(30).with_columns(pl.lit(None, dtype=pl.String).alias("rating")),
        valid.tail(9).drop("rating"),  # no rating column at all
    )
    result = run("--source", "csv", "--input", str(src), "--output", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    train = assert_raw_table(tmp_path / "o" / "train.parquet")
    test = assert_raw_table(tmp_path / "o" / "test.parquet")
    assert train["rating"].null_count() == 0 and (train["rating"] >= 0).all()
    # hrm.solver.rate agrees with tdoku on most of these puzzles
    computed = pl.concat([train, test])["rating"].to_list()
    agree = sum(c == int(r) for c, r in zip(computed, valid["rating"]))
    assert agree >= 30
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["csv"]["ratings_computed"] == {"train": 30, "test": 9}
    assert stats["questions_in_both_splits"] == 0


@pytest.fixture()
def bad_split(valid) -> pl.DataFrame:
    rows = valid.head(10).to_dicts()
    rows[2]["question"] = rows[2]["question"][:80]
    rows[5]["answer"] = rows[6]["answer"]
    rows[7]["rating"] = "-1"
    return pl.DataFrame(rows)


def test_invalid_csv_fails_and_keeps_earlier_output(valid, bad_split, tmp_path):
    out = tmp_path / "o"
    good = write_split_csvs(tmp_path / "good", valid.head(30), valid.tail(9))
    assert run("--source", "csv", "--input", str(good), "--output", str(out)).exit_code == 0
    before = files_of(out)

    bad = write_split_csvs(tmp_path / "bad", bad_split, valid.tail(9))
    result = run("--source", "csv", "--input", str(bad), "--output", str(out))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert str(bad / "train.csv") in result.output
    for line in ("row 2, question: expected 81 characters, got 80",
                 "row 5, answer: disagrees with the question's given",
                 "row 7, rating: negative rating -1",
                 "--on-invalid drop"):
        assert line in result.output
    assert files_of(out) == before  # byte-identical, nothing added
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_on_invalid_drop_writes_rejected_rows(valid, bad_split, tmp_path):
    src = write_split_csvs(tmp_path / "in", bad_split, valid.tail(9))
    out = tmp_path / "o"
    result = run("--source", "csv", "--input", str(src), "--output", str(out), "--on-invalid", "drop")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".hrm-record.json", "metrics.json", "rejected-train.parquet",
                                                     "stats.json", "test.parquet", "train.parquet"]
    train = assert_raw_table(out / "train.parquet")
    assert train.height == 7
    rejected = pl.read_parquet(out / "rejected-train.parquet")
    assert rejected.columns == [*RAW_COLUMNS, "row", "reason"]
    assert rejected["row"].to_list() == [2, 5, 7]
    assert rejected["reason"][0] == "question: expected 81 characters, got 80"
    assert rejected["reason"][2] == "rating: negative rating -1"
    assert rejected["question"][0] == bad_split["question"][2]  # the row as it was
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["train"]["rejected"] == 3 and stats["splits"]["train"]["rows"] == 7
    assert "dropped 3 invalid train rows" in result.output


def test_uniqueness_check_rejects_ill_posed_csv_rows(valid, tmp_path):
    """A question with several solutions, given a correct answer, is caught only by --check-unique."""
    from hrm.solver import solve
    from hrm.sudoku import grids_to_strings, strings_to_grids

    several = pl.read_csv(REAL / "no-unique-solution.csv", infer_schema=False).filter(pl.col("solutions") == "several")
    answers = grids_to_strings(solve(strings_to_grids(several["question"].to_list())).solution)
    ill = several.select("source", "question", pl.Series("answer", answers), pl.lit("3").alias("rating"))
    src = write_split_csvs(tmp_path / "in", pl.concat([valid.head(5), ill]), valid.tail(5))
    result = run("--source", "csv", "--input", str(src), "--output", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert result.output.count("question: has several solutions") == ill.height
    relaxed = run("--source", "csv", "--input", str(src), "--output", str(tmp_path / "o"), "--no-check-unique")
    assert relaxed.exit_code == 0, relaxed.output


def test_refuses_to_replace_a_directory_with_other_files(valid, tmp_path):
    src = write_split_csvs(tmp_path / "in", valid.head(5), valid.tail(5))
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run("--source", "csv", "--input", str(src), "--output", str(out))
    assert result.exit_code == 1 and "refusing to replace" in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_keeps_the_gitignore_dvc_writes_beside_its_outputs(valid, tmp_path):
    src = write_split_csvs(tmp_path / "in", valid.head(5), valid.tail(5))
    out = tmp_path / "o"
    assert run("--source", "csv", "--input", str(src), "--output", str(out)).exit_code == 0
    (out / ".gitignore").write_text("/train.parquet\n/test.parquet\n")
    assert run("--source", "csv", "--input", str(src), "--output", str(out)).exit_code == 0
    assert (out / ".gitignore").read_text() == "/train.parquet\n/test.parquet\n"


def test_missing_input_is_a_clear_error(tmp_path):
    result = run("--source", "csv", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"))
    assert result.exit_code == 1 and "train.csv: file not found" in result.output
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- hf (up to the network)


def fake_hub_cache(root: Path, valid: pl.DataFrame, sha: str = FAKE_SHA, repo_id: str = DEFAULT_HF_REPO,
                   train: int = 30, test: int = 9) -> Path:
    """A cache laid out like huggingface_hub's, holding ``repo_id`` (sapientinc/sudoku-extreme) at
    ``sha``, `main` pointing to it: the first ``train`` rows of ``valid`` as train.csv, the last ``test``.
    As huggingface_hub lays it out, each file of the snapshot links to ``blobs/ETAG``, an LFS file's etag
    being its sha256 (what the Hub records for it)."""
    repo = root / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    publish(snapshot, "train.csv", valid.head(train))
    publish(snapshot, "test.csv", valid.tail(test))
    return root


def publish(snapshot: Path, name: str, table: pl.DataFrame) -> str:
    """``table`` as the CSV file ``name`` of the Hub's snapshot: its blob named by its sha256 (the LFS
    etag), the snapshot's entry a relative link to it. Returns the sha256."""
    data = table.write_csv().encode()
    digest = hashlib.sha256(data).hexdigest()
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(exist_ok=True)
    (blobs / digest).write_bytes(data)
    (snapshot / name).unlink(missing_ok=True)
    (snapshot / name).symlink_to(Path("..", "..", "blobs", digest))
    return digest


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return monkeypatch


def test_hf_source_from_cache(valid, tmp_path, offline):
    offline.setenv("HF_HUB_CACHE", str(fake_hub_cache(tmp_path / "hub", valid)))
    out = tmp_path / "o"
    result = run("--source", "hf", "--hf-revision", "main", "--output", str(out))
    assert result.exit_code == 0, result.output
    train = assert_raw_table(out / "train.parquet")
    test = assert_raw_table(out / "test.parquet")
    assert train.height == 30 and test.height == 9
    assert train["question"].to_list() == valid.head(30)["question"].to_list()  # order kept
    assert train["rating"].to_list() == [int(r) for r in valid.head(30)["rating"]]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["hf"]["repo_id"] == DEFAULT_HF_REPO
    assert stats["hf"]["revision"] == "main" and stats["hf"]["resolved_sha"] == FAKE_SHA
    assert stats["check_unique"] is False  # off by default for hf
    assert stats["splits"]["train"]["distribution"]["count"] == 30
    assert sorted(p.name for p in out.iterdir()) == [".hrm-record.json", "metrics.json", "stats.json", "test.parquet",
                                                     "train.parquet"]  # no staging


def test_hf_default_revision_is_pinned_and_used_from_cache(valid, tmp_path, offline):
    offline.setenv("HF_HUB_CACHE", str(fake_hub_cache(tmp_path / "hub", valid, sha=DEFAULT_HF_REVISION)))
    result = run("--source", "hf", "--check-unique", "--output", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["hf"]["resolved_sha"] == DEFAULT_HF_REVISION and stats["check_unique"] is True


def test_hf_invalid_rows_name_the_hub_file(valid, bad_split, tmp_path, offline):
    hub = fake_hub_cache(tmp_path / "hub", valid)
    snapshot = hub / ("datasets--" + DEFAULT_HF_REPO.replace("/", "--")) / "snapshots" / FAKE_SHA
    publish(snapshot, "train.csv", bad_split)  # published so: the Hub's record matches, the rows are bad
    offline.setenv("HF_HUB_CACHE", str(hub))
    result = run("--source", "hf", "--hf-revision", "main", "--output", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert f"{snapshot / 'train.csv'}: 3 of 10 rows are invalid" in result.output
    assert not (tmp_path / "o").exists()
    dropped = run("--source", "hf", "--hf-revision", "main", "--output", str(tmp_path / "o"), "--on-invalid", "drop")
    assert dropped.exit_code == 0, dropped.output
    train = assert_raw_table(tmp_path / "o" / "train.parquet")
    assert train["question"].to_list() == bad_split["question"].gather([0, 1, 3, 4, 6, 8, 9]).to_list()
    assert pl.read_parquet(tmp_path / "o" / "rejected-train.parquet")["row"].to_list() == [2, 5, 7]


def test_hf_offline_and_not_cached(tmp_path, offline):
    offline.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = run("--source", "hf", "--output", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "could not be reached" in errors[0] and "--source builtin" in errors[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(shutil.which("hrm") is None, reason="the hrm console script is not installed")
def test_console_script(valid, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(fake_hub_cache(tmp_path / "hub", valid))}
    ok = subprocess.run(["hrm", "raw", "--source", "hf", "--hf-revision", "main", "--output", str(tmp_path / "o")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "train.parquet: 30 rows" in ok.stderr
    assert pl.read_parquet(tmp_path / "o" / "test.parquet").height == 9
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    bad = subprocess.run(["hrm", "raw", "--source", "hf", "--output", str(tmp_path / "p")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "--source builtin" in bad.stderr


def _snapshot(hub: Path) -> Path:
    return hub / ("datasets--" + DEFAULT_HF_REPO.replace("/", "--")) / "snapshots" / FAKE_SHA


def test_hf_records_the_sha256_and_refuses_a_tampered_cache(valid, tmp_path, offline):
    """Issue 26: stats.json records each Hub file's sha256; a cache whose bytes were changed at the pinned
    revision (its etag, the Hub's sha256, kept) is refused naming the file and both hashes; nothing written."""
    hub = fake_hub_cache(tmp_path / "hub", valid)
    offline.setenv("HF_HUB_CACHE", str(hub))
    train = _snapshot(hub) / "train.csv"
    want = hashlib.sha256(train.read_bytes()).hexdigest()
    out = tmp_path / "o"
    assert run("--source", "hf", "--hf-revision", FAKE_SHA, "--output", str(out)).exit_code == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["hf"]["files"]["train.csv"]["sha256"] == want and stats["hf"]["resolved_sha"] == FAKE_SHA

    blob = train.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the cached copy
    blob.write_bytes(bytes(data))
    got = hashlib.sha256(data).hexdigest()
    result = run("--source", "hf", "--hf-revision", FAKE_SHA, "--output", str(tmp_path / "p"))
    assert result.exit_code == 1 and "Traceback" not in result.output and result.output.count("Error:") == 1
    assert f"{train}: content does not match what the Hub records" in result.output
    assert want in result.output and got in result.output
    assert not (tmp_path / "p").exists()

    train.unlink()  # a plain file in the snapshot, offline: nothing records what the Hub holds
    train.write_bytes(bytes(data))
    result = run("--source", "hf", "--hf-revision", FAKE_SHA, "--output", str(tmp_path / "p"))
    assert result.exit_code == 1 and f"{train}: its content cannot be verified" in result.output


def test_hf_files_are_checked_against_the_hubs_record_when_online(valid, tmp_path, monkeypatch):
    """Online, the Hub's API says what the file at that commit holds (its LFS sha256; the network is faked
    at HfApi.get_paths_info): a cache that agrees with its own etag but not with the Hub is refused."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub = fake_hub_cache(tmp_path / "hub", valid)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    records = {name: hashlib.sha256((_snapshot(hub) / name).read_bytes()).hexdigest() for name in ("train.csv", "test.csv")}
    asked = []

    def get_paths_info(self, repo_id, paths, *, revision=None, repo_type=None, **kw):
        asked.append((repo_id, tuple(paths), revision, repo_type))
        return [RepoFile(path=p, size=1, oid="0" * 40, lfs={"size": 1, "oid": records[p], "pointerSize": 130})
                for p in paths]

    monkeypatch.setattr(HfApi, "get_paths_info", get_paths_info)
    assert run("--source", "hf", "--hf-revision", FAKE_SHA, "--output", str(tmp_path / "o")).exit_code == 0
    assert (DEFAULT_HF_REPO, ("train.csv",), FAKE_SHA, "dataset") in asked
    hub_says = "f" * 64  # the Hub holds other bytes than this cache at that commit
    records["train.csv"] = hub_says
    result = run("--source", "hf", "--hf-revision", FAKE_SHA, "--output", str(tmp_path / "p"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{_snapshot(hub) / 'train.csv'}: content does not match what the Hub records" in result.output
    assert f"the Hub ({DEFAULT_HF_REPO} at {FAKE_SHA}) records {hub_says}" in result.output
    assert not (tmp_path / "p").exists()
