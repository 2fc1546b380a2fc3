"""How close is each synthetic gradient to the true one? A diagnostic, not a test.

    SGBENCH_DATA=../shared/data python benchmarks/sg_fidelity.py --layers 3 --steps 2000

Trains MNIST FCN nets with DNI and cDNI (paper settings) and, every --every steps, compares on a
fixed probe batch each boundary's synthetic gradient with the exact backprop gradient of the same
network at that point (sgbench.fidelity.ff_fidelity, which disturbs nothing of the run): cosine
similarity and norm ratio ||sg|| / ||true||, both over the whole batch tensor. `sgbench train-ff
--probe-every N` records the same numbers (and the relative error) in metrics.json.

Why it matters: without the label an SG model can at best learn E[dl/dh | h]. At the top boundary
dl/dlogits = softmax - onehot, whose expectation given h vanishes as the classifier becomes
calibrated, so an unconditioned SG is pushed towards ~0 there; cDNI sees the label and can predict it.
"""
import argparse

import torch

from sgbench.data import as_input, load_dataset
from sgbench.families.feedforward.run import BatchStream, train_step
from sgbench.fidelity import ff_fidelity
from sgbench.nets import FeedForwardNet


def fidelity(model, x, y):
    """Per boundary (bottom first): cosine(sg, true) and ||sg|| / ||true|| (sgbench.fidelity's conventions)."""
    return [(r["cosine"], r["norm_ratio"]) for r in ff_fidelity(model, x, y)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--methods", default="dni,cdni")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load_dataset("mnist")
    probe_x, probe_y = as_input(data.test_x[:1000]), data.test_y[:1000]
    print(f"# MNIST FCN-{args.layers}, Adam {args.lr}, batch 256, probe = 1000 test images; "
          "per boundary (bottom first): cosine(sg, true) / norm ratio")
    for method in args.methods.split(","):
        torch.manual_seed(args.seed)
        model = FeedForwardNet("fcn", args.layers, method, data.input_shape)
        opt = torch.optim.Adam(model.trainable_parameters(), lr=args.lr)
        stream = BatchStream(len(data.train_y), 256, args.seed)
        for step in range(1, args.steps + 1):
            idx = stream.next()
            train_step(model, opt, as_input(data.train_x[idx]), data.train_y[idx])
            if step % args.every == 0:
                cells = "  ".join(f"{c:+.3f}/{r:.2f}" for c, r in fidelity(model, probe_x, probe_y))
                print(f"{method:<5} step {step:>6}  {cells}", flush=True)


if __name__ == "__main__":
    main()
