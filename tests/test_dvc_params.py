"""No param is ever shell text (issue 26, class 5): dvc.yaml's cmds hold no ``${...}``; each stage reads
its params.yaml section and the top-level seed itself (pipelines/settings.py), and ``params:`` lists
exactly what it reads. For real: a shell payload in a param runs nothing under `dvc repro`, and a
CSV folder whose path holds a space or shell characters is used as written."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
import polars as pl
import pytest
import yaml

from conftest import REAL_SUDOKU as REAL
from pipelines.cli import cli
from pipelines.settings import config_params
from stage_helpers import digest_tree, fails, make_raw, ok
from test_dvc_data import new_repo, ran, run, sh

REPO = Path(__file__).resolve().parents[1]
# Each shell form once, each touching its own file, should a shell ever see the value.
PAYLOAD = "x;touch PWNED1 $(touch PWNED2) `touch PWNED3`"


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def command_of(cmd: str) -> click.Command:
    return cli.get_command(click.Context(cli), shlex.split(cmd)[1])


def test_no_stage_command_holds_a_param():
    """DVC pastes a `${param}` into the cmd before a shell parses it; no cmd has one, and every one
    hands the stage params.yaml instead."""
    for name, stage in stages().items():
        assert "${" not in stage["cmd"], f"stage {name}: {stage['cmd']}"
        args = shlex.split(stage["cmd"])
        assert args[args.index("--config-file") + 1] == "params.yaml", f"stage {name}"


def test_params_are_exactly_what_each_stage_reads():
    """dvc.yaml's `params:` of a stage equal what its command reads from the file (its section, or its
    keys of the shared data section, and the top-level seed when it has --seed): DVC reruns the stage
    when one of them changes, and only then."""
    for name, stage in stages().items():
        args = shlex.split(stage["cmd"])
        command = command_of(stage["cmd"])
        reads = config_params(command)
        assert reads, f"stage {name}: its command reads no config file section"
        section = args[args.index("--section") + 1]
        assert reads[-1].split(".")[0] == section, f"stage {name}: --section {section}, the command reads {reads}"
        assert sorted(stage["params"]) == sorted(reads), f"stage {name}: params {stage['params']}, reads {reads}"


def test_every_dataset_stage_reads_its_keys_and_the_top_level_seed(tmp_path):
    """The dataset stages share params.yaml's data section: each reads its keys and the top-level seed;
    the command line still wins; a key no stage reads, or a seed set twice, is refused naming the file."""
    raw = make_raw(tmp_path / "raw")
    params = tmp_path / "params.yaml"
    data = {"subsample_size": 12, "test_size": 4, "num_aug": 2, "hints": False, "vanilla_draw": "coupled",
            "shard_max_mb": 1}
    params.write_text(yaml.safe_dump({"seed": 5, "data": data}))
    conf = ("--config-file", str(params), "--section", "data")
    ok("subsample", *conf, "--input", str(raw), "--output", str(tmp_path / "sub"))
    lineage = json.loads((tmp_path / "sub" / "lineage.json").read_text())
    assert lineage["subsample"]["params"] == {"seed": 5, "subsample_size": 12, "test_size": 4, "vanilla_draw": "coupled"}
    ok("augment", *conf, "--input", str(tmp_path / "sub"), "--output", str(tmp_path / "aug"), "--seed", "7")
    lineage = json.loads((tmp_path / "aug" / "lineage.json").read_text())
    assert lineage["augment"]["params"] == {"seed": 7, "num_aug": 2}  # --seed on the command line wins

    params.write_text(yaml.safe_dump({"seed": 5, "data": {**data, "num_agu": 3}}))  # a typo in the shared section
    assert "params.yaml: unknown key(s) in data: num_agu" in fails("hints", *conf, "--input", str(tmp_path / "aug"),
                                                                  "--output", str(tmp_path / "hints"))
    params.write_text(yaml.safe_dump({"seed": 5, "raw": {"seed": 6, "source": "csv"}}))
    out = fails("raw", "--config-file", str(params), "--section", "raw", "--output", str(tmp_path / "raw2"))
    assert "seed is set both at the top of the file and in raw (raw.seed)" in out


def write_csvs(folder: Path) -> Path:
    valid = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    folder.mkdir(parents=True)
    valid[:30].write_csv(folder / "train.csv")
    valid[30:].write_csv(folder / "test.csv")
    return folder


def edit_params(root: Path, **dotted) -> None:
    """Set params.yaml keys given as ``raw__source="csv"`` (``__`` for the dot)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in dotted.items():
        *sections, last = key.split("__")
        node = params
        for s in sections:
            node = node[s]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def no_command_ran(root: Path) -> None:
    pwned = sorted(str(p) for where in (root, Path.cwd()) for p in where.rglob("PWNED*"))
    assert not pwned, pwned


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["my data/csv", f"data/{PAYLOAD}"], ids=["space", "shell-characters"])
def test_a_csv_folder_path_is_used_as_written(tmp_path, folder):
    root = new_repo(tmp_path / "repo")
    write_csvs(root / folder)
    edit_params(root, raw__source="csv", raw__csv_input=folder)
    assert ran(sh(root, "dvc", "repro", "raw")) == ["raw"]
    stats = json.loads((root / "data/raw/stats.json").read_text())
    assert stats["csv"]["input"] == folder
    assert stats["splits"]["train"]["rows"] == 30
    assert pl.read_parquet(root / "data/raw/train.parquet")["question"].to_list() == \
        pl.read_csv(root / folder / "train.csv", infer_schema=False)["question"].to_list()
    no_command_ran(root)


