"""Compares two training runs: the weights of their last.h5 and the losses of metrics.jsonl.

  compare_runs.py RUN_A RUN_B TOLERANCE

TOLERANCE 0 demands identical bits. Otherwise, per tensor, max |a - b| must be at most
TOLERANCE x max |a| (the tensor's scale), and every logged loss must agree to TOLERANCE
relative. Prints the worst tensors either way; exits 1 on a violation.
"""
import json
import sys

import h5py
import numpy as np


def tensors(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, d: out.__setitem__(n, d[()]) if isinstance(d, h5py.Dataset) and d.dtype.kind == "f" else None)
    return out


def losses(run):
    with open(f"{run}/metrics.jsonl") as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def main():
    a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ta, tb = tensors(f"{a}/last.h5"), tensors(f"{b}/last.h5")
    assert ta.keys() == tb.keys(), "different tensor names"
    worst = []
    for name, x in ta.items():
        y = tb[name]
        if tol == 0:
            err = 0.0 if np.array_equal(x.view(np.uint8), y.view(np.uint8)) else float("inf")
        else:
            err = float(np.abs(x.astype(np.float64) - y).max() / max(float(np.abs(x).max()), 1e-30))
        worst.append((err, name))
    worst.sort(reverse=True)
    differ = sum(e > 0 for e, _ in worst)
    print(f"{a} vs {b}: {len(worst)} tensors, {differ} differ; worst: "
          + ", ".join(f"{n} {e:.3g}" for e, n in worst[:3]))
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) and la, f"{len(la)} vs {len(lb)} logged steps"
    lerr = max(abs(x - y) / max(abs(x), 1e-30) for x, y in zip(la, lb))
    print(f"  losses of {len(la)} steps: worst relative difference {lerr:.3g}")
    ok = worst[0][0] <= tol and lerr <= tol
    print("  OK" if ok else f"  FAILED: tolerance {tol}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
