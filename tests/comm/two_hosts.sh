#!/usr/bin/env bash
# Runs an MPI program as 2 ranks on 2 "hosts" of this machine, so the multi-node code path
# (TCP between nodes, one rank per node) is tested in CI without a cluster:
#   tests/comm/two_hosts.sh PROGRAM [ARGS...]
# Two network namespaces (vt2h<PID>a and vt2h<PID>b) are joined by a veth pair on a private
# /24 (10.<PID/256%256>.<PID%256>.0/24, host A .1, host B .2); each has only lo and its veth.
# mpirun starts inside A with a hostfile of the two addresses (1 slot each), and Open MPI
# talks TCP only (pml ob1, btl tcp,self, the runtime's OOB too, both held to the /24). To
# start its daemon on B it runs tests/comm/netns_agent.sh in place of ssh, which enters B
# with `ip netns exec`. Each host also gets its own hostname (a UTS namespace named after
# the network namespace), so Open MPI sees two nodes: rank 0 on A, rank 1 on B, each a local
# rank 0. Every rank prints a "two_hosts: rank R of N: host, netns, address" line to stderr
# before PROGRAM starts, and at the end the script prints the bytes that crossed the veth
# pair. The exit status is PROGRAM's (mpirun's), 124 if the run passed VT_TWO_HOSTS_TIMEOUT
# seconds (default 300; keep it below the CTest TIMEOUT), 130/143 on Ctrl-C/SIGTERM, and 77
# (CTest's SKIP_RETURN_CODE) when namespaces cannot be made here: not root, no `ip`, no
# `unshare`, no mpirun ($VT_MPIRUN, else the PATH's), or the kernel refuses. The namespaces
# and their processes are always removed on exit (trap), with the temporary folder and Open
# MPI's session directories; those of a run that was killed with SIGKILL are removed by the
# next run once its PID is gone.
set -uo pipefail

