"""Issue 30, items 3 and 5: the paper's evaluations of published weights, one command each (`hrm paper run NAME`,
papers/dvc.yaml), their cost first, `--dry-run` stopping there.

The plan's passes are checked against the papers' procedures; the dry run's cost line is a real trial on this
CPU of a seeded model (the tiny official-layout config of tests/test_checkpoint_dataset.official_checkpoint,
written into a copy of papers/evaluations.yaml, so the trial is short). End to end, in a fresh git + DVC
repository: Sudoku-Extreme from a fake Hugging Face cache (tests/test_raw.fake_hub_cache) at the pinned
revision, the official checkpoint from a fake Hub model repo (tests/test_checkpoint_fetch.fake_model_repo), the
fork's run folder as a git clone: three `hrm paper run` commands, each a `dvc exp run` that `dvc exp show` lists.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.paper_plan import analyze_work, evaluate_work, load_evaluations, section_of, work_of
from registry_helpers import env_for, sh

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
PAPERS = REPO / "papers"
SUDOKU_TEST = 422_786


def tiny_arch() -> dict:
    """The arch block of tests/test_checkpoint_dataset.official_checkpoint (2 segments)."""
    return {"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
            "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
            "H_cycles": 1, "L_cycles": 1, "H_layers": 1, "L_layers": 1, "hidden_size": 16, "expansion": 2,
            "num_heads": 2, "puzzle_emb_ndim": 16, "pos_encodings": "rope", "halt_max_steps": 2,
            "halt_exploration_prob": 0.1, "forward_dtype": "float32"}


def tiny_papers(dest: Path, test_rows: int | None = None) -> Path:
    """A copy of papers/ whose published config is the tiny one (and its test splits ``test_rows`` long)."""
    shutil.copytree(PAPERS, dest)
    evaluations = yaml.safe_load((dest / "evaluations.yaml").read_text())
    for entry in evaluations.values():
        entry["arch"] = tiny_arch()
        entry["test_rows"] = test_rows or entry["test_rows"]
    (dest / "evaluations.yaml").write_text(yaml.safe_dump(evaluations, sort_keys=False))
    return dest


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert [line[:6] for line in result.output.splitlines()].count("Error:") == 1, result.output
    return " ".join(result.output.split())


def fork_folder(root: Path, steps=(40362, 41664)) -> Path:
    """The fork's layout: checkpoint_example/ with step_N files (official layout, one puzzle identifier)."""
    from test_checkpoint_dataset import official_checkpoint

    official_checkpoint(root / "weights", rows=1)
    folder = root / "checkpoint_example"
    folder.mkdir(parents=True)
    shutil.copy(root / "weights" / "all_config.yaml", folder / "all_config.yaml")
    for step in steps:
        shutil.copy(root / "weights" / "step_0", folder / f"step_{step}")
    shutil.rmtree(root / "weights")
    return folder


# ----------------------------------------------------------------------------- the plan


def test_the_plan_counts_each_papers_passes():
    """The passes of the real papers/ files: the HRM paper's one pass per puzzle, the fork's 10 x 9 (the 38.1 M
    passes of docs/benchmarks.md), the maze's 1,000, and the analysis' traces, probes and landscape points."""
    evaluations = load_evaluations(PAPERS)
    assert set(evaluations) == {"sudoku-official", "fork-ten", "maze-official", "sudoku-analysis"}
    params = yaml.safe_load((PAPERS / "params.yaml").read_text())
    for ev in evaluations.values():
        assert ev.arch["hidden_size"] == 512 and ev.arch["halt_max_steps"] == 16  # the paper's config
        assert ev.expected and all("arXiv:" in figure for figure in ev.expected)
    official = work_of(evaluations["sudoku-official"], params, PAPERS / "params.yaml")
    assert official.groups == (("evaluate", SUDOKU_TEST, 16),) and official.row_segments == 16 * SUDOKU_TEST
    fork = work_of(evaluations["fork-ten"], params, PAPERS / "params.yaml")
    assert fork.checkpoints == 10 and fork.passes == 10 * 9 * SUDOKU_TEST == 38_050_740
    assert work_of(evaluations["maze-official"], params, PAPERS / "params.yaml").passes == 1000
    analysis = work_of(evaluations["sudoku-analysis"], params, PAPERS / "params.yaml")
    assert analysis.groups == (("traces", 1000, 16), ("easy probe", 100 * 6, 16),
                               ("multistability", 100 * (9 + 4 * 2), 16), ("landscape points", 41 * 41, 1))
    ev = evaluations["sudoku-official"]
    settings = section_of(params, "sudoku_official.evaluate", PAPERS / "params.yaml")
    assert evaluate_work(ev, {**settings, "test_size": 50, "tiers": "1-5,6-10"}, 2).passes == 2 * 1 * 50 * 3
    assert analyze_work(ev, {"sample": 0, "easy_k": "none", "shifts": 0, "puzzle_index": "none"}).groups == \
        (("traces", SUDOKU_TEST, 16),)


