#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU machine (the device tool; docs/gpu.md): installs the carried
# wheels (.whl/, made by benchmarks/gpu_wheels.sh), runs every phase with the official code when
# .official/ holds a clone of sapientinc/HRM, and leaves gpu_check.json and the log in $OUT. ARC's and TRM's
# phases are calls of their own: `bash benchmarks/gpu_check_device.sh --phases arc` and `--phases trm` (each
# its own gpu_check.json).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check_device: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
official=()
[[ -f .official/models/hrm/hrm_act_v1.py ]] && official=(--official .official)
# TRM's reference tree (SamsungSAILMontreal/TinyRecursiveModels, its einops in .trm-reference/_deps), for the
# trm phase's side-by-side figure; kept out of the repository like .official.
[[ -f .trm-reference/models/recursive_reasoning/trm.py ]] && official+=(--trm-reference .trm-reference)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out /tmp/gpu-check "${official[@]}" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
cp /tmp/gpu-check/gpu_check.json "$OUT/" 2>/dev/null
exit "$rc"