if (($# < 1)) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"
  (($# >= 1)) && exit 0
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
agent="$here/netns_agent.sh"
timeout_s="${VT_TWO_HOSTS_TIMEOUT:-300}"

log() { echo "two_hosts: $*" >&2; }
skip() {
  log "SKIP: $*"
  exit 77
}

mpirun="${VT_MPIRUN:-mpirun}" # as in the other tests/comm scripts
for tool in ip unshare timeout "$mpirun"; do
  command -v "$tool" >/dev/null || skip "'$tool' is not installed"
done
((EUID == 0)) || skip "creating network namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
[[ -x $agent ]] || {
  log "$agent is missing or not executable"
  exit 1
}

id=$$
nsA="vt2h${id}a" nsB="vt2h${id}b" # also the veth names (<= 15 characters)
net="10.$(((id >> 8) & 255)).$((id & 255))"
addrA="$net.1" addrB="$net.2"
tmp=""
child=""

tmpbase="${TMPDIR:-/tmp}"
remove_ns() { # NAME: kill what still runs in it, delete it and Open MPI's session directory
  local pids
  rm -rf "$tmpbase/ompi.$1".* # the session directory of a host is named after its hostname
  [[ -e /run/netns/$1 ]] || return 0
  pids="$(ip netns pids "$1" 2>/dev/null)"
  # shellcheck disable=SC2086  # a list of PIDs
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null
  ip netns del "$1" 2>/dev/null || log "could not delete network namespace $1"
}
# shellcheck disable=SC2317  # run by the traps
teardown() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
    kill -KILL "$child" 2>/dev/null
  fi
  remove_ns "$nsA"
  remove_ns "$nsB"
  [[ -z $tmp ]] || rm -rf "$tmp"
  exit "$rc"
}
# shellcheck disable=SC2317  # run by the traps
on_signal() { # NAME CODE: stop mpirun (timeout passes the signal on), then exit
  log "caught SIG$1, stopping the run"
  if [[ -n $child ]]; then
    kill -TERM "$child" 2>/dev/null
    wait "$child" 2>/dev/null
  fi
  exit "$2"
}
trap teardown EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# Leftovers of runs that were SIGKILLed (no trap ran): their PID no longer exists.
if [[ -d /run/netns ]]; then
  for f in /run/netns/vt2h*[ab]; do
    [[ -e $f ]] || continue
    name="${f##*/}" pid="${name#vt2h}"
    pid="${pid%[ab]}"
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if ! kill -0 "$pid" 2>/dev/null; then
      log "removing stale network namespace $name"
      remove_ns "$name"
      rm -rf "$tmpbase/vt2h$pid".*
    fi
  done
fi

if ! err="$(ip netns add "$nsA" 2>&1)"; then
  skip "cannot create a network namespace ($err)"
fi
ip netns add "$nsB" || skip "cannot create a second network namespace"
if ! err="$(ip link add "$nsA" netns "$nsA" type veth peer name "$nsB" netns "$nsB" 2>&1)"; then
  skip "cannot create a veth pair ($err)"
fi
setup_host() { # NAMESPACE ADDRESS
  ip -n "$1" link set lo up &&
    ip -n "$1" addr add "$2/24" dev "$1" &&
    ip -n "$1" link set "$1" up
}
if ! setup_host "$nsA" "$addrA" || ! setup_host "$nsB" "$addrB"; then
  log "could not configure the veth pair"
  exit 1
fi
log "host A: netns $nsA, $addrA/24 on $nsA; host B: netns $nsB, $addrB/24 on $nsB"

tmp="$(mktemp -d "$tmpbase/vt2h$id.XXXXXX")"
printf '%s slots=1\n%s slots=1\n' "$addrA" "$addrB" >"$tmp/hostfile"
# Runs on each host before PROGRAM: says where this rank is.
cat >"$tmp/rank.sh" <<'EOF'
#!/bin/sh
addrs=$(ip -o -4 addr show scope global | while read -r _ dev _ a _; do printf ' %s=%s' "$dev" "$a"; done)
echo "two_hosts: rank ${OMPI_COMM_WORLD_RANK:-?} of ${OMPI_COMM_WORLD_SIZE:-?}: host $(hostname), netns $(ip netns identify) ($(readlink /proc/self/ns/net)), address$addrs" >&2
exec "$@"
EOF
chmod +x "$tmp/rank.sh"

# shellcheck disable=SC2054  # tcp,self is one word
cmd=("$mpirun" -np 2 --hostfile "$tmp/hostfile" --map-by node --tag-output
  --mca plm rsh --mca plm_rsh_agent "$agent"
  --mca pml ob1 --mca btl tcp,self
  --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24")
if ((EUID == 0)); then
  cmd+=(--allow-run-as-root)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # for the daemon on B
fi
cmd+=("$tmp/rank.sh" "$@")

export VT_NETNS_HOSTS="$addrA=$nsA $addrB=$nsB"
# A batch system's variables would make mpirun use its allocation instead of the hostfile.
for v in $(compgen -e | grep -E '^(SLURM|PBS|LSB|LSF|PE_HOSTFILE|JOB_ID)' || true); do unset "$v"; done

log "in $nsA: ${cmd[*]}"
start=${EPOCHREALTIME/[,.]/}
# In the background so that the traps run while it works (bash defers them for a foreground
# child); mpirun runs in A, under a hostname of its own.
# shellcheck disable=SC2016  # $0 and $@ are expanded by the inner shell
timeout -k 15 "$timeout_s" ip netns exec "$nsA" unshare --uts \
  /bin/sh -c 'hostname "$0" && exec "$@"' "$nsA" "${cmd[@]}" &
child=$!
wait "$child"
rc=$?
child=""

elapsed="$(((${EPOCHREALTIME/[,.]/} - start) / 1000)) ms"
bytes() { ip netns exec "$1" cat "/sys/class/net/$1/statistics/$2_bytes" 2>/dev/null || echo "?"; }
log "veth traffic: $nsA sent $(bytes "$nsA" tx) bytes, received $(bytes "$nsA" rx) bytes"
if ((rc == 124)); then
  log "FAILED: timed out after ${timeout_s}s (VT_TWO_HOSTS_TIMEOUT)"
elif ((rc != 0)); then
  log "FAILED: exit status $rc after $elapsed"
else
  log "passed in $elapsed"
fi
exit "$rc"
