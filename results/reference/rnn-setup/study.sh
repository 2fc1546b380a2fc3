#!/usr/bin/env bash
# The set-up study of issue #24 (README.md): one run at a time, each appended to study.csv as it ends.
# usage: study.sh PART   (PART: bptt | dni | long | million | width | anchor-512[-300k] | lstm-512-300k[-dni] | sg-rate; run from a checkout whose sgbench is on PYTHONPATH)
# A run whose metrics.json exists is not trained again, and a run already in study.csv is not added
# again (rerun the script to finish an interrupted part).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CSV=$HERE/study.csv
[ -f "$CSV" ] || echo "setup,T,method,seed,timesteps,largest_length,bits_per_sequence,timesteps_per_s,wall_s,commit,flags" > "$CSV"

# The base set-up: the quick tier's (copy, paper layout, lengths drawn up to the level, 16 desynchronised
# streams, LSTM 64, forget bias 1, Adam 1e-3, no clipping, 0.15 bits per sequence over 100 episodes).
BASE=(--task copy --hidden-size 64 --batch-size 16 --device cpu --threads 1 --tier custom --quiet)

run() {  # setup T method seed timesteps [extra flags...]
    local setup=$1 T=$2 method=$3 seed=$4 steps=$5
    shift 5
    local out=$HERE/runs/$setup-T$T-$method-seed$seed
    if [ ! -f "$out/metrics.json" ]; then
        nice -n 10 sgbench train-rnn "${BASE[@]}" --T "$T" --method "$method" --seed "$seed" --timesteps "$steps" \
            "$@" --out "$out"
    fi
    grep -q "^$setup,$T,$method,$seed," "$CSV" || python - "$setup" "$out/metrics.json" "$*" >> "$CSV" <<'PY'
import json, sys
setup, path, flags = sys.argv[1:]
m = json.load(open(path))
c, f, t = m["config"], m["final"], m["timing"]
bps = "" if f["bits_per_sequence"] is None else f"{f['bits_per_sequence']:.3f}"
print(f"{setup},{c['T']},{c['method']},{c['seed']},{c['timesteps']},{f['largest_length_solved']},{bps},"
      f"{t['timesteps_per_s']:.0f},{t['wall_time_s']:.0f},{m['meta']['git_commit'][:7]},{flags}")
PY
}

case "${1:-}" in
bptt)
    # the sanity anchor: a window that holds whole episodes up to N = 10 (T >= 2N + 2), with the
    # threshold in bits per sequence (the tiers') and per output vector
    for seed in 0 1; do run anchor 22 bptt $seed 150000; done
    for seed in 0 1; do run anchor-per-vector 22 bptt $seed 150000 --threshold-unit vector; done
    # the anchor fails (length 4): one factor at a time there first (one seed each: CPU)
    run anchor-fixed-lengths 22 bptt 0 150000 --schedule fixed
    run anchor-lstm-256 22 bptt 0 150000 --hidden-size 256
    # one factor at a time at T = 4, a fixed budget; the anchor's best factor (width) first
    for seed in 0 1; do run base 4 bptt $seed 60000; done
    for seed in 0 1; do run base 4 dni $seed 60000; done
    for seed in 0 1; do run lstm-256 4 bptt $seed 60000 --hidden-size 256; done
    run anchor-lstm-256 22 bptt 1 150000 --hidden-size 256
    for seed in 0 1; do run per-vector 4 bptt $seed 60000 --threshold-unit vector; done
    for seed in 0 1; do run legacy-lag 4 bptt $seed 60000 --layout legacy; done
    for seed in 0 1; do run forget-bias-3 4 bptt $seed 60000 --forget-bias 3; done
    for seed in 0 1; do run clip-1 4 bptt $seed 60000 --clip 1; done
    for seed in 0 1; do run fixed-lengths 4 bptt $seed 60000 --schedule fixed; done
    ;;
dni)
    for seed in 0 1; do run per-vector 4 dni $seed 60000 --threshold-unit vector; done
    ;;
long)
    # the anchor's best factor with twice the budget: does BPTT reach N = 10 with whole episodes in a window?
    run anchor-lstm-256-300k 22 bptt 0 300000 --hidden-size 256
    ;;
million)
    # the next measurement (README, "What it says"): LSTM 256 at T = 2..5 with 10^6 time steps per stream,
    # BPTT and DNI: does truncated BPTT pass T - 1 given a long budget, and DNI pass BPTT? T = 4 first,
    # one seed of each method, then the other T, then a second seed (~20-36 min per run on one core)
    for seed in 0 1; do
        for T in 4 2 3 5; do for method in bptt dni; do run lstm-256-1M "$T" "$method" "$seed" 1000000 --hidden-size 256; done; done
    done
    ;;
width)
    # factors the first parts left untried: LSTM 512 (at T = 4 and the whole-episode anchor) and 64 streams
    for seed in 0 1; do run lstm-512 4 bptt $seed 60000 --hidden-size 512; done
    for seed in 0 1; do run streams-64 4 bptt $seed 60000 --batch-size 64; done
    run anchor-lstm-512 22 bptt 0 150000 --hidden-size 512
    ;;
anchor-512)
    # LSTM 512 passed 9 in the anchor's 150k steps (LSTM 256: 7): a second seed, and twice the budget
    run anchor-lstm-512 22 bptt 1 150000 --hidden-size 512
    ;;
anchor-512-300k)
    run anchor-lstm-512-300k 22 bptt 0 300000 --hidden-size 512
    ;;
lstm-512-300k)
    # the width at which the anchor passes (11 in 300k), at T = 4 with the anchor's budget
    for seed in 0 1; do run lstm-512-300k 4 bptt $seed 300000 --hidden-size 512; done
    ;;
lstm-512-300k-dni)
    # DNI beside lstm-512-300k's BPTT (3, 3): the same width, T and budget, the SG at its own 1e-5
    for seed in 0 1; do run lstm-512-300k 4 dni $seed 300000 --hidden-size 512 & done
    wait
    ;;
sg-rate)
    # the rnn tier's copy cell at T = 4 (LSTM 256, 100k steps): its linear SG predicts the future gradient
    # (held-out cosine ~0.26) where the trained SG at sg_lr 1e-5 does not (~0): a faster SG rate, between
    # 1e-5 and the 1e-3 that diverged?
    for lr in 1e-4 3e-4; do run rnn-tier-sglr$lr 4 dni 0 100000 --hidden-size 256 --sg-lr $lr; done
    ;;
*)
    echo "usage: $0 bptt|dni|long|million|width|anchor-512|anchor-512-300k|lstm-512-300k|lstm-512-300k-dni|sg-rate" >&2
    exit 2
    ;;
esac
