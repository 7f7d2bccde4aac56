#!/usr/bin/env bash
# Open MPI's "ssh" for tests/comm/two_hosts.sh: mpirun --mca plm_rsh_agent runs
#   netns_agent.sh HOST COMMAND...
# to start its daemon (orted) on HOST, the way it would run `ssh HOST COMMAND...`. Here HOST
# is an address of one of the test's network namespaces; VT_NETNS_HOSTS (set by two_hosts.sh)
# maps addresses to namespaces as "ADDR=NAMESPACE ADDR=NAMESPACE". The command runs inside
# that namespace (ip netns exec) and in a UTS namespace of its own whose hostname is the
# namespace's name, so the two "hosts" differ in name as well as in network: Open MPI keeps
# its session directories (/tmp/ompi.HOSTNAME.UID) and PMIx rendezvous files apart by
# hostname. As with ssh, the command words are joined and run by /bin/sh -c.
set -euo pipefail

# ssh-style options (-x, -o ...) would come first; Open MPI passes none to an agent it does
# not know, but skip them anyway.
while (($#)) && [[ $1 == -* ]]; do
  case $1 in
    -o | -p | -l | -i) shift 2 ;;
    *) shift ;;
  esac
done
(($# >= 2)) || {
  echo "netns_agent.sh: usage: netns_agent.sh HOST COMMAND..." >&2
  exit 255
}
host=$1
shift

ns=""
for pair in ${VT_NETNS_HOSTS:-}; do
  if [[ ${pair%%=*} == "$host" ]]; then
    ns=${pair#*=}
  fi
done
if [[ -z $ns ]]; then
  echo "netns_agent.sh: no namespace for host '$host' in VT_NETNS_HOSTS='${VT_NETNS_HOSTS:-}'" >&2
  exit 255
fi

# shellcheck disable=SC2016  # $0 and $1 are expanded by the inner shell
exec ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$1"' "$ns" "$*"
