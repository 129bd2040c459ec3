"""Issue 28, item 4: a checkpoint runs only on the dataset build it was trained on (hrm.model.coupling).

Real runs: the trainer's tiny run on the tiny dataset built by the real stages (test_train's and
test_checkpoint_integrity's module fixtures), real `hrm evaluate` / `hrm analyze`, and a checkpoint in the
official layout (a state dict and an all_config.yaml with the official arch block, no hashes) with a
puzzle-embedding table of 5 rows.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from hrm.integrity import file_sha256, record_sha256
from hrm.manifest import dataset_identity, read_manifest
from hrm.model import CheckpointError, HRM, HRMConfig, load_checkpoint, save_checkpoint
from pipelines.cli import cli

from test_checkpoint_integrity import reference_run  # noqa: F401 - the tiny trained run (module fixture)
from test_train import data, hint_dir  # noqa: F401 - the tiny real datasets (module fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def identity(folder: Path):
    return dataset_identity(folder, read_manifest(folder))


def rebuilt(src: Path, dst: Path, **encoding) -> Path:
    """A copy of the dataset ``src`` whose manifest differs (another build): ``encoding`` keys set, named after dst."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["encoding"].update(encoding)
    manifest["name"] = dst.name
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dst


def stage(name: str, checkpoint: Path, dataset: Path, out: Path):
    args = [name, "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--output", str(out), "--device", "cpu",
            "--no-progress"]
    args += ["--test-size", "2", "--permutations", "1", "--tiers", "none"] if name == "evaluate" else ["--sample", "2"]
    return CliRunner().invoke(cli, args)


