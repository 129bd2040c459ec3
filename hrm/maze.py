"""Maze-30x30-Hard encoding, checks, symmetries, a label-free verifier and a generator.

Library code: arrays in, arrays out, no files. Conventions follow the official builder
(sapientinc/HRM, dataset/build_maze_dataset.py):

- string: 900 characters, a 30x30 grid row-major over ``CHARSET = "# SGo"``
  (``#`` wall, space open, ``S`` start, ``G`` goal, ``o`` a cell of the path; ``o``
  only in answers);
- tokens: uint8 [N, 900], charset index + 1 (``#`` 1, `` `` 2, ``S`` 3, ``G`` 4,
  ``o`` 5); 0 is padding (and the builder's ignore label); vocabulary 6.

Path length ("rating" here) is the number of moves from S to G, i.e. the number of
``o`` cells plus one. The HRM paper keeps mazes whose shortest path "exceeds 110"
(``PAPER_MIN_DIFFICULTY``); whether its CSV ``rating`` counts moves or ``o`` cells
could not be checked (the CSV is not stored), so the two may differ by one.

Moves are 4-connected and never leave the grid; cells holding tokens 2..5 are walkable.

Augmentation: the builder's 8 dihedral transforms of each train maze (``dihedral``,
same order) are opt-in there (``--aug``, default off; test never), and the paper
trains Maze without augmentation. The paper counts a path correct "if it is valid and
optimal" (``verify_paths``); the HRM evaluation and the Augmented-HRM fork compare with
the label exactly, which agrees only where the shortest path is unique
(``count_shortest_paths``).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from hrm.encoding import EncodingError, check_int

SIDE = 30
SEQ_LEN = SIDE * SIDE
CHARSET = "# SGo"
VOCAB_SIZE = len(CHARSET) + 1  # + padding
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
PAPER_MIN_DIFFICULTY = 110  # HRM paper §3.1: kept mazes have shortest path > 110
HARD_MIN_PATH = PAPER_MIN_DIFFICULTY + 1  # the generator's default minimum (inclusive)

# byte -> token; 255 marks a character outside the charset.
_CHAR_TO_TOKEN = np.full(256, 255, dtype=np.uint8)
for _i, _ch in enumerate(CHARSET):
    _CHAR_TO_TOKEN[ord(_ch)] = _i + 1
_TOKEN_TO_CHAR = np.frombuffer(("?" + CHARSET).encode("ascii"), dtype=np.uint8)


# ---------------------------------------------------------------- encoding


def strings_to_tokens(strings: Sequence[str] | np.ndarray) -> np.ndarray:
    """900-character maze strings -> uint8 tokens [N, 900]. Raises EncodingError naming bad rows."""
    strings = np.asarray(strings, dtype=object).reshape(-1)
    n = len(strings)
    if n == 0:
        return np.zeros((0, SEQ_LEN), dtype=np.uint8)
    lengths = np.fromiter((len(s) if isinstance(s, str) else -1 for s in strings), dtype=np.int64, count=n)
    bad_len = np.flatnonzero(lengths != SEQ_LEN)
    if len(bad_len):
        raise EncodingError(f"expected strings of {SEQ_LEN} characters", bad_len)
    # latin-1 with "replace" keeps one byte per character, so rows stay aligned.
    raw = np.frombuffer("".join(strings).encode("latin-1", "replace"), dtype=np.uint8)
    tokens = _CHAR_TO_TOKEN[raw].reshape(n, SEQ_LEN)
    bad_char = np.flatnonzero((tokens == 255).any(axis=1))
    if len(bad_char):
        raise EncodingError(f"characters outside {CHARSET!r}", bad_char)
    return tokens


def tokens_to_strings(tokens: np.ndarray) -> list[str]:
    """uint8 tokens [N, 900] -> 900-character strings. Raises EncodingError for tokens outside 1..5."""
    tokens = _as_rows(tokens, "tokens")
    bad = np.flatnonzero(((tokens < WALL) | (tokens > PATH)).any(axis=1))
    if len(bad):
        raise EncodingError(f"tokens outside {WALL}..{PATH}", bad)
    data = _TOKEN_TO_CHAR[tokens.astype(np.intp)].tobytes().decode("ascii")
    return [data[i : i + SEQ_LEN] for i in range(0, len(data), SEQ_LEN)]


def _as_rows(grids, name: str) -> np.ndarray:
    """[N, 900] as a contiguous uint8 array; other values clip so that they stay invalid."""
    grids = np.asarray(grids)
    if grids.ndim != 2 or grids.shape[1] != SEQ_LEN:
        raise ValueError(f"{name}: expected shape [N, {SEQ_LEN}], got {grids.shape}")
    if grids.dtype != np.uint8:
        grids = np.clip(grids, 0, 255).astype(np.uint8)  # clip: a wrapped 257 would read as a wall
    return np.ascontiguousarray(grids)


def _pair(questions, answers) -> tuple[np.ndarray, np.ndarray]:
    q, a = _as_rows(questions, "questions"), _as_rows(answers, "answers")
    if len(q) != len(a):
        raise ValueError(f"{len(q)} questions but {len(a)} answers")
    return q, a


# ---------------------------------------------------------------- compiled kernels
#
# The kernels call one another (BFS inside the generator, ...), which numba only allows
# between compiled functions; ``hrm.encoding.numba_kernel`` compiles each function on its
# own. So they are plain functions here, compiled together on the first call of any
# public function (``_jit``) and rebound in this module's namespace, keeping the import
# free of numba's start-up. One source file: numba's on-disk cache stays consistent.


def _neighbours(cell, out):
    """The in-grid 4-neighbours of ``cell`` into ``out``; returns how many."""
    r, c = cell // SIDE, cell % SIDE
    k = 0
    if r > 0:
        out[k] = cell - SIDE
        k += 1
    if r < SIDE - 1:
        out[k] = cell + SIDE
        k += 1
    if c > 0:
        out[k] = cell - 1
        k += 1
    if c < SIDE - 1:
        out[k] = cell + 1
        k += 1
    return k


def _find_ends(grid):
    """(start, goal) cells, -1 for either that is absent or not unique."""
    s = g = -1
    ns = ng = 0
    for i in range(SEQ_LEN):
        if grid[i] == START:
            s = i
            ns += 1
        elif grid[i] == GOAL:
            g = i
            ng += 1
    if ns != 1:
        s = -1
    if ng != 1:
        g = -1
    return s, g


def _bfs(grid, source, cap, dist, count, queue, nb):
    """Breadth-first distances from ``source`` over the non-wall cells of ``grid``.

    ``dist`` gets moves (-1 unreachable), ``count`` the number of shortest paths,
    saturating at ``cap``: each layer adds its predecessors' counts, so one BFS counts
    all shortest paths without enumerating them.
    """
    for i in range(SEQ_LEN):
        dist[i] = -1
        count[i] = 0
    dist[source] = 0
    count[source] = 1
    head, tail = 0, 1
    queue[0] = source
    while head < tail:
        cell = queue[head]
        head += 1
        d = dist[cell] + 1
        for j in range(_neighbours(cell, nb)):
            m = nb[j]
            v = grid[m]
            if v == WALL or v == PAD or v > PATH:
                continue
            if dist[m] == -1:
                dist[m] = d
                queue[tail] = m
                tail += 1
            if dist[m] == d:
                count[m] = min(cap, count[m] + count[cell])


def _bfs_rows(grids, cap, lengths, counts):
    """Per row: moves of the shortest S-G path (-1: no unique S and G, or unreachable) and
    the number of shortest paths capped at ``cap`` (0 when unreachable)."""
    dist = np.empty(SEQ_LEN, dtype=np.int64)
    count = np.empty(SEQ_LEN, dtype=np.int64)
    queue = np.empty(SEQ_LEN, dtype=np.int64)
    nb = np.empty(4, dtype=np.int64)
    for i in range(grids.shape[0]):
        s, g = _find_ends(grids[i])
        lengths[i] = -1
        counts[i] = 0
        if s < 0 or g < 0:
            continue
        _bfs(grids[i], s, cap, dist, count, queue, nb)
        lengths[i] = dist[g]
        counts[i] = count[g]


def _on_path(q, p, cell):
    """A cell of the route: the question's S or G, or an open cell the prediction marks."""
    v = q[cell]
    return v == START or v == GOAL or (v == OPEN and p[cell] == PATH)


