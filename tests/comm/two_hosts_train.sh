#!/usr/bin/env bash
# Data-parallel training across two "hosts" (issue 5, multi-node): 2 ranks in two network
# namespaces, Open MPI over TCP between them (tests/comm/two_hosts.sh), train 3 steps of the
# tiny model on synthetic data with the MPI backend. Exits 77 (skip) where namespaces
# cannot be made.
#   two_hosts_train.sh VISIONTRAIN SOURCE_DIR PYTHON
set -euo pipefail
bin="$1" src="$2"
work="$(mktemp -d /tmp/vt-2h-train-XXXXXX)"
trap 'rm -rf "$work"' EXIT
"$bin" synth --out "$work/data" --train 32 --val 8 --imgsz 64 --quiet > /dev/null
"$src/tests/comm/two_hosts.sh" "$bin" train --data "$work/data" --model "$src/configs/yolov8-tiny.yaml" \
  --out "$work/run" --batch 4 --imgsz 64 --epochs 1 --steps 3 --no-val --quiet --workers 1 --device cpu --comm mpi \
  2>&1 | tee "$work/log.txt"
steps=$(grep -c '"step"' "$work/run/metrics.jsonl")
[ "$steps" -eq 3 ] || { echo "FAILED: $steps steps logged, expected 3"; exit 1; }
grep -q "ranks: 2 (mpi backend" "$work/log.txt" || { echo "FAILED: not a 2-rank run"; exit 1; }
echo "PASSED: 3 steps on 2 ranks in 2 network namespaces"
