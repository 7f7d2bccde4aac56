#!/usr/bin/env python3
"""Writes tests/data/reference/yolov8_tiny_step.h5: one training step of the tiny YOLOv8 in
PyTorch (float64), the reference that tests/data/model_reference_test.cpp holds the
C++ model and loss to. CI reads the committed file and needs no PyTorch.

Regenerate (from the repository root; PyTorch is not a project dependency, so it lives in a
venv of its own outside the repository):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch numpy h5py pyyaml   # the CPU build is enough
    /tmp/torchvenv/bin/python bench/torch_reference/make_reference.py

The step: yolov8-tiny.yaml with nc = 4 at imgsz 64, batch 2; deterministic weights and BN
statistics (below); a deterministic u8 image batch; (2, 4, 5) targets with padding rows of
both kinds (zero rows, cls -1); forward in train mode (BN batch statistics, running
statistics updated), yolo_ref.detect_loss, backward. Everything is float64 in PyTorch.

The file (every tensor in visiontrain's layout: images NHWC, conv weights OHWI). Named
tensors are packed per group as `names` (strings), `sizes` (int64) and `values` (the
tensors flattened and concatenated in that order), which keeps HDF5's per-dataset overhead
(about 2 KB each, 1.8 MB for 900 small datasets) out of the file:
  attributes     config (the YAML, relative to the repo), nc, imgsz, batch, torch (version)
  /images        (B, S, S, 3) u8 RGB
  /targets       (B, M, 5) f32 rows (cls, x1, y1, x2, y2) in pixels
  /loss          (4) f64: total, box, cls, dfl (layers/detect_loss.h's order)
  /state         f32: every parameter and BN running statistic before the step, by
                 Ultralytics name (Model::load_state's names and shapes); no DFL constant
  /grad          f32: d total / d parameter for every parameter, the float64 gradient
                 rounded to f32 (6e-8 relative; float64 would double the file to 2.4 MB)
  /grad/probe    (N, 3) f64 rows (tensor, flat index, float64 value): the 8
                 largest-magnitude entries of each gradient (tensor: its place in
                 /grad/names), to check the f64 model to ~1e-10 where f32 cannot
  /stats_after   f64: the BN running statistics after the step
  /outputs/<l>   (B, H_l, W_l, 4 reg_max + nc) f64: the raw Detect outputs
  /assign/gt     (B, A) int32: the targets row assigned to each anchor (-1: background)
  /assign/score  (B, A) f64: its target score; attribute min_topk_gap: the smallest
                 relative gap between the k-th and (k+1)-th align metric of any GT (the
                 assignment's margin against rounding differences)

Weights: conv weights q * 2^-e with integer q uniform in [-3, 3] and e the smallest
exponent with 3 * 2^-e <= 1 / sqrt(fan_in) (PyTorch's default bound); BN gamma 1 + r / 64,
beta r / 64, running mean r / 64, running var 1 + r / 64, with integer r uniform in
[-15, 15]; Detect's class biases Ultralytics' bias_init, log(5 / nc / (640 / s)^2) rounded to
1/64, plus r / 64; its box biases -0.75 bin + r / 64 instead of bias_init's flat 1.0, so
that the predicted boxes are about one cell from their anchor on every level and each
level gets foreground anchors (with flat logits every box spans 7.5 cells, and the stride-32
level, 240 px boxes in a 64 px image, would win no GT: its box branch would get no
gradient). Every value is exact in f32, so the file holds exactly the weights the float64
step used, and the few levels compress well.

Size: 1.65 MB, of which 1.2 MB is the f32 gradient of the 349k parameters (it does not
compress: its mantissas are noise), 0.22 MB the weights, 0.08 MB the outputs.
"""

import argparse
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import yolo_ref  # noqa: E402

NC = 4
IMGSZ = 64
BATCH = 2
STRIDES = [8, 16, 32]
PROBES = 8

# (B, M, 5): image 0 has three GTs (two overlapping) and a zero padding row; image 1 a
# large and a small GT, a cls -1 padding row with a box, and a zero row. Quarter-pixel
# coordinates keep every anchor point off the GT edges.
TARGETS = [
    [[1, 4.25, 6.75, 40.25, 30.75], [3, 20.75, 16.25, 60.25, 58.75], [0, 30.25, 20.75, 50.75, 44.25],
     [0, 0, 0, 0, 0]],
    [[2, 8.25, 7.75, 56.75, 55.25], [-1, 10.25, 10.25, 20.75, 20.75], [1, 2.25, 40.75, 14.75, 62.25],
     [0, 0, 0, 0, 0]],
]


def ohwi(name, t):
    """A tensor in visiontrain's layout: 4-d conv weights OIHW -> OHWI."""
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


def levels(rng, shape, n):
    return rng.integers(-n, n + 1, size=shape).astype(np.float64)


