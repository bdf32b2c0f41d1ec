#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test:
# formatting, lints, unit and property tests, and the network-namespace end-to-end tests
# (which need root: they create namespaces, veths and TAP devices, and clean them up).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
command -v bridge >/dev/null || need+=(iproute2)
# natOutgoing: tapwire-control programs nftables through nft (a runtime dependency).
command -v nft >/dev/null || need+=(nftables)
# Real CNI plugins (tuning) for the chained-conflist tests.
[ -x /usr/lib/cni/tuning ] || need+=(containernetworking-plugins)
# The etcd client crate compiles etcd's protos with protoc at build time.
command -v protoc >/dev/null || need+=(protobuf-compiler)
# A real etcd and etcdctl: the etcd datastore's tests, and the lab's etcd cluster
# (integration/src/etcd.rs), whose members run in the lab's namespaces; a system etcd
# service the package may start on the host's loopback is neither used nor touched.
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
command -v openssl >/dev/null || need+=(openssl)
# BGP: the BIRD each lab node's tapwire-control runs, and the lab's router. The tests start
# their own, in their namespaces, with their files under the lab's directory; a system bird
# service the package may start is neither used nor touched.
[ -x /usr/sbin/bird ] || need+=(bird2)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build (binaries the end-to-end tests run)"
cargo build --workspace --bins --locked

echo "==> tests"
# The namespace tests each build a small cluster; on a 2-core machine running them one
# at a time keeps throughput measurements and timeouts meaningful.
cargo test --workspace --locked -- --test-threads=1

echo "==> fuzzing (every target briefly; scripts/fuzz.sh SECONDS for a longer run)"
bash scripts/fuzz.sh 10
