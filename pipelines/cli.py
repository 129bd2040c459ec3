"""The ``hrm`` command: one sub-command per pipeline stage."""

from __future__ import annotations

import importlib
import signal
import sys

import click

from hrm import __version__
from pipelines.io import Interrupts

# name -> "module:attribute". Imported on use, so `hrm raw` does not pay for torch,
# datasets or the registry's git/DVC imports.
COMMANDS = {
    "raw": "pipelines.raw:raw",
    "subsample": "pipelines.subsample:subsample",
    "augment": "pipelines.augment:augment",
    "hints": "pipelines.hints:hints",
    "shard": "pipelines.shard:shard",
    "train": "pipelines.train:train",
    "evaluate": "pipelines.evaluate:evaluate",
    "analyze": "pipelines.analyze:analyze",
    "validate": "pipelines.validate:validate",
    "registry": "pipelines.registry:registry",
    "publish": "pipelines.publish:publish",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)  # pipeline order, not alphabetical

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="hrm")
def cli() -> None:
    """HRM on Sudoku-Extreme: build datasets, train, evaluate, analyse.

    Every stage of dvc.yaml is one of these commands; DVC calls them with the
    values in params.yaml, and you can call them by hand.
    """


def main(command: click.Command = cli, prog_name: str | None = None) -> None:
    """Run ``command`` (the ``hrm`` group) as the console script does, with Ctrl-C and SIGTERM
    stopping it (pipelines.io.Interrupts): exit 128 + the signal's number, one line, no traceback."""
    with Interrupts() as interrupts:
        try:
            code = command.main(prog_name=prog_name, standalone_mode=False)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):  # click turns KeyboardInterrupt into Abort
            interrupts.signum = interrupts.signum or signal.SIGINT
        if interrupts.signum is None and interrupts.dropped:  # dropped, and no check point came after it
            interrupts.signum = signal.SIGINT
        if interrupts.signum is not None:
            click.echo(f"hrm: stopped by {interrupts.name}; outputs being written were not put in place", err=True)
            sys.exit(128 + interrupts.signum)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # python -m pipelines.cli STAGE ... (where the `hrm` script is not installed)
    main(prog_name="hrm")