COST = re.compile(r"paper: cost: ([\d,]+) passes \((.*) segments\) = ([\d,]+) row-segments, ([\d.,]+) ([GTPE]?)FLOP; "
                  r"a trial of (\d+) rows of a seeded model of the published config ran ([\d.,]+) row-segments/s on "
                  r"cpu: ([\d.,]+) (s|min|h)")


def cost_of(output: str) -> tuple[int, int, float, float]:
    """(passes, row-segments, rate, hours) of the cost line, checked for consistency."""
    m = COST.search(output)
    assert m, output
    passes, row_segments, rate = int(m[1].replace(",", "")), int(m[3].replace(",", "")), float(m[7].replace(",", ""))
    per_hour = {"s": 3600, "min": 60, "h": 1}[m[9]]
    hours = float(m[8].replace(",", "")) / per_hour
    last_digit = (0.05 if m[9] != "h" else 0.005) / per_hour  # s and min print one decimal, h two
    assert hours == pytest.approx(row_segments / rate / 3600, rel=0.06, abs=last_digit)  # as printed: rounded
    flops = float(m[4].replace(",", "")) * {"": 1, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}[m[5]]
    assert flops > 0
    return passes, row_segments, rate, hours


def test_dry_run_prints_the_plan_and_its_cost_and_runs_nothing(tmp_path, monkeypatch):
    papers = tiny_papers(tmp_path / "papers")
    monkeypatch.chdir(tmp_path)
    result = run("paper", "run", "sudoku-official", "--dry-run", "--device", "cpu", "--papers-dir", papers)
    assert result.exit_code == 0, result.output
    assert "expected: 55.0% exact accuracy on Sudoku-Extreme (HRM paper, arXiv:2506.21734)" in result.output
    assert cost_of(result.output)[:2] == (SUDOKU_TEST, 2 * SUDOKU_TEST)
    assert "evaluate 422,786 x 2 segments" in result.output
    assert (f"--dry-run: stopped before running `dvc exp run -n sudoku-official {papers.as_posix()}/dvc.yaml:"
            "sudoku-official-evaluate`; nothing fetched or written") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["papers"]  # nothing written
    assert sorted(p.name for p in papers.iterdir()) == sorted(p.name for p in PAPERS.iterdir())

    sized = run("paper", "run", "sudoku-official", "--dry-run", "--device", "cpu", "--papers-dir", papers,
                "-S", "sudoku_official.evaluate.test_size=100", "-S", "sudoku_official.evaluate.permutations=9")
    assert sized.exit_code == 0, sized.output
    assert cost_of(sized.output)[:2] == (900, 1800)
    assert "-S papers/params.yaml:sudoku_official.evaluate.test_size=100" in sized.output.replace(
        f"{papers.as_posix()}/", "papers/")

    clone = tmp_path / "clone"
    fork_folder(clone, steps=(1, 2, 3))  # three step_N files: evaluate takes min(10, 3)
    fork = run("paper", "run", "fork-ten", "--clone", clone, "--dry-run", "--device", "cpu", "--papers-dir", papers)
    assert fork.exit_code == 0, fork.output
    assert cost_of(fork.output)[0] == 3 * 9 * SUDOKU_TEST
    assert f"fork_ten.model.folder={(clone / 'checkpoint_example').resolve()}" in " ".join(fork.output.split())

    unpulled = run("paper", "run", "fork-ten", "--dry-run", "--device", "cpu", "--papers-dir", papers)
    assert unpulled.exit_code == 0, unpulled.output  # the cost before cloning: the params' 10 checkpoints
    assert cost_of(unpulled.output)[0] == 10 * 9 * SUDOKU_TEST

    analysis = run("paper", "run", "sudoku-analysis", "--dry-run", "--device", "cpu", "--papers-dir", papers)
    assert analysis.exit_code == 0, analysis.output
    assert "traces 1,000 x 2, easy probe 600 x 2, multistability 1,700 x 2, landscape points 1,681 x 1" \
        in analysis.output


