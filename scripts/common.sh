# Shared by scripts/quickstart.sh and scripts/test.sh: install what is missing, then build.
# Both steps are idempotent: installed packages are skipped, and the build is incremental.

VT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CPU training: idle OpenMP threads sleep instead of spinning, leaving the cores to the
# loader's threads (measured 15% faster steps on 2 cores). Read by libgomp at start-up.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

# Debian 12 packages the build and the tests need. CUDA is not among them: the toolkit
# (nvcc, NCCL) comes from NVIDIA; without it the CPU backend is built alone.
VT_DEBS=(build-essential cmake ninja-build pkg-config libopenmpi-dev openmpi-bin libhdf5-dev
         libcxxopts-dev libgtest-dev libopenblas-dev libturbojpeg0-dev libpng-dev nlohmann-json3-dev
         libpugixml-dev libyaml-cpp-dev libonnx-dev libprotobuf-dev python3-venv iproute2)

vt_install_deps() {
  local missing=()
  for p in "${VT_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# vt_build DIR [cmake --build args...]: configure once (with CUDA when nvcc is found), then build.
vt_build() {
  local dir="$1"
  shift
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S "$VT_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$dir" -j"$(nproc)" "$@"
}

# The Python helpers of the tests (pycocotools, numpy, h5py, ...) live in $VT_ROOT/.venv,
# reinstalled only when tests/requirements.txt changes.
vt_python_env() {
  local venv="$VT_ROOT/.venv" req="$VT_ROOT/tests/requirements.txt"
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  local stamp="$venv/.requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing Python test helpers into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
  fi
}
