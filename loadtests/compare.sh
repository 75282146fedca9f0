#!/usr/bin/env bash
# Runs rustsocks-bench scenarios against several proxies (or configurations), in
# rounds so every variant sees the same machine conditions, and prints medians with
# min-max. Loopback only. Results (JSON lines) go to loadtests/results/.
#
#   loadtests/compare.sh peers [ROUNDS]     RustSocks shipped (embedded defaults), lean (sessions
#                                           and API off) and shipped with per-core runtimes vs
#                                           microsocks vs Dante vs HAProxy (plain TCP forwarder,
#                                           no SOCKS) vs --direct
#   loadtests/compare.sh names [ROUNDS]     shipped RustSocks, CONNECT by IPv4 address vs by the
#                                           name "localhost"; prints the ratio domain / ipv4
#   loadtests/compare.sh runtimes [ROUNDS]  shipped RustSocks on the shared work-stealing runtime
#                                           vs per-core runtimes, order alternating by round
#   loadtests/compare.sh tls [ROUNDS]       shipped RustSocks, SOCKS inside TLS vs plain SOCKS on
#                                           the same process (server.plain_bind); needs openssl
#   loadtests/compare.sh targets [ROUNDS]   targets inside the load generator vs standalone
#                                           ones (`rustsocks-bench target`), for lean RustSocks
#                                           and --direct: what the choice of target costs
#   loadtests/compare.sh sessions [ROUNDS]  RustSocks with session tracking off vs on
#                                           (BASELINE=PATH adds sessions-on-before)
#   loadtests/compare.sh pool [ROUNDS]      pool off vs on, target 5 ms away (needs root:
#                                           scripts/netns-latency.sh sets up the round trip)
#   loadtests/compare.sh acl [ROUNDS]       RustSocks with no access rules vs 1,000 rules that
#                                           all pass the load (ACL_RULES=N for another count,
#                                           0 for an A/A run); prints the ratio of the rates
#
# Installs microsocks, dante-server and haproxy with apt-get when `peers` needs them.
# BASELINE=PATH (a rustsocks binary built from an earlier commit) adds the variant
# "rustsocks-before" to `peers`, with the shipped configuration: a before/after of a
# change in one interleaved run.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:?usage: loadtests/compare.sh peers|names|runtimes|tls|targets|sessions|pool|acl [ROUNDS]}
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
# The commit measured, copied into every JSON line ("+dirty": the code differs from
# it; "unknown": not a git work tree, an exported copy, say).
rev=$(git rev-parse --short=12 HEAD 2>/dev/null) || rev=unknown
[ "$rev" = unknown ] || git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || rev="$rev+dirty"

# wait_port PORT [HOST]: waits (at most 10 s) until something listens on
# HOST:PORT (127.0.0.1 unless given).
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on ${2:-127.0.0.1} port $1" >&2
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

# start_shipped PORT API_PORT [SERVER_KEYS] [BINARY]: RustSocks as it runs with no
# configuration file (the embedded defaults that config/rustsocks.toml lists), but
# for its ports: session tracking on, with its SQLite history in its own directory
# under $work (the default relative database_url); the management API on, on
# API_PORT instead of 9090 so that several run side by side; logging at info (a
# successful session logs nothing). Prints its pid.
start_shipped() {
    local port=$1 api=$2 server_keys=${3:-} binary=${4:-$PWD/target/release/rustsocks} dir="$work/rs-$1"
    mkdir -p "$dir"
    printf '[server]\nbind_port = %s\n%b\n[api]\nport = %s\n' "$port" "$server_keys" "$api" >"$dir/rustsocks.toml"
    (cd "$dir" && exec "$binary" --config rustsocks.toml >/dev/null 2>"$dir/log") &
    echo $!
}