def _path_rows(questions, predictions, codes, moves):
    """Structural check of each prediction against its question (no label, no BFS).

    codes: 0 ok, else the first failing ``REASON_*`` among BAD_TOKEN, START_GOAL,
    PATH_IN_QUESTION, ANSWER_MISMATCH, NOT_A_PATH. moves: the route's moves when ok.
    """
    nb = np.empty(4, dtype=np.int64)
    for i in range(questions.shape[0]):
        q, p = questions[i], predictions[i]
        codes[i] = 0
        moves[i] = -1
        bad_token = False
        has_path = False
        for c in range(SEQ_LEN):
            bad_token |= q[c] < WALL or q[c] > PATH
            has_path |= q[c] == PATH
        if bad_token:
            codes[i] = 1
            continue
        s, g = _find_ends(q)
        if s < 0 or g < 0:
            codes[i] = 2
            continue
        if has_path:
            codes[i] = 3
            continue
        n_marked = 0
        ok = True
        for c in range(SEQ_LEN):
            v = q[c]
            if v == OPEN:
                ok &= p[c] == OPEN or p[c] == PATH
                if p[c] == PATH:
                    n_marked += 1
            else:
                ok &= p[c] == v
        if not ok:
            codes[i] = 4
            continue
        # Degrees: a marked cell needs exactly 2 route neighbours, S and G exactly 1.
        for c in range(SEQ_LEN):
            if not _on_path(q, p, c):
                continue
            deg = 0
            for j in range(_neighbours(c, nb)):
                if _on_path(q, p, nb[j]):
                    deg += 1
            want = 1 if (c == s or c == g) else 2
            ok &= deg == want
        if not ok:
            codes[i] = 5
            continue
        # With those degrees the walk from S is forced and can only end at G; it must
        # visit every marked cell, else a separate loop of marked cells exists.
        prev, cur, steps = -1, s, 0
        while cur != g and steps <= SEQ_LEN:
            nxt = -1
            for j in range(_neighbours(cur, nb)):
                m = nb[j]
                if m != prev and _on_path(q, p, m):
                    nxt = m
            if nxt < 0:
                break
            prev, cur = cur, nxt
            steps += 1
        if cur != g or steps != n_marked + 1:
            codes[i] = 5
            continue
        moves[i] = steps


