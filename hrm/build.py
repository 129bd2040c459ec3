"""Dataset building for Sudoku-Extreme (docs/reference-semantics.md §3) and mazes, vectorised.

Arrays in, arrays out: no files, no params, no DVC. The stages in ``pipelines/``
(``hrm subsample | augment | hints | shard``) call these functions.

- :func:`subsample_indices` / :func:`cap_indices`: which raw rows to keep.
- :func:`augment_sudoku`: per original puzzle, the original plus ``num_aug`` transformed
  copies (one symmetry applied identically to question and answer). Each row records
  its transform, so it can be re-derived from its original.
- :func:`add_hints`: after every example, an easier copy of it: ``k`` extra givens
  copied from the answer into ``k`` blank cells chosen uniformly without replacement,
  ``k`` uniform in ``[1, blanks - 1]``; same label, same group.
- :func:`drop_hints`: the vanilla dataset inside a hint dataset (the shard stage cuts both
  datasets from the one hint table).

Examples hold *tokens* (grid value + 1: 1 = blank, 2..10 = digits), uint8. Rows are
ordered by group (original puzzle), then in emission order, exactly as the fork's
builder emits them (the fork = the Augmented HRM paper's code, README "Reference code"):
``orig, [hint(orig)], aug_1, [hint(aug_1)], ...``.

Mazes (:func:`augment_mazes`) use the same :class:`Examples`, with a dihedral id per row as
their transform (hrm.maze.dihedral; the official builder's ``--aug`` takes all 8) and no hints.

Randomness comes only from the ``numpy.random.Generator`` passed in. The hot loops are
numba kernels (compiled on first use, cached next to this file).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import hrm.maze as maze
from hrm.encoding import numba_kernel as _kernel
from hrm.sudoku import (
    SEQ_LEN, Transforms, apply_transforms_rows, is_valid_solution, random_transforms,
)

VARIANTS = ("original", "augmented", "hint")
ORIGINAL, AUGMENTED, HINT = 0, 1, 2
NO_PARENT = -1
# A row read from an upstream folder (``hrm upstream import``, hrm/upstream.py): in shards only, never in an
# examples table (VARIANTS is the examples table's Enum, as the stages write it); it records no transform,
# so no lineage check can run on it.
IMPORTED, IMPORTED_VARIANT = 3, "imported"
SHARD_VARIANTS = VARIANTS + (IMPORTED_VARIANT,)
_HINT_CHUNK = 1 << 16  # rows per draw of hint randomness: bounds its memory (fixed: it fixes the stream)
MAZE_MAX_AUG = 7  # a maze has 7 transformed copies besides itself (the dihedral group's other members)


@dataclass
class Examples:
    """N examples of one split, in table order (by group, then emission order).

    ``group_id[i]`` indexes the original puzzles the split was built from; ``puzzle_id``
    is the row's position in emission order; ``parent_id`` is the puzzle_id a hint was
    made from (-1 for originals and augmented copies). ``transforms`` took the original
    to this example (identity for originals; a hint shares its parent's): a Sudoku
    :class:`~hrm.sudoku.Transforms`, for mazes the dihedral ids, uint8 [N] (0 = identity), or another
    task's object that rows index (``transforms[rows]``). ``origin``: the row of the source table each
    example comes from, where that is not its group's (ARC: a group holds a puzzle's pairs); None: the
    group's.
    """

    group_id: np.ndarray  # int32 [N]
    puzzle_id: np.ndarray  # int32 [N]
    variant: np.ndarray  # uint8 [N], codes into VARIANTS
    parent_id: np.ndarray  # int32 [N]
    inputs: np.ndarray  # uint8 [N, 81] tokens 1..10 (mazes [N, 900], 1..4)
    labels: np.ndarray  # uint8 [N, 81] tokens 2..10 (mazes [N, 900], 1..5)
    transforms: Transforms | np.ndarray
    origin: np.ndarray | None = None  # int64 [N]

    def __len__(self) -> int:
        return len(self.group_id)

    def take(self, rows: np.ndarray) -> "Examples":
        """The examples at ``rows`` (puzzle_id and parent_id are kept, not renumbered)."""
        t = self.transforms
        return Examples(
            self.group_id[rows], self.puzzle_id[rows], self.variant[rows], self.parent_id[rows],
            self.inputs[rows], self.labels[rows],
            Transforms(t.digit_map[rows], t.transpose[rows], t.row_order[rows], t.col_order[rows])
            if isinstance(t, Transforms) else t[rows],
            None if self.origin is None else self.origin[rows],
        )


# ---------------------------------------------------------------- subsampling


def subsample_indices(rng: np.random.Generator, n_total: int, size: int) -> np.ndarray:
    """``size`` row indices drawn uniformly without replacement, in draw order (int64).

    ``size <= 0`` or ``size >= n_total`` keeps every row in file order (as the fork does
    when the subsample is not smaller than the split).
    """
    if size <= 0 or size >= n_total:
        return np.arange(n_total, dtype=np.int64)
    return rng.choice(n_total, size=size, replace=False).astype(np.int64)


def cap_indices(rng: np.random.Generator, n_total: int, cap: int) -> np.ndarray:
    """At most ``cap`` row indices, drawn uniformly without replacement, kept in file order.

    ``cap <= 0`` or ``cap >= n_total`` keeps every row.
    """
    if cap <= 0 or cap >= n_total:
        return np.arange(n_total, dtype=np.int64)
    return np.sort(rng.choice(n_total, size=cap, replace=False)).astype(np.int64)


# ---------------------------------------------------------------- transforms


@_kernel
def _valid_symmetries(digit_map, row_order, col_order):
    n = digit_map.shape[0]
    out = np.ones(n, dtype=np.bool_)
    for i in range(n):
        if digit_map[i, 0] != 0:
            out[i] = False
            continue
        seen = 0
        for d in range(1, 10):
            v = digit_map[i, d]
            if v < 1 or v > 9:
                seen = -1
                break
            seen |= 1 << v
        if seen != 0x3FE:
            out[i] = False
            continue
        for order in (row_order, col_order):
            lines = 0
            for b in range(3):
                band = order[i, 3 * b] // 3
                for j in range(3):
                    v = order[i, 3 * b + j]
                    if v > 8 or v // 3 != band:
                        lines = -1
                        break
                    lines |= 1 << v
                if lines < 0:
                    break
            if lines != 0x1FF:
                out[i] = False
    return out


def valid_symmetries(t: Transforms) -> np.ndarray:
    """bool [N]: digit_map fixes blank and permutes 1..9; row (column) orders permute bands
    and the lines inside each band. Exactly the transforms ``random_transforms`` can draw."""
    return _valid_symmetries(np.ascontiguousarray(t.digit_map), np.ascontiguousarray(t.row_order),
                             np.ascontiguousarray(t.col_order))


def is_identity(t: Transforms) -> np.ndarray:
    ident = Transforms.identity(1)
    return (
        (t.digit_map == ident.digit_map).all(axis=1)
        & ~t.transpose
        & (t.row_order == ident.row_order).all(axis=1)
        & (t.col_order == ident.col_order).all(axis=1)
    )


# ---------------------------------------------------------------- token checks (used by schemas)


@_kernel
def _rows_in_range(a, lo, hi):
    n, m = a.shape
    out = np.empty(n, dtype=np.bool_)
    for i in range(n):
        bad = False
        for j in range(m):
            v = a[i, j]
            bad |= (v < lo) | (v > hi)
        out[i] = not bad
    return out


def rows_in_range(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """bool [N]: every value of row i is in [lo, hi]."""
    a = np.ascontiguousarray(a)
    return _rows_in_range(a, a.dtype.type(lo), a.dtype.type(hi))


def valid_solution_tokens(tokens: np.ndarray) -> np.ndarray:
    """bool [N]: tokens 2..10 forming a valid Sudoku solution (rows, columns, boxes)."""
    return is_valid_solution(tokens, offset=1)  # token = digit + 1


@_kernel
def _agree(inputs, labels):
    n = inputs.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for i in range(n):
        bad = False
        for j in range(81):
            x = inputs[i, j]
            bad |= (x != 1) & (x != labels[i, j])
        out[i] = not bad
    return out


def inputs_agree(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool [N]: every given (token != 1) of the input equals the label there."""
    return _agree(np.ascontiguousarray(inputs, dtype=np.uint8), np.ascontiguousarray(labels, dtype=np.uint8))


