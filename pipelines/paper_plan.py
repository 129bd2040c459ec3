"""What one of the paper's evaluations (``hrm paper``, docs/experiments.md "The paper's evaluations") runs,
and what it costs, before anything is fetched.

``papers/evaluations.yaml`` names each evaluation: the stage of ``papers/dvc.yaml`` that ends it, the task,
the size of the task's full test split, the published config of the weights (their ``all_config.yaml``'s
arch block) and the figures the papers report. ``papers/params.yaml`` holds the stages' settings. From the
two the plan counts the work exactly as the stage will run it: a *pass* is one row (a puzzle under one
perturbation) through one checkpoint for every ACT segment (the paper's procedure), or, in the analysis, one
row of a trace, of the easy probe or of the multistability runs, and one landscape grid point for one
segment (its flow arrow). The FLOPs are the row-segments times the published config's segment FLOPs
(hrm.evaluate.engine.segment_flops); the rate is measured on the device found, on a model of that config
initialised from the seed (the weights are not fetched for it: the time of a forward does not depend on
their values), one segment of random tokens of the task's vocabulary, as ``hrm evaluate``'s own cost line
measures it (hrm.evaluate.cost.measure_rate). The evaluate stage logs that line again from the real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from hrm.evaluate.cost import duration, flop_count
from pipelines.io import StageError

EVALUATIONS_FILE = "evaluations.yaml"
PARAMS_FILE = "params.yaml"
PIPELINE_FILE = "dvc.yaml"
STEP_FILE_PREFIX = "step_"
# Tokens of the CPU trial: compute-bound there, so the rate per row of a smaller chunk is the run's (a maze's
# 32-row chunk took 2 x 167 s on the paper's config, 2 shared cores).
CPU_TRIAL_TOKENS = 4096


@dataclass(frozen=True)
class Evaluation:
    """One of the paper's evaluations (an entry of papers/evaluations.yaml)."""

    name: str
    description: str
    stage: str  # the papers/dvc.yaml stage that ends it (run with every stage it depends on)
    kind: str  # evaluate | analyze
    section: str  # its section of papers/params.yaml (model, evaluate / analyze)
    task: str
    test_rows: int  # the task's full test split
    arch: dict[str, Any]  # the published config's arch block
    expected: tuple[str, ...]  # the figures the papers report, each with its source
    needs_clone: bool = False  # the weights come from a local folder (`--clone`), not the Hub


@dataclass(frozen=True)
class Work:
    """The passes of a run: ``groups`` of (what, passes, segments each)."""

    checkpoints: int
    groups: tuple[tuple[str, int, int], ...]

    @property
    def passes(self) -> int:
        return sum(n for _, n, _ in self.groups)

    @property
    def row_segments(self) -> int:
        return sum(n * s for _, n, s in self.groups)


@dataclass(frozen=True)
class Projection:
    """The work, its FLOPs, and the hours a trial on ``device`` projects."""

    work: Work
    flops: float
    rate: float  # row-segments per second, measured
    trial_rows: int
    device: str

    @property
    def hours(self) -> float:
        return self.work.row_segments / max(self.rate, 1e-9) / 3600

    def describe(self) -> str:
        parts = ", ".join(f"{what} {n:,} x {s}" for what, n, s in self.work.groups)
        return (f"{self.work.passes:,} passes ({parts} segments) = {self.work.row_segments:,} row-segments, "
                f"{flop_count(self.flops)}; a trial of {self.trial_rows:,} rows of a seeded model of the "
                f"published config ran {self.rate:,.1f} row-segments/s on {self.device}: {duration(self.hours)}")


# --------------------------------------------------------------------------- the files


def read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: no such file ({what})") from None
    except yaml.YAMLError as e:
        raise StageError(f"{path}: not valid YAML ({e})") from None


def load_evaluations(folder: Path) -> dict[str, Evaluation]:
    """papers/evaluations.yaml, checked: each entry's keys, and its stage a stage of papers/dvc.yaml."""
    path = folder / EVALUATIONS_FILE
    data = read_yaml(path, "the paper's evaluations")
    stages = (read_yaml(folder / PIPELINE_FILE, "the paper's pipeline") or {}).get("stages") or {}
    if not isinstance(data, dict) or not data:
        raise StageError(f"{path}: a mapping of evaluation name to its entry")
    found = {}
    for name, entry in data.items():
        try:
            found[name] = Evaluation(name=str(name), **{**entry, "expected": tuple(entry.get("expected") or ())})
        except TypeError as e:
            raise StageError(f"{path}: {name}: {e}") from None
        if found[name].stage not in stages:
            raise StageError(f"{path}: {name}: stage {found[name].stage!r} is not a stage of {folder / PIPELINE_FILE}")
    return found


def section_of(params: Mapping[str, Any], dotted: str, path: Path) -> dict[str, Any]:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{path}: no section {dotted!r}")
        node = node[part]
    if not isinstance(node, dict):
        raise StageError(f"{path}: {dotted} is a value, not a section")
    return dict(node)


