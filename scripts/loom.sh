#!/usr/bin/env bash
# Run the loom models of the engine (crates/mvstm-core/tests/loom.rs) at a preemption bound.
#
#   scripts/loom.sh        # bound 2 (what CI runs)
#   scripts/loom.sh 3      # bound 3 (longer; run by hand or on a schedule)
#   scripts/loom.sh 2 reclamation   # one model, by a test-name filter
#
# The loom build compiles every crate with `--cfg loom --cfg crossbeam_loom`, so it gets its own
# target directory and never invalidates the normal build's. See docs/loom.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bound=${1:-2}
shift || true
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="$bound"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/loom}"
# One model at a time: each prints its own execution count and time.
exec cargo test -p mvstm-core --release --test loom -- --nocapture --test-threads=1 "$@"
