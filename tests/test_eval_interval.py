"""Issue 15: `-S` on one param never needs a second one (eval_interval vs epochs).

An eval_interval above epochs (`dvc exp run -S train.epochs=2` with params.yaml's interval of 10)
is lowered to epochs: one block, one evaluation and checkpoint at the end, said in one log line,
recorded as the effective value (all_config.yaml, --print-config, the resume key). An interval
that is at most epochs but does not divide it is refused, naming the nearest divisors, the
params.yaml key / -S and --eval-interval. A config whose interval divides epochs is unchanged.
"""

import shutil

import pytest
import torch
import yaml
from click.testing import CliRunner

from hrm.model import step_files
from hrm.train import PAPER_PROFILE, TrainConfig, TrainError
from pipelines.cli import cli
from pipelines.train_run import STATE_NAME
from pipelines.train_run import run as train

from test_train import TINY_ARCH, TINY_FLAGS, data, hint_dir, ok  # noqa: F401 - the tiny real dataset of the trainer tests (module fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLAMP_LINE = "eval_interval 10 > epochs 2: evaluating once, after epoch 2"


def tiny_cfg(hint_dir, out, **kw):
    base = dict(data_path=str(hint_dir), arch=dict(TINY_ARCH), global_batch_size=8, epochs=2, eval_interval=10, lr=3e-3,
                lr_warmup_steps=4, lr_min_ratio=0.1, output_dir=str(out), progress=False, eval_size=8)
    return TrainConfig(**{**base, **kw})


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def stop_at(step):
    def callback(s, metrics):
        if s == step:
            raise KeyboardInterrupt
    return callback


# ----------------------------------------------------------------------------- the config


def test_dividing_interval_is_unchanged():
    for epochs, interval in ((20, 10), (4, 2), (4, 4), (20000, 2000), (3, None)):
        cfg = TrainConfig(data_path="x", epochs=epochs, eval_interval=interval)
        assert cfg.eval_interval == interval and cfg.eval_interval_requested is None
        assert cfg.epochs_per_block == (interval or epochs)
        assert "eval_interval_requested" not in cfg.to_dict()
    assert (PAPER_PROFILE["epochs"], PAPER_PROFILE["eval_interval"]) == (20000, 2000)  # divides: the official semantics


def test_interval_above_epochs_is_lowered_to_epochs():
    cfg = TrainConfig(data_path="x", epochs=2, eval_interval=10)
    assert (cfg.eval_interval, cfg.eval_interval_requested, cfg.epochs_per_block) == (2, 10, 2)
    assert cfg.to_dict() == TrainConfig(data_path="x", epochs=2, eval_interval=2).to_dict()  # records what runs
    assert cfg == TrainConfig(data_path="x", epochs=2, eval_interval=2)


@pytest.mark.parametrize("epochs, interval, below, above", [(15, 10, 5, 15), (5, 2, 1, 5), (20000, 3000, 2500, 4000), (12, 5, 4, 6)])
def test_non_divisor_names_the_nearest_divisors(epochs, interval, below, above):
    with pytest.raises(TrainError) as e:
        TrainConfig(data_path="x", epochs=epochs, eval_interval=interval)
    msg = str(e.value)
    assert f"eval_interval ({interval}) must be a positive divisor of epochs ({epochs})" in msg
    assert f"set eval_interval to {below} or {above}, or epochs to a multiple of {interval}" in msg
    assert "--" not in msg and "train." not in msg  # the library stays generic; the CLI adds its keys


def test_zero_interval_still_refused():
    with pytest.raises(TrainError, match="eval_interval"):
        TrainConfig(data_path="x", epochs=4, eval_interval=0)


# ----------------------------------------------------------------------------- real tiny runs


def test_interval_above_epochs_trains_with_one_evaluation_at_the_end_and_resumes(hint_dir, tmp_path):
    ref = train(tiny_cfg(hint_dir, tmp_path / "ref", eval_interval=2), log=lambda m: None)  # the same run, said exactly
    out = tmp_path / "run"
    first = train(tiny_cfg(hint_dir, out), callback=stop_at(3), log=lambda m: None)  # Ctrl-C mid-block
    assert first.interrupted and first.step == 3
    assert torch.load(out / STATE_NAME, weights_only=True)["step"] == 3
    shutil.rmtree(out / "dvclive")  # `dvc repro` deletes a stage's non-persistent outputs before rerunning it
    logs = []
    second = train(tiny_cfg(hint_dir, out), log=logs.append)  # the same command again: resumes (the key holds the effective 2)
    assert CLAMP_LINE in logs
    assert any("resuming" in m and "step 3" in m for m in logs), logs
    assert not any("starting over" in m for m in logs), logs
    assert not second.interrupted and second.step == second.total_steps == ref.total_steps
    assert [n for n, _ in step_files(out / "checkpoints")] == [second.total_steps]  # exactly one step_N, at the last step
    eval_history = out / "dvclive" / "plots" / "metrics" / "eval" / "accuracy.tsv"
    assert len(eval_history.read_text().strip().splitlines()) == 2  # header + one evaluation
    assert same_weights(second.model, ref.model)
    conf = yaml.safe_load((out / "checkpoints" / "all_config.yaml").read_text())
    ref_conf = yaml.safe_load((tmp_path / "ref" / "checkpoints" / "all_config.yaml").read_text())
    assert conf["eval_interval"] == 2 and conf["epochs"] == 2
    assert {k: v for k, v in conf.items() if k != "checkpoint_path"} == {k: v for k, v in ref_conf.items() if k != "checkpoint_path"}


# ----------------------------------------------------------------------------- the CLI


def test_cli_config_file_epochs_below_interval_needs_no_third_setting(data, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"epochs": 2, "eval_interval": 10, "global_batch_size": 8, "eval_size": 8,
                                                "lr_warmup_steps": 4}}))
    printed = yaml.safe_load(ok("train", "--dataset", data, "--config-file", params, "--print-config").output)
    assert (printed["epochs"], printed["eval_interval"]) == (2, 2)
    out = tmp_path / "out"
    result = ok("train", "--dataset", data, "--output", out, "--config-file", params, *TINY_FLAGS, "--no-progress",
                "--num-threads", "1")
    assert f"train: {CLAMP_LINE}" in result.output
    assert len([n for n, _ in step_files(out / "checkpoints")]) == 1
    steps = yaml.safe_load((out / "dvclive" / "metrics.json").read_text())["step"]
    assert [n for n, _ in step_files(out / "checkpoints")] == [steps]


@pytest.mark.parametrize("how", ["config-file", "flags"])
def test_cli_non_divisor_is_refused_naming_what_to_set(data, tmp_path, how):
    out = tmp_path / "out"
    if how == "config-file":
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({"train": {"epochs": 15, "eval_interval": 10}}))
        args = ["--config-file", params]
    else:
        args = ["--epochs", 15, "--eval-interval", 10]
    result = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--output", str(out), *map(str, args)])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert ("eval_interval (10) must be a positive divisor of epochs (15): set train.eval_interval to 5 or 15 "
            "(params.yaml / -S train.eval_interval=5 / --eval-interval 5), or train.epochs to a multiple of 10 (--epochs)") in result.output
    assert not out.exists()


def test_cli_non_divisor_names_the_section(data, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"stages": {"train": {"epochs": 12, "eval_interval": 5}}}))
    result = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--config-file", str(params), "--section", "stages.train",
                                      "--print-config"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "set stages.train.eval_interval to 4 or 6 (params.yaml / -S stages.train.eval_interval=4 / --eval-interval 4)" in result.output
