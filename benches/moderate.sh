#!/usr/bin/env bash
# Moderate load: what a relay costs where most relays spend their lives, at
# a fixed rate well below saturation. For each server, 1 publisher -> 1
# subscriber, 128-byte payloads, at $RATE msgs/s (default 50,000):
#   - server CPU, % of one core (utime + stime from /proc/PID/stat over
#     $SAMPLE seconds in the middle of the measured run);
#   - system calls per delivered message on the server (`perf stat -e
#     raw_syscalls:sys_enter` over $SAMPLE seconds of the warm-up, which
#     is lengthened for it; empty without perf). Tracing system calls costs
#     CPU per call (about 6 points of tern's CPU and 7 of nats-server's at
#     50,000 msgs/s here), so neither the CPU figure nor the latency is
#     taken while perf is attached;
#   - latency p50 / p99 / p99.9 from tern-loadgen (intended send time).
# Beside tern and nats-server runs "forwarder" (tern-forwarder, from
# loadgen/): a blocking thread per connection that turns PUB lines into MSG
# lines and does nothing else, the floor of what a relay costs here.
#
#   benches/moderate.sh                    # tern (line, NATS), nats-server
#   OLD=/tmp/old/tern benches/moderate.sh  # also an older tern binary
#   RATE=10k RUNS=5 benches/moderate.sh
#   CROSS=1 benches/moderate.sh            # tern only, cross-shard path
#   NOISY=1 benches/moderate.sh            # beside a busy neighbour
#
# Every server runs one shard (nats-server: GOMAXPROCS=1) on CPU
# $SERVER_CPU, the generator on CPU $CLIENT_CPU. With CROSS=1, tern runs two
# shards, on CPUs $SERVER_CPU and $CLIENT_CPU, the publisher connected to
# shard 0 and the subscriber to shard 1 (`--shard-listen`; its NATS
# listeners too), and nats-server is left out; the generator
# then shares CPU $CLIENT_CPU with shard 1 (this needs only two CPUs; it
# runs with --no-busy-poll), so
# compare those rows with each other, not with the same-shard ones. Runs
# are interleaved (the order rotates every round); the table shows medians.
# With NOISY=1 a busy loop (a shell `while :`) shares CPU $SERVER_CPU with
# the server during each run: spinning harder must not buy the quiet
# figures at a neighbour's expense.
# Every process this script starts is stopped by PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
OUT=${OUT:-$TARGET_DIR/moderate}
RATE=${RATE:-50000}
SAMPLE=${SAMPLE:-3}
CROSS=${CROSS:-0}
NOISY=${NOISY:-0}
OLD=${OLD:-}

command -v taskset >/dev/null || die "taskset (util-linux) is required"
log "building tern, tern-loadgen and tern-forwarder (release)..."
cargo build --release --quiet -p tern -p tern-loadgen
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.row
HAVE_PERF=0
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
    HAVE_PERF=1
else
    log "perf with tracepoints is not available: no system call counts"
fi

SERVERS=()
for t in tern ${OLD:+tern-old}; do
    SERVERS+=("$t" "$t-nats")
done
if (( !CROSS )); then
    SERVERS+=(forwarder)
    if command -v nats-server >/dev/null; then SERVERS+=(nats); else log "nats-server is not installed: skipped"; fi
fi

binary_of() { case $1 in tern-old*) echo "$OLD" ;; *) echo "$TERN" ;; esac; }
protocol_of() { case $1 in *nats*) echo nats ;; *) echo line ;; esac; }

