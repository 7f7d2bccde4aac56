#!/usr/bin/env bash
# Faults (issue 5): a job of 2 ranks must end non-zero within 60 s, with a message naming the
# rank, when one rank
#   1. is killed (kill -9, mid-training): mpirun notices the dead process and ends the job;
#   2. throws (VT_TEST_FAULT=throw:1:3): the rank prints its error and calls MPI_Abort;
#   3. hangs outside any collective (VT_TEST_FAULT=hang:1:3): rank 0's watchdog finds its
#      all-reduce unfinished after --comm-timeout 5 s, names rank, collective and step, aborts.
#   rank_failure.sh VISIONTRAIN SOURCE_DIR PYTHON
set -uo pipefail
bin="$1" src="$2"
source "$src/tests/comm/lib.sh"
work="$(mktemp -d /tmp/vt-fault-XXXXXX)"
trap 'pkill -9 -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out data --train 64 --val 8 --imgsz 64 --quiet > /dev/null || exit 1
args=(train --data "$work/data" --model "$src/configs/yolov8-tiny.yaml" --batch 8 --imgsz 64 --epochs 100
      --no-val --quiet --workers 1 --optimizer sgd --out "$work/run")
fail() { echo "FAILED: $*"; exit 1; }

# check NAME LOG RC SECONDS PATTERN: non-zero (not the timeout's 124), within 60 s, message.
check() {
  echo "--- $1: exit code $3 after $4 s"
  tail -n 15 "$2"
  [ "$3" -ne 0 ] && [ "$3" -ne 124 ] || fail "$1: the job did not end non-zero on its own"
  [ "$4" -le 60 ] || fail "$1: took $4 s (limit 60)"
  grep -Eq "$5" "$2" || fail "$1: no message matching '$5'"
}

# 1. kill -9 rank 1 once training runs.
start=$(date +%s)
timeout 120 "${mpirun[@]}" -np 2 "$bin" "${args[@]}" > kill.log 2>&1 &
job=$!
for _ in $(seq 600); do
  [ -s run/metrics.jsonl ] && [ "$(wc -l < run/metrics.jsonl)" -ge 3 ] && break
  sleep 0.1
done
[ -s run/metrics.jsonl ] || { cat kill.log; fail "kill: training never started"; }
victim=""
for pid in $(pgrep -f "$work/run"); do
  if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then victim=$pid; fi
done
[ -n "$victim" ] || fail "kill: rank 1's process not found"
t_kill=$(date +%s)
kill -9 "$victim"
wait $job
rc=$?
check "kill -9 rank 1 (pid $victim)" kill.log $rc $(( $(date +%s) - t_kill )) "rank 1|exited on signal 9|killed"
rm -rf run

# 2. rank 1 throws at step 3.
start=$(date +%s)
VT_TEST_FAULT=throw:1:3 timeout 120 "${mpirun[@]}" -np 2 "$bin" "${args[@]}" > throw.log 2>&1
rc=$?
check "rank 1 throws" throw.log $rc $(( $(date +%s) - start )) "rank 1 failed; ending the job"
rm -rf run

# 3. rank 1 hangs at step 3; rank 0's watchdog ends the job.
start=$(date +%s)
VT_TEST_FAULT=hang:1:3 timeout 120 "${mpirun[@]}" -np 2 "$bin" "${args[@]}" --comm-timeout 5 > hang.log 2>&1
rc=$?
check "rank 1 hangs" hang.log $rc $(( $(date +%s) - start )) "rank 0 @ .*watchdog: all-reduce of .* \(step 3\) has not finished"
echo "PASSED"
