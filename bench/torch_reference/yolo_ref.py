"""A plain PyTorch reimplementation of visiontrain's detector and loss, for reference values.

Written independently of the C++ code (and without Ultralytics installed) from the
semantics Ultralytics 8.1-8.3 gives its YOLOv8 detection models:

  * build_model(yaml_path, nc): the model YAML resolved the way Ultralytics' parse_model
    resolves it (depth and width multiples, max_channels, make_divisible to 8, Python's
    round for repeats, args[0] == nc left unscaled), built from Conv (conv + BN(eps 1e-3,
    momentum 0.03) + SiLU), Bottleneck, C2f, SPPF, nn.Upsample, Concat and the YOLOv8
    Detect head. Parameter names are Ultralytics' state-dict names ("model.2.m.0.cv1.conv.weight").
    forward() returns the raw Detect outputs per level, (B, 4 reg_max + nc, H, W).
  * detect_loss(outputs, targets, ...): v8DetectionLoss with its TaskAlignedAssigner
    (top-k 10, alpha 0.5, beta 6, eps 1e-9), BCE with logits, CIoU (alpha of CIoU under
    no_grad), DFL, gains box 7.5 / cls 0.5 / dfl 1.5, total = (box + cls + dfl) * B.
    Targets are (B, M, 5) rows (cls, x1, y1, x2, y2) in pixels; a row is a ground truth when
    cls >= 0 and its box sums to > 0, otherwise padding. The per-GT top-k breaks ties towards
    the lower anchor index (a stable descending sort), the rule layers/detect_loss.h fixes.

Everything runs in the dtype of the model (the generator uses float64). Needs torch, numpy
and PyYAML; see make_reference.py.
"""

import math
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

BN_EPS = 1e-3
BN_MOMENTUM = 0.03
REG_MAX = 16


# --- the model ----------------------------------------------------------------------------


class Conv(nn.Module):
    """Conv2d without bias (padding k // 2), BatchNorm2d, SiLU."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        return F.silu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, k=(3, 3), e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0], 1)
        self.cv2 = Conv(hidden, c2, k[1], 1, g=g)
        self.residual = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.residual else y


class C2f(nn.Module):
    """cv1 (1x1) to 2c channels, split in halves; n bottlenecks chained on the second half;
    every piece concatenated into cv2 (1x1)."""

    def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, (3, 3), 1.0) for _ in range(n))

    def forward(self, x):
        parts = list(self.cv1(x).split(self.c, dim=1))
        for m in self.m:
            parts.append(m(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.k = k

    def forward(self, x):
        parts = [self.cv1(x)]
        for _ in range(3):
            parts.append(F.max_pool2d(parts[-1], self.k, 1, self.k // 2))
        return self.cv2(torch.cat(parts, 1))


class Upsample(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Concat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """The constant projection 0..reg_max-1 (a 1x1 conv in Ultralytics; never trained)."""

    def __init__(self, reg_max):
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)


class Detect(nn.Module):
    """The YOLOv8 decoupled head: per level a box branch (two 3x3 Conv, a 1x1 conv to
    4 reg_max) and a class branch (two 3x3 Conv, a 1x1 conv to nc)."""

    def __init__(self, nc, ch):
        super().__init__()
        c2 = max(16, ch[0] // 4, 4 * REG_MAX)
        c3 = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1)) for c in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in ch)
        self.dfl = DFL(REG_MAX)

    def forward(self, xs):
        return [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(xs, self.cv2, self.cv3)]


def _make_divisible(x, divisor=8):
    return int(math.ceil(x / divisor) * divisor)


class YoloModel(nn.Module):
    """The layers of a model YAML under `model.<i>`, run in order with each row's `from`."""

    def __init__(self, layers, sources, nc):
        super().__init__()
        self.model = nn.ModuleList(layers)
        self.sources = sources  # per layer: an int (-1: the previous) or a list of them
        self.nc = nc

    def forward(self, x):
        outs = []
        for m, f in zip(self.model, self.sources):
            if isinstance(f, int):
                inp = x if f == -1 else outs[f]
            else:
                inp = [x if j == -1 else outs[j] for j in f]
            x = m(inp)
            outs.append(x)
        return x