def with_overrides(params: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """``params`` with each dotted key set to its value (parsed as YAML, as DVC's -S does)."""
    out = yaml.safe_load(yaml.safe_dump(dict(params)))
    for dotted, text in overrides.items():
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[last] = yaml.safe_load(text) if text != "" else ""
    return out


# --------------------------------------------------------------------------- the work


def _count(value: int, whole: int) -> int:
    """A sample size of the params (0: all) as a number of rows of ``whole``."""
    return whole if not value else min(int(value), whole)


def _listed(text: Any) -> list[str]:
    return [] if str(text).strip().lower() == "none" else [t for t in str(text).split(",") if t.strip()]


def evaluate_work(ev: Evaluation, settings: Mapping[str, Any], checkpoints: int) -> Work:
    """hrm evaluate's passes: checkpoints x perturbations x puzzles x (the split and each tier)."""
    rows = _count(settings.get("test_size", 0), ev.test_rows)
    sets = 1 + len(_listed(settings.get("tiers", "none")))
    passes = checkpoints * int(settings.get("permutations", 1)) * rows * sets
    return Work(checkpoints, (("evaluate", passes, int(ev.arch["halt_max_steps"])),))


def analyze_work(ev: Evaluation, settings: Mapping[str, Any]) -> Work:
    """hrm analyze's passes (docs/analyze.md): the traced sample, the easy probe, the multistability runs and
    one segment per landscape grid point of each selected puzzle."""
    segments = int(settings.get("segments") or ev.arch["halt_max_steps"])
    sample = _count(settings.get("sample", 0), ev.test_rows)
    groups = [("traces", sample, segments)]
    easy_k = _listed(settings.get("easy_k", "none"))
    if easy_k:
        groups.append(("easy probe", _count(settings.get("easy_sample", 0), sample) * len(easy_k), segments))
    shifts, noise_runs = int(settings.get("shifts", 0)), int(settings.get("noise_runs", 0))
    if shifts > 0:
        runs = shifts + noise_runs * len(_listed(settings.get("noise", "none")))
        groups.append(("multistability", _count(settings.get("fp_sample", 0), sample) * runs, segments))
    selected = len(_listed(settings.get("puzzle_index", "none")))
    if selected:
        side = 2 * int(settings.get("landscape_radius", 0)) + 1
        groups.append(("landscape points", selected * side * side, 1))
    return Work(1, tuple(groups))


def folder_steps(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob(f"{STEP_FILE_PREFIX}*") if p.name[len(STEP_FILE_PREFIX):].isdigit()),
                  key=lambda p: int(p.name[len(STEP_FILE_PREFIX):]))


def work_of(ev: Evaluation, params: Mapping[str, Any], params_path: Path) -> Work:
    """The passes ``ev`` runs with ``params``; a size that is no number is one message naming the section."""
    try:
        return _work_of(ev, params, params_path)
    except (TypeError, ValueError) as e:
        raise StageError(f"{params_path}: {ev.section}: a size or count that is no whole number ({e})") from None


def _work_of(ev: Evaluation, params: Mapping[str, Any], params_path: Path) -> Work:
    settings = section_of(params, f"{ev.section}.{ev.kind}", params_path)
    if ev.kind == "analyze":
        return analyze_work(ev, settings)
    wanted = int(settings.get("checkpoints", 1))
    folder = section_of(params, f"{ev.section}.model", params_path).get("folder")
    if ev.needs_clone and folder:  # the last `checkpoints` of the folder's step_N, as evaluate takes them
        wanted = min(wanted, len(folder_steps(Path(folder))) or wanted)
    return evaluate_work(ev, settings, wanted)


# --------------------------------------------------------------------------- the trial


def seeded_model(ev: Evaluation, device: Any, seed: int, forward_dtype: str = "auto"):
    """A model of the published config, initialised from ``seed``, on ``device``, in the dtype the stage will
    run: ``forward_dtype`` float32 / bfloat16 as set; auto (evaluate's) float32 on a CPU and the config's own on
    an accelerator, as ``hrm evaluate`` loads the weights; config (analyze's) the config's own."""
    import torch

    from hrm.model.registry import architecture_of_arch
    from hrm.tasks import TASKS

    task = TASKS[ev.task]
    arch = {**ev.arch, "seq_len": task.seq_len, "vocab_size": task.vocab_size, "num_puzzle_identifiers": 1,
            "batch_size": 1}
    if forward_dtype in ("float32", "bfloat16"):
        arch["forward_dtype"] = forward_dtype
    elif forward_dtype == "auto" and torch.device(device).type == "cpu":
        arch["forward_dtype"] = "float32"
    architecture = architecture_of_arch(arch)
    loss = arch.get("loss") or {}
    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = architecture.build(architecture.config_from_checkpoint(arch),
                                   loss_type=loss.get("loss_type", "stablemax_cross_entropy"))
    return model.to(device).eval()


def project(ev: Evaluation, work: Work, device: Any, trial_rows: int, seed: int, forward_dtype: str = "auto"
            ) -> Projection:
    """The FLOPs of ``work`` and the hours a one-segment trial of ``trial_rows`` rows on ``device`` projects."""
    import numpy as np

    from hrm.evaluate.cost import measure_rate
    from hrm.evaluate.engine import Engine, auto_max_rows, segment_flops

    model = seeded_model(ev, device, seed, forward_dtype)
    engine = Engine([model], max_rows=auto_max_rows(device))
    config = model.config
    rows = min(trial_rows, engine.max_rows or trial_rows)
    if engine.max_rows:  # a CPU: a chunk of about CPU_TRIAL_TOKENS tokens (32 puzzles, 4 mazes) keeps a dry run short
        rows = min(rows, max(1, CPU_TRIAL_TOKENS // config.seq_len))
    tokens = np.random.default_rng(seed).integers(1, config.vocab_size, size=(rows, config.seq_len))
    rate = measure_rate(engine, tokens)
    flops = float(segment_flops(model) * work.row_segments)
    return Projection(work=work, flops=flops, rate=rate, trial_rows=rows, device=str(device))
