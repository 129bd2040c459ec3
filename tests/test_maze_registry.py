"""A maze dataset in the registry and on the way to the Hub: registered, listed, verified and
published (dry run, the upload folder read back with `datasets`) like the Sudoku ones, with a card
that says mazes."""

from __future__ import annotations

import json

import yaml

from pipelines.publish import publish
from pipelines.registry import registry
from registry_helpers import env_for, invoke, make_project, ok, sh
from test_maze_datasets import NAME, build_mazes


def test_a_maze_dataset_is_registered_verified_and_published(tmp_path):
    from datasets import load_dataset

    datasets = build_mazes(tmp_path / "build")
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "project"
    env = make_project(root, datasets, home)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": {NAME: {
        "path": f"data/datasets/{NAME}", "type": "dataset", "desc": "tiny maze test dataset", "labels": ["maze"]}}}))
    sh(root, "git", "commit", "-qam", "the maze artifact", env=env)

    ok(registry, "-C", root, "register", NAME, "1.0.0", env=env)
    listed = ok(registry, "-C", root, "list", env=env).output
    assert NAME in listed
    assert "OK" in ok(registry, "-C", root, "verify", NAME, env=env).output

    folder = tmp_path / "upload"
    result = invoke(publish, NAME, "--repo-id", "hrm-test/maze-tiny", "--dry-run", "--save-folder", folder, "-C", root,
                    env=env)
    assert result.exit_code == 0, result.output
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["tags"][0] == "maze" and meta["license"] == "apache-2.0"
    for needed in ("Maze-30x30-Hard style dataset", "| `dihedral` | uint8 |", "dihedral transforms per train maze",
                   "no third-party mazes", "reshape(-1, 900)"):
        assert needed in card, needed
    assert "Sudoku-Extreme style" not in card and "digit relabelling" not in card
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoding"]["task"] == "maze"
    loaded = load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert loaded["train"].num_rows == manifest["splits"]["train"]["rows"]
    assert len(loaded["test"][0]["labels"]) == 900
