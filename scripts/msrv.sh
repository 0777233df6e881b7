#!/usr/bin/env bash
# Check that each published crate's declared `rust-version` (its MSRV) is true for the lockfile
# and for its own code:
#
# 1. every locked dependency the crate builds with (normal and build dependencies, all of its
#    features, on this host) declares a rust-version no newer than the crate's;
# 2. clippy's `incompatible_msrv` lint (which reads rust-version) finds no standard library item
#    newer than the MSRV in the crates' code.
#
# Dev-dependencies (proptest, tokio, criterion) and loom (only under `--cfg loom`) are not part
# of what a user builds, so they do not count; the README ("Minimum supported Rust version")
# says what the test suite and the loom models need. Needs `jq`.
#
#   scripts/msrv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "scripts/msrv.sh needs jq (apt-get install jq)"; exit 1; }

host=$(rustc -vV | sed -n 's/^host: //p')
metadata=$(cargo metadata --format-version 1 --all-features --locked)
declared() {
    jq -r --arg n "$1" '.packages[] | select(.name == $n and .source == null) | .rust_version' <<<"$metadata"
}
needs() {
    jq -r --arg n "$1" --arg v "$2" \
        '[.packages[] | select(.name == $n and .version == $v) | .rust_version // "0"][0] // "0"' <<<"$metadata"
}
# `newer a b`: version a is newer than b.
newer() {
    [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ]
}

failed=0
# A package and the features a user may turn on (the facade's `durable` feature is the
# mvstm-durable package, checked on its own with its own rust-version).
check() {
    local pkg=$1
    shift
    local msrv highest=0 highest_by="" bad=0
    msrv=$(declared "$pkg")
    while read -r name version; do
        version=${version#v}
        case $name in mvstm*) continue ;; esac
        local need
        need=$(needs "$name" "$version")
        if newer "$need" "$highest"; then
            highest=$need
            highest_by="$name $version"
        fi
        if newer "$need" "$msrv"; then
            echo "FAIL $pkg (rust-version $msrv): $name $version needs Rust $need"
            bad=1
            failed=1
        fi
    done < <(cargo tree --locked -p "$pkg" "$@" -e normal,build --target "$host" --prefix none \
        | sed 's/ (.*//' | sort -u)
    [ $bad = 1 ] || echo "ok   $pkg: rust-version $msrv; its dependencies need at most $highest ($highest_by)"
}
check mvstm-core
check mvstm-collections
check mvstm-lifecycle --all-features
check mvstm --features collections,lifecycle,async,serde,tracing
check mvstm-durable

echo "-- clippy::incompatible_msrv over the crates' code"
cargo clippy --locked --workspace --exclude mvstm-benches --lib --all-features -- \
    -A clippy::all -D clippy::incompatible_msrv

exit $failed
