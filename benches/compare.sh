#!/usr/bin/env bash
# Side-by-side comparison of tern, nats-server and redis-server on the same
# workloads, measured by tern-loadgen.
#
#   benches/compare.sh                 # 3 runs of each workload, 5 s each
#   RUNS=5 DURATION=10s benches/compare.sh
#
# Every server runs alone on CPU $SERVER_CPU (tern: 1 shard; nats-server:
# GOMAXPROCS=1; redis-server: no persistence), the generator on CPU
# $CLIENT_CPU. Workloads, 128-byte payloads:
#   (a) max throughput, 1 publisher -> 1 subscriber   (--rate 0 --window W)
#   (b) fan-out,        1 publisher -> 8 subscribers  (--rate 0 --window W)
#   (c) latency at $LAT_RATE msgs/s, 1 -> 1: p50 / p99 / p99.9, corrected
#       for coordinated omission (receive - intended send)
#   (m) mixed, tern only: (b) with a line-protocol publisher and 8 NATS
#       subscribers, against tern's all-NATS (b)
# A fourth server, "forwarder" (tern-forwarder, from loadgen/), does nothing
# but turn PUB lines into MSG lines on a blocking thread per connection: its
# (a) and (b) are the most this generator, on one CPU, can measure of any
# server, and the table says what ratio to nats-server that ceiling allows.
# tern is measured on both of its listeners: "tern" (line protocol) and
# "tern-nats" (the NATS front door, same process); a second table sets
# tern's NATS listener against nats-server.
# Each workload runs $RUNS times, the servers interleaved (the order rotates
# every run), and the table shows medians. A run during which the generator
# got less than 90% of its CPU or fell behind its schedule (other work on the
# machine) is repeated up to $RETRIES times; the table flags cells where the
# generator was starved (†), or sent late (§), all the same. Throughput is messages delivered
# to subscribers per second. A server that is not installed is skipped with
# a note. Every process this script starts is stopped by PID on exit.
#
# Output: a markdown table on stdout; per-run JSON and two latency plots
# (tern and nats-server, workload c) in $OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
# The settings (RUNS, DURATION, WARMUP, WINDOW, LAT_RATE, SERVER_CPU,
# CLIENT_CPU, RETRIES, from the environment) and the binaries' paths.
# shellcheck source=benches/common.sh
source benches/common.sh
OUT=${OUT:-$TARGET_DIR/compare}

# --- prerequisites ---------------------------------------------------------
command -v taskset >/dev/null || die "taskset (util-linux) is required"
ncpu=$(nproc)
if (( SERVER_CPU >= ncpu || CLIENT_CPU >= ncpu || SERVER_CPU == CLIENT_CPU )); then
    die "need two distinct CPUs (SERVER_CPU=$SERVER_CPU, CLIENT_CPU=$CLIENT_CPU, this machine has $ncpu)"
fi

log "building tern, tern-loadgen and tern-forwarder (release)..."
cargo build --release --quiet -p tern -p tern-loadgen
[[ -x $TERN && -x $LOADGEN && -x $FORWARDER ]] || die "release binaries not found in $TARGET_DIR/release"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/latency-*.svg "$OUT"/latency-*.hlog

SERVERS=(tern tern-nats forwarder)
NOTES=()
if command -v nats-server >/dev/null; then SERVERS+=(nats); else NOTES+=("nats-server is not installed: skipped (apt-get install nats-server)"); fi
if command -v redis-server >/dev/null; then SERVERS+=(redis); else NOTES+=("redis-server is not installed: skipped (apt-get install redis-server)"); fi

for s in "${SERVERS[@]}"; do
    port=$(free_port)
    case $s in
        # One shard pinned to SERVER_CPU (`--cores` alone means one shard
        # per listed CPU).
        tern)
            nats_port=$(free_port)
            start_server tern "$port" "$TERN" --cores "$SERVER_CPU" --listen "127.0.0.1:$port" --nats-listen "127.0.0.1:$nats_port"
            ;;
        # The same process, its NATS listener.
        tern-nats) PORT[tern-nats]=$nats_port; PID[tern-nats]=${PID[tern]}; port=$nats_port ;;
        forwarder) start_server forwarder "$port" taskset -c "$SERVER_CPU" "$FORWARDER" --listen "127.0.0.1:$port" ;;
        nats) start_server nats "$port" env GOMAXPROCS=1 taskset -c "$SERVER_CPU" nats-server -a 127.0.0.1 -p "$port" ;;
        redis) start_server redis "$port" taskset -c "$SERVER_CPU" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no ;;
    esac
    log "started $s (pid ${PID[$s]}) on 127.0.0.1:$port"
done

