#!/usr/bin/env bash
# bench/gpu.py on a lent GPU machine, in one call (issue 15, part 2).
#
# The device machine has its own Python 3.12 with a CUDA build of torch, numba, tensorboard,
# safetensors and tqdm, and no network. Run here first, once, in the repository root:
#
#     bench/gpu_device.sh --fetch-wheels
#
# It downloads the wheels the device lacks (crc32c) into .whl/ (ignored by git), to travel
# with the working tree: the device tool's `carry: [".whl"]`. Then on the device:
#
#     bench/gpu_device.sh [bench/gpu.py options]
#
# installs the wheels and the project (`pip install --no-deps -e .`, nothing fetched) and
# runs bench/gpu.py with a time budget; bench/gpu.py writes the synthetic frame-level
# TFRecords it feeds from (the seed's format: 1024 + 128 features, 60-300 frames, 4716
# classes; --data GLOB reads others) and reads them once into the page cache. The whole call
# takes about 8 minutes: give the device run timeout_s=600. Output: $OUT/gpu.txt and
# $OUT/gpu.json ($OUT: the device tool's folder, else /tmp/yt8m-gpu/out).
# Environment: PYTHON (default python3), VIDEOS (synthetic videos, default 2000),
# BUDGET_S (no bench row starts after it, default 400). Arguments go to bench/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(crc32c==2.9.post0)  # what the device's Python lacks of the project's dependencies

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    exit 0
fi

WORK=${WORK:-/tmp/yt8m-gpu}
OUT=${OUT:-$WORK/out}
mkdir -p "$WORK" "$OUT"
start=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
(cd "$WORK" && "$PY" -c 'import yt8m, crc32c, numba, tensorboard, safetensors, tqdm, torch
print("installed", yt8m.__file__, "torch", torch.__version__, "cuda", torch.cuda.is_available())')
echo "set-up: $(($(date +%s) - start)) s"

PYTHONUNBUFFERED=1 "$PY" bench/gpu.py --videos "${VIDEOS:-2000}" --budget_s "${BUDGET_S:-400}" \
    --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.txt"
echo "total: $(($(date +%s) - start)) s"
