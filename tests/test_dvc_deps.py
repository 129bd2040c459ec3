"""dvc.yaml: each stage's deps list exactly the project code its command runs.

What a stage runs is derived from the source, not by importing it: the module of its
command (``hrm NAME`` -> pipelines/cli.py's COMMANDS), then every project module (under
hrm/, pipelines/, schemas/) imported from there, transitively, at module level or inside
a function; importing ``a.b.c`` also runs the package ``a.b`` (its ``__init__.py``). Not
deps: the files every ``hrm`` command runs and that hold no stage code (the entry point
pipelines/cli.py and the three top-level ``__init__.py``), so that a new command or version
does not rerun the pipeline. A folder dep (``hrm/model``) covers the .py files under it,
and then every one of them must be run by the stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hrm", "pipelines", "schemas")
RUN_BY_EVERY_COMMAND = {"pipelines/cli.py", "hrm/__init__.py", "pipelines/__init__.py", "schemas/__init__.py"}


def commands() -> dict[str, str]:
    """pipelines/cli.py's COMMANDS: command name -> module (read from the source)."""
    tree = ast.parse((ROOT / "pipelines" / "cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets):
            return {name: target.split(":")[0] for name, target in ast.literal_eval(node.value).items()}
    raise AssertionError("pipelines/cli.py has no COMMANDS table")


def module_file(name: str) -> str | None:
    """The project file of module ``name`` (relative POSIX path), or None when it is not project code."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


def imported_names(path: str) -> set[str]:
    """Every module name an import statement anywhere in ``path`` may load (``from a import b``:
    ``a`` and, should it be a module, ``a.b``)."""
    package = Path(path).parent.as_posix().replace("/", ".")  # where a relative import starts
    names: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def code_run_by(module: str) -> set[str]:
    """The project files running ``module`` runs (its transitive project imports, packages included)."""
    files: set[str] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path is None or path in files or path in RUN_BY_EVERY_COMMAND:
                continue
            files.add(path)
            todo.extend(imported_names(path))
    return files


def covered(dep: str) -> set[str]:
    path = ROOT / dep
    if path.is_dir():
        return {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts}
    return {dep}


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_are_the_code_it_runs(name):
    stage = stages()[name]
    words = stage["cmd"].split()
    assert words[0] == "hrm" and words[1] in commands(), f"stage {name}: cmd does not start with an hrm command"
    runs = code_run_by(commands()[words[1]])
    code_deps = [d for d in stage.get("deps", []) if Path(d).parts[0] in PACKAGES]
    problems = [f"stage {name}: dvc.yaml deps list {d}, which does not exist" for d in code_deps
                if not (ROOT / d).exists()]
    listed = set().union(*(covered(d) for d in code_deps)) if code_deps else set()
    problems += [f"stage {name}: dvc.yaml deps miss {p} (code the stage runs)" for p in sorted(runs - listed)]
    for dep in code_deps:
        idle = sorted(covered(dep) - runs)
        if idle:
            problems.append(f"stage {name}: dvc.yaml deps list {dep}, but the stage does not run "
                            f"{', '.join(idle)}")
    assert not problems, "\n".join(problems)


def test_the_derivation_sees_function_level_imports():
    # pipelines/validate.py imports the dataset stages' helpers inside a function.
    assert "pipelines/dataset_io.py" in code_run_by("pipelines.validate")
    assert "hrm/sudoku.py" in code_run_by("pipelines.raw")
    assert not (code_run_by("pipelines.raw") & RUN_BY_EVERY_COMMAND)
