"""What a task is to the rest of the code: the one interface every layer asks.

A :class:`Task` carries the facts of a task (sequence length, vocabulary, the reference dataset on
the Hugging Face Hub), its dataset layout (the examples table's and shards' columns, the token
encoding a manifest records), its raw-table rules (well-formed questions, difficulty, the built-in
generator), its augmentation, its evaluation rules (:class:`EvalRules`) and the words the cards and
reports use. The stages, schemas and engines take a task object, never its name: a new task is one
module that defines a subclass and registers an instance (hrm/tasks/__init__.py).

Heavy rules (numba kernels, the solver) are imported inside the methods, so that naming a task costs
nothing at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from hrm.build import Examples
    from hrm.evaluate.perturbations import Perturbations

__all__ = ["BoardView", "DIHEDRAL_WORDS", "ColumnSpec", "EvalRules", "describe_values", "GeneratorOption", "Task", "uint8s", "LOADED_COLUMNS", "RawRule", "RawDiagnosis",
           "ExamplesRule", "well_formed", "RawColumn", "RAW_SHARED_COLUMNS", "STAGE_SOURCES", "PIPELINE_STAGES"]

ColumnSpec = tuple[str, pa.DataType, str]  # (name, type in a shard, meaning: the dataset card's column table)
# The raw table's columns every task has (schemas/raw.py), before a task's own (Task.raw_extra_columns).
RAW_SHARED_COLUMNS = ("source", "question", "answer", "rating")
# The pipeline's stages, in order (dvc.yaml).
PIPELINE_STAGES = ("raw", "subsample", "augment", "hints", "shard", "train", "evaluate", "analyze")
# The raw sources the raw stage reads itself (pipelines/raw.py); a task's other sources it reads itself
# (Task.read_source).
STAGE_SOURCES = ("builtin", "hf", "csv")
# What the loader reads of a shard (hrm/data.py gathers these straight from the mapped file).
LOADED_COLUMNS = ("group_id", "puzzle_id", "rating", "raw_index", "inputs", "labels")


def uint8s(width: int) -> pa.DataType:
    return pa.list_(pa.uint8(), width)


# The columns every task's examples share, before its token and transform columns; ``{variant}``,
# ``{parent_id}`` and ``{rating}`` are the task's words (Task.column_meanings).
_SHARED_HEAD = ("group_id", "puzzle_id", "variant", "parent_id", "source", "rating", "raw_index")
_SHARED_MEANINGS = {
    "group_id": "original puzzle (group); groups are contiguous and in order",
    "puzzle_id": "row number in the split, in emission order",
    "source": "the original's raw `source`",
    "raw_index": "the original's row in the raw split file (the fork indexes the full test file)",
}
_SHARED_TYPES = {"group_id": pa.int32(), "puzzle_id": pa.int32(), "variant": pa.string(), "parent_id": pa.int32(),
                 "source": pa.string(), "rating": pa.int32(), "raw_index": pa.int32()}


_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def describe_values(values: np.ndarray) -> dict:
    """A JSON-able summary of a distribution (the raw stage's stats.json): count, min, median, mean, max
    and quantiles."""
    r = np.asarray(values, dtype=np.int64).reshape(-1)
    if len(r) == 0:
        return {"count": 0, "min": None, "median": None, "mean": None, "max": None,
                "quantiles": {str(p): None for p in _QUANTILES}}
    return {
        "count": len(r),
        "min": int(r.min()),
        "median": float(np.median(r)),
        "mean": float(r.mean()),
        "max": int(r.max()),
        "quantiles": {str(p): float(np.quantile(r, p)) for p in _QUANTILES},
    }


@dataclass(frozen=True)
class EvalRules:
    """What evaluating and analysing a task needs of it (``task``: its name, ``seq_len``: its cells).

    ``decided``: the token of the cells the model fills in (a Sudoku blank, a maze's open cell), whose
    accuracy and calibration are reported (``blank_cells``); ``perturbations``: the kinds of pass the
    task allows; ``verify(questions, answers)``: the label-free verifier; ``solves(correct, halted)``:
    the paper's rule over checkpoints x passes; ``revealable(inputs, labels)``: the cells an easy tier
    reveals from the label (the three None for a task whose input holds no blank to fill: ARC, which
    the official vote scores and which has no easy probe). ``errors(questions, answers)``: the analysis' error measure of an answer
    (``error_name``), read on the cells of ``mark_tokens`` (``mark_name``). ``input_tokens`` /
    ``label_tokens``: the encoding's ranges. ``max_shifts``: the most relabellings the analysis can
    make (None: no limit of its own). The passes of each kind of ``perturbations`` are drawn by
    Task.make_perturbations. ``decided_cells(inputs, labels)``: where the decided cells are not the
    input's ``decided`` tokens (ARC: the output grid's cells, read from the label).
    """

    task: str
    seq_len: int
    decided: int | None
    perturbations: tuple[str, ...]
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    solves: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    revealable: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    rating_edges: tuple[int, ...]
    blank_edges: tuple[int, ...]
    input_tokens: tuple[int, int]
    label_tokens: tuple[int, int]
    errors: Callable[[np.ndarray, np.ndarray], np.ndarray]
    error_name: str
    mark_tokens: tuple[int, int]
    mark_name: str
    max_shifts: int | None = None
    decided_cells: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def blank_cells(self, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """bool [..., L]: the cells the model decides, whose accuracy is the blank accuracy."""
        if self.decided_cells is not None:
            return self.decided_cells(inputs, labels)
        return np.asarray(inputs) == self.decided

    def marks(self, answers: np.ndarray) -> np.ndarray:
        """int [...]: cells of answers [..., L] decoded as a mark the error measure reads."""
        a = np.asarray(answers)
        return ((a >= self.mark_tokens[0]) & (a <= self.mark_tokens[1])).sum(-1)


# ---------------------------------------------------------------------- the rules of the tables (schemas/)
# What the generic raw and examples schemas (schemas/raw.py, schemas/examples.py) ask of a task: they
# wrap each rule as a Pandera check; the rules themselves are numpy code in the task's module.


@dataclass(frozen=True)
class RawRule:
    """One rule of a raw row beyond the shared format checks (columns, length, characters, rating).

    ``name``: the check's name (Pandera's failure cases); ``column``: the raw column a failing row is
    reported at; ``unique_only``: run only when uniqueness is checked (``check_unique``);
    ``column_check``: attached to ``column`` (it reads no other column) rather than to the row.
    """

    name: str
    column: str
    unique_only: bool = False
    column_check: bool = False


@dataclass(frozen=True)
class RawDiagnosis:
    """A task's raw rules over N rows (:meth:`Task.diagnose_raw`).

    ``passed[rule]``: bool [N], True where the row passes, and where its strings are not well formed
    (the format checks report those); ``reasons[rule]``: the report's reason for each failing row,
    ``{row: text}``. A ``unique_only`` rule is missing when uniqueness was not checked.
    """

    n_rows: int
    passed: Mapping[str, np.ndarray]
    reasons: Mapping[str, Mapping[int, str]]

    def __len__(self) -> int:
        return self.n_rows

    @staticmethod
    def concat(parts: "list[RawDiagnosis]") -> "RawDiagnosis":
        """The diagnosis of consecutive row ranges (rows renumbered from the first part's)."""
        starts = np.cumsum([0] + [p.n_rows for p in parts])
        passed = {name: np.concatenate([p.passed[name] for p in parts]) for name in parts[0].passed}
        reasons = {name: {start + row: why for p, start in zip(parts, starts) for row, why in p.reasons[name].items()}
                   for name in parts[0].reasons}
        return RawDiagnosis(int(starts[-1]), passed, reasons)


@dataclass(frozen=True)
class RawColumn:
    """A raw column a task adds to the shared four (Task.raw_extra_columns): text (``values``: the texts
    allowed, None: any non-empty text) or an integer (at least ``ge``)."""

    name: str
    integer: bool = False
    values: tuple[str, ...] | None = None
    ge: int = 0


@dataclass(frozen=True)
class ExamplesRule:
    """One rule of a task's examples rows, run on every row of an examples table and of a shard split.

    ``name``: the check's name; ``reads``: the columns it reads (numpy; ``variant`` as uint8 codes into
    hrm.build.VARIANTS); ``passes(columns)``: bool [N], True where the row passes; ``reason``: the
    report's words for a failing row; ``column``: the column it is attached to (None: a check of the
    whole row); ``examples_only``: not run on shards.
    """

    name: str
    reads: tuple[str, ...]
    passes: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    reason: str
    column: str | None = None
    examples_only: bool = False


def well_formed(strings: np.ndarray, pattern: str) -> np.ndarray:
    """bool [N]: the string matches ``pattern`` whole (False for None and anything not a string)."""
    match = re.compile(pattern).fullmatch
    return np.fromiter((isinstance(s, str) and match(s) is not None for s in strings), dtype=bool,
                       count=len(strings))


@dataclass(frozen=True)
class GeneratorOption:
    """An integer control of a task's built-in generator: the raw stage offers it as ``--NAME`` (its
    params.yaml key ``raw.NAME``), in [lo, hi] (hi None: no upper bound)."""

    name: str
    lo: int
    hi: int | None
    default: int
    help: str
    show_default: bool = False


# The viewer's words for a dihedral transform id, the official builders' order (hrm.maze.dihedral, hrm.arc.dihedral).
DIHEDRAL_WORDS = ("identity", "rotated 90°", "rotated 180°", "rotated 270°", "flipped left-right", "flipped up-down",
                  "transposed", "anti-transposed")


@dataclass(frozen=True)
class BoardView:
    """How ``hrm view`` (pipelines/view.py) draws a board of a task's ``seq_len`` tokens: ``rows`` x ``cols``
    cells in row-major order; ``cells[token]`` = (text shown in the cell, fill colour); ``block``: a thicker
    line every ``block`` cells (Sudoku's boxes; 0: none). JSON-able (:meth:`as_json`): the page draws any
    task from this alone."""

    rows: int
    cols: int
    cells: Mapping[int, tuple[str, str]]
    block: int = 0

    def as_json(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "block": self.block,
                "cells": {str(token): list(look) for token, look in sorted(self.cells.items())}}


@dataclass(frozen=True)
class Task:
    """One task. Subclasses implement the methods; instances are registered in hrm.tasks."""

    name: str
    noun: str  # one example: "puzzle", "maze"
    seq_len: int
    vocab_size: int  # tokens incl. padding 0
    hf_repo: str  # the reference dataset (train.csv, test.csv in the raw columns)
    hf_revision: str  # its pinned commit; "main" where none is pinned yet
    difficulty_means: str  # what the raw table's rating measures
    encoding: Mapping[str, Any]  # the token encoding, as a manifest's `encoding` records it
    column_meanings: Mapping[str, str]  # the card's words for variant, parent_id, rating, inputs, labels
    transform_columns: tuple[ColumnSpec, ...]  # how an example was made from its group's original
    question_chars: str  # the characters of a well-formed question (a regular expression class, e.g. "[.1-9]")
    answer_chars: str  # the characters of a well-formed answer
    generator_options: tuple[GeneratorOption, ...]  # the raw stage's options of the built-in generator
    max_aug: int | None = None  # the most transformed copies per original (None: no limit)
    has_hints: bool = False  # whether the hints stage can make an easier copy of an example
    records_name: bool = True  # False for Sudoku only: its records predate tasks and carry no name
    words: Mapping[str, Any] = field(default_factory=dict)  # what cards and reports say of the task

    # ------------------------------------------------------------------ dataset layout

    @property
    def column_specs(self) -> tuple[ColumnSpec, ...]:
        """The examples table's and shards' columns, in order."""
        meaning = {**_SHARED_MEANINGS, **self.column_meanings}
        head = tuple((name, _SHARED_TYPES[name], meaning[name]) for name in _SHARED_HEAD)
        tokens = tuple((name, uint8s(self.seq_len), meaning[name]) for name in ("inputs", "labels"))
        return head + tokens + tuple(self.transform_columns)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.column_specs)

    @property
    def shard_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, type_) for name, type_, _ in self.column_specs])

    @property
    def loader_columns(self) -> dict[str, pa.DataType]:
        schema = self.shard_schema
        names = LOADED_COLUMNS + ((self.identifier_column,) if self.identifier_column else ())
        return {name: schema.field(name).type for name in names}

    @property
    def transform_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.transform_columns)

    def builds(self, stage: str) -> bool:
        """Whether pipeline stage ``stage`` takes this task yet (``built_through``); a command outside the
        pipeline (``hrm validate``, the registry) reads whatever the stages made."""
        if stage not in PIPELINE_STAGES:
            return True
        return PIPELINE_STAGES.index(stage) <= PIPELINE_STAGES.index(self.built_through)

    def recorded_name(self) -> dict[str, str]:
        """``{"task": name}`` for a record (lineage, manifest), or nothing for a task whose records name none."""
        return {"task": self.name} if self.records_name else {}

    # ------------------------------------------------------------------ raw table: its rules (schemas/raw.py)

    raw_sources: ClassVar[tuple[str, ...]] = STAGE_SOURCES  # what `hrm raw --source` offers; the first is its default
    raw_extra_columns: ClassVar[tuple[RawColumn, ...]] = ()  # the task's raw columns after the shared four
    rows_metric: ClassVar[str] = "puzzles"  # the raw metrics' name of a split's row count
    headline_distribution: ClassVar[str] = ""  # the split distribution (describe_split) whose mean is a raw metric
    # The last pipeline stage that takes this task yet (PIPELINE_STAGES; a task being added grows stage by stage).
    built_through: ClassVar[str] = "analyze"
    raw_rules: ClassVar[tuple[RawRule, ...]] = ()  # in the order the schema runs them
    raw_unique_means: ClassVar[str] = ""  # what the uniqueness rules ask, for a report's summary
    raw_schema_names: ClassVar[tuple[str, str]] = ("raw", "raw (unique)")  # without / with the uniqueness rules

    @property
    def raw_columns(self) -> tuple[str, ...]:
        return RAW_SHARED_COLUMNS + tuple(column.name for column in self.raw_extra_columns)

    @property
    def text_lengths(self) -> tuple[int, int]:
        """The fewest and most characters of a raw question or answer."""
        return self.seq_len, self.seq_len

    @property
    def question_pattern(self) -> str:
        """A well-formed question: a regular expression over the raw string."""
        return rf"^{self.question_chars}{{{self.seq_len}}}$"

    @property
    def answer_pattern(self) -> str:
        return rf"^{self.answer_chars}{{{self.seq_len}}}$"

    def diagnose_raw(self, questions: np.ndarray, answers: np.ndarray, question_ok: np.ndarray,
                     answer_ok: np.ndarray, check_unique: bool) -> RawDiagnosis:
        """The :attr:`raw_rules` over raw rows: ``questions``/``answers`` are strings [N], read only
        where ``question_ok``/``answer_ok`` say they are well formed (question_pattern, answer_pattern)."""
        raise NotImplementedError

    def raw_character_reason(self, column: str, text: str) -> str | None:
        """Why the ``column`` ("question" or "answer") string ``text`` fails its character class: the
        first character outside it (None: no such character)."""
        allowed = self.question_chars if column == "question" else self.answer_chars
        bad = re.search("[^" + allowed[1:], text)
        return (f"character {bad.group()!r} at position {bad.start()} (0-based) is not one of {allowed[1:-1]!r}"
                if bad else f"characters outside {allowed[1:-1]!r}")

    # ------------------------------------------------------------------ raw table

    def read_source(self, source: str, folder: Path | None) -> tuple[dict[str, dict[str, list]], dict]:
        """The raw rows of a source the task reads itself (one of ``raw_sources`` not in STAGE_SOURCES),
        per split (column -> values, in ``raw_columns``), and what stats.json records of the source;
        ValueError naming the file and key of bad input."""
        raise NotImplementedError

    def difficulty(self, questions: np.ndarray) -> np.ndarray:
        """int64 [N]: the rating of well-formed questions (strings), as ``difficulty_means`` says."""
        raise NotImplementedError

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
        """``n`` seeded (question, answer) strings and their ratings from the built-in generator, under the
        values of ``generator_options`` in ``options``; ValueError when they are too strict to satisfy."""
        raise NotImplementedError

    def describe_split(self, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> dict:
        """The raw stage's distribution of a written split of ``n`` rows (stats.json), read as batches of
        (question strings, answer strings, ratings)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ datasets

    subsample_reads: ClassVar[tuple[str, ...]] = ()  # the raw columns pick_rows reads

    def pick_rows(self, train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], sizes: tuple[int, int],
                  rng: Callable[[str], np.random.Generator], tables: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The rows of the raw splits each subsample table takes (``tables``: train, test and perhaps
        train_vanilla, an independent redraw of train): ``train``/``test`` hold the ``subsample_reads``
        columns and ``"rows"``, the split's row count; ``sizes`` (subsample_size, test_size);
        ``rng(stream)`` the stage's seeded generators. Here: ``subsample_size`` train rows drawn
        uniformly without replacement, in draw order (0: all, in file order), and at most
        ``test_size`` test rows, uniform, in file order (hrm.build); ValueError when more train rows
        are asked for than the split holds."""
        from hrm.build import cap_indices, subsample_indices

        n_train, n_test = int(train["rows"]), int(test["rows"])
        if sizes[0] > n_train:
            raise ValueError(f"more than the {n_train:,} train {self.noun}s")
        picks = {"train": subsample_indices(rng("subsample"), n_train, sizes[0]),
                 "test": cap_indices(rng("test_cap"), n_test, sizes[1])}
        if len(tables) > 2:
            picks[tables[2]] = subsample_indices(rng("subsample_vanilla"), n_train, sizes[0])
        return picks

    joint_augment: ClassVar[bool] = False  # the augment stage builds the splits together (augment_splits)
    augment_reads: ClassVar[tuple[str, ...]] = ()  # the subsample columns augment_splits reads

    def augment_splits(self, columns: Mapping[str, Mapping[str, np.ndarray]], num_aug: int,
                       rng: np.random.Generator, chunk_rows: int = 0) -> tuple[Iterator[dict[str, "Examples"]],
                                                                               dict[str, Any]]:
        """Every split's examples, for a task whose splits share what augmentation makes (ARC: a
        puzzle's versions and identifiers are in both): ``columns[split]`` the ``augment_reads`` of its
        subsample table; returns the chunks (each split's Examples of whole groups, at least
        ``chunk_rows`` rows, 0: one chunk; ``origin``: their subsample rows; ids counted on across
        chunks) and the JSON files written beside them ({file name: value}, complete once the chunks are)."""
        raise NotImplementedError

    def dataset_encoding(self, files: Mapping[str, Any]) -> dict[str, Any]:
        """What the task's files (Task.augment_splits' JSON files, by name) add to a dataset manifest's
        ``encoding``, which sizes the model (ARC: ``num_puzzle_identifiers``)."""
        return {}

    def count_groups(self, split: Mapping[str, np.ndarray]) -> int:
        """The groups (originals) of a raw or subsample table, from ``split`` as :meth:`pick_rows` has it:
        one per row, unless a group is several rows (``originals_per_group`` "many")."""
        return int(split["rows"])

    def augment(self, questions: np.ndarray, answers: np.ndarray, num_aug: int,
                rng: np.random.Generator | None) -> "Examples":
        """The examples of one split from its raw question/answer strings: each original, then
        ``num_aug`` transformed copies drawn from ``rng`` (None: the originals only)."""
        raise NotImplementedError

    def transform_arrays(self, columns: Mapping[str, np.ndarray]) -> Any:
        """The ``transforms`` of :class:`hrm.build.Examples` from the transform columns."""
        raise NotImplementedError

    def transform_frame_columns(self, transforms: Any, n: int) -> dict[str, np.ndarray]:
        """The transform columns (numpy, in ``transform_columns`` order) of ``n`` examples' ``transforms``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ datasets: their rules (schemas/examples.py)

    # Identifies the examples checks of this task in the lineage (``validated_with``): give it a new value
    # whenever a check changes (tests hold a hash of the checks' code to catch a forgotten one).
    examples_checks_id: ClassVar[str] = ""
    examples_check_prefix: ClassVar[str] = "examples_"  # of the checks the schema runs for every task
    examples_schema_names: ClassVar[tuple[str, str]] = ("examples", "shards")  # of the examples table, of shards
    token_ranges: ClassVar[Mapping[str, tuple[int, int]]] = {}  # "inputs"/"labels": the tokens allowed
    transform_limits: ClassVar[Mapping[str, int]] = {}  # transform columns with a largest allowed value
    examples_rules: ClassVar[tuple[ExamplesRule, ...]] = ()  # the task's own, in the order the schema runs them
    originals_per_group: ClassVar[str] = "one"
    # The shard column of each row's puzzle identifier (the model's puzzle embedding; its runs in a group are
    # the official builder's "puzzles", a group's versions), or None: every row identifier 0.
    identifier_column: ClassVar[str | None] = None  # "many": a group is several originals (ARC: a puzzle's pairs)
    # The report's words of the lineage checks: "original_is_identity", "augmented_matches_original" (and
    # "hint_matches_parent" for a task with hints).
    lineage_reasons: ClassVar[Mapping[str, str]] = {}

    def imported_transforms(self, identifiers: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> Any:
        """The transforms (Task.transform_arrays' form) of rows read from an upstream folder, which records
        none (``hrm upstream import``, hrm/upstream.py): the identity, with what the rows themselves say
        (``identifiers`` int32 [n], each row's puzzle identifier; ARC: the boards' offsets)."""
        raise NotImplementedError

    def is_identity(self, transforms: Any) -> np.ndarray:
        """bool [n]: the ``transforms`` (Task.transform_arrays of n rows) are the identity."""
        raise NotImplementedError

    def augmented_matches(self, group_id: np.ndarray, transforms: Any, rows: np.ndarray, src: np.ndarray,
                          inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """bool [len(rows)]: row ``rows[i]``'s transform is one an augmented copy may have and its inputs
        and labels equal that transform applied to row ``src[i]``'s (``transforms``, ``group_id``,
        ``inputs`` and ``labels`` of every row of the table)."""
        raise NotImplementedError

    def hints_match_parents(self, examples: "Examples", rows: np.ndarray, parents: np.ndarray) -> np.ndarray:
        """bool [len(rows)]: the hint at ``rows[i]`` is an easier copy of its parent ``parents[i]``
        (a task with hints only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation

    # "passes": K checkpoints x P perturbed passes per example, the verifier and the paper's vote (rules);
    # "votes": a vote over the versions of each held-out pair (score_votes; ARC's official evaluation).
    scoring: ClassVar[str] = "passes"
    palette: ClassVar[tuple[str, ...]] = ()  # a votes task: how its grids' colours are drawn (grid_of)

    def board_view(self) -> BoardView:
        """How the viewer (``hrm view``) draws this task's boards: one description per task."""
        raise NotImplementedError

    def conflict_cells(self, questions: np.ndarray, answers: np.ndarray) -> np.ndarray | None:
        """bool [N, seq_len]: the cells of answer tokens [N, seq_len] that break a rule of the task in their question
        (tokens [N, seq_len]): the verifier's rules read cell by cell, which the viewer marks; None: the task has
        no rule a single cell can break (ARC: only the label tells)."""
        return None

    def describe_transform(self, columns: Mapping[str, Any]) -> str:
        """The viewer's short words for one example's transform from its group's original: ``columns`` maps
        each of ``transform_names`` to that example's value (a number, a bool or a list of numbers)."""
        return ", ".join(f"{name} {value}" for name, value in columns.items())

    def grid_of(self, board: np.ndarray) -> np.ndarray:
        """A votes task: the grid (colours [rows, cols]) a board of tokens holds, as the vote reads it."""
        raise NotImplementedError

    def score_votes(self, names: list[str], identifiers: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                    q_halt_logits: np.ndarray) -> Any:
        """A ``votes`` task's score of one checkpoint's predictions on every row of a test split:
        ``names`` the dataset's identifiers.json, ``labels``/``predictions`` uint8 [rows, seq_len],
        ``q_halt_logits`` [rows]; an object with ``votes``, ``pass_at_k``, ``calibration`` and ``submission``."""
        raise NotImplementedError

    @property
    def rules(self) -> EvalRules:
        raise NotImplementedError

    def make_perturbations(self, kind: str, count: int, seed: int) -> "Perturbations":
        """``count`` passes of ``kind`` (one of ``rules.perturbations``), pass 0 the identity; ValueError
        when the task has fewer passes of that kind."""
        raise NotImplementedError
