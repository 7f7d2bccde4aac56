#!/usr/bin/env bash
# Bit-exact resume (issue 6): 2N steps uninterrupted against N steps, a resume, and N more,
# must give identical losses and identical final weights, EMA and optimizer state. AdamW,
# mosaic augmentation, an epoch boundary at step 8, and a checkpoint every 4 steps.
#   - 1 rank, 24 steps, no warm-up: Ultralytics' nominal batch 64 makes the optimizer step
#     every 8 steps (at steps 7, 15, 23), so the split at step 13 falls inside an
#     accumulation and the checkpoint must carry the gradient sum.
#   - 2 ranks, and from 2 ranks to 1 rank with --accumulate 2 (the same micro-batches in the
#     same order, so the same bits: tests/comm/ddp_equivalence.sh), 12 steps, --nbs 8 (an
#     update every step). A multi-rank checkpoint inside an accumulation holds the sum over
#     the ranks, which a resume continues exactly in value but not in summation order.
#   resume_exact.sh VISIONTRAIN SOURCE_DIR PYTHON
set -euo pipefail
bin="$1" src="$2" py="$3"
source "$src/tests/comm/lib.sh"
work="$(mktemp -d /tmp/vt-resume-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out data --train 64 --val 8 --imgsz 96 --quiet > /dev/null
args=(--data data --model "$src/configs/yolov8-tiny.yaml" --batch 8 --imgsz 96 --optimizer adamw --lr0 0.002
      --epochs 3 --close-mosaic 0 --no-val --quiet --seed 3 --workers 1 --save-every 4)
run_train whole1 1 --steps 24 --warmup-epochs 0
run_train split1 1 --steps 13 --warmup-epochs 0
run_train split1 1 --steps 24 --warmup-epochs 0 --resume auto
grep -q "resume: from split1/checkpoints/ckpt-0000000013.h5: step 13" split1.log || { cat split1.log; echo "FAILED: no resume at step 13"; exit 1; }
"$py" "$src/tests/comm/compare_runs.py" whole1 split1 0
args+=(--nbs 8)

run_train whole2 2 --steps 12
run_train split2 2 --steps 6
run_train split2 2 --steps 12 --resume auto
"$py" "$src/tests/comm/compare_runs.py" whole2 split2 0

run_train from2to1 2 --steps 6
run_train from2to1 1 --steps 12 --resume auto --accumulate 2
grep -q "trained on 2 ranks" from2to1.log || { cat from2to1.log; echo "FAILED: not resumed from 2 ranks"; exit 1; }
"$py" "$src/tests/comm/compare_runs.py" whole2 from2to1 0

# SIGTERM to one rank of two: both finish the same step, rank 0 saves it, the job exits 0.
"${mpirun[@]}" -np 2 "$bin" train "${args[@]}" --out term --epochs 100 > term.log 2>&1 &
job=$!
for _ in $(seq 600); do
  n=$(grep -c '"step"' term/metrics.jsonl 2>/dev/null || true)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.1
done
for pid in $(pgrep -f -- "--out term --epochs 100"); do
  if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then kill -TERM $pid; fi
done
wait $job || { cat term.log; echo "FAILED: SIGTERM to rank 1: exit code $?"; exit 1; }
grep -q "stopped by another rank after step" term.log || { cat term.log; echo "FAILED: no clean stop"; exit 1; }
step=$(grep -Eo 'after step [0-9]+' term.log | awk '{print $3}')
[ "$(cat term/checkpoints/latest)" = "$(printf 'ckpt-%010d.h5' "$step")" ] || { echo "FAILED: latest is not step $step"; exit 1; }
echo "SIGTERM to rank 1: both ranks stopped after step $step, saved"
echo "PASSED"
