"""The ``hrm`` command: one sub-command per pipeline stage."""

from __future__ import annotations

import os
import signal
import sys


def _stop_while_starting(signum: int, frame: object) -> None:  # noqa: ARG001
    """SIGINT / SIGTERM before the command's own handler (pipelines.io.Interrupts) is in place: nothing has
    been written yet, so exit at once, with one line, whatever was being imported."""
    os.write(2, f"hrm: stopped by {signal.Signals(signum).name} while starting; nothing was written\n".encode())
    os._exit(128 + signum)


def _install_early_stop() -> dict:
    """Install :func:`_stop_while_starting` for SIGINT and SIGTERM; returns the handlers it replaced."""
    return {sig: signal.signal(sig, _stop_while_starting) for sig in (signal.SIGINT, signal.SIGTERM)}


def _ignore_late_signals() -> None:
    """The command is over (its outputs in place, or stopped): a later SIGINT / SIGTERM is ignored. Python's
    finalization puts back the default action of a signal that has a Python handler, not of an ignored one,
    so a signal then would kill the process (exit -2) or cut finalizers short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


# Launched as the `hrm` script or `python -m pipelines.cli`: the handler goes in before anything slow is
# imported (click, numpy, polars, torch: a Ctrl-C there was a traceback). Imported by a test or another
# program, the module leaves their signal handlers alone.
AS_SCRIPT = __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "hrm"
if AS_SCRIPT:
    _install_early_stop()

import importlib  # noqa: E402

import click  # noqa: E402

from hrm import __version__  # noqa: E402

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
    "profile": "pipelines.profile:profile",
    "compare": "pipelines.compare:compare",
    "view": "pipelines.view:view",
    "plots-template": "pipelines.plots_template:plots_template",
    "upstream": "pipelines.upstream:upstream",
    "checkpoint": "pipelines.checkpoint:checkpoint",
    "paper": "pipelines.paper:paper",
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
    stopping it (pipelines.io.Interrupts): exit 128 + the signal's number, one line, no traceback.
    An operating-system error on a user's path (pipelines.io.path_error) is one message, exit 1."""
    # Until Interrupts is in place (importing pipelines.io loads numpy and polars); the caller's handlers
    # come back at the end (a test calling main keeps its own).
    saved = _install_early_stop() if threading_is_main() else {}
    try:
        _run(command, prog_name)
    finally:
        if AS_SCRIPT and saved:  # the process ends now: nothing to give back
            _ignore_late_signals()
        else:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def _run(command: click.Command, prog_name: str | None) -> None:
    from pipelines.io import Interrupts, path_error

    code = None
    with Interrupts() as interrupts:
        try:
            try:
                code = command.main(prog_name=prog_name, standalone_mode=False)
            finally:
                interrupts.finished = True  # outputs in place (or not): a signal from now on is too late
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):  # click turns KeyboardInterrupt into Abort
            interrupts.signum = interrupts.signum or signal.SIGINT
        except Exception as e:
            if interrupts.signum is None:  # after a signal, whatever failed failed because of it
                error = path_error(e)
                if error is None:
                    raise
                error.show()
                sys.exit(error.exit_code)
        if interrupts.signum is None and interrupts.dropped:  # dropped, and no check point came after it
            interrupts.signum = signal.SIGINT
        if interrupts.signum is not None:
            click.echo(f"hrm: stopped by {interrupts.name}; outputs being written were not put in place", err=True)
            _exit_stopped(128 + interrupts.signum)
    sys.exit(code if isinstance(code, int) else 0)


def _exit_stopped(code: int) -> None:
    """Exit after a signal stopped the command (its temporaries already removed). As the `hrm` script,
    without Python's finalization: a signal may have cut numba's JIT compilation short, and finalizing
    its half-built objects can crash the interpreter (a SIGSEGV after the message)."""
    if not AS_SCRIPT:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # python -m pipelines.cli STAGE ... (where the `hrm` script is not installed)
    main(prog_name="hrm")
