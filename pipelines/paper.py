"""``hrm paper``: the paper's evaluations of published weights, one command each (docs/experiments.md,
"The paper's evaluations").

- ``hrm paper list``: the evaluations (papers/evaluations.yaml), each with the figures the papers report.
- ``hrm paper run NAME [--clone PATH] [-S key=value ...] [--dry-run]``: first the plan and its cost (passes,
  FLOPs, and the hours a trial of a seeded model of the published config projects on the device found:
  pipelines/paper_plan.py), nothing fetched; ``--dry-run`` stops there. Then ``dvc exp run -n NAME -S ...
  papers/dvc.yaml:STAGE``: DVC runs the stage and every stage it depends on (the dataset from the Hub, the
  weights from ``hrm checkpoint fetch`` / ``import``), and ``dvc exp show`` lists the experiment beside trained
  runs.
- ``hrm paper model``: the stage that brings the weights in: ``hrm checkpoint fetch`` (the Hub) or
  ``hrm checkpoint import`` (a local folder) with its papers/params.yaml section, as a child process (an
  argument list: no shell parses a value).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from pipelines.io import StageError, log
from pipelines.lfs import is_pointer
from pipelines.paper_plan import (PARAMS_FILE, PIPELINE_FILE, Evaluation, folder_steps, load_evaluations,
                                  project, read_yaml, with_overrides, work_of)
from pipelines.params_keys import has_key
from pipelines.settings import config_file_options

STAGE = "paper"
PAPERS_DIR = "papers"
CLONE_FOLDER = "checkpoint_example"  # the fork's folder of step_N files in its repository


@click.group("paper")
def paper() -> None:
    """The paper's evaluations of published weights, one command each (docs/experiments.md)."""


@paper.command("list")
@click.option("--papers-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(PAPERS_DIR),
              help="The folder of the paper's pipeline (dvc.yaml, params.yaml, evaluations.yaml).")
def list_evaluations(papers_dir: Path) -> None:
    """Every evaluation, its command and the figures the papers report."""
    for ev in load_evaluations(papers_dir).values():
        clone = " --clone PATH" if ev.needs_clone else ""
        click.echo(f"{ev.name}: {ev.description}\n  hrm paper run {ev.name}{clone}")
        for figure in ev.expected:
            click.echo(f"  expected: {figure}")


# --------------------------------------------------------------------------- run


def clone_folder(clone: Path) -> Path:
    """The fork's folder of step_N files in ``clone`` (its checkpoint_example/, or the folder itself), checked:
    step_N files and all_config.yaml, the weights themselves and not Git LFS pointers."""
    if not clone.is_dir():
        raise StageError(f"--clone {clone}: no such folder; clone the fork first: git clone "
                         "https://github.com/renrua52/hrm-mechanistic-analysis && git -C hrm-mechanistic-analysis "
                         "lfs pull")
    folder = clone / CLONE_FOLDER if (clone / CLONE_FOLDER).is_dir() else clone
    steps = folder_steps(folder)
    if not steps or not (folder / "all_config.yaml").is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"
        raise StageError(f"--clone {clone}: not the fork's layout: expected {CLONE_FOLDER}/ with step_N files and "
                         f"all_config.yaml (found {found})")
    for step in steps:
        if is_pointer(step):
            raise StageError(f"{step}: a Git LFS pointer, not the weights: run `git lfs pull` in the clone first")
    return folder.resolve()


@dataclass(frozen=True)
class RunRequest:
    """What `hrm paper run` was asked: the evaluation, the settings it changes, and where."""

    evaluation: Evaluation
    overrides: dict[str, str]  # dotted papers/params.yaml key -> value, as -S writes it
    papers_dir: Path
    experiment: str

    def command(self) -> list[str]:
        params = (self.papers_dir / PARAMS_FILE).as_posix()
        sets = [a for k, v in self.overrides.items() for a in ("-S", f"{params}:{k}={v}")]
        return ["dvc", "exp", "run", "-n", self.experiment, *sets,
                f"{(self.papers_dir / PIPELINE_FILE).as_posix()}:{self.evaluation.stage}"]


def parse_sets(texts: tuple[str, ...], params: dict, path: Path) -> dict[str, str]:
    overrides = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not has_key(params, key):
            raise StageError(f"-S {text}: expected KEY=VALUE with KEY a key of {path} (dotted: "
                             "fork_ten.evaluate.test_size=1000)")
        overrides[key] = value
    return overrides


