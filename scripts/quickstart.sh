#!/usr/bin/env bash
# Installs what is missing, builds visiontrain, and runs its main job on the built-in
# default. Until training lands (issue 4) the main job is: synthesize the default dataset
# (shapes on textures, HDF5 shards), inspect and verify it, and run the self-test (every op
# forward and backward on the CPU, and on each GPU found, compared with the CPU).
#   BUILD_DIR   build folder (default: build)
#   RUN_DIR     where the dataset goes (default: runs/quickstart)
set -euo pipefail
source "$(dirname "$0")/common.sh"
build="${BUILD_DIR:-$VT_ROOT/build}"
run="${RUN_DIR:-$VT_ROOT/runs/quickstart}"

vt_install_deps
vt_build "$build" --target visiontrain
"$build/visiontrain" info
"$build/visiontrain" synth --out "$run/data" --overwrite
"$build/visiontrain" inspect "$run/data/train"
"$build/visiontrain" selftest
