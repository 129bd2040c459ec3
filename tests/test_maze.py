"""hrm.maze: encoding, checks, symmetries, the label-free verifier and the generator.

The generated mazes are checked against a plain-Python BFS written here, not the
module's kernels, so a shared bug cannot pass both.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from hrm import maze as M
from hrm.encoding import EncodingError

N = 50


@pytest.fixture(scope="module")
def batch() -> M.GeneratedMazes:
    return M.generate_mazes(N, seed=7)


# ---------------------------------------------------------------- an independent reference


def ref_bfs(tokens: np.ndarray) -> tuple[int, int]:
    """(moves, number of shortest paths) from S to G, in plain Python; (-1, 0) if unreachable."""
    grid = np.asarray(tokens).reshape(M.SIDE, M.SIDE)
    (s,) = zip(*np.nonzero(grid == M.START))
    (g,) = zip(*np.nonzero(grid == M.GOAL))
    dist, ways = {s: 0}, {s: 1}
    todo = deque([s])
    while todo:
        r, c = todo.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if not (0 <= nr < M.SIDE and 0 <= nc < M.SIDE) or grid[nr, nc] == M.WALL:
                continue
            if (nr, nc) not in dist:
                dist[nr, nc] = dist[r, c] + 1
                ways[nr, nc] = 0
                todo.append((nr, nc))
            if dist[nr, nc] == dist[r, c] + 1:
                ways[nr, nc] += ways[r, c]
    return dist.get(g, -1), ways.get(g, 0)


def ref_route(question: np.ndarray, answer: np.ndarray) -> int | None:
    """Moves of the route S -> G through the answer's ``o`` cells if they form one simple path."""
    q = question.reshape(M.SIDE, M.SIDE)
    a = answer.reshape(M.SIDE, M.SIDE)
    on = {(r, c) for r in range(M.SIDE) for c in range(M.SIDE) if a[r, c] == M.PATH or q[r, c] in (M.START, M.GOAL)}
    (s,) = zip(*np.nonzero(q == M.START))
    prev, cur, seen = None, s, [s]
    while q[cur] != M.GOAL:
        r, c = cur
        nxt = [p for p in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)) if p in on and p != prev]
        if len(nxt) != 1:
            return None
        prev, cur = cur, nxt[0]
        seen.append(cur)
    return len(seen) - 1 if len(seen) == len(on) == len(set(seen)) else None


def blank(*open_cells) -> np.ndarray:
    """A 30x30 all-wall question with the given (row, col, token) cells set."""
    grid = np.full((M.SIDE, M.SIDE), M.WALL, dtype=np.uint8)
    for r, c, v in open_cells:
        grid[r, c] = v
    return grid.reshape(M.SEQ_LEN)


def ring(goal: tuple[int, int]) -> np.ndarray:
    """The open border of rows 1..5 x cols 1..9 (a loop of 24 cells), S at (1, 1)."""
    cells = [(r, c, M.OPEN) for r in range(1, 6) for c in range(1, 10) if r in (1, 5) or c in (1, 9)]
    grid = blank(*cells).reshape(M.SIDE, M.SIDE)
    grid[1, 1], grid[goal] = M.START, M.GOAL
    return grid.reshape(M.SEQ_LEN)


def with_path(question: np.ndarray, cells) -> np.ndarray:
    out = question.copy().reshape(M.SIDE, M.SIDE)
    for r, c in cells:
        out[r, c] = M.PATH
    return out.reshape(M.SEQ_LEN)


# Ring with G at (1, 5): the top row (4 moves) is the unique shortest path; the way round
# the other three sides (20 moves) is a valid, simple, longer detour.
RING = ring((1, 5))
RING_SHORT = with_path(RING, [(1, c) for c in range(2, 5)])
RING_DETOUR = with_path(RING, [(r, 1) for r in range(2, 6)] + [(5, c) for c in range(2, 10)]
                        + [(r, 9) for r in range(1, 5)] + [(1, c) for c in range(6, 9)])
