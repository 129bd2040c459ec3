"""The ``hrm`` command: one sub-command per pipeline stage."""

from __future__ import annotations

import click

from hrm import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="hrm")
def cli() -> None:
    """HRM on Sudoku-Extreme: build datasets, train, evaluate, analyse.

    Every stage of dvc.yaml is one of these commands; DVC calls them with the
    values in params.yaml, and you can call them by hand.
    """


def _register() -> None:
    from pipelines import augment, hints, raw, shard, subsample, validate

    cli.add_command(raw.raw)
    cli.add_command(validate.validate)
    cli.add_command(subsample.subsample)
    cli.add_command(augment.augment)
    cli.add_command(hints.hints)
    cli.add_command(shard.shard)


_register()


def main() -> None:
    cli()
