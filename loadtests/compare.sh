#!/usr/bin/env bash
# Runs rustsocks-bench scenarios against several proxies (or configurations), in
# rounds so every variant sees the same machine conditions, and prints medians with
# min-max. Loopback only. Results (JSON lines) go to loadtests/results/.
#
#   loadtests/compare.sh peers [ROUNDS]     RustSocks (default, and 1 worker thread) vs --direct
#                                           vs microsocks vs Dante
#   loadtests/compare.sh sessions [ROUNDS]  RustSocks with session tracking off vs on
#   loadtests/compare.sh pool [ROUNDS]      pool off vs on, target 5 ms away (needs root:
#                                           scripts/netns-latency.sh sets up the round trip)
#
# Installs microsocks and dante-server with apt-get when `peers` needs them.
# BASELINE=PATH (a rustsocks binary built from an earlier commit) adds the variant
# "rustsocks-before" to `peers`, with the same configuration: a before/after of a
# change in one interleaved run.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:?usage: loadtests/compare.sh peers|sessions [ROUNDS]}
rounds=${2:-3}
work=$(mktemp -d)
pids=()
netns=false
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if $netns; then scripts/netns-latency.sh down >/dev/null; fi
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

# start_rustsocks PORT EXTRA_TOML [SERVER_KEYS] [BINARY]: starts RustSocks, prints its pid.
start_rustsocks() {
    local port=$1 extra=$2 server_keys=${3:-} binary=${4:-$PWD/target/release/rustsocks} dir="$work/rs-$1"
    mkdir -p "$dir"
    # An [api] section in EXTRA_TOML replaces the default (API off).
    local api='[api]\nenabled = false\n'
    [[ $extra == *"[api]"* ]] && api=''
    printf '[server]\nbind_port = %s\n%b\n%b[logging]\nlevel = "warn"\n%b\n' "$port" "$server_keys" "$api" "$extra" >"$dir/rustsocks.toml"
    (cd "$dir" && exec "$binary" --config rustsocks.toml >/dev/null 2>"$dir/log") &
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
        p=$(start_rustsocks 21083 '[sessions]\nenabled = false' 'worker_threads = 1'); pids+=("$p"); variants+=("rustsocks-1thread 21083 $p")
        if [ -n "${BASELINE:-}" ]; then
            p=$(start_rustsocks 21084 '[sessions]\nenabled = false' '' "$(realpath "$BASELINE")"); pids+=("$p"); variants+=("rustsocks-before 21084 $p")
        fi
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
    pool)
        netns=true
        scripts/netns-latency.sh up 5
        off='[sessions]\nenabled = false\n[api]\nport = 21190'
        # Each variant gets its own target (see scripts/netns-latency.sh on TIME_WAIT).
        p=$(start_rustsocks 21100 "$off"); pids+=("$p"); variants+=("pool-off 21100 $p 21190 10.203.0.2:7000")
        p=$(start_rustsocks 21101 "${off/21190/21191}\n[server.pool]\nenabled = true\nmax_idle_per_dest = 8\nmax_total_idle = 256"); pids+=("$p"); variants+=("pool-8 21101 $p 21191 10.203.0.2:7010")
        p=$(start_rustsocks 21102 "${off/21190/21192}\n[server.pool]\nenabled = true\nmax_idle_per_dest = 64\nmax_total_idle = 256"); pids+=("$p"); variants+=("pool-64 21102 $p 21192 10.203.0.2:7020")
        scenarios=("pool --concurrency 1 --count 500" "pool --concurrency 50 --count 3000")
        ;;
    *) echo "unknown comparison: $what" >&2; exit 2 ;;
esac
for v in "${variants[@]}"; do
    read -r _ port _ api _ <<<"$v"
    [ "$port" = 0 ] || wait_port "$port"
    [ -z "${api:-}" ] || wait_port "$api"
done

# start_fresh LABEL PORT: a new process of variant LABEL on PORT; prints its pid.
# `idle` measures memory growth from a baseline, so each run needs a process that
# has not already grown for an earlier round's tunnels (measured: microsocks read
# 11.8 KB per tunnel from a fresh process and 5.3 KB from a reused one).
start_fresh() {
    case $1 in
        rustsocks) start_rustsocks "$2" '[sessions]\nenabled = false' ;;
        rustsocks-1thread) start_rustsocks "$2" '[sessions]\nenabled = false' 'worker_threads = 1' ;;
        rustsocks-before) start_rustsocks "$2" '[sessions]\nenabled = false' '' "$(realpath "$BASELINE")" ;;
        microsocks) start_microsocks "$2" ;;
        *) echo "no fresh start for $1" >&2; return 1 ;;
    esac
}
fresh_port=21300
failures=0

echo "==> $rounds round(s) of ${#scenarios[@]} scenario(s) x ${#variants[@]} variant(s); results in $out"
for round in $(seq 1 "$rounds"); do
    for scenario in "${scenarios[@]}"; do
        for v in "${variants[@]}"; do
            read -r label port pid api target <<<"$v"
            args=(--label "$label")
            [ -n "${target:-}" ] && args+=(--target "$target")
            if [ "$port" = 0 ]; then args+=(--direct); else args+=(--proxy "127.0.0.1:$port"); fi
            if [[ $scenario == pool* ]]; then
                scenario_args=($scenario --api "127.0.0.1:$api")
            elif [[ $scenario == idle* ]]; then
                [ "$port" = 0 ] && continue
                # Dante forks per client; its parent's memory is not the whole story.
                [ "$label" = dante ] && continue
                fresh_port=$((fresh_port + 1))
                if ! pid=$(start_fresh "$label" "$fresh_port") || ! wait_port "$fresh_port"; then
                    echo "  FAILED ($label $scenario): no fresh process on port $fresh_port" >&2
                    failures=$((failures + 1))
                    continue
                fi
                pids+=("$pid")
                args=(--label "$label" --proxy "127.0.0.1:$fresh_port")
                scenario_args=($scenario --pid "$pid")
            else
                scenario_args=($scenario)
            fi
            echo "  round $round: $label ${scenario_args[*]}" >&2
            log="$work/run-$round-$label-${scenario%% *}.log"
            # A failed run is reported and skipped; the comparison goes on.
            if ! "$bench" "${args[@]}" "${scenario_args[@]}" 2>"$log" >"$work/line"; then
                echo "  FAILED ($label ${scenario_args[*]}): $(tail -n 1 "$log")" >&2
                failures=$((failures + 1))
            else
                sed "s/}\$/,\"round\":$round,\"command\":\"${scenario%% *}\"}/" "$work/line" >>"$out"
            fi
            if [[ $scenario == idle* ]]; then kill "$pid" 2>/dev/null || true; fi
        done
    done
done

python3 loadtests/summarize.py "$out"
if [ "$failures" -gt 0 ]; then
    echo "$failures run(s) failed; see the lines marked FAILED above" >&2
fi
