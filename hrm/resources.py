"""The machine's memory and disk: the memory available for the estimates made before work that grows
with a setting, and whether a disk is full (a failed write that did not say why). Light (no torch), so
a stage can ask before it imports anything large."""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "disk_full", "format_bytes"]


def format_bytes(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def available_memory_bytes() -> int | None:
    """Memory available now: /proc/meminfo's MemAvailable on Linux, else free physical pages (os.sysconf);
    None when neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return int(pages) * int(size)
    except (ValueError, OSError, AttributeError):
        pass
    return None


def disk_full(folder: str | os.PathLike) -> bool:
    """Whether the file system of ``folder`` has no free block left: what a failed write that names no
    error means (numpy's "N requested and M written", torch.save's "unexpected pos")."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False
