#!/usr/bin/env bash
# Memory after a burst: opens N idle tunnels through a fresh RustSocks, closes them,
# and samples the proxy's resident memory (VmRSS) before, at the peak, right after
# the close, and after the next trim check (server/trim.rs: every 10 s, once 1,000
# connections have closed since the peak). Loopback only.
#
#   loadtests/burst_memory.sh [TUNNELS]      default 9000
set -euo pipefail
cd "$(dirname "$0")/.."
tunnels=${1:-9000}
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# Two descriptors per tunnel in the proxy, one per tunnel here, plus the targets'.
ulimit -n 20000

echo "==> building (release)"
cargo build --release --quiet --bin rustsocks --bin rustsocks-bench
printf '[server]\nbind_port = 21501\nmax_connections = 10000\nmax_connections_per_ip = 10000\n[api]\nenabled = false\n[sessions]\nenabled = false\n[logging]\nlevel = "warn"\n' >"$work/rustsocks.toml"
target/release/rustsocks --config "$work/rustsocks.toml" 2>"$work/log" &
pid=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/21501) 2>/dev/null && break
    sleep 0.05
done
before=$(rss)
# `idle` holds the tunnels for --hold-secs, reports the peak growth, then closes them.
target/release/rustsocks-bench --proxy 127.0.0.1:21501 idle --tunnels "$tunnels" --pid "$pid" --hold-secs 2 | tail -1
sleep 1
closed=$(rss)
sleep 20
trimmed=$(rss)
echo "tunnels=$tunnels rss_kb: fresh=$before after_close=$closed after_trim_check=$trimmed"
