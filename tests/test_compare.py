"""`hrm compare` (issue 29, item 5), for real: the tiny pipeline in a fresh git + DVC repository committed as
main (HRM), then `hrm compare run hrm-quick trm-quick` runs the two profiles as experiments (HRM: nothing to
rerun; TRM: train, evaluate, analyze) and writes the table and figure. Every value of the table is checked
against the files DVC itself puts in the workspace (`dvc exp apply`); the refusals (another dataset, another
sample, a missing file, a file its dvc.lock does not vouch for, a summary not in the cache) on revisions made
from main's real files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from test_dvc_experiments import REPO, run, sh, tiny_project

# trm-quick at the tiny sizes (params.yaml's TINY values, so hrm-quick's run changes nothing).
TINY_TRM = ("train.arch.hidden_size=32", "train.arch.puzzle_emb_ndim=32", "train.arch.L_layers=1",
            "train.arch.L_cycles=1", "train.arch.halt_max_steps=3")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The project on tiny params, `dvc repro` committed as main, then `hrm compare run` into ``out/``."""
    root = tmp_path_factory.mktemp("compare") / "repo"
    tiny_project(root)
    args = [a for s in TINY_TRM for a in ("-S", s)]
    sh(root, "hrm", "compare", "run", "hrm-quick", "trm-quick", *args, "--output", "out")
    sh(root, "git", "checkout", "--", ".")  # `dvc exp run` leaves the last experiment's params and results
    sh(root, "dvc", "checkout")
    return root


def table(repo: Path, folder: str = "out") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((repo / folder / "comparison.csv").read_text())))


def dig(data, dotted: str):
    """The value at a dotted key; None where the file has none (no puzzle solved: no mean critical step)."""
    for part in dotted.split("."):
        if part not in data:
            return None
        data = data[part]
    return data


def test_run_makes_both_experiments_and_dvc_exp_show_lists_them(repo):
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    names = {exp.get("name") for commit in shown for exp in commit.get("experiments") or []}
    assert {"hrm-quick", "trm-quick"} <= names
    assert sorted(p.name for p in (repo / "out").iterdir()) == [".hrm-record.json", "comparison.csv", "comparison.md",
                                                                 "comparison.png"]
    header = list(table(repo)[0])
    assert header == ["section", "group", "measure", "source", "hrm-quick (HRM)", "trm-quick (TRM)"]


def test_every_value_is_the_number_of_the_file_it_names(repo):
    """Each run's workspace as DVC restores it (`dvc exp apply`): metrics.json, summary.json and the plot CSVs;
    every value of comparison.csv equals the one its `source` names there, and every section is present."""
    rows = table(repo)
    assert {r["section"] for r in rows} == {"accuracy", "by rating", "by blanks", "segments to solve",
                                            "fixed-point classes", "trapped guesses"}
    summaries = []
    for name, column in (("hrm-quick", "hrm-quick (HRM)"), ("trm-quick", "trm-quick (TRM)")):
        sh(repo, "dvc", "exp", "apply", name)
        summaries.append((repo / "data/evaluate/summary.json").read_bytes())
        for row in rows:
            name, _, key = row["source"].partition(" ")
            path = f"data/{name}"  # sources name the results inside the run's output folder
            if path.endswith(".json"):
                expected = dig(json.loads((repo / path).read_text()), key)
            else:
                bucket = row["group"] if row["section"].startswith("by ") else None
                found = [r for r in csv.DictReader(io.StringIO((repo / path).read_text())) if list(r.values())[0] == bucket]
                expected = float(found[0][key]) if found else None
            assert (float(row[column]) if row[column] else None) == expected, (name, row)
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout")
    assert summaries[0] != summaries[1]  # two models' evaluations, not one read twice
    tests = [r for r in rows if r["section"] == "accuracy" and r["group"] == "test"]
    assert [r["measure"] for r in tests] == ["baseline", "paper_vote", "label_free", "first_to_halt", "verified_any"]
    assert all(r["hrm-quick (HRM)"] != "" and r["trm-quick (TRM)"] != "" for r in tests)
    trapped = [r for r in rows if r["section"] == "trapped guesses"]
    assert trapped and all(r["trm-quick (TRM)"] != "" for r in trapped)


def test_the_markdown_holds_the_one_table_and_the_figure(repo):
    text = (repo / "out" / "comparison.md").read_text()
    assert text.startswith("# hrm-quick (HRM) vs trm-quick (TRM)\n")
    assert "| section | group | measure | hrm-quick (HRM) | trm-quick (TRM) |" in text
    assert text.count("| fixed-point classes |") == 4 and "| trapped guesses |  | runs trapped" in text
    assert "![hrm-quick (HRM) vs trm-quick (TRM)](comparison.png)" in text
    lock = yaml.safe_load(sh(repo, "git", "show", "main:dvc.lock"))
    md5 = next(d["md5"] for d in lock["stages"]["evaluate"]["deps"] if d["path"] == "data/datasets")
    assert f"data/datasets md5 {md5} in every run" in text


