#!/usr/bin/env bash
# Launches visiontrain on the machines of an Open MPI hostfile, one rank per GPU.
#
# Usage: scripts/launch_hostfile.sh [OPTIONS] HOSTFILE NP [--] VISIONTRAIN-ARGS...
#   e.g. scripts/launch_hostfile.sh hosts.txt 16 -- train --data d --model configs/yolov8n.yaml
#
# HOSTFILE  Open MPI hostfile, a host per line with its GPUs as slots: "node01 slots=8"
# NP        ranks in all, usually hosts x GPUs per node
#
# Options (before the visiontrain arguments):
#   --gpus-per-node G   ranks per node (--map-by ppr:G:node); default: the GPUs that
#                       `nvidia-smi -L` lists on this machine, else 1 (so give it when
#                       launching from a login node without GPUs)
#   --iface IFACE       network for MPI and NCCL: sets btl_tcp_if_include,
#                       oob_tcp_if_include and NCCL_SOCKET_IFNAME (an interface name or,
#                       for MPI, a subnet such as 10.0.0.0/24)
#   --mpirun-arg ARG    one more mpirun argument, repeatable (e.g. --mpirun-arg --mca
#                       --mpirun-arg pml --mpirun-arg ucx)
#   --dry-run           print the mpirun command, run nothing (otherwise it is printed
#                       to stderr, after '+ ', before it runs)
#   -h, --help          this text
#
# Environment:
#   VT_BIN       the visiontrain binary (default: build/visiontrain of this repository); the
#                same path must hold it on every host (shared file system or same install)
#   VT_MPIRUN    mpirun to use (default: mpirun on the PATH)
#   Forwarded to every rank with -x when set: PATH, LD_LIBRARY_PATH, OMP_*, NCCL_*, VT_*,
#   UCX_*. OMPI_MCA_* variables reach the ranks through Open MPI itself.
#
# Each rank picks its GPU from its rank within the node (MPI_Comm_split_type SHARED), so no
# CUDA_VISIBLE_DEVICES is needed. Ranks are not bound to cores (--bind-to none): the loader's
# threads and the CUDA driver share the node's cores. As root, --allow-run-as-root is added.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() {
  echo "launch_hostfile.sh: $*" >&2
  echo "(scripts/launch_hostfile.sh --help for the usage)" >&2
  exit 2
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gpus="" iface="" dry=0
extra=() pos=()
while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run) dry=1 ;;
    --gpus-per-node | --iface | --mpirun-arg)
      (($# >= 2)) || die "$1 needs a value"
      case $1 in
        --gpus-per-node) gpus=$2 ;;
        --iface) iface=$2 ;;
        --mpirun-arg) extra+=("$2") ;;
      esac
      shift
      ;;
    --gpus-per-node=*) gpus=${1#*=} ;;
    --iface=*) iface=${1#*=} ;;
    --mpirun-arg=*) extra+=("${1#*=}") ;;
    --)
      shift
      break
      ;;
    -*) die "unknown option '$1'" ;;
    *)
      ((${#pos[@]} < 2)) || break # HOSTFILE NP given: the rest is visiontrain's
      pos+=("$1")
      ;;
  esac
  shift
done
((${#pos[@]} == 2)) || die "needs HOSTFILE and NP"
hostfile=${pos[0]} np=${pos[1]}
(($# >= 1)) || die "no visiontrain arguments (e.g. -- train --data DIR)"
[[ $np =~ ^[1-9][0-9]*$ ]] || die "NP must be a positive integer, not '$np'"
[[ -r $hostfile ]] || die "cannot read hostfile '$hostfile'"
hostfile="$(cd "$(dirname "$hostfile")" && pwd)/$(basename "$hostfile")"

if [[ -z $gpus ]]; then
  gpus=0
  if command -v nvidia-smi >/dev/null; then
    gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  fi
  ((gpus > 0)) || gpus=1
fi
[[ $gpus =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, not '$gpus'"

# Hosts in the hostfile (lines that are not blank or comments): NP must fit.
hosts="$(grep -cvE '^[[:space:]]*(#|$)' "$hostfile" || true)"
((hosts > 0)) || die "no hosts in '$hostfile'"
if ((np > hosts * gpus)); then
  die "NP $np is more than $hosts host(s) x $gpus rank(s) per node (--gpus-per-node)"
fi

bin="${VT_BIN:-$root/build/visiontrain}"
if [[ ! -x $bin ]]; then
  ((dry)) || die "no visiontrain binary at '$bin' (build it, or set VT_BIN)"
  echo "launch_hostfile.sh: note: '$bin' does not exist here" >&2
fi
mpirun="${VT_MPIRUN:-mpirun}"

cmd=("$mpirun" -np "$np" --hostfile "$hostfile" --map-by "ppr:$gpus:node" --bind-to none)
((EUID != 0)) || cmd+=(--allow-run-as-root)
if [[ -n $iface ]]; then
  cmd+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
  # NCCL takes interface names (or prefixes), not subnets.
  [[ $iface == */* ]] || export NCCL_SOCKET_IFNAME="$iface"
fi
for v in PATH LD_LIBRARY_PATH $(compgen -e | grep -E '^(OMP|NCCL|VT|UCX)_' | sort || true); do
  [[ $v == VT_BIN || $v == VT_MPIRUN || -z ${!v+x} ]] || cmd+=(-x "$v")
done
cmd+=("${extra[@]}" "$bin" "$@")

line="$(printf '%q ' "${cmd[@]}")"
if ((dry)); then
  echo "${line% }"
  exit 0
fi
echo "+ ${line% }" >&2
exec "${cmd[@]}"