def refused(result, out: Path) -> str:
    """One message, no traceback, nothing written."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert result.output.count("Error:") == 1
    assert not out.exists()
    return " ".join(result.output.split())  # click wraps nothing, but be safe about line breaks


def official_checkpoint(folder: Path, rows: int, seq_len: int = 81, vocab_size: int = 11) -> Path:
    """The official trainer's layout: torch.save of the loss head's state dict (``model.inner....``), an
    all_config.yaml whose arch block has the official names only (no seq_len, vocab_size,
    num_puzzle_identifiers: the loader reads them from the tensors), no sha256 beside either."""
    torch.manual_seed(0)
    model = HRM(HRMConfig(batch_size=2, seq_len=seq_len, vocab_size=vocab_size, num_puzzle_identifiers=rows,
                          puzzle_emb_ndim=16,
                          hidden_size=16, num_heads=2, expansion=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1,
                          halt_max_steps=2))
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "step_0")  # the official keys, model.inner....
    arch = {"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
            "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
            "H_cycles": 1, "L_cycles": 1, "H_layers": 1, "L_layers": 1, "hidden_size": 16, "expansion": 2,
            "num_heads": 2, "puzzle_emb_ndim": 16, "pos_encodings": "rope", "halt_max_steps": 2,
            "halt_exploration_prob": 0.1, "forward_dtype": "float32"}
    (folder / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "data_path": "data/arc-aug-1000"}))
    return folder / "step_0"


# ----------------------------------------------------------------------------- the record


def test_a_checkpoint_records_the_dataset_it_was_trained_on(reference_run, hint_dir):
    out, _ = reference_run
    conf = yaml.safe_load((out / "checkpoints" / "all_config.yaml").read_text())
    manifest = json.loads((hint_dir / "manifest.json").read_text())
    assert conf["trained_on"] == {"name": manifest["name"], "manifest_sha256": file_sha256(hint_dir / "manifest.json"),
                                  "num_puzzle_identifiers": 1, "seq_len": 81, "vocab_size": 11}
    assert list(conf)[:2] == ["data_path", "trained_on"]  # beside data_path; the official keys keep their order
    notes = []
    assert load_checkpoint(out / "checkpoints", device="cpu", note=notes.append, dataset=identity(hint_dir))
    assert notes == []  # the build it was trained on: nothing to say


def test_another_build_with_the_one_blank_identifier_runs_with_one_note(reference_run, data, tmp_path):
    """Sudoku's datasets have one puzzle identifier, the blank: a model trained on the hint dataset runs on the
    vanilla one (the same test split), saying that it is another build."""
    out, _ = reference_run
    vanilla = data / json.loads((data / "datasets.json").read_text())["vanilla"]
    notes = []
    assert load_checkpoint(out / "checkpoints", device="cpu", note=notes.append, dataset=identity(vanilla))
    assert len(notes) == 1 and "another build" in notes[0] and str(vanilla / "manifest.json") in notes[0]
    assert file_sha256(vanilla / "manifest.json")[:12] in notes[0]
    r = stage("evaluate", out, vanilla, tmp_path / "eval")
    assert r.exit_code == 0, r.output
    assert r.output.count("another build") == 1


def test_a_checkpoint_without_the_record_runs_with_one_note(hint_dir, tmp_path):
    """A checkpoint written before the record (save_checkpoint without it): as before, with one note."""
    path = official_checkpoint(tmp_path / "src", rows=1)
    model = load_checkpoint(path, device="cpu", note=lambda m: None)
    old = save_checkpoint(model, tmp_path / "old" / "step_1", {"data_path": str(hint_dir)})
    notes = []
    assert load_checkpoint(old, device="cpu", note=notes.append, dataset=identity(hint_dir))
    assert len(notes) == 1 and "cannot be checked" in notes[0] and "trained_on" in notes[0]


# ----------------------------------------------------------------------------- refusals


def test_a_checkpoint_of_another_identifier_count_is_refused_by_load_evaluate_and_analyze(reference_run, hint_dir,
                                                                                         tmp_path):
    out, _ = reference_run
    other = rebuilt(hint_dir, tmp_path / "arc-like", num_puzzle_identifiers=5)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(out / "checkpoints", device="cpu", dataset=identity(other))
    assert "puzzle-embedding table has 1 row," in str(e.value)
    for name in ("evaluate", "analyze"):
        text = refused(stage(name, out, other, tmp_path / name), tmp_path / name)
        assert str(out / "checkpoints" / "step_12") in text and str(other / "manifest.json") in text, text
        assert "has 1 row," in text and "has 5:" in text
        assert file_sha256(hint_dir / "manifest.json")[:12] in text and file_sha256(other / "manifest.json")[:12] in text
        assert "Use the build it names" in text and "hrm registry list" in text


def test_another_build_of_the_same_size_is_refused(hint_dir, tmp_path):
    """Three identifiers in both, other manifests: the identifiers may name other puzzles."""
    trained = rebuilt(hint_dir, tmp_path / "build-a", num_puzzle_identifiers=3)
    other = rebuilt(hint_dir, tmp_path / "build-b", num_puzzle_identifiers=3)
    model = load_checkpoint(official_checkpoint(tmp_path / "src", rows=3), device="cpu", note=lambda m: None)
    path = save_checkpoint(model, tmp_path / "run" / "step_1", {"data_path": str(trained),
                                                                "trained_on": identity(trained).record()})
    assert load_checkpoint(path, device="cpu", note=pytest.fail, dataset=identity(trained))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, device="cpu", dataset=identity(other))
    text = str(e.value)
    assert "another build of the same size (3 puzzle identifiers)" in text and "build-a" in text
    assert str(path) in text and str(other / "manifest.json") in text
    text = refused(stage("evaluate", tmp_path / "run", other, tmp_path / "out"), tmp_path / "out")
    assert "another build of the same size" in text and str(path) in text


def test_a_malformed_record_is_one_message_naming_the_file_and_key(reference_run, hint_dir, tmp_path):
    out, _ = reference_run
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoints", run)
    conf = yaml.safe_load((run / "all_config.yaml").read_text())
    conf["trained_on"]["manifest_sha256"] = "abc"
    (run / "all_config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    record_sha256(run / "all_config.yaml")  # recorded: the check past the hash is what is tested
    with pytest.raises(CheckpointError, match=r"all_config\.yaml: key trained_on\.manifest_sha256: "):
        load_checkpoint(run, device="cpu", dataset=identity(hint_dir))
    text = refused(stage("evaluate", run, hint_dir, tmp_path / "out"), tmp_path / "out")
    assert f"{run / 'all_config.yaml'}: key trained_on.manifest_sha256" in text


# ----------------------------------------------------------------------------- the official layout


def test_an_official_checkpoint_loads_only_with_as_many_identifiers_as_its_table_rows(hint_dir, tmp_path):
    path = official_checkpoint(tmp_path / "official", rows=5)
    five = rebuilt(hint_dir, tmp_path / "five", num_puzzle_identifiers=5)
    notes = []
    model = load_checkpoint(path, device="cpu", note=notes.append, dataset=identity(five))
    assert model.config.num_puzzle_identifiers == 5
    assert len(notes) == 2 and "unverified" in notes[0] and "cannot be checked, only its 5 puzzle" in notes[1]
    r = stage("evaluate", path, five, tmp_path / "ok")
    assert r.exit_code == 0, r.output

    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, device="cpu", note=lambda m: None, dataset=identity(hint_dir))
    text = str(e.value)
    assert str(path) in text and "table has 5 rows" in text and "has 1: another build" in text
    assert "official builder's dataset" in text and str(hint_dir / "manifest.json") in text
    for name in ("evaluate", "analyze"):
        text = refused(stage(name, path, hint_dir, tmp_path / name), tmp_path / name)
        assert str(path) in text and "table has 5 rows" in text and "has 1: another build" in text
