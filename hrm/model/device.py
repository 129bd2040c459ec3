"""Which torch device a run uses: :func:`resolve_device` ("auto" or a name), one clear error for a device that is not here."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device this machine or this torch build does not have."""


def resolve_device(device: torch.device | str | None = "auto") -> torch.device:
    """"auto" (or None) -> cuda if available, else mps, else cpu. A device that is not here
    (``cuda`` on a CPU build, ``cuda:3`` on a one-GPU machine, an unknown name) is a DeviceError."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise DeviceError(f"no CUDA device is available here: {build}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"cuda:{dev.index} does not exist ({torch.cuda.device_count()} CUDA device(s) here)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("MPS is not available here")
    return dev
