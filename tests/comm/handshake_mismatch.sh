#!/usr/bin/env bash
# The consistency handshake (issue 5): two ranks started with different configs (mpirun's
# MPMD form: rank 1 gets --lr0 0.02) must both exit non-zero before step 0, within 60 s, and
# the message must name rank 1 and the field. A matching pair must pass the handshake.
#   handshake_mismatch.sh VISIONTRAIN SOURCE_DIR PYTHON
set -euo pipefail
bin="$1" src="$2"
source "$src/tests/comm/lib.sh"
work="$(mktemp -d /tmp/vt-handshake-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out data --train 16 --val 8 --imgsz 64 --quiet > /dev/null
args=(train --data data --model "$src/configs/yolov8-tiny.yaml" --batch 4 --imgsz 64 --epochs 1 --steps 1
      --no-val --quiet --workers 1 --optimizer sgd)
start=$(date +%s)
set +e
timeout 120 "${mpirun[@]}" -np 1 "$bin" "${args[@]}" --out run --lr0 0.01 : -np 1 "$bin" "${args[@]}" --out run \
  --lr0 0.02 > log.txt 2>&1
rc=$?
set -e
took=$(( $(date +%s) - start ))
cat log.txt
echo "exit code $rc after $took s"
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { echo "FAILED: the mismatched job must fail on its own"; exit 1; }
[ "$took" -le 60 ] || { echo "FAILED: took more than 60 s"; exit 1; }
grep -q "rank 1 differs from rank 0 in config.lr0: '0.02' vs '0.01'" log.txt || { echo "FAILED: no message naming rank 1 and config.lr0"; exit 1; }
if grep -q "^epoch 1/1" log.txt; then echo "FAILED: a step ran"; exit 1; fi
# The same config on both ranks passes.
"${mpirun[@]}" -np 2 "$bin" "${args[@]}" --out ok --batch 4 > ok.txt 2>&1 || { cat ok.txt; echo "FAILED: matching ranks"; exit 1; }
echo "PASSED"
