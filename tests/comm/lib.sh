# Sourced by the multi-rank test scripts (tests/comm, tests/checkpoints): mpirun as they call
# it (oversubscribed: more ranks than this machine's cores; VT_MPIRUN names the binary) and a
# training run that appends to its log and stops the script on failure.
#   run_train OUT RANKS [train options]   runs "$bin" train "${args[@]}" --out OUT [options]
#                                         on RANKS ranks, log in OUT.log
mpirun=(${VT_MPIRUN:-mpirun} --oversubscribe --bind-to none)

run_train() {
  local out="$1" np="$2"
  shift 2
  if ! "${mpirun[@]}" -np "$np" "$bin" train "${args[@]}" --out "$out" "$@" >> "$out.log" 2>&1; then
    cat "$out.log"
    echo "FAILED: the run $out"
    exit 1
  fi
}
