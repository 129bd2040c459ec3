"""hrm.train + `hrm train`: real tiny runs on a tiny dataset built through the real stages."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hrm
from hrm.data import PuzzleDataset
from hrm.model import HRM, HRMConfig, SparseEmbeddingSignSGD
from hrm.optim import AdamATan2, cosine_schedule_lr
from hrm.model import step_files
from hrm.train import QUICK_ARCH, TrainConfig, TrainError
from pipelines.train_run import STATE_NAME
from pipelines.train_run import run as train
from pipelines.cli import cli

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = dict(hidden_size=32, num_heads=2, expansion=2, H_layers=1, L_layers=1, H_cycles=2, L_cycles=1, halt_max_steps=3,
                 halt_exploration_prob=0.2, puzzle_emb_ndim=32)
TINY_FLAGS = ["--hidden-size", "32", "--num-heads", "2", "--expansion", "2", "--h-layers", "1", "--l-layers", "1",
              "--h-cycles", "2", "--l-cycles", "1", "--halt-max-steps", "3", "--halt-exploration-prob", "0.2",
              "--puzzle-emb-ndim", "32"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ok(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The shard stage's output for 24 generated train puzzles (x4 with augmentation, x2 with hints), 12 test."""
    root = tmp_path_factory.mktemp("train_data")
    ok("raw", "--source", "builtin", "--output", root / "raw", "--seed", 5, "--train-size", 24, "--test-size", 12)
    ok("subsample", "--input", root / "raw", "--output", root / "subsample", "--seed", 5, "--subsample-size", 0, "--test-size", 0)
    ok("augment", "--input", root / "subsample", "--output", root / "augment", "--seed", 5, "--num-aug", 3)
    ok("hints", "--input", root / "augment", "--output", root / "hints", "--seed", 5, "--enabled", "true")
    ok("shard", "--input", root / "hints", "--output", root / "datasets")
    return root / "datasets"


@pytest.fixture(scope="module")
def hint_dir(data) -> Path:
    return data / json.loads((data / "datasets.json").read_text())["hint"]


def tiny_cfg(hint_dir, out, **kw):
    base = dict(data_path=str(hint_dir), arch=dict(TINY_ARCH), global_batch_size=8, epochs=6, eval_interval=2, lr=3e-3,
                lr_warmup_steps=4, lr_min_ratio=0.1, output_dir=str(out), progress=False, eval_size=8)
    return TrainConfig(**{**base, **kw})


def quiet(*_):
    pass


def state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def history(out: Path, name: str) -> list[dict[str, str]]:
    """The run's ``name`` (train / eval) history: one row per step, as dvclive wrote it (one TSV per metric)."""
    rows: dict[int, dict[str, str]] = {}
    for path in sorted((out / "dvclive" / "plots" / "metrics" / name).glob("*.tsv")):
        with open(path, newline="") as f:
            for r in csv.DictReader(f, delimiter="\t"):
                rows.setdefault(int(r["step"]), {"step": r["step"]})[path.stem] = r[path.stem]
    return [rows[k] for k in sorted(rows)]


def histories(out: Path) -> dict[str, bytes]:
    """Every history file's bytes (dvclive/plots/metrics/**.tsv)."""
    base = out / "dvclive" / "plots"
    return {str(f.relative_to(base)): f.read_bytes() for f in sorted(base.rglob("*.tsv"))}


