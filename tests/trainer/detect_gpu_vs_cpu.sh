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


def confident(xs, ys):
    """(file, d, same-class detections of ys) for each confident detection d of xs."""
    for img_x, img_y in zip(xs, ys):
        assert img_x["file"] == img_y["file"], (img_x["file"], img_y["file"])
        for d in img_x["detections"]:
            if d["score"] >= conf + margin:
                yield img_x["file"], d, [e for e in img_y["detections"] if e["class"] == d["class"]]


def unmatched(xs, ys, name):
    """Confident detections of xs with no partner among ys, as messages."""
    return [f"{f}: {name} {d['name']} {d['score']:.3f} {[round(v, 1) for v in d['box']]} has no partner"
            for f, d, same in confident(xs, ys)
            if not any(iou(d["box"], e["box"]) >= 0.9 and abs(e["score"] - d["score"]) <= 0.05 for e in same)]


cpu, gpu = (json.load(open(p)) for p in sys.argv[1:3])
assert len(cpu) == len(gpu), (len(cpu), len(gpu))
bad = unmatched(cpu, gpu, "cpu") + unmatched(gpu, cpu, "gpu")
pairs = [(d, max(same, key=lambda e: iou(d["box"], e["box"]), default=None)) for _, d, same in confident(cpu, gpu)]
worst_iou = min((iou(d["box"], e["box"]) for d, e in pairs if e), default=1.0)
worst_score = max((abs(e["score"] - d["score"]) for d, e in pairs if e), default=0.0)
confident_cpu = len(pairs)
print(f"{len(cpu)} images: {confident_cpu} confident cpu detections; paired with the gpu's: "
      f"worst IoU {worst_iou:.3f}, worst score difference {worst_score:.3f}")
for b in bad:
    print("FAILED:", b)
if confident_cpu < 10:
    print(f"FAILED: only {confident_cpu} confident detections (need 10)")
sys.exit(1 if bad or confident_cpu < 10 else 0)
EOF
echo "PASSED"