def init_state(model, rng):
    """Sets the deterministic weights and BN statistics described in the file comment."""
    sd = model.state_dict()
    for name, t in sd.items():
        if name.endswith("num_batches_tracked") or ".dfl." in name:
            continue
        shape = tuple(t.shape)
        if name.endswith(".bn.weight") or name.endswith(".running_var"):
            v = 1 + levels(rng, shape, 15) / 64
        elif name.endswith(".bn.bias") or name.endswith(".running_mean"):
            v = levels(rng, shape, 15) / 64
        elif name.endswith(".bias") and ".cv2." in name:  # box logits, (side, bin)
            v = -0.75 * (np.arange(shape[0]) % yolo_ref.REG_MAX) + levels(rng, shape, 15) / 64
        elif name.endswith(".bias"):  # class logits
            prior = math.log(5 / NC / (640 / STRIDES[int(name.split(".")[3])])**2)
            v = round(prior * 64) / 64 + levels(rng, shape, 15) / 64
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            e = math.ceil(math.log2(3 * math.sqrt(fan_in)))
            v = levels(rng, shape, 3) * 2.0**-e
        t.copy_(torch.from_numpy(v))


def make_images(rng):
    """Smooth colour fields plus noise, u8 (B, S, S, 3)."""
    y, x = np.mgrid[0:IMGSZ, 0:IMGSZ] / IMGSZ
    imgs = np.empty((BATCH, IMGSZ, IMGSZ, 3))
    for b in range(BATCH):
        for c in range(3):
            fx, fy, ph = rng.uniform(0.5, 3, 3)
            imgs[b, :, :, c] = 128 + 80 * np.sin(2 * np.pi * (fx * x + fy * y) + 6 * ph)
    imgs += rng.normal(0, 20, imgs.shape)
    return np.clip(np.rint(imgs), 0, 255).astype(np.uint8)


def topk_gap(align, topk=10):
    """The smallest relative gap between the k-th and (k+1)-th largest align metric of any
    GT with k positive metrics: how far the top-k selection is from a tie."""
    s = torch.sort(align, dim=-1, descending=True).values
    kth, next_ = s[..., topk - 1], s[..., topk]
    gaps = (kth - next_) / kth
    return float(gaps[kth > 0].min())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "tests/data/reference/yolov8_tiny_step.h5"))
    ap.add_argument("--seed", type=int, default=20240607)
    args = ap.parse_args()

    torch.set_default_dtype(torch.float64)
    config = "configs/yolov8-tiny.yaml"
    model = yolo_ref.build_model(os.path.join(root, config), NC).double()
    rng = np.random.default_rng(args.seed)
    with torch.no_grad():
        init_state(model, rng)
    state0 = {k: ohwi(k, v).detach().clone() for k, v in model.state_dict().items()
              if not k.endswith("num_batches_tracked") and ".dfl." not in k}
    images = make_images(rng)
    targets = np.array(TARGETS, dtype=np.float32)

    model.train()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float64) / 255.0
    outputs = model(x)
    total, box, cls, dfl, (gt_idx, score, align) = yolo_ref.detect_loss(outputs, torch.from_numpy(targets), NC,
                                                                         STRIDES)
    total.backward()
    gap = topk_gap(align)
    if gap < 1e-3:  # float32 rounding (~1e-6 here) must not be able to change the top-k sets
        raise SystemExit(f"the top-k selection is within {gap:.3g} of a tie; change the seed or the targets")

    stats_after = {k: v for k, v in model.state_dict().items() if "running_" in k}
    grads = {k: ohwi(k, p.grad).contiguous() for k, p in model.named_parameters() if p.grad is not None}
    probes = []
    for t, g in enumerate(grads.values()):
        flat = g.reshape(-1).numpy()
        idx = np.argsort(-np.abs(flat), kind="stable")[:PROBES]
        probes.append(np.stack((np.full(len(idx), t, dtype=np.float64), idx.astype(np.float64), flat[idx]), 1))

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    z = dict(compression="gzip", compression_opts=9, shuffle=True)
    with h5py.File(args.out, "w") as f:
        f.attrs["config"] = config
        f.attrs["nc"], f.attrs["imgsz"], f.attrs["batch"] = NC, IMGSZ, BATCH
        f.attrs["torch"] = str(torch.__version__)
        f.create_dataset("images", data=images, **z)
        f.create_dataset("targets", data=targets)
        f.create_dataset("loss", data=np.array([t.item() for t in (total, box, cls, dfl)]))

        def packed(group, tensors, dtype):
            g = f.create_group(group)
            g.create_dataset("names", data=list(tensors), dtype=h5py.string_dtype())
            g.create_dataset("sizes", data=np.array([t.numel() for t in tensors.values()], dtype=np.int64))
            flat = np.concatenate([t.detach().reshape(-1).numpy() for t in tensors.values()])
            g.create_dataset("values", data=flat.astype(dtype), **z)
            return g

        packed("state", state0, np.float32)
        packed("grad", grads, np.float32).create_dataset("probe", data=np.concatenate(probes), **z)
        packed("stats_after", stats_after, np.float64)
        for l, o in enumerate(outputs):
            f.create_dataset(f"outputs/{l}", data=o.detach().permute(0, 2, 3, 1).contiguous().numpy(), **z)
        g = f.create_group("assign")
        g.create_dataset("gt", data=gt_idx.numpy().astype(np.int32))
        g.create_dataset("score", data=score.numpy(), **z)
        g.attrs["min_topk_gap"] = gap
    fg = int((gt_idx >= 0).sum())
    print(f"{args.out}: {os.path.getsize(args.out) / 1e6:.2f} MB; loss total {total.item():.10g} box "
          f"{box.item():.10g} cls {cls.item():.10g} dfl {dfl.item():.10g}; {fg} foreground anchors; "
          f"min top-k gap {gap:.3g}")


if __name__ == "__main__":
    main()