# with_target [both]: starts a standalone `rustsocks-bench target` (echo, sink and
# source on three consecutive ports, the next free ones from 21400) and sets $tgt to
# its echo address, for a variant's --target. With `both`, a second one listens on the
# same ports on ::1, so that a CONNECT to "localhost" reaches a target whichever
# address the proxy's resolver gives first (getaddrinfo with this machine's
# /etc/hosts: 127.0.0.1 only; a resolver that also answers ::1 for localhost, dialled
# IPv6 first, would otherwise pay a refused dial per session). Not in a subshell: it
# keeps the port count.
next_target=21400
v6_targets=()
with_target() {
    local base=$next_target
    next_target=$((base + 3))
    "$bench" target --bind "127.0.0.1:$base" >/dev/null 2>"$work/target-$base.log" &
    pids+=("$!")
    if [ "${1:-}" = both ]; then
        "$bench" target --bind "[::1]:$base" >/dev/null 2>"$work/target-$base-v6.log" &
        pids+=("$!")
        v6_targets+=("$base")
    fi
    tgt="127.0.0.1:$base"
}

# start_haproxy PORT TARGET_PORT: HAProxy in `mode tcp`, a plain forwarder (no SOCKS):
# PORT, PORT+1 and PORT+2 forward to TARGET_PORT, +1 and +2 (echo, sink, source of a
# standalone target). Two threads (like RustSocks' default of one per CPU on 2 cores),
# room for the 2,000 tunnels of `idle`, no logging, no splicing. Prints its pid (the
# one process: -db keeps it in the foreground, not a master and a worker).
start_haproxy() {
    [ -x /usr/sbin/haproxy ] || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
    local conf="$work/haproxy-$1.cfg" i
    {
        printf 'global\n    maxconn 4096\n    nbthread 2\n'
        printf 'defaults\n    mode tcp\n    maxconn 4096\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
        for i in 0 1 2; do
            printf 'listen fwd%s\n    bind 127.0.0.1:%s\n    server target%s 127.0.0.1:%s\n' "$i" $(($1 + i)) "$i" $(($2 + i))
        done
    } >"$conf"
    /usr/sbin/haproxy -db -f "$conf" >/dev/null 2>"$work/haproxy-$1.log" &
    echo $!
}

start_microsocks() {
    command -v microsocks >/dev/null || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq microsocks >/dev/null; }
    microsocks -i 127.0.0.1 -p "$1" >/dev/null 2>&1 &
    echo $!
}

start_dante() {
    command -v danted >/dev/null || [ -x /usr/sbin/danted ] || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dante-server >/dev/null; }
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

# acl_rules N: an [acl] section of N rules, none of which refuses the load
# generator's CONNECTs (to 127.0.0.1, from 127.0.0.1, no authentication), so every
# session is still decided by the matcher: rules that block other v4 and v6 address
# blocks (prefix lengths /8 to /32 and /32 to /128), exact and wildcard names, a third of
# them with a condition (users, groups, ports, commands, clients); `*` rules whose
# condition these clients do not meet; and, last, the rule that allows the load:
# 127.0.0.0/8 and ::1, found through the address index.
acl_rules() {
    awk -v n="$1" 'BEGIN {
        srand(14)
        print "[acl]\ndefault_policy = \"allow\""
        print "[[acl.groups]]\nname = \"contractors\"\nmembers = [\"carol\", \"dave\"]"
        split("8 12 16 16 20 24 24 24 28 32 32", v4, " ")
        split("32 48 48 56 64 64 128", v6, " ")
        for (i = 0; i < n - 1; i++) {
            print "[[acl.rules]]\naction = \"block\""
            if (i % 250 == 125) {
                # A `*` rule: checked on every decision, matching none of the load.
                any = int(i / 250) % 3
                if (any < 1) print "users = [\"guest\"]"
                else if (any < 2) print "clients = [\"192.0.2.0/24\", \"2001:db8::/32\"]"
                else print "ports = [25, \"6660-6669\"]"
                print "destinations = [\"*\"]"
                continue
            }
            k = int(rand() * 100)
            if (k < 40) {
                len = v4[1 + int(rand() * 11)]
                a = (11 + int(rand() * 90)) * 16777216 + int(rand() * 16777216)
                m = 2 ^ (32 - len); a = int(a / m) * m
                d = sprintf("%d.%d.%d.%d/%d", int(a / 16777216), int(a / 65536) % 256, int(a / 256) % 256, a % 256, len)
            } else if (k < 55) {
                len = v6[1 + int(rand() * 7)]
                # Eight 16-bit groups under 2400::/8, host bits cleared.
                d = ""
                for (j = 1; j <= 8; j++) {
                    v = j == 1 ? 9216 + int(rand() * 256) : int(rand() * 65536)
                    bits = len - (j - 1) * 16
                    if (bits <= 0) v = 0
                    else if (bits < 16) v = int(v / 2 ^ (16 - bits)) * 2 ^ (16 - bits)
                    d = d (j > 1 ? ":" : "") sprintf("%x", v)
                }
                d = d "/" len
            } else if (k < 75) {
                d = sprintf("host%d.corp%d.example", i, int(rand() * 50))
            } else {
                d = sprintf("*.svc%d.example.com", i)
            }
            print "destinations = [\"" d "\"]"
            c = int(rand() * 15)
            if (c == 0) print "users = [\"carol\"]"
            else if (c == 1) print "groups = [\"contractors\"]"
            else if (c == 2) print "ports = [22, 3389, \"8000-8999\"]"
            else if (c == 3) print "commands = [\"bind\", \"udp\"]"
            else if (c == 4) print "clients = [\"10." int(rand() * 256) ".0.0/16\"]"
        }
        print "[[acl.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\", \"::1\"]"
        print "description = \"the targets of the load generator\""
    }'
}

