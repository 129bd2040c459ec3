"""Stage settings from a YAML file (``--config-file params.yaml --section NAME``), below the command line.

One place per param, and no param in shell text: ``dvc.yaml`` hands every stage its ``params.yaml``
section (and the top-level ``seed``, ``TOP_LEVEL_KEYS``) through the file, never as a ``${param}``
pasted into the command, so a value is never parsed by a shell (``;``, ``$(...)``, a space in a path
are characters of the value). A person can still give any option on the command line, which wins
over the file. Keys are the options' long names with underscores (``--test-size`` -> ``test_size``).
A section several stages share (params.yaml's ``data``) names, per stage, the keys it reads
(``keys``) and those the other stages read (``shared``); any other key is refused as a typo.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import click
import yaml
from click.core import ParameterSource

from pipelines.io import StageError

# Keys at the top of a config file that every command with that option reads besides its section:
# params.yaml's one ``seed`` of the whole pipeline.
TOP_LEVEL_KEYS = ("seed",)


def _load(config_file: Path) -> Any:
    try:
        return yaml.safe_load(Path(config_file).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StageError(f"{config_file}: cannot read as YAML ({e})") from None


def read_section(config_file: Path, section: str | None, options: Iterable[str], *, other_keys: Iterable[str] = (),
                 nested: str | None = None) -> dict[str, Any]:
    """The settings in ``section`` (a dotted path; None: the whole file) of a YAML file.

    Keys must be among ``options`` or ``other_keys``, else a StageError lists a few expected
    names. ``nested``: a sub-mapping whose keys are merged in flat (train's ``arch:``).
    """
    node: Any = _load(config_file)
    for part in (section.split(".") if section else []):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{config_file}: no section {section!r}")
        node = node[part]
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise StageError(f"{config_file}: section {section!r} is not a mapping")
    _check_keys(config_file, section, node)
    flat = {k: v for k, v in node.items() if k != nested}
    if nested is not None:
        inner = node.get(nested) or {}
        if not isinstance(inner, dict):
            raise StageError(f"{config_file}: {section}.{nested} is not a mapping")
        _check_keys(config_file, f"{section}.{nested}" if section else nested, inner)
        flat.update(inner)
    options = set(options)
    unknown = sorted(set(flat) - options - set(other_keys))
    if unknown:
        raise StageError(f"{config_file}: unknown key(s) in {section or 'the file'}: {', '.join(unknown)}; "
                         f"expected option names such as {', '.join(sorted(options)[:6])}, ...")
    return flat


def read_top_level(config_file: Path, section: str | None, options: Iterable[str],
                   section_values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``TOP_LEVEL_KEYS`` among ``options`` set at the top of the file (params.yaml's ``seed``), read
    besides ``section`` (none when the section is the whole file). A key also set inside the section
    (``seed`` and ``train.seed``) is a StageError: which one the stage would use is not obvious."""
    doc = _load(config_file) if section else None
    if not isinstance(doc, dict):
        return {}
    found = {key: doc[key] for key in TOP_LEVEL_KEYS if key in options and key in doc}
    both = sorted(set(found) & set(section_values))
    if both:
        raise StageError(f"{config_file}: {', '.join(both)} is set both at the top of the file and in {section} "
                         f"({', '.join(f'{section}.{k}' for k in both)}); keep one")
    return found


def _check_keys(config_file: Path, where: str | None, node: dict) -> None:
    """A section's keys are option names: a number, null or list as a key (``train: {1: 2}``) is refused."""
    bad = [k for k in node if not isinstance(k, str)]
    if bad:
        raise StageError(f"{config_file}: {where or 'the file'}: key {bad[0]!r} is not a name; keys are option "
                         "names such as epochs or seed")


def file_value(config_file: Path, section: str | None, key: str, value: Any, click_type: click.ParamType, *,
               nullable: bool = False) -> Any:
    """A config-file value checked as its option's click type, as strictly as the command line
    (a float or inf for an integer, NaN, a list, a string for a flag are refused, where click's own
    cast would truncate or crash); a StageError names the file and key. An integer written for a
    float option stays as written (all_config.yaml keeps ``expansion: 4`` as params.yaml says).
    ``nullable``: None (YAML null) is a value, passed on as it is."""
    where = f"{config_file}: {section + '.' if section else ''}{key}"
    if value is None:
        if nullable:
            return None
        raise StageError(f"{where}: needs a value")
    if isinstance(click_type, click.types.BoolParamType):
        if not isinstance(value, bool):
            raise StageError(f"{where}: must be true or false, not {value!r}")
        return value
    if isinstance(value, (bool, list, dict)) or (isinstance(click_type, click.types.IntParamType) and isinstance(value, float)):
        raise StageError(f"{where}: {value!r} is not a valid {click_type.name}")
    try:
        if isinstance(click_type, click.types.IntParamType):  # the number first: "'abc' is not a valid integer"
            click.INT.convert(value, None, None)
        elif isinstance(click_type, click.types.FloatParamType):
            click.FLOAT.convert(value, None, None)
        converted = click_type.convert(value, None, None)
    except click.BadParameter as e:
        raise StageError(f"{where}: {e.message}") from None
    if isinstance(converted, float) and isinstance(value, int):
        return value
    return converted


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    """Whether the parameter ``name`` was set by the user (command line or environment), not by its default."""
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _option_keys(command: click.Command, aliases: Mapping[str, str]) -> dict[str, click.Option]:
    """File key -> option: each option's long name with underscores, plus ``aliases`` (key -> long name)."""
    keys = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                if opt.startswith("--"):
                    keys[opt[2:].replace("-", "_")] = param
    for key, long_name in aliases.items():
        keys[key] = keys[long_name]
    return keys


def config_file_options(section: str, aliases: Mapping[str, str] | None = None, *,
                        keys: Iterable[str] | None = None, shared: Iterable[str] = ()) -> Callable:
    """Add ``--config-file`` / ``--section`` to a click command: the section's values, and the
    ``TOP_LEVEL_KEYS`` the command has an option for, replace the defaults of the options the user
    did not give. ``aliases``: file keys that are not an option's own name (``{"checkpoints": "last"}``:
    params.yaml's ``checkpoints`` is ``--last``). ``keys``: the only keys of the section the command
    reads (None: every option's); ``shared``: keys of the section that other commands read, left alone."""
    aliases = dict(aliases or {})
    keys = None if keys is None else tuple(keys)
    shared = tuple(shared)

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def run(*args: Any, config_file: Path | None, section: str, **kwargs: Any) -> Any:
            if config_file is not None:
                ctx = click.get_current_context()
                options = _option_keys(ctx.command, aliases)
                readable = options if keys is None else {key: options[key] for key in keys}
                values = read_section(config_file, section, readable, other_keys=shared)
                top = read_top_level(config_file, section, options, values)
                for where, items in ((section, values), (None, top)):
                    for key, value in items.items():
                        if key in shared and key not in readable:
                            continue
                        kwargs.update(_option_value(ctx, options[key], config_file, where, key, value))
            return func(*args, **kwargs)

        run.config_section = (section, keys)  # what dvc.yaml's params list for the stage: config_params
        run = click.option("--section", default=section, show_default=True,
                           help="Section of --config-file holding the settings (dotted path).")(run)
        return click.option("--config-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                            default=None, help="YAML file with settings (e.g. params.yaml): its --section, "
                                               "and its top-level seed; options on the command line win.")(run)

    return decorate


def _option_value(ctx: click.Context, param: click.Option, config_file: Path, section: str | None, key: str,
                  value: Any) -> dict[str, Any]:
    """{option name: the file's value, checked}; {} when the option was given on the command line (it wins)."""
    if given_on_command_line(ctx, param.name):
        return {}
    if param.multiple:
        items = value if isinstance(value, list) else [value]
        return {param.name: tuple(file_value(config_file, section, key, v, param.type) for v in items)}
    return {param.name: file_value(config_file, section, key, value, param.type)}


def reads_section(section: str, keys: Iterable[str] | None = None) -> Callable:
    """Record, for a command that reads its config file itself (``hrm train``), the section it reads
    (``config_params``); config_file_options records its own."""
    def decorate(func: Callable) -> Callable:
        func.config_section = (section, None if keys is None else tuple(keys))
        return func

    return decorate


def config_params(command: click.Command) -> list[str]:
    """The params a command reads from params.yaml with its default ``--section``: the top-level keys
    it has an option for, then its whole section or the section's keys it reads. dvc.yaml's
    ``params:`` of its stage list exactly these, so DVC reruns the stage when one changes, and only then."""
    section, keys = getattr(command.callback, "config_section", (None, None))
    if section is None:
        return []
    top = [key for key in TOP_LEVEL_KEYS if key in _option_keys(command, {})]
    return top + ([section] if keys is None else [f"{section}.{key}" for key in keys])
