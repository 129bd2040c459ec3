"""hrm: the Hierarchical Reasoning Model on Sudoku-Extreme, as a library.

Pure code: arrays and tensors in, arrays and tensors out. File layouts, params
and DVC live in ``pipelines/``; table schemas in ``schemas/``.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: ``import hrm`` stays light (no torch) until the model API is used.
    if name == "load_checkpoint":
        from hrm.model.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'hrm' has no attribute {name!r}")
