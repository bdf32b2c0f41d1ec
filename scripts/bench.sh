#!/usr/bin/env bash
# Measures tapwire against the kernel on this machine and writes bench-report/
# (results.json, report.md, chart.svg); the final table goes to stdout.
#
#   scripts/bench.sh            # full run: three rounds, median and min–max reported,
#                               # then a perf profile of each path (~15 minutes)
#   scripts/bench.sh --quick    # one round of short runs, for CI (~2.5 minutes)
#
# Any other arguments go to `tapwire-bench run` (e.g. --rounds 5, --out DIR,
# --skip fib|memory|cni|scale|paths|profile, --profile to profile a quick run). Needs root: the
# labs are network namespaces, veths and TAPs, all removed when the run ends, fails or is
# interrupted. The parts: route table (fib), dataplane memory, CNI ADD latency with 1 to
# 200 pods on one node (cni), the control plane on etcd with 1,000 and 5,000 simulated
# nodes (scale), the paths, and their profiles. The paths: pod → pod across
# two nodes (tapwire-none/-vxlan/-ipip against kernel-routed, two routed veth nodes, and
# kernel-vxlan), node → its own pod through the host path tapwire0 (tapwire-host, against
# kernel-host: the node's namespace → a veth pod, Calico's /32 route and proxy ARP) and
# pod → pod on one node (tapwire-local, against kernel-local); tapwire-host is also
# divided by tapwire-local. Each round also measures one TAP hop (a copy-only forwarder
# between two pod TAPs against kernel-local), from which each path's modelled floor in
# machine CPU s/Gbit is printed beside its measured figure (IPIP's built on
# kernel-routed-mtu, the kernel with MTU-sized packets on the underlay), with the highest
# TCP 1 ratio a forwarder at that floor could show. Targets are reported, not
# enforced: the exit status is non-zero only when a part of the run failed.
# nft (nftables) is what tapwire-control programs natOutgoing with on the host path.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/bench.sh: needs root (network namespaces, veths, TAP devices)" >&2
  exit 2
fi

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v bridge >/dev/null || need+=(iproute2)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
command -v sysctl >/dev/null || need+=(procps)
command -v nft >/dev/null || need+=(nftables)
# The etcd client crate compiles etcd's protos with protoc at build time.
command -v protoc >/dev/null || need+=(protobuf-compiler)
# The scale section runs a real etcd (with mutual TLS, certificates made by openssl).
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
command -v openssl >/dev/null || need+=(openssl)
# The full run profiles every path with perf; a quick run does only when asked.
quick=0
asked=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --profile) asked=1 ;;
  esac
done
profile=$(( quick == 0 || asked == 1 ))
if [ "$profile" -eq 1 ]; then
  command -v perf >/dev/null || need+=(linux-perf)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

target_dir="${CARGO_TARGET_DIR:-target}"
echo "==> cargo build --release (tapwire-dataplane, tapwire-control, tapwire, tapwirectl, tapwire-bench)"
cargo build --release --locked \
  -p tapwire-dataplane --bin tapwire-dataplane \
  -p tapwire-control --bin tapwire-control --bin tapwire --bin tapwirectl \
  -p tapwire-bench --bin tapwire-bench

# The labs take the tapwire binaries from this directory.
if [[ "$target_dir" = /* ]]; then
  export TAPWIRE_BIN_DIR="$target_dir/release"
else
  export TAPWIRE_BIN_DIR="$PWD/$target_dir/release"
fi

echo "==> tapwire-bench run $*"
exec "$TAPWIRE_BIN_DIR/tapwire-bench" run "$@"
