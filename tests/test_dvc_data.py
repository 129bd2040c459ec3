"""A real `dvc repro` of the dataset stages (raw -> subsample -> augment -> hints -> shard)
in a fresh git + DVC repository, at small params."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from hrm.tasks import SUDOKU
from schemas.examples import validate_examples
from stage_helpers import verify_dataset

REPO = Path(__file__).resolve().parents[1]
MY_STAGES = ("subsample", "augment", "hints", "shard")
OUTPUTS = ("data/subsample", "data/augment", "data/hints", "data/datasets")


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A command in ``cwd`` with this interpreter's `hrm` and `dvc` first on PATH (tests/test_dvc_params.py too)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def sh(cwd: Path, *args: str) -> str:
    proc = run(cwd, *args)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def new_repo(root: Path) -> Path:
    """The project's pipeline (dvc.yaml, params.yaml, the code) in a fresh git + DVC repository at ``root``."""
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    for name in ("hrm", "pipelines", "schemas"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    return root


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((root / out).rglob("*")) if p.is_file()}


def ran(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]


def set_params(root: Path, **data) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["raw"].update(train_size=60, test_size=20)
    params["data"].update(data)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def check_outputs(root: Path, num_aug: int) -> None:
    """Every output exists and validates; the manifests match the shards."""
    names = json.loads((root / "data/datasets/datasets.json").read_text())
    assert names == {"vanilla": f"sudoku-builtin-30-aug-{num_aug}", "hint": f"sudoku-builtin-30-aug-{num_aug}-hint"}
    assert validate_examples(pl.read_ipc(root / "data/augment/train.arrow"), SUDOKU, rows_per_group=1 + num_aug).ok
    assert validate_examples(pl.read_ipc(root / "data/hints/train.arrow"), SUDOKU, rows_per_group=2 * (1 + num_aug)).ok
    for kind, name in names.items():
        manifest = verify_dataset(root / "data/datasets" / name)  # hashes, sizes, ranges, shard schema
        assert manifest["splits"]["test"]["rows"] == 10
        assert manifest["splits"]["train"]["rows"] == 30 * (1 + num_aug) * (2 if kind == "hint" else 1)
        assert manifest["source"]["source"] == "builtin"
        assert set(manifest["lineage"]["subsample"]["inputs"]) == {"train.parquet", "test.parquet", "stats.json"}


@pytest.mark.slow
def test_dvc_repro_builds_validates_and_rebuilds_identically(tmp_path):
    root = new_repo(tmp_path / "repo")
    set_params(root, subsample_size=30, test_size=10, num_aug=3, hints=True, shard_max_mb=0.02)

    log = sh(root, "dvc", "repro", "shard")
    assert ran(log) == ["raw", *MY_STAGES]
    check_outputs(root, num_aug=3)
    first = digests(root)

    # Nothing changed: nothing runs.
    log = sh(root, "dvc", "repro", "shard")
    assert ran(log) == [] and "Data and pipelines are up to date" in log

    # From scratch: the outputs removed, the stages forced to run again: the same bytes.
    for out in OUTPUTS:
        shutil.rmtree(root / out)
    log = sh(root, "dvc", "repro", "--force", "--single-item", *MY_STAGES)
    assert ran(log) == list(MY_STAGES)
    assert digests(root) == first
    assert "up to date" in sh(root, "dvc", "status", "shard")

    # A new param reruns exactly the stages it reaches.
    set_params(root, num_aug=2)
    log = sh(root, "dvc", "repro", "shard")
    assert ran(log) == ["augment", "hints", "shard"]
    check_outputs(root, num_aug=2)


def test_every_stage_command_parses_with_the_default_params(monkeypatch):
    """Every `hrm ...` cmd of every dvc.yaml (the default pipeline's and papers/'s) must parse with its click
    command, so a renamed option fails here rather than in a user's `dvc repro` (the values come from the
    params.yaml of the stage's folder, read by the stage: tests/test_dvc_params.py)."""
    import shlex

    import click
    from dvc.repo import Repo

    from pipelines.cli import cli

    with Repo(str(REPO)) as repo:
        cmds = {stage.addressing: (stage.cmd, Path(stage.wdir)) for stage in repo.index.stages
                if getattr(stage, "cmd", None)}
    assert {"raw", "shard", "train", "evaluate", "analyze", "view"} <= set(cmds)
    assert "papers/dvc.yaml:sudoku-official-model" in cmds  # the paper's pipeline too
    for name, (cmd, wdir) in cmds.items():
        monkeypatch.chdir(wdir)  # where dvc runs the cmd: its --config-file params.yaml must exist there
        args = shlex.split(cmd)
        assert args[0] == "hrm", f"stage {name}: {cmd}"
        command, words, path = cli, args[1:], ["hrm"]
        while isinstance(command, click.Group):  # hrm paper model ...: down to the command itself
            path.append(words[0])
            command = command.get_command(click.Context(command), words[0])
            assert command is not None, f"stage {name}: unknown command {' '.join(path)}"
            words = words[1:]
        ctx = command.make_context(" ".join(path), words)  # raises on a bad option or value
        assert ctx.params["config_file"] is not None, f"stage {name}: its params come from params.yaml"
