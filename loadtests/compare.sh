#!/usr/bin/env bash
# Runs rustsocks-bench scenarios against several proxies (or configurations), in
# rounds so every variant sees the same machine conditions, and prints medians with
# min-max. Loopback only. Results (JSON lines) go to loadtests/results/.
#
#   loadtests/compare.sh peers [ROUNDS]     RustSocks vs --direct vs microsocks vs Dante
#   loadtests/compare.sh sessions [ROUNDS]  RustSocks with session tracking off vs on
#
# Installs microsocks and dante-server with apt-get when `peers` needs them.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:?usage: loadtests/compare.sh peers|sessions [ROUNDS]}
rounds=${2:-3}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building (release)"
cargo build --release --quiet --bin rustsocks --bin rustsocks-bench
bench=target/release/rustsocks-bench
mkdir -p loadtests/results
out="loadtests/results/$(date -u +%Y%m%dT%H%M%SZ)-$what.jsonl"

# Waits (at most 10 s) until something listens on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# start_rustsocks PORT EXTRA_TOML: starts RustSocks, prints its pid.
start_rustsocks() {
    local port=$1 extra=$2 dir="$work/rs-$1"
    mkdir -p "$dir"
    printf '[server]\nbind_port = %s\n[api]\nenabled = false\n[logging]\nlevel = "warn"\n%b\n' "$port" "$extra" >"$dir/rustsocks.toml"
    (cd "$dir" && exec "$OLDPWD/target/release/rustsocks" --config rustsocks.toml >/dev/null 2>"$dir/log") &
    echo $!
}

start_microsocks() {
    command -v microsocks >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq microsocks >/dev/null; }
    microsocks -i 127.0.0.1 -p "$1" >/dev/null 2>&1 &
    echo $!
}

start_dante() {
    command -v danted >/dev/null || [ -x /usr/sbin/danted ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dante-server >/dev/null; }
    cat >"$work/danted.conf" <<CONF
logoutput: /dev/null
internal: 127.0.0.1 port = $1
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }
CONF
    /usr/sbin/danted -f "$work/danted.conf" -N 2 >/dev/null 2>&1 &
    echo $!
}

# variants: "label port pid" lines; a port of 0 means --direct.
variants=()
case $what in
    peers)
        p=$(start_rustsocks 21080 '[sessions]\nenabled = false'); pids+=("$p"); variants+=("rustsocks 21080 $p")
        p=$(start_microsocks 21081); pids+=("$p"); variants+=("microsocks 21081 $p")
        p=$(start_dante 21082); pids+=("$p"); variants+=("dante 21082 $p")
        variants+=("direct 0 0")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000" "rate --concurrency 200 --count 20000"
                   "throughput --streams 1 --secs 3" "throughput --streams 8 --secs 3" "idle --tunnels 2000")
        ;;
    sessions)
        p=$(start_rustsocks 21090 '[sessions]\nenabled = false'); pids+=("$p"); variants+=("sessions-off 21090 $p")
        p=$(start_rustsocks 21091 "[sessions]\\nenabled = true\\ndatabase_url = \"sqlite://$work/sessions.db\""); pids+=("$p"); variants+=("sessions-on 21091 $p")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000" "throughput --streams 1 --secs 3")
        ;;
    *) echo "unknown comparison: $what" >&2; exit 2 ;;
esac
for v in "${variants[@]}"; do
    read -r _ port _ <<<"$v"
    [ "$port" = 0 ] || wait_port "$port"
done

echo "==> $rounds round(s) of ${#scenarios[@]} scenario(s) x ${#variants[@]} variant(s); results in $out"
for round in $(seq 1 "$rounds"); do
    for scenario in "${scenarios[@]}"; do
        for v in "${variants[@]}"; do
            read -r label port pid <<<"$v"
            args=(--label "$label")
            if [ "$port" = 0 ]; then args+=(--direct); else args+=(--proxy "127.0.0.1:$port"); fi
            if [[ $scenario == idle* ]]; then
                [ "$port" = 0 ] && continue
                # Dante forks per client; its parent's memory is not the whole story.
                [ "$label" = dante ] && continue
                scenario_args=($scenario --pid "$pid")
            else
                scenario_args=($scenario)
            fi
            echo "  round $round: $label ${scenario_args[*]}" >&2
            "$bench" "${args[@]}" "${scenario_args[@]}" 2>/dev/null | sed "s/}\$/,\"round\":$round,\"command\":\"${scenario%% *}\"}/" >>"$out"
        done
    done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def key(r):
    s = r["scenario"]
    if s == "rate": return f"rate c={r['concurrency']}"
    if s == "throughput": return f"throughput {r['streams']} stream(s) {r['direction']}"
    if s == "idle": return f"idle {r['tunnels']} tunnels"
    return s
def fig(r):
    s = r["scenario"]
    if s in ("latency", "rate"):
        return {"sessions/s": r["sessions_per_s"], "connect p50 us": r["connect_reply_us"]["p50"] if r["connect_reply_us"] else None,
                "session p99 us": r["session_us"]["p99"] if r["session_us"] else None, "errors": r["errors"]}
    if s == "throughput": return {"MB/s": r["mb_per_s"]}
    if s == "idle": return {"bytes/tunnel": r["bytes_per_tunnel"]}
groups = {}
for r in rows:
    groups.setdefault((key(r), r["label"]), []).append(fig(r))
for (k, label), runs in sorted(groups.items()):
    parts = []
    for name in runs[0]:
        vals = [x[name] for x in runs if x[name] is not None]
        if not vals: continue
        parts.append(f"{name} {statistics.median(vals):,.0f} ({min(vals):,.0f}-{max(vals):,.0f})")
    print(f"{k:34} {label:14} " + "; ".join(parts) + f"  [n={len(runs)}]")
PY
