"""The experiment loop, for real: the whole pipeline at tiny params in a fresh git + DVC repository,
committed, then two `dvc exp run -S ...`; `dvc exp show`, `dvc metrics diff`, `dvc params diff` and
`dvc plots diff` compare them with main and with each other, and `dvc exp apply` / `dvc checkout`
move between them without rerunning a stage (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
METRICS = ("data/raw/metrics.json", "data/models/hrm/dvclive/metrics.json", "data/evaluate/metrics.json",
           "data/analysis/metrics.json")
TINY = {
    "raw": {"train_size": 30, "test_size": 10},
    "data": {"subsample_size": 20, "test_size": 10, "num_aug": 2, "shard_max_mb": 0.02},
    "train": {"epochs": 2, "eval_interval": 1, "global_batch_size": 8, "eval_size": 8, "lr_warmup_steps": 2,
              "num_threads": 1,
              "arch": {"hidden_size": 32, "num_heads": 2, "expansion": 2, "H_layers": 1, "L_layers": 1, "H_cycles": 2,
                       "L_cycles": 1, "halt_max_steps": 3, "puzzle_emb_ndim": 32}},
    "evaluate": {"checkpoints": 2, "permutations": 2, "test_size": 4, "tiers": "1-5", "batch_size": 8, "num_threads": 1},
    "analyze": {"sample": 4, "batch_size": 8, "easy_k": "0,2", "easy_sample": 2, "shifts": 2, "noise_runs": 1,
                "fp_sample": 2, "landscape_radius": 2, "num_threads": 1},
}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def sh(cwd: Path, *args: str) -> str:
    proc = run(cwd, *args)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def ran(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]


def merge(base: dict, over: dict) -> dict:
    return {k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            for k, v in {**base, **over}.items()}


def tiny_project(root: Path) -> str:
    """The project in a fresh repository at ``root``, `dvc repro` run on tiny params and committed as main;
    the repro's log."""
    root.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for name in ("hrm", "pipelines", "schemas", "profiles"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "config", "user.email", "test@example.com")
    sh(root, "git", "config", "user.name", "test")
    sh(root, "dvc", "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the project's plot templates
    log = sh(root, "dvc", "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "baseline")
    return log


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The project in a fresh repository, `dvc repro` run on tiny params and committed as main."""
    root = tmp_path_factory.mktemp("experiments") / "repo"
    log = tiny_project(root)
    assert ran(log) == ["raw", "subsample", "augment", "hints", "shard", "train", "evaluate", "analyze", "view"]
    return root


def test_metrics_and_plots_are_committed_and_cached_outputs_are_not(repo):
    """What dvc.yaml declares with `cache: false` is in the commit; every cached output is git-ignored."""
    tracked = set(sh(repo, "git", "ls-files").split())
    assert set(METRICS) <= tracked
    assert {"data/models/hrm/dvclive/plots/metrics/train/lm_loss.tsv", "data/evaluate/plots/tiers.csv",
            "data/analysis/plots/residuals.csv"} <= tracked
    assert not [f for f in tracked if f.endswith((".parquet", ".arrow", ".pt")) or "/checkpoints/" in f]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path, opts = (next(iter(entry.items())) if isinstance(entry, dict) else (entry, {}))
            ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0
            assert ignored == opts.get("cache", True), f"stage {name}: {path} (cache {opts.get('cache', True)})"


def test_metrics_are_a_short_headline_per_stage(repo):
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    files = shown[""]["data"] if "" in shown else shown["workspace"]["data"]
    assert set(files) == set(METRICS)

    def count(d):
        return sum(count(v) if isinstance(v, dict) else 1 for v in d.values())

    for path, entry in files.items():
        assert 3 <= count(entry["data"]) <= 25, (path, entry["data"])
    evaluate = files["data/evaluate/metrics.json"]["data"]
    assert set(evaluate["test"]) == {"baseline", "paper_vote", "label_free", "first_to_halt", "verified_any"}


def test_two_experiments_compare_with_main_and_each_other(repo):
    sh(repo, "dvc", "exp", "run", "-n", "lr-high", "-S", "train.lr=0.01")
    sh(repo, "git", "checkout", "--", "params.yaml")  # back to main's params: the next experiment starts from main
    log = sh(repo, "dvc", "exp", "run", "-n", "more-passes", "-S", "evaluate.permutations=3")
    assert "evaluate" in ran(log) and not {"raw", "subsample", "augment", "hints", "shard"} & set(ran(log))

    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    rows = {}
    for commit in shown:
        rows[commit.get("name") or commit["rev"]] = commit
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                rows[rev.get("name") or exp.get("name")] = rev
    for name in ("main", "lr-high", "more-passes"):
        assert name in rows, sorted(rows)
        data = rows[name]["data"]
        assert set(METRICS) <= set(data["metrics"]), (name, data.get("metrics"))
        assert not [p for p, v in data["metrics"].items() if "error" in v], (name, data["metrics"])

    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "main", "lr-high", "--json"))
    assert "data/models/hrm/dvclive/metrics.json" in diff
    params = json.loads(sh(repo, "dvc", "params", "diff", "main", "lr-high", "--json"))
    assert params["params.yaml"]["train.lr"]["new"] == 0.01
    between = json.loads(sh(repo, "dvc", "metrics", "diff", "lr-high", "more-passes", "--json"))
    assert between  # the two experiments differ from each other

    plots = json.loads(sh(repo, "dvc", "plots", "diff", "main", "lr-high", "--json"))
    assert not plots.get("errors"), plots.get("errors")
    declared = [next(iter(p)) for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]]
    for plot_id in declared:
        rendered = plots["data"][plot_id][0]["content"]
        revs = {row["rev"] for row in rendered["data"]["values"]}
        assert revs == {"main", "lr-high"}, (plot_id, revs)
        text = json.dumps(rendered)
        assert '"title": "' in text and '"y"' in text
    assert not [p for p in plots["data"] if p.endswith((".csv", ".tsv"))]  # no auto-generated duplicates


def test_apply_and_checkout_move_between_experiments_without_rerunning(repo):
    main_metrics = {p: (repo / p).read_bytes() for p in METRICS}
    sh(repo, "dvc", "exp", "apply", "lr-high")
    assert (repo / METRICS[1]).read_bytes() != main_metrics[METRICS[1]]
    assert "changed" not in sh(repo, "dvc", "status")  # the experiment's outputs are in place
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout")
    assert {p: (repo / p).read_bytes() for p in METRICS} == main_metrics
    status = sh(repo, "dvc", "status")
    assert "changed" not in status, status
    assert ran(sh(repo, "dvc", "repro")) == []  # main's outputs are back: nothing to rerun


# Every folder of a stage with git-tracked results (raw, train's dvclive, evaluate, analyze): dvc.yaml
# declares its outputs `persist: true`, so DVC does not delete them before it runs the stage.
RESULT_FOLDERS = ("data/raw", "data/models/hrm/dvclive", "data/evaluate", "data/analysis")
REFUSED = (("raw", "train_size", 0), ("train", "lr", -1), ("evaluate", "batch_size", 0), ("analyze", "sample", -1))


def files_under(repo: Path, folders) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for folder in folders for p in sorted((repo / folder).rglob("*"))
            if p.is_file()}


def test_a_refused_run_leaves_the_previous_results_and_a_good_run_replaces_them(repo, tmp_path):
    """Issue 26, class 6: a stage refused for a bad param under `dvc repro` leaves every file of its results
    (the uncommitted metrics and plots above all) byte-identical; a good run still replaces them, equal to
    a run into an empty folder."""
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout")
    before = files_under(repo, RESULT_FOLDERS)
    assert set(METRICS) <= set(before) and "data/evaluate/plots/passes.csv" in before
    main_params = yaml.safe_load((repo / "params.yaml").read_text())
    for stage, key, bad in REFUSED:
        (repo / "params.yaml").write_text(yaml.safe_dump(merge(main_params, {stage: {key: bad}}), sort_keys=False))
        proc = run(repo, "dvc", "repro", stage)
        assert proc.returncode != 0 and f"params.yaml: {stage}.{key}: {bad}" in proc.stdout + proc.stderr, proc.stderr
        assert files_under(repo, RESULT_FOLDERS) == before, f"a refused {stage} run changed its results"
    sh(repo, "git", "checkout", "--", "params.yaml")
    assert ran(sh(repo, "dvc", "repro")) == []  # everything in place: nothing to rerun

    (repo / "params.yaml").write_text(yaml.safe_dump(merge(main_params, {"evaluate": {"permutations": 3}}), sort_keys=False))
    assert ran(sh(repo, "dvc", "repro", "evaluate")) == ["evaluate"]
    after = files_under(repo, ["data/evaluate"])
    assert after["data/evaluate/plots/passes.csv"] != before["data/evaluate/plots/passes.csv"]
    fresh = tmp_path / "evaluate"
    sh(repo, "hrm", "evaluate", "--checkpoint", "data/models/hrm", "--dataset", "data/datasets", "--output", str(fresh),
       "--config-file", "params.yaml", "--section", "evaluate")
    timings = ("data/evaluate/run.json", "data/evaluate/.gitignore")  # run.json: seconds; .gitignore: DVC's
    assert {k: v for k, v in after.items() if k not in timings} == \
        {f"data/evaluate/{k}": v for k, v in files_under(fresh, ["."]).items() if f"data/evaluate/{k}" not in timings}
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout")


# The task switches of the maze pipeline (docs/tasks.md, "Maze-30x30-Hard"): the quick profile's sizes aside,
# these are what `dvc exp run` needs to rebuild everything from raw to analysis on mazes.
MAZE_SWITCHES = ("raw.task=maze", "data.num_aug=7", "data.hints=false", "train.variant=vanilla",
                 "evaluate.variant=vanilla", "evaluate.perturbation=swap", "evaluate.permutations=2",
                 "analyze.variant=vanilla", "analyze.shifts=2")


def dotted(params: dict, key: str):
    for part in key.split("."):
        params = params[part]
    return params


def test_the_maze_pipeline_is_one_experiment(repo):
    """`hrm profile run maze-quick` is that experiment: the profile carries the switches, and `-S` on the
    command line wins over its sizes (here: back to this repository's tiny ones)."""
    sh(repo, "git", "checkout", "--", "params.yaml")
    profile = yaml.safe_load((repo / "profiles" / "maze-quick.yaml").read_text())["params"]
    switches = dict(s.split("=") for s in MAZE_SWITCHES)
    assert {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in profile.items() if k in switches} == switches
    tiny = yaml.safe_load((repo / "params.yaml").read_text())
    sizes = {k: dotted(tiny, k) for k in profile if k not in switches and k not in ("data.test_size", "analyze.index_by")}
    assert {"train.epochs", "train.arch.hidden_size", "analyze.sample"} <= set(sizes)
    args = [a for k, v in sizes.items() for a in ("-S", f"{k}={v}")]
    log = sh(repo, "hrm", "profile", "run", "maze-quick", "--name", "maze", *args, "-S", "data.subsample_size=8",
             "-S", "data.test_size=4")  # analyze.index_by=row from the profile: the capped split need not hold raw row 0
    assert ran(log) == ["raw", "subsample", "augment", "hints", "shard", "train", "evaluate", "analyze", "view"]
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    names = {exp.get("name") for commit in shown for exp in commit.get("experiments") or []}
    assert "maze" in names
    diff = json.loads(sh(repo, "dvc", "params", "diff", "main", "maze", "--json"))["params.yaml"]
    assert diff["raw.task"] == {"old": "sudoku", "new": "maze"}
    assert diff["analyze.index_by"] == {"old": "raw", "new": "row"}
    assert not set(sizes) & set(diff), diff  # the command line's -S won over the profile's sizes
    sh(repo, "dvc", "exp", "apply", "maze")
    index = json.loads((repo / "data" / "datasets" / "datasets.json").read_text())
    assert index == {"vanilla": "maze-builtin-8-aug-7", "hint": None}
    manifest = json.loads((repo / "data" / "datasets" / index["vanilla"] / "manifest.json").read_text())
    assert manifest["encoding"]["task"] == "maze"
    evaluate = json.loads((repo / "data" / "evaluate" / "summary.json").read_text())
    assert evaluate["test"]["passes"] == 2 and evaluate["test"]["puzzles"] == 4
    import polars as pl

    assert "broken_path_cells" in pl.read_parquet_schema(repo / "data" / "analysis" / "puzzles.parquet")
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout")