def test_refusals_are_one_message_each(tmp_path, monkeypatch):
    """A missing clone, a folder without the fork's layout, weights still Git LFS pointers, no --clone for the
    fork, a --clone for a Hub checkpoint, an unknown evaluation, a key that is not one of papers/params.yaml."""
    monkeypatch.chdir(REPO)
    text = refused(run("paper", "run", "fork-ten", "--clone", tmp_path / "missing", "--dry-run"))
    assert f"--clone {tmp_path / 'missing'}: no such folder; clone the fork first" in text
    (tmp_path / "empty" / "checkpoint_example").mkdir(parents=True)
    text = refused(run("paper", "run", "fork-ten", "--clone", tmp_path / "empty", "--dry-run"))
    assert "not the fork's layout: expected checkpoint_example/ with step_N files and all_config.yaml" in text
    folder = fork_folder(tmp_path / "pointers")
    (folder / "step_41664").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    text = refused(run("paper", "run", "fork-ten", "--clone", tmp_path / "pointers", "--dry-run"))
    assert f"{(folder / 'step_41664').resolve()}: a Git LFS pointer, not the weights: run `git lfs pull`" in text
    text = refused(run("paper", "run", "fork-ten"))  # refused before anything runs (a dry run prints the cost)
    assert "the fork's checkpoints are not on the Hub: pass a local clone, --clone PATH" in text
    text = refused(run("paper", "run", "maze-official", "--clone", folder, "--dry-run"))
    assert "--clone: maze-official fetches its weights from the Hub; only fork-ten takes a clone" in text
    text = refused(run("paper", "run", "sudoku-oficial", "--dry-run"))
    assert "no evaluation 'sudoku-oficial' in papers/evaluations.yaml (sudoku-official, fork-ten" in text
    text = refused(run("paper", "run", "sudoku-official", "-S", "sudoku_official.evaluate.tset_size=9", "--dry-run"))
    assert "-S sudoku_official.evaluate.tset_size=9: expected KEY=VALUE with KEY a key of papers/params.yaml" in text
    text = refused(run("paper", "run", "sudoku-official", "-S", "sudoku_official.evaluate.test_size=many", "--dry-run"))
    assert "papers/params.yaml: sudoku_official: a size or count that is no whole number" in text
    text = refused(run("paper", "model", "--source", "folder", "--output", tmp_path / "m"))
    assert "--source folder needs --folder: its section's model.folder is empty" in text
    assert not (tmp_path / "m").exists()


def test_list_names_each_command_and_its_expected_figures(monkeypatch):
    monkeypatch.chdir(REPO)
    result = run("paper", "list")
    assert result.exit_code == 0, result.output
    for line in ("hrm paper run sudoku-official", "hrm paper run fork-ten --clone PATH", "hrm paper run maze-official",
                 "hrm paper run sudoku-analysis", "96.9%", "74.5% optimal paths", "54.5%"):
        assert line in result.output


# ----------------------------------------------------------------------------- the pipeline file


def paper_stages() -> dict[str, dict]:
    return yaml.safe_load((PAPERS / "dvc.yaml").read_text())["stages"]