def _broken_rows(questions, predictions, out):
    """Per row: how many cells break at least one rule of ``broken_path_cells``."""
    nb = np.empty(4, dtype=np.int64)
    for i in range(questions.shape[0]):
        q, p = questions[i], predictions[i]
        n = 0
        for c in range(SEQ_LEN):
            v = q[c]
            broken = False
            if v == OPEN:
                broken = not (p[c] == OPEN or p[c] == PATH)
            else:
                broken = p[c] != v
            if _on_path(q, p, c):
                deg = 0
                for j in range(_neighbours(c, nb)):
                    if _on_path(q, p, nb[j]):
                        deg += 1
                want = 1 if (v == START or v == GOAL) else 2
                broken |= deg != want
            if broken:
                n += 1
        out[i] = n


# ---------------------------------------------------------------- generator kernels

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LATTICE = (SIDE - 1) // 2  # 14 maze cells per side, at odd coordinates 1..27


def _mix(x):
    """splitmix64's output function: a bijective scramble of a uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _below(rng, n):
    """Integer in [0, n) from the splitmix64 stream in rng[0] (bias ~ n / 2**64)."""
    rng[0] += _GOLDEN
    return np.int64(_mix(rng[0]) % np.uint64(n))


def _carve(rng, grid, stack, nb):
    """A perfect maze (random depth-first backtracker) on the odd-coordinate lattice."""
    for i in range(SEQ_LEN):
        grid[i] = WALL
    first = (1 + 2 * _below(rng, _LATTICE)) * SIDE + 1 + 2 * _below(rng, _LATTICE)
    grid[first] = OPEN
    stack[0] = first
    top = 1
    while top > 0:
        cell = stack[top - 1]
        r, c = cell // SIDE, cell % SIDE
        k = 0
        if r >= 3 and grid[cell - 2 * SIDE] == WALL:
            nb[k] = cell - 2 * SIDE
            k += 1
        if r <= SIDE - 5 and grid[cell + 2 * SIDE] == WALL:
            nb[k] = cell + 2 * SIDE
            k += 1
        if c >= 3 and grid[cell - 2] == WALL:
            nb[k] = cell - 2
            k += 1
        if c <= SIDE - 5 and grid[cell + 2] == WALL:
            nb[k] = cell + 2
            k += 1
        if k == 0:
            top -= 1
            continue
        nxt = nb[_below(rng, k)]
        grid[(cell + nxt) // 2] = OPEN
        grid[nxt] = OPEN
        stack[top] = nxt
        top += 1


def _attempt(rng, min_path, openings, grid, answer, dist, count, queue, nb, cells):
    """One maze into ``grid`` (question) and ``answer``; returns its moves, or -1."""
    _carve(rng, grid, queue, nb)
    # Braid: knock through random lattice walls (one wall between two corridors). A
    # perfect maze has one path between any two cells; loops give the solver choices.
    for _ in range(openings):
        r = 1 + _below(rng, SIDE - 3)
        c = 1 + _below(rng, SIDE - 3)
        if (r + c) % 2 == 0:
            continue  # a lattice cell (both odd) or a post (both even)
        w = r * SIDE + c
        if r % 2 == 0:
            if grid[w - SIDE] == OPEN and grid[w + SIDE] == OPEN:
                grid[w] = OPEN
        elif grid[w - 1] == OPEN and grid[w + 1] == OPEN:
            grid[w] = OPEN
    n_open = 0
    for i in range(SEQ_LEN):
        if grid[i] == OPEN:
            cells[n_open] = i
            n_open += 1
    s = cells[_below(rng, n_open)]
    # One BFS from S gives, for every cell, the distance and whether its shortest path
    # is unique: G is drawn among the cells far enough with a unique one.
    _bfs(grid, s, 2, dist, count, queue, nb)
    n_far = 0
    for i in range(n_open):
        if dist[cells[i]] >= min_path and count[cells[i]] == 1:
            cells[n_far] = cells[i]
            n_far += 1
    if n_far == 0:
        return -1
    g = cells[_below(rng, n_far)]
    grid[s] = START
    grid[g] = GOAL
    # Walk back from G along strictly decreasing distance: unique by construction.
    for i in range(SEQ_LEN):
        answer[i] = grid[i]
    cur = g
    while cur != s:
        nxt = -1
        for j in range(_neighbours(cur, nb)):
            m = nb[j]
            if dist[m] == dist[cur] - 1 and grid[m] != WALL:
                nxt = m
        if nxt != s:
            answer[nxt] = PATH
        cur = nxt
    return dist[g]


def _generate(seed, min_path, openings, max_attempts, questions, answers, ratings):
    """Fill the outputs; returns the index of a maze that ran out of attempts, or -1."""
    dist = np.empty(SEQ_LEN, dtype=np.int64)
    count = np.empty(SEQ_LEN, dtype=np.int64)
    queue = np.empty(SEQ_LEN, dtype=np.int64)
    cells = np.empty(SEQ_LEN, dtype=np.int64)
    nb = np.empty(4, dtype=np.int64)
    rng = np.zeros(1, dtype=np.uint64)
    base = _mix(seed + _GOLDEN)
    for i in range(questions.shape[0]):
        done = False
        for a in range(max_attempts):
            # Sub-seed from (seed, i, a) only: the first n mazes do not depend on N.
            rng[0] = _mix(_mix(base ^ np.uint64(i)) + _GOLDEN * np.uint64(a + 1))
            moves = _attempt(rng, min_path, openings, questions[i], answers[i], dist, count, queue, nb, cells)
            if moves >= min_path:
                ratings[i] = moves
                done = True
                break
        if not done:
            return i
    return -1


# Callees before callers: each is compiled (and rebound) after what it calls.
_KERNELS = ("_neighbours", "_find_ends", "_bfs", "_bfs_rows", "_on_path", "_path_rows", "_broken_rows",
            "_mix", "_below", "_carve", "_attempt", "_generate")
_compiled = False


def _jit() -> None:
    global _compiled
    if not _compiled:
        from numba import njit

        namespace = globals()
        for name in _KERNELS:
            namespace[name] = njit(cache=True)(namespace[name])
        _compiled = True


# ---------------------------------------------------------------- shortest paths


def _bfs_stats(questions, cap: int) -> tuple[np.ndarray, np.ndarray]:
    q = _as_rows(questions, "questions")
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ValueError(f"cap must be an integer >= 1, got {cap!r}")
    _jit()
    lengths = np.empty(len(q), dtype=np.int64)
    counts = np.empty(len(q), dtype=np.int64)
    _bfs_rows(q, np.int64(cap), lengths, counts)
    return lengths, counts


def shortest_path_lengths(questions: np.ndarray) -> np.ndarray:
    """int64 [N]: moves of the shortest S-G path over non-wall cells (BFS).

    -1 where the row lacks exactly one S and one G, or G cannot be reached.
    """
    return _bfs_stats(questions, 1)[0]


def count_shortest_paths(questions: np.ndarray, cap: int = 2) -> np.ndarray:
    """int64 [N]: number of distinct shortest S-G paths, saturating at ``cap``.

    BFS layer counting (a cell's count is the sum over its predecessors one layer
    closer to S), so the cost is one BFS whatever the true count. 0 where G is
    unreachable or S/G are not unique. The default cap 2 answers "is it unique?".
    """
    return _bfs_stats(questions, cap)[1]


# ---------------------------------------------------------------- checks

REASON_OK = 0
REASONS = {
    1: "question holds tokens outside 1..5",
    2: "question does not hold exactly one S and one G",
    3: "question holds path cells",
    4: "answer changes a wall, S or G, or puts something other than a path mark on an open cell",
    5: "answer's path cells with S and G are not one simple 4-connected path from S to G",
    6: "answer's path is longer than the shortest path",
    7: "question has more than one shortest path",
}
(REASON_BAD_TOKEN, REASON_START_GOAL, REASON_PATH_IN_QUESTION, REASON_ANSWER_MISMATCH, REASON_NOT_A_PATH,
 REASON_NOT_SHORTEST, REASON_NOT_UNIQUE) = range(1, 8)


def _route_codes(questions, predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes up to NOT_SHORTEST, BFS shortest moves, shortest-path counts capped at 2)."""
    q, p = _pair(questions, predictions)
    _jit()
    codes = np.empty(len(q), dtype=np.int8)
    moves = np.empty(len(q), dtype=np.int64)
    _path_rows(q, p, codes, moves)
    lengths, counts = _bfs_stats(q, 2)
    codes[(codes == 0) & (moves != lengths)] = REASON_NOT_SHORTEST
    return codes, lengths, counts