# variants: "label port pid api target extra..." lines: port 0 means --direct; api
# is the RustSocks management API's port (for `pool` and the counters of `acl`);
# target is --target (a standalone target's echo address); extra, the rest of the
# line, are more options for the load generator (`--dest domain`). A "-" (or
# nothing, at the end) for none of api and target.
variants=()
# ratio: "NUMERATOR DENOMINATOR" labels whose rates summarize.py also gives as a ratio.
ratio=
# haproxy_target: the standalone target behind the `haproxy` variant (its fresh
# processes for `idle` forward there too).
haproxy_target=
case $what in
    peers)
        # Every variant has a standalone target of its own (see loadtests/MANUAL.md,
        # "Which target"): HAProxy cannot reach the load generator's own targets,
        # whose ports change with every run, and a target shared by all would make
        # each variant's connects step over the previous variant's TIME_WAIT sockets.
        with_target; p=$(start_shipped 21080 21180); pids+=("$p"); variants+=("rustsocks 21080 $p 21180 $tgt")
        with_target; p=$(start_rustsocks 21085 '[sessions]\nenabled = false'); pids+=("$p"); variants+=("rustsocks-lean 21085 $p - $tgt")
        with_target; p=$(start_shipped 21083 21183 'runtime = "per-core"'); pids+=("$p"); variants+=("rustsocks-percore 21083 $p 21183 $tgt")
        if [ -n "${BASELINE:-}" ]; then
            with_target; p=$(start_shipped 21084 21184 '' "$(realpath "$BASELINE")"); pids+=("$p"); variants+=("rustsocks-before 21084 $p 21184 $tgt")
        fi
        with_target; p=$(start_microsocks 21081); pids+=("$p"); variants+=("microsocks 21081 $p - $tgt")
        with_target; p=$(start_dante 21082); pids+=("$p"); variants+=("dante 21082 $p - $tgt")
        # HAProxy: the load generator goes --direct to HAProxy's frontends, which
        # forward to the standalone target: a connection through a forwarder, no SOCKS.
        with_target; haproxy_target=${tgt##*:}
        p=$(start_haproxy 21086 "$haproxy_target"); pids+=("$p"); variants+=("haproxy 0 $p - 127.0.0.1:21086")
        with_target; variants+=("direct 0 0 - $tgt")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000" "rate --concurrency 200 --count 20000"
                   "throughput --streams 1 --secs 3" "throughput --streams 8 --secs 3" "idle --tunnels 2000")
        ratio="rustsocks haproxy"
        ;;
    names)
        # One shipped process, two variants: the same process answers both kinds of
        # CONNECT, so the ratio has no process-to-process difference in it (an A/A
        # run of two identical processes differed by +-5 %, see `acl`); the order
        # alternates, and each variant has its own standalone target, the domain
        # variant's on 127.0.0.1 and ::1 (see with_target).
        p=$(start_shipped 21120 21121); pids+=("$p")
        with_target; variants+=("dest-ipv4 21120 $p 21121 $tgt --dest ipv4")
        with_target both; variants+=("dest-domain 21120 $p 21121 $tgt --dest domain")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000")
        ratio="dest-domain dest-ipv4"
        ;;
    runtimes)
        # The shipped configuration on each `server.runtime`, the order alternating
        # by round: in `peers`, whose order is fixed, the first RustSocks variant
        # ran ~20 % below the third whichever runtime it had (BENCHMARKS.md).
        with_target; p=$(start_shipped 21140 21141); pids+=("$p"); variants+=("shared 21140 $p 21141 $tgt")
        with_target; p=$(start_shipped 21142 21143 'runtime = "per-core"'); pids+=("$p"); variants+=("per-core 21142 $p 21143 $tgt")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000" "rate --concurrency 200 --count 20000")
        ratio="per-core shared"
        ;;
    tls)
        # One shipped process with a TLS listener and a plain one beside it
        # (server.plain_bind): the same process answers both, so the ratio has no
        # process-to-process difference in it. A throw-away P-256 CA and server
        # certificate for localhost, made with openssl. The TLS handshake (a full
        # one every session: the load generator keeps no session tickets) counts
        # in each session's time.
        command -v openssl >/dev/null || { echo "tls needs openssl (apt-get install openssl)" >&2; exit 1; }
        pki="$work/pki"; mkdir -p "$pki"
        (cd "$pki" &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
                -days 2 -subj "/CN=compare.sh CA" -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
                -subj "/CN=localhost" 2>/dev/null &&
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext &&
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                -out server.pem -extfile server.ext 2>/dev/null)
        tls_keys="plain_bind = \"127.0.0.1:21151\"\n[server.tls]\nenabled = true\ncertificate = \"$pki/server.pem\"\nprivate_key = \"$pki/server.key\""
        p=$(start_shipped 21150 21152 "$tls_keys"); pids+=("$p")
        with_target; variants+=("plain 21151 $p 21152 $tgt")
        with_target; variants+=("tls 21150 $p 21152 $tgt --tls-ca $pki/ca.pem")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000" "throughput --streams 1 --secs 3")
        ratio="tls plain"
        ;;
    targets)
        # The same lean RustSocks process and --direct, each with the load
        # generator's own targets (inside its process, new ports every run) and with
        # a standalone target (another process, fixed ports).
        p=$(start_rustsocks 21130 '[sessions]\nenabled = false'); pids+=("$p")
        variants+=("lean-embedded 21130 $p - -")
        with_target; variants+=("lean-standalone 21130 $p - $tgt")
        variants+=("direct-embedded 0 0 - -")
        with_target; variants+=("direct-standalone 0 0 - $tgt")
        scenarios=("latency --count 5000" "rate --concurrency 50 --count 20000" "rate --concurrency 200 --count 20000"
                   "throughput --streams 1 --secs 3" "throughput --streams 8 --secs 3")
        ratio="lean-standalone lean-embedded"
        ;;
    sessions)
        p=$(start_rustsocks 21090 '[sessions]\nenabled = false'); pids+=("$p"); variants+=("sessions-off 21090 $p")
        p=$(start_rustsocks 21091 "[sessions]\\nenabled = true\\ndatabase_url = \"sqlite://$work/sessions.db\""); pids+=("$p"); variants+=("sessions-on 21091 $p")
        if [ -n "${BASELINE:-}" ]; then
            # The same configuration on an earlier build: a before/after in one run.
            p=$(start_rustsocks 21092 "[sessions]\\nenabled = true\\ndatabase_url = \"sqlite://$work/sessions-before.db\"" '' "$(realpath "$BASELINE")"); pids+=("$p"); variants+=("sessions-on-before 21092 $p")
        fi
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
    acl)
        # The API is on in both, for the decision counters printed at the end.
        off='[sessions]\nenabled = false\n[api]\nport = 21195'
        p=$(start_rustsocks 21110 "$off"); pids+=("$p"); variants+=("acl-none 21110 $p 21195")
        acl_n=${ACL_RULES:-1000}
        # ACL_RULES=0: the second process has no rules either (an A/A run: the noise floor).
        rules=''; [ "$acl_n" -gt 0 ] && rules="\n$(acl_rules "$acl_n")"
        p=$(start_rustsocks 21111 "${off/21195/21196}$rules"); pids+=("$p"); variants+=("acl-$acl_n 21111 $p 21196")
        scenarios=("rate --concurrency 50 --count 20000" "latency --count 5000")
        ratio="acl-$acl_n acl-none"
        ;;
    *) echo "unknown comparison: $what" >&2; exit 2 ;;
