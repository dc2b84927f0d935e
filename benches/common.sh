# Shared by the comparison scripts (compare.sh, security.sh): their
# settings, process bookkeeping, ports, server start-up, reading
# tern-loadgen's JSON, medians and number formats. Source it from the
# repository's root; the script then sets OUT (its output directory).
# shellcheck shell=bash

# --- settings, from the environment ------------------------------------------
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
# Messages in flight per publisher at --rate 0 (a window of 1000
# under-reported nats-server's 1->1 figure by about 17%).
WINDOW=${WINDOW:-16384}
LAT_RATE=${LAT_RATE:-50000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
# Extra attempts for a run whose generator was starved of CPU by other work.
RETRIES=${RETRIES:-2}
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TERN=$TARGET_DIR/release/tern
LOADGEN=$TARGET_DIR/release/tern-loadgen
FORWARDER=$TARGET_DIR/release/tern-forwarder

log() { printf '%s\n' "$*" >&2; }
die() { log "$(basename "$0"): $*"; exit 1; }

# --- cleanup: stop exactly what we started --------------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait, then insist.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (best effort: another process could
# still take it before the server binds; the start check catches that).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# start_server NAME PORT CMD... : starts it in the background, waits until
# it accepts connections (10 s at most).
declare -A PORT PID
start_server() {
    local name=$1 port=$2
    shift 2
    "$@" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    PID[$name]=$pid
    PORT[$name]=$port
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start-up; see $OUT/$name.log"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    die "$name did not accept connections on 127.0.0.1:$port within 10 s"
}

# --- JSON access without jq: the generator writes one key per line --------
# jtop FILE KEY: a top-level number. jlat FILE PCT: latency_us.PCT.
jtop() { sed -n "s/^  \"$2\": \([-0-9.eE+]*\),\{0,1\}$/\1/p" "$1" | head -1; }
jnest() { sed -n "/^  \"$2\": {/,/^  }/p" "$1" | sed -n "s/^    \"$3\": \([-0-9.eE+]*\),\{0,1\}$/\1/p" | head -1; }
jlat() { jnest "$1" latency_us "$2"; }
jbool() { sed -n "s/^  \"$2\": \(true\|false\),\{0,1\}$/\1/p" "$1" | head -1; }

median() { # numbers on stdin -> median (mean of the middle two if even)
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print ""; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

fmt_num() { # thousands separators, no decimals
    [[ -n $1 ]] || { echo "—"; return; }
    printf "%.0f" "$1" | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta'
}
fmt_us() { [[ -n $1 ]] && printf "%.1f µs" "$1" || echo "—"; }

# measure JSON TXT LOADGEN_ARGS...: one tern-loadgen run on CPU
# $CLIENT_CPU, its JSON in JSON and its output in TXT. A busy-polling worker
# uses its whole CPU, and at a fixed rate sends within microseconds of
# schedule; if it got less than 90% of its CPU or sent late (send lag p99
# over 100 µs), other processes ran on its core and the run measured them
# too: it is run again, up to $RETRIES times. Sets MEASURE_RC: 0 ok, 1
# failed, 2 an integrity problem (loss, duplicates, reordering).
measure() {
    local json=$1 txt=$2 attempt cpu lag
    shift 2
    for attempt in $(seq 0 "$RETRIES"); do
        MEASURE_RC=0
        taskset -c "$CLIENT_CPU" "$LOADGEN" --cores "$CLIENT_CPU" --quiet --json "$json" \
            "$@" >"$txt" 2>&1 || MEASURE_RC=$?
        cpu=100 lag=0
        if [[ -e $json ]]; then
            cpu=$(jtop "$json" client_cpu_pct)
            lag=$(jnest "$json" send_lag_us p99)
        fi
        if (( MEASURE_RC == 1 )) || awk -v c="${cpu:-100}" -v l="${lag:-0}" \
            'BEGIN { exit !(c >= 90 && l <= 100) }'; then
            return
        fi
        if (( attempt < RETRIES )); then
            log "  disturbed (generator CPU ${cpu%.*}%, send lag p99 ${lag%.*} µs): running it again"
        fi
    done
}

# figure W S METRIC: the median over runs ("" if no run succeeded) of the
# runs $OUT/W-S-RUN.json.
figure() {
    local w=$1 s=$2 metric=$3 f
    # The run number right after the name: `a-tern-1.json`, not the
    # `a-tern-nats-1.json` of a server whose name starts the same.
    for f in "$OUT/$w-$s-"[0-9]*.json; do
        [[ -e $f ]] || continue
        case $metric in
            tput) jtop "$f" received_per_s ;;
            busy) jtop "$f" client_busy_pct ;;
            cpu) jtop "$f" client_cpu_pct ;;
            lag_*) jnest "$f" send_lag_us "${metric#lag_}" ;;
            *) jlat "$f" "$metric" ;;
        esac
    done | median
}