def check_mazes(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """int8 [N] reason codes, 0 for a valid maze with its answer (see ``REASONS``).

    Valid: the question holds tokens 1..4 only, with exactly one S and one G; the answer
    equals the question except open cells on the route, which hold ``o``; those cells with
    S and G form one simple 4-connected path from S to G (each ``o`` cell has exactly two
    route neighbours, S and G one, and the walk from S covers them all); its length is the
    BFS optimum; and that shortest path is unique, so the label is the only right answer.
    The first failing check (in code order) is reported.
    """
    codes, _, counts = _route_codes(questions, answers)
    codes[(codes == 0) & (counts != 1)] = REASON_NOT_UNIQUE
    return codes


def validate_mazes(questions: np.ndarray, answers: np.ndarray) -> None:
    """Raise EncodingError naming the rows that fail the first row's failing check.

    The reason reported is that of the lowest bad row; the rows listed are every row
    failing for that same reason (other reasons show after those rows are fixed).
    """
    codes = check_mazes(questions, answers)
    bad = np.flatnonzero(codes)
    if len(bad):
        code = int(codes[bad[0]])
        raise EncodingError(f"invalid maze ({REASONS[code]})", np.flatnonzero(codes == code))


def verify_paths(questions: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """bool [N]: the prediction is an optimal S-G path of the question. No label is read.

    Accepted when the prediction keeps every wall, S and G of the question, marks only
    open cells with ``o``, the marked cells with S and G form one simple 4-connected path
    from S to G, and its length equals the BFS optimum. Any optimal path passes, also in
    mazes with several (the paper's "valid and optimal"); a malformed question fails.
    """
    return _route_codes(questions, predictions)[0] == 0


def broken_path_cells(questions: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """int64 [N]: cells where the prediction breaks a local rule of a path (analysis measure).

    A cell counts (once) when it breaks at least one of:
    - a wall, S or G of the question holds anything else in the prediction;
    - an open cell of the question holds something other than open or ``o``;
    - a route cell (an open cell marked ``o``, or the question's S or G) whose number of
      route 4-neighbours is not 2 (for ``o``) or 1 (for S and G): a gap, a branch, a
      dead end or a blob (a wall marked ``o`` is no route cell: its S or G neighbour
      counts too).
    0 for any simple S-G path, optimal or not, and also for a path plus a separate loop:
    it measures local damage, ``verify_paths`` decides correctness. Questions are read
    as given (S and G where the question has them).
    """
    q, p = _pair(questions, predictions)
    _jit()
    out = np.empty(len(q), dtype=np.int64)
    _broken_rows(q, p, out)
    return out


def broken_cells(questions: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """bool [N, 900]: the cells :func:`broken_path_cells` counts (each rule read the same way, in numpy: the
    viewer marks them)."""
    q, p = (a.reshape(-1, SIDE, SIDE) for a in _pair(questions, predictions))
    broken = np.where(q == OPEN, (p != OPEN) & (p != PATH), p != q)
    route = (q == START) | (q == GOAL) | ((q == OPEN) & (p == PATH))
    padded = np.pad(route, ((0, 0), (1, 1), (1, 1))).astype(np.int8)
    degree = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    want = np.where((q == START) | (q == GOAL), 1, 2)
    return (broken | (route & (degree != want))).reshape(-1, SEQ_LEN)


# ---------------------------------------------------------------- symmetries


def _dihedral_index(k: int) -> np.ndarray:
    x = np.arange(SEQ_LEN).reshape(SIDE, SIDE)
    # The official builder's order (dataset/common.py, dihedral_transform).
    views = (x, np.rot90(x, 1), np.rot90(x, 2), np.rot90(x, 3), np.fliplr(x), np.flipud(x), x.T,
             np.fliplr(np.rot90(x, 1)))
    return np.ascontiguousarray(views[k]).reshape(SEQ_LEN)


# DIHEDRAL_INDEX[k][c]: the source cell of output cell c under transform k.
DIHEDRAL_INDEX = np.stack([_dihedral_index(k) for k in range(8)])
DIHEDRAL_INDEX.flags.writeable = False
INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # rotations by 90 and 270 undo each other; the rest are involutions


def dihedral(grids: np.ndarray, k) -> np.ndarray:
    """Dihedral transform ``k`` (0..7) of each row of ``grids`` [..., 900]; ``k`` may be an
    int or an int array [N] (one transform per row of a 2-D ``grids``).

    Order as in the official builder: 0 identity, 1-3 ``np.rot90`` by 1-3 quarter turns
    (counter-clockwise), 4 left-right flip, 5 up-down flip, 6 transpose, 7 anti-transpose.
    Tokens are not relabelled: walls, S, G and path move together.
    """
    grids = np.asarray(grids)
    if grids.shape[-1] != SEQ_LEN:
        raise ValueError(f"expected rows of {SEQ_LEN} cells, got shape {grids.shape}")
    k = np.asarray(k)
    if not np.issubdtype(k.dtype, np.integer) or ((k < 0) | (k > 7)).any():
        raise ValueError(f"dihedral transform ids must be integers in 0..7, got {k!r}")
    if k.ndim == 0:
        return grids[..., DIHEDRAL_INDEX[int(k)]]
    if grids.ndim != 2 or k.shape != (len(grids),):
        raise ValueError(f"per-row transform ids need grids [N, {SEQ_LEN}] and k [N], got {grids.shape}, {k.shape}")
    return np.take_along_axis(grids, DIHEDRAL_INDEX[k], axis=1)


def dihedral_inverse(grids: np.ndarray, k) -> np.ndarray:
    """Undo ``dihedral(., k)``."""
    k = np.asarray(k)
    if not np.issubdtype(k.dtype, np.integer) or ((k < 0) | (k > 7)).any():
        raise ValueError(f"dihedral transform ids must be integers in 0..7, got {k!r}")
    return dihedral(grids, np.asarray(INVERSE)[k])


def swap_start_goal(tokens: np.ndarray) -> np.ndarray:
    """S and G exchanged (tokens 3 <-> 4), everything else kept: the Augmented-HRM fork's
    second maze pass. An involution; the shortest paths (and so the label) are the same
    cells, since a path from S to G reversed is one from G to S."""
    tokens = np.asarray(tokens)
    out = tokens.copy()
    out[tokens == START] = GOAL
    out[tokens == GOAL] = START
    return out


# ---------------------------------------------------------------- generator


class GeneratedMazes(NamedTuple):
    questions: np.ndarray  # uint8 [N, 900] tokens
    answers: np.ndarray  # uint8 [N, 900] tokens
    ratings: np.ndarray  # int64 [N], moves of the (unique) shortest path


MAX_ATTEMPTS = 1000  # per maze, before the controls are declared unsatisfiable
DEFAULT_OPENINGS = 40


def generate_mazes(
    n: int, seed: int, min_path: int = HARD_MIN_PATH, openings: int = DEFAULT_OPENINGS
) -> GeneratedMazes:
    """``n`` 30x30 mazes with a unique shortest S-G path of at least ``min_path`` moves.

    Method, per maze: a perfect maze (random depth-first backtracker) on the 14x14 lattice
    of odd coordinates, so the border (and the unused row and column 28) is wall; then
    ``openings`` random tries to knock through a lattice wall between two corridors
    (about one try in five opens one; 40 tries leave ~7 loops, which give the solver
    real choices: a perfect maze has one path between any two cells). S is a uniform
    open cell and, from one BFS, G a uniform open cell at least ``min_path`` moves away
    whose shortest path is unique; a new maze is drawn when there is none. The rating
    is the moves of that path, so the lengths follow the maze's distance distribution
    above ``min_path`` (most mazes just above it).

    Not the official data's method (the paper: Lehnert et al.'s generator, i.e. random
    walls, filtered on path length > 110), whose grids have no corridor structure.
    Randomness is splitmix64 seeded from (seed, maze, attempt), so the output depends
    only on the arguments and ``generate_mazes(m, s)`` is the first m rows of
    ``generate_mazes(n, s)``. Raises ValueError for out-of-range controls or when a maze
    is not found within MAX_ATTEMPTS attempts (``min_path`` too large, above ~200, or
    too many ``openings``).
    """
    n = check_int("n", n, 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    min_path = check_int("min_path", min_path, 1, SEQ_LEN)
    openings = check_int("openings", openings, 0)
    questions = np.zeros((n, SEQ_LEN), dtype=np.uint8)
    answers = np.zeros((n, SEQ_LEN), dtype=np.uint8)
    ratings = np.zeros(n, dtype=np.int64)
    if n:
        _jit()
        seed64 = np.uint64(int(seed) & (2**64 - 1))  # negative and huge seeds wrap
        failed = _generate(seed64, np.int64(min_path), np.int64(openings), np.int64(MAX_ATTEMPTS),
                           questions, answers, ratings)
        if failed >= 0:
            raise ValueError(f"no maze with a shortest path of >= {min_path} moves in {MAX_ATTEMPTS} "
                             f"attempts (maze {failed}); min_path or openings is too large for this generator")
    return GeneratedMazes(questions, answers, ratings)
