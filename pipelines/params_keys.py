"""Dotted keys of a params file (``train.arch.hidden_size``), as DVC's ``-S`` names them."""

from __future__ import annotations

from typing import Any, Mapping


def has_key(params: Mapping[str, Any], dotted: str) -> bool:
    """Whether ``dotted`` names a value (not a section) of ``params``."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, Mapping)
