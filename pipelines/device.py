"""The ``--device`` option of the stages that run a model (train, evaluate, analyze).

Apart from pipelines/settings.py, which every stage runs: only these three import hrm.model.
"""

from __future__ import annotations

from pipelines.io import StageError


def resolve_device_option(device: str):
    """The torch device for a stage's ``--device`` (auto: cuda, else mps, else cpu); one that is not
    here is a StageError, before any input is read."""
    from hrm.model import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as e:
        raise StageError(f"--device {device}: {e} (use --device auto or cpu)") from None
