#!/usr/bin/env bash
# The seven runs of this folder, one after another, on one torch thread each.
set -euo pipefail
cd "$(dirname "$0")"
export SGBENCH_DATA=${SGBENCH_DATA:-../../../../shared/data}
common=(--dataset mnist --arch fcn --layers 3 --seed 0 --iterations 2000 --lr 1e-4 --threads 1 --quiet)
run() { local name=$1; shift; sgbench train-ff "${common[@]}" "$@" --out "runs/$name"; }
run mnist-fcn3-backprop --method backprop
run mnist-fcn3-cdni     --method cdni
run mnist-fcn3-dni      --method dni
run mnist-fcn3-cunlock  --method cunlock
run mnist-fcn3-unlock   --method unlock
run mnist-fcn3-dni-p0.5 --method dni --update-prob 0.5
run mnist-fcn3-dni-p0.2 --method dni --update-prob 0.2
