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
