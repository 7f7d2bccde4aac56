#!/usr/bin/env bash
# Stages what scripts/bench_gpu.sh runs on a GPU machine into one small folder, for machines
# reached by copying a folder (the device tool carries at most 64 MiB, and a CUDA build
# folder with its objects is larger): the stripped visiontrain, layers and optim test,
# kernel_bench and step_profile binaries, and the source path they were built under (tests
# read configs/ from it; bench_gpu.sh links it to the checkout when the machine has another
# path).
#   scripts/stage_gpu_run.sh BUILD_DIR DEST_DIR
#   then there: scripts/bench_gpu.sh DEST_DIR OUT_DIR [PYTHON]
set -euo pipefail
build="$(cd "$1" && pwd)"
dest="$2"
rm -rf "$dest"
mkdir -p "$dest/tests" "$dest/bench"
for f in visiontrain tests/layers_tests tests/optim_tests bench/kernel_bench bench/step_profile; do
  [ -x "$build/$f" ] || { echo "stage_gpu_run: $build/$f is missing (build it first)" >&2; exit 1; }
  cp "$build/$f" "$dest/$f"
  strip "$dest/$f"
done
sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" >"$dest/source_dir.txt"
[ -s "$dest/source_dir.txt" ] || { echo "stage_gpu_run: no CMAKE_HOME_DIRECTORY in $build/CMakeCache.txt" >&2; exit 1; }
grep -q '^VT_WITH_CUDA\|VT_CUDA_ARCHITECTURES' "$build/CMakeCache.txt" ||
  echo "stage_gpu_run: warning: $build does not look like a CUDA build" >&2
echo "staged $(du -sh "$dest" | cut -f1) in $dest (built from $(cat "$dest/source_dir.txt"))"
