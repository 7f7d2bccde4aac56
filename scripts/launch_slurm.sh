#!/usr/bin/env bash
#SBATCH --job-name=visiontrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
# Runs visiontrain under SLURM, one rank per GPU, started by srun (no mpirun, no hostfile).
#
# Usage: sbatch [SBATCH-OPTIONS] scripts/launch_slurm.sh [--dry-run] [--] VISIONTRAIN-ARGS...
#   e.g. sbatch --nodes=4 scripts/launch_slurm.sh train --data d --model configs/yolov8n.yaml
#        scripts/launch_slurm.sh --dry-run train --data d    # print the srun command only
#        scripts/launch_slurm.sh --help
#
# The #SBATCH lines above are defaults: 2 nodes of 8 GPUs, a rank (task) per GPU, 12 cores
# per rank, 24 hours. sbatch options on the command line win over them (--nodes=4,
# --ntasks-per-node, --gpus-per-node, --cpus-per-task, --time, --partition, --account); keep
# ntasks-per-node equal to gpus-per-node. Submit from the repository root: the binary is
# $SLURM_SUBMIT_DIR/build/visiontrain, or VT_BIN; it must be at that path on every node.
# Inside an allocation (salloc) the script may also be run directly.
#
# srun starts the ranks with --mpi=pmix when `srun --mpi=list` offers it, else pmi2;
# VT_SRUN_MPI overrides (pmi2 needs an Open MPI built with Slurm's PMI-2; where neither
# works, `mpirun --bind-to none build/visiontrain ...` inside the allocation takes its nodes
# and task counts from Slurm). --kill-on-bad-exit ends the job when one rank fails.
# srun gets --cpus-per-task again (Slurm 22.05 and later no longer pass it from sbatch), and
# OMP_NUM_THREADS defaults to the cores per rank. srun passes the whole environment
# (NCCL_*, VT_*, ...) to every rank. Each rank picks its GPU from its rank within the node
# (MPI_Comm_split_type SHARED, modulo the GPUs it sees), so no CUDA_VISIBLE_DEVICES is
# needed, whether a rank sees all of its node's GPUs or Slurm binds one per task.
set -euo pipefail

dry=0
case ${1:-} in
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;/^#SBATCH/{p;d};s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  --dry-run)
    dry=1
    shift
    ;;
esac
[[ ${1:-} != -- ]] || shift
if (($# == 0)); then
  echo "launch_slurm.sh: no visiontrain arguments (e.g. train --data DIR); --help for the usage" >&2
  exit 2
fi

# Under sbatch this script runs from a copy in Slurm's spool folder: find the repository
# from the submit directory instead.
if [[ -n ${VT_BIN:-} ]]; then
  bin=$VT_BIN
else
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/visiontrain"
  bin=${SLURM_SUBMIT_DIR:+$SLURM_SUBMIT_DIR/build/visiontrain}
  [[ -n $bin && (-x $bin || ! -x $here) ]] || bin=$here
fi

mpi=${VT_SRUN_MPI:-}
if [[ -z $mpi ]]; then
  mpi=pmix
  if command -v srun >/dev/null && ! srun --mpi=list 2>&1 | grep -qw pmix; then
    mpi=pmi2
  fi
fi
if [[ -z ${OMP_NUM_THREADS:-} && -n ${SLURM_CPUS_PER_TASK:-} ]]; then
  export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
fi

cmd=(srun "--mpi=$mpi" --kill-on-bad-exit=1)
# Since Slurm 22.05 srun does not inherit sbatch's --cpus-per-task: pass it on.
[[ -z ${SLURM_CPUS_PER_TASK:-} ]] || cmd+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
cmd+=("$bin" "$@")
line="$(printf '%q ' "${cmd[@]}")"
if ((dry)); then
  echo "${line% }"
  exit 0
fi
if [[ -z ${SLURM_JOB_ID:-} ]]; then
  echo "launch_slurm.sh: not inside a Slurm job; submit it with sbatch (or run it in salloc)" >&2
  exit 2
fi
if [[ ! -x $bin ]]; then
  echo "launch_slurm.sh: no visiontrain binary at '$bin' (submit from the repository root, or set VT_BIN)" >&2
  exit 2
fi
echo "launch_slurm.sh: job ${SLURM_JOB_ID}: ${SLURM_JOB_NUM_NODES:-?} node(s) ${SLURM_JOB_NODELIST:-?}," \
  "${SLURM_NTASKS:-?} rank(s), OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}" >&2
echo "+ ${line% }" >&2
exec "${cmd[@]}"
