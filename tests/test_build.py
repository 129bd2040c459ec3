"""hrm/build.py (subsample, augment, hints, kernels) and schemas/examples.py, on real puzzles."""

import numpy as np
import polars as pl
import pytest

from conftest import REAL_SUDOKU as REAL
from hrm import build as B
from hrm import sudoku as S
from hrm.tasks import SUDOKU
from schemas import examples as E


@pytest.fixture(scope="module")
def real():
    df = pl.read_csv(REAL / "valid.csv", infer_schema=False)
    q = S.strings_to_grids(df["question"].to_list())
    a = S.strings_to_grids(df["answer"].to_list())
    return df, q, a


@pytest.fixture(scope="module")
def vanilla(real):
    df, q, a = real
    return B.augment_sudoku(q, a, 6, np.random.default_rng(1))


@pytest.fixture(scope="module")
def hinted(vanilla):
    return B.add_hints(vanilla, np.random.default_rng(2))


def frame(real, ex):
    df, _, _ = real
    return E.to_frame(ex, df["source"], df["rating"].cast(pl.Int64).to_numpy(), np.arange(df.height), SUDOKU)


def t_rows(t, rows):
    return S.Transforms(t.digit_map[rows], t.transpose[rows], t.row_order[rows], t.col_order[rows])


# --------------------------------------------------------------------------- subsampling


def test_subsample_indices_draws_without_replacement_in_draw_order():
    idx = B.subsample_indices(np.random.default_rng(0), 5000, 1000)
    assert len(idx) == 1000 and len(np.unique(idx)) == 1000 and idx.min() >= 0 and idx.max() < 5000
    assert not np.all(np.diff(idx) > 0)  # draw order, not sorted (as the fork)
    assert np.array_equal(idx, B.subsample_indices(np.random.default_rng(0), 5000, 1000))
    assert not np.array_equal(idx, B.subsample_indices(np.random.default_rng(1), 5000, 1000))
    for size in (0, 5000, 7000):  # 0 = all; not smaller than the split: all, file order
        assert np.array_equal(B.subsample_indices(np.random.default_rng(0), 5000, size), np.arange(5000))


def test_subsample_is_uniform():
    counts = np.zeros(20)
    for seed in range(2000):
        counts[B.subsample_indices(np.random.default_rng(seed), 20, 5)] += 1
    assert np.allclose(counts / 2000, 5 / 20, atol=0.04)


def test_cap_indices_keeps_file_order():
    idx = B.cap_indices(np.random.default_rng(0), 1000, 100)
    assert len(idx) == 100 and np.all(np.diff(idx) > 0)
    assert np.array_equal(B.cap_indices(np.random.default_rng(0), 1000, 0), np.arange(1000))
    assert np.array_equal(B.cap_indices(np.random.default_rng(0), 50, 100), np.arange(50))


# --------------------------------------------------------------------------- transforms


def test_valid_symmetries_and_identity():
    t = S.random_transforms(np.random.default_rng(0), 200)
    assert B.valid_symmetries(t).all()
    assert B.is_identity(S.Transforms.identity(3)).all() and not B.is_identity(t).any()
    bad = S.Transforms(t.digit_map.copy(), t.transpose, t.row_order.copy(), t.col_order.copy())
    bad.digit_map[0, 1] = bad.digit_map[0, 2]  # not a permutation
    bad.digit_map[1, 0] = 3  # blank not kept
    bad.row_order[2, [0, 3]] = bad.row_order[2, [3, 0]]  # mixes bands
    bad.col_order[3, 0] = 9  # out of range
    assert np.array_equal(np.flatnonzero(~B.valid_symmetries(bad)), [0, 1, 2, 3])


# --------------------------------------------------------------------------- kernels


def test_kernels_match_sudoku(real):
    _, q, a = real
    rng = np.random.default_rng(4)
    labels = a + 1
    broken = labels.copy()
    broken[::3, [0, 1]] = broken[::3, [1, 0]]  # swap two cells of a row: a column breaks
    broken[1::5, 7] = 11  # out of range
    assert B.valid_solution_tokens(labels).all()
    assert np.array_equal(B.valid_solution_tokens(broken), S.is_valid_solution(broken.astype(np.int16) - 1))
    noisy = (q + 1).copy()
    flip = rng.random(noisy.shape) < 0.01
    noisy[flip] = rng.integers(1, 11, flip.sum())
    assert np.array_equal(B.inputs_agree(noisy, labels), S.agrees_with_givens(noisy - 1, a))
    assert np.array_equal(B.count_blanks(q + 1), S.num_blanks(q))
    assert np.array_equal(B.rows_in_range(noisy, 2, 10), (noisy >= 2).all(axis=1))