def run_metrics(out: Path) -> dict:
    return json.loads((out / "dvclive" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference_run(hint_dir, tmp_path_factory):
    """One uninterrupted tiny run (18 steps, 3 evaluations): the baseline of the resume tests."""
    out = tmp_path_factory.mktemp("ref")
    result = train(tiny_cfg(hint_dir, out), log=quiet)
    return out, result


# ----------------------------------------------------------------------------- semantics


def test_trainer_equals_official_loop(hint_dir, tmp_path):
    """One block, no evaluation in between: the same weights as the official loop written out by hand."""
    cfg = tiny_cfg(hint_dir, tmp_path, epochs=4, eval_interval=4, checkpoint_every_eval=False)
    result = train(cfg, log=quiet)
    assert result.step == result.total_steps == 12  # floor(4 epochs x 24 groups / 8)

    ds = PuzzleDataset(hint_dir, "train")
    torch.random.manual_seed(cfg.seed)
    model = HRM(HRMConfig(**{k: v for k, v in TINY_ARCH.items()}, batch_size=8, forward_dtype="float32"))
    official_loop(cfg, ds, model)
    assert state_equal(result.model, model)

    rows = history(tmp_path, "train")
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    for r in rows:
        s = int(r["step"])
        assert float(r["lr"]) == pytest.approx(cosine_schedule_lr(s, base_lr=cfg.lr, warmup_steps=4, total_steps=12, min_ratio=0.1), rel=1e-6)
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["exact_accuracy"]) <= 1
        assert float(r["steps"]) == 0 or 1 <= float(r["steps"]) <= 3
    assert [p.name for _, p in step_files(tmp_path / "checkpoints")] == ["step_12"]


def official_loop(cfg, ds, model, after_step=None) -> None:
    """The official pretrain.py loop by hand on ``model`` (12 steps of 8, 4 epochs in one block): sign-SGD on the
    puzzle embedding, AdamATan2 on the rest, both on the cosine schedule; ``after_step(model)`` after each step."""
    opts = [SparseEmbeddingSignSGD(model.puzzle_emb.buffers(), lr=0, weight_decay=cfg.puzzle_emb_weight_decay),
            AdamATan2(model.parameters(), lr=0, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))]
    carry = None
    model.train()
    for step, batch in enumerate(ds.train_batches(global_batch_size=8, seed=cfg.seed, block=0, epochs_per_block=4), start=1):
        batch = {k: batch[k] for k in ("inputs", "labels", "puzzle_identifiers")}
        carry = model.initial_carry(batch) if carry is None else carry
        carry, loss, _, _, _ = model(carry, batch)
        (loss / 8).backward()
        for opt, base in zip(opts, [cfg.puzzle_emb_lr, cfg.lr]):
            for g in opt.param_groups:
                g["lr"] = cosine_schedule_lr(step, base_lr=base, warmup_steps=cfg.lr_warmup_steps, total_steps=12, min_ratio=cfg.lr_min_ratio)
            opt.step()
            opt.zero_grad()
        if after_step is not None:
            after_step(model)


def test_ema_is_the_references_average_evaluated_and_saved(hint_dir, tmp_path):
    """TrainConfig.ema: the official loop's weights are untouched; the step_N saved (and evaluated) holds the
    average the reference's EMAHelper keeps (registered at the start, (1 - rate) * w + rate * shadow after every
    optimiser step), the puzzle embedding the live one; all_config.yaml records ema and ema_rate."""
    import copy

    cfg = tiny_cfg(hint_dir, tmp_path, epochs=4, eval_interval=4, checkpoint_every_eval=False, ema=True, ema_rate=0.9)
    result = train(cfg, log=quiet)
    ds = PuzzleDataset(hint_dir, "train")
    torch.random.manual_seed(cfg.seed)
    model = HRM(HRMConfig(**TINY_ARCH, batch_size=8, forward_dtype="float32"))
    shadow = {n: p.detach().clone() for n, p in model.named_parameters()}
    def average(model):
        nonlocal shadow
        shadow = {n: (1.0 - 0.9) * p.detach() + 0.9 * shadow[n] for n, p in model.named_parameters()}

    official_loop(cfg, ds, model, after_step=average)
    assert state_equal(result.model, model)  # the average trains nothing
    averaged = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in averaged.named_parameters():
            p.copy_(shadow[n])
    saved = hrm.load_checkpoint(tmp_path / "checkpoints", device="cpu", note=quiet)
    assert state_equal(saved, averaged) and not state_equal(saved, model)
    assert torch.equal(saved.puzzle_emb.weights, model.puzzle_emb.weights)
    conf = yaml.safe_load((tmp_path / "checkpoints" / "all_config.yaml").read_text())
    assert conf["ema"] is True and conf["ema_rate"] == 0.9