esac
# Everything must listen before the first run: proxies, APIs, HAProxy's frontends
# and the standalone targets. Otherwise the logs say why, and the comparison stops.
for v in "${variants[@]}"; do
    read -r _ port _ api target _ <<<"$v"
    for p in "$port" "$api" "${target:+${target#127.0.0.1:}}"; do
        [[ $p =~ ^[1-9][0-9]*$ ]] || continue
        wait_port "$p" || { tail -n 5 "$work"/*.log "$work"/rs-*/log >&2 2>/dev/null; exit 1; }
    done
done
[ -z "$haproxy_target" ] || wait_port "$haproxy_target"
for p in "${v6_targets[@]}"; do wait_port "$p" ::1; done

# start_fresh LABEL PORT [TARGET_PORT]: a new process of variant LABEL on PORT (an
# API, if any, on PORT+1; HAProxy on PORT..PORT+2, forwarding to TARGET_PORT..+2);
# prints its pid. `idle` measures memory growth from a baseline, so each run needs a
# process that has not already grown for an earlier round's tunnels (measured:
# microsocks read 11.8 KB per tunnel from a fresh process and 5.3 KB from a reused one).
start_fresh() {
    case $1 in
        rustsocks) start_shipped "$2" $(($2 + 1)) ;;
        rustsocks-lean) start_rustsocks "$2" '[sessions]\nenabled = false' ;;
        rustsocks-percore) start_shipped "$2" $(($2 + 1)) 'runtime = "per-core"' ;;
        rustsocks-before) start_shipped "$2" $(($2 + 1)) '' "$(realpath "$BASELINE")" ;;
        microsocks) start_microsocks "$2" ;;
        haproxy) start_haproxy "$2" "$3" ;;
        *) echo "no fresh start for $1" >&2; return 1 ;;
    esac
}
fresh_port=21300
failures=0
tick=$(getconf CLK_TCK)
# cpu_ticks PID: the CPU time (user + system, of every thread, and of children it
# has reaped: Dante's) the process has used so far, in ticks; 0 for no process
# (`direct`). Recorded per run: how much work a proxy does per session moves
# less with the machine's load than its rate does.
cpu_ticks() {
    if [ "$1" = 0 ] || [ ! -r "/proc/$1/stat" ]; then echo 0; return; fi
    awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat"
}

