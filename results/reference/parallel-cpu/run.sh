#!/usr/bin/env bash
# Evidence for issue #6 on this project's 2-core reference machine: single-process backprop, the locked
# 2-stage pipeline and 2-stage update-unlocked cDNI on MNIST FCN-3 (the quick tier's settings: 600
# iterations, lr 1e-4), three repetitions (seeds) each, one CPU thread per worker, nothing else running;
# DNI with the paper's 2x1024 SG models once, shorter. Then the parallel family's tables and figure.
#   SGBENCH_DATA=../shared/data bash results/reference/parallel-cpu/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
runs="$here/runs"
common=(--dataset mnist --arch fcn --layers 3 --lr 1e-4 --target-error 10 --threads 1 --device cpu
        --tier custom --quiet)
for seed in 0 1 2; do
  for spec in backprop:1 backprop:2 cdni:1 cdni:2; do
    method=${spec%:*}; k=${spec#*:}
    sgbench train-parallel "${common[@]}" --iterations 600 --eval-every 30 --method "$method" --workers "$k" --seed "$seed" \
      --out "$runs/mnist-fcn3-$method-k$k-seed$seed"
  done
done
# DNI with the paper's 2x1024 SG models: one repetition of 300 iterations (a step costs ~16 backprop steps).
for k in 1 2; do
  sgbench train-parallel "${common[@]}" --iterations 300 --eval-every 30 --method dni --workers "$k" --seed 0 \
    --out "$runs/mnist-fcn3-dni-k$k-seed0"
done
sgbench aggregate parallel "$runs"/*/metrics.json --tier custom --out "$here/tables"
sgbench figures parallel --tier custom --tables "$here/tables" --out "$here/figures"
