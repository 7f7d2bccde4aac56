#!/usr/bin/env bash
# Installs what is missing, builds visiontrain, and runs its main job on the built-in
# default: synthesize the default dataset (shapes on textures, HDF5 shards), train the tiny
# detector on it (configs/synth-cpu.args: a few minutes on 2 CPU cores), evaluate it with
# COCO mAP, draw its detections on validation images, and plot the training curves.
#   BUILD_DIR   build folder (default: build)
#   RUN_DIR     where the dataset goes (default: runs/quickstart)
set -euo pipefail
source "$(dirname "$0")/common.sh"
build="${BUILD_DIR:-$VT_ROOT/build}"
run="${RUN_DIR:-$VT_ROOT/runs/quickstart}"

vt_install_deps
vt_build "$build" --target visiontrain
vt_python_env  # matplotlib for the plot
vt="$build/visiontrain"
"$vt" info
"$vt" synth --out "$run/data" --overwrite --quiet
"$vt" inspect "$run/data/train"
"$vt" train --data "$run/data" --model "$VT_ROOT/configs/yolov8-tiny.yaml" --out "$run/train" --overwrite \
  $(cat "$VT_ROOT/configs/synth-cpu.args")
"$vt" eval --weights "$run/train/best.h5" --data "$run/data/val"
"$vt" detect --weights "$run/train/best.h5" --images "$run/data/val" --limit 16 --out "$run/detect"
"$VT_ROOT/.venv/bin/python3" "$VT_ROOT/scripts/plot_metrics.py" "$run/train/metrics.jsonl" -o "$run/train/curves.png"
echo
echo "quickstart done:"
echo "  weights      $run/train/best.h5"
echo "  detections   $run/detect/grid.jpg"
echo "  curves       $run/train/curves.png"