# Ring with G at the opposite corner: two shortest paths of 12 moves.
TWIN = ring((5, 9))
TWIN_TOP = with_path(TWIN, [(1, c) for c in range(2, 10)] + [(r, 9) for r in range(2, 5)])
TWIN_BOTTOM = with_path(TWIN, [(r, 1) for r in range(2, 6)] + [(5, c) for c in range(2, 9)])
# A U: S (1, 1) and G (1, 3) with a wall between them; the way round takes 6 moves.
U = blank((1, 1, M.START), (1, 3, M.GOAL), (2, 1, M.OPEN), (3, 1, M.OPEN), (3, 2, M.OPEN), (3, 3, M.OPEN),
          (2, 3, M.OPEN))
U_ANSWER = with_path(U, [(2, 1), (3, 1), (3, 2), (3, 3), (2, 3)])
U_THROUGH_WALL = with_path(U, [(1, 2)])


def test_hand_made_mazes_are_what_they_claim():
    assert ref_bfs(RING) == (4, 1) and ref_route(RING, RING_SHORT) == 4 and ref_route(RING, RING_DETOUR) == 20
    assert ref_bfs(TWIN) == (12, 2) and ref_route(TWIN, TWIN_TOP) == ref_route(TWIN, TWIN_BOTTOM) == 12
    assert ref_bfs(U) == (6, 1) and ref_route(U, U_ANSWER) == 6 and ref_route(U, U_THROUGH_WALL) == 2


# ---------------------------------------------------------------- encoding


def test_tokens_follow_the_official_charset():
    assert (M.SEQ_LEN, M.SIDE, M.VOCAB_SIZE, M.CHARSET) == (900, 30, 6, "# SGo")
    assert (M.PAD, M.WALL, M.OPEN, M.START, M.GOAL, M.PATH) == (0, 1, 2, 3, 4, 5)
    row = ("# SGo" * 180)
    np.testing.assert_array_equal(M.strings_to_tokens([row])[0], np.tile(np.arange(1, 6, dtype=np.uint8), 180))


def test_string_round_trip(batch):
    for grids in (batch.questions, batch.answers):
        strings = M.tokens_to_strings(grids)
        assert all(len(s) == 900 and set(s) <= set(M.CHARSET) for s in strings)
        out = M.strings_to_tokens(strings)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, grids)
    assert set("".join(M.tokens_to_strings(batch.questions))) == set("# SG")
    assert M.strings_to_tokens([]).shape == (0, 900)


def test_bad_strings_are_named_by_row(batch):
    good = M.tokens_to_strings(batch.questions[:5])
    with pytest.raises(EncodingError, match="900 characters") as err:
        M.strings_to_tokens(good[:2] + [good[2][:-1]] + good[3:])
    np.testing.assert_array_equal(err.value.rows, [2])
    bad = list(good)
    bad[1] = "x" + bad[1][1:]
    bad[4] = "é" + bad[4][1:]
    with pytest.raises(EncodingError, match="characters outside") as err:
        M.strings_to_tokens(bad)
    np.testing.assert_array_equal(err.value.rows, [1, 4])
    tokens = batch.questions[:3].copy()
    tokens[2, 5] = M.PAD
    with pytest.raises(EncodingError, match="tokens outside") as err:
        M.tokens_to_strings(tokens)
    np.testing.assert_array_equal(err.value.rows, [2])


# ---------------------------------------------------------------- the generator, checked independently


def test_generated_shapes(batch):
    assert batch.questions.shape == batch.answers.shape == (N, 900)
    assert batch.questions.dtype == batch.answers.dtype == np.uint8
    assert batch.ratings.shape == (N,) and batch.ratings.dtype == np.int64


