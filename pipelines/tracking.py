"""Weights & Biases runs of the stages (train, evaluate): one way to start one.

W&B is optional: with ``mode="disabled"`` nothing is imported and no run exists, so the default
``dvc repro`` never touches the network or the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.io import StageError

DEFAULT_PROJECT = "hrm-sudoku"


def init_wandb(mode: str, out_dir: str | Path | None, project: str | None, name: str | None, config: dict[str, Any],
               job_type: str | None, run_id: str | None = None):
    """Start a W&B run (``mode`` online or offline) writing under ``out_dir/wandb``; None when ``mode`` is disabled.

    ``run_id``: continue that run (``resume="allow"``), as a resumed training does. Quiet (no system
    stats, no console banner). A missing package or a run that cannot start (network, login) is a
    StageError that says how to go on without W&B.
    """
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        raise StageError(f"--wandb-mode {mode} needs the wandb package (pip install wandb)") from None
    kwargs: dict[str, Any] = dict(project=project or DEFAULT_PROJECT, name=name or None, config=config, mode=mode,
                                  job_type=job_type, id=run_id, resume="allow" if run_id else None)
    if out_dir is not None:
        (Path(out_dir) / "wandb").mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(out_dir)
    try:
        kwargs["settings"] = wandb.Settings(x_disable_stats=True, silent=True)
    except Exception:  # noqa: BLE001 - the setting names differ across wandb versions
        pass
    try:
        return wandb.init(**kwargs)
    except Exception as e:  # noqa: BLE001 - network, authentication
        raise StageError(f"W&B ({mode}) could not start: {e}; use --wandb-mode offline or disabled") from None
