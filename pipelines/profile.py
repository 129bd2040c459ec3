"""``hrm profile``: a named set of params (``profiles/NAME.yaml``) run as one ``dvc exp run``.

A profile is data, not code: ``profiles/NAME.yaml`` holds a one-line ``description`` and ``params``, a
mapping from params.yaml keys, dotted as ``dvc exp run -S`` takes them (``train.arch.hidden_size``), to
values, and optionally ``stages``, the dvc.yaml stages to run (with everything they depend on) where a
profile stops short of the whole pipeline (a task whose analysis is not built yet: ARC runs to evaluate).
``hrm profile run NAME`` runs ``dvc exp run -n NAME -S key=value ... [STAGE ...]`` with them, in the
file's order; ``-S key=value`` on the command line wins over the profile's value. Every key must be a key of
params.yaml: DVC would add a misspelt key as a new param that no stage reads, so a typo is refused here,
naming the file and the key. The one exception is written ``+key`` (DVC's ``-S +key=value``, which adds a key):
a setting params.yaml does not hold because its architecture (HRM) has none, ``+train.arch.mlp_t`` of TRM; it
must be a setting of a registered architecture (:func:`addable`). The profiles are read from the current directory, as DVC reads dvc.yaml.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from pipelines.params_keys import has_key

PROFILES_DIR = "profiles"
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    settings: dict[str, str]  # dotted params.yaml key -> the value as `-S key=value` writes it
    stages: tuple[str, ...] = ()  # the dvc.yaml stages to run (with their upstream); empty: all


def _read_yaml(path: Path, what: str) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file ({what})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise click.ClickException(f"{path}: not valid YAML{where}") from None


def addable(params: dict, dotted: str) -> str | None:
    """Why ``+dotted`` may not be added to params.yaml, or None when it may: ``train.arch.X`` for X a setting of a
    registered architecture (hrm.model.registry) that params.yaml lacks."""
    section, _, name = dotted.rpartition(".")
    if has_key(params, dotted):
        return "already a key of params.yaml (drop the +)"
    if section != "train.arch":
        return "only train.arch.<setting> may be added (+), the settings of an architecture params.yaml lacks"
    from hrm.model.registry import get_architecture, registered_names

    settings = {o.name for n in registered_names() for o in get_architecture(n).options()}
    if name not in settings:
        return f"no registered architecture has a setting {name!r}"
    return None


def key_problem(params: dict, key: str, params_file: Path) -> str | None:
    """What is wrong with a profile's or an override's key (None: nothing): ``key`` of params.yaml, or ``+key``."""
    if key.startswith("+"):
        why = addable(params, key[1:])
        return None if why is None else f"{key}: {why}"
    return None if has_key(params, key) else f"{key}: not a key of {params_file}"


def as_setting(value: object) -> str:
    """A YAML scalar as `-S key=value` writes it: ``false``, not Python's ``False``. A value the YAML file
    holds as a string (``1e-4``: YAML 1.1 reads no float without a dot) is passed as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def profile_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_profile(folder: Path, name: str, params: dict, params_file: Path = Path(PARAMS_FILE)) -> Profile:
    """``folder/name.yaml``, checked: a mapping with ``params`` (scalar values, every key one of params.yaml)
    and an optional ``description``. Anything else is one message naming the file (and the key)."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(profile_names(folder)) or "none"
        raise click.ClickException(f"no profile {name!r}: {path} does not exist (profiles in {folder}: {known})")
    data = _read_yaml(path, "profile")
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise click.ClickException(f"{path}: a profile is a mapping with a non-empty 'params' mapping "
                                   "(dotted params.yaml key: value)")
    unknown = sorted(set(data) - {"description", "params", "stages"})
    if unknown:
        raise click.ClickException(f"{path}: unknown key {unknown[0]!r} (a profile has 'description', 'params' "
                                   "and 'stages')")
    settings = {}
    for key, value in data["params"].items():
        if problem := key_problem(params, str(key), params_file):
            raise click.ClickException(f"{path}: {problem}")
        if isinstance(value, (dict, list)):
            raise click.ClickException(f"{path}: {key}: a value is one scalar (number, string, true/false)")
        settings[str(key)] = as_setting(value)
    stages = _stages(path, data.get("stages"), params_file.parent / "dvc.yaml")
    return Profile(name, path, str(data.get("description") or ""), settings, stages)


def _stages(path: Path, stages: object, pipeline_file: Path) -> tuple[str, ...]:
    """A profile's ``stages``: a list of the stage names of ``pipeline_file`` (dvc.yaml beside params.yaml)."""
    if stages is None:
        return ()
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
        raise click.ClickException(f"{path}: stages: a list of {pipeline_file.name} stage names")
    pipeline = _read_yaml(pipeline_file, "the pipeline")
    known = list(pipeline.get("stages") or {}) if isinstance(pipeline, dict) else []
    for stage in stages:
        if stage not in known:
            raise click.ClickException(f"{path}: stages: {stage!r} is not a stage of {pipeline_file} "
                                       f"({', '.join(known)})")
    return tuple(stages)