def test_generated_mazes_against_a_plain_bfs(batch):
    for q, a, rating in zip(batch.questions, batch.answers, batch.ratings):
        grid = q.reshape(30, 30)
        border = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
        assert (border == M.WALL).all()
        assert (q == M.START).sum() == 1 and (q == M.GOAL).sum() == 1 and not (q == M.PATH).any()
        changed = q != a
        assert (q[changed] == M.OPEN).all() and (a[changed] == M.PATH).all()
        moves, ways = ref_bfs(q)
        assert moves == rating >= M.HARD_MIN_PATH
        assert ways == 1
        assert ref_route(q, a) == rating
        assert changed.sum() == rating - 1


def test_generated_mazes_pass_the_module_checks(batch):
    np.testing.assert_array_equal(M.check_mazes(batch.questions, batch.answers), 0)
    M.validate_mazes(batch.questions, batch.answers)
    assert M.verify_paths(batch.questions, batch.answers).all()
    np.testing.assert_array_equal(M.broken_path_cells(batch.questions, batch.answers), 0)
    np.testing.assert_array_equal(M.shortest_path_lengths(batch.questions), batch.ratings)


def test_generated_mazes_have_loops(batch):
    # Braided: more open cells than a spanning tree of the lattice would give, so routes compete.
    walkable = (batch.questions != M.WALL).sum(axis=1)
    assert (walkable > 2 * 14 * 14 - 1).mean() > 0.9


def test_every_maze_meets_min_path():
    out = M.generate_mazes(20, seed=3, min_path=150)
    assert (out.ratings >= 150).all()
    assert [ref_bfs(q) for q in out.questions] == [(int(r), 1) for r in out.ratings]


def test_generator_is_deterministic_and_seeded(batch):
    again = M.generate_mazes(N, seed=7)
    for x, y in zip(batch, again):
        np.testing.assert_array_equal(x, y)
    prefix = M.generate_mazes(10, seed=7)
    np.testing.assert_array_equal(prefix.questions, batch.questions[:10])
    other = M.generate_mazes(N, seed=8)
    assert (other.questions != batch.questions).any(axis=1).all()
    assert len({q.tobytes() for q in batch.questions}) == N
    assert M.generate_mazes(0, seed=1).questions.shape == (0, 900)


@pytest.mark.parametrize("kwargs", [dict(n=-1, seed=0), dict(n=2, seed=1.5), dict(n=2, seed=0, min_path=0),
                                    dict(n=2, seed=0, openings=-1), dict(n=1, seed=0, min_path=900)])
def test_generator_refuses_bad_controls(kwargs):
    with pytest.raises(ValueError):
        M.generate_mazes(**kwargs)


def test_describe_values():
    from hrm.tasks.base import describe_values

    d = describe_values(np.array([111, 115, 120, 200]))
    assert (d["count"], d["min"], d["max"], d["median"], d["mean"]) == (4, 111, 200, 117.5, 136.5)
    assert d["quantiles"]["0.5"] == 117.5 and d["quantiles"]["0.05"] >= 111
    assert describe_values(np.array([], dtype=np.int64))["min"] is None


# ---------------------------------------------------------------- BFS kernels on unstructured grids


def test_bfs_kernels_match_the_plain_bfs_on_random_grids():
    rng = np.random.default_rng(0)
    grids = np.where(rng.random((200, 900)) < 0.3, M.WALL, M.OPEN).astype(np.uint8)
    for grid in grids:
        s, g = rng.choice(900, size=2, replace=False)
        grid[s], grid[g] = M.START, M.GOAL
    ref = [ref_bfs(q) for q in grids]
    np.testing.assert_array_equal(M.shortest_path_lengths(grids), [m for m, _ in ref])
    np.testing.assert_array_equal(M.count_shortest_paths(grids, cap=10**9), [w for _, w in ref])
    np.testing.assert_array_equal(M.count_shortest_paths(grids), [min(w, 2) for _, w in ref])
    assert any(w > 2 for _, w in ref) and any(w == 0 for _, w in ref)  # the cases are exercised


