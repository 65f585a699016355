#!/usr/bin/env bash
# The CUDA checks, as one script for a lent GPU machine (see README "Benchmarks"): AMP training throughput,
# inference speed and memory up to a 10-minute song, a profile of where step / U-Net / vocoder time goes, the
# GPU-marked tests (under 10 minutes in all). Results go to $OUT (or ./bench/out).
# Packages missing on the GPU image travel as wheels in .whl/ (python 3.12), installed to /tmp/site.
set -u
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 GVC_TEST_CACHE=/tmp/gvc-cache
nvidia-smi -L | tee "$OUT/gpu.txt"
timeout 120 python3 bench/bench_train.py --device cuda --steps 10 --warmup 3 --precision fp32 bf16 \
  --out "$OUT/bench_train.json" > "$OUT/bench_train.log" 2>&1; echo "bench_train rc=$?"
timeout 140 python3 bench/bench_infer.py --device cuda --seconds 10 60 600 > "$OUT/bench_infer.json" \
  2> "$OUT/bench_infer.log"; echo "bench_infer rc=$?"
timeout 90 python3 bench/bench_infer.py --device cuda --half --seconds 10 600 > "$OUT/bench_infer_half.json" \
  2> "$OUT/bench_infer_half.log"; echo "bench_infer --half rc=$?"
timeout 70 python3 bench/bench_infer.py --device cuda --half --batch 8 --seconds 600 --no_e2e \
  > "$OUT/bench_infer_batch8.json" 2> "$OUT/bench_infer_batch8.log"; echo "bench_infer --half --batch 8 rc=$?"
timeout 90 python3 bench/gpu_profile.py --device cuda > "$OUT/gpu_profile.json" 2> "$OUT/gpu_profile.log"; \
  echo "gpu_profile rc=$?"
timeout 60 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -5
tail -c 1500 "$OUT/bench_train.log"; cat "$OUT/bench_infer.json" | head -c 3000; head -c 2000 "$OUT/bench_infer_half.json"; head -c 1500 "$OUT/bench_infer_batch8.json"; head -c 2500 "$OUT/gpu_profile.json"
