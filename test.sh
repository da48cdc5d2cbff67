#!/usr/bin/env bash
# The whole test suite, as README says and CI runs it: `cargo test` on the default
# build, then the same suite on the build with fleet mode (`--features fleet`; its
# tests start their own etcd members), in a target dir of its own outside the clone
# (RALPH_SUPERVISE_FLEET_DIR, default /var/tmp/ralph-supervise-fleet) so that neither
# build displaces the other. Arguments go to both runs (`./test.sh fleet::`).
# The fleet build needs protoc (Debian: protobuf-compiler): without it the second run
# is skipped with the reason printed, except under CI (`CI` set), where that fails.
set -euo pipefail
cd "$(dirname "$0")"
cargo test "$@"
if ! command -v protoc >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    echo "protoc is needed to build fleet mode (Debian: protobuf-compiler)" >&2
    exit 1
  fi
  echo "skipped the fleet-mode suite: protoc not installed (Debian: protobuf-compiler)" >&2
  exit 0
fi
CARGO_TARGET_DIR=${RALPH_SUPERVISE_FLEET_DIR:-/var/tmp/ralph-supervise-fleet} \
  cargo test --features fleet "$@"
