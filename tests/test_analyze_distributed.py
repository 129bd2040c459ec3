"""``hrm analyze`` under torchrun: 2 CPU processes on gloo share the batches of the traces, the easy
probe, the multistability runs and the landscapes, and rank 0 writes what one process writes (the
per-step trace tables reach rank 0 alone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_analysis import STAGE_ARGS, puzzles, stage_inputs  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def test_two_ranks_on_gloo_give_the_one_process_outputs(stage_inputs, tmp_path):  # noqa: F811
    ckpt, ds = stage_inputs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # An odd number of batches (7 traced puzzles in batches of 4 is 2; the sample's easy probe and
    # multistability chunks too), so a rank also gets no item in the last round.
    args = ["--checkpoint", str(ckpt.parent), "--dataset", str(ds), "--num-threads", "1", *map(str, STAGE_ARGS)]
    one = subprocess.run([sys.executable, "-m", "pipelines.analyze", *args, "--output", str(tmp_path / "one")],
                         cwd=REPO, capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(30500 + os.getpid() % 1000), "-m", "pipelines.analyze", *args,
                          "--output", str(tmp_path / "two")], cwd=REPO, capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    want, got = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert sorted(got) == sorted(want) and "traces.parquet" in got and "figures/landscape_raw30.png" in got
    assert [name for name in want if got[name] != want[name]] == []  # every table, metric, plot and figure


def _share(rank: int, world: int, init: str, queue) -> None:
    import torch.distributed as dist

    from hrm.distributed import Dist, shared_map

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ran = []

        def fn(item):
            ran.append(item)
            return (item, item * item)

        d = Dist(rank=rank, world_size=world)
        plain = list(shared_map(fn, list(range(7)), d))
        split = list(shared_map(lambda i: {"shared": i, "table": [i] * 3}, list(range(5)), d, rank0_only=("table",)))
        queue.put((rank, plain, ran, split))
    finally:
        dist.destroy_process_group()


def test_shared_map_computes_item_i_on_rank_i_mod_world_and_gives_every_rank_all_results(tmp_path):
    """And the keys marked rank0_only go to rank 0 alone."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_share, args=(rank, 2, f"file://{tmp_path / 'rendezvous'}", queue)) for rank in range(2)]
    for p in procs:
        p.start()
    got = {rank: (results, ran, split) for rank, results, ran, split in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(60)
    want = [(i, i * i) for i in range(7)]
    assert got[0][0] == got[1][0] == want  # in order, on every rank
    assert got[0][1] == [0, 2, 4, 6] and got[1][1] == [1, 3, 5]  # 7 items: rank 1 has none in the last round
    # rank0_only: what only rank 0 writes reaches rank 0 alone, whichever rank computed it.
    assert got[0][2] == [{"shared": i, "table": [i] * 3} for i in range(5)]
    assert got[1][2] == [{"shared": i} for i in range(5)]