# --------------------------------------------------------------------------- augmentation


def test_augment_layout_and_lineage(real, vanilla):
    _, q, a = real
    ex, per = vanilla, 7
    assert len(ex) == len(q) * per
    assert np.array_equal(ex.group_id, np.repeat(np.arange(len(q)), per))
    assert np.array_equal(ex.puzzle_id, np.arange(len(ex)))
    assert (ex.parent_id == -1).all()
    originals = np.flatnonzero(ex.variant == B.ORIGINAL)
    assert np.array_equal(originals, np.arange(0, len(ex), per))
    assert (ex.variant[np.setdiff1d(np.arange(len(ex)), originals)] == B.AUGMENTED).all()
    # An original is the raw puzzle; every example is its transform applied to the original.
    assert np.array_equal(ex.inputs[originals], q + 1) and np.array_equal(ex.labels[originals], a + 1)
    assert B.is_identity(t_rows(ex.transforms, originals)).all()
    assert np.array_equal(S.apply_transforms(q[ex.group_id], ex.transforms) + 1, ex.inputs)
    assert np.array_equal(S.apply_transforms(a[ex.group_id], ex.transforms) + 1, ex.labels)
    assert S.is_valid_solution(ex.labels - 1).all() and S.agrees_with_givens(ex.inputs - 1, ex.labels - 1).all()
    assert np.array_equal(S.num_blanks(ex.inputs - 1), S.num_blanks(q)[ex.group_id])
    assert ex.inputs.dtype == ex.labels.dtype == np.uint8
    # Same seed, same examples; the transforms differ across copies.
    again = B.augment_sudoku(q, a, 6, np.random.default_rng(1))
    assert np.array_equal(again.inputs, ex.inputs) and np.array_equal(again.transforms.digit_map, ex.transforms.digit_map)
    assert len(np.unique(ex.inputs, axis=0)) > 0.95 * len(ex)


def test_augment_without_copies_is_the_identity(real):
    _, q, a = real
    ex = B.augment_sudoku(q, a, 0, None)
    assert np.array_equal(ex.inputs, q + 1) and (ex.variant == B.ORIGINAL).all() and B.is_identity(ex.transforms).all()
    with pytest.raises(ValueError):
        B.augment_sudoku(q, a[:3], 1, np.random.default_rng(0))


def test_transpose_probability_is_half():
    t = S.random_transforms(np.random.default_rng(5), 20000)
    assert abs(t.transpose.mean() - 0.5) < 0.02


# --------------------------------------------------------------------------- hints


def test_hint_inputs_follow_the_fork(vanilla):
    ex = vanilla
    hinted, k = B.hint_inputs(ex.inputs, ex.labels, np.random.default_rng(0))
    blanks = B.count_blanks(ex.inputs)
    assert ((k >= 1) & (k <= blanks - 1)).all()
    changed = hinted != ex.inputs
    assert np.array_equal(changed.sum(axis=1), k)  # exactly k cells revealed ...
    assert (ex.inputs[changed] == 1).all()  # ... all of them blanks of the example ...
    assert np.array_equal(hinted[changed], ex.labels[changed])  # ... filled with the answer
    assert np.array_equal(B.count_blanks(hinted), blanks - k)


def test_hint_draws_are_uniform():
    # One puzzle with 10 blanks, many draws: k uniform in 1..9, every blank equally likely.
    labels = np.tile((S.strings_to_grids(["534678912672195348198342567859761423426853791713924856961537284287419635345286179"]) + 1), (30000, 1))
    inputs = labels.copy()
    blank_cells = np.arange(0, 81, 8)[:10]
    inputs[:, blank_cells] = 1
    hinted, k = B.hint_inputs(inputs, labels, np.random.default_rng(7))
    assert np.allclose(np.bincount(k, minlength=10)[1:] / len(k), 1 / 9, atol=0.01)
    reveal_rate = (hinted[:, blank_cells] != 1).mean(axis=0)
    assert np.allclose(reveal_rate, k.mean() / 10, atol=0.02)
    # Given k, the chosen set is uniform: every pair of blanks is revealed together equally often.
    two = hinted[k == 2][:, blank_cells] != 1
    pairs = (two[:, :, None] & two[:, None, :]).sum(axis=0)[np.triu_indices(10, 1)]
    assert pairs.std() / pairs.mean() < 0.2


