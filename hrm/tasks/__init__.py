"""The tasks HRM solves, and the one list of them: Sudoku-Extreme, Maze-30x30-Hard and ARC-AGI-1/-2
(so far up to the raw stage: hrm/tasks/arc.py).

Every layer asks a :class:`Task` object (hrm/tasks/base.py) what it needs; none tests a task's name.
A task is always named by the user (``hrm raw --task``) or read from the data (raw stats.json, a
lineage, a manifest's ``encoding``): :func:`get_task` and :func:`recorded_task` turn either into the
object, and an unknown name is one clear error. A new task is one module with a :class:`Task`
subclass and an instance passed to :func:`register` (docs/architecture.md, "Adding a task").
"""

from __future__ import annotations

from hrm.tasks.arc import ARC_AGI_1, ARC_AGI_2
from hrm.tasks.base import EvalRules, Task
from hrm.tasks.maze import MAZE
from hrm.tasks.sudoku import SUDOKU

__all__ = ["Task", "EvalRules", "SUDOKU", "MAZE", "ARC_AGI_1", "ARC_AGI_2", "TASKS", "get_task", "recorded_task", "manifest_task",
           "task_of_columns", "register", "perturbation_kinds", "make_perturbations"]

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry (a second task of the same name is refused); returns it."""
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"{name!r} is not one of {', '.join(TASKS)}") from None


def recorded_task(name: str | None) -> Task:
    """The task a record names; a record without a name is the task whose records name none
    (Sudoku's, written before a second task existed; Task.records_name)."""
    if name is None:
        unnamed = [t for t in TASKS.values() if not t.records_name]
        return unnamed[0]
    return get_task(name)


def manifest_task(manifest) -> Task:
    """The task of a dataset from its manifest's ``encoding`` (:func:`recorded_task`)."""
    encoding = manifest.get("encoding") if isinstance(manifest, dict) else None
    return recorded_task(encoding.get("task") if isinstance(encoding, dict) else None)


def perturbation_kinds() -> tuple[str, ...]:
    """Every kind of perturbation some task has, in registration order."""
    return tuple(dict.fromkeys(kind for task in evaluated_tasks() for kind in task.rules.perturbations))


def evaluated_tasks() -> list[Task]:
    """The tasks every stage takes, evaluation and analysis included (Task.built_through)."""
    return [task for task in TASKS.values() if task.builds("analyze")]


def make_perturbations(kind: str, count: int = 9, seed: int = 0):
    """``count`` perturbations of ``kind`` (hrm.evaluate.perturbations.Perturbations; pass 0 the
    identity), drawn by the task that has that kind (Task.make_perturbations)."""
    if count < 1:
        raise ValueError(f"need at least 1 perturbation, got {count}")
    for task in evaluated_tasks():
        if kind in task.rules.perturbations:
            return task.make_perturbations(kind, count, seed)
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {', '.join(perturbation_kinds())}")


def task_of_columns(columns) -> Task:
    """The task whose examples columns a table has most of (first registered on a tie): an examples
    file read without its lineage is checked by the schema it is closest to."""
    have = set(columns)
    return max(evaluated_tasks(), key=lambda t: len(have & set(t.columns)))


register(SUDOKU)
register(MAZE)
register(ARC_AGI_1)
register(ARC_AGI_2)