@pytest.mark.slow
def test_a_shell_payload_in_a_param_runs_nothing(tmp_path):
    """The payload in each kind of value the cmds used to interpolate (a string, a choice, an integer,
    a boolean, a float; the path: test above): the stage gets it as written and refuses it with one
    message (no hub: the revision is named as written), and no shell runs any part of it."""
    root = new_repo(tmp_path / "repo")
    write_csvs(root / "data/csv")
    edit_params(root, raw__source="csv", data__subsample_size=20, data__test_size=0, data__num_aug=1)
    assert ran(sh(root, "dvc", "repro", "raw")) == ["raw"]
    cases = [  # (stage, the param, the message it gets)
        ("raw", {"raw__source": "hf", "raw__hf_revision": PAYLOAD}, f"at revision {PAYLOAD} is not in the local cache"),
        ("raw", {"raw__task": PAYLOAD}, f"params.yaml: raw.task: {PAYLOAD!r} is not one of"),
        ("raw", {"seed": PAYLOAD}, f"params.yaml: seed: {PAYLOAD!r} is not a valid integer"),
        ("hints", {"data__hints": PAYLOAD}, f"params.yaml: data.hints: must be true or false, not {PAYLOAD!r}"),
        ("shard", {"data__shard_max_mb": PAYLOAD}, f"params.yaml: data.shard_max_mb: {PAYLOAD!r} is not a valid float"),
    ]
    clean = (root / "params.yaml").read_text()
    for stage, change, message in cases:
        (root / "params.yaml").write_text(clean)
        edit_params(root, **change)
        proc = run(root, "dvc", "repro", stage)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert message in out and "Traceback" not in out, out
        assert len([line for line in out.splitlines() if line.startswith("Error: ")]) == 1, out
        no_command_ran(root)


# main's dvc.yaml before issue 26: every value pasted into the cmd as a flag (DVC writes a boolean as true/false).
OLD_FLAGS = {
    "raw": "--task {raw[task]} --source {raw[source]} --seed {seed} --train-size {raw[train_size]} "
           "--test-size {raw[test_size]} --min-blanks {raw[min_blanks]} --min-rating {raw[min_rating]} "
           "--min-path {raw[min_path]} --hf-repo {raw[hf_repo]} --hf-revision {raw[hf_revision]} --input {raw[csv_input]}",
    "subsample": "--seed {seed} --subsample-size {data[subsample_size]} --test-size {data[test_size]} "
                 "--vanilla-draw {data[vanilla_draw]}",
    "augment": "--seed {seed} --num-aug {data[num_aug]}",
    "hints": "--seed {seed} --enabled {hints}",
    "shard": "--shard-max-mb {data[shard_max_mb]}",
}


def test_the_config_file_gives_the_stages_the_values_the_old_flags_gave(tmp_path, monkeypatch):
    """The default params (tiny builtin sizes; shard_max_mb stays the integer 128) through raw .. shard,
    once with the flags the cmds used to paste in, once with dvc.yaml's cmds now: the same bytes, every file."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["raw"].update(train_size=64, test_size=32)
    params["data"].update(subsample_size=32, test_size=16, num_aug=3)
    assert params["data"]["shard_max_mb"] == 128
    digests = {}
    for way in ("flags", "file"):
        root = tmp_path / way
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        monkeypatch.chdir(root)
        for name, stage in stages().items():
            if name not in OLD_FLAGS:
                continue
            args = shlex.split(stage["cmd"])[1:]
            if way == "flags":
                conf = args.index("--config-file")
                args[conf:conf + 4] = shlex.split(OLD_FLAGS[name].format(hints=str(params["data"]["hints"]).lower(), **params))
            ok(*args)
        digests[way] = digest_tree(root / "data")
    assert len(digests["file"]) >= 20 and digests["file"] == digests["flags"]
