#!/usr/bin/env bash
# Evidence for issue #8 on the 2-core reference CPU: one run at a time, 1 torch thread each, in
# priority order; a run is skipped when the deadline (epoch seconds, $DEADLINE) is too close.
# Budget: MNIST FCN-6, 1000 iterations, Adam lr 1e-4 (/10 at 60 % and 80 %), batch 256, paper SG models,
# fidelity probe every 100 steps on the first 256 training images.
set -u
cd "$(dirname "$0")"
export SGBENCH_DATA=${SGBENCH_DATA:-/work/shared/data}
DEADLINE=${DEADLINE:-0}
COMMON="--dataset mnist --arch fcn --layers 6 --iterations 1000 --lr 1e-4 --threads 1 --device cpu --tier custom --quiet"
run() {  # name, expected seconds, flags...
  local name=$1 need=$2; shift 2
  if [ -f "runs/$name/metrics.json" ]; then return; fi
  if [ "$DEADLINE" -gt 0 ] && [ $(( $(date +%s) + need )) -gt "$DEADLINE" ]; then echo "skip $name (deadline)"; return; fi
  local t0=$(date +%s)
  sgbench train-ff $COMMON "$@" --out "runs/$name" && echo "$name $(( $(date +%s) - t0 )) s"
}
P="--probe-every 100 --probe-size 256"
run dni-every-seed0 330 --method dni --seed 0 $P
run backprop-seed0 40 --method backprop --seed 0
run backprop-seed1 40 --method backprop --seed 1
for s in 0 1; do
  run cdni-every-seed$s 60 --method cdni --seed $s $P
  run cdni-every_second-seed$s 50 --method cdni --seed $s --dni-placement every_second $P
  run cdni-middle-seed$s 40 --method cdni --seed $s --dni-placement middle $P
  run cdni-w0.1-seed$s 60 --method cdni --seed $s --warmup 0.1 $P
  run cdni-w0.3-seed$s 60 --method cdni --seed $s --warmup 0.3 $P
done
run dni-middle-seed0 120 --method dni --seed 0 --dni-placement middle $P
run dni-every_second-seed0 200 --method dni --seed 0 --dni-placement every_second $P
run dni-w0.3-seed0 300 --method dni --seed 0 --warmup 0.3 $P
run dni-w0.1-seed0 320 --method dni --seed 0 --warmup 0.1 $P
# SG-model ablation (D4), added after the runs above: hidden layers 0 / 1 / 2 with and without the label
# (DNI 2 and cDNI 0 hidden layers are the runs above), and the SG-loss weight; seed 0, ~10 CPU-minutes
run dni-sgh0-seed0 45 --method dni --seed 0 --sg-hidden-layers 0 $P
run cdni-sgh1-seed0 110 --method cdni --seed 0 --sg-hidden-layers 1 $P
run cdni-sgw0.1-seed0 45 --method cdni --seed 0 --sg-loss-weight 0.1 $P
run cdni-sgw10-seed0 45 --method cdni --seed 0 --sg-loss-weight 10 $P
run dni-sgh1-seed0 110 --method dni --seed 0 --sg-hidden-layers 1 $P
run cdni-sgh2-seed0 260 --method cdni --seed 0 --sg-hidden-layers 2 $P
run dni-every-seed1 330 --method dni --seed 1 $P
run dni-middle-seed1 120 --method dni --seed 1 --dni-placement middle $P
run dni-every_second-seed1 200 --method dni --seed 1 --dni-placement every_second $P
run dni-w0.3-seed1 300 --method dni --seed 1 --warmup 0.3 $P
run dni-w0.1-seed1 320 --method dni --seed 1 --warmup 0.1 $P
sgbench aggregate diagnostics runs/*/metrics.json --tier custom --out tables
sgbench figures diagnostics --tier custom --tables tables --out figures