def test_bfs_kernels_without_unique_ends():
    no_goal = RING.copy()
    no_goal[no_goal == M.GOAL] = M.OPEN
    two_starts = RING.copy()
    two_starts[1 * 30 + 9] = M.START
    grids = np.stack([RING, no_goal, two_starts])
    np.testing.assert_array_equal(M.shortest_path_lengths(grids), [4, -1, -1])
    np.testing.assert_array_equal(M.count_shortest_paths(grids), [1, 0, 0])
    with pytest.raises(ValueError):
        M.count_shortest_paths(grids, cap=0)
    with pytest.raises(ValueError):
        M.shortest_path_lengths(grids[:, :81])


# ---------------------------------------------------------------- symmetries


def test_dihedral_order_is_the_official_one():
    x = np.arange(900).reshape(30, 30)
    expected = [x, np.rot90(x, 1), np.rot90(x, 2), np.rot90(x, 3), x[:, ::-1], x[::-1], x.T, x[::-1, ::-1].T]
    for k, e in enumerate(expected):
        np.testing.assert_array_equal(M.dihedral(x.reshape(1, 900), k)[0], e.reshape(900))
    # rot90 turns counter-clockwise: the top-right corner goes to the top-left.
    assert M.dihedral(x.reshape(1, 900), 1)[0, 0] == 29
    assert M.INVERSE == (0, 3, 2, 1, 4, 5, 6, 7)


def test_dihedral_round_trips_and_distinctness(batch):
    q = batch.questions
    images = []
    for k in range(8):
        t = M.dihedral(q, k)
        assert t.dtype == q.dtype and t.shape == q.shape
        np.testing.assert_array_equal(M.dihedral_inverse(t, k), q)
        np.testing.assert_array_equal(M.dihedral(t, M.INVERSE[k]), q)
        images.append(t[0].tobytes())
    assert len(set(images)) == 8  # a generated maze has no symmetry
    ks = np.arange(N) % 8
    per_row = M.dihedral(q, ks)
    for k in range(8):
        np.testing.assert_array_equal(per_row[ks == k], M.dihedral(q[ks == k], k))
    np.testing.assert_array_equal(M.dihedral_inverse(per_row, ks), q)
    with pytest.raises(ValueError):
        M.dihedral(q, 8)
    with pytest.raises(ValueError):
        M.dihedral(q, ks[:3])


@pytest.mark.parametrize("k", range(8))
def test_dihedral_keeps_mazes_valid(batch, k):
    q, a = M.dihedral(batch.questions, k), M.dihedral(batch.answers, k)
    M.validate_mazes(q, a)
    np.testing.assert_array_equal(M.shortest_path_lengths(q), batch.ratings)
    assert [ref_bfs(x)[0] for x in q[:5]] == list(batch.ratings[:5])


def test_swap_start_goal(batch):
    q, a = batch.questions, batch.answers
    sq, sa = M.swap_start_goal(q), M.swap_start_goal(a)
    np.testing.assert_array_equal(M.swap_start_goal(sq), q)
    np.testing.assert_array_equal(sq == M.START, q == M.GOAL)
    np.testing.assert_array_equal(sq == M.GOAL, q == M.START)
    others = (q != M.START) & (q != M.GOAL)
    np.testing.assert_array_equal(sq[others], q[others])
    M.validate_mazes(sq, sa)
    assert M.verify_paths(sq, sa).all()
    assert M.swap_start_goal(np.array([0, 1, 2, 3, 4, 5, 9])).tolist() == [0, 1, 2, 4, 3, 5, 9]


# ---------------------------------------------------------------- the verifier