echo "==> $rounds round(s) of ${#scenarios[@]} scenario(s) x ${#variants[@]} variant(s) at commit $rev; results in $out"
for round in $(seq 1 "$rounds"); do
    # The order rotates from round to round, so that no variant always runs in
    # the same place: the one that runs right after another's 20,000 sessions
    # finds the port space full of TIME_WAIT sockets, and its connect()s pay for
    # the search (in a fixed order the first RustSocks variant ran ~20 % below the
    # third, whichever configuration it had; BENCHMARKS.md). Two variants
    # alternate; N variants over R rounds shift by N/R places each round.
    n=${#variants[@]}
    step=$(( n / rounds > 1 ? n / rounds : 1 ))
    shift_by=$(( (round - 1) * step % n ))
    order=("${variants[@]:shift_by}" "${variants[@]:0:shift_by}")
    for scenario in "${scenarios[@]}"; do
        for v in "${order[@]}"; do
            read -r label port pid api target extra <<<"$v"
            [ "$api" = - ] && api=
            [ "$target" = - ] && target=
            args=(--label "$label")
            [ -n "$target" ] && args+=(--target "$target")
            if [ "$port" = 0 ]; then args+=(--direct); else args+=(--proxy "127.0.0.1:$port"); fi
            # shellcheck disable=SC2206 # extra is a list of options, split on spaces
            args+=($extra)
            if [[ $scenario == pool* ]]; then
                scenario_args=($scenario --api "127.0.0.1:$api")
            elif [[ $scenario == idle* ]]; then
                [ "$label" = direct ] && continue
                # Dante forks per client; its parent's memory is not the whole story.
                [ "$label" = dante ] && continue
                fresh_port=$((fresh_port + 3))
                if ! pid=$(start_fresh "$label" "$fresh_port" "$haproxy_target") || ! wait_port "$fresh_port"; then
                    echo "  FAILED ($label $scenario): no fresh process on port $fresh_port" >&2
                    failures=$((failures + 1))
                    continue
                fi
                pids+=("$pid")
                if [ "$label" = haproxy ]; then
                    args=(--label "$label" --direct --target "127.0.0.1:$fresh_port")
                else
                    args=(--label "$label" --proxy "127.0.0.1:$fresh_port" ${target:+--target "$target"})
                fi
                scenario_args=($scenario --pid "$pid")
            else
                scenario_args=($scenario)
            fi
            echo "  round $round: $label ${scenario_args[*]}" >&2
            log="$work/run-$round-$label-${scenario%% *}.log"
            before=$(cpu_ticks "$pid")
            # A failed run is reported and skipped; the comparison goes on.
            if ! "$bench" "${args[@]}" "${scenario_args[@]}" 2>"$log" >"$work/line"; then
                echo "  FAILED ($label ${scenario_args[*]}): $(tail -n 1 "$log")" >&2
                failures=$((failures + 1))
            else
                cpu=$(( $(cpu_ticks "$pid") - before ))
                sed "s/}\$/,\"round\":$round,\"command\":\"${scenario%% *}\",\"commit\":\"$rev\",\"proxy_cpu_ticks\":$cpu,\"cpu_ticks_per_s\":$tick}/" "$work/line" >>"$out"
            fi
            if [[ $scenario == idle* ]]; then kill "$pid" 2>/dev/null || true; fi
        done
    done
done

python3 loadtests/summarize.py "$out" ${ratio:+--ratio $ratio}
if [ "$what" = acl ]; then
    # What decided the sessions: every one by a rule with the rules loaded, by the
    # default policy without (the API's Prometheus counters); and the proxy's CPU
    # time (user + system, /proc/PID/stat) per 1,000 sessions over the whole run,
    # which moves less than a rate with what else runs on the machine.
    tick=$(getconf CLK_TCK)
    for v in "${variants[@]}"; do
        read -r label _ pid api _ <<<"$v"
        decisions=$(curl -s "http://127.0.0.1:$api/metrics" | grep '^rustsocks_acl_decisions_total' | grep -v ' 0$')
        total=$(awk '{ n += $NF } END { print n }' <<<"$decisions")
        cpu=$(awk -v t="$tick" -v n="$total" '{ sub(/.*\) /, ""); printf "%.1f s, %.1f ms per 1,000 sessions", ($12 + $13) / t, n ? ($12 + $13) / t / n * 1e6 : 0 }' "/proc/$pid/stat")
        echo "$label: $(tr '\n' ' ' <<<"$decisions"); CPU $cpu"
    done
fi
if [ "$failures" -gt 0 ]; then
    echo "$failures run(s) failed; see the lines marked FAILED above" >&2
fi
