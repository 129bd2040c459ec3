"""Benchmark: the streaming loader (hrm.data) on the paper-size hint dataset.

    python benchmarks/loader.py [--dataset DIR] [--workdir DIR] [--epochs N] [--hf-epochs N]

Without ``--dataset``, builds the paper-size hint dataset first (not timed) with the real
stages, as benchmarks/datasets.py does: 1,000 groups x 2,002 puzzles = 2,002,000 train
examples (subsample 1000, augment --num-aug 1000, hints, shard). Then prints:

1. Construction: opening the train split with ``verify=True`` (sha256 of every shard) and without.
2. Training throughput on one core (``torch.set_num_threads(1)``), global batch 768, over
   ``--epochs`` epochs (blocks of ``--epochs-per-block``), every batch consumed (both
   tensors summed): ``PuzzleDataset.train_batches`` (the trainer's path), then the same
   stream through ``datasets.IterableDataset`` (``to_iterable_dataset``): Arrow format +
   ``arrow_to_batch`` (int32), and the plain ``"torch"`` format (int64, row by row).
   Each figure is the median of ``--repeat`` runs after a first (cold) run, in wall-clock
   and in CPU time (the CPU figure is the one-core rate when the machine is shared).
3. Streaming memory, each in a fresh process: a full in-order pass over all 2,002,000
   train examples (``eval_batches``, batch 768), and the same through the HF iterable
   dataset; RSS (VmRSS) and anonymous memory (RssAnon) above the interpreter's baseline
   (after imports, before opening the dataset), sampled every 50 batches, plus the peak
   (VmHWM). Memory-mapped shard pages that were read count in RSS as RssFile: they are
   clean, file-backed and reclaimable; RssAnon is what the loader itself allocates.

Reference: the fork's numpy memmap loader does about 32,000 examples/s on this machine
(the fork = the Augmented HRM paper's code, README "Reference code").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The script's own folder holds benchmarks/datasets.py, which would shadow Hugging Face `datasets`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))
BATCH = 768


# --------------------------------------------------------------------------- dataset


def build_dataset(workdir: Path) -> Path:
    """The paper-size hint dataset, by the real stages (in this process)."""
    spec = importlib.util.spec_from_file_location("bench_datasets", REPO / "benchmarks" / "datasets.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    t0 = time.perf_counter()
    bench.make_raw(workdir)
    for _, args in bench.STAGES:
        bench.run_in_process(args, workdir)
    root = workdir / "data" / "datasets"
    name = json.loads((root / "datasets.json").read_text())["hint"]
    print(f"built {root / name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return root / name


# --------------------------------------------------------------------------- memory (own process)


def proc_status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM in bytes, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def memory_pass(dataset: Path, path: str) -> None:
    """One full in-order pass over the train split; prints a JSON line of memory figures."""
    import torch

    import hrm.data  # noqa: F401  (imports belong to the baseline)
    import datasets  # noqa: F401

    torch.set_num_threads(1)
    base = proc_status()
    from hrm.data import PuzzleDataset, arrow_to_batch

    ds = PuzzleDataset(dataset, "train", verify=False)
    opened = proc_status()
    if path == "loader":
        batches = ds.eval_batches(batch_size=BATCH)
    else:
        batches = (arrow_to_batch(t) for t in
                   ds.to_iterable_dataset(mode="eval").with_format("arrow").iter(batch_size=BATCH))
    peak_rss = peak_anon = 0
    rows = checksum = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        rows += int(batch["mask"].sum()) if "mask" in batch else len(batch["inputs"])
        checksum += int(batch["inputs"].sum())
        if i % 50 == 0:
            now = proc_status()
            peak_rss, peak_anon = max(peak_rss, now["VmRSS"]), max(peak_anon, now["RssAnon"])
    seconds = time.perf_counter() - t0
    end = proc_status()
    peak_rss, peak_anon = max(peak_rss, end["VmRSS"]), max(peak_anon, end["RssAnon"])
    print(json.dumps({
        "path": path, "rows": rows, "seconds": seconds, "checksum": checksum,
        "baseline_rss": base["VmRSS"], "baseline_anon": base["RssAnon"],
        "opened_rss": opened["VmRSS"] - base["VmRSS"], "opened_anon": opened["RssAnon"] - base["RssAnon"],
        "peak_rss": peak_rss - base["VmRSS"], "peak_anon": peak_anon - base["RssAnon"],
        "end_rss": end["VmRSS"] - base["VmRSS"], "end_anon": end["RssAnon"] - base["RssAnon"],
        "end_file": end["RssFile"] - base["RssFile"], "hwm": end["VmHWM"] - base["VmRSS"],
    }))


# --------------------------------------------------------------------------- throughput


def consume(batch) -> int:
    return int(batch["inputs"].sum()) + int(batch["labels"].sum())


def time_loader(ds, epochs: int, epochs_per_block: int, seed: int) -> tuple[int, float, float]:
    rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for block in range(epochs // epochs_per_block):
        for batch in ds.train_batches(global_batch_size=BATCH, seed=seed, block=block,
                                      epochs_per_block=epochs_per_block):
            consume(batch)
            rows += batch["inputs"].shape[0]
    return rows, time.perf_counter() - t0, time.process_time() - c0


def time_hf(ds, epochs: int, epochs_per_block: int, seed: int, fmt: str) -> tuple[int, float, float]:
    from hrm.data import arrow_to_batch

    rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for block in range(epochs // epochs_per_block):
        ids = ds.to_iterable_dataset(global_batch_size=BATCH, seed=seed, block=block,
                                     epochs_per_block=epochs_per_block).with_format(fmt)
        for batch in ids.iter(batch_size=BATCH):
            if fmt == "arrow":
                batch = arrow_to_batch(batch)
            consume(batch)
            rows += batch["inputs"].shape[0]
    return rows, time.perf_counter() - t0, time.process_time() - c0


def report(name: str, runs: list[tuple[int, float, float]]) -> float:
    """Median over the runs after the first (cold) one: wall-clock and CPU-time rates."""
    wall = [r / w for r, w, _ in runs]
    cpu = [r / c for r, _, c in runs]
    warm = slice(1, None) if len(runs) > 1 else slice(None)
    median, median_cpu = statistics.median(wall[warm]), statistics.median(cpu[warm])
    print(f"  {name:<48} {median:>11,.0f} ex/s wall, {median_cpu:>11,.0f} ex/s CPU   "
          f"(cold run {wall[0]:,.0f} wall; {runs[0][0]:,} examples per run)")
    return median


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, help="A dataset directory (hint, paper size); default: build one.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hrm-bench-loader"),
                        help="Where to build the dataset when --dataset is not given (kept for reuse).")
    parser.add_argument("--epochs", type=int, default=1000, help="Epochs per timed run of train_batches.")
    parser.add_argument("--epochs-per-block", type=int, default=100)
    parser.add_argument("--hf-epochs", type=int, default=200, help="Epochs per timed run of the HF paths.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-pass", choices=["loader", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_pass:
        memory_pass(args.dataset, args.memory_pass)
        return

    dataset = args.dataset
    if dataset is None:
        done = args.workdir / "data" / "datasets" / "datasets.json"
        if done.is_file():
            dataset = args.workdir / "data" / "datasets" / json.loads(done.read_text())["hint"]
        else:
            dataset = build_dataset(args.workdir)

    import torch

    from hrm.data import PuzzleDataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = PuzzleDataset(dataset, "train", verify=True)
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    PuzzleDataset(dataset, "train", verify=False)
    t_open = time.perf_counter() - t0
    shard_bytes = sum(r["bytes"] for r in ds.manifest["splits"]["train"]["shards"])
    print(f"dataset: {dataset}")
    print(f"  train: {ds.num_examples:,} examples, {ds.num_groups:,} groups, "
          f"{len(ds.manifest['splits']['train']['shards'])} shards, {mib(shard_bytes)}")
    print(f"  open: {t_open:.2f} s; open with verify (sha256 of every shard): {t_verify:.2f} s")

    print(f"\ntraining stream, one core, global batch {BATCH}, blocks of {args.epochs_per_block} epochs, "
          f"tensors consumed (summed); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")
    fast = report(f"train_batches ({args.epochs} epochs)",
                  [time_loader(ds, args.epochs, args.epochs_per_block, seed) for seed in range(args.repeat + 1)])
    hf_epb = min(args.epochs_per_block, args.hf_epochs)
    report(f"HF IterableDataset, arrow + arrow_to_batch ({args.hf_epochs} ep)",
           [time_hf(ds, args.hf_epochs, hf_epb, seed, "arrow") for seed in range(args.repeat + 1)])
    report(f"HF IterableDataset, format torch ({args.hf_epochs} ep)",
           [time_hf(ds, args.hf_epochs, hf_epb, seed, "torch") for seed in range(2)])
    print(f"  target >= 100,000 ex/s: {'met' if fast >= 100_000 else 'NOT met'}; the fork's numpy memmap "
          f"loader: ~32,000 ex/s")

    print(f"\nstreaming memory: one in-order pass over all {ds.num_examples:,} train examples "
          f"(fresh process each; above the baseline after imports):")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for path, label in (("loader", "eval_batches(batch_size=768)"), ("hf", "HF IterableDataset (arrow)")):
        out = subprocess.run([sys.executable, __file__, "--dataset", str(dataset), "--memory-pass", path],
                             env=env, capture_output=True, text=True, check=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        print(f"  {label:<30} {m['rows']:,} rows in {m['seconds']:.1f} s ({m['rows'] / m['seconds']:,.0f} ex/s); "
              f"baseline RSS {mib(m['baseline_rss'])}")
        print(f"  {'':<30} RSS growth: after open {mib(m['opened_rss'])}, peak {mib(m['peak_rss'])}, "
              f"end {mib(m['end_rss'])} (of which mapped file pages {mib(m['end_file'])}); "
              f"VmHWM {mib(m['hwm'])}")
        print(f"  {'':<30} anonymous (RssAnon) growth: after open {mib(m['opened_anon'])}, "
              f"peak {mib(m['peak_anon'])}, end {mib(m['end_anon'])}")
        ok = m["hwm"] < 2**30
        print(f"  {'':<30} under 1 GiB above baseline: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