def test_each_stage_reads_its_section_and_lists_the_code_it_runs():
    """As tests/test_dvc_deps.py and tests/test_dvc_params.py check dvc.yaml: no ${param} in a cmd, params are
    exactly what the command reads from papers/params.yaml (its section renamed), deps exactly the code it runs
    (the model stage: `hrm paper model` and the `hrm checkpoint` it starts)."""
    import shlex

    from test_dvc_deps import code_run_by, commands, covered
    from test_dvc_params import command_of

    from pipelines.settings import config_params

    params = yaml.safe_load((PAPERS / "params.yaml").read_text())
    for name, stage in paper_stages().items():
        args = shlex.split(stage["cmd"])
        assert "${" not in stage["cmd"] and args[args.index("--config-file") + 1] == "params.yaml", name
        section = args[args.index("--section") + 1]
        section_of(params, section, PAPERS / "params.yaml")  # it exists
        command = command_of(stage["cmd"])
        if args[1] == "paper":
            command = command.commands[args[2]]
        default = getattr(command.callback, "config_section")[0]
        reads = [r if r == "seed" else section + r[len(default):] for r in config_params(command)]
        assert sorted(stage["params"]) == sorted(reads), (name, stage["params"], reads)
        modules = [commands()[args[1]]] + (["pipelines.checkpoint"] if args[1] == "paper" else [])
        runs = set().union(*(code_run_by(m) for m in modules))
        code = [d[3:] for d in stage["deps"] if d.startswith("../")]
        assert all((REPO / d).exists() for d in code), name
        listed = set().union(*(covered(d) for d in code))
        assert listed == runs, (name, sorted(runs - listed), sorted(listed - runs))
    ends = {ev.stage for ev in load_evaluations(PAPERS).values()}
    assert ends == {"sudoku-official-evaluate", "fork-ten-evaluate", "maze-official-evaluate",
                    "sudoku-official-analyze"}


def test_cached_outputs_are_git_ignored_and_results_are_not():
    """papers/.gitignore ignores every cached output of papers/dvc.yaml and none of the git-tracked results."""
    import subprocess

    for name, stage in paper_stages().items():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            inside = f"papers/{path}/file" if not Path(path).suffix else f"papers/{path}"  # a folder: a file in it
            ignored = subprocess.run(["git", "check-ignore", "-q", inside], cwd=REPO).returncode == 0
            assert ignored == opts.get("cache", True), f"stage {name}: {path}"


# ----------------------------------------------------------------------------- end to end


TINY = {
    "sudoku": {"data": {"shard_max_mb": 0.02}},
    "sudoku_official": {"evaluate": {"batch_size": 8, "num_threads": 1},
                        "analyze": {"sample": 4, "batch_size": 8, "puzzle_index": "0", "easy_k": "0,2",
                                    "easy_sample": 2, "shifts": 2, "noise_runs": 1, "fp_sample": 2,
                                    "landscape_radius": 2, "num_threads": 1}},
    "fork_ten": {"evaluate": {"permutations": 2, "batch_size": 8, "num_threads": 1}},
}


