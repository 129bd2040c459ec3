"""Issue 14, class 6: every option and config-file value is checked (NaN, inf, strings for numbers,
values out of range) before any work, with one message naming the option or the file and key, and
no traceback. The library configs refuse the same values for Python callers.

(Checkpoints of NaN weights and devices that are not here: tests/test_checkpoint_integrity.py.)
"""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from hrm.model import HRMConfig
from hrm.train import TrainConfig, TrainError
from pipelines.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result, exit_code: int, *expected: str) -> None:
    """One message, the named things in it, no traceback: a user error, not a crash."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # click's own exit, not an exception
    assert "Traceback" not in result.output and result.output.count("Error") == 1, result.output
    for text in expected:
        assert text in result.output, (text, result.output)


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--expansion", "inf"), ("--expansion", "0"),
    ("--beta1", "nan"), ("--halt-exploration-prob", "nan"), ("--weight-decay", "-inf"), ("--epochs", "abc"),
])
def test_train_refuses_bad_command_line_values(built, tmp_path, flag, value):
    root, _ = built
    out = tmp_path / "out"
    refused(invoke("train", "--dataset", root / "datasets", "--output", out, flag, value), 2, f"'{flag}'")
    assert not out.exists()


@pytest.mark.parametrize("line, key", [
    ('epochs: "abc"', "train.epochs: 'abc' is not a valid integer"),
    ("epochs: 0", "train.epochs: 0 is not in the range"),
    ("epochs: 2.5", "train.epochs: 2.5 is not a valid integer"),
    ("lr: .nan", "train.lr: nan is not a finite number"),
    ("lr: -.inf", "train.lr: -inf is not"),
    ("seed: [1, 2]", "train.seed:"),
    ("compile: 'yes'", "train.compile: must be true or false"),
    ("device: tpu", "train.device:"),
    ("variant: foo", "train.variant: must be hint or vanilla"),
    ("dataset: 3", "train.dataset: must be a path"),
    ("arch: {expansion: .inf}", "train.expansion: inf is not a finite number"),
    ("arch: {hidden_size: x}", "train.hidden_size: 'x' is not a valid integer"),
    ("arch: {halt_exploration_prob: 2}", "train.halt_exploration_prob: 2"),
])
def test_train_refuses_bad_config_file_values_naming_file_and_key(built, tmp_path, line, key):
    root, _ = built
    config = tmp_path / "params.yaml"
    config.write_text(f"train:\n  {line}\n")
    out = tmp_path / "out"
    refused(invoke("train", "--dataset", root / "datasets", "--output", out, "--config-file", config), 1, f"{config}: {key}")
    assert not out.exists()


def test_config_file_values_keep_their_written_form(built, tmp_path):
    """An integer for a float option stays an integer (all_config.yaml records `expansion: 4` as params.yaml
    says); a quoted number is read as the number; null keeps the library's None where it has one."""
    import yaml

    root, _ = built
    config = tmp_path / "params.yaml"
    config.write_text("train:\n  lr: '3e-4'\n  eval_interval: null\n  arch:\n    expansion: 4\n")
    result = invoke("train", "--dataset", root / "datasets", "--output", tmp_path / "out", "--config-file", config,
                    "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["lr"] == 3e-4 and printed["eval_interval"] is None
    assert printed["arch"]["expansion"] == 4 and isinstance(printed["arch"]["expansion"], int)


@pytest.mark.parametrize("stage, flag, value", [
    ("analyze", "--tol", "nan"), ("analyze", "--noise-std", "inf"), ("analyze", "--landscape-divisor", "nan"),
    ("analyze", "--cluster-tol", "-1"), ("shard", "--shard-max-mb", "nan"),
])
def test_float_options_of_every_stage_refuse_nan_and_inf(tmp_path, stage, flag, value):
    """Refused while the command line is parsed: before any input is opened (the paths need not exist)."""
    base = {"analyze": ["analyze", "--checkpoint", tmp_path, "--output", tmp_path / "out"],
            "shard": ["shard", "--input", tmp_path, "--output", tmp_path / "out"]}[stage]
    refused(invoke(*base, flag, value), 2, f"'{flag}'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage, line, key", [
    ("analyze", "tol: .nan", "analyze.tol: nan is not a finite number"),
    ("analyze", "segments: lots", "analyze.segments: 'lots' is not a valid integer"),
    ("evaluate", "permutations: .inf", "evaluate.permutations:"),
    ("evaluate", "early_stop: maybe", "evaluate.early_stop:"),
])
def test_evaluate_and_analyze_config_files_are_checked_naming_file_and_key(tmp_path, stage, line, key):
    config = tmp_path / "params.yaml"
    config.write_text(f"{stage}:\n  {line}\n")
    refused(invoke(stage, "--checkpoint", tmp_path, "--output", tmp_path / "out", "--config-file", config), 1,
            f"{config}: {key}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value", [
    ("lr", math.nan), ("lr", math.inf), ("puzzle_emb_lr", "1e-3"), ("epochs", "20"), ("epochs", 2.0), ("resume", 1),
    ("seed", None), ("arch", [1]),
])
def test_train_config_refuses_values_of_the_wrong_type_or_not_finite(field, value):
    with pytest.raises(TrainError, match=rf"{field} must be"):
        TrainConfig(data_path="d", **{field: value})


@pytest.mark.parametrize("field, value", [
    ("expansion", math.inf), ("expansion", 0), ("hidden_size", "128"), ("num_heads", 0), ("H_cycles", True),
    ("halt_exploration_prob", math.nan), ("rms_norm_eps", -1.0),
])
def test_model_config_refuses_values_of_the_wrong_type_or_range(field, value):
    with pytest.raises(ValueError, match=rf"invalid HRMConfig: .*{field}"):
        HRMConfig(**{field: value})


@pytest.mark.parametrize("value", ["gauss", "fork,gauss", ","])
def test_analyze_refuses_an_unknown_noise_kind(tmp_path, value):
    refused(invoke("analyze", "--checkpoint", tmp_path, "--output", tmp_path / "out", "--noise", value), 2,
            "Invalid value for --noise", "fork, iid")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- issue 26, class 3: every number has a range


def _commands():
    """Every command of `hrm`, sub-commands of groups included: (name, click.Command)."""
    import click

    from pipelines.cli import COMMANDS, LazyGroup

    group = LazyGroup()
    for name in COMMANDS:
        command = group.get_command(None, name)
        if isinstance(command, click.Group):
            yield from ((f"{name} {sub}", c) for sub, c in command.commands.items())
        else:
            yield name, command


def test_every_numeric_option_of_every_command_has_a_range():
    """The rule, checked on the commands themselves (a new option without a range fails here): an integer is
    an IntRange with both ends, a float a FiniteFloatRange; every --seed is the shared SEED range, every
    --num-threads the shared THREADS range (pipelines/io.py)."""
    import click

    from pipelines.io import SEED, THREADS, FiniteFloatRange

    unbounded = []
    for name, command in _commands():
        for param in command.params:
            t, where = param.type, f"hrm {name} {param.opts[0]}"
            if isinstance(t, click.types.IntParamType) and not (isinstance(t, click.IntRange) and t.min is not None
                                                               and t.max is not None):
                unbounded.append(where)
            if isinstance(t, click.types.FloatParamType) and not isinstance(t, FiniteFloatRange):
                unbounded.append(where)
            if param.name == "seed" and t is not SEED or param.name == "num_threads" and t is not THREADS:
                unbounded.append(f"{where} (not the shared range)")
    assert unbounded == []


@pytest.mark.parametrize("seed", [0, 1, 2**31, 2**32 - 1])
def test_numpy_and_torch_take_every_seed_of_the_shared_range(seed):
    """The range's ends and middle, through what the stages call with a seed: numpy's SeedSequence and
    Generator (the dataset stages' stage_rng, raw's derived seeds) and torch.manual_seed (train, analyze)."""
    import numpy as np
    import torch

    from pipelines.dataset_io import stage_rng
    from pipelines.io import SEED
    from pipelines.raw import derive_seeds

    assert SEED.convert(str(seed), None, None) == seed
    stage_rng(seed, "augment").integers(10)
    derive_seeds(seed)
    np.random.default_rng(seed).random()
    assert torch.manual_seed(seed).initial_seed() == seed


SEED_STAGES = {
    "raw": ["raw", "--output", "{out}"], "subsample": ["subsample", "--input", "{tmp}", "--output", "{out}"],
    "augment": ["augment", "--input", "{tmp}", "--output", "{out}"], "hints": ["hints", "--input", "{tmp}", "--output", "{out}"],
    "train": ["train", "--dataset", "{tmp}", "--output", "{out}"],
    "evaluate": ["evaluate", "--checkpoint", "{tmp}", "--output", "{out}"],
    "analyze": ["analyze", "--checkpoint", "{tmp}", "--output", "{out}"],
}


@pytest.mark.parametrize("value", ["-1", str(2**32), "99999999999999999999"])
@pytest.mark.parametrize("stage", list(SEED_STAGES))
def test_a_seed_outside_the_shared_range_is_refused_by_every_stage(tmp_path, stage, value):
    args = [a.format(tmp=tmp_path, out=tmp_path / "out") for a in SEED_STAGES[stage]]
    refused(invoke(*args, "--seed", value), 2, "'--seed'", "0<=x<=4294967295")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["train", "evaluate", "analyze"])
