"""The run folder of ``hrm train``: what a training run leaves on disk (rank 0 writes, every rank reads).

    OUT/checkpoints/step_N           official-format state dicts, one per due checkpoint
    OUT/checkpoints/step_N.sha256    its content hash, checked before every use (hrm.model.read_verified)
    OUT/checkpoints/all_config.yaml  the run's config, official layout (arch block, data_path, lr, ...), + .sha256;
                                     ``trained_on``: the dataset's identity (hrm.model.coupling checks it)
    OUT/train_state.pt (+ .sha256)   the snapshot of hrm.train.TrainState, plus this folder's own resume data
    OUT/dvclive/metrics.json         the run's summary (``dvc metrics show``, ``dvc exp show``): deterministic, no timings
    OUT/dvclive/plots/metrics/       per-step train/* and per-evaluation eval/* histories, one TSV per metric (dvclive)
    OUT/run.json                     what is not deterministic: train_seconds, the W&B run id
    OUT/wandb/                       W&B files, when wandb_mode is online or offline

:func:`run` trains with :func:`hrm.train.train` and :class:`RunFolder` as its hooks. The same
call again continues from ``train_state.pt`` when its settings match (a resumed run rewrites
the histories from the rows saved in the state, since ``dvc repro`` deletes them before it reruns
the stage); different settings, a complete run, or a state whose bytes do not match its
sha256 (or that has none) start over, the previous run moved aside to OUT/previous-runs/N.

Only ``checkpoints/`` (step_N, all_config.yaml, their hashes) and ``dvclive/`` are DVC outputs: all deterministic, so ``dvc repro -f train`` gives byte-identical outputs. The
training state, run.json and wandb/ live beside them, outside every hashed output.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist

from hrm.integrity import IntegrityError
from hrm.model import hash_file, read_verified, save_checkpoint, step_files, write_verified
from hrm.progress import ProgressLines, progress_bar
from hrm.train import TrainConfig, TrainHooks, TrainResult, TrainState, round_metric, train, why_not_resumable
from pipelines.atomic_replace import atomic_output, pid_alive, remove_leftovers
from pipelines.output_lock import output_lock
from pipelines.io import log as stage_log
from pipelines.tracking import init_wandb
from hrm.manifest import file_sha256

STATE_NAME = "train_state.pt"  # OUT/train_state.pt: outside checkpoints/ (the DVC output), it is not deterministic
RUN_INFO_NAME = "run.json"  # OUT/run.json: train_seconds, W&B id (not a DVC output)
NOT_DETERMINISTIC = ("train_seconds",)  # summary keys kept out of metrics.json
CONFIG_NAME = "all_config.yaml"
PREVIOUS_RUNS = "previous-runs"  # OUT/previous-runs/N: an earlier run's files, moved aside when a run starts over
LOCK_NAME = ".train.lock"  # held by the process writing the run folder
# The temporary of a file the run folder writes (hrm.model.atomic_write: NAME.tmp-PID), left by a process killed mid-write.
WRITE_LEFTOVER = re.compile(r"^(?:step_\d+|all_config\.yaml|train_state\.pt)(?:\.sha256)?\.tmp-(\d+)$")


def checkpoint_dir(cfg: TrainConfig) -> Path | None:
    if cfg.checkpoint_path:
        return Path(cfg.checkpoint_path)
    if cfg.output_dir:
        return Path(cfg.output_dir) / "checkpoints"
    return None


def state_path(cfg: TrainConfig) -> Path | None:
    """Where the training state lives: OUT/train_state.pt (without an output folder: beside the checkpoints)."""
    if cfg.output_dir:
        return Path(cfg.output_dir) / STATE_NAME
    ckpt = checkpoint_dir(cfg)
    return ckpt / STATE_NAME if ckpt else None


def official_config(cfg: TrainConfig, forward_dtype: str, trained_on: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """all_config.yaml: the official PretrainConfig layout (arch last: save_checkpoint adds it), plus ours:
    ``trained_on``, the identity of the dataset at data_path (hrm.train.trained_on; evaluate checks it)."""
    ckpt = checkpoint_dir(cfg)
    return {
        "data_path": cfg.data_path,
        **({"trained_on": dict(trained_on)} if trained_on else {}),
        "global_batch_size": cfg.global_batch_size,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "lr_min_ratio": cfg.lr_min_ratio,
        "lr_warmup_steps": cfg.lr_warmup_steps,
        "weight_decay": cfg.weight_decay,
        "beta1": cfg.beta1,
        "beta2": cfg.beta2,
        "puzzle_emb_lr": cfg.puzzle_emb_lr,
        "puzzle_emb_weight_decay": cfg.puzzle_emb_weight_decay,
        "project_name": cfg.project_name,
        "run_name": cfg.run_name,
        "checkpoint_path": str(ckpt) if ckpt else None,
        "seed": cfg.seed,
        "checkpoint_every_eval": cfg.checkpoint_every_eval,
        **({"ema": True, "ema_rate": cfg.ema_rate} if cfg.ema else {}),  # the reference's keys; absent (HRM's file as before) when off
        "eval_interval": cfg.eval_interval,
        "eval_save_outputs": [],
        "eval_size": cfg.eval_size,
        "device": cfg.device,
        "forward_dtype": forward_dtype,
    }


LIVE_DIR = "dvclive"  # OUT/dvclive: the run's metrics, written through dvclive (DVC's logger)


def _live_class():
    """dvclive's Live without its own repository integration (experiment names, Studio, dvc.yaml): the
    stage runs under `dvc repro` / `dvc exp run`, which record the experiment, and that lookup raises
    in a git repository without commits ("Empty git repo", treeverse/dvclive#522) even with
    save_dvc_exp=False. A private hook of Live, so constraints.txt pins dvclive's version."""
    from dvclive import Live

    class RunLive(Live):
        def _init_dvc(self) -> None:
            pass

    return RunLive


class LiveMetrics:
    """The run's metrics through dvclive, the logger DVC reads (``dvc exp show``, ``dvc plots``):

        OUT/dvclive/metrics.json                        step, total_steps, epochs_done, the last train/* and eval/*
        OUT/dvclive/plots/metrics/train/<name>.tsv      one row per optimizer step (step, value)
        OUT/dvclive/plots/metrics/eval/<name>.tsv       one row per evaluation

    The names are the paper's (``train/lm_loss``, ``eval/exact_accuracy``, ...); values are rounded to
    float32 precision (hrm.train.round_metric), so the files are byte-identical for the same run. Every
    row is also kept in ``rows``, which the training state saves: a resumed run starts dvclive afresh
    and logs the saved rows up to its step again, so the histories hold exactly what an uninterrupted
    run's would (dvclive's own resume appends, keeping rows a killed run logged after its last save).
    """

    NAMES = ("train", "eval")

    def __init__(self, output_dir: Path | None):
        self.dir = None if output_dir is None else output_dir / LIVE_DIR
        self.live: Any = None
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in self.NAMES}

    @property
    def metrics_file(self) -> Path:
        assert self.dir is not None
        return self.dir / "metrics.json"

    def start(self, rows: Mapping[str, list] | None, keep_until_step: int | None) -> None:
        """Start over (``keep_until_step`` None), or resume at that step with the saved ``rows`` (read back
        from the histories for a state saved without them)."""
        if keep_until_step is None:
            rows = {}
        elif rows is None:
            rows = {name: self._read(name) for name in self.NAMES}
        self.rows = {name: [r for r in rows.get(name, []) if int(r["step"]) <= keep_until_step] for name in self.NAMES}
        if self.dir is None:
            return
        # resume=False: dvclive removes its own files (the histories, metrics.json) and nothing else.
        # No dvc.yaml of its own (the stage declares the files) and no experiment of its own (dvc exp run makes it).
        self.live = _live_class()(str(self.dir), resume=False, save_dvc_exp=False, dvcyaml=False, report=None)
        for name in self.NAMES:
            for row in self.rows[name]:
                self._log(name, row)
        (self.dir.parent / RUN_INFO_NAME).unlink(missing_ok=True)

    def _read(self, name: str) -> list[dict[str, Any]]:
        """Rows of the ``name`` histories on disk (step -> every metric's value at that step)."""
        folder = None if self.dir is None else self.dir / "plots" / "metrics" / name
        if folder is None or not folder.is_dir():
            return []
        by_step: dict[int, dict[str, Any]] = {}
        for path in sorted(folder.glob("*.tsv")):
            with open(path, newline="") as f:
                for r in csv.DictReader(f, delimiter="\t"):
                    step = int(r["step"])
                    by_step.setdefault(step, {"step": step})[path.stem] = float(r[path.stem])
        return [by_step[k] for k in sorted(by_step)]

    def _log(self, name: str, row: Mapping[str, Any]) -> None:
        self.live.step = int(row["step"])
        for key, value in row.items():
            if key != "step":
                self.live.log_metric(f"{name}/{key}", value)

    def append(self, name: str, step: int, metrics: Mapping[str, float]) -> None:
        if self.dir is None:
            return
        row = {"step": step, **{k.split("/", 1)[-1]: round_metric(v) for k, v in metrics.items()}}
        self.rows[name].append(row)
        self._log(name, row)

    def write_summary(self, summary: Mapping[str, Any], run_info: Mapping[str, Any] | None = None) -> None:
        """dvclive's metrics.json: the summary less its timings (byte-identical for the same run; written
        here, atomically, in dvclive's format); run.json: those and ``run_info``."""
        if self.dir is None:
            return
        metrics = {k: v for k, v in summary.items() if k not in NOT_DETERMINISTIC}
        info = {**{k: summary[k] for k in NOT_DETERMINISTIC if k in summary}, **(run_info or {})}
        with atomic_output(self.metrics_file) as tmp:
            tmp.write_text(json.dumps(metrics, indent=4) + "\n")
        with atomic_output(self.dir.parent / RUN_INFO_NAME) as tmp:
            tmp.write_text(json.dumps(info, indent=2, sort_keys=False) + "\n")

    def close(self) -> None:
        self.live = None  # every row is on disk already (dvclive appends as it logs); no Live.end(): it would rewrite metrics.json


