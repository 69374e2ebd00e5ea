#!/usr/bin/env bash
# Network-namespace NAT lab, shell counterpart of ats-p2p-swarm/tests/support/netlab.rs.
#
#   interop/netlab.sh up   [--random|--random-a|--random-b] [NAME]
#                                              build a lab (default NAME: atsnl-sh)
#   interop/netlab.sh down [NAME]              tear it down
#   interop/netlab.sh exec NAME NODE CMD...    run CMD in NODE (pub, ra, rb, ha, hb)
#   interop/netlab.sh clean                    delete every namespace starting with atsnl-
#
# Topology (same as the Rust harness; nothing is connected to the host's own network):
#
#   NAME-pub  br0 198.18.0.1/24   "internet": bootstrap and DHT nodes
#      |  (bridge)
#   NAME-ra   wan 198.18.0.2/24, lan 10.201.1.1/24   NAT router A (MASQUERADE)
#   NAME-rb   wan 198.18.0.3/24, lan 10.201.2.1/24   NAT router B (MASQUERADE)
#   NAME-ha   lan 10.201.1.2/24 via 10.201.1.1       private host A
#   NAME-hb   lan 10.201.2.2/24 via 10.201.2.1       private host B
#
# --random: both routers MASQUERADE --random-fully (a new random public port per destination), so
# holepunching between the two hosts cannot work; --random-a / --random-b: only router A / B does
# (hyperdht's random-NAT punch can cross one such NAT).
set -euo pipefail

PREFIX=atsnl-

die() { echo "netlab.sh: $*" >&2; exit 1; }

up() {
  local random_a=0 random_b=0 name=${PREFIX}sh
  while [ $# -gt 0 ]; do
    case "$1" in
      --random) random_a=1 random_b=1 ;;
      --random-a) random_a=1 ;;
      --random-b) random_b=1 ;;
      *) name=$1 ;;
    esac
    shift
  done
  command -v ip >/dev/null || die "ip (iproute2) missing"
  command -v iptables >/dev/null || die "iptables missing: apt-get install -y iptables"
  local pub=$name-pub
  ip netns add "$pub"
  ip -n "$pub" link set lo up
  ip -n "$pub" link add br0 type bridge
  ip -n "$pub" addr add 198.18.0.1/24 dev br0
  ip -n "$pub" link set br0 up
  local side i=2
  for side in a b; do
    local r=$name-r$side h=$name-h$side n=$((i - 1))
    ip netns add "$r"
    ip netns add "$h"
    ip -n "$r" link set lo up
    ip -n "$h" link set lo up
    ip link add wan netns "$r" type veth peer name "up$side" netns "$pub"
    ip -n "$pub" link set "up$side" master br0 up
    ip -n "$r" addr add "198.18.0.$i/24" dev wan
    ip -n "$r" link set wan up
    ip link add lan netns "$r" type veth peer name lan netns "$h"
    ip -n "$r" addr add "10.201.$n.1/24" dev lan
    ip -n "$r" link set lan up
    ip -n "$h" addr add "10.201.$n.2/24" dev lan
    ip -n "$h" link set lan up
    ip -n "$h" route add default via "10.201.$n.1"
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    local rnd=()
    local random=$random_a
    [ "$side" = b ] && random=$random_b
    [ "$random" = 1 ] && rnd=(--random-fully)
    ip netns exec "$r" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE "${rnd[@]}"
    ip netns exec "$r" iptables -P FORWARD DROP
    ip netns exec "$r" iptables -A FORWARD -i lan -o wan -j ACCEPT
    ip netns exec "$r" iptables -A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    # Unsolicited packets to the router itself are dropped before conntrack confirms an entry for
    # them; otherwise an early punch probe would claim the tuple and force a port remap.
    ip netns exec "$r" iptables -A INPUT -i wan -j DROP
    i=$((i + 1))
  done
  echo "$name"
}

down() {
  local name=${1:-${PREFIX}sh} node pid
  for node in ha hb ra rb pub; do
    if ip netns list | grep -qw "$name-$node"; then
      for pid in $(ip netns pids "$name-$node"); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$name-$node"
    fi
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  exec) shift; name=$1 node=$2; shift 2; exec ip netns exec "$name-$node" "$@" ;;
  clean)
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX" || true); do
      for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns"
    done ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