def test_the_figure_draws_the_table(repo):
    """Not blank: both runs' colours in the PNG; and the figure's bars are the table's values."""
    import matplotlib.image
    import numpy as np

    from hrm.comparison import comparison_figure, comparison_rows
    from pipelines.compare_sources import load_runs

    image = matplotlib.image.imread(repo / "out" / "comparison.png")[..., :3]
    assert image.shape[0] > 500 and image.shape[1] > 1000
    assert (image < 0.95).any(axis=2).mean() > 0.02  # ink beyond a blank page
    runs = [r.results for r in load_runs(repo, ["hrm-quick", "trm-quick"])]
    rows = comparison_rows(runs)
    fig = comparison_figure(runs, rows)
    tests = [r for r in rows if r.section == "accuracy" and r.group == "test"]
    heights = [[round(p.get_height(), 9) for p in c.patches] for c in fig.axes[0].containers]
    assert heights == [[round(r.values[j], 9) for r in tests] for j in range(2)]
    classes = [r for r in rows if r.section in ("fixed-point classes", "trapped guesses")]
    drawn = [p.get_height() for c in fig.axes[5].containers for p in c.patches]
    assert drawn == [r.values[j] for j in range(2) for r in classes if r.values[j] is not None]
    assert np.isclose(fig.axes[4].lines[0].get_ydata(), [float(r["baseline"]) for r in runs[0].tables["segments"]]).all()


def branch(repo: Path, name: str, change) -> None:
    """A branch off main whose commit is main's files with ``change(repo)`` applied."""
    sh(repo, "git", "checkout", "-q", "-B", name, "main")
    sh(repo, "dvc", "checkout", "-q")
    change(repo)
    sh(repo, "git", "commit", "-q", "-am", name)
    sh(repo, "git", "checkout", "-q", "main")
    sh(repo, "dvc", "checkout", "-q")


def edit_lock(edit):
    def change(repo: Path) -> None:
        lock = yaml.safe_load((repo / "dvc.lock").read_text())
        edit(lock["stages"])
        (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return change


def refused(repo: Path, *names: str) -> str:
    proc = run(repo, "hrm", "compare", *names, "--output", "refused")
    assert proc.returncode == 1 and not (repo / "refused").exists(), proc.stderr
    return proc.stderr


def test_runs_of_another_dataset_or_sample_are_refused_naming_both(repo):
    def other_dataset(stages):
        next(d for d in stages["evaluate"]["deps"] if d["path"] == "data/datasets")["md5"] = "0" * 32 + ".dir"

    def other_sample(stages):
        stages["evaluate"]["params"]["params.yaml"]["evaluate"]["test_size"] = 3

    branch(repo, "other-dataset", edit_lock(other_dataset))
    branch(repo, "other-sample", edit_lock(other_sample))
    error = refused(repo, "trm-quick", "other-dataset")
    assert "trm-quick (" in error and "other-dataset (" in error and "did not evaluate the same dataset" in error
    assert "dvc.lock's evaluate stage read data/datasets md5" in error and "0" * 32 in error
    error = refused(repo, "main", "other-sample")
    assert "did not evaluate the same puzzles: dvc.lock's evaluate stage ran with evaluate.test_size = 4 in main" \
        " and 3 in other-sample" in error


def test_a_missing_or_foreign_file_is_refused_naming_the_revision_and_file(repo):
    branch(repo, "no-critical", lambda r: sh(r, "git", "rm", "-q", "data/analysis/plots/critical.csv"))
    error = refused(repo, "main", "no-critical")
    assert "no-critical (" in error and "data/analysis/plots/critical.csv is not in the commit" in error

    def rewrite(r: Path) -> None:  # a metrics.json that is not the run's
        (r / "data/evaluate/metrics.json").write_text(json.dumps({"test": {"baseline": 1.0}}))
    branch(repo, "rewritten", rewrite)
    error = refused(repo, "rewritten", "main")
    assert "rewritten (" in error and "data/evaluate/metrics.json is not the file its dvc.lock records" in error
    assert "no such branch, tag, commit or experiment" in refused(repo, "main", "no-such-run")


def test_a_summary_not_in_the_dvc_cache_is_refused(repo, tmp_path):
    """A clone has the commits but not DVC's cache: summary.json (cached, not committed) cannot be read."""
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    error = refused(clone, "main", "main")
    assert "data/evaluate/summary.json (md5 " in error and "is not in the DVC cache" in error and "dvc pull" in error


def test_the_output_folder_is_replaced_only_when_it_is_compare_s_own(repo):
    before = (repo / "out" / "comparison.csv").read_bytes()
    sh(repo, "hrm", "compare", "revisions", "hrm-quick", "trm-quick", "--output", "out")
    assert (repo / "out" / "comparison.csv").read_bytes() == before  # same runs, same bytes
    (repo / "mine").mkdir()
    (repo / "mine" / "notes.txt").write_text("mine")
    proc = run(repo, "hrm", "compare", "main", "trm-quick", "--output", "mine")
    assert proc.returncode == 1 and "refusing to replace this folder" in proc.stderr
    assert sorted(p.name for p in (repo / "mine").iterdir()) == ["notes.txt"]


def test_run_loads_existing_experiments_and_dry_run_runs_nothing(repo):
    refs = sh(repo, "git", "for-each-ref", "refs/exps")
    proc = run(repo, "hrm", "compare", "run", "--dry-run", "--output", "dry")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["hrm compare revisions hrm-quick trm-quick --output dry"]
    assert proc.stderr.count("exists on HEAD's baseline") == 2 and not (repo / "dry").exists()
    proc = run(repo, "hrm", "compare", "run", "hrm-quick", "maze-quick", "--dry-run", "--output", "dry")
    assert proc.stdout.splitlines()[0].startswith("dvc exp run -n maze-quick -S raw.task=maze")
    assert sh(repo, "git", "for-each-ref", "refs/exps") == refs  # nothing ran


def test_run_refuses_uncommitted_params(repo):
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("seed: 0", "seed: 1"))
    try:
        proc = run(repo, "hrm", "compare", "run", "maze-quick", "trm-quick", "--output", "never")
        assert proc.returncode == 1 and "params.yaml: has uncommitted changes" in proc.stderr
    finally:
        sh(repo, "git", "checkout", "--", "params.yaml")


