#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests
# need, then runs the format check, clippy and every test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the integration tests call: curl (an independent SOCKS client), ip
# (iproute2, to bring up loopback in a test's own network namespace) and python3
# with PySocks (an independent UDP client); openssl (the TLS tests' throw-away PKI
# and an independent TLS client); useradd and pam_unix (the PAM tests make a
# throw-away system user; both are in every Debian install, checked anyway);
# chromium and Node for the dashboard test.
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
ls /lib/*/security/pam_unix.so /usr/lib/*/security/pam_unix.so >/dev/null 2>&1 || missing+=(libpam-modules)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PySocks: an independent SOCKS5 UDP client for the UDP ASSOCIATE tests.
if ! python3 -c 'import socks' 2>/dev/null; then
    echo "==> installing PySocks"
    if ! command -v python3 >/dev/null 2>&1; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-socks
    else
        python3 -m pip install --quiet PySocks 2>/dev/null \
            || python3 -m pip install --quiet --break-system-packages PySocks 2>/dev/null \
            || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-socks; }
    fi
fi

# The dashboard's browser test: Debian's chromium, driven by playwright-core.
browser_missing=()
[ -x /usr/bin/chromium ] || browser_missing+=(chromium)
command -v node >/dev/null 2>&1 || browser_missing+=(nodejs npm)
if [ ${#browser_missing[@]} -gt 0 ]; then
    echo "==> installing ${browser_missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${browser_missing[@]}"
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "==> installing playwright-core (tests/browser)"
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi
# With this set, the browser test fails (instead of skipping) if any of it is missing.
export RUSTSOCKS_BROWSER_TESTS=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings

echo "==> cargo test"
cargo test --all-features --locked
