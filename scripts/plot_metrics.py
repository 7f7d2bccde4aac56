#!/usr/bin/env python3
"""Plots a training run's metrics file: loss curves per step and mAP per epoch.

The input is the JSONL metrics file that `visiontrain train` writes, one JSON object per
line. Step lines carry at least step, epoch, loss, box, cls, dfl and lr; validation lines
carry "val": {"map": ..., "map50": ...} and the epoch they close. A line may be both. Lines
of other kinds are ignored, so the format can grow.

    python3 scripts/plot_metrics.py runs/exp1/metrics.jsonl            # -> runs/exp1/metrics.png
    python3 scripts/plot_metrics.py metrics.jsonl -o curves.png --smooth 0.95

The figure has four panels: the loss components (box, cls, dfl) and the total loss against
the step, each raw (faint) and smoothed; the learning rate; and mAP@.5 and mAP@.5:.95 against
the epoch. Needs matplotlib (tests/requirements.txt installs it into .venv).
"""

import argparse
import json
import math
import os
import sys

COMPONENTS = ("box", "cls", "dfl")


def read_metrics(path):
    """Returns (steps, vals): step records and validation records, in file order."""
    steps, vals = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            if "step" in rec and "loss" in rec:
                steps.append(rec)
            if isinstance(rec.get("val"), dict):
                if "epoch" not in rec:
                    raise ValueError(f'{path}:{lineno}: a "val" record needs its "epoch"')
                vals.append(rec)
    if not steps and not vals:
        raise ValueError(f"{path}: no step or validation records")
    return steps, vals


def smooth(values, weight):
    """Bias-corrected exponential moving average (TensorBoard's smoothing); NaNs pass through."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(float("nan"))
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def series(records, key):
    return [float(r[key]) if isinstance(r.get(key), (int, float)) else float("nan") for r in records]


def plot(steps, vals, out_path, weight, title):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (ax_parts, ax_total), (ax_lr, ax_map) = axes
    x = [r["step"] for r in steps]

    def curve(ax, key, color, label):
        y = series(steps, key)
        ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(x, smooth(y, weight), color=color, linewidth=1.6, label=label)

    for key, color in zip(COMPONENTS, ("tab:blue", "tab:orange", "tab:green")):
        curve(ax_parts, key, color, key)
    ax_parts.set_title("loss components")
    curve(ax_total, "loss", "tab:red", "loss")
    ax_total.set_title("total loss")
    ax_lr.plot(x, series(steps, "lr"), color="tab:purple", linewidth=1.2)
    ax_lr.set_title("learning rate")
    for ax in (ax_parts, ax_total, ax_lr):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_parts.legend()

    if vals:
        epochs = [r["epoch"] for r in vals]
        for key, label, marker in (("map50", "mAP@.5", "o"), ("map", "mAP@.5:.95", "s")):
            y = [float(r["val"][key]) if isinstance(r["val"].get(key), (int, float)) else float("nan") for r in vals]
            ax_map.plot(epochs, y, marker=marker, markersize=3, label=label)
        ax_map.legend()
        ax_map.set_ylim(bottom=0)
    else:
        ax_map.text(0.5, 0.5, "no validation records", ha="center", va="center", transform=ax_map.transAxes)
    ax_map.set_title("validation mAP")
    ax_map.set_xlabel("epoch")
    ax_map.grid(alpha=0.3)

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = out_path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)  # a reader never sees half a PNG


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", help="metrics JSONL file written by visiontrain train")
    ap.add_argument("-o", "--out", help="output PNG (default: the metrics path with .png)")
    ap.add_argument("--smooth", type=float, default=0.9, help="EMA weight in [0, 1) for the loss curves (0.9)")
    ap.add_argument("--title", default=None, help="figure title (default: the metrics file's folder)")
    args = ap.parse_args(argv)
    if not 0 <= args.smooth < 1:
        ap.error(f"--smooth {args.smooth} must be in [0, 1)")
    out = args.out or os.path.splitext(args.metrics)[0] + ".png"
    title = args.title if args.title is not None else os.path.basename(os.path.dirname(os.path.abspath(args.metrics)))
    try:
        steps, vals = read_metrics(args.metrics)
    except (OSError, ValueError) as e:
        print(f"plot_metrics: {e}", file=sys.stderr)
        return 1
    plot(steps, vals, out, args.smooth, title)
    print(f"plot_metrics: {len(steps)} steps, {len(vals)} validations -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
