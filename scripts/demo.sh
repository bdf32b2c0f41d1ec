#!/usr/bin/env bash
# Builds tapwire and walks through "Life of a Packet in Kubernetes, part 2" (Calico) on
# tapwire's own control plane, in network namespaces: two nodes each running
# tapwire-dataplane and tapwire-control over one shared datastore; an IPIP pool applied
# with `tapwirectl apply -f`; pods added by invoking the `tapwire` CNI plugin the way a
# container runtime does; `tapwirectl get workloadendpoints` and `tapwirectl routes`; a
# pod's routes and neighbour table; a cross-node ping and the IPIP packets on the
# underlay; then the pool switched to `ipipMode: Never` (plain pod addresses on the wire,
# with the time the switch took) and to `vxlanMode: Always` (UDP 4789, VNI 4096).
#
#   scripts/demo.sh                                  # the control-plane walkthrough
#   scripts/demo.sh --dataplane-only [--mode ipip]   # the dataplane alone, lab-fed
#
# Everything it creates is removed when it ends (also on Ctrl-C). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
# The etcd client crate compiles etcd's protos with protoc at build time.
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# tapwire-lab runs the binaries next to it: the dataplane, the agent, the CNI plugin
# (`tapwire`) and the CLI (`tapwirectl`).
cargo build --release --workspace --bins
exec target/release/tapwire-lab demo "$@"