def test_hint_edge_cases_copy_unchanged():
    solved = S.strings_to_grids(["534678912672195348198342567859761423426853791713924856961537284287419635345286179"]) + 1
    one_blank = solved.copy()
    one_blank[0, 40] = 1
    inputs = np.concatenate([solved, one_blank])
    labels = np.concatenate([solved, solved])
    hinted, k = B.hint_inputs(inputs, labels, np.random.default_rng(0))
    assert np.array_equal(hinted, inputs) and np.array_equal(k, [0, 0])


def test_add_hints_emission_order(vanilla, hinted):
    ex, h = vanilla, hinted
    assert len(h) == 2 * len(ex)
    assert np.array_equal(h.puzzle_id, np.arange(len(h)))
    assert np.array_equal(h.variant[1::2], np.full(len(ex), B.HINT))
    assert np.array_equal(h.variant[0::2], ex.variant)  # orig, hint(orig), aug_1, hint(aug_1), ...
    assert np.array_equal(h.parent_id[1::2], np.arange(0, len(h), 2)) and (h.parent_id[0::2] == -1).all()
    assert np.array_equal(h.group_id[0::2], ex.group_id) and np.array_equal(h.group_id[1::2], ex.group_id)
    assert np.array_equal(h.labels[1::2], ex.labels) and np.array_equal(h.inputs[0::2], ex.inputs)
    assert np.array_equal(h.transforms.row_order[1::2], ex.transforms.row_order)
    assert (B.count_blanks(h.inputs[1::2]) < B.count_blanks(ex.inputs)).all()
    back = B.drop_hints(h)
    for name in ("group_id", "puzzle_id", "variant", "parent_id", "inputs", "labels"):
        assert np.array_equal(getattr(back, name), getattr(ex, name)), name


# --------------------------------------------------------------------------- schema


def test_schema_accepts_built_tables(real, vanilla, hinted):
    df, q, a = real
    assert E.validate_examples(frame(real, vanilla), SUDOKU, rows_per_group=7).ok
    assert E.validate_examples(frame(real, hinted), SUDOKU, rows_per_group=14).ok
    assert E.validate_examples(frame(real, B.augment_sudoku(q, a, 0, None)), SUDOKU, rows_per_group=1).ok
    table = frame(real, hinted)
    assert table.schema == pl.Schema(E.polars_schema(SUDOKU)) and list(table.columns) == list(SUDOKU.columns)
    # Lineage columns re-derive every example from its original.
    t = E.from_frame(table, SUDOKU)
    assert np.array_equal(S.apply_transforms(a[t.group_id], t.transforms) + 1, t.labels)


def corrupt(real, ex, **changes):
    fields = {name: getattr(ex, name) for name in ("group_id", "puzzle_id", "variant", "parent_id", "inputs", "labels")}
    for name, fn in changes.items():
        fields[name] = fn(fields[name].copy())
    return frame(real, B.Examples(**fields, transforms=ex.transforms))


def failing(report):
    return {check: sorted(report.problems.filter(pl.col("check") == check)["row"].to_list())
            for check in report.failing}


