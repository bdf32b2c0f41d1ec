#!/usr/bin/env bash
# Builds tapwire, brings up a two-node lab in network namespaces (two pods per node, each
# pod's eth0 a TAP held by tapwire-dataplane), and for each mode — unencapsulated, IPIP,
# VXLAN — shows what "Life of a Packet in Kubernetes, part 2" shows for Calico: the pod's
# routes and neighbour table, a ping across nodes, and the packets on the underlay.
# Everything it creates is removed when it ends. Needs root (namespaces, TAP devices).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ping >/dev/null || need+=(iputils-ping)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --workspace --bins
exec target/release/tapwire-lab demo "$@"
