#!/usr/bin/env bash
# Export (issue 7) end to end: a run file made by 2 training steps of the tiny model on
# synthetic data (imgsz 64), exported as safetensors (read back with the `safetensors`
# package and compared with the checkpoint read by h5py, EMA and model weights) and as ONNX
# in each form (batch 1, dynamic batch, with NMS), every ONNX file verified against the
# native CPU pass with ONNX Runtime (`--verify`); coco128's images when shared/ has them;
# a missing checkpoint refused by name; then a yolov8n run file exported at 640 and verified.
#   export.sh VISIONTRAIN_BINARY SOURCE_DIR PYTHON
set -euo pipefail
bin="$1"
src="$2"
export VT_PYTHON="$3"
work="$(mktemp -d /tmp/vt-export-XXXXXX)"
trap 'rm -rf "$work"' EXIT
export OMP_WAIT_POLICY=passive

"$bin" synth --out "$work/data" --train 16 --val 4 --imgsz 64 --quiet >/dev/null
"$bin" train --data "$work/data" --model "$src/configs/yolov8-tiny.yaml" --out "$work/run" --imgsz 64 --batch 4 \
  --steps 2 --no-val --quiet >/dev/null
ckpt="$work/run/last.h5"

echo "== safetensors"
"$bin" export --weights "$ckpt" --format safetensors --verify
"$bin" export --weights "$ckpt" --format safetensors --weights-of model --out "$work/model.safetensors" --verify

echo "== ONNX, batch 1, detect's thresholds"
"$bin" export --weights "$ckpt" --format onnx --verify
echo "== ONNX, dynamic batch, NMS at conf 0.001 (detections to compare)"
"$bin" export --weights "$ckpt" --format onnx --dynamic-batch --with-nms --conf 0.001 --out "$work/nms.onnx" --verify \
  | tee "$work/nms.txt"
grep -q "onnxruntime ran 1 call(s) of batch 3" "$work/nms.txt"
grep -Eq "vs ONNX NonMaxSuppression +[1-9][0-9]* vs" "$work/nms.txt" || { echo "no detections compared"; exit 1; }
echo "== ONNX, model weights, imgsz 96, NMS"
"$bin" export --weights "$ckpt" --format onnx --weights-of model --imgsz 96 --with-nms --conf 0.001 \
  --out "$work/m96.onnx" --verify
coco="$src/../shared/data/coco128/images/train2017"
if [ -d "$coco" ]; then
  mkdir "$work/images"
  ls "$coco" | sort | head -8 | while read -r f; do cp "$coco/$f" "$work/images/"; done
  echo "== ONNX on 8 coco128 images"
  "$bin" export --weights "$ckpt" --format onnx --dynamic-batch --with-nms --out "$work/coco.onnx" --verify \
    --images "$work/images"
else
  echo "== (no $coco: the --images check is skipped)"
fi

echo "== refusal of a missing checkpoint"
if "$bin" export --weights "$work/missing.h5" --format onnx 2>"$work/err.txt"; then exit 1; fi
grep -q "missing.h5 does not exist" "$work/err.txt"

echo "== yolov8n (1 training step at 64, exported at 640, dynamic batch, NMS)"
"$bin" train --data "$work/data" --model "$src/configs/yolov8n.yaml" --out "$work/runn" --imgsz 64 --batch 2 \
  --steps 1 --no-val --quiet >/dev/null
SECONDS=0
"$bin" export --weights "$work/runn/last.h5" --format onnx --imgsz 640 --dynamic-batch --with-nms \
  --out "$work/yolov8n.onnx" --verify
echo "yolov8n export + verify took ${SECONDS} s"
"$bin" export --weights "$work/runn/last.h5" --format safetensors --verify
echo "export test passed"
