"""Issue 14, classes 4, 6 (checkpoints and devices) and 9, on tiny real runs (the real data stages, the real trainer, the real CLI).

Class 4: no step_N and no training state is used unless its bytes match the sha256 recorded
beside it (an official checkpoint, which has none, loads with a note saying so).
Class 9: what the train stage declares to DVC (checkpoints/, dvclive/) is
byte-identical between two runs of the same settings; what is not (the training state with
its timings, run.json, wandb/) lives outside it, and the registry's model content ignores it.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hrm.model import CheckpointError, HRM, HRMConfig, hash_file, load_checkpoint, save_checkpoint, step_files
from hrm.train import TrainConfig
from pipelines.cli import cli
from pipelines.artifacts import content_hash, hash_files, model_files
from pipelines.train_run import PREVIOUS_RUNS, RUN_INFO_NAME, STATE_NAME
from pipelines.train_run import run as train

from test_train import TINY_ARCH, data, hint_dir, ok  # noqa: F401 - the tiny real dataset of the trainer tests (module fixtures)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(hint_dir, out, **kw):
    base = dict(data_path=str(hint_dir), arch=dict(TINY_ARCH), global_batch_size=8, epochs=4, eval_interval=2, lr=3e-3,
                lr_warmup_steps=4, lr_min_ratio=0.1, output_dir=str(out), progress=False, eval_size=8)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def reference_run(hint_dir, tmp_path_factory):
    """One uninterrupted tiny run (12 steps, 2 evaluations)."""
    out = tmp_path_factory.mktemp("integrity_ref")
    return out, train(tiny_cfg(hint_dir, out), log=lambda m: None)


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def stop_at(step, exc):
    def callback(s, metrics):
        if s == step:
            raise exc
    return callback


def copy_run(src: Path, dst: Path) -> Path:
    (dst / "checkpoints").mkdir(parents=True)
    for f in (src / "checkpoints").iterdir():
        (dst / "checkpoints" / f.name).write_bytes(f.read_bytes())
    return dst


# ----------------------------------------------------------------------------- class 4: step_N


def test_every_checkpoint_has_its_sha256_and_loads_verified(reference_run):
    out, result = reference_run
    ckpt = out / "checkpoints"
    assert [n for n, _ in step_files(ckpt)] == [6, 12]
    for _, f in step_files(ckpt):
        side = hash_file(f)
        assert side.read_text() == f"{sha(f)}  {f.name}\n"  # sha256sum format: `cd checkpoints && sha256sum -c step_6.sha256`
    config = ckpt / "all_config.yaml"
    assert hash_file(config).read_text() == f"{sha(config)}  all_config.yaml\n"  # the config is recorded too
    notes = []
    model = load_checkpoint(ckpt / "step_12", device="cpu", note=notes.append)
    assert notes == [] and same_weights(model, result.model)


def test_a_flipped_byte_in_step_n_is_refused_by_load_evaluate_and_analyze(reference_run, hint_dir, tmp_path):
    run_dir = copy_run(reference_run[0], tmp_path / "run")
    bad = run_dir / "checkpoints" / "step_12"
    want = sha(bad)
    flip_byte(bad)
    got = sha(bad)
    assert torch.load(bad, weights_only=True)  # still a loadable state dict: only the hash can tell

    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad, device="cpu")
    assert str(bad) in str(e.value) and want in str(e.value) and got in str(e.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(run_dir / "checkpoints", device="cpu")  # a folder: its latest step_N, the flipped one

    for stage in ("evaluate", "analyze"):
        out = tmp_path / f"{stage}-out"
        r = CliRunner().invoke(cli, [stage, "--checkpoint", str(run_dir), "--dataset", str(hint_dir), "--output", str(out),
                                     "--device", "cpu", "--no-progress"])
        assert r.exit_code == 1, (stage, r.output)
        assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)  # a StageError, no crash
        assert r.output.count("Error:") == 1  # one message
        assert str(bad) in r.output and want in r.output and got in r.output, (stage, r.output)
        assert not out.exists()  # nothing was written from the flipped bytes

    # The same bytes with a hash that matches load: the refusal is the hash, not the file.
    hash_file(bad).write_text(f"{got}  {bad.name}\n")
    assert load_checkpoint(bad, device="cpu", note=lambda m: pytest.fail(m)) is not None


@pytest.mark.parametrize("damage", ["edit", "no-hash"])
def test_an_edited_all_config_beside_a_verified_checkpoint_is_refused(reference_run, hint_dir, tmp_path, damage):
    """Issue 26: halt steps edited in all_config.yaml (every figure would change, exit 0), or its hash
    removed: load_checkpoint, evaluate, analyze and `hrm registry verify`'s check refuse it, naming the
    file (and both hashes for an edit); nothing is written."""
    import yaml

    from pipelines.artifacts import checkpoint_problems

    run_dir = copy_run(reference_run[0], tmp_path / "run")
    config = run_dir / "checkpoints" / "all_config.yaml"
    want = sha(config)
    if damage == "edit":
        cfg = yaml.safe_load(config.read_text())
        cfg["arch"]["halt_max_steps"] = cfg["arch"]["halt_max_steps"] + 1
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        expected = [f"{config}: content does not match its recorded sha256", want, sha(config)]
    else:
        hash_file(config).unlink()
        expected = [f"{config}: no all_config.yaml.sha256 beside it"]
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(run_dir / "checkpoints" / "step_12", device="cpu")
    assert all(text in str(e.value) for text in expected), str(e.value)
    for stage in ("evaluate", "analyze"):
        out = tmp_path / f"{stage}-out"
        r = CliRunner().invoke(cli, [stage, "--checkpoint", str(run_dir), "--dataset", str(hint_dir), "--output", str(out),
                                     "--device", "cpu", "--no-progress"])
        assert r.exit_code == 1 and "Traceback" not in r.output and r.output.count("Error:") == 1, (stage, r.output)
        assert all(text in r.output for text in expected), (stage, r.output)
        assert not out.exists()
    problems = checkpoint_problems(run_dir)
    assert len(problems) == 1 and all(text in problems[0] for text in expected), problems


def test_a_checkpoint_of_nan_weights_is_refused_by_load_evaluate_and_analyze(reference_run, hint_dir, tmp_path):
    """Class 6: weights of a run that diverged, with a hash that matches them (the run wrote them so)."""
    run_dir = copy_run(reference_run[0], tmp_path / "run")
    step = run_dir / "checkpoints" / "step_12"
    state = torch.load(step, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[name][0, 0] = float("nan")
    torch.save(state, step)
    hash_file(step).write_text(f"{sha(step)}  {step.name}\n")

    with pytest.raises(CheckpointError, match="NaN or inf") as e:
        load_checkpoint(step, device="cpu")
    assert str(step) in str(e.value) and name in str(e.value)
    for stage in ("evaluate", "analyze"):
        out = tmp_path / f"{stage}-out"
        r = CliRunner().invoke(cli, [stage, "--checkpoint", str(run_dir), "--dataset", str(hint_dir), "--output", str(out),
                                     "--device", "cpu", "--no-progress"])
        assert r.exit_code == 1 and "Traceback" not in r.output and r.output.count("Error:") == 1, (stage, r.output)
        assert str(step) in r.output and name in r.output and "NaN or inf" in r.output
        assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("stage", ["train", "evaluate", "analyze"])
def test_a_device_that_is_not_here_is_refused_before_any_work(reference_run, hint_dir, tmp_path, stage):
    out = tmp_path / "out"
    args = {"train": ["train", "--dataset", str(hint_dir)],
            "evaluate": ["evaluate", "--checkpoint", str(reference_run[0]), "--dataset", str(hint_dir)],
            "analyze": ["analyze", "--checkpoint", str(reference_run[0]), "--dataset", str(hint_dir)]}[stage]
    r = CliRunner().invoke(cli, [*args, "--output", str(out), "--device", "cuda", "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output and isinstance(r.exception, SystemExit), r.output
    assert "Error: --device cuda: no CUDA device is available here" in r.output and r.output.count("Error:") == 1
    assert not out.exists()


def test_a_broken_sidecar_is_refused(tmp_path):
    cfg = HRMConfig(batch_size=2, seq_len=81, vocab_size=11, hidden_size=16, num_heads=2, H_layers=1, L_layers=1,
                    H_cycles=1, L_cycles=1, expansion=2)
    path = save_checkpoint(HRM(cfg), tmp_path / "step_1")
    hash_file(path).write_text("not a hash\n")
    with pytest.raises(CheckpointError, match=r"step_1\.sha256: does not hold a sha256"):
        load_checkpoint(path, device="cpu")


def test_an_official_checkpoint_without_a_hash_loads_with_one_note(tmp_path):
    official = FIXTURES / "official_tiny_rope" / "step_0"
    assert not hash_file(official).exists()
    notes = []
    model = load_checkpoint(official, device="cpu", note=notes.append)
    assert model is not None
    assert len(notes) == 1 and str(official) in notes[0] and "unverified" in notes[0] and "\n" not in notes[0]


def test_registry_verify_names_a_flipped_checkpoint(reference_run, tmp_path):
    from pipelines.artifacts import checkpoint_problems

    src, _ = reference_run
    assert checkpoint_problems(src) == []
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for f in (src / "checkpoints").iterdir():
        (run_dir / "checkpoints" / f.name).write_bytes(f.read_bytes())
    flip_byte(run_dir / "checkpoints" / "step_6")
    problems = checkpoint_problems(run_dir)
    assert len(problems) == 1 and str(run_dir / "checkpoints" / "step_6") in problems[0]


# ----------------------------------------------------------------------------- class 4: train_state.pt


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-hash"])
def test_a_damaged_training_state_is_never_resumed_from(hint_dir, reference_run, tmp_path, damage):
    """Interrupted at step 8, the state damaged: the rerun says so naming the file, keeps the damaged run
    in previous-runs/1, and trains from the start: it ends with the uninterrupted run's weights, not with
    weights computed from unverified bytes."""
    _, ref = reference_run
    cfg = tiny_cfg(hint_dir, tmp_path)
    first = train(cfg, callback=stop_at(8, KeyboardInterrupt), log=lambda m: None)
    assert first.interrupted and first.step == 8
    state = tmp_path / STATE_NAME
    assert not (tmp_path / "checkpoints" / STATE_NAME).exists()  # outside the DVC output
    if damage == "flip":
        flip_byte(state)
    elif damage == "truncate":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    else:
        hash_file(state).unlink()
    damaged = state.read_bytes()

    logs = []
    again = train(cfg, log=logs.append)
    assert not any(m.startswith("resuming from") for m in logs), logs
    why = [m for m in logs if str(state) in m and "not resuming" in m]
    assert len(why) == 1, logs
    if damage == "no-hash":
        assert "cannot be verified" in why[0]
    else:
        assert "does not match its recorded sha256" in why[0]
    kept = tmp_path / PREVIOUS_RUNS / "1"
    assert any(f"kept in {kept}" in m for m in logs), logs
    assert (kept / STATE_NAME).read_bytes() == damaged  # nothing of the old run is lost
    assert again.step == 12 and not again.interrupted and same_weights(again.model, ref.model)


def test_an_intact_state_still_resumes(hint_dir, reference_run, tmp_path):
    _, ref = reference_run
    cfg = tiny_cfg(hint_dir, tmp_path)
    train(cfg, callback=stop_at(8, KeyboardInterrupt), log=lambda m: None)
    logs = []
    again = train(cfg, log=logs.append)
    assert any("resuming" in m and "step 8" in m for m in logs), logs
    assert same_weights(again.model, ref.model)


# ----------------------------------------------------------------------------- class 9: DVC outputs


def dvc_outputs(run_dir: Path) -> dict[str, bytes]:
    """Every file the train stage declares in dvc.yaml: checkpoints/ and dvclive/ (metrics.json, the histories), all of them."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for folder in ("checkpoints", "dvclive")
            for p in (run_dir / folder).rglob("*") if p.is_file()}