TRM_NAME = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
TINY_TRM = dict(TINY_ARCH, name=TRM_NAME, mlp_t=True, pos_encodings="none")  # TRM's Sudoku variant, tiny


def test_resume_with_ema_equals_uninterrupted(hint_dir, tmp_path):
    """A TRM run with EMA, as TRM's runs train: the shadow is in train_state.pt, so stopped mid-block and resumed,
    every step_N (the averages) and the history are bit for bit those of the uninterrupted run. Then the same
    folder trained as an HRM: the log names both architectures, and the TRM run is kept aside."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    ref = train(tiny_cfg(hint_dir, whole, arch=TINY_TRM, ema=True, ema_rate=0.9), log=quiet)
    cfg = tiny_cfg(hint_dir, parts, arch=TINY_TRM, ema=True, ema_rate=0.9)
    first = train(cfg, callback=stop_at(8, KeyboardInterrupt), log=quiet)
    assert first.interrupted and set(torch.load(parts / STATE_NAME, weights_only=True)["ema"]) == \
        {n for n, _ in ref.model.named_parameters()}
    shutil.rmtree(parts / "dvclive")
    second = train(cfg, log=quiet)
    assert type(second.model).__name__ == "TRM" and second.step == 18 and state_equal(second.model, ref.model)
    assert histories(parts) == histories(whole)
    for n in (6, 12, 18):
        a, b = torch.load(parts / "checkpoints" / f"step_{n}"), torch.load(whole / "checkpoints" / f"step_{n}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), n

    said = []
    train(tiny_cfg(hint_dir, parts, ema=True, ema_rate=0.9), callback=stop_at(1, KeyboardInterrupt),
          log=lambda *words: said.append(" ".join(map(str, words))))
    assert any(f"the saved run trained {TRM_NAME}, this run trains hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
               in line for line in said), said
    kept = parts / "previous-runs" / "1" / "checkpoints" / "step_18"
    assert torch.load(kept).keys() == torch.load(whole / "checkpoints" / "step_18").keys()


def test_an_explicit_hrm_name_trains_and_writes_what_no_name_does(data, tmp_path):
    """params.yaml names HRM (train.arch.name, for the profiles to switch): the checkpoints and all_config.yaml are
    byte for byte those of a file without the name."""
    runs = {}
    for label, arch in (("unnamed", {}), ("named", {"name": hrm.model.get_architecture().name})):
        params = tmp_path / f"{label}.yaml"
        params.write_text(yaml.safe_dump({"train": {"epochs": 2, "eval_interval": 2, "global_batch_size": 8, "eval_size": 8,
                                                    "arch": {**arch, **TINY_ARCH}}}))
        out = tmp_path / "out"
        ok("train", "--dataset", data, "--output", out, "--config-file", params, "--no-progress", "--num-threads", "1")
        runs[label] = {f.name: f.read_bytes() for f in sorted((out / "checkpoints").iterdir())}
        shutil.rmtree(out)
    assert runs["named"] == runs["unnamed"] and "all_config.yaml" in runs["named"]


def test_outputs_layout_and_checkpoints(hint_dir, reference_run):
    out, result = reference_run
    ckpt = out / "checkpoints"
    assert [n for n, _ in step_files(ckpt)] == [6, 12, 18]
    assert result.checkpoint == ckpt / "step_18" and not result.interrupted

    # Official format: a plain state dict with the official keys, all_config.yaml beside it.
    state = torch.load(ckpt / "step_18", weights_only=True)
    assert set(state) == set(result.model.state_dict())
    assert all(k.startswith("model.inner.") for k in state)
    conf = yaml.safe_load((ckpt / "all_config.yaml").read_text())
    for key in ("data_path", "global_batch_size", "epochs", "lr", "lr_min_ratio", "lr_warmup_steps", "weight_decay", "beta1", "beta2",
                "puzzle_emb_lr", "puzzle_emb_weight_decay", "seed", "eval_interval", "checkpoint_every_eval", "arch"):
        assert key in conf, key
    assert conf["arch"]["name"].endswith("@HierarchicalReasoningModel_ACTV1")
    assert conf["arch"]["loss"] == {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}
    assert conf["arch"]["hidden_size"] == 32 and conf["epochs"] == 6 and conf["data_path"] == str(hint_dir)

    loaded = hrm.load_checkpoint(ckpt, device="cpu")  # the folder: its latest step_N
    assert state_equal(loaded, result.model)
    pred = loaded.predict(PuzzleDataset(hint_dir, "test").gather([0, 1])["inputs"])
    assert pred.predictions.shape == (2, 81)

    metrics = run_metrics(out)
    assert metrics["step"] == metrics["total_steps"] == 18
    for key in ("lm_loss", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lr", "q_halt_loss", "q_continue_loss"):
        assert key in metrics["train"], key
    for key in ("lm_loss", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps"):
        assert key in metrics["eval"], key
    assert metrics["eval"]["count"] == 8 and metrics["eval"]["steps"] == 3  # eval: every row runs halt_max_steps
    train_rows = history(out, "train")
    eval_rows = history(out, "eval")
    assert [int(r["step"]) for r in train_rows] == list(range(1, 19))
    assert [int(r["step"]) for r in eval_rows] == [6, 12, 18]
    assert float(eval_rows[-1]["accuracy"]) == pytest.approx(metrics["eval"]["accuracy"], rel=1e-6)
    # It learns something: the last steps' loss is below the first steps'.
    losses = [float(r["lm_loss"]) for r in train_rows]
    assert sum(losses[-4:]) < sum(losses[:4])


def test_keep_checkpoints_and_every_eval(hint_dir, tmp_path):
    train(tiny_cfg(hint_dir, tmp_path / "a", keep_checkpoints=2), log=quiet)
    assert [n for n, _ in step_files(tmp_path / "a" / "checkpoints")] == [12, 18]
    train(tiny_cfg(hint_dir, tmp_path / "b", checkpoint_every_eval=False), log=quiet)
    assert [n for n, _ in step_files(tmp_path / "b" / "checkpoints")] == [18]
    assert (tmp_path / "b" / STATE_NAME).is_file()


def test_library_loop_keeps_everything_in_memory(hint_dir, reference_run, tmp_path, monkeypatch):
    """hrm.train.train without hooks writes no file (the run folder is the stage's) and trains the same weights."""
    from hrm.train import train as train_in_memory

    ref_out, ref = reference_run
    monkeypatch.chdir(tmp_path)
    result = train_in_memory(tiny_cfg(hint_dir, tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []
    assert state_equal(result.model, ref.model) and result.checkpoint is None and result.step == 18
    assert result.metrics["eval"] == run_metrics(ref_out)["eval"]


def test_params_yaml_train_section_is_the_quick_profile():
    """params.yaml's train section, the CLI defaults and TrainConfig are one profile."""
    from pipelines.train import quick_default

    section = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    arch = section.pop("arch")
    assert arch.pop("name") == hrm.model.get_architecture().name  # HRM's, named (profiles switch it)
    assert arch == QUICK_ARCH
    section.pop("variant")
    assert {k: quick_default(k) for k in section} == section


# ----------------------------------------------------------------------------- resume


def stop_at(step, exc):
    def callback(s, metrics):
        if s == step:
            raise exc
    return callback


def test_resume_after_ctrl_c_equals_uninterrupted(hint_dir, reference_run, tmp_path):
    ref_out, ref = reference_run
    cfg = tiny_cfg(hint_dir, tmp_path)
    first = train(cfg, callback=stop_at(8, KeyboardInterrupt), log=quiet)  # mid-block: saves the state at step 8
    assert first.interrupted and first.step == 8
    assert torch.load(tmp_path / STATE_NAME, weights_only=True)["step"] == 8
    shutil.rmtree(tmp_path / "dvclive")  # `dvc repro` deletes a stage's non-persistent outputs before rerunning it
    logs = []
    second = train(cfg, log=logs.append)
    assert any("resuming" in m and "step 8" in m for m in logs)
    assert second.step == 18 and not second.interrupted
    assert state_equal(second.model, ref.model)
    assert histories(tmp_path) == histories(ref_out)
    for n in (6, 12, 18):
        assert torch.equal(torch.load(tmp_path / "checkpoints" / f"step_{n}")["model.inner.lm_head.weight"],
                           torch.load(ref_out / "checkpoints" / f"step_{n}")["model.inner.lm_head.weight"])


def test_resume_after_crash_from_last_evaluation(hint_dir, reference_run, tmp_path):
    ref_out, ref = reference_run
    cfg = tiny_cfg(hint_dir, tmp_path)
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, callback=stop_at(15, RuntimeError("power cut")), log=quiet)  # state of step 12 on disk
    logs = []
    again = train(cfg, log=logs.append)
    assert any("resuming" in m and "step 12" in m for m in logs)
    assert state_equal(again.model, ref.model)
    assert histories(tmp_path) == histories(ref_out)
    assert run_metrics(tmp_path)["eval"] == run_metrics(ref_out)["eval"]

    # Finished: asked again (`dvc repro -f`, changed code), it trains again from the start: same result.
    logs.clear()
    done = train(cfg, log=logs.append)
    assert any("complete (18/18 steps); starting over" in m for m in logs)
    assert done.step == 18 and state_equal(done.model, ref.model)
    assert histories(tmp_path) == histories(ref_out)


def test_changed_settings_start_over(hint_dir, tmp_path):
    train(tiny_cfg(hint_dir, tmp_path, epochs=2), log=quiet)
    assert [n for n, _ in step_files(tmp_path / "checkpoints")] == [6]
    logs = []
    result = train(tiny_cfg(hint_dir, tmp_path, epochs=2, lr=1e-3), log=logs.append)
    assert any("different settings (lr)" in m for m in logs)
    assert result.step == 6 and len(history(tmp_path, "train")) == 6
    fresh = train(tiny_cfg(hint_dir, tmp_path / "fresh", epochs=2, lr=1e-3), log=quiet)
    assert state_equal(result.model, fresh.model)
    # resume=False starts over even with the same settings.
    logs.clear()
    train(tiny_cfg(hint_dir, tmp_path, epochs=2, lr=1e-3, resume=False), log=logs.append)
    assert not any("resuming" in m for m in logs)


def test_starting_over_moves_the_previous_run_aside(hint_dir, tmp_path):
    """A run that cannot be continued starts over without deleting the old one: its files move to
    OUT/previous-runs/N, named in the message, byte for byte."""
    from pipelines.train_run import PREVIOUS_RUNS

    train(tiny_cfg(hint_dir, tmp_path, epochs=2), log=quiet)
    old = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
           if p.is_file() and "wandb" not in p.parts and p.name != ".train.lock"}
    assert {str(p) for p in old} >= {"checkpoints/step_6", "checkpoints/step_6.sha256", "train_state.pt", "train_state.pt.sha256",
                                      "checkpoints/all_config.yaml", "dvclive/metrics.json", "run.json",
                                      "dvclive/plots/metrics/train/lm_loss.tsv", "dvclive/plots/metrics/eval/accuracy.tsv"}
    logs = []
    train(tiny_cfg(hint_dir, tmp_path, epochs=2, lr=1e-3), log=logs.append)
    kept = tmp_path / PREVIOUS_RUNS / "1"
    assert any(f"previous run's files are kept in {kept}" in m for m in logs)
    assert {p: (kept / p).read_bytes() for p in old} == old
    assert (tmp_path / "checkpoints" / "step_6").read_bytes() != old[Path("checkpoints/step_6")]  # the new run's
    train(tiny_cfg(hint_dir, tmp_path, epochs=2, lr=2e-3), log=quiet)
    assert (tmp_path / PREVIOUS_RUNS / "2" / "checkpoints" / "step_6").is_file()


def test_a_second_process_on_the_same_run_is_refused(data, hint_dir, tmp_path):
    from pipelines.io import StageError
    from pipelines.train_run import run_lock

    with run_lock(tmp_path):  # as another `hrm train` holds it
        with pytest.raises(StageError, match=f"{tmp_path}: another `hrm train` \\(pid {os.getpid()}\\) is writing"):
            train(tiny_cfg(hint_dir, tmp_path, epochs=2), log=quiet)
        result = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--output", str(tmp_path), *TINY_FLAGS, "--epochs", "2",
                                          "--eval-interval", "2", "--global-batch-size", "8", "--no-progress"])
        assert result.exit_code == 1 and "is writing this run folder" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "checkpoints").exists()
    assert train(tiny_cfg(hint_dir, tmp_path, epochs=2), log=quiet).step == 6  # free again


