#!/usr/bin/env bash
# Run the stress, reclamation and lifecycle tests under AddressSanitizer (use-after-free,
# double free, out-of-bounds, leaks at exit). Needs the nightly toolchain (`-Zsanitizer` is
# unstable); without rust-src the standard library is not instrumented, but mvstm's own code,
# including every node it allocates and frees, is.
#
#   scripts/asan.sh                # the default set
#   scripts/asan.sh stress reclaim # only some test binaries
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "no nightly toolchain: AddressSanitizer needs one (rustup toolchain install nightly)" >&2
    exit 2
fi
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    tests=(stress reclaim model destructors tvar queue lifecycle commands)
fi
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
# A target dir of its own: instrumented artefacts must not mix with the normal build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/asan}"
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
cargo +nightly test --release --target x86_64-unknown-linux-gnu "${args[@]}" -- --test-threads=2
echo "== AddressSanitizer: no errors"