@_kernel
def _count_blanks(tokens):
    n = tokens.shape[0]
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        b = 0
        for j in range(81):
            if tokens[i, j] == 1:
                b += 1
        out[i] = b
    return out


def count_blanks(tokens: np.ndarray) -> np.ndarray:
    """int64 [N]: blank cells (token 1) per row."""
    return _count_blanks(np.ascontiguousarray(tokens, dtype=np.uint8))


@_kernel
def _hints_match(inputs, labels, group_id, variant, digit_map, transpose, row_order, col_order, rows, parents):
    n = rows.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for i in range(n):
        h = rows[i]
        p = parents[i]
        ok = (p >= 0) & (p < h)
        if not ok:
            out[i] = False
            continue
        ok &= (variant[p] != HINT) & (group_id[p] == group_id[h]) & (transpose[p] == transpose[h])
        for j in range(10):
            ok &= digit_map[p, j] == digit_map[h, j]
        for j in range(9):
            ok &= (row_order[p, j] == row_order[h, j]) & (col_order[p, j] == col_order[h, j])
        parent_blanks = 0
        hint_blanks = 0
        for j in range(81):
            x = inputs[p, j]
            y = inputs[h, j]
            ok &= labels[p, j] == labels[h, j]
            ok &= (x == 1) | (x == y)  # the parent's givens are kept
            parent_blanks += x == 1
            hint_blanks += y == 1
        if parent_blanks <= 1:
            ok &= hint_blanks == parent_blanks
        else:
            ok &= hint_blanks < parent_blanks
        out[i] = ok
    return out