protocol_of() { case $1 in tern | forwarder) echo line ;; tern-nats | nats) echo nats ;; redis) echo redis ;; esac; }

WORKLOADS=(a b c m)
workload_args() {
    case $1 in
        a) echo "--rate 0 --window $WINDOW --publishers 1 --subscribers 1" ;;
        b) echo "--rate 0 --window $WINDOW --publishers 1 --subscribers 8" ;;
        c) echo "--rate $LAT_RATE --publishers 1 --subscribers 1" ;;
        m) echo "--rate 0 --window $WINDOW --publishers 1 --subscribers 8 --subscriber-protocol nats --subscriber-target 127.0.0.1:${PORT[tern-nats]}" ;;
    esac
}

# --- runs --------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
INTEGRITY=()
n=${#SERVERS[@]}
for run in $(seq "$RUNS"); do
    for w in "${WORKLOADS[@]}"; do
        for i in $(seq 0 $(( n - 1 ))); do
            s=${SERVERS[$(( (i + run - 1) % n ))]}
            # The mixed workload is tern's alone (its line listener).
            [[ $w == m && $s != tern ]] && continue
            json=$OUT/$w-$s-$run.json
            extra=()
            if [[ $w == c && $run == "$RUNS" && ( $s == tern || $s == nats ) ]]; then
                extra=(--plot "$OUT/latency-$s.svg" --hdr-log "$OUT/latency-$s.hlog")
            fi
            log "run $run/$RUNS, workload $w, $s..."
            # shellcheck disable=SC2046 # word splitting of workload_args is intended
            measure "$json" "$OUT/$w-$s-$run.txt" --target "127.0.0.1:${PORT[$s]}" \
                --protocol "$(protocol_of "$s")" --size 128 --duration "$DURATION" \
                --warmup "$WARMUP" $(workload_args "$w") "${extra[@]}"
            rc=$MEASURE_RC
            if (( rc == 1 )); then
                log "  failed: $(tail -1 "$OUT/$w-$s-$run.txt")"
                rm -f "$json"
            elif (( rc == 2 )); then
                INTEGRITY+=("$w/$s run $run: $(grep INTEGRITY "$OUT/$w-$s-$run.txt")")
            fi
        done
    done
done

# --- table -------------------------------------------------------------------
ratio() { # peer / tern
    [[ -n $1 && -n $2 ]] || { echo ""; return; }
    awk -v p="$1" -v t="$2" 'BEGIN { if (t > 0) printf " (%.2f×)", p / t }'
}

name_of() { case $1 in tern) echo tern ;; tern-nats) echo "tern (NATS)" ;; forwarder) echo "forwarder (floor)" ;; nats) echo nats-server ;; redis) echo redis-server ;; esac; }

header="| workload | tern"
rule="| --- | ---:"
for s in "${SERVERS[@]:1}"; do
    header+=" | $(name_of "$s") (× tern)"
    rule+=" | ---:"
done

echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $ncpu CPUs, Linux $(uname -r)"
echo "Servers on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU; $RUNS runs of $DURATION (+$WARMUP warm-up) per cell, medians; 128 B payloads."
vers="tern $("$TERN" --version 2>/dev/null | awk '{print $2}')"
for s in "${SERVERS[@]:1}"; do
    case $s in
        nats) vers+=", nats-server $(nats-server --version 2>/dev/null | awk '{print $NF}')" ;;
        redis) vers+=", redis-server $(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')" ;;
    esac