def test_two_runs_give_byte_identical_dvc_outputs(hint_dir, tmp_path, monkeypatch):
    """Same settings, same relative --output (as `dvc repro` runs it), two folders; then the first again
    (`dvc repro -f train`: a complete run starts over): every declared file identical, byte for byte."""
    outs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        train(tiny_cfg(hint_dir, Path("run")), log=lambda m: None)
        outs[name] = dvc_outputs(tmp_path / name / "run")
    assert set(outs["a"]) >= {"checkpoints/step_6", "checkpoints/step_6.sha256", "checkpoints/step_12",
                              "checkpoints/step_12.sha256", "checkpoints/all_config.yaml", "dvclive/metrics.json",
                              "dvclive/plots/metrics/train/lm_loss.tsv"}
    assert outs["a"] == outs["b"]

    a = tmp_path / "a" / "run"
    metrics, info = json.loads((a / "dvclive" / "metrics.json").read_text()), json.loads((a / RUN_INFO_NAME).read_text())
    assert "train_seconds" not in metrics and info["train_seconds"] >= 0  # the timing lives outside the metric
    assert (a / STATE_NAME).is_file() and (a / STATE_NAME).read_bytes() != (tmp_path / "b" / "run" / STATE_NAME).read_bytes()

    monkeypatch.chdir(tmp_path / "a")
    logs = []
    train(tiny_cfg(hint_dir, Path("run")), log=logs.append)
    assert any("starting over" in m for m in logs)
    assert dvc_outputs(a) == outs["a"]

    # The registry's model content is that of the declared files only: the same for both runs.
    contents = {content_hash(hash_files(tmp_path / n / "run", model_files(tmp_path / n / "run"))) for n in ("a", "b")}
    assert len(contents) == 1
    assert STATE_NAME not in model_files(a) and RUN_INFO_NAME not in model_files(a)
    assert not any(f.startswith(PREVIOUS_RUNS) for f in model_files(a))
