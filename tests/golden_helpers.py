"""Checks shared by the golden tests of the architectures (tests/test_model.py: HRM; tests/test_trm.py: TRM)."""

from __future__ import annotations

from hrm.model import SparseEmbeddingSignSGD

EMBEDDING_ROWS = "model.inner.puzzle_emb.local_weights"


def assert_gradients_and_sparse_step_match(model, ts, tolerance: float = 1e-5) -> None:
    """After backward: every parameter's gradient and the puzzle-embedding rows' equal the reference's ``ts["grads"]``
    within ``tolerance``; then one sign-SGD step gives its ``puzzle_emb_after`` within 1e-6."""
    grads = dict(model.named_parameters())
    assert set(grads) | {EMBEDDING_ROWS} == set(ts["grads"])
    for name, p in grads.items():
        assert (p.grad - ts["grads"][name]).abs().max() <= tolerance, name
    emb = model.puzzle_emb
    assert (emb.local_weights.grad - ts["grads"][EMBEDDING_ROWS]).abs().max() <= tolerance
    SparseEmbeddingSignSGD(emb.buffers(), lr=ts["sparse_lr"], weight_decay=ts["sparse_weight_decay"]).step()
    assert (emb.weights - ts["puzzle_emb_after"]).abs().max() <= 1e-6
