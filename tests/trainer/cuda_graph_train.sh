#!/usr/bin/env bash
# The training step as CUDA graphs (issue 8) changes the speed and nothing else: the same run
# eagerly and with --cuda-graph must log the same losses, bit for bit, and end with the same
# model and EMA weights, over every kind of step a graph is recorded for:
#   - batch B (8) at the nominal batch 64, in the warm-up: steps that only accumulate and steps
#     that update, in the warm-up's changing pattern (AdamW); the graph run is stopped halfway
#     and resumed from its checkpoint (--resume auto), which must change nothing either;
#   - --nbs B --accumulate 2: two micro-steps per updating step, the BN statistics averaged
#     over both (SGD);
#   - where mpirun exists, 2 ranks on the one GPU with the MPI backend (forward and the step's
#     end as graphs, backward and the all-reduces eager).
# The weights are compared as the data sections of `export --format safetensors` files (the
# headers hold each run's metadata). Needs a GPU: exits 77 (skipped) without one. With
# VT_CUDA_EMULATED=1 (visiontrain_emu, tests/cuda_emu) it runs on the CUDA emulator instead,
# with the same kinds of steps at a smaller scale (batch 4 at 64x64, fewer steps).
#   cuda_graph_train.sh VISIONTRAIN SOURCE_DIR
set -euo pipefail
bin="$1" src="$2"
batch=8 imgsz=96 steps=(20 12 12)
if [ "${VT_CUDA_EMULATED:-0}" = 1 ]; then
  batch=4 imgsz=64 steps=(6 4 4)
else
  nvidia-smi -L > /dev/null 2>&1 || { echo "no GPU: skipped"; exit 77; }
fi
work="$(mktemp -d /tmp/vt-graph-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out data --train 64 --val 8 --imgsz 96 --quiet > /dev/null

# safetensors data section: the bytes after the 8-byte header length and the header.
weights() {
  local f="$1" n
  n=$(od -An -tu8 -N8 "$f" | tr -d ' ')
  tail -c +$((9 + n)) "$f" | sha256sum | cut -d' ' -f1
}

# compare NAME STEPS [train options]: eager vs graphs (LAUNCH: a launcher, e.g. mpirun). With
# RESUME_AT=K the graph run stops after step K and continues with --resume auto.
compare() {
  local name="$1" steps="$2"
  shift 2
  for mode in eager graph; do
    local extra=() parts=("$steps")
    [ "$mode" = graph ] && extra=(--cuda-graph) && [ -n "${RESUME_AT:-}" ] && parts=("$RESUME_AT" "$steps")
    for upto in "${parts[@]}"; do
      local again=()
      [ "$upto" = "$steps" ] && [ ${#parts[@]} = 2 ] && again=(--resume auto)
      ${LAUNCH:-} "$bin" train --data data --model "$src/configs/yolov8-tiny.yaml" --batch $batch --imgsz $imgsz \
        --epochs 3 --close-mosaic 0 --no-val --quiet --seed 5 --workers 1 --device cuda --out "$name-$mode" \
        --steps "$upto" "$@" "${extra[@]}" "${again[@]}" >> "$name-$mode.log" 2>&1 ||
        { cat "$name-$mode.log"; echo "FAILED: $name $mode"; exit 1; }
    done
    grep -o '"loss":[^,]*' "$name-$mode/metrics.jsonl" > "$name-$mode.losses"
    for which in model ema; do
      "$bin" export --weights "$name-$mode/last.h5" --format safetensors --weights-of $which \
        --out "$name-$mode.$which.safetensors" > /dev/null
      weights "$name-$mode.$which.safetensors" > "$name-$mode.$which.sha"
    done
  done
  [ -s "$name-eager.losses" ] || { echo "FAILED: $name: no losses logged"; exit 1; }
  cmp "$name-eager.losses" "$name-graph.losses" ||
    { paste "$name-eager.losses" "$name-graph.losses" | head; echo "FAILED: $name: losses differ"; exit 1; }
  for which in model ema; do
    cmp -s "$name-eager.$which.sha" "$name-graph.$which.sha" || { echo "FAILED: $name: $which weights differ"; exit 1; }
  done
  echo "$name: $(wc -l < "$name-eager.losses") steps, losses and weights identical${RESUME_AT:+ (graphs resumed at step $RESUME_AT)}"
}

RESUME_AT=$((steps[0] / 2)) compare accumulating ${steps[0]} --optimizer adamw --lr0 0.002
compare micro_steps ${steps[1]} --optimizer sgd --lr0 0.01 --nbs $batch --accumulate 2
if command -v "${VT_MPIRUN:-mpirun}" > /dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
  LAUNCH="${VT_MPIRUN:-mpirun} --oversubscribe --bind-to none -np 2" compare two_ranks ${steps[2]} \
    --optimizer sgd --lr0 0.01 --nbs $((2 * batch)) --comm mpi
else
  echo "two_ranks: no mpirun here, skipped"
fi
echo "PASSED"