def test_schema_names_every_bad_row(real, hinted):
    def edit(rows, fn):
        def apply(a):
            for r in rows:
                fn(a, r)
            return a
        return apply

    def swap_cells(a, r):
        a[r, [0, 1]] = a[r, [1, 0]]

    def blank_a_given(a, r):  # blank a cell the parent (row r - 1) has as a given
        a[r, np.flatnonzero(a[r - 1] != 1)[0]] = 1

    bad = corrupt(
        real, hinted,
        labels=edit([2], swap_cells),  # an augmented label breaking a Sudoku rule
        inputs=edit([4], lambda a, r: a.__setitem__((r, slice(None)), a[r + 2])),  # augmented != transform(original)
        parent_id=edit([7], lambda a, r: a.__setitem__(r, 2)),  # hint pointing at another example
    )
    report = E.validate_examples(bad, SUDOKU, rows_per_group=14, path="bad.arrow")
    assert not report.ok
    found = failing(report)
    assert found["valid_solution"] == [2]
    assert 2 in found["augmented_matches_original"] and 4 in found["augmented_matches_original"]
    assert 3 in found["hint_matches_parent"] and 7 in found["hint_matches_parent"]  # hint of row 2 keeps its label
    message = report.message()
    assert message.startswith("bad.arrow:") and "row 2:" in message and "row 7:" in message

    bad = corrupt(real, hinted, inputs=edit([1], blank_a_given))  # a hint that drops one of its parent's givens
    assert failing(E.validate_examples(bad, SUDOKU))["hint_matches_parent"] == [1]
    bad = corrupt(real, hinted, inputs=edit([3], lambda a, r: a.__setitem__((r, slice(None)), a[r - 1])))  # no new givens
    assert failing(E.validate_examples(bad, SUDOKU))["hint_matches_parent"] == [3]
    bad = corrupt(real, hinted, inputs=edit([5], lambda a, r: a.__setitem__((r, 0), 0)))  # token 0 in the inputs
    assert 5 in failing(E.validate_examples(bad, SUDOKU))["inputs: tokens_between"]
    bad = corrupt(real, hinted, puzzle_id=edit([9], lambda a, r: a.__setitem__(r, 10)))
    assert failing(E.validate_examples(bad, SUDOKU))["puzzle_id_is_row"] == [9]
    bad = corrupt(real, hinted, group_id=edit([20], lambda a, r: a.__setitem__(r, 5)))
    assert 20 in failing(E.validate_examples(bad, SUDOKU))["groups_in_order"]
    bad = corrupt(real, hinted, variant=edit([14], lambda a, r: a.__setitem__(r, B.AUGMENTED)))  # group 1 loses its original
    assert 14 in failing(E.validate_examples(bad, SUDOKU))["groups_in_order"]


def test_schema_checks_transforms_and_group_sizes(real, vanilla):
    table = frame(real, vanilla)
    report = E.validate_examples(table, SUDOKU, rows_per_group=8)
    assert set(report.failing) == {"rows_per_group"} and report.failing["rows_per_group"] == len(np.unique(vanilla.group_id))
    # An original with a transform, an augmented copy whose recorded transform is not the one applied.
    dm = table["digit_map"].to_numpy().copy()
    dm[0] = dm[1]
    dm[3, 1:] = np.roll(dm[3, 1:], 1)
    bad = table.with_columns(pl.Series("digit_map", dm, dtype=pl.Array(pl.UInt8, 10)))
    found = failing(E.validate_examples(bad, SUDOKU, rows_per_group=7))
    assert found["original_is_identity"] == [0] and 3 in found["augmented_matches_original"]


def test_schema_reports_layout_errors(real, vanilla):
    table = frame(real, vanilla)
    bad = table.drop("rating").with_columns(pl.col("variant").cast(pl.String), extra=pl.lit(1))
    report = E.validate_examples(bad, SUDOKU, path="x.arrow")
    text = report.message()
    assert "missing column: rating" in text and "unexpected column: extra" in text and "variant" in text
    short = table.with_columns(pl.Series("inputs", table["inputs"].to_numpy()[:, :80], dtype=pl.Array(pl.UInt8, 80)))
    assert "inputs" in E.validate_examples(short, SUDOKU).message()
    nulls = table.with_columns(pl.when(pl.col("puzzle_id") == 3).then(None).otherwise(pl.col("rating")).alias("rating"))
    assert failing(E.validate_examples(nulls, SUDOKU))["rating: not_nullable"] == [3]