def hints_match_parents(ex: "Examples", rows: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: hint row ``rows[i]`` was made from row ``parents[i]`` as :func:`add_hints`
    makes hints: the parent is an earlier non-hint row of the same group with the same labels and
    transform; the hint keeps every given of the parent and has strictly fewer blanks (the same
    number, i.e. an unchanged copy, when the parent has at most one)."""
    t = ex.transforms
    c = np.ascontiguousarray
    return _hints_match(c(ex.inputs), c(ex.labels), c(ex.group_id), c(ex.variant), c(t.digit_map), c(t.transpose),
                        c(t.row_order), c(t.col_order), c(rows, dtype=np.int64), c(parents, dtype=np.int64))


@_kernel
def _transformed_equal(src, src_row, digit_map, transpose, row_order, col_order, rows, target):
    """bool per i: target[rows[i]] == transform rows[i] applied to src[src_row[i]] (tokens)."""
    n = rows.shape[0]
    out = np.ones(n, dtype=np.bool_)
    for i in range(n):
        t = rows[i]
        s = src_row[i]
        tr = transpose[t]
        ok = True
        for r in range(9):
            rr = np.int64(row_order[t, r])
            if rr > 8:
                ok = False
                break
            for c in range(9):
                cc = np.int64(col_order[t, c])
                if cc > 8:
                    ok = False
                    break
                if tr:
                    v = src[s, cc * 9 + rr]
                else:
                    v = src[s, rr * 9 + cc]
                if v < 1 or v > 10 or digit_map[t, v - 1] + 1 != target[t, r * 9 + c]:
                    ok = False
                    break
            if not ok:
                break
        out[i] = ok
    return out


def transformed_equal(src: np.ndarray, src_row: np.ndarray, t: Transforms, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: ``target[rows[i]]`` equals transform ``rows[i]`` applied to
    ``src[src_row[i]]`` (all tokens). Out-of-range orders or tokens count as unequal."""
    return _transformed_equal(
        np.ascontiguousarray(src, dtype=np.uint8), np.ascontiguousarray(src_row, dtype=np.int64),
        np.ascontiguousarray(t.digit_map), np.ascontiguousarray(t.transpose), np.ascontiguousarray(t.row_order),
        np.ascontiguousarray(t.col_order), np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(target, dtype=np.uint8),
    )


# ---------------------------------------------------------------- augmentation


def augment_sudoku(questions: np.ndarray, answers: np.ndarray, num_aug: int, rng: np.random.Generator | None) -> Examples:
    """Each original puzzle, then ``num_aug`` random symmetries of it (train).

    ``questions``/``answers``: grid values uint8 [G, 81] (0 = blank). Returns G * (1 + num_aug)
    examples; group g occupies rows ``g * (1 + num_aug) ...``, its original first. With
    ``num_aug == 0`` (the test split) every example is its original with the identity transform
    and ``rng`` is not used.
    """
    questions = np.ascontiguousarray(questions, dtype=np.uint8)
    answers = np.ascontiguousarray(answers, dtype=np.uint8)
    if questions.shape != answers.shape or questions.ndim != 2 or questions.shape[1] != SEQ_LEN:
        raise ValueError(f"questions and answers must both be [G, {SEQ_LEN}], got {questions.shape} and {answers.shape}")
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    groups = len(questions)
    per = 1 + num_aug
    n = groups * per
    if n >= 2**31:
        raise ValueError(f"{n} examples do not fit int32 ids")
    group_id = np.repeat(np.arange(groups, dtype=np.int32), per)
    variant = np.full(n, AUGMENTED, dtype=np.uint8)
    variant[::per] = ORIGINAL
    t = Transforms.identity(n)
    if num_aug and groups:
        drawn = random_transforms(rng, groups * num_aug)
        for name in ("digit_map", "transpose", "row_order", "col_order"):
            full, new = getattr(t, name), getattr(drawn, name)
            full.reshape((groups, per) + full.shape[1:])[:, 1:] = new.reshape((groups, num_aug) + new.shape[1:])
    inputs = apply_transforms_rows(questions, group_id, t, out_tokens=True)
    labels = apply_transforms_rows(answers, group_id, t, out_tokens=True)
    return Examples(
        group_id=group_id,
        puzzle_id=np.arange(n, dtype=np.int32),
        variant=variant,
        parent_id=np.full(n, NO_PARENT, dtype=np.int32),
        inputs=inputs,
        labels=labels,
        transforms=t,
    )


def augment_mazes(questions: np.ndarray, answers: np.ndarray, num_aug: int, rng: np.random.Generator | None) -> Examples:
    """Each original maze, then ``num_aug`` (at most 7) of its other dihedral transforms.

    ``questions``/``answers``: maze tokens uint8 [G, 900]. Per maze, ``num_aug`` distinct ids
    of 1..7 drawn uniformly, in ascending order; with 7 that is every transform in the official
    builder's order, which is what its ``--aug`` emits. Group g occupies rows ``g * (1 + num_aug)
    ...``, its original (id 0) first. ``num_aug == 0`` (the test split; the paper's maze
    training) does not use ``rng``.
    """
    questions = np.ascontiguousarray(questions, dtype=np.uint8)
    answers = np.ascontiguousarray(answers, dtype=np.uint8)
    if questions.shape != answers.shape or questions.ndim != 2 or questions.shape[1] != maze.SEQ_LEN:
        raise ValueError(f"questions and answers must both be [G, {maze.SEQ_LEN}], got {questions.shape} and "
                         f"{answers.shape}")
    if not 0 <= num_aug <= MAZE_MAX_AUG:
        raise ValueError(f"num_aug must be in 0..{MAZE_MAX_AUG} for mazes (the other dihedral transforms), "
                         f"got {num_aug}")
    groups = len(questions)
    per = 1 + num_aug
    n = groups * per
    group_id = np.repeat(np.arange(groups, dtype=np.int32), per)
    variant = np.full(n, AUGMENTED, dtype=np.uint8)
    variant[::per] = ORIGINAL
    ids = np.zeros((groups, per), dtype=np.uint8)
    if num_aug and groups:
        others = rng.permuted(np.tile(np.arange(1, 8, dtype=np.uint8), (groups, 1)), axis=1)[:, :num_aug]
        ids[:, 1:] = np.sort(others, axis=1)
    ids = ids.reshape(-1)
    return Examples(
        group_id=group_id,
        puzzle_id=np.arange(n, dtype=np.int32),
        variant=variant,
        parent_id=np.full(n, NO_PARENT, dtype=np.int32),
        inputs=np.ascontiguousarray(maze.dihedral(questions[group_id], ids)),
        labels=np.ascontiguousarray(maze.dihedral(answers[group_id], ids)),
        transforms=ids,
    )


# ---------------------------------------------------------------- hints


@_kernel
def _reveal(inputs, labels, k, offsets, u, out):
    """In ``out`` (a copy of ``inputs``), reveal k[i] blanks of row i chosen by a partial
    Fisher-Yates shuffle of its blank cells driven by the uniforms u[offsets[i]:offsets[i] + k[i]]."""
    pos = np.empty(81, dtype=np.int64)
    for i in range(inputs.shape[0]):
        if k[i] == 0:
            continue
        b = 0
        for c in range(81):
            pos[b] = c
            b += inputs[i, c] == 1
        p = offsets[i]
        for j in range(k[i]):
            r = j + np.int64(u[p + j] * (b - j))
            if r >= b:  # u < 1 always; guards rounding only
                r = b - 1
            cell = pos[r]
            pos[r] = pos[j]
            pos[j] = cell
            out[i, cell] = labels[i, cell]


def hint_inputs(inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Easier copies of ``inputs`` (tokens): k extra givens copied from ``labels``.

    Per row with b blanks: k uniform in [1, b - 1], and k of the b blank cells chosen
    uniformly without replacement (the fork's ``add_random_hints``). A row with b <= 1
    is copied unchanged (k = 0): the fork copies b = 0 unchanged and cannot draw k for
    b = 1 (numpy's randint(1, 1) fails), and k <= b - 1 leaves nothing to reveal there.
    Returns (hint inputs uint8 [N, 81], k int64 [N]).
    """
    inputs = np.ascontiguousarray(inputs, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    n = len(inputs)
    blanks = count_blanks(inputs)
    k = rng.integers(1, np.maximum(blanks, 2)) if n else np.zeros(0, dtype=np.int64)
    k[blanks <= 1] = 0
    out = inputs.copy()
    for start in range(0, n, _HINT_CHUNK):
        stop = min(start + _HINT_CHUNK, n)
        kc = k[start:stop]
        offsets = np.zeros(len(kc), dtype=np.int64)
        np.cumsum(kc[:-1], out=offsets[1:])
        u = rng.random(int(kc.sum()))
        _reveal(inputs[start:stop], labels[start:stop], kc, offsets, u, out[start:stop])
    return out, k


def add_hints(ex: Examples, rng: np.random.Generator) -> Examples:
    """The hint dataset: after every example of ``ex``, its easier copy (same group, label, transform).

    Row 2i is example i of ``ex`` (renumbered puzzle_id 2i); row 2i + 1 is its hint
    (puzzle_id 2i + 1, parent_id 2i, variant "hint").
    """
    n = len(ex)
    if 2 * n >= 2**31:
        raise ValueError(f"{2 * n} examples do not fit int32 ids")
    hinted, _ = hint_inputs(ex.inputs, ex.labels, rng)

    def interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty((2 * n,) + a.shape[1:], dtype=a.dtype)
        out[0::2] = a
        out[1::2] = b
        return out

    t = ex.transforms
    puzzle_id = np.arange(2 * n, dtype=np.int32)
    parent_id = np.full(2 * n, NO_PARENT, dtype=np.int32)
    parent_id[1::2] = puzzle_id[0::2]
    return Examples(
        group_id=interleave(ex.group_id, ex.group_id),
        puzzle_id=puzzle_id,
        variant=interleave(ex.variant, np.full(n, HINT, dtype=np.uint8)),
        parent_id=parent_id,
        inputs=interleave(ex.inputs, hinted),
        labels=interleave(ex.labels, ex.labels),
        transforms=Transforms(
            interleave(t.digit_map, t.digit_map), interleave(t.transpose, t.transpose),
            interleave(t.row_order, t.row_order), interleave(t.col_order, t.col_order),
        ),
    )


def drop_hints(ex: Examples) -> Examples:
    """The vanilla dataset inside a hint dataset: every non-hint row, puzzle_id renumbered."""
    keep = np.flatnonzero(ex.variant != HINT)
    out = ex.take(keep)
    out.puzzle_id = np.arange(len(keep), dtype=np.int32)
    out.parent_id = np.full(len(keep), NO_PARENT, dtype=np.int32)
    return out
