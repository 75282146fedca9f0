#!/usr/bin/env bash
# An emulated network round trip on loopback-only machines (no netem): a network
# namespace holding a target, reached through two TUN devices joined by
# `rustsocks-bench wire`, which delays every packet by half the round trip.
#
#   scripts/netns-latency.sh up [RTT_MS] [LOSS]   set up (tears down a previous setup first)
#   scripts/netns-latency.sh down                 tear down (safe to repeat)
#
# After `up`, three `rustsocks-bench target`s (echo, sink, source on consecutive
# ports) listen at 10.203.0.2:7000, :7010 and :7020 inside namespace rsbench; this
# side of the wire is 10.203.0.1. Separate targets let comparisons give each variant
# its own destination: every short connection leaves a TIME_WAIT entry for its
# address pair for 60 s, and one pair has only ~28,000 ephemeral ports.
#
# While up, net.ipv4.tcp_tw_reuse is 1 (Linux's default, 2, reuses TIME_WAIT ports
# for loopback only). Without it, after some 20,000 sessions through the wire the
# proxy spent 85 % of its CPU in the kernel's ephemeral port search (connect(2)
# stepping over TIME_WAIT entries) and runs measured that, not the proxy. `down`
# restores the previous value. Needs root.
set -Eeuo pipefail  # -E: a failing command inside a function reaches the ERR trap
cd "$(dirname "$0")/.."

ns=rsbench
here=rsw0
there=rsw1
run=/run/rustsocks-netns
bench=${BENCH:-target/release/rustsocks-bench}

down() {
    if [ -e "$run/tw_reuse" ]; then
        sysctl -qw net.ipv4.tcp_tw_reuse="$(cat "$run/tw_reuse")" || true
        rm -f "$run/tw_reuse"
    fi
    for f in "$run"/*.pid; do
        [ -e "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$here" 2>/dev/null || true
}

up() {
    local rtt=${1:-5} loss=${2:-0}
    down
    [ -x "$bench" ] || cargo build --release --quiet --bin rustsocks-bench
    mkdir -p "$run"
    sysctl -n net.ipv4.tcp_tw_reuse >"$run/tw_reuse"
    sysctl -qw net.ipv4.tcp_tw_reuse=1
    ip netns add "$ns"
    "$bench" wire --a "$here" --b "$there" --rtt-ms "$rtt" --loss "$loss" >"$run/wire.log" 2>&1 &
    echo $! >"$run/wire.pid"
    for _ in $(seq 1 100); do
        ip link show "$there" >/dev/null 2>&1 && break
        sleep 0.05
    done
    ip link set "$there" netns "$ns"
    ip addr add 10.203.0.1/30 dev "$here"
    ip link set "$here" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 10.203.0.2/30 dev "$there"
    ip -n "$ns" link set "$there" up
    for port in 7000 7010 7020; do
        ip netns exec "$ns" "$bench" target --bind "10.203.0.2:$port" >"$run/target-$port.log" 2>&1 &
        echo $! >"$run/target-$port.pid"
    done
    for port in 7000 7010 7020; do
        for _ in $(seq 1 100); do
            (exec 3<>"/dev/tcp/10.203.0.2/$port") 2>/dev/null && continue 2
            sleep 0.05
        done
        echo "the target at 10.203.0.2:$port did not come up; see $run/*.log" >&2
        return 1
    done
    echo "up: targets at 10.203.0.2:7000, :7010, :7020; round trip ${rtt} ms"
}

case ${1:-} in
    # A setup that fails half-way is torn down, so no namespace, wire or sysctl is
    # left behind.
    up)
        shift
        trap 'echo "setup failed; tearing down" >&2; down' ERR
        up "$@"
        trap - ERR
        ;;
    down) down; echo "down" ;;
    *) echo "usage: $0 up [RTT_MS] [LOSS] | down" >&2; exit 2 ;;
esac