def test_verifier_accepts_the_answers_and_any_optimal_path():
    q = np.stack([RING, U, TWIN, TWIN])
    p = np.stack([RING_SHORT, U_ANSWER, TWIN_TOP, TWIN_BOTTOM])
    assert M.verify_paths(q, p).tolist() == [True] * 4
    np.testing.assert_array_equal(M.broken_path_cells(q, p), 0)


def test_verifier_rejects_a_gap(batch):
    q, a = batch.questions[:10], batch.answers[:10].copy()
    for i in range(10):
        marked = np.flatnonzero(a[i] == M.PATH)
        a[i, marked[len(marked) // 2]] = M.OPEN
    assert not M.verify_paths(q, a).any()
    np.testing.assert_array_equal(M.broken_path_cells(q, a), 2)  # the two cells beside the gap
    np.testing.assert_array_equal(M.check_mazes(q, a), M.REASON_NOT_A_PATH)


def test_verifier_rejects_a_path_through_a_wall():
    assert not M.verify_paths(U[None], U_THROUGH_WALL[None])[0]
    assert M.check_mazes(U[None], U_THROUGH_WALL[None])[0] == M.REASON_ANSWER_MISMATCH
    # The wall itself, and S and G: a marked wall is no route cell, so they lose their neighbour.
    assert M.broken_path_cells(U[None], U_THROUGH_WALL[None])[0] == 3


def test_verifier_rejects_a_longer_path():
    assert not M.verify_paths(RING[None], RING_DETOUR[None])[0]
    assert M.check_mazes(RING[None], RING_DETOUR[None])[0] == M.REASON_NOT_SHORTEST
    assert M.broken_path_cells(RING[None], RING_DETOUR[None])[0] == 0  # locally a fine path


def test_verifier_rejects_changed_walls_and_ends(batch):
    q, a = batch.questions[:3], batch.answers[:3].copy()
    a[0, 0] = M.OPEN  # a border wall opened
    a[1, np.flatnonzero(q[1] == M.GOAL)] = M.PATH  # G overwritten
    s = np.flatnonzero(q[2] == M.START)[0]
    a[2, s] = M.GOAL  # S turned into a second G
    assert not M.verify_paths(q, a).any()
    np.testing.assert_array_equal(M.check_mazes(q, a), M.REASON_ANSWER_MISMATCH)
    assert M.broken_path_cells(q, a)[0] == 1


def test_verifier_rejects_branches_loops_and_empty(batch):
    q = batch.questions[0]
    a = batch.answers[0]
    spur = a.copy()  # a dead-end branch off the path
    grid = spur.reshape(30, 30)
    for r, c in zip(*np.nonzero(grid == M.PATH)):
        side = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)) if grid[r + dr, c + dc] == M.OPEN]
        if side:
            grid[side[0]] = M.PATH
            break
    loop_q = RING.copy().reshape(30, 30)  # the ring with a separate 3x3 loop of open cells
    loop_q[10:13, 10:13] = M.OPEN
    loop_q[11, 11] = M.WALL
    loop_q = loop_q.reshape(900)
    loop_a = loop_q.copy().reshape(30, 30)  # the right answer plus that loop marked
    loop_a[1, 2:5] = M.PATH
    loop_a[10:13, 10:13] = M.PATH
    loop_a[11, 11] = M.WALL
    loop_a = loop_a.reshape(900)
    questions = np.stack([q, q, loop_q])
    predictions = np.stack([spur, q, loop_a])  # branch, nothing marked, extra loop
    assert not M.verify_paths(questions, predictions).any()
    assert M.check_mazes(questions, predictions).tolist() == [M.REASON_NOT_A_PATH] * 3
    assert M.broken_path_cells(questions, predictions)[0] >= 1
    assert M.broken_path_cells(questions, predictions)[2] == 0  # local rules hold; the walk catches it
    assert ref_route(loop_q, loop_a) is None and ref_bfs(loop_q) == (4, 1)


