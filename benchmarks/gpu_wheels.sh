#!/usr/bin/env bash
# The packages benchmarks/gpu_check.py imports that the lent GPU machines' image lacks, as CPython 3.12
# x86-64 wheels in .whl/ at the versions constraints.txt pins (docs/gpu.md: how a session carries them).
# The list: the distributions `hrm` raw..shard, train, evaluate and analyze import (python -X importtime),
# less the image's packages (the device tool's KINDS.md, read 2026-12-07).
set -euo pipefail
cd "$(dirname "$0")/.."
MISSING="annotated-types cffi dill dvc dvc-render dvc-studio-client dvclive flatten-dict funcy httpcore2 httpx2
pandera polars polars-runtime-32 pycparser pydantic pydantic-core pydot ruamel.yaml sniffio truststore typeguard
typing-inspection voluptuous wcwidth"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for name in $MISSING; do
  pin=$(grep -i -E "^${name//[-_.]/[-_.]}==" constraints.txt || true)
  [[ -n "$pin" ]] || { echo "gpu_wheels: $name is not pinned in constraints.txt" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
du -sh .whl
