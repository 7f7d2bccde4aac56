"""The reference for trainer/coco_eval: pycocotools' COCOeval (bbox) on a COCO GT file and a
detections file, printed as one JSON object on stdout for tests/trainer/coco_eval_test.cpp.

usage: coco_map_ref.py GT_JSON DT_JSON [--max-dets N]

Output: {"stats": the 12 summary numbers (stats[0] at maxDets[-1]: see below), "iou_thrs": [...], "rec_thrs": [...],
         "per_category": {category id: {"ap": AP@[.5:.95], "ap50": AP@.5}}}
with -1 where a category has no GT, as pycocotools reports it. Floats are printed with
repr precision, so the C++ side reads back the exact doubles.
"""
import argparse
import contextlib
import io
import json
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def mean_valid(p):
    """Mean over the entries > -1 (pycocotools' rule), -1 when there are none."""
    v = p[p > -1]
    return float(np.mean(v)) if v.size else -1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gt")
    ap.add_argument("dt")
    ap.add_argument("--max-dets", type=int, default=100)
    args = ap.parse_args()

    # pycocotools reports progress on stdout, which carries our result: silence it.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.gt)
        with open(args.dt) as f:
            dt = gt.loadRes(json.load(f))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, args.max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    precision = ev.eval["precision"]  # (T, R, K, A, M)
    stats = [float(s) for s in ev.stats]
    # summarize() reads stats[0] at maxDets=100 whatever maxDets holds (-1 when 100 is not
    # among them); every other number uses maxDets[-1]. Read AP at maxDets[-1] the same way.
    stats[0] = mean_valid(precision[:, :, :, 0, -1])
    per_cat = {}
    for k, cat in enumerate(ev.params.catIds):
        per_cat[str(cat)] = {
            "ap": mean_valid(precision[:, :, k, 0, -1]),
            "ap50": mean_valid(precision[0, :, k, 0, -1]),
        }
    json.dump({
        "stats": stats,
        "iou_thrs": [float(t) for t in ev.params.iouThrs],
        "rec_thrs": [float(r) for r in ev.params.recThrs],
        "per_category": per_cat,
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
