#!/usr/bin/env bash
# A trained model detects the same objects on the GPU (bf16) as on the CPU (fp32): the
# inference path end to end (letterbox, the fused model, the Detect head's decoding, NMS on
# the device, the detections' file) against the CPU's. Every confident detection of one
# backend must have a partner in the other: same class, IoU >= 0.9, score within 0.05
# (detections within 0.05 of the threshold may lack one). At least 10 must be confident, so
# that an empty answer cannot pass (measured under the emulator: 45 over 16 images, worst IoU
# 0.945, worst score difference 0.009). Needs the synthetic model that integration.learn_synth
# keeps (CTest fixture) and a GPU, or the CUDA emulator (VT_CUDA_EMULATED=1).
#   detect_gpu_vs_cpu.sh VISIONTRAIN TRAINED_DIR PYTHON
set -euo pipefail
bin="$1" trained="$2" py="$3"
[ -f "$trained/best.h5" ] || { echo "no trained model in $trained (integration.learn_synth keeps it)"; exit 1; }
if [ "${VT_CUDA_EMULATED:-0}" != 1 ]; then
  nvidia-smi -L > /dev/null 2>&1 || { echo "no GPU: skipped"; exit 77; }
fi
work="$(mktemp -d /tmp/vt-detect-XXXXXX)"
trap 'rm -rf "$work"' EXIT
for dev in cpu cuda; do
  "$bin" detect --weights "$trained/best.h5" --device "$dev" --limit 16 --conf 0.2 --out "$work/$dev" \
    "$trained/val" > "$work/$dev.log" 2>&1 || { cat "$work/$dev.log"; echo "FAILED: detect --device $dev"; exit 1; }
done
"$py" - "$work/cpu/detections.json" "$work/cuda/detections.json" <<'EOF'
import json, sys

conf, margin = 0.25, 0.05  # confident: score >= conf; partners may be missing near conf


def iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0


def unmatched(xs, ys, name):
    """Confident detections of xs with no partner among ys, as messages."""
    bad = []
    for img_x, img_y in zip(xs, ys):
        assert img_x["file"] == img_y["file"], (img_x["file"], img_y["file"])
        for d in img_x["detections"]:
            if d["score"] < conf + margin:
                continue
            if not any(e["class"] == d["class"] and iou(d["box"], e["box"]) >= 0.9 and
                       abs(e["score"] - d["score"]) <= 0.05 for e in img_y["detections"]):
                bad.append(f"{img_x['file']}: {name} {d['name']} {d['score']:.3f} "
                           f"{[round(v, 1) for v in d['box']]} has no partner")
    return bad


cpu, gpu = (json.load(open(p)) for p in sys.argv[1:3])
assert len(cpu) == len(gpu), (len(cpu), len(gpu))
bad = unmatched(cpu, gpu, "cpu") + unmatched(gpu, cpu, "gpu")
confident = sum(d["score"] >= conf + margin for img in cpu for d in img["detections"])
worst_iou, worst_score = 1.0, 0.0
for img_c, img_g in zip(cpu, gpu):
    for d in img_c["detections"]:
        if d["score"] < conf + margin:
            continue
        best = max((e for e in img_g["detections"] if e["class"] == d["class"]),
                   key=lambda e: iou(d["box"], e["box"]), default=None)
        if best is not None:
            worst_iou = min(worst_iou, iou(d["box"], best["box"]))
            worst_score = max(worst_score, abs(best["score"] - d["score"]))
print(f"{len(cpu)} images: {confident} confident cpu detections; paired with the gpu's: "
      f"worst IoU {worst_iou:.3f}, worst score difference {worst_score:.3f}")
for b in bad:
    print("FAILED:", b)
if confident < 10:
    print(f"FAILED: only {confident} confident detections (need 10)")
sys.exit(1 if bad or confident < 10 else 0)
EOF
echo "PASSED"
