#!/usr/bin/env bash
# A new run does not mix with a previous run in the same --out: without --resume or
# --overwrite it stops before training and says how to go on; --overwrite starts over (the
# old metrics and checkpoints gone); --resume auto in an --out with no checkpoint keeps none
# of the metrics lines a crashed start left; --overwrite with --resume is refused.
#   out_dir_reuse.sh VISIONTRAIN SOURCE_DIR
set -euo pipefail
bin="$1" src="$2"
work="$(mktemp -d /tmp/vt-outdir-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out data --train 8 --val 4 --imgsz 64 --quiet > /dev/null
train() {
  "$bin" train --data data --model "$src/configs/yolov8-tiny.yaml" --batch 2 --imgsz 32 --epochs 1 --no-val --quiet \
    --device cpu --workers 1 --out run "$@"
}
fail() { echo "FAILED: $*"; exit 1; }

train --steps 2 > first.log 2>&1 || { cat first.log; fail "the first run"; }
[ "$(grep -c '"step"' run/metrics.jsonl)" -ge 2 ] || fail "the first run logged no steps"
if train --steps 1 > again.log 2>&1; then fail "a second run into the same --out started"; fi
grep -q "holds a previous run (checkpoints, metrics.jsonl, last.h5" again.log || { cat again.log; fail "no message"; }
grep -q -- "--resume auto" again.log || fail "the message does not say how to continue"
[ -d run/checkpoints ] && [ -f run/last.h5 ] || fail "the refused run touched the previous one"

train --steps 1 --overwrite > over.log 2>&1 || { cat over.log; fail "--overwrite"; }
grep -q "deleted the previous run's" over.log || fail "--overwrite did not say what it deleted"
[ "$(grep -c '"step"' run/metrics.jsonl)" = 1 ] || fail "metrics.jsonl kept the old run's lines"
ls run/checkpoints | grep -q 0000000002 && fail "the old run's step-2 checkpoint survived"

rm -rf run/checkpoints run/last.h5 run/best.h5  # a crash before the first checkpoint
train --steps 1 --resume auto > resume.log 2>&1 || { cat resume.log; fail "--resume auto with no checkpoint"; }
[ "$(grep -c '"step"' run/metrics.jsonl)" = 1 ] || fail "--resume auto from scratch kept earlier metrics lines"

if train --steps 1 --overwrite --resume auto > both.log 2>&1; then fail "--overwrite with --resume ran"; fi
grep -q -- "--overwrite starts over, --resume continues" both.log || { cat both.log; fail "no message for both"; }
echo "PASSED"