def test_config_errors(hint_dir, tmp_path):
    with pytest.raises(TrainError, match="eval_interval"):
        tiny_cfg(hint_dir, tmp_path, epochs=5, eval_interval=2)
    with pytest.raises(TrainError, match="unknown arch keys: hiden_size"):
        tiny_cfg(hint_dir, tmp_path, arch={**TINY_ARCH, "hiden_size": 3})
    with pytest.raises(TrainError, match="less than one global batch"):
        train(tiny_cfg(hint_dir, tmp_path, global_batch_size=64, epochs=2, eval_interval=1), log=quiet)


# ----------------------------------------------------------------------------- tracking


def test_wandb_offline_writes_run_files(hint_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train(tiny_cfg(hint_dir, tmp_path, epochs=2, wandb_mode="offline", run_name="tiny"), log=quiet)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # W&B's service process may still be flushing the run file when finish() returns (seen on a busy machine).
    names = (b"train/lm_loss", b"eval/exact_accuracy")
    deadline = time.time() + 30
    while not all(n in (data := next(runs[0].glob("run-*.wandb")).read_bytes()) for n in names) and time.time() < deadline:
        time.sleep(0.2)
    for name in (b"train/lm_loss", b"train/accuracy", b"train/exact_accuracy", b"train/q_halt_accuracy", b"train/steps",
                 b"train/lr", b"eval/accuracy", b"eval/exact_accuracy"):
        assert name in data, name
    assert result.step == 6


# ----------------------------------------------------------------------------- CLI


def test_cli_train_and_config_file(data, hint_dir, tmp_path):
    out = tmp_path / "out"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"epochs": 4, "eval_interval": 2, "global_batch_size": 8, "eval_size": 8,
                                                "arch": {"hidden_size": 64}, "keep_checkpoints": 1}}))
    result = ok("train", "--dataset", data, "--output", out, "--config-file", params, *TINY_FLAGS, "--no-progress",
                "--num-threads", "1")
    assert "12 steps of 8" in result.output
    conf = yaml.safe_load((out / "checkpoints" / "all_config.yaml").read_text())
    assert conf["arch"]["hidden_size"] == 32  # the command line wins over the file
    assert conf["epochs"] == 4 and conf["data_path"] == str(hint_dir)  # --variant hint (default) from datasets.json
    assert [n for n, _ in step_files(out / "checkpoints")] == [12]
    assert run_metrics(out)["step"] == 12


