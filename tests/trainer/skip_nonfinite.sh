#!/usr/bin/env bash
# A non-finite gradient skips the optimizer step and nothing else (optim/update.h: the
# updates and both EMAs write nothing when the norm is not finite, decided where the norm
# lives, with no host read mid-step). VT_TEST_FAULT=nangrad:0:3 puts a NaN into step 3's
# gradient sum (an update every step: --nbs 8 at batch 8). The run must report the skipped
# step and count it in the epoch's metrics; its losses up to step 3 equal a clean run's bit
# for bit, its step-4 loss differs (step 3's update did not happen), and every later loss is
# finite (the NaN reached neither the weights nor the optimizer state).
#   skip_nonfinite.sh VISIONTRAIN SOURCE_DIR
set -euo pipefail
bin="$1" src="$2"
work="$(mktemp -d /tmp/vt-skip-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out data --train 32 --val 8 --imgsz 64 --quiet > /dev/null
args=(train --data data --model "$src/configs/yolov8-tiny.yaml" --batch 8 --imgsz 64 --epochs 2 --nbs 8
      --close-mosaic 0 --no-val --quiet --seed 2 --workers 1 --device cpu --optimizer sgd --lr0 0.01)
"$bin" "${args[@]}" --out clean > clean.log 2>&1 || { cat clean.log; echo "FAILED: clean run"; exit 1; }
VT_TEST_FAULT=nangrad:0:3 "$bin" "${args[@]}" --out poisoned > poisoned.log 2>&1 ||
  { cat poisoned.log; echo "FAILED: poisoned run"; exit 1; }
grep -q "step 3: gradient norm is not finite; optimizer step skipped" poisoned.log ||
  { cat poisoned.log; echo "FAILED: no skipped step reported"; exit 1; }
grep -q '"skipped_steps":1' poisoned/metrics.jsonl || { cat poisoned/metrics.jsonl; echo "FAILED: not counted"; exit 1; }
losses() { grep -o '"loss":[^,]*' "$1/metrics.jsonl" | cut -d: -f2; }
# Steps 0-3 log the losses of forward passes before the poisoned update: identical.
cmp <(losses clean | head -4) <(losses poisoned | head -4) || { echo "FAILED: losses before the skip differ"; exit 1; }
n=$(losses poisoned | wc -l)
[ "$n" -eq 8 ] || { echo "FAILED: $n steps logged, not 8"; exit 1; }
if losses poisoned | grep -qiE "nan|inf"; then losses poisoned; echo "FAILED: a non-finite loss after the skip"; exit 1; fi
# Step 4 of the poisoned run sees step 3's weights unchanged, i.e. not the clean run's: its
# loss differs from the clean step 4 (the update of step 3 did not happen).
[ "$(losses clean | sed -n 5p)" != "$(losses poisoned | sed -n 5p)" ] || { echo "FAILED: step 3 was not skipped"; exit 1; }
echo "PASSED"
