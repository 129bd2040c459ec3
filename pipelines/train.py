"""``hrm train``: train the HRM on a sharded dataset (hrm.train, into the run folder of pipelines/train_run.py), resumably.

Reads a dataset directory written by ``hrm shard`` (``DIR/manifest.json``,
``DIR/{train,test}/*.arrow``), or the shard stage's output root (``DIR/datasets.json``),
from which ``--variant`` picks the hint (default) or vanilla dataset. Writes under
``--output OUT``:

    OUT/checkpoints/step_N           official-format state dicts, one per evaluation
    OUT/checkpoints/all_config.yaml  the run's config, official layout (arch block, data_path, lr, ...)
    OUT/train_state.pt               everything needed to continue the run exactly (+ its .sha256)
    OUT/metrics.json                 final train / eval metrics (``dvc metrics show``)
    OUT/plots/train.csv, eval.csv    per-step train and per-evaluation eval metrics (``dvc plots show``)
    OUT/wandb/                       W&B files, when --wandb-mode is online or offline

Running the same command again continues from ``train_state.pt`` (Ctrl-C saves it at the
current step; otherwise it is saved at every evaluation); changed settings start over.

Settings, from lowest to highest precedence: the option defaults (the quick CPU profile),
``--profile paper`` (the paper's Sudoku run), the ``--section`` of ``--config-file``
(keys = option names with underscores; architecture keys flat or under ``arch:``) with the file's
top-level ``seed`` (pipelines.settings), and options given on the command line.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from hrm.model.base import ArchOption
from hrm.model.losses import LOSS_FUNCTIONS
from hrm.model.registry import UnknownArchitecture, get_architecture, registered_names
from hrm.train import PAPER_PROFILE, QUICK_ARCH, TrainConfig, TrainError, divisors_around, eval_interval_fix
from pipelines.device import resolve_device_option
from pipelines.io import SEED, THREADS, Count, FiniteFloatRange, StageError, check_memory
from pipelines.output_records import check_apart
from pipelines.settings import file_value, given_on_command_line, read_section, read_top_level, reads_section


def _click_type(option: ArchOption) -> Any:
    """The option type of an architecture setting (hrm.model.base.ArchOption): its range or choices."""
    if option.kind == "bool":
        return bool
    if option.choices:
        return click.Choice(list(option.choices))
    if option.kind == "int":
        return Count(int(option.minimum or 0))
    return FiniteFloatRange(min=option.minimum, max=option.maximum, min_open=option.min_open)


def _architecture_options() -> dict[str, ArchOption]:
    """The settings of every registered architecture by name: the default architecture's (HRM's) first, then
    those only another has (TRM's mlp_t, ...). A name two share keeps the first one's range and help, and takes
    the choices of both (pos_encodings: HRM's rope and learned, TRM's none); the config refuses what it lacks."""
    found: dict[str, ArchOption] = {}
    for name in [get_architecture().name, *registered_names()]:
        for o in get_architecture(name).options():
            first = found.setdefault(o.name, o)
            extra = tuple(c for c in o.choices if c not in first.choices)
            if first.choices and extra:
                found[o.name] = dataclasses.replace(first, choices=first.choices + extra)
    return found


ARCHITECTURE_OPTIONS = _architecture_options()
# name, click type, help. Architecture options go into the arch block: the settings of the registered
# architectures' configs (hrm.model.registry; the run's architecture, --arch, takes its own), then the loss
# head's. The defaults are the quick profile's: hrm.train.QUICK_ARCH, else the architecture's config default,
# and TrainConfig's own defaults (quick_default).
ARCH_OPTIONS: list[tuple[str, Any, str]] = [
    *((o.name, _click_type(o), o.help) for o in ARCHITECTURE_OPTIONS.values()),
    ("loss_type", click.Choice(list(LOSS_FUNCTIONS)), "Token loss."),
]
TRAIN_OPTIONS: list[tuple[str, Any, str]] = [
    ("global_batch_size", Count(1), "Examples per step over all processes."),
    ("epochs", Count(1), "Group-epochs (each visits every original puzzle once, one variant each)."),
    ("eval_interval", Count(1), "Epochs between evaluations + checkpoints; must divide --epochs (above it: --epochs, one evaluation at the end)."),
    ("lr", FiniteFloatRange(min=0), "Peak learning rate of the weights (AdamATan2)."),
    ("lr_min_ratio", FiniteFloatRange(min=0), "Final lr / peak lr of the cosine decay (1.0: constant)."),
    ("lr_warmup_steps", Count(0), "Linear warm-up steps."),
    ("beta1", FiniteFloatRange(0, 1, max_open=True), "AdamATan2 beta1."),
    ("beta2", FiniteFloatRange(0, 1, max_open=True), "AdamATan2 beta2."),
    ("weight_decay", FiniteFloatRange(min=0), "Decoupled weight decay of the weights."),
    ("puzzle_emb_lr", FiniteFloatRange(min=0), "Learning rate of the puzzle embedding (sign-SGD)."),
    ("puzzle_emb_weight_decay", FiniteFloatRange(min=0), "Weight decay of the puzzle embedding."),
    ("seed", SEED, "Seed of the initialisation, data order and exploration."),
    ("checkpoint_every_eval", bool, "Save step_N at every evaluation (else only the last)."),
    ("ema", bool, "Evaluate and save an exponential moving average of the weights (TRM's runs)."),
    ("ema_rate", FiniteFloatRange(0, 1), "Decay of that average per optimiser step."),
    ("keep_checkpoints", Count(0), "Keep only the last N step_N files (0: all)."),
    ("eval_size", Count(0), "Evaluate on a seeded sample of N test puzzles (0: all)."),
    ("device", click.Choice(["auto", "cpu", "cuda", "mps"]), "auto: cuda, else mps, else cpu."),
    ("forward_dtype", click.Choice(["auto", "float32", "bfloat16"]), "Activation dtype; auto: bfloat16 on cuda, else float32."),
    ("num_threads", THREADS, "torch CPU threads (0: torch's default)."),
    ("compile", bool, "torch.compile the model (as the official trainer does on CUDA)."),
    ("wandb_mode", click.Choice(["online", "offline", "disabled"]), "Weights & Biases logging."),
    ("project_name", str, "W&B project (empty: hrm-sudoku)."),
    ("run_name", str, "W&B run name (empty: W&B chooses)."),
    ("resume", bool, "Continue from OUT/train_state.pt when its settings match and its bytes check."),
    ("progress", bool, "Show progress (rank 0): a bar on a terminal, else a line with rate and ETA every 30 s."),
]
TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
# TrainConfig fields whose None is 0 / "" on the command line (build_config maps them back).
NONE_AS = {"num_threads": 0, "project_name": "", "run_name": ""}


def quick_default(name: str) -> Any:
    """The quick profile's value of an option: QUICK_ARCH for the architecture, else TrainConfig's default."""
    if name in QUICK_ARCH:
        return QUICK_ARCH[name]
    if name in ARCHITECTURE_OPTIONS:  # a setting of another architecture than HRM: its config's default
        return next(getattr(a.config_class, name) for a in map(get_architecture, registered_names())
                    if name in a.config_keys())
    value = TRAIN_DEFAULTS[name]
    return NONE_AS[name] if value is None else value


ALL_OPTIONS = ARCH_OPTIONS + TRAIN_OPTIONS
ARCH_NAMES = {name for name, *_ in ARCH_OPTIONS}
OPTION_NAMES = {name for name, *_ in ALL_OPTIONS}
PATH_KEYS = {"dataset", "variant", "output", "profile"}


OPTION_TYPES = {name: click.BOOL if typ is bool else click.types.convert_type(typ) for name, typ, _ in ALL_OPTIONS}
# TrainConfig fields that take None (a file may say `eval_interval: null`: one evaluation, at the end).
NULLABLE = {f.name for f in dataclasses.fields(TrainConfig) if "None" in str(f.type)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-").lower()


def _add_options(func):
    for name, typ, help_text in reversed(ALL_OPTIONS):
        default = quick_default(name)
        if typ is bool:  # --x/--no-x; a setting named no_x (TRM's no_ACT_continue): --no-x/--x
            off = _flag(name)[5:] if name.lower().startswith("no_") else "no-" + _flag(name)[2:]
            decl = f"{_flag(name)}/--{off}"
            func = click.option(decl, name, default=default, help=help_text)(func)
        else:
            func = click.option(_flag(name), name, type=typ, default=default, help=help_text)(func)
    return func


def eval_interval_advice(message: str, values: dict[str, Any], section: str) -> str:
    """The library's generic "set eval_interval to ..." of a non-divisor, worded with the params.yaml key, -S and the flags."""
    epochs, interval = values.get("epochs"), values.get("eval_interval")
    if not (isinstance(epochs, int) and isinstance(interval, int) and 1 < interval < epochs and epochs % interval):
        return message
    below, above = divisors_around(epochs, interval)
    nearest = below if interval - below <= above - interval else above
    key = f"{section}.eval_interval"
    return message.replace(eval_interval_fix(epochs, interval),
                           f"set {key} to {below} or {above} (params.yaml / -S {key}={nearest} / --eval-interval {nearest}), "
                           f"or {section}.epochs to a multiple of {interval} (--epochs)")


def arch_block(values: dict[str, Any]) -> dict[str, Any]:
    """The arch block of the run's architecture (``values["arch_name"]``; None: HRM, the default) from the option
    values: the settings its config has and the loss head's, with its ``name`` unless it is the default."""
    name = values.get("arch_name")
    own = _architecture(name).config_keys() | {"loss_type"}
    arch = {key: values[key] for key, *_ in ARCH_OPTIONS if key in own}
    return arch if name is None else {"name": name, **arch}


def _architecture(name: str | None):
    try:
        return get_architecture(name)
    except UnknownArchitecture as e:
        raise StageError(str(e)) from None


def select_architecture(ctx: click.Context, values: dict[str, Any], file_values: dict[str, Any], where: str) -> None:
    """``values["arch_name"]``: --arch, else the file's ``arch.name`` (None: HRM). A setting of another
    architecture given on the command line or in the file (HRM with --mlp-t) is a StageError naming both."""
    name = values.pop("arch", None)
    if name is None and "name" in file_values:
        name = file_values["name"]
        if not isinstance(name, str):
            raise StageError(f"{where}.arch.name: must be an architecture's name, not {name!r}")
    values["arch_name"] = name
    architecture = _architecture(name)
    given = {key for key in ARCHITECTURE_OPTIONS if given_on_command_line(ctx, key) or key in file_values}
    foreign = sorted(given - architecture.config_keys())
    if foreign:
        owners = {key: [n for n in registered_names() if key in get_architecture(n).config_keys()] for key in foreign}
        raise StageError("; ".join(f"{key} is a setting of {', '.join(owners[key])}, not of {architecture.name} "
                                   f"(the run's architecture: --arch / {where}.arch.name)" for key in foreign))


def build_config(values: dict[str, Any], dataset_dir: Path, output: Path, section: str = "train") -> TrainConfig:
    arch = arch_block(values)
    rest = {k: v for k, v in values.items() if k not in ARCH_NAMES and k in OPTION_NAMES}
    rest["eval_size"] = rest["eval_size"] or None
    rest["num_threads"] = rest["num_threads"] or None
    rest["run_name"] = rest["run_name"] or None
    rest["project_name"] = rest["project_name"] or None
    try:
        return TrainConfig(data_path=str(dataset_dir), output_dir=str(output), arch=arch, **rest)
    except TrainError as e:
        raise StageError(eval_interval_advice(str(e), values, section)) from None


def _require_task_trains(dataset_dir: Path) -> None:
    """Refuse a dataset of a task the trainer does not take yet (Task.built_through)."""
    from hrm.manifest import ManifestError, read_manifest
    from hrm.tasks import manifest_task
    from pipelines.dataset_io import require_stage

    try:
        task = manifest_task(read_manifest(dataset_dir))
    except (ManifestError, ValueError):
        return  # the run's own reading of the dataset reports it, naming the file
    require_stage(task, "train", dataset_dir / "manifest.json")


def check_train_memory(cfg: TrainConfig, dataset_dir: Path, device) -> None:
    """Refuse a model and batch that will not fit (hrm.train.estimate_train_memory), before the data is read:
    against the GPU's free memory on CUDA, else the memory available now (ranks of a torchrun job on one
    machine share it)."""
    import os
    import types

    import torch

    from hrm.train import build_model_config, estimate_train_memory
    from hrm.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(dataset_dir)
    except ManifestError:
        return  # the run's own reading of the dataset reports it, naming the file
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    try:
        model_config, loss_type = build_model_config(cfg, types.SimpleNamespace(manifest=manifest), world, device)
    except TrainError as e:
        raise StageError(str(e)) from None
    terms = estimate_train_memory(model_config, loss_type)
    top = max(terms, key=terms.get)
    lower = {"activations": ["--global-batch-size", "--hidden-size"], "buffers": ["--puzzle-emb-ndim", "--hidden-size"]}.get(
        top, ["--hidden-size", "--h-layers", "--l-layers", "--expansion"])
    shown = f"--hidden-size {model_config.hidden_size} x --global-batch-size {cfg.global_batch_size}"
    counted = f"the model, its optimiser and a batch ({top} the most)"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        check_memory("train", sum(terms.values()), shown, counted, lower, available=free, where=f"memory of {device}")
    else:
        check_memory("train", sum(terms.values()) * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))), shown, counted,
                     lower)


