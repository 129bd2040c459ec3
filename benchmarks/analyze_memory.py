"""Benchmark: `hrm analyze`'s memory estimate (hrm.analysis.estimate_memory) against real runs.

    python benchmarks/analyze_memory.py [--checkpoint data/models/hrm] [--dataset data/datasets]
                                        [--grid 6x16,6x200,6x800,39x200,39x400]

Each point SAMPLExSEGMENTS runs `hrm analyze` in a fresh process (multistability and the easy
probe off, one landscape puzzle, one thread) and measures the growth of its resident memory from
the moment the stage makes its estimate (model loaded, before any work) to the run's peak: Linux's
/proc/self/clear_refs resets the peak (VmHWM) there, so imports and loading do not count. Prints
measured growth, the estimate and their ratio (the estimate should be >= the measurement).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs `hrm ARGS` (analyze); prints GROWTH <bytes> (VmHWM at the end - VmRSS at the estimate),
# ESTIMATE <bytes> (the stage's own estimate, as it made it) and, on CUDA, DEVICE_PEAK <bytes> (the
# GPU's peak allocation from the estimate on).
MEASURE = r"""
import re, sys
import torch
import hrm.analysis as analysis
import pipelines.analyze as stage
from pipelines.cli import cli

def status():
    text = open("/proc/self/status").read()
    return {k: int(v) * 1024 for k, v in re.findall(r"(VmHWM|VmRSS):\s+(\d+)", text)}

estimate, check, made, start = analysis.estimate_memory, stage._check_memory, {}, {}
def recorded_estimate(*args, **kwargs):
    made["estimate"] = estimate(*args, **kwargs)
    return made["estimate"]
def measured_check(*args, **kwargs):
    check(*args, **kwargs)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    start.update(status())
analysis.estimate_memory, stage._check_memory = recorded_estimate, measured_check
cli(sys.argv[1:], standalone_mode=False)
print("GROWTH", status()["VmHWM"] - start["VmRSS"], file=sys.stderr)
print("ESTIMATE", made["estimate"].bytes, file=sys.stderr)
if torch.cuda.is_initialized():
    print("DEVICE_PEAK", torch.cuda.max_memory_allocated(), file=sys.stderr)
"""

LIGHT = ["--easy-k", "none", "--shifts", "0", "--landscape-radius", "1", "--no-flow", "--num-threads", "1",
         "--no-progress"]


def measure_growth(args: list[str], cwd: str | Path | None = None) -> dict[str, int | None]:
    """`hrm ARGS` in a subprocess: {"growth": its resident memory growth from its memory estimate to its
    peak, "estimate": that estimate, "device_peak": the GPU's peak allocation (None off CUDA)}, in bytes."""
    r = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, timeout=1800, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    found = dict(line.split()[:2] for line in r.stderr.splitlines()
                 if line.startswith(("GROWTH", "ESTIMATE", "DEVICE_PEAK")))
    return {"growth": int(found["GROWTH"]), "estimate": int(found["ESTIMATE"]),
            "device_peak": int(found["DEVICE_PEAK"]) if "DEVICE_PEAK" in found else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="data/models/hrm")
    ap.add_argument("--dataset", default="data/datasets")
    ap.add_argument("--grid", default="6x16,6x200,6x800,39x200,39x400", help="SAMPLExSEGMENTS,...")
    a = ap.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux (/proc/self/clear_refs)")
    print(f"{'sample x segments':>18} {'measured':>10} {'estimated':>10} {'est/meas':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for point in a.grid.split(","):
            sample, segments = (int(v) for v in point.split("x"))
            args = ["analyze", "--checkpoint", a.checkpoint, "--dataset", a.dataset, "-o", f"{tmp}/{point}",
                    "--sample", str(sample), "--segments", str(segments), *LIGHT]
            found = measure_growth(args)
            measured, estimated = found["growth"], found["estimate"]
            print(f"{point:>18} {measured / 1e6:>8.0f}MB {estimated / 1e6:>8.0f}MB {estimated / measured:>9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
