#!/usr/bin/env bash
# Evidence for issue #15 on a 2-core machine: every parallel method at K = 1 and 2 on MNIST FCN-3 at the
# quick tier's settings (300 iterations, Adam lr 1e-4, batch 256, targets 20 / 15 / 10 % test error),
# three repetitions (seeds) each, one CPU thread per worker; cDNI and DNI (the paper's 2 x 1024 SG) with
# both late-SG variants at K = 2; the K = 1 runs of GPipe, 1F1B, DDP and DNI once. Then the parallel
# family's tables and figures.
#   SGBENCH_DATA=/path/to/data bash results/reference/parallel-cpu/run.sh
# For a quiet measurement run it with nothing else on the machine (check `uptime` before and after:
# the load average should stay near the number of workers).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
runs="$here/runs"
common=(--dataset mnist --arch fcn --layers 3 --iterations 300 --lr 1e-4 --eval-every 30 --targets 20,15,10
        --threads 1 --device cpu --tier custom --quiet)
uptime >> "$here/load_before.txt"
# Every method at K = 2 and the K = 1 baselines, all seeds of the cheap runs first. A run that already
# has its metrics.json is kept (an interrupted batch continues; a run itself always restarts).
for seed in 0 1 2; do
  for spec in backprop:1 backprop:2 gpipe:2 1f1b:2 ddp_split:2 ddp_keep:2 cdni:1 cdni:2 cdni-stored:2 \
              dni:2 dni-stored:2; do
    name=${spec%:*}; k=${spec#*:}; method=${name%-stored}
    late=reevaluate; [[ $name == *-stored ]] && late=stored
    out="$runs/mnist-fcn3-$name-k$k-seed$seed"
    [[ -f $out/metrics.json ]] && continue
    sgbench train-parallel "${common[@]}" --method "$method" --late-sg "$late" --workers "$k" --seed "$seed" \
      --out "$out"
  done
done
# The K = 1 runs of the baselines that only differ from backprop at K > 1, and DNI in one process
for spec in gpipe:1 1f1b:1 ddp_split:1 ddp_keep:1 dni:1; do
  name=${spec%:*}; k=${spec#*:}
  out="$runs/mnist-fcn3-$name-k$k-seed0"
  [[ -f $out/metrics.json ]] && continue
  sgbench train-parallel "${common[@]}" --method "$name" --workers "$k" --seed 0 --out "$out"
done
uptime > "$here/load_after.txt"
sgbench aggregate parallel "$runs"/*/metrics.json --tier custom --out "$here/tables"
sgbench figures parallel --tier custom --tables "$here/tables" --out "$here/figures"
