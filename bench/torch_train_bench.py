#!/usr/bin/env python3
"""Training throughput of the PyTorch implementation of visiontrain's detector (issue 8, c).

The same model and loss as visiontrain's (bench/torch_reference/yolo_ref.py: the YAML
resolved as Ultralytics does, v8DetectionLoss with TAL), trained the way a PyTorch user
would: channels_last, autocast bf16, SGD with Nesterov momentum, on one GPU, in eager mode
and with the model under torch.compile. Images are random, 8 random boxes per image (the loss and the
assigner run as in training); the figure is images per second of whole training steps
(forward, loss, backward, optimizer step), the median over --steps after --warmup steps.

Also prints the model's forward FLOPs per image (2 x multiply-adds of its convolutions;
a training step is counted as 3 x the forward) and the achieved fraction of --peak-tflops
(dense bf16: 989 for H100 SXM and H200).

    python bench/torch_train_bench.py --model configs/yolov8n.yaml --batch 64 --imgsz 640 \
        --mode eager --out torch_eager.json
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference"))
import yolo_ref  # noqa: E402


def conv_flops_per_image(model, imgsz):
    """2 x multiply-adds of every nn.Conv2d in one forward pass of one image."""
    flops = []

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        flops.append(2 * out.shape[2] * out.shape[3] * m.out_channels * k)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz, device=next(model.parameters()).device))
    for h in hooks:
        h.remove()
    return sum(flops)


def random_targets(batch, imgsz, nc, boxes, gen, device):
    """(B, boxes, 5) rows (cls, x1, y1, x2, y2) in pixels, sides 16..imgsz/2."""
    cls = torch.randint(0, nc, (batch, boxes, 1), generator=gen).float()
    wh = torch.rand(batch, boxes, 2, generator=gen) * (imgsz / 2 - 16) + 16
    xy = torch.rand(batch, boxes, 2, generator=gen) * (imgsz - wh)
    return torch.cat([cls, xy, xy + wh], 2).to(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="configs/yolov8n.yaml")
    ap.add_argument("--nc", type=int, default=80)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--device", default="cuda", help="cuda (cpu: a quick check of the script only)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    model = yolo_ref.build_model(a.model, a.nc).to(dev).to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    fwd_flops = conv_flops_per_image(model, a.imgsz)
    model.train()
    strides = [8, 16, 32]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4)

    # torch.compile takes the model (as Ultralytics' compile option does); the loss, whose
    # assignment has data-dependent shapes, stays eager.
    net = torch.compile(model) if a.mode == "compile" else model

    def step(x, t):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            outs = net(x)
        loss = yolo_ref.detect_loss([o.float() for o in outs], t, a.nc, strides)[0]
        loss.backward()
        opt.step()
        return loss

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, 3, a.imgsz, a.imgsz, generator=gen).to(dev).to(memory_format=torch.channels_last)
    t = random_targets(a.batch, a.imgsz, a.nc, 8, gen, dev)
    times = []
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        loss = step(x, t)
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    ips = a.batch / step_s
    achieved = 3 * fwd_flops * ips / 1e12
    res = {
        "framework": f"pytorch {torch.__version__}", "mode": a.mode, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "model": a.model, "params": params, "batch": a.batch, "imgsz": a.imgsz, "dtype": "bf16 autocast",
        "memory_format": "channels_last", "images_per_s": ips, "step_s": step_s,
        "forward_gflops_per_image": fwd_flops / 1e9, "achieved_tflops": achieved,
        "fraction_of_peak": achieved / a.peak_tflops, "peak_tflops": a.peak_tflops,
        "final_loss": loss.item(),
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
    }
    print(f"{a.model} {a.mode}: {ips:.1f} images/s (step {step_s * 1e3:.1f} ms, batch {a.batch}, {a.imgsz}), "
          f"{fwd_flops / 1e9:.2f} GFLOPs/image forward, {achieved:.1f} TFLOP/s = "
          f"{100 * achieved / a.peak_tflops:.1f}% of {a.peak_tflops:.0f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
