#!/usr/bin/env bash
# Issue #17's GPU evidence in one call of a lent GPU machine (one H200, 16 cores, 10 minutes a command):
#   1. the CUDA tests: tests/test_fast.py (captured step = eager step) and tests/test_dni.py (oracle on cuda)
#   2. benchmarks/step_speed.py on CUDA: eager / fused / captured / stacked seeds, launches and bounds
#   3. the `gpu` tier (MNIST FCN Table 1, 48 runs; 3 seeds per job, stacked, when the benchmark's stacked
#      rows ran, else one per job) through benchmarks/gpu_tier.py, cut at a deadline
# Everything lands in $OUT (the device tool's folder that comes back; else ./gpu-check-out): copy it to
# results/reference/gpu-h200/ and aggregate there (see the end of this file).
#
# The machine reaches no network and runs its own python3 (torch 2.11 there, not this project's pin).
# Prepare on this side first, in the repository root (both folders are ignored, and travel with carry):
#   mkdir -p .devdata && cp -r "$SGBENCH_DATA/MNIST" .devdata/         # MNIST/raw, 11 MB
#   grep -qx '/.devdata/' .git/info/exclude || echo /.devdata/ >> .git/info/exclude
#   grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
# then call the device tool's run with
#   command: bash benchmarks/gpu_check.sh    carry: [".devdata", ".whl"]    timeout_s: 600
# Budget inside the 600 s: tests <= 120 s, benchmark <= 150 s, tier <= the rest less 30 s for packing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SGBENCH_DATA="$PWD/.devdata" SGBENCH_CACHE=/tmp/sgbench-cache
PY=python3
left() { echo $(( 570 - ($(date +%s) - START) )); }

if ! $PY -c "import jsonschema" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
  $PY -c "import importlib.metadata as m, jsonschema, yaml; print('jsonschema', m.version('jsonschema'))" \
    || echo "jsonschema missing: carry .whl"
  git log -1 --format='commit %H %s' 2>/dev/null; git status --short 2>/dev/null | head -20
  ls .devdata/MNIST/raw 2>/dev/null || echo "no .devdata/MNIST/raw: the tier cannot run"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== CUDA tests"
# the CUDA cases only (their CPU twins ran where the branch was tested): test_fast's captured = eager,
# test_dni's oracle step on cuda
timeout 120 $PY -m pytest tests/test_fast.py tests/test_dni.py -k cuda -v -rs -p no:cacheprovider > "$OUT/tests.txt" 2>&1
echo "tests exit $?"; tail -5 "$OUT/tests.txt"

echo "== step_speed"
timeout 150 $PY benchmarks/step_speed.py --device cuda --setups mnist-fcn6,mnist-fcn3,cifar-cnn3 \
  --methods backprop,dni,cdni --steps 50 --repeats 3 --json "$OUT/step_speed.json" > "$OUT/step_speed.txt" 2>&1
echo "step_speed exit $?"; cat "$OUT/step_speed.txt"

per_job=1
grep "^mnist-fcn6  dni       stacked" "$OUT/step_speed.txt" | grep -qv FAILED && per_job=3
echo "== gpu tier ($(left) s left, $per_job seeds per job)"
runs=/tmp/gpu-tier-runs
rm -rf "$runs"
$PY benchmarks/gpu_tier.py --tier gpu --out "$runs" --jobs 4 --seeds-per-job "$per_job" \
  --deadline-s "$(( $(left) - 30 ))" > "$OUT/tier.txt" 2>&1
echo "tier exit $?"; tail -3 "$OUT/tier.txt"
(cd "$runs" && tar czf "$OUT/gpu-tier-runs.tar.gz" --exclude='checkpoint*.pt' .)

# Per method and depth: test error over the seeds that completed, and the fast path's speed.
$PY - "$runs" > "$OUT/summary.txt" 2>&1 <<'EOF'
import json, statistics, sys
from pathlib import Path
rows = {}
for f in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    m = json.loads(f.read_text())
    c = m["config"]
    rows.setdefault((c["layers"], c["method"]), []).append((m["final"]["test_error"], m["timing"]["steps_per_s"]))
# steps/s: of the job (a stacked job trains its seeds in each step)
print(f"{'net':<6} {'method':<9} {'seeds':>5} {'test error % (mean, min-max)':>30} {'steps/s':>9}")
for (layers, method), v in sorted(rows.items()):
    errs = [e for e, _ in v]
    print(f"fcn{layers:<3} {method:<9} {len(v):>5} {statistics.mean(errs):>12.2f} ({min(errs):.2f}-{max(errs):.2f})"
          f"{'':>8} {statistics.mean(s for _, s in v):>9.1f}")
EOF
cat "$OUT/summary.txt"
echo "== done in $(( $(date +%s) - START )) s"
# Here afterwards: mkdir -p results/reference/gpu-h200/runs && tar xzf gpu-tier-runs.tar.gz -C results/reference/gpu-h200/runs
# and `sgbench aggregate feedforward results/reference/gpu-h200/runs/*/metrics.json --tier gpu --out ...`.
