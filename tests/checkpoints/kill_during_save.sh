#!/usr/bin/env bash
# Crash safety (issue 6): kill -9 the trainer 20 times while it writes a checkpoint (the
# moment a temporary checkpoint file appears, plus 0-30 ms). Each restart with --resume auto
# must find a checkpoint that verifies (or none, only before the first was committed) and
# continue; `latest` must always name a complete file. Then a flipped byte and a truncated
# file in the newest checkpoint are detected, named, and skipped; retention keeps exactly the
# last 3 (no validation, so no best); SIGTERM stops cleanly with exit 0 and a checkpoint.
#   kill_during_save.sh VISIONTRAIN SOURCE_DIR PYTHON
set -uo pipefail
bin="$1" src="$2"
work="$(mktemp -d /tmp/vt-kill-XXXXXX)"
trap 'pkill -9 -f "$work" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAILED: $*"; exit 1; }
"$bin" synth --out data --train 64 --val 8 --imgsz 64 --quiet > /dev/null || fail "synth"
args=(train --data "$work/data" --model "$src/configs/yolov8-tiny.yaml" --batch 8 --imgsz 64 --epochs 1000
      --no-val --quiet --workers 1 --save-every 1 --out "$work/run" --resume auto)
ck=run/checkpoints
during=0
for i in $(seq 1 20); do
  "$bin" "${args[@]}" > "log$i.txt" 2>&1 &
  pid=$!
  # Let 0-2 saves commit (so the run makes progress), then wait for the next write (its
  # temporary file) and kill inside it.
  at=0
  [ -f "$ck/latest" ] && at=$((10#$(sed -E 's/ckpt-([0-9]+)\.h5/\1/' "$ck/latest")))
  target="$ck/$(printf 'ckpt-%010d' $((at + 1 + RANDOM % 3))).h5.tmp.$pid"
  hit=0
  for _ in $(seq 3000); do
    if [ -e "$target" ]; then hit=1; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.005
  done
  sleep "0.00$((RANDOM % 10))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  compgen -G "$ck/ckpt-*.h5.tmp.$pid" > /dev/null && during=$((during + 1))
  [ $hit -eq 1 ] || { cat "log$i.txt"; fail "kill $i: no checkpoint write seen"; }
  if [ $i -gt 1 ]; then
    grep -Eq "resume: from .*ckpt-[0-9]{10}\.h5: step [0-9]+|no checkpoint in .* to resume from" "log$i.txt" ||
      { cat "log$i.txt"; fail "restart $i did not resume"; }
  fi
  if [ -f "$ck/latest" ]; then
    target="$ck/$(cat "$ck/latest")"
    [ -f "$target" ] || fail "kill $i: latest names $target, which does not exist"
  fi
  echo "kill $i: $(grep -Eo 'resume: from [^:]*: step [0-9]+' "log$i.txt" || echo 'fresh start'); $(ls $ck | tr '\n' ' ')"
done
echo "$during of 20 kills left a partial checkpoint file behind (killed mid-write)"
[ $during -ge 10 ] || fail "fewer than half of the kills landed inside a write"

# The 21st start must resume from a verified checkpoint and run on.
steps=$(grep -Eo 'step [0-9]+' <<< "$(grep 'resume: from' log20.txt)" | awk '{print $2}')
"$bin" "${args[@]}" --steps $((steps + 40)) --save-every 0 > final.txt 2>&1 || { cat final.txt; fail "final resume"; }
grep -q "resume: from" final.txt || { cat final.txt; fail "final run did not resume"; }
! compgen -G "$ck/ckpt-*.h5.tmp.*" > /dev/null || fail "stale temporaries were not removed"

# Corruption: flip a byte in the middle of the newest checkpoint, then truncate it.
newest="$ck/$(cat $ck/latest)"
size=$(stat -c %s "$newest")
printf '\xff' | dd of="$newest" bs=1 seek=$((size / 2)) conv=notrunc status=none
"$bin" "${args[@]}" --steps $((steps + 41)) > flip.txt 2>&1 || { cat flip.txt; fail "resume after a flipped byte"; }
grep -q "$(basename "$newest").*falling back\|$(basename "$newest").*fall" flip.txt || { cat flip.txt; fail "the corrupt file was not named"; }
newest="$ck/$(cat $ck/latest)"
truncate -s $(( $(stat -c %s "$newest") / 2 )) "$newest"
"$bin" "${args[@]}" --steps $((steps + 42)) > trunc.txt 2>&1 || { cat trunc.txt; fail "resume after truncation"; }
grep -q "$(basename "$newest")" trunc.txt || { cat trunc.txt; fail "the truncated file was not named"; }

# Retention: the last 3, nothing else of the trainer's; a user's file is left alone.
echo "keep me" > "$ck/notes.txt"
"$bin" "${args[@]}" --steps $((steps + 45)) > keep.txt 2>&1 || { cat keep.txt; fail "retention run"; }
n=$(ls $ck | grep -Ec '^ckpt-[0-9]{10}\.h5$')
[ "$n" -eq 3 ] || { ls -l $ck; fail "$n checkpoints kept, expected 3"; }
[ -f "$ck/notes.txt" ] || fail "a user's file was deleted"

# SIGTERM: finish the step, save, exit 0; the checkpoint is that step's.
"$bin" "${args[@]}" --save-every 0 > term.txt 2>&1 &
pid=$!
for _ in $(seq 300); do
  n=$(grep -c '"step"' run/metrics.jsonl 2>/dev/null || true)
  [ "${n:-0}" -gt $((steps + 48)) ] && break
  sleep 0.1
done
kill -TERM $pid
wait $pid
rc=$?
cat term.txt | tail -3
[ $rc -eq 0 ] || fail "SIGTERM: exit code $rc"
grep -q "stopped by SIGTERM after step" term.txt || fail "SIGTERM: no message"
last=$(grep -Eo 'after step [0-9]+' term.txt | awk '{print $3}')
[ "$(cat $ck/latest)" = "$(printf 'ckpt-%010d.h5' "$last")" ] || fail "SIGTERM: latest is $(cat $ck/latest), not step $last"
echo "PASSED"
