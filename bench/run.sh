#!/usr/bin/env bash
# Benchmarks ralph-supervise against flock(1) (and tini, hyperfine-free) in one run.
#   bench/run.sh [--quick] [--only=containment|--only=scale]   prints the Markdown report; BENCHMARKS.md holds the last one
# (bench/phases.py, bench/timeline.py and bench/ab.py take a launch, a hand-off or a
# change apart; see BENCHMARKS.md.)
# Needs: cargo, gcc (for the tiny C child used to timestamp), python3, flock(1), git.
# Installs nothing: it says what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo gcc python3 flock git; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing; install it first" >&2; exit 1; }
done
# The scale figures alone (bench/scale.py; issue 18): the release build and stamp only.
case " $* " in
  *" --only=scale "*)
    cargo build --release --quiet
    mkdir -p target/bench
    gcc -O2 -Wall -o target/bench/stamp bench/stamp.c
    exec python3 bench/scale.py target/release/ralph-supervise target/bench/stamp "$@"
    ;;
esac
command -v tini >/dev/null || echo "bench: tini not installed; comparing against flock(1) only (apt-get install tini adds it)" >&2
cargo build --release --quiet
# The same code linked statically (no dynamic loader at start): the fastest way to ship
# it. Built with an explicit --target so that proc-macros stay dynamic.
host=$(rustc -vV | sed -n 's/^host: //p')
static_bin=""
case "$host" in
  *-linux-gnu)
    RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
      cargo build --release --quiet --target "$host" --target-dir target/static
    static_bin="--static=target/static/$host/release/ralph-supervise"
    ;;
esac
mkdir -p target/bench
gcc -O2 -Wall -o target/bench/stamp bench/stamp.c
python3 bench/bench.py target/release/ralph-supervise target/bench/stamp $static_bin "$@"
# A launch taken apart (bench/phases.py: perf tracepoints, root only).
case " $* " in
  *" --only="*) ;;
  *) if [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
       echo; echo "### a launch taken apart (bench/phases.py, perf tracepoints)"; echo
       python3 bench/phases.py target/release/ralph-supervise
     else
       echo "bench: the launch's phases need root and perf; skipped" >&2
     fi ;;
esac
# The full run ends with the scale figures.
case " $* " in
  *" --only="*) ;;
  *) python3 bench/scale.py target/release/ralph-supervise target/bench/stamp "$@" ;;
esac