def test_num_threads_is_bounded(tmp_path, stage):
    """torch.set_num_threads(1000000) ended in MemoryError (once a segfault): refused while parsing."""
    args = [a.format(tmp=tmp_path, out=tmp_path / "out") for a in SEED_STAGES[stage]]
    refused(invoke(*args, "--num-threads", "1000000"), 2, "'--num-threads'", "0<=x<=1024")


@pytest.mark.parametrize("flag, value", [("--train-size", "1000000000000"), ("--test-size", str(2**31))])
def test_sizes_beyond_the_count_range_are_refused_while_parsing(tmp_path, flag, value):
    refused(invoke("raw", "--output", tmp_path / "out", flag, value), 2, f"'{flag}'", "2147483647")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage, text, key", [
    ("train", "train: {1: 2}", "train: key 1 is not a name"),
    ("train", "train: {arch: {7: 1}}", "train.arch: key 7 is not a name"),
    ("evaluate", "evaluate: {null: 3}", "evaluate: key None is not a name"),
    ("analyze", "analyze: {1.5: 3}", "analyze: key 1.5 is not a name"),
    ("evaluate", "evaluate: {seed: -1}", "evaluate.seed: -1 is not in the range 0<=x<=4294967295"),
    ("analyze", "analyze: {num_threads: 1000000}", "analyze.num_threads: 1000000 is not in the range 0<=x<=1024"),
    ("train", "train: {seed: 4294967296}", "train.seed: 4294967296 is not in the range"),
])
def test_config_file_keys_and_values_get_the_same_checks(tmp_path, stage, text, key):
    """A non-string key (YAML reads `1:` as an int, `null:` as None) ended in a TypeError from sorted();
    config values get the options' ranges (pipelines.settings.file_value checks them as the option's type)."""
    config = tmp_path / "params.yaml"
    config.write_text(text + "\n")
    args = [a.format(tmp=tmp_path, out=tmp_path / "out") for a in SEED_STAGES[stage]]
    refused(invoke(*args, "--config-file", config), 1, f"{config}: {key}")
    assert not (tmp_path / "out").exists()
