#!/usr/bin/env bash
# Evidence for the RNN claims on a 2-core CPU: one budget (150k time steps per stream, 16 streams,
# LSTM 64 units), copy at T = 2 and 4 and repeat copy at T = 4; bptt / dni (+ dni_aux at T = 2); seeds 0, 1.
# Run from the repository root:  bash results/reference/rnn-copy-cpu/run.sh
# (each line is `sgbench train-rnn ... --out DIR`; SGBENCH="python -m sgbench" by default)
set -euo pipefail
sgbench=${SGBENCH:-"python -m sgbench"}
out=results/reference/rnn-copy-cpu/runs
common="--timesteps 150000 --hidden-size 64 --batch-size 16 --threads 1 --device cpu --quiet"
for seed in 0 1; do
  for T in 2 4; do
    for method in bptt dni; do
      $sgbench train-rnn --task copy --method $method --T $T --seed $seed $common --out $out/copy-T$T-$method-seed$seed
    done
  done
  $sgbench train-rnn --task copy --method dni_aux --T 2 --seed $seed $common --out $out/copy-T2-dni_aux-seed$seed
  for method in bptt dni; do
    $sgbench train-rnn --task repeat_copy --method $method --T 4 --seed $seed $common --out $out/repeat_copy-T4-$method-seed$seed
  done
done
