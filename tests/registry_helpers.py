"""Shared by tests/test_registry.py and tests/test_publish.py: tiny real datasets, a real git +
DVC project around them, a fake checkpoint folder laid out as `hrm train` writes it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml
from click.testing import CliRunner

from conftest import REAL_SUDOKU as REAL
from pipelines.output_records import write_record

REPO = Path(__file__).resolve().parents[1]
SUBSAMPLE, NUM_AUG = 20, 4
VANILLA = f"sudoku-csv-{SUBSAMPLE}-aug-{NUM_AUG}"
HINT = f"{VANILLA}-hint"
MODEL = "hrm"
FAKE_TOKEN = "hf_FAKEtokenNEVERtoBEwritten0123456789"


def invoke(command, *args: str, env: dict | None = None):
    """Run a click command in-process; returns the result (never raises for a click exit)."""
    result = CliRunner().invoke(command, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(command, *args: str, env: dict | None = None):
    result = invoke(command, *args, env=env)
    assert result.exit_code == 0, result.output
    return result


def build_datasets(dest: Path, seed: int) -> Path:
    """`hrm subsample | augment | hints | shard` on 30 + 9 real puzzles -> dest/datasets (2 datasets)."""
    from pipelines.augment import augment
    from pipelines.hints import hints
    from pipelines.shard import shard
    from pipelines.subsample import subsample

    raw = dest / "raw"
    raw.mkdir(parents=True)
    valid = pl.read_csv(REAL / "valid.csv", infer_schema=False).with_columns(pl.col("rating").cast(pl.Int64))
    valid[:30].write_parquet(raw / "train.parquet")
    valid[30:].write_parquet(raw / "test.parquet")
    (raw / "stats.json").write_text(json.dumps({"source": "csv", "csv": {"input": "data/csv"}}) + "\n")
    write_record(raw, "raw")  # as `hrm raw` records its output
    ok(subsample, "--input", raw, "--output", dest / "subsample", "--seed", seed,
       "--subsample-size", SUBSAMPLE, "--test-size", 0)
    ok(augment, "--input", dest / "subsample", "--output", dest / "augment", "--seed", seed, "--num-aug", NUM_AUG)
    ok(hints, "--input", dest / "augment", "--output", dest / "hints", "--seed", seed, "--enabled", "true")
    ok(shard, "--input", dest / "hints", "--output", dest / "datasets", "--shard-max-mb", "0.02")
    return dest / "datasets"


def env_for(home: Path) -> dict:
    """Subprocess environment: this venv first, a private HOME (so the default remote
    ~/.cache/hrm-pipeline/dvc-remote lands in the test's folder), no analytics."""
    return {**os.environ, "HOME": str(home), "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATE_CHECK": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def sh(cwd: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def digest_tree(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def write_model(root: Path, dataset: str = HINT, step: int = 10, payload: bytes = b"\x00weights\x01") -> Path:
    """A checkpoint folder as `hrm train` lays it out, without training: data/models/hrm/
    checkpoints/{step_N, all_config.yaml (data_path -> the dataset)}, dvclive/metrics.json."""
    out = root / "data" / "models" / MODEL
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / f"step_{step}").write_bytes(payload)
    config = {"data_path": f"data/datasets/{dataset}", "global_batch_size": 8, "epochs": 2, "lr": 1e-4, "seed": 0,
              "eval_interval": 1, "arch": {"name": "hrm_v1", "hidden_size": 16, "loss": {"name": "act"}}}
    (ckpt / "all_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "dvclive").mkdir(exist_ok=True)
    (out / "dvclive" / "metrics.json").write_text(json.dumps({"eval": {"exact_accuracy": 0.25}, "step": step}) + "\n")
    return out


def dvc_yaml(models: bool = True) -> str:
    lines = ["artifacts:"]
    for name, kind in ((VANILLA, "vanilla"), (HINT, "hint")):
        lines += [f"  {name}:", f"    path: data/datasets/{name}", "    type: dataset",
                  f"    desc: tiny {kind} test dataset", f"    labels: [sudoku, {kind}]"]
    if models:
        lines += [f"  {MODEL}:", f"    path: data/models/{MODEL}", "    type: model", "    desc: fake checkpoint"]
    return "\n".join(lines) + "\n"


def make_project(root: Path, datasets: Path, home: Path) -> dict:
    """git + DVC project: the repo's own .dvc/config (default remote), dvc.yaml with artifacts,
    data/datasets tracked by `dvc add` (as the shard stage's output), committed."""
    env = env_for(home)
    root.mkdir(parents=True)
    sh(root, "git", "init", "-q", "-b", "main", env=env)
    sh(root, "git", "config", "user.name", "Registry Test", env=env)
    sh(root, "git", "config", "user.email", "registry@test.invalid", env=env)
    sh(root, "dvc", "init", "-q", env=env)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    (root / "dvc.yaml").write_text(dvc_yaml())
    shutil.copytree(datasets, root / "data" / "datasets")
    sh(root, "dvc", "add", "-q", "data/datasets", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "datasets", env=env)
    return env


def replace_datasets(root: Path, datasets: Path, env: dict, message: str) -> None:
    shutil.rmtree(root / "data" / "datasets")
    shutil.copytree(datasets, root / "data" / "datasets")
    sh(root, "dvc", "add", "-q", "data/datasets", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", message, env=env)