def parse_overrides(texts: tuple[str, ...], params: dict, params_file: Path = Path(PARAMS_FILE)) -> dict[str, str]:
    """``-S key=value`` options as ``dvc exp run`` takes them; a key must be one of params.yaml (or ``+key``)."""
    overrides = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.ClickException(f"-S {text}: not key=value")
        if problem := key_problem(params, key, params_file):
            raise click.ClickException(f"-S {text}: {problem}")
        overrides[key] = value
    return overrides


def dvc_command(profile: Profile, overrides: dict[str, str], experiment: str) -> list[str]:
    """``dvc exp run -n EXPERIMENT -S key=value ...``: the profile's settings in its order, an override
    replacing the profile's value in place (``key`` or ``+key`` for the profile's ``+key``), keys the profile
    lacks after them."""
    settings = dict(profile.settings)
    for key, value in overrides.items():
        added = "+" + key.lstrip("+")
        settings[added if added in settings else key] = value
    return ["dvc", "exp", "run", "-n", experiment, *(a for k, v in settings.items() for a in ("-S", f"{k}={v}")),
            *profile.stages]


@dataclass(frozen=True)
class Place:
    folder: Path
    params_file: Path

    def params(self) -> dict:
        params = _read_yaml(self.params_file, "the pipeline's params")
        if not isinstance(params, dict):
            raise click.ClickException(f"{self.params_file}: not a YAML mapping of params")
        return params


@click.group(name="profile")
@click.option("--profiles-dir", type=click.Path(file_okay=False, path_type=Path), default=PROFILES_DIR,
              help="The folder of profiles (NAME.yaml).")
@click.option("--params-file", type=click.Path(dir_okay=False, path_type=Path), default=PARAMS_FILE,
              help="The params.yaml whose keys a profile may set.")
@click.pass_context
def profile(ctx: click.Context, profiles_dir: Path, params_file: Path) -> None:
    """Named sets of params (profiles/NAME.yaml), each run as one `dvc exp run`.

    \b
    hrm profile list
    hrm profile show maze-quick
    hrm profile run maze-quick [-S key=value ...] [--name EXP] [--dry-run]
    """
    ctx.obj = Place(profiles_dir, params_file)


@profile.command(name="list")
@click.pass_obj
def list_profiles(place: Place) -> None:
    """Every profile with its description."""
    names = profile_names(place.folder)
    if not names:
        raise click.ClickException(f"{place.folder}: no profiles (NAME.yaml) here")
    params = place.params()
    for name in names:
        click.echo(f"{name}: {load_profile(place.folder, name, params, place.params_file).description}")


@profile.command()
@click.argument("name")
@click.pass_obj
def show(place: Place, name: str) -> None:
    """A profile's file, description and settings, one `key=value` a line."""
    chosen = load_profile(place.folder, name, place.params(), place.params_file)
    click.echo(f"# {chosen.path}: {chosen.description}")
    if chosen.stages:
        click.echo(f"# stages: {' '.join(chosen.stages)} (and the stages they depend on)")
    for key, value in chosen.settings.items():
        click.echo(f"{key}={value}")


@profile.command()
@click.argument("name")
@click.option("-S", "--set-param", "set_params", multiple=True, metavar="KEY=VALUE",
              help="A params.yaml key to set on top of the profile (wins over its value); repeatable.")
@click.option("-n", "--name", "experiment", default=None, help="The experiment's name  [default: the profile's]")
@click.option("--dry-run", is_flag=True, help="Print the dvc command and run nothing.")
@click.pass_context
def run(ctx: click.Context, name: str, set_params: tuple[str, ...], experiment: str | None, dry_run: bool) -> None:
    """Run `dvc exp run -n NAME -S key=value ...` with the profile's settings."""
    place: Place = ctx.obj
    params = place.params()
    chosen = load_profile(place.folder, name, params, place.params_file)
    overrides = parse_overrides(set_params, params, place.params_file)
    command = dvc_command(chosen, overrides, experiment or chosen.name)
    if dry_run:
        click.echo(shlex.join(command))
        return
    if shutil.which(command[0]) is None:
        raise click.ClickException("dvc is not on PATH (install the project: pip install -e .)")
    click.echo(f"hrm profile: {shlex.join(command)}", err=True)
    ctx.exit(subprocess.run(command, check=False).returncode)  # an argument list: no shell parses a value