def build_model(yaml_path, nc):
    """The model of an Ultralytics-style YAML for `nc` classes: `depth_multiple`,
    `width_multiple` and `max_channels`, or a `scales` table whose row is picked by the file
    name's scale letter (yolov8n.yaml -> 'n'), as Ultralytics does."""
    with open(yaml_path) as f:
        cfg = yaml.safe_load(f)
    if "scales" in cfg:
        stem = os.path.splitext(os.path.basename(yaml_path))[0]
        m = re.search(r"yolov\d+([nslmx])", stem)
        if not m or m.group(1) not in cfg["scales"]:
            raise ValueError(f"{yaml_path}: no scale letter of {list(cfg['scales'])} in the file name")
        depth, width, max_channels = cfg["scales"][m.group(1)]
    else:
        depth, width = cfg["depth_multiple"], cfg["width_multiple"]
        max_channels = cfg.get("max_channels", 1024)
    ch = [3]  # output channels per layer; ch[-1] is the image while building layer 0
    layers, sources = [], []
    for i, (f, n, name, args) in enumerate(cfg["backbone"] + cfg["head"]):
        args = [nc if a == "nc" else a for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        c_in = ch[f] if isinstance(f, int) else None
        if name in ("Conv", "C2f", "SPPF", "Bottleneck"):
            c2 = args[0]
            if c2 != nc:
                c2 = _make_divisible(min(c2, max_channels) * width)
            rest = args[1:]
            if name == "Conv":
                m = Conv(c_in, c2, *rest)
            elif name == "C2f":
                m, n = C2f(c_in, c2, n, *rest), 1
            elif name == "SPPF":
                m = SPPF(c_in, c2, *rest)
            else:
                m = Bottleneck(c_in, c2, *rest)
        elif name == "nn.Upsample":
            c2, m = c_in, Upsample(int(args[1]))
        elif name == "Concat":
            c2, m = sum(ch[j] for j in f), Concat()
        elif name == "Detect":
            c2, m = None, Detect(nc, [ch[j] for j in f])
        else:
            raise ValueError(f"{yaml_path}: layer {i}: unsupported module {name}")
        if n > 1:
            raise ValueError(f"{yaml_path}: layer {i}: repeated {name} is not needed by the reference")
        layers.append(m)
        sources.append(f)
        if i == 0:
            ch = []
        ch.append(c2)
    return YoloModel(layers, sources, nc)


# --- the loss -----------------------------------------------------------------------------


def ciou(b1, b2, eps=1e-7):
    """CIoU of boxes (..., 4) x1y1x2y2, broadcasting; the aspect-ratio weight alpha is a
    constant for autograd, as in Ultralytics' bbox_iou."""
    x1, y1, x2, y2 = b1.unbind(-1)
    X1, Y1, X2, Y2 = b2.unbind(-1)
    w1, h1 = x2 - x1, y2 - y1 + eps
    w2, h2 = X2 - X1, Y2 - Y1 + eps
    inter = (torch.minimum(x2, X2) - torch.maximum(x1, X1)).clamp(min=0) * (
        torch.minimum(y2, Y2) - torch.maximum(y1, Y1)).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(x2, X2) - torch.minimum(x1, X1)
    ch = torch.maximum(y2, Y2) - torch.minimum(y1, Y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((X1 + X2 - x1 - x2)**2 + (Y1 + Y2 - y1 - y2)**2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1))**2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def anchors_of(outputs, strides):
    """Anchor points (A, 2) in grid units (cell centres, level-major then row-major) and
    their strides (A, 1)."""
    points, strides_out = [], []
    for o, s in zip(outputs, strides):
        h, w = o.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=o.dtype) + 0.5, torch.arange(w, dtype=o.dtype) + 0.5,
                                indexing="ij")
        points.append(torch.stack((xs, ys), -1).reshape(-1, 2))
        strides_out.append(torch.full((h * w, 1), float(s), dtype=o.dtype))
    return torch.cat(points), torch.cat(strides_out)


def first_argmax(x, dim):
    """Index of the first maximum along dim (explicit, not left to torch's tie rule)."""
    n = x.shape[dim]
    idx = torch.arange(n).view([-1 if d == dim % x.dim() else 1 for d in range(x.dim())])
    hit = x == x.amax(dim, keepdim=True)
    return torch.where(hit, idx, n).amin(dim)