def _plan(request: RunRequest, device: str) -> None:
    """Log what the run does and what it costs (nothing fetched: pipelines/paper_plan.py)."""
    from pipelines.device import resolve_device_option

    ev = request.evaluation
    path = request.papers_dir / PARAMS_FILE
    params = with_overrides(read_yaml(path, "the paper's params"), request.overrides)
    work = work_of(ev, params, path)
    settings = params[ev.section][ev.kind]
    trial = int(settings.get("batch_size", 64)) * int(settings.get("permutations", 1))
    log(STAGE, f"{ev.name}: {ev.description}")
    for figure in ev.expected:
        log(STAGE, f"expected: {figure}")
    dtype = str(settings.get("forward_dtype", "auto"))
    seed = int(params.get("seed", 0))  # the stages' seed: the trial model's initialisation and tokens
    log(STAGE, f"cost: {project(ev, work, resolve_device_option(device), trial, seed, dtype).describe()}")


@paper.command("run")
@click.argument("name")
@click.option("--clone", type=click.Path(path_type=Path), default=None,
              help="fork-ten: a local clone of renrua52/hrm-mechanistic-analysis after `git lfs pull` (or its "
                   "checkpoint_example/ folder).")
@click.option("-S", "--set-param", "set_params", multiple=True, metavar="KEY=VALUE",
              help="A papers/params.yaml key to set for this run (fork_ten.evaluate.test_size=1000); repeatable.")
@click.option("-n", "--name", "experiment", default=None, help="The experiment's name  [default: NAME]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              help="Where the cost's trial runs (auto: the device the stages will find).")
@click.option("--dry-run", is_flag=True, default=False, help="Print the plan and its cost; fetch and run nothing.")
@click.option("--papers-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(PAPERS_DIR),
              help="The folder of the paper's pipeline (dvc.yaml, params.yaml, evaluations.yaml).")
@click.pass_context
def run(ctx: click.Context, name: str, clone: Path | None, set_params: tuple[str, ...], experiment: str | None,
        device: str, dry_run: bool, papers_dir: Path) -> None:
    """One of the paper's evaluations as one `dvc exp run`, its cost first."""
    evaluations = load_evaluations(papers_dir)
    if name not in evaluations:
        raise StageError(f"no evaluation {name!r} in {papers_dir / 'evaluations.yaml'} ({', '.join(evaluations)})")
    ev = evaluations[name]
    params_path = papers_dir / PARAMS_FILE
    overrides = parse_sets(set_params, read_yaml(params_path, "the paper's params"), params_path)
    if ev.needs_clone and clone is not None:
        overrides = {f"{ev.section}.model.folder": str(clone_folder(clone)), **overrides}
    elif ev.needs_clone and not dry_run:  # a dry run without one prints the cost of the params' checkpoints
        raise StageError(f"{name}: the fork's checkpoints are not on the Hub: pass a local clone, --clone PATH "
                         "(git clone https://github.com/renrua52/hrm-mechanistic-analysis, then git lfs pull)")
    elif clone is not None:
        takers = ", ".join(n for n, e in evaluations.items() if e.needs_clone)
        raise StageError(f"--clone: {name} fetches its weights from the Hub; only {takers} takes a clone")
    request = RunRequest(ev, overrides, papers_dir, experiment or name)
    _plan(request, device)
    command = request.command()
    if dry_run:
        log(STAGE, f"--dry-run: stopped before running `{shlex.join(command)}`; nothing fetched or written")
        return
    if shutil.which(command[0]) is None:
        raise StageError("dvc is not on PATH (install the project: pip install -e .)")
    log(STAGE, shlex.join(command))
    ctx.exit(subprocess.run(command, check=False).returncode)  # an argument list: no shell parses a value


# --------------------------------------------------------------------------- the model stage


@paper.command("model")
@click.option("--source", type=click.Choice(["hub", "folder"]), default="hub",
              help="hub: `hrm checkpoint fetch REPO`; folder: `hrm checkpoint import FOLDER`.")
@click.option("--repo", default="", help="[hub] The model repo, OWNER/REPO.")
@click.option("--revision", default="main", help="[hub] Branch, tag or commit.")
@click.option("--folder", default="", help="[folder] The folder of step_N files and all_config.yaml.")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="The model folder to write.")
@config_file_options("model")
def model(source: str, repo: str, revision: str, folder: str, output: Path) -> None:
    """Bring published weights in (the paper pipeline's model stages): `hrm checkpoint fetch` or `import`."""
    if source == "hub":
        if not repo:
            raise StageError("--source hub needs --repo OWNER/REPO (papers/params.yaml: SECTION.model.repo)")
        args = ["fetch", repo, "--revision", revision or "main"]
    else:
        if not folder:
            raise StageError("--source folder needs --folder: its section's model.folder is empty (the fork: "
                             "hrm paper run fork-ten --clone PATH sets it)")
        args = ["import", folder]
    command = [sys.executable, "-m", "pipelines.cli", "checkpoint", *args, "--output", str(output)]
    log(STAGE, f"hrm checkpoint {shlex.join([*args, '--output', str(output)])}")
    code = subprocess.run(command, check=False).returncode  # its one message is on stderr already
    if code:
        raise SystemExit(code)