class RunFolder(TrainHooks):
    """:class:`hrm.train.TrainHooks` writing the run folder (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, say: Callable[[str], None]):
        self.cfg = cfg
        self.say = say
        self.rank = 0
        self.ckpt_dir = checkpoint_dir(cfg)
        self.state_path = state_path(cfg)
        self.out_dir = Path(cfg.output_dir) if cfg.output_dir else None
        self.files = LiveMetrics(None)
        self.total_steps = 0
        self.forward_dtype = cfg.forward_dtype
        self.trained_on: Mapping[str, Any] | None = None  # the dataset's identity (start() receives it)
        self.wandb_id: str | None = None
        self.written: dict[str, str] = {}  # step_N this run wrote -> its sha256: the only ones pruning deletes
        self.run = None
        self.bar = None

    # -- resume or start over
    def resume(self, key: Mapping[str, Any], total_steps: int) -> Mapping[str, Any] | None:
        # The first hook: train() has joined the torchrun group (if any) by now.
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        if self.rank != 0:
            self.say = lambda s: None
        self.files = LiveMetrics(self.out_dir if self.rank == 0 else None)
        self.total_steps = total_steps
        if self.rank == 0:
            self._remove_write_leftovers()
        saved = self._load(key, total_steps)
        if saved is None:
            if self.rank == 0:
                moved = self._move_previous_run()
                if moved is not None:
                    self.say(f"starting over: the previous run's files are kept in {moved}")
            self.files.start(None, keep_until_step=None)
            return None
        own = saved["history"]
        self.wandb_id = own.get("wandb_id")
        self.last_checkpoint = Path(own["last_checkpoint"]) if own.get("last_checkpoint") else None
        self.written = dict(own.get("checkpoints_written") or {})
        self.say(f"resuming from {self.state_path} at step {saved['step']}/{total_steps} "
                 f"(block {saved['block']}, step {saved['step_in_block']} in block)")
        self.files.start(saved.get("plot_rows"), keep_until_step=saved["step"])
        return saved

    def _remove_write_leftovers(self) -> None:
        """Remove the NAME.tmp-PID temporaries of processes killed while writing a step_N, its hash,
        all_config.yaml, the training state or the metrics summary: half-written, never used, and not to
        stay in checkpoints/ or be moved aside with a previous run."""
        folders = {f for f in (self.ckpt_dir, self.out_dir, self.state_path and self.state_path.parent) if f is not None}
        for folder in folders:
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = WRITE_LEFTOVER.match(p.name)
                if m and p.is_file() and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                    p.unlink(missing_ok=True)
        if self.out_dir is not None:  # dvclive's metrics.json, written through atomic_output (it persists under DVC)
            remove_leftovers(self.out_dir / LIVE_DIR / "metrics.json")

    def _move_previous_run(self) -> Path | None:
        """Move the files of an earlier run (step_N and their hashes, train_state.pt, all_config.yaml, metrics,
        run.json, plots) to OUT/previous-runs/N, keeping their layout; None when there are none. Nothing of a
        user's run is deleted (a train_state.pt in checkpoints/, where runs before OUT/train_state.pt kept it, too)."""
        old: list[tuple[Path, Path]] = []
        if self.ckpt_dir is not None:
            names = [f.name for _, f in step_files(self.ckpt_dir)]
            names += [CONFIG_NAME]
            names += [hash_file(self.ckpt_dir / n).name for n in names] + [STATE_NAME, STATE_NAME + ".sha256"]
            old += [(self.ckpt_dir / n, Path(self.ckpt_dir.name) / n) for n in names if (self.ckpt_dir / n).is_file()]
        if self.out_dir is not None:
            live = self.out_dir / LIVE_DIR
            names = [RUN_INFO_NAME, STATE_NAME, STATE_NAME + ".sha256", "metrics.json", "plots/train.csv", "plots/eval.csv"]
            names += [str(f.relative_to(self.out_dir)) for f in sorted(live.rglob("*")) if f.is_file()] if live.is_dir() else []
            # (metrics.json and plots/*.csv: where runs before dvclive kept their metrics)
            old += [(self.out_dir / n, Path(n)) for n in names if (self.out_dir / n).is_file()]
        old = list(dict(old).items())  # the state's folder may be the checkpoints folder: each file once
        if not old:
            return None
        base = (self.out_dir if self.out_dir is not None else self.ckpt_dir.parent) / PREVIOUS_RUNS
        taken = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
        dest = base / str(max(taken, default=0) + 1)
        for src, rel in old:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest / rel)
        return dest

    def _load(self, key: Mapping[str, Any], total_steps: int) -> Mapping[str, Any] | None:
        if self.state_path is None or not self.state_path.is_file() or not self.cfg.resume:
            return None
        try:
            data, verified = read_verified(self.state_path)
        except IntegrityError as e:  # a flipped byte, a truncation: never resumed from
            self.say(f"{e}; not resuming from it: starting over")
            return None
        if not verified:
            self.say(f"{self.state_path}: no {hash_file(self.state_path).name} beside it, so its content cannot be "
                     "verified; not resuming from it: starting over")
            return None
        try:
            saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable state means starting over, not a crash
            self.say(f"{self.state_path}: cannot read the saved training state ({type(e).__name__}: {e}); starting over")
            return None
        if not saved:
            return None
        reason = why_not_resumable(saved, key, total_steps)
        if reason:
            self.say(f"{self.state_path}: {reason}; starting over")
            return None
        return saved

    # -- the run
    def start(self, state: TrainState, run_config: Mapping[str, Any], num_params: int) -> None:
        self.forward_dtype = state.model.config.forward_dtype
        self.trained_on = run_config.get("trained_on")
        if self.rank != 0:
            return
        self.run = init_wandb(self.cfg.wandb_mode, self.out_dir, self.cfg.project_name, self.cfg.run_name,
                              {**official_config(self.cfg, self.forward_dtype, self.trained_on), **run_config}, job_type="train", run_id=self.wandb_id)
        if self.run is not None:
            self.wandb_id = self.run.id
            if state.step == 0:
                self.run.log({"num_params": num_params}, step=0)
        if self.cfg.progress:
            # A tqdm bar on a terminal; under dvc repro / a log file a plain line every 30 s (hrm.progress).
            self.bar = progress_bar(self.total_steps, "train", "step", initial=state.step, file=sys.stderr, leave=True,
                                    smoothing=0.05)

    def _note(self, message: str) -> None:
        # Above a terminal's bar through tqdm; progress lines (not a terminal) leave the stage log as it is.
        (self.bar.write if self.bar is not None and not isinstance(self.bar, ProgressLines) else self.say)(message)

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.rank != 0:
            return
        self.files.append("train", step, metrics)
        if self.run is not None:
            self.run.log(dict(metrics), step=step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if step % 10 == 0 or step == self.total_steps:
                self.bar.set_postfix(loss=f"{metrics['train/lm_loss']:.3f}", acc=f"{metrics['train/accuracy']:.3f}",
                                     exact=f"{metrics['train/exact_accuracy']:.3f}", lr=f"{metrics['train/lr']:.2e}", refresh=False)

    def evaluated(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.rank != 0:
            return
        self.files.append("eval", step, metrics)
        if self.run is not None:
            self.run.log(dict(metrics), step=step)
        msg = " ".join(f"{k.split('/', 1)[1]}={v:.4g}" for k, v in metrics.items() if k != "eval/count")
        self._note(f"step {step}/{self.total_steps} eval ({int(metrics.get('eval/count', 0))} puzzles): {msg}")

    def checkpoint(self, step: int, model) -> None:
        if self.rank != 0 or self.ckpt_dir is None:
            return
        t0 = time.perf_counter()
        self.last_checkpoint = save_checkpoint(model, self.ckpt_dir / f"step_{step}", extra_config=official_config(self.cfg, self.forward_dtype, self.trained_on))
        self.written[self.last_checkpoint.name] = hash_file(self.last_checkpoint).read_text().split()[0]
        if self.cfg.keep_checkpoints:
            self._prune(self.cfg.keep_checkpoints)
        self._note(f"saved {self.last_checkpoint} ({self.last_checkpoint.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f} s)")

    def _prune(self, keep: int) -> None:
        """Delete all but the last ``keep`` step_N this run wrote, each only while its bytes are the ones
        it wrote: a step_N a user put in checkpoints/, or changed, is never deleted."""
        mine = [f for _, f in step_files(self.ckpt_dir) if f.name in self.written]
        for f in mine[:-keep]:
            if file_sha256(f) == self.written[f.name]:
                f.unlink()
                hash_file(f).unlink(missing_ok=True)
            del self.written[f.name]

    def save(self, snapshot: Mapping[str, Any] | None, state: TrainState, stopped: bool) -> None:
        if snapshot is None or self.state_path is None:
            return
        snapshot = {**snapshot, "history": {**snapshot["history"], "wandb_id": self.wandb_id,
                                            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                                            "checkpoints_written": dict(self.written)},
                    "plot_rows": self.files.rows}
        write_verified(self.state_path, lambda tmp: torch.save(snapshot, tmp))
        if stopped:
            self.say(f"stopped at step {state.step}/{self.total_steps}; state saved to {self.state_path} "
                     "(run the same command to continue)")
            return
        self.files.write_summary(state.summary(self.cfg, self.total_steps), self.run_info())

    def run_info(self) -> dict[str, Any]:
        return {"wandb_id": self.wandb_id}

    def close(self, state: TrainState, finished: bool) -> None:
        if self.bar is not None:
            self.bar.close()
        self.files.close()
        if self.run is not None:
            if not finished:
                self.run.summary["interrupted"] = True
            self.run.finish()


def run(cfg: TrainConfig, *, dataset: Any | None = None, eval_dataset: Any | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train per ``cfg`` into its run folder (``cfg.output_dir``), continuing a matching saved run; see the module docstring."""
    say = log or functools.partial(stage_log, "train")
    folder = RunFolder(cfg, say)
    lock_dir = Path(cfg.output_dir) if cfg.output_dir else checkpoint_dir(cfg)
    with run_lock(lock_dir if int(os.environ.get("RANK", "0")) == 0 else None):
        result = train(cfg, dataset=dataset, eval_dataset=eval_dataset, hooks=folder, callback=callback, log=say)
        if folder.rank == 0 and not result.interrupted:
            folder.files.write_summary(result.metrics, folder.run_info())
            say(f"done: {result.step} steps in {result.metrics['train_seconds']:.0f} s"
                + (f"; last checkpoint {result.checkpoint}" if result.checkpoint else ""))
    return result


@contextlib.contextmanager
def run_lock(folder: Path | None) -> Iterator[None]:
    """Hold the run folder's lock (a second process writing the same run is refused); None: no lock.
    The file stays (pipelines.output_lock.output_lock)."""
    if folder is None:
        yield
        return
    with output_lock(folder / LOCK_NAME, folder, "train", "this run folder"):
        yield