@torch.no_grad()
def assign(scores, pboxes, points, labels, gt_boxes, valid, topk=10, alpha=0.5, beta=6.0, eps=1e-9):
    """The task-aligned assignment, all in pixels.

    scores (B, A, nc) sigmoid class scores; pboxes (B, A, 4) predicted boxes; points (A, 2);
    labels (B, M) int; gt_boxes (B, M, 4); valid (B, M) bool.
    Returns gt_idx (B, A) (-1 for background), score (B, A), the target score, and the
    align metric (B, M, A), zero off the candidates.
    """
    B, A, _ = scores.shape
    M = gt_boxes.shape[1]
    if M == 0:
        zeros = torch.zeros(B, A, dtype=scores.dtype)
        return torch.full((B, A), -1, dtype=torch.long), zeros, zeros[:, None, :]
    px, py = points[:, 0], points[:, 1]
    g = gt_boxes[:, :, None, :]  # (B, M, 1, 4)
    margin = torch.stack((px - g[..., 0], py - g[..., 1], g[..., 2] - px, g[..., 3] - py), -1).amin(-1)
    inside = (margin > eps) & valid[:, :, None]  # (B, M, A)
    ov = torch.where(inside, ciou(g, pboxes[:, None, :, :]).clamp(min=0), torch.zeros((), dtype=scores.dtype))
    cls_score = torch.gather(scores.transpose(1, 2), 1, labels[:, :, None].expand(B, M, A))  # (B, M, A)
    align = torch.where(inside, cls_score.pow(alpha) * ov.pow(beta), torch.zeros((), dtype=scores.dtype))
    # Top-k per GT over all anchors, ties to the lower anchor index.
    order = torch.sort(align, dim=-1, descending=True, stable=True).indices[..., :topk]
    in_topk = torch.zeros_like(inside).scatter_(-1, order, True)
    pos = in_topk & inside
    # An anchor positive for several GTs keeps the GT of highest overlap over all rows.
    multi = pos.sum(1) > 1  # (B, A)
    best = F.one_hot(first_argmax(ov, 1), M).transpose(1, 2).bool()  # (B, M, A)
    pos = torch.where(multi[:, None, :], best, pos)
    fg = pos.any(1)
    gt_idx = torch.where(fg, first_argmax(pos.to(torch.int8), 1), -1)
    # Normalised align metric: align * max overlap of the GT / max align of the GT.
    align_pos = align * pos
    pos_align = align_pos.amax(-1, keepdim=True)
    pos_ov = (ov * pos).amax(-1, keepdim=True)
    score = (align_pos * pos_ov / (pos_align + eps)).amax(1)
    return gt_idx, torch.where(fg, score, torch.zeros((), dtype=scores.dtype)), align


def detect_loss(outputs, targets, nc, strides, topk=10, alpha=0.5, beta=6.0, eps=1e-9, box_gain=7.5,
                cls_gain=0.5, dfl_gain=1.5):
    """v8DetectionLoss. outputs: per level (B, 4 reg_max + nc, H, W); targets (B, M, 5).
    Returns (total, box, cls, dfl, (gt_idx, score, align)): total carries the gradient;
    box, cls and dfl are the components after their gains, before the * B; the rest is the
    assignment (see assign)."""
    B = outputs[0].shape[0]
    C = 4 * REG_MAX + nc
    dt = outputs[0].dtype
    flat = torch.cat([o.reshape(B, C, -1) for o in outputs], 2).transpose(1, 2)  # (B, A, C)
    A = flat.shape[1]
    box_logits, cls_logits = flat[..., :4 * REG_MAX], flat[..., 4 * REG_MAX:]
    points, stride = anchors_of(outputs, strides)
    prob = box_logits.reshape(B, A, 4, REG_MAX).softmax(-1)
    dist = (prob * torch.arange(REG_MAX, dtype=dt)).sum(-1)  # (B, A, 4): left, top, right, bottom
    pbox = torch.cat((points - dist[..., :2], points + dist[..., 2:]), -1)  # grid units

    targets = targets.to(dt)
    cls_col, gt_boxes = targets[..., 0], targets[..., 1:5]
    valid = (cls_col >= 0) & (gt_boxes.sum(-1) > 0)
    labels = torch.where(valid, cls_col, torch.zeros((), dtype=dt)).long()
    assignment = assign(cls_logits.detach().sigmoid(), pbox.detach() * stride, points * stride, labels,
                        gt_boxes, valid, topk, alpha, beta, eps)
    gt_idx, score, _ = assignment
    fg = gt_idx >= 0
    tss = torch.clamp(score.sum(), min=1.0)

    safe_idx = gt_idx.clamp(min=0)
    tgt_label = torch.gather(labels, 1, safe_idx)  # (B, A)
    target = F.one_hot(tgt_label, nc).to(dt) * score[..., None]
    cls = F.binary_cross_entropy_with_logits(cls_logits, target, reduction="sum") / tss

    box = torch.zeros((), dtype=dt)
    dfl = torch.zeros((), dtype=dt)
    if fg.any():
        tbox = torch.gather(gt_boxes, 1, safe_idx[..., None].expand(B, A, 4)) / stride  # grid units
        w = score[fg]
        box = ((1.0 - ciou(pbox[fg], tbox[fg])) * w).sum() / tss
        pts = points.expand(B, A, 2)[fg]
        tdist = torch.cat((pts - tbox[fg][:, :2], tbox[fg][:, 2:] - pts), -1).clamp(0, REG_MAX - 1 - 0.01)
        t = tdist.reshape(-1)
        lo = t.long()
        wl = (lo + 1).to(dt) - t
        logits = box_logits[fg].reshape(-1, REG_MAX)
        ce = F.cross_entropy(logits, lo, reduction="none") * wl + F.cross_entropy(
            logits, lo + 1, reduction="none") * (1 - wl)
        dfl = (ce.view(-1, 4).mean(-1) * w).sum() / tss
    box, cls, dfl = box * box_gain, cls * cls_gain, dfl * dfl_gain
    total = (box + cls + dfl) * B
    return total, box, cls, dfl, assignment
