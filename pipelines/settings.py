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
    flat = {k: v for k, v in node.items() if k != nested}
    if nested is not None:
        inner = node.get(nested) or {}
        if not isinstance(inner, dict):
            raise StageError(f"{config_file}: {section}.{nested} is not a mapping")
        flat.update(inner)
    options = set(options)
    unknown = sorted(set(flat) - options - set(other_keys))
    if unknown:
        raise StageError(f"{config_file}: unknown key(s) in {section or 'the file'}: {', '.join(unknown)}; "
                         f"expected option names such as {', '.join(sorted(options)[:6])}, ...")
    return flat


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
                    if param.multiple and not isinstance(value, (list, tuple)):
                        value = [value]
                    try:
                        kwargs[param.name] = param.type_cast_value(ctx, value)
                    except click.BadParameter as e:
                        raise StageError(f"{config_file}: {section}.{key}: {e.message}") from None
            return func(*args, **kwargs)

        run = click.option("--section", default=section, show_default=True,
                           help="Section of --config-file holding the settings (dotted path).")(run)
        return click.option("--config-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                            default=None, help="YAML file with settings (e.g. params.yaml); options on the "
                                               "command line win.")(run)

    return decorate
