#!/usr/bin/env bash
# Fleet-mode figures (BENCHMARKS.md, "Fleet mode"): acquisition latency against a local
# flock, failover time against the TTL, idle wake-ups of a fleet supervisor, and the
# default build against a baseline build (size, launch, memory).
#   bench/fleet.sh [--quick] [--base=REV]
# --base=REV also builds REV (say the commit before fleet mode) in a worktree under
# /var/tmp to compare the default build against. Needs cargo, gcc, python3, flock(1),
# protoc, etcd and etcdctl (Debian: protobuf-compiler, etcd-server, etcd-client).
# Installs nothing: it says what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo gcc python3 flock protoc etcd etcdctl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing; install it first" >&2; exit 1; }
done
args=()
base=""
for arg in "$@"; do
  case "$arg" in
    --base=*) base=${arg#--base=} ;;
    *) args+=("$arg") ;;
  esac
done
fleet_dir=${RALPH_SUPERVISE_FLEET_DIR:-/var/tmp/ralph-supervise-fleet}
cargo build --release --quiet
CARGO_TARGET_DIR="$fleet_dir" cargo build --release --quiet --features fleet
if [ -n "$base" ]; then
  tree=/var/tmp/ralph-supervise-bench-base
  rm -rf "$tree"
  git worktree prune
  git worktree add --quiet --detach "$tree" "$base"
  (cd "$tree" && CARGO_TARGET_DIR=/var/tmp/ralph-supervise-bench-base-target cargo build --release --quiet)
  git worktree remove --force "$tree"
  args+=("--base=/var/tmp/ralph-supervise-bench-base-target/release/ralph-supervise")
fi
mkdir -p target/bench
gcc -O2 -Wall -o target/bench/stamp bench/stamp.c
python3 bench/fleet.py "$fleet_dir/release/ralph-supervise" target/release/ralph-supervise \
  target/bench/stamp ${args[@]+"${args[@]}"}