def test_cli_profiles_and_precedence(data, hint_dir, tmp_path):
    paper = yaml.safe_load(ok("train", "--dataset", data, "--profile", "paper", "--print-config").output)
    assert paper["arch"]["hidden_size"] == 512 and paper["arch"]["H_layers"] == 4 and paper["arch"]["halt_max_steps"] == 16
    assert (paper["global_batch_size"], paper["epochs"], paper["eval_interval"]) == (768, 20000, 2000)
    assert (paper["lr"], paper["lr_min_ratio"], paper["lr_warmup_steps"], paper["weight_decay"]) == (1e-4, 1.0, 2000, 1.0)
    assert (paper["puzzle_emb_lr"], paper["puzzle_emb_weight_decay"], paper["eval_size"]) == (1e-4, 1.0, None)
    assert paper["data_path"] == str(hint_dir)
    quick = yaml.safe_load(ok("train", "--dataset", data, "--variant", "vanilla", "--print-config").output)
    assert quick == {**TrainConfig(data_path=quick["data_path"], output_dir="data/models/hrm").to_dict(),
                     "arch": quick["arch"]}  # the CLI defaults are the library's
    assert quick["arch"] == QUICK_ARCH
    assert quick["data_path"].endswith("-aug-3")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"stages": {"train": {"profile": "paper", "lr": 5e-4, "hidden_size": 256}}}))
    got = yaml.safe_load(ok("train", "--dataset", data, "--config-file", params, "--section", "stages.train", "--lr", "7e-4",
                            "--print-config").output)
    assert got["lr"] == 7e-4 and got["arch"]["hidden_size"] == 256 and got["global_batch_size"] == 768


