"""Stage settings from a YAML file (``--config-file params.yaml --section NAME``), below the command line.

One place per param: ``dvc.yaml`` hands a stage its ``params.yaml`` section instead of one
``${param}`` flag per setting, and a person can still give any option on the command line,
which wins over the file. Keys are the options' long names with underscores
(``--test-size`` -> ``test_size``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import click
import yaml
from click.core import ParameterSource

from pipelines.io import StageError


def read_section(config_file: Path, section: str | None, options: Iterable[str], *, other_keys: Iterable[str] = (),
                 nested: str | None = None) -> dict[str, Any]:
    """The settings in ``section`` (a dotted path; None: the whole file) of a YAML file.

    Keys must be among ``options`` or ``other_keys``, else a StageError lists a few expected
    names. ``nested``: a sub-mapping whose keys are merged in flat (train's ``arch:``).
    """
    try:
        doc = yaml.safe_load(Path(config_file).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StageError(f"{config_file}: cannot read as YAML ({e})") from None
    node: Any = doc
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


def resolve_device_option(device: str):
    """The torch device for a stage's ``--device`` (auto: cuda, else mps, else cpu); one that is not
    here is a StageError, before any input is read."""
    from hrm.model import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as e:
        raise StageError(f"--device {device}: {e} (use --device auto or cpu)") from None


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


def config_file_options(section: str, aliases: Mapping[str, str] | None = None) -> Callable:
    """Add ``--config-file`` / ``--section`` to a click command: the section's values replace the
    defaults of the options the user did not give. ``aliases``: file keys that are not an
    option's own name (``{"checkpoints": "last"}``: params.yaml's ``checkpoints`` is ``--last``)."""
    aliases = dict(aliases or {})

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def run(*args: Any, config_file: Path | None, section: str, **kwargs: Any) -> Any:
            if config_file is not None:
                ctx = click.get_current_context()
                keys = _option_keys(ctx.command, aliases)
                for key, value in read_section(config_file, section, keys).items():
                    param = keys[key]
                    if given_on_command_line(ctx, param.name):
                        continue
                    if param.multiple:
                        items = value if isinstance(value, list) else [value]
                        kwargs[param.name] = tuple(file_value(config_file, section, key, v, param.type) for v in items)
                    else:
                        kwargs[param.name] = file_value(config_file, section, key, value, param.type)
            return func(*args, **kwargs)

        run = click.option("--section", default=section, show_default=True,
                           help="Section of --config-file holding the settings (dotted path).")(run)
        return click.option("--config-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                            default=None, help="YAML file with settings (e.g. params.yaml); options on the "
                                               "command line win.")(run)

    return decorate
