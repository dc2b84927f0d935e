#!/usr/bin/env bash
# A/B of two tern binaries on the same workloads, interleaved, to tell
# whether a change moved throughput or CPU per message:
#
#   benches/ab.sh OLD_TERN NEW_TERN [RUNS] [DURATION]
#
# e.g. build the old commit in a git worktree, then
#   benches/ab.sh /tmp/old/target/release/tern target/release/tern 5 4s
#
# Each binary runs one shard on CPU $SERVER_CPU, measured on its line
# listener, or with PROTOCOL=nats on its NATS listener (both binaries must
# have one); the generator (target/release/tern-loadgen) runs on CPU $CLIENT_CPU with
# 128-byte payloads at full speed, 1→1 and 1→8, the binaries alternating
# first and second every round. Per run it prints messages delivered per
# second and the server's CPU time per delivery (utime + stime from
# /proc/PID/stat over the whole run, warm-up included, divided by the
# measured deliveries: a ratio between binaries, not an absolute cost);
# then the medians and new ÷ old, and the median of each run's own new ÷
# old. Every process it starts is stopped by PID on exit.
set -euo pipefail
OLD=${1:?usage: benches/ab.sh OLD_TERN NEW_TERN [RUNS] [DURATION]}
NEW=${2:?usage: benches/ab.sh OLD_TERN NEW_TERN [RUNS] [DURATION]}
RUNS=${3:-5}
DURATION=${4:-4s}
PROTOCOL=${PROTOCOL:-line}
[[ $PROTOCOL == line || $PROTOCOL == nats ]] || { echo "ab.sh: PROTOCOL is line or nats, not $PROTOCOL" >&2; exit 1; }
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
cd "$(dirname "$0")/.."
LOADGEN=${LOADGEN:-target/release/tern-loadgen}
[[ -x $LOADGEN ]] || { echo "ab.sh: $LOADGEN not built (cargo build --release -p tern-loadgen)" >&2; exit 1; }
OUT=$(mktemp -d)
declare -A BIN=([old]=$OLD [new]=$NEW) PORT PID
cleanup() {
    for s in old new; do
        [[ -n ${PID[$s]:-} ]] && kill "${PID[$s]}" 2>/dev/null && wait "${PID[$s]}" 2>/dev/null
    done
    rm -rf "$OUT"
    return 0
}
trap cleanup EXIT
port=$(( 20000 + RANDOM % 20000 ))
for s in old new; do
    PORT[$s]=$port
    if [[ $PROTOCOL == nats ]]; then
        listen=(--listen "127.0.0.1:$(( port + 1000 ))" --nats-listen "127.0.0.1:$port")
    else
        # `--nats-listen off` where the binary knows the flag (older ones do not).
        listen=(--listen "127.0.0.1:$port")
        "${BIN[$s]}" --help 2>/dev/null | grep -q -- --nats-listen && listen+=(--nats-listen off)
    fi
    taskset -c "$SERVER_CPU" "${BIN[$s]}" --cores "$SERVER_CPU" "${listen[@]}" \
        >"$OUT/$s.log" 2>&1 &
    PID[$s]=$!
    port=$(( port + 1 ))
done
for s in old new; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null && break
        kill -0 "${PID[$s]}" 2>/dev/null || { echo "ab.sh: $s exited; see its log" >&2; cat "$OUT/$s.log" >&2; exit 1; }
        sleep 0.1
    done
done
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
jtop() { sed -n "s/^  \"$2\": \([-0-9.eE+]*\),\{0,1\}$/\1/p" "$1" | head -1; }
hz=$(getconf CLK_TCK)
for run in $(seq "$RUNS"); do
    for subs in 1 8; do
        order="old new"
        (( run % 2 == 0 )) && order="new old"
        for s in $order; do
            json=$OUT/$subs-$s-$run.json
            t0=$(ticks "${PID[$s]}")
            taskset -c "$CLIENT_CPU" "$LOADGEN" --target "127.0.0.1:${PORT[$s]}" --protocol "$PROTOCOL" \
                --size 128 --duration "$DURATION" --warmup 1s --cores "$CLIENT_CPU" --quiet \
                --rate 0 --window 1000 --publishers 1 --subscribers "$subs" --json "$json" >/dev/null 2>&1 || true
            t1=$(ticks "${PID[$s]}")
            rps=$(jtop "$json" received_per_s)
            got=$(jtop "$json" received)
            ns=$(awk -v t=$(( t1 - t0 )) -v hz="$hz" -v r="${got:-0}" 'BEGIN { if (r > 0) printf "%.1f", t / hz * 1e9 / r }')
            echo "1→$subs $s run $run: ${rps:-?} deliveries/s, ${ns:-?} ns CPU per delivery"
            echo "$subs $s ${rps:-} ${ns:-} $run" >>"$OUT/rows"
        done
    done
done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
for subs in 1 8; do
    for col in 3 4; do
        o=$(awk -v s="$subs" -v c="$col" '$1 == s && $2 == "old" { print $c }' "$OUT/rows" | median)
        n=$(awk -v s="$subs" -v c="$col" '$1 == s && $2 == "new" { print $c }' "$OUT/rows" | median)
        what="deliveries/s"; (( col == 4 )) && what="ns CPU per delivery"
        # The machine's speed drifts between runs (here it was bimodal:
        # whole runs about 25% apart), so the ratio within each run, where
        # old and new ran back to back, is the steadier figure.
        paired=$(awk -v s="$subs" -v c="$col" '$1 == s { v[$5, $2] = $c; runs[$5] = 1 }
            END { for (r in runs) if (v[r, "old"] > 0 && v[r, "new"] > 0) print v[r, "new"] / v[r, "old"] }' "$OUT/rows" | median)
        awk -v o="$o" -v n="$n" -v p="$paired" -v w="$what" -v s="$subs" \
            'BEGIN { printf "1→%s %s: old %.4g, new %.4g, new ÷ old %.3f (median of the runs'"'"' ratios %.3f)\n", s, w, o, n, (o > 0 ? n / o : 0), p }'
    done
done