def test_cli_errors(data, hint_dir, tmp_path):
    def fails(*args):
        result = CliRunner().invoke(cli, ["train", *map(str, args)])
        assert result.exit_code != 0
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
        return result.output

    assert "dataset not found" in fails("--dataset", tmp_path / "nope", "--output", tmp_path / "o")
    bad = tmp_path / "bad"
    shutil.copytree(hint_dir, bad)
    shard = next((bad / "train").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-100])
    msg = fails("--dataset", bad, "--output", tmp_path / "o")
    assert shard.name in msg and "Traceback" not in msg
    assert "must be a positive divisor" in fails("--dataset", data, "--output", tmp_path / "o", "--epochs", "5", "--eval-interval", "2")
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  epoch: 3\n")
    assert "unknown key(s) in train: epoch" in fails("--dataset", data, "--output", tmp_path / "o", "--config-file", params)
    (data_copy := tmp_path / "dsets").mkdir()
    shutil.copytree(hint_dir, data_copy / "x")  # datasets.json names folders that are there (its schema)
    (data_copy / "datasets.json").write_text(json.dumps({"vanilla": "x", "hint": None}))
    assert "no 'hint' dataset" in fails("--dataset", data_copy, "--output", tmp_path / "o")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(REPO))
    return env


def test_cli_sigint_then_resume_equals_uninterrupted(data, hint_dir, tmp_path):
    """A real `hrm train` process stopped with SIGINT mid-run exits 130; the same command finishes the run exactly."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "pipelines.train", "--dataset", str(data), "--output", str(out), *TINY_FLAGS,
            "--global-batch-size", "8", "--epochs", "30", "--eval-interval", "10", "--eval-size", "8", "--lr", "3e-3",
            "--lr-warmup-steps", "4", "--num-threads", "1", "--no-progress"]
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    csv_path = out / "dvclive" / "plots" / "metrics" / "train" / "lm_loss.tsv"
    deadline = time.time() + 60
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 6):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    stopped = torch.load(out / STATE_NAME, weights_only=True)["step"]
    assert 0 < stopped < 90
    done = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {out / STATE_NAME} at step {stopped}/90" in done.stderr

    ref = train(tiny_cfg(hint_dir, tmp_path / "ref", epochs=30, eval_interval=10, lr=3e-3, lr_warmup_steps=4, num_threads=1), log=quiet)
    assert torch.equal(torch.load(out / "checkpoints" / "step_90")["model.inner.lm_head.weight"],
                       ref.model.state_dict()["model.inner.lm_head.weight"])
    final = torch.load(out / "checkpoints" / "step_90")
    assert all(torch.equal(final[k], v) for k, v in ref.model.state_dict().items())


# ----------------------------------------------------------------------------- distributed


DDP_SCRIPT = """
import os, sys, torch
from hrm.train import TrainConfig
from pipelines.train_run import run as train
arch = {arch!r}
cfg = TrainConfig(data_path={data!r}, arch=arch, global_batch_size=8, epochs=4, eval_interval=2, lr=3e-3, lr_warmup_steps=4,
                  output_dir=sys.argv[1], progress=False, eval_size=8, num_threads=1)
