#!/usr/bin/env bash
# Installs what is missing, builds visiontrain, and runs its main job on the built-in
# default. Until training lands (issue 4) the main job is the self-test: every op forward
# and backward on the CPU, and on each GPU found, compared with the CPU.
#   BUILD_DIR   build folder (default: build)
set -euo pipefail
source "$(dirname "$0")/common.sh"
build="${BUILD_DIR:-$VT_ROOT/build}"

vt_install_deps
vt_build "$build" --target visiontrain
"$build/visiontrain" info
"$build/visiontrain" selftest
