#!/usr/bin/env bash
# Installs what is missing, builds visiontrain and its tests, and runs the whole suite.
# GPU tests skip when no device is present; a run in which no test executed fails.
#   BUILD_DIR   build folder (default: build)
set -euo pipefail
source "$(dirname "$0")/common.sh"
build="${BUILD_DIR:-$VT_ROOT/build}"

vt_install_deps
vt_python_env
vt_build "$build"
ctest --test-dir "$build" --output-on-failure --no-tests=error -j"$(nproc)"