def test_schema_checks_raw_index(real, hinted):
    """Every example carries its group's raw row (issue 16): a hint or an augmented copy naming another
    row, and two groups naming the same row, are each reported at their rows."""
    table = frame(real, hinted)  # 14 rows per group: rows 0..13 are group 0, 14.. group 1
    assert E.validate_examples(table, SUDOKU, rows_per_group=14).ok
    raw = table["raw_index"].to_numpy().copy()
    raw[3] += 100  # a hint (odd rows are hints) whose raw row is not its parent's
    raw[4] += 100  # an augmented copy whose raw row is not its original's
    found = failing(E.validate_examples(table.with_columns(pl.Series("raw_index", raw, dtype=pl.Int32)), SUDOKU))
    assert found["hint_matches_parent"] == [3, 5] and found["augmented_matches_original"] == [4]
    same = np.where(table["group_id"].to_numpy() == 1, 0, table["raw_index"].to_numpy())  # group 1 claims raw row 0
    found = failing(E.validate_examples(table.with_columns(pl.Series("raw_index", same, dtype=pl.Int32)), SUDOKU))
    assert found == {"raw_index_distinct": [0, 14]}
    negative = table.with_columns(pl.Series("raw_index", np.full(table.height, -1), dtype=pl.Int32))
    assert "raw_index" in E.validate_examples(negative, SUDOKU).message()


def test_shard_schema_reads_string_variants(real, hinted):
    table = frame(real, hinted).with_columns(pl.col("variant").cast(pl.String))
    assert E.validate_examples(table, SUDOKU, rows_per_group=14, shards=True).ok
    bad = table.with_columns(pl.when(pl.col("puzzle_id") == 4).then(pl.lit("other")).otherwise(pl.col("variant")).alias("variant"))
    assert 4 in E.validate_examples(bad, SUDOKU, shards=True).problems["row"].to_list()


# --------------------------------------------------------------------------- one layout, one checks id


def test_the_check_models_have_the_one_column_layout():
    from hrm.tasks import SUDOKU

    COLUMNS, SHARD_SCHEMA = SUDOKU.columns, SUDOKU.shard_schema

    for shards in (False, True):
        assert tuple(E.examples_schema(SUDOKU, shards=shards).columns) == COLUMNS, shards
    shard_types = dict(pl.from_arrow(SHARD_SCHEMA.empty_table()).schema)
    assert {k: v for k, v in E.polars_schema(SUDOKU).items() if k != "variant"} == {k: v for k, v in shard_types.items()
                                                                            if k != "variant"}


def _code(path) -> str:
    """A module's source without its comments, docstrings and blank lines (what a change of code shows in)."""
    import ast
    import io
    import tokenize

    source = path.read_text()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            for row in range(body[0].lineno, body[0].end_lineno + 1):
                lines[row - 1] = ""
    return "\n".join(line.rstrip() for line in lines if line.strip())


# sha256[:16] of _code(schemas/examples.py) + _code(hrm/tasks/sudoku.py) + _code(hrm/build.py) as they were when
# CHECKS_ID (hrm/tasks/sudoku.py) was last set. Issue 30: the shard-only variant ``imported`` (hrm upstream import;
# hrm.build.IMPORTED): rows of the stages' variants are checked exactly as before, so the same CHECKS_ID (every
# table the stages write keeps its lineage bytes); an imported group holds imported rows only.
CHECKS_CODE = "52f6517996bdaaa2"


def test_checks_id_follows_the_checks():
    # The lineage records E.CHECKS_ID as "validated_with": which checks a table passed. So a change of a
    # check of the examples table must come with a new CHECKS_ID. (Issue 14: ShardTable became
    # ExamplesTable on the shard layout, the examples checks unchanged: same CHECKS_ID, new CHECKS_CODE.
    # Issue 16: the raw_index column and its checks, a new CHECKS_ID. Issue 17: the helpers take the maze
    # table's types and reasons, hrm.build gained the maze augmentation; the Sudoku checks unchanged,
    # same CHECKS_ID. Issue 27: one generic schema built from the task, the Sudoku rules in hrm/tasks/sudoku.py;
    # the checks unchanged, same CHECKS_ID. Issue 31: the viewer's board_view and describe_transform in
    # hrm/tasks/sudoku.py; the checks unchanged, same CHECKS_ID.)
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = "".join(_code(root / f) for f in ("schemas/examples.py", "hrm/tasks/sudoku.py", "hrm/build.py"))
    got = hashlib.sha256(code.encode()).hexdigest()[:16]
    assert got == CHECKS_CODE, (
        f"the code of the examples checks changed: if a check changed, give hrm.tasks.sudoku.CHECKS_ID a "
        f"new value (so tables validated under the old checks are validated again); then set "
        f"CHECKS_CODE = {got!r} in tests/test_build.py")
