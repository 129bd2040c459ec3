"""The machine's memory, for the estimates made before work that grows with a setting: light (no torch),
so a stage can ask before it imports anything large."""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "format_bytes"]


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