result = train(cfg)
if int(os.environ.get("RANK", "0")) == 0:
    torch.save(result.model.state_dict(), os.path.join(sys.argv[1], "final.pt"))
else:
    assert result.metrics == {{}} and result.checkpoint is None
"""


def test_ddp_two_processes_match_one(hint_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo), global batch 8 = 2 x 4, equals one process with batch 8."""
    arch = {**TINY_ARCH, "halt_exploration_prob": 0.0}  # exploration draws are per rank: switch them off to compare
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(arch=arch, data=str(hint_dir)))
    one = train(tiny_cfg(hint_dir, tmp_path / "one", arch=arch, epochs=4), log=quiet)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path / "two")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for k, v in one.model.state_dict().items():
        assert torch.allclose(two[k], v, rtol=1e-4, atol=1e-5), k
    # Only rank 0 wrote outputs; metrics reduced over both ranks.
    m1 = run_metrics(tmp_path / "one")
    m2 = run_metrics(tmp_path / "two")
    assert m2["eval"]["count"] == m1["eval"]["count"] == 8
    assert m2["eval"]["accuracy"] == pytest.approx(m1["eval"]["accuracy"], abs=1e-3)
    assert m2["train"]["lm_loss"] == pytest.approx(m1["train"]["lm_loss"], rel=1e-3)
    assert [n for n, _ in step_files(tmp_path / "two" / "checkpoints")] == [6, 12]
    assert len(history(tmp_path / "two", "train")) == one.total_steps


