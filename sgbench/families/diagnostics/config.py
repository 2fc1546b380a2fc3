"""Diagnostics runs are feed-forward runs (the feed-forward config and runner); what is the
diagnostics family's own is how a run is named from its resolved config. Torch-free."""
from __future__ import annotations

from ...catalog import method, paper_sg_hidden_layers
from ...config import adam_tag, precision_tag


def sg_changes(c: dict) -> dict:
    """What of a (resolved) config's SG model differs from its method's default: {"sgh": hidden layers}
    unless they are the paper's (catalog.paper_sg_hidden_layers), {"sgw": weight} unless the SG-loss
    weight is 1. Empty for a method without an SG (backprop)."""
    if not method("feedforward", c["method"]).uses_sg:
        return {}
    changes = {}
    if c.get("sg_hidden_layers") not in (None, paper_sg_hidden_layers(c["arch"], c["method"])):
        changes["sgh"] = int(c["sg_hidden_layers"])
    if float(c.get("sg_loss_weight", 1.0)) != 1.0:
        changes["sgw"] = float(c["sg_loss_weight"])
    return changes


def run_name(c: dict) -> str:
    """A diagnostics run's name in the pipeline, from its resolved config: mnist-fcn6-cdni-seed0 plus only
    what differs from the defaults: -middle (placement), -w0.3 (warm-up), -sgh1 (SG hidden layers),
    -sgw10 (SG-loss weight). Canonical: a default given explicitly (placement every, warm-up 0, the
    paper's SG hidden layers, weight 1) names the same run as one left out, so it is trained once."""
    parts = [f"{c['dataset']}-{c['arch']}{c['layers']}-{c['method']}"]
    if c.get("dni_placement", "every") != "every":
        parts.append(c["dni_placement"])
    if c.get("warmup", 0):
        parts.append(f"w{c['warmup']:g}")
    parts += [f"{key}{value:g}" for key, value in sg_changes(c).items()]
    # -bf16 / -tf32 and -fused-adam (issue #26), as the feed-forward names have them
    return "-".join(parts) + precision_tag(c) + adam_tag(c) + f"-seed{c['seed']}"
