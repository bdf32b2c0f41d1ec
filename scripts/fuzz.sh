#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo fuzz with the sanitizer off, so a stable toolchain
# does) and runs each for a while; fails if one finds a crash (the input is kept under
# fuzz/artifacts/<target>/, replay it with `cargo fuzz run -s none <target> <file>`).
#
#   scripts/fuzz.sh                 # every target, 10 s each (what scripts/test.sh runs)
#   scripts/fuzz.sh 600             # every target, 10 minutes each
#   scripts/fuzz.sh 60 cni          # one target
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

echo "==> building the fuzz targets"
cargo fuzz build -s none

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${seconds} s"
  if ! cargo fuzz run -s none "$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "scripts/fuzz.sh: $target failed; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
done