DDP_RESUME_SCRIPT = """
import os, sys, torch, torch.distributed as dist
from hrm.train import TrainConfig
from pipelines.train_run import run as train
dist.init_process_group("gloo")  # one group for the three runs (train() leaves a group it did not create)
rank, root = dist.get_rank(), sys.argv[1]
def cfg(name):
    return TrainConfig(data_path={data!r}, arch={arch!r}, global_batch_size=8, epochs=4, eval_interval=2, lr=3e-3,
                       lr_warmup_steps=4, output_dir=os.path.join(root, name), progress=False, eval_size=8, num_threads=1)
def stop_on_rank_1(step, metrics):
    if rank == 1 and step == 4:  # mid-block (6 steps per block): as if only rank 1 got the signal
        raise KeyboardInterrupt
whole = train(cfg("whole"))
stopped = train(cfg("parts"), callback=stop_on_rank_1)
resumed = train(cfg("parts"))
if rank == 0:
    torch.save({{"whole": whole.model.state_dict(), "resumed": resumed.model.state_dict(),
                "stopped": (stopped.interrupted, stopped.step), "resumed_steps": resumed.step}}, os.path.join(root, "out.pt"))
dist.destroy_process_group()
"""


def test_ddp_stop_mid_block_then_resume_equals_uninterrupted(hint_dir, tmp_path):
    """Under torchrun a stop request reaching one rank stops every rank after the same step, the state
    (both ranks' carries and RNGs) is saved mid-block, and the resumed run ends bit-identical. On TRM (HRM's
    DDP: test_ddp_two_processes_match_one; HRM's resume: test_cli_sigint_then_resume_equals_uninterrupted)."""
    script = tmp_path / "ddp_resume.py"
    script.write_text(DDP_RESUME_SCRIPT.format(arch=dict(TINY_TRM), data=str(hint_dir)))
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["stopped"] == (True, 5)  # rank 1 asked at step 4; the request travels with step 5's reduce
    assert out["resumed_steps"] == 12
    assert out["whole"].keys() == out["resumed"].keys()
    for k, v in out["whole"].items():
        assert torch.equal(out["resumed"][k], v), k
    assert "resuming from" in proc.stderr and any("mlp_t" in k for k in out["whole"])