# run NAME ROUND: one measured run; appends "cpu syscalls_per_msg" to
# $OUT/NAME.row and leaves the generator's JSON in $OUT/NAME-ROUND.json.
run() {
    local name=$1 round=$2 bin port nport sport proto pid targets
    proto=$(protocol_of "$name")
    port=$(free_port) nport=$(free_port) sport=$(free_port)
    if [[ $name == nats ]]; then
        start_server "$name" "$port" env GOMAXPROCS=1 taskset -c "$SERVER_CPU" nats-server -a 127.0.0.1 -p "$port"
        targets=(--target "127.0.0.1:$port")
    elif [[ $name == forwarder ]]; then
        start_server "$name" "$port" taskset -c "$SERVER_CPU" "$FORWARDER" --listen "127.0.0.1:$port"
        targets=(--target "127.0.0.1:$port")
    else
        bin=$(binary_of "$name")
        if (( CROSS )); then
            start_server "$name" "$port" "$bin" --cores "$SERVER_CPU,$CLIENT_CPU" --listen "127.0.0.1:$port" \
                --nats-listen "127.0.0.1:$nport" --shard-listen "127.0.0.1:$sport"
            local p0=$sport p1=$((sport + 1))
            if [[ $proto == nats ]]; then
                # The shards' private NATS listeners take free ports: the
                # start-up summary names them.
                # (written just after the listeners open: wait for it).
                local nats_part=""
                for _ in $(seq 50); do
                    nats_part=$(sed -n 's/.*NATS on \(.*\)/\1/p' "$OUT/$name.log" | head -1)
                    [[ -n $nats_part ]] && break
                    sleep 0.1
                done
                shard_port() { grep -o "127.0.0.1:[0-9]* (NATS, shard $1 only)" <<<"$nats_part" | sed 's/.*:\([0-9]*\) .*/\1/' || true; }
                p0=$(shard_port 0) p1=$(shard_port 1)
                [[ -n $p0 && -n $p1 ]] || die "no per-shard NATS listeners in $OUT/$name.log"
            fi
            # The generator sleeps when idle rather than spin, to leave
            # shard 1 its share of the CPU they share.
            targets=(--target "127.0.0.1:$p0" --subscriber-protocol "$proto" --subscriber-target "127.0.0.1:$p1" --no-busy-poll)
        else
            start_server "$name" "$port" taskset -c "$SERVER_CPU" "$bin" --cores "$SERVER_CPU" --listen "127.0.0.1:$port" \
                --nats-listen "127.0.0.1:$nport"
            [[ $proto == nats ]] && port=$nport
            targets=(--target "127.0.0.1:$port")
        fi
    fi
    pid=${PID[$name]}
    local hog=""
    if (( NOISY )); then
        # Bounded, in case this script is killed before its cleanup.
        taskset -c "$SERVER_CPU" timeout 120 sh -c 'while :; do :; done' &
        hog=$!
        PIDS+=("$hog")
    fi
    local json=$OUT/$name-$round.json
    # With perf, the warm-up also holds the system-call count: half a
    # second to settle, $SAMPLE seconds traced, then the usual warm-up.
    local warmup=${WARMUP%s}
    if (( HAVE_PERF )); then
        warmup=$(awk -v w="$warmup" -v s="$SAMPLE" 'BEGIN { print w + s + 0.5 }')
    fi
    taskset -c "$CLIENT_CPU" "$LOADGEN" --cores "$CLIENT_CPU" --quiet --json "$json" --protocol "$proto" \
        "${targets[@]}" --rate "$RATE" --size 128 --duration "$DURATION" --warmup "$warmup" \
        >"$OUT/$name-$round.txt" 2>&1 &
    local lg=$!
    PIDS+=("$lg")
    local t0 t1 calls=""
    if (( HAVE_PERF )); then
        sleep 0.5
        perf stat -e raw_syscalls:sys_enter -p "$pid" -o "$OUT/$name-$round.perf" -- sleep "$SAMPLE" >/dev/null 2>&1
        calls=$(awk '/raw_syscalls/ { gsub(",", "", $1); print $1 }' "$OUT/$name-$round.perf")
    fi
    # Sample the middle of the measured run: a second after the warm-up.
    sleep "$(awk -v w="${WARMUP%s}" 'BEGIN { print w + 1 }')"
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    sleep "$SAMPLE"
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    wait "$lg" || log "  $name run $round: tern-loadgen exited with $? (see $OUT/$name-$round.txt)"
    kill "$pid" $hog 2>/dev/null || true
    wait "$pid" $hog 2>/dev/null || true
    local ticks rate
    ticks=$(getconf CLK_TCK)
    rate=$(jtop "$json" received_per_s)
    awk -v d=$((t1 - t0)) -v hz="$ticks" -v s="$SAMPLE" -v c="$calls" -v r="${rate:-0}" 'BEGIN {
        cpu = 100 * d / hz / s
        per = (c == "" || r == 0) ? "" : c / (r * s)
        print cpu, per }' >>"$OUT/$name.row"
}

for round in $(seq "$RUNS"); do
    n=${#SERVERS[@]}
    for i in $(seq 0 $((n - 1))); do
        s=${SERVERS[$(( (i + round - 1) % n ))]}
        log "round $round: $s"
        run "$s" "$round"
    done
done

col() { awk -v k="$2" '{ print $k }' "$OUT/$1.row" | grep -v '^$' | median; }
echo "| server | CPU (% of a core) | syscalls / message | p50 | p99 | p99.9 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for s in "${SERVERS[@]}"; do
    cpu=$(col "$s" 1) per=$(col "$s" 2)
    lat() { for f in "$OUT/$s-"[0-9]*.json; do jlat "$f" "$1"; done | median; }
    printf '| %s | %s | %s | %s | %s | %s |\n' "$s" "$(printf '%.0f%%' "$cpu")" \
        "${per:+$(printf '%.2f' "$per")}" "$(fmt_us "$(lat p50)")" "$(fmt_us "$(lat p99)")" "$(fmt_us "$(lat p999)")"
done
echo
echo "1 -> 1$( (( CROSS )) && echo ", cross-shard")$( (( NOISY )) && echo ", beside a busy loop on CPU $SERVER_CPU"), 128 B at $RATE msgs/s; medians of $RUNS interleaved runs; $(date -u +%Y-%m-%dT%H:%MZ)"
