"""Git LFS pointers: in a clone whose large files were never pulled (`git lfs pull`), each stands where its file
should be, a small text naming the file's sha256 (the checkpoint import and the paper's fork run refuse them)."""

from __future__ import annotations

import re
from pathlib import Path

POINTER_HEADER = b"version https://git-lfs.github.com/spec/"


def is_pointer(path: Path) -> bool:
    """Whether the file at ``path`` is a Git LFS pointer rather than the file itself."""
    with open(path, "rb") as handle:
        return handle.read(len(POINTER_HEADER)) == POINTER_HEADER


def pointer_oid(text: str) -> str | None:
    """The sha256 a pointer's text records (None: not a pointer)."""
    m = re.search(r"^oid sha256:([0-9a-f]{64})$", text, re.M)
    return m.group(1) if text.startswith(POINTER_HEADER.decode()) and m else None