def test_a_path_touching_itself_is_not_simple():
    # S (1, 1) -> (1, 2) -> (2, 2) -> (2, 1) -> (3, 1) -> G (4, 1): a walk that visits every
    # marked cell once, but (2, 1) also touches S, so S has 2 route neighbours and (2, 1) 3.
    q = blank((1, 1, M.START), (1, 2, M.OPEN), (2, 2, M.OPEN), (2, 1, M.OPEN), (3, 1, M.OPEN), (4, 1, M.GOAL))
    p = with_path(q, [(1, 2), (2, 2), (2, 1), (3, 1)])
    assert M.check_mazes(q[None], p[None])[0] == M.REASON_NOT_A_PATH
    assert M.broken_path_cells(q[None], p[None])[0] == 2
    assert not M.verify_paths(q[None], p[None])[0]


def test_verifier_rejects_malformed_questions():
    no_goal = RING.copy()
    no_goal[no_goal == M.GOAL] = M.OPEN
    assert not M.verify_paths(no_goal[None], no_goal[None])[0]


# ---------------------------------------------------------------- validate_mazes names the bad row


def _corrupt(kind: str, q: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, a = q.copy(), a.copy()
    open_off_path = np.flatnonzero((q == M.OPEN) & (a == M.OPEN))[0]
    if kind == "token":
        q[0] = a[0] = 9
    elif kind == "ends":
        q[q == M.GOAL] = M.OPEN
        a[a == M.GOAL] = M.OPEN
    elif kind == "path_in_question":
        q[open_off_path] = a[open_off_path] = M.PATH
    elif kind == "mismatch":
        a[0] = M.OPEN
    elif kind == "gap":
        a[np.flatnonzero(a == M.PATH)[3]] = M.OPEN
    elif kind == "detour":
        return RING, RING_DETOUR
    elif kind == "not_unique":
        return TWIN, TWIN_TOP
    return q, a


@pytest.mark.parametrize("kind, code", [("token", M.REASON_BAD_TOKEN), ("ends", M.REASON_START_GOAL),
                                        ("path_in_question", M.REASON_PATH_IN_QUESTION),
                                        ("mismatch", M.REASON_ANSWER_MISMATCH), ("gap", M.REASON_NOT_A_PATH),
                                        ("detour", M.REASON_NOT_SHORTEST), ("not_unique", M.REASON_NOT_UNIQUE)])
def test_validate_names_the_bad_row(batch, kind, code):
    q, a = batch.questions[:8].copy(), batch.answers[:8].copy()
    q[5], a[5] = _corrupt(kind, q[5], a[5])
    codes = M.check_mazes(q, a)
    assert codes.tolist() == [0] * 5 + [code] + [0] * 2
    with pytest.raises(EncodingError) as err:
        M.validate_mazes(q, a)
    np.testing.assert_array_equal(err.value.rows, [5])
    assert M.REASONS[code] in str(err.value) and "rows 5" in str(err.value)


def test_validate_reports_the_first_rows_reason(batch):
    q, a = batch.questions[:6].copy(), batch.answers[:6].copy()
    q[1], a[1] = _corrupt("gap", q[1], a[1])
    q[2], a[2] = _corrupt("mismatch", q[2], a[2])
    q[4], a[4] = _corrupt("gap", q[4], a[4])
    with pytest.raises(EncodingError, match="simple 4-connected path") as err:
        M.validate_mazes(q, a)
    np.testing.assert_array_equal(err.value.rows, [1, 4])


def test_checks_refuse_bad_shapes(batch):
    with pytest.raises(ValueError):
        M.check_mazes(batch.questions, batch.answers[:3])
    with pytest.raises(ValueError):
        M.verify_paths(batch.questions[:, :100], batch.answers[:, :100])
    # Wide dtypes clip instead of wrapping: 257 is not read as a wall.
    wide = batch.answers[:2].astype(np.int64)
    wide[:, 0] = 257
    assert not M.verify_paths(batch.questions[:2], wide).any()
