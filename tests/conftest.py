"""Fixtures shared across test modules."""

import pytest

from stage_helpers import build, digest_tree, make_raw


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The dataset stages run once on the real puzzles: (root, logs); read it, never modify it."""
    root = tmp_path_factory.mktemp("chain")
    raw = make_raw(root / "raw")
    before = digest_tree(raw)
    logs = build(root, raw=raw)
    assert digest_tree(raw) == before  # upstream files are never modified
    return root, logs
