"""hrm: the Hierarchical Reasoning Model on Sudoku-Extreme, as a library.

Pure code: arrays and tensors in, arrays and tensors out. File layouts, params
and DVC live in ``pipelines/``; table schemas in ``schemas/``.
"""

__version__ = "0.1.0"
