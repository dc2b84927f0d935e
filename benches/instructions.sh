#!/usr/bin/env bash
# User-space instructions per delivered message, counted by callgrind: a
# figure that does not drift with the machine's speed or load, for A/B of
# hot-path changes on a noisy machine.
#
#   benches/instructions.sh [TERN_BINARY] [SUBSCRIBERS] [RATE] [DURATION]
#   PROTOCOL=nats benches/instructions.sh target/release/tern 8 20000 3s
#
# Runs TERN_BINARY (default target/release/tern) under valgrind's callgrind
# with one shard on CPU $SERVER_CPU, and target/release/tern-loadgen on CPU
# $CLIENT_CPU: 1 publisher, SUBSCRIBERS (default 8) subscribers, 128-byte
# payloads at RATE msgs/s (default 20,000: valgrind runs the relay ~50x
# slower) for DURATION plus a 1 s warm-up, on the line listener or, with
# PROTOCOL=nats, the NATS one. Then it dumps the counts, stops the relay by
# PID and prints the instructions over the deliveries measured (warm-up,
# start-up and idle polling included, so compare binaries at the same
# settings, not absolute values). Kernel time is not counted. The dump is
# left in $OUT (default target/instructions) for callgrind_annotate.
set -euo pipefail
TERN=${1:-target/release/tern}
SUBS=${2:-8}
RATE=${3:-20000}
DURATION=${4:-3s}
PROTOCOL=${PROTOCOL:-line}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
cd "$(dirname "$0")/.."
LOADGEN=target/release/tern-loadgen
OUT=${OUT:-target/instructions}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is required (apt-get install valgrind)" >&2; exit 1; }
[[ -x $LOADGEN ]] || { echo "instructions.sh: $LOADGEN not built (cargo build --release --workspace)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out*
port=$(( 20000 + RANDOM % 10000 ))
if [[ $PROTOCOL == nats ]]; then
    listen=(--listen "127.0.0.1:$(( port + 1 ))" --nats-listen "127.0.0.1:$port")
else
    listen=(--listen "127.0.0.1:$port" --nats-listen off)
fi
taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$TERN" --cores "$SERVER_CPU" "${listen[@]}" >"$OUT/tern.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 $pid 2>/dev/null || { echo "instructions.sh: tern exited; see $OUT/tern.log" >&2; exit 1; }
    sleep 0.1
done
taskset -c "$CLIENT_CPU" "$LOADGEN" --target "127.0.0.1:$port" --protocol "$PROTOCOL" --size 128 \
    --duration "$DURATION" --warmup 1s --cores "$CLIENT_CPU" --quiet --rate "$RATE" \
    --publishers 1 --subscribers "$SUBS" --json "$OUT/loadgen.json" >"$OUT/loadgen.txt" 2>&1
# Under valgrind the relay is too slow to stop within its flush time, so
# the counts are dumped while it runs, then it is killed.
callgrind_control --dump "$pid" >/dev/null 2>&1
kill -9 $pid
wait $pid 2>/dev/null || true
trap - EXIT
ir=$(sed -n 's/^summary: //p' "$OUT"/callgrind.out.* | head -1)
got=$(sed -n 's/^  "received": \([0-9]*\),\{0,1\}$/\1/p' "$OUT/loadgen.json" | head -1)
awk -v ir="$ir" -v n="$got" -v p="$PROTOCOL" -v s="$SUBS" -v b="$TERN" \
    'BEGIN { printf "%s, %s, 1→%s: %d deliveries, %.0f instructions per delivery\n", b, p, s, n, ir / n }'