@click.command("train")
@click.option("--dataset", type=click.Path(path_type=Path), default=Path("data/datasets"),
              help="A dataset directory (manifest.json), or the shard stage's output (datasets.json) with --variant.")
@click.option("--variant", type=click.Choice(["hint", "vanilla"]), default="hint",
              help="Which dataset of a shard stage output to train on.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/models/hrm"),
              help="Directory for checkpoints/, metrics.json and plots/.")
@click.option("--profile", type=click.Choice(["quick", "paper"]), default="quick",
              help="Base settings: quick = the CPU profile (the defaults shown); paper = the paper's run.")
@click.option("--config-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="YAML file with settings (e.g. params.yaml); options on the command line win.")
@click.option("--section", default="train", help="Section of --config-file holding the settings (dotted path).")
@click.option("--print-config", is_flag=True, help="Print the resolved settings as YAML and exit without training.")
@click.option("--arch", default=None,
              help="The architecture's arch.name (hrm.model.registry; default: HRM's); e.g. "
                   "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1 (TRM).")
@_add_options
@click.pass_context
@reads_section("train")
def train(ctx: click.Context, dataset: Path, variant: str, output: Path, profile: str, config_file: Path | None,
          section: str, print_config: bool, **options: Any) -> None:
    """Train the HRM (AdamATan2 + sign-SGD puzzle embedding, ACT carry across batches), resumably.

    Evaluates on the test split and saves a checkpoint every --eval-interval epochs.
    Under torchrun (`torchrun --nproc-per-node N -m pipelines.train ...`) the global
    batch is split across processes (gloo on CPU, nccl on CUDA).
    """
    def explicit(name: str) -> bool:
        return given_on_command_line(ctx, name)

    file_values = read_section(config_file, section, OPTION_NAMES, other_keys=PATH_KEYS | {"name"}, nested="arch") if config_file else {}
    if not explicit("profile") and "profile" in file_values:
        profile = file_values["profile"]
        if profile not in ("quick", "paper"):
            raise StageError(f"{config_file}: profile must be quick or paper, not {profile!r}")
    values = dict(options)
    select_architecture(ctx, values, file_values, section)
    if profile == "paper":
        values.update({k: v for k, v in PAPER_PROFILE.items() if not explicit(k)})
    top_values = read_top_level(config_file, section, OPTION_NAMES, file_values) if config_file else {}
    for where, items in ((section, file_values), (None, top_values)):
        for key, value in items.items():
            if key in OPTION_NAMES and not explicit(key):
                values[key] = file_value(config_file, where, key, value, OPTION_TYPES[key], nullable=key in NULLABLE)
    for key in ("dataset", "output"):
        if key in file_values and not isinstance(file_values[key], str):
            raise StageError(f"{config_file}: {section}.{key}: must be a path, not {file_values[key]!r}")
    if file_values.get("variant", "hint") not in ("hint", "vanilla"):
        raise StageError(f"{config_file}: {section}.variant: must be hint or vanilla, not {file_values['variant']!r}")
    if not explicit("dataset") and "dataset" in file_values:
        dataset = Path(file_values["dataset"])
    if not explicit("variant") and "variant" in file_values:
        variant = file_values["variant"]
    if not explicit("output") and "output" in file_values:
        output = Path(file_values["output"])

    from pipelines.datasets import resolve_dataset

    if print_config:
        dataset_dir = dataset if not (dataset / "datasets.json").is_file() else resolve_dataset(dataset, variant)
        click.echo(yaml.safe_dump(build_config(values, dataset_dir, output, section).to_dict(), sort_keys=False), nl=False)
        return
    device = resolve_device_option(values["device"])  # before the dataset is read: a missing GPU fails at once
    dataset_dir = resolve_dataset(dataset, variant)
    _require_task_trains(dataset_dir)
    check_apart(output, [dataset, dataset_dir])
    cfg = build_config(values, dataset_dir, output, section)
    check_train_memory(cfg, dataset_dir, device)

    from hrm.data import DatasetError
    from hrm.model import CheckpointError
    from pipelines.train_run import run as run_training

    try:
        result = run_training(cfg)
    except (DatasetError, TrainError, CheckpointError) as e:
        raise StageError(str(e)) from None
    except FloatingPointError as e:
        raise StageError(f"{e}: lower --lr or raise --lr-warmup-steps") from None
    if result.interrupted:
        click.echo("train: interrupted; run the same command again to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":  # torchrun --nproc-per-node N -m pipelines.train [OPTIONS]
    train(prog_name="hrm train")
