"""Summarise the evidence runs: RNN lengths and SG signal per (task, T, method); char-LM bpc."""
import json
import math
import sys
from pathlib import Path

import numpy as np

root = Path(sys.argv[1])


def late(values):
    v = [x for x in values if x is not None]
    tail = v[len(v) - max(1, math.ceil(0.25 * len(v))):] if v else []
    return float(np.mean(tail)) if tail else math.nan


def fmt(x, d=2):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


rows = {}
for p in sorted(root.glob("*/metrics.json")):
    m = json.loads(p.read_text())
    c = m["config"]
    if m["experiment"] != "rnn":
        continue
    key = (c["task"], c["T"], c["method"])
    r = rows.setdefault(key, {"len": [], "cos_t": [], "cos_x": [], "sg": [], "lin": [], "wall": [], "status": []})
    r["len"].append(m["final"]["largest_length_solved"])
    r["cos_t"].append(late(m["curves"]["boundary_target_cosine"]))
    r["cos_x"].append(late(m["curves"].get("probe_cosine_exact", [])))
    r["sg"].append(m["final"]["signal_sg_cosine"] if m["final"]["signal_sg_cosine"] is not None else math.nan)
    r["lin"].append(m["final"]["signal_linear_cosine"])
    r["wall"].append(m["timing"]["wall_time_s"])
    r["status"].append(m["status"])
order = {"bptt": 0, "dni": 1, "dni_aux": 2, "dni_bpl": 3}
print("| task | T | method | largest length solved (seeds) | mean | late cos(SG, target) | late cos(SG, exact future grad), probe | held-out cos(SG, exact) | held-out cos(best linear SG, exact) | wall s |")
print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for key in sorted(rows, key=lambda k: (k[0], k[1], order[k[2]])):
    r = rows[key]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(map(str, r['len']))} | {np.mean(r['len']):.1f} | "
          f"{fmt(np.nanmean(r['cos_t']) if not all(map(math.isnan, r['cos_t'])) else math.nan)} | "
          f"{fmt(np.nanmean(r['cos_x']) if not all(map(math.isnan, r['cos_x'])) else math.nan)} | "
          f"{fmt(np.nanmean(r['sg']) if not all(map(math.isnan, r['sg'])) else math.nan)} | {fmt(np.mean(r['lin']))} | "
          f"{sum(r['wall']):.0f} |")
print()
print("| corpus | T | method | valid bpc | test bpc | late cos(SG, target) | wall s |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
for p in sorted(root.glob("charlm-*/metrics.json")):
    m = json.loads(p.read_text())
    c, f = m["config"], m["final"]
    print(f"| {m['dataset']['name']} | {c['T']} | {c['method']} | {fmt(f['valid_bpc'], 3)} | {fmt(f['test_bpc'], 3)} | "
          f"{fmt(late(m['curves']['boundary_target_cosine']))} | {m['timing']['wall_time_s']:.0f} |")
