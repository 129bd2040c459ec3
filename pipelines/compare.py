"""``hrm compare``: runs side by side (an HRM and a TRM on the same puzzles), one table and one figure.

    hrm compare REV REV [REV ...] --output DIR     (= hrm compare revisions ...)
    hrm compare run [PROFILE_A PROFILE_B] [-S key=value ...] [--dry-run] --output DIR

``revisions`` reads each revision's committed results and cached summaries (pipelines/compare_sources.py),
refuses runs that did not evaluate the same puzzles, and writes DIR/comparison.md (one table: each rule's
accuracy on the test split, the tiers, by rating and by blanks; segments to solve; fixed-point classes;
trapped guesses), comparison.csv (the same values as read, with the file and key of each) and
comparison.png; DIR is replaced as a whole, on success only. ``run`` runs the two profiles as named
experiments (`hrm profile run NAME`, as a user would: default hrm-quick and trm-quick), each from HEAD's
params, loading one whose experiment exists already on HEAD's baseline, then compares them; `dvc exp show`
lists both.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import click

from pipelines.io import StageError, log

STAGE = "compare"
DEFAULT_PAIR = ("hrm-quick", "trm-quick")


class _RevisionsByDefault(click.Group):
    """``hrm compare A B`` is ``hrm compare revisions A B``: a first word that is no sub-command is a revision
    (an experiment called ``run`` is still ``hrm compare revisions run ...``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["revisions", *args]
        return super().parse_args(ctx, args)


@click.group(name="compare", cls=_RevisionsByDefault)
def compare() -> None:
    """Runs side by side (HRM and TRM on the same puzzles): one table and one figure.

    \b
    hrm compare main trm-quick --output data-compare
    hrm compare run hrm-quick trm-quick --output data-compare [--dry-run]
    """


def _output_option(f):
    return click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Folder for comparison.md, comparison.csv and comparison.png (replaced as a whole).")(f)


def _repo_option(f):
    return click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
                        help="The git + DVC repository the revisions are in.")(f)


@compare.command()
@click.argument("names", nargs=-1, required=True, metavar="REV REV [REV ...]")
@_output_option
@_repo_option
def revisions(names: tuple[str, ...], output: Path, repo: Path) -> None:
    """Compare runs committed in git: experiments (dvc exp show), branches, tags or commits."""
    if len(names) < 2:
        raise click.UsageError("name at least two revisions to compare")
    write_comparison(repo, list(names), output)


def write_comparison(repo: Path, names: list[str], output: Path) -> None:
    from hrm.analysis.plots import save_figure
    from hrm.comparison import comparison_figure, comparison_rows, csv_text, markdown_text
    from pipelines.atomic_replace import atomic_output
    from pipelines.compare_sources import load_runs, notes

    loaded = load_runs(repo, names)
    runs = [run.results for run in loaded]
    rows = comparison_rows(runs)
    with atomic_output(output, stage=STAGE) as tmp:
        tmp.mkdir()
        (tmp / "comparison.md").write_text(markdown_text(runs, rows, notes(loaded)))
        (tmp / "comparison.csv").write_text(csv_text(runs, rows))
        save_figure(comparison_figure(runs, rows), tmp / "comparison.png")
    log(STAGE, f"wrote {output}/ (comparison.md, comparison.csv, comparison.png): " + " vs ".join(r.title for r in runs))


def _profile_command(name: str, set_params: tuple[str, ...], dry_run: bool) -> list[str]:
    """`hrm profile run NAME -S ...` (the profile's own code path, in a process of its own)."""
    return [sys.executable, "-m", "pipelines.cli", "profile", "run", name,
            *(a for s in set_params for a in ("-S", s)), *(["--dry-run"] if dry_run else [])]


def _existing(repo: Path, name: str) -> str | None:
    """The commit of experiment ``name`` on HEAD's baseline, if it was run already."""
    from pipelines.compare_sources import experiment_refs

    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return next((commit for baseline, commit in experiment_refs(repo, name) if baseline == head), None)


def _params_from_head(repo: Path, ran_before: bool) -> None:
    """Each experiment starts from HEAD's params.yaml: `dvc exp run` leaves its own in the workspace, put back
    before the next one; uncommitted changes of the user's own are refused before the first."""
    changed = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", "params.yaml"]).returncode
    if changed and not ran_before:
        raise StageError(f"{repo / 'params.yaml'}: has uncommitted changes; commit them (or `git checkout -- "
                         "params.yaml`): each experiment starts from HEAD's params")
    if changed:
        subprocess.run(["git", "-C", str(repo), "checkout", "HEAD", "--", "params.yaml"], check=True)


def _run_profile(repo: Path, name: str, set_params: tuple[str, ...], dry_run: bool, ran_before: bool) -> bool:
    """Run profile ``name`` as experiment ``name`` unless it exists on HEAD's baseline; whether it ran."""
    found = _existing(repo, name)
    if found is not None:
        log(STAGE, f"experiment {name} exists on HEAD's baseline ({found[:12]}): loaded, not rerun"
                   f"{' (-S does not apply to it)' if set_params else ''}; `dvc exp remove {name}` to run it again")
        return False
    command = _profile_command(name, set_params, dry_run)
    if not dry_run:
        _params_from_head(repo, ran_before)
        log(STAGE, f"running profile {name}: {shlex.join(command[1:])}")
    code = subprocess.run(command, cwd=repo, check=False).returncode
    if code != 0:
        raise StageError(f"profile {name}: `hrm profile run {name}` failed (exit {code}); nothing compared")
    return not dry_run


@compare.command(name="run")
@click.argument("profiles", nargs=-1, metavar="[PROFILE_A PROFILE_B ...]")
@click.option("-S", "--set-param", "set_params", multiple=True, metavar="KEY=VALUE",
              help="A params.yaml key set in every profile's run (wins over the profiles' values); repeatable.")
@click.option("--dry-run", is_flag=True, help="Print what would run (the dvc commands) and run nothing.")
@_output_option
@_repo_option
def run(profiles: tuple[str, ...], set_params: tuple[str, ...], dry_run: bool, output: Path, repo: Path) -> None:
    """Run profiles as named experiments (default: hrm-quick and trm-quick), then compare them."""
    profiles = profiles or DEFAULT_PAIR
    if len(profiles) < 2:
        raise click.UsageError("name at least two profiles to compare (default: hrm-quick trm-quick)")
    ran_before = False
    for name in profiles:
        ran_before = _run_profile(repo, name, set_params, dry_run, ran_before) or ran_before
    if dry_run:
        click.echo(shlex.join(["hrm", "compare", "revisions", *profiles, "--output", str(output)]))
        return
    write_comparison(repo, list(profiles), output)
