#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests
# need, then runs the format check, clippy and every test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the integration tests call: curl (an independent SOCKS client) and ip
# (iproute2, to bring up loopback in a test's own network namespace).
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings

echo "==> cargo test"
cargo test --all-features --locked
