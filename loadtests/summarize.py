#!/usr/bin/env python3
"""Prints the median (min-max) of each figure per scenario and variant from
rustsocks-bench JSON lines: loadtests/summarize.py loadtests/results/FILE.jsonl

With --ratio NUM DEN (two labels), also the ratio NUM / DEN of each scenario's first
figure (sessions/s, MB/s or bytes/tunnel) and, for sessions, of the CONNECT-to-reply
p50: of the medians, and round by round."""
import json
import statistics
import sys


def key(r):
    s = r["scenario"]
    if s == "pool":
        return f"pool c={r.get('concurrency', 1)}"
    if s == "rate":
        return f"rate c={r['concurrency']}"
    if s == "throughput":
        return f"throughput {r['streams']} stream(s) {r['direction']}"
    if s == "idle":
        return f"idle {r['tunnels']} tunnels"
    return s


def pct(h, q):
    return h[q] if h else None


def figures(r):
    s = r["scenario"]
    if s in ("latency", "rate", "pool"):
        f = {"sessions/s": r["sessions_per_s"], "connect p50 us": pct(r["connect_reply_us"], "p50"),
             "connect p99 us": pct(r["connect_reply_us"], "p99"), "session p99 us": pct(r["session_us"], "p99"),
             "errors": r["errors"]}
        # The proxy's CPU time per 1,000 sessions (compare.sh reads it from /proc;
        # 0 for --direct, absent in older results).
        if r.get("proxy_cpu_ticks") and r.get("sessions"):
            f["cpu ms/1k"] = r["proxy_cpu_ticks"] / r["cpu_ticks_per_s"] / r["sessions"] * 1e6
        if s == "pool":
            f["hit %"] = 100 * r["pool"]["hit_rate"]
            f["unused dials %"] = 100 * r["pool"]["unused_dials_per_session"]
        return f
    if s == "throughput":
        return {"MB/s": r["mb_per_s"]}
    if s == "idle":
        return {"bytes/tunnel": r["bytes_per_tunnel"]}
    return {}


# Figures given as ratios besides each scenario's first: where a proxy's connect
# path (resolving a name, say) shows even when the rate is bound by something else.
RATIO_ALSO = ("connect p50 us",)


def ratios(records, num, den):
    """NUM / DEN of each scenario's first figure (and of RATIO_ALSO): of the
    medians, and per round."""
    by = {}
    for r in records:
        f = figures(r)
        if f and r["label"] in (num, den):
            # A --direct run's "CONNECT-to-reply" is a bare TCP connect: no ratio of it.
            also = [n for n in RATIO_ALSO if f.get(n) is not None and r.get("proxy")]
            for name in [next(iter(f))] + also:
                by.setdefault((key(r), name), {}).setdefault(r["label"], {})[r.get("round")] = f[name]
    for (k, name), labels in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] in RATIO_ALSO)):
        if num not in labels or den not in labels:
            continue
        a, b = labels[num], labels[den]
        med = statistics.median(a.values()) / statistics.median(b.values())
        rounds = [a[n] / b[n] for n in sorted(a, key=lambda n: n or 0) if n in b and b[n]]
        per = ", ".join(f"{x:.3f}" for x in rounds)
        print(f"{k:32} {num} / {den} {name}: {med:.3f} of the medians; by round {per}"
              + (f" (median {statistics.median(rounds):.3f})" if rounds else ""))


def main(path, ratio=None):
    groups = {}
    records = [json.loads(line) for line in open(path)]
    for r in records:
        groups.setdefault((key(r), r["label"]), []).append(figures(r))
    for (k, label), runs in sorted(groups.items()):
        parts = []
        for name in runs[0]:
            vals = [x[name] for x in runs if x.get(name) is not None]
            if not vals:
                continue
            fmt = "{:,.1f}" if name.endswith("%") else "{:,.0f}"
            med, lo, hi = (fmt.format(v) for v in (statistics.median(vals), min(vals), max(vals)))
            parts.append(f"{name} {med} ({lo}-{hi})")
        print(f"{k:32} {label:17} " + "; ".join(parts) + f"  [n={len(runs)}]")
    if ratio:
        ratios(records, *ratio)


if __name__ == "__main__":
    args = sys.argv[1:]
    ratio = None
    if "--ratio" in args:
        at = args.index("--ratio")
        ratio = args[at + 1:at + 3]
        del args[at:at + 3]
    main(args[0], ratio)