done
echo "Versions: $vers."
echo "Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)."
echo
echo "$header |"
echo "$rule |"
# flags W S: "‡" if the generator, not the server, was the limit (its
# worker was busy more than 80% of the time); "†" if it did not get its CPU
# (a busy-polling worker should use ~100%: other processes ran on its core).
flags() {
    local b c out=""
    b=$(figure "$1" "$2" busy)
    c=$(figure "$1" "$2" cpu)
    if [[ -n $b ]] && awk -v b="$b" 'BEGIN { exit !(b > 80) }'; then out+=" ‡"; fi
    if [[ -n $c ]] && awk -v c="$c" 'BEGIN { exit !(c < 90) }'; then out+=" †"; fi
    echo "$out"
}
# late W S PCT: "§" if at that percentile the generator sent late (its
# median send lag is more than half the median latency, or than 100 µs for
# latencies below 200 µs, as tern-loadgen's own "sent late" note): the
# corrected latency then measures the generator's delay as well as the
# server's. Only fixed-rate runs (c) have a send lag.
late() {
    local lag lat
    lag=$(figure "$1" "$2" "lag_$3")
    lat=$(figure "$1" "$2" "$3")
    if [[ -n $lag && -n $lat ]] && awk -v l="$lag" -v t="$lat" \
        'BEGIN { m = (t > 100 ? t : 100); exit !(l > 0.5 * m) }'; then
        echo " §"
    fi
}
# cell_flags W S METRIC: the flags of one cell (‡ † on the throughput and
# p50 rows, § on every latency row).
cell_flags() {
    local out=""
    if [[ $3 == tput || $3 == p50 ]]; then out+=$(flags "$1" "$2"); fi
    if [[ $3 == p50 || $3 == p99 || $3 == p999 ]]; then out+=$(late "$1" "$2" "$3"); fi
    echo "$out"
}
row() { # label workload metric formatter
    local label=$1 w=$2 metric=$3 fmt=$4 t v line
    t=$(figure "$w" tern "$metric")
    line="| $label | $($fmt "$t")$(cell_flags "$w" tern "$metric")"
    for s in "${SERVERS[@]:1}"; do
        v=$(figure "$w" "$s" "$metric")
        line+=" | $($fmt "$v")$(ratio "$v" "$t")$(cell_flags "$w" "$s" "$metric")"
    done
    echo "$line |"
}
row "(a) max throughput 1→1, msgs/s" a tput fmt_num
row "(b) fan-out 1→8, deliveries/s" b tput fmt_num
row "(c) latency @ $(fmt_num "$LAT_RATE")/s 1→1, p50" c p50 fmt_us
row "(c) p99" c p99 fmt_us
row "(c) p99.9" c p999 fmt_us
echo
echo "Ratios are the peer's figure divided by tern's (line listener): below 1 means fewer msgs/s (a, b) or lower latency (c) than tern."
# The NATS protocol alone: tern's NATS listener against nats-server.
if [[ " ${SERVERS[*]} " == *" nats "* ]]; then
    echo
    echo "| NATS protocol | tern (NATS) | nats-server | tern ÷ nats-server |"
    echo "| --- | ---: | ---: | ---: |"
    nats_row() { # label workload metric formatter
        local t v
        t=$(figure "$2" tern-nats "$3")
        v=$(figure "$2" nats "$3")
        echo "| $1 | $($4 "$t")$(cell_flags "$2" tern-nats "$3") | $($4 "$v")$(cell_flags "$2" nats "$3") | $(ratio "$t" "$v" | tr -d ' ()') |"
    }
    nats_row "(a) 1→1, msgs/s" a tput fmt_num
    nats_row "(b) 1→8, deliveries/s" b tput fmt_num
    nats_row "(c) p50" c p50 fmt_us
    nats_row "(c) p99" c p99 fmt_us
    nats_row "(c) p99.9" c p999 fmt_us
fi
# The harness's ceiling: the forwarder's figure over nats-server's.
if [[ " ${SERVERS[*]} " == *" nats "* ]]; then
    ceiling() { ratio "$(figure "$1" forwarder tput)" "$(figure "$1" nats tput)" | tr -d ' ()'; }
    echo
    echo "Ceiling of this harness: the forwarder, which does nothing but rewrite the verb, measured $(ceiling a) nats-server's (a) and $(ceiling b) its (b); no server can show a larger ratio with one generator CPU."
fi
mixed=$(figure m tern tput)
all_nats=$(figure b tern-nats tput)
if [[ -n $mixed ]]; then
    echo
    echo "Mixed (m): line publisher → 8 NATS subscribers on tern: $(fmt_num "$mixed") deliveries/s$(flags m tern), $(ratio "$mixed" "$all_nats" | tr -d ' ()') of tern's all-NATS (b)."
fi
all_flags=$(for w in "${WORKLOADS[@]}"; do for s in "${SERVERS[@]}"; do
    flags "$w" "$s"
    for pct in p50 p99 p999; do late "$w" "$s" "$pct"; done
done; done)
if grep -q "‡" <<<"$all_flags"; then
    echo "‡ The generator's worker was more than 80% busy (median): the figure may be the generator's limit, not the server's."
fi
if grep -q "†" <<<"$all_flags"; then
    echo "† The generator got less than 90% of its CPU (median): other processes ran on CPU $CLIENT_CPU, so this figure is unreliable."
fi
if grep -q "§" <<<"$all_flags"; then
    echo "§ The generator sent late at that percentile (median send lag more than half the latency, or than 100 µs): the figure includes the generator's own delay, not only the server's."
fi
for note in "${NOTES[@]}"; do echo "Note: $note."; done
for note in "${INTEGRITY[@]}"; do echo "Integrity problem: $note"; done
for s in tern nats; do
    if [[ -e $OUT/latency-$s.svg ]]; then echo "Latency plot ($s, workload c): $OUT/latency-$s.svg"; fi
done
exit 0