def merge(base: dict, over: dict) -> dict:
    return {k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            for k, v in {**base, **over}.items()}


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """The project in a fresh git + DVC repository with tiny papers/ params and published config, committed;
    the Hub a fake cache holding Sudoku-Extreme at the pinned revision and the official Sudoku checkpoint."""
    from test_checkpoint_fetch import _official_rows_1, fake_model_repo
    import polars as pl
    from conftest import REAL_SUDOKU
    from test_raw import fake_hub_cache

    from pipelines.raw import DEFAULT_HF_REVISION

    root = tmp_path / "repo"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for name in ("hrm", "pipelines", "schemas"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    papers = tiny_papers(root / "papers", test_rows=6)
    params = merge(yaml.safe_load((papers / "params.yaml").read_text()), TINY)
    assert params["sudoku"]["raw"]["hf_revision"] == DEFAULT_HF_REVISION
    (papers / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    puzzles = pl.read_csv(REAL_SUDOKU / "valid.csv", infer_schema=False)
    hub = fake_hub_cache(tmp_path / "hub", puzzles, sha=DEFAULT_HF_REVISION, train=3, test=6)
    fake_model_repo(hub, _official_rows_1(tmp_path / "official"))
    env = {**env_for(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled"}
    for args in (("git", "init", "-q", "-b", "main"), ("git", "config", "user.email", "t@t.invalid"),
                 ("git", "config", "user.name", "t"), ("dvc", "init", "-q"), ("git", "add", "-A"),
                 ("git", "commit", "-qm", "project")):
        sh(root, *args, env=env)
    return root, env


def merged(root: Path, *args, env: dict) -> str:
    """A command's stdout and stderr as one stream, in order; it must succeed."""
    import subprocess

    proc = subprocess.run([str(a) for a in args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}"
    return proc.stdout


def experiments(root: Path, env: dict) -> dict[str, dict]:
    shown = json.loads(sh(root, "dvc", "exp", "show", "--json", env=env).stdout)
    rows = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                rows[rev.get("name") or exp.get("name")] = rev
    return rows


def test_each_evaluation_runs_as_one_command_that_dvc_exp_show_lists(project, tmp_path):
    root, env = project
    # `dvc repro` (its default target: dvc.yaml of the current folder, as `dvc stage list`'s) is the default pipeline
    listed = sh(root, "dvc", "stage", "list", "--name-only", env=env).stdout.split()
    assert listed[:2] == ["raw", "subsample"] and not [s for s in listed if "official" in s or "papers" in s]

    text = merged(root, "hrm", "paper", "run", "sudoku-official", env=env)
    stage = "Running stage 'papers/dvc.yaml:{}'".format
    assert text.index("paper: cost: 6 passes (evaluate 6 x 2 segments)") < text.index(stage("sudoku-raw"))
    assert text.index(stage("sudoku-official-model")) < text.index(stage("sudoku-official-evaluate"))
    assert "evaluate: cost: 6 passes x 2 segments" in text  # evaluate's own line, from the fetched weights
    results = root / "papers" / "results"
    model = root / "papers" / "models" / "sudoku-official" / "checkpoints"
    provenance = json.loads((model / "provenance.json").read_text())
    assert provenance["origin"]["repo_id"] == "sapientinc/HRM-checkpoint-sudoku-extreme"

    clone = fork_folder(tmp_path / "clone").parent
    sh(clone, "git", "init", "-q", "-b", "main", env=env)
    sh(clone, "git", "add", "-A", env=env)
    sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "checkpoints", env=env)
    fork = merged(root, "hrm", "paper", "run", "fork-ten", "--clone", clone, env=env)
    assert "paper: cost: 24 passes (evaluate 24 x 2 segments)" in fork  # 2 checkpoints x 2 shifts x 6 puzzles
    assert stage("sudoku-raw") not in fork  # the datasets are the first run's
    fork_run = json.loads((results / "fork-ten" / "evaluate" / "run.json").read_text())
    assert len(fork_run["checkpoints"]) == 2

    analysis = merged(root, "hrm", "paper", "run", "sudoku-analysis", env=env)
    assert "paper: cost: 41 passes (traces 4 x 2, easy probe 4 x 2, multistability 8 x 2, landscape points 25 x 1 " \
        "segments)" in analysis

    rows = experiments(root, env)
    for name, metrics in (("sudoku-official", "papers/results/sudoku-official/evaluate/metrics.json"),
                          ("fork-ten", "papers/results/fork-ten/evaluate/metrics.json"),
                          ("sudoku-analysis", "papers/results/sudoku-official/analysis/metrics.json")):
        assert name in rows, sorted(rows)
        data = rows[name]["data"]
        assert metrics in data["metrics"] and "error" not in data["metrics"][metrics], (name, data["metrics"])
        assert "papers/params.yaml" in data["params"]
    fork_metrics = rows["fork-ten"]["data"]["metrics"]["papers/results/fork-ten/evaluate/metrics.json"]["data"]
    assert {"baseline", "paper_vote", "label_free", "verified_any"} <= set(fork_metrics["test"])
    assert rows["fork-ten"]["data"]["params"]["papers/params.yaml"]["data"]["fork_ten"]["model"]["folder"] == \
        str((clone / "checkpoint_example").resolve())


def test_the_published_config_each_cost_is_projected_from_is_the_papers():
    """papers/evaluations.yaml states the published weights' architecture (the cost is projected from it before
    anything is fetched): it must stay the paper's, as hrm.train.PAPER_PROFILE holds it."""
    from hrm.train import PAPER_PROFILE, QUICK_ARCH

    evaluations = yaml.safe_load((PAPERS / "evaluations.yaml").read_text())
    for name, evaluation in evaluations.items():
        arch = evaluation["arch"]
        assert {k: arch.get(k) for k in QUICK_ARCH if k != "loss_type"} == \
            {k: PAPER_PROFILE[k] for k in QUICK_ARCH if k != "loss_type"}, name
        assert arch["loss"]["loss_type"] == PAPER_PROFILE["loss_type"], name