def test_hrm_quick_is_params_yaml_as_it_is():
    """The default pair's HRM is the default run: the profile only names params.yaml's own architecture."""
    profile = yaml.safe_load((REPO / "profiles" / "hrm-quick.yaml").read_text())["params"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert profile == {"train.arch.name": dig(params, "train.arch.name")}


def test_a_number_a_run_lacks_is_n_a_in_every_output():
    """A run of older code (no first_to_halt in its metrics.json) beside one that has it: the table says n/a, the
    CSV leaves the cell empty, the figure draws no bar there and writes n/a. The repository's own committed
    results, one copy without the rule."""
    import copy

    from hrm.comparison import (ANALYSIS_METRICS, ANALYSIS_SUMMARY, EVALUATE_METRICS, EVALUATE_SUMMARY, RunResults,
                                comparison_figure, comparison_rows, csv_text, format_value, markdown_text)

    evaluate = json.loads((REPO / "data" / EVALUATE_METRICS).read_text())
    older, newer = copy.deepcopy(evaluate), copy.deepcopy(evaluate)
    older["test"].pop("first_to_halt", None)
    newer["test"].setdefault("first_to_halt", 0.25)
    tables = {name: list(csv.DictReader(io.StringIO((REPO / path).read_text())))
              for name, path in (("rating", "data/evaluate/plots/rating.csv"), ("segments", "data/evaluate/plots/segments.csv"))}
    analysis = json.loads((REPO / "data" / ANALYSIS_METRICS).read_text())
    runs = [RunResults(label, "0" * 40, arch, {EVALUATE_METRICS: metrics, EVALUATE_SUMMARY: {},
                                              ANALYSIS_METRICS: analysis, ANALYSIS_SUMMARY: {}}, tables)
            for label, arch, metrics in (("old", "HRM", older), ("new", "TRM", newer))]
    rows = comparison_rows(runs)
    fth = next(r for r in rows if r.section == "accuracy" and r.group == "test" and r.measure == "first_to_halt")
    assert fth.values == (None, newer["test"]["first_to_halt"])
    assert f"| accuracy | test | first_to_halt | n/a | {format_value(fth.values[1], 'fraction')} |" in \
        markdown_text(runs, rows)
    assert f"accuracy,test,first_to_halt,evaluate/metrics.json test.first_to_halt,,{fth.values[1]!r}\n" in \
        csv_text(runs, rows)
    assert not [r for r in rows if r.section == "by blanks"]  # no blanks table given: no rows, no error
    fig = comparison_figure(runs, rows)
    assert [len(c.patches) for c in fig.axes[0].containers] == [4, 5]
    assert "n/a" in [t.get_text() for t in fig.axes[0].texts]
    trapped = [r for r in rows if r.section == "trapped guesses"]
    assert trapped and all(r.values == (None, None) for r in trapped)  # no summary: every such number n/a
