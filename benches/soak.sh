#!/usr/bin/env bash
# Soak a fresh tern with tern-soak (loadgen/src/soak):
#
#   benches/soak.sh [DURATION]        # default 60s; e.g. 10m, 30m
#
# Builds tern and tern-soak, starts tern with 2 shards, a private listener
# per shard (--shard-listen), the NATS listener and /metrics, all on free
# loopback ports, with the limits below; runs tern-soak against it for
# DURATION; then stops tern with SIGTERM by its PID. Exits non-zero if
# tern-soak failed (loss, duplication, reordering, a slow PING, RSS over
# its bound, tern exiting) or tern did not stop cleanly (exit status 0
# within 10 s).
#
# Environment:
#   SOAK_PROFILE  release (default) or debug: which build of both binaries
#                 (debug builds in a fraction of the time: CI uses it)
#   SOAK_OUT      where tern's log and the soak's output go
#                 (default target/soak)
#   SOAK_ARGS     more tern-soak flags (e.g. "--seed 7 --streams 2")
#   TERN_ARGS     more tern flags
#
# The limits tern runs with, and which tern-soak's default RSS bound is
# computed from (see tern-soak --help, --rss-limit):
MAX_PENDING=8MiB   # a slow consumer is cut past 8 MiB of unsent output
MAX_FRAME=1MiB     # tern's default; the 100 MiB frame is refused
MAX_CONNECTIONS=4096
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60s}
PROFILE=${SOAK_PROFILE:-release}
OUT=${SOAK_OUT:-target/soak}
case $PROFILE in
    release) build=(--release) ;;
    debug) build=() ;;
    *) echo "soak.sh: SOAK_PROFILE is release or debug, not $PROFILE" >&2; exit 2 ;;
esac
echo "== building tern and tern-soak ($PROFILE)"
cargo build --locked "${build[@]}" -p tern --bin tern -p tern-loadgen --bin tern-soak
BIN=target/$PROFILE
mkdir -p "$OUT"
LOG=$OUT/tern.log

TERN_PID=
cleanup() {
    if [[ -n $TERN_PID ]] && kill -0 "$TERN_PID" 2>/dev/null; then
        kill -KILL "$TERN_PID" 2>/dev/null || true
        wait "$TERN_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# shellcheck disable=SC2086 # TERN_ARGS is a list of flags
"$BIN/tern" --shards 2 --listen 127.0.0.1:0 --nats-listen 127.0.0.1:0 \
    --shard-listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
    --max-pending "$MAX_PENDING" --max-frame "$MAX_FRAME" \
    --max-connections "$MAX_CONNECTIONS" ${TERN_ARGS:-} >"$LOG" 2>&1 &
TERN_PID=$!

# The start-up line names every address, ports resolved.
started=
for _ in $(seq 300); do
    started=$(grep -m1 ' started: ' "$LOG" || true)
    [[ -n $started ]] && break
    kill -0 "$TERN_PID" 2>/dev/null || { echo "soak.sh: tern exited at start:" >&2; cat "$LOG" >&2; exit 1; }
    sleep 0.1
done
[[ -n $started ]] || { echo "soak.sh: tern did not start within 30 s:" >&2; cat "$LOG" >&2; exit 1; }
addr() { sed -n "s|$1|\\1|p" <<<"$started"; }
LINE=$(addr '.*listening on \([0-9.:]*\),.*')
SHARD0=$(addr '.* \([0-9.:]*\) (shard 0 only).*')
SHARD1=$(addr '.* \([0-9.:]*\) (shard 1 only).*')
NATS=$(addr '.*NATS on \([0-9.:]*\),.*')
METRICS=$(addr '.*metrics http://\([0-9.:]*\)/metrics.*')
for v in LINE SHARD0 SHARD1 NATS METRICS; do
    [[ -n ${!v} ]] || { echo "soak.sh: no $v address in tern's start-up line: $started" >&2; exit 1; }
done
echo "== tern pid $TERN_PID: line $LINE (shards $SHARD0 $SHARD1), NATS $NATS, metrics $METRICS"

soak_rc=0
# shellcheck disable=SC2086 # SOAK_ARGS is a list of flags
"$BIN/tern-soak" --target "$LINE" --nats-target "$NATS" \
    --shard-targets "$SHARD0,$SHARD1" --metrics "$METRICS" --pid "$TERN_PID" \
    --max-pending "$MAX_PENDING" --max-frame "$MAX_FRAME" \
    --duration "$DURATION" ${SOAK_ARGS:-} 2>&1 | tee "$OUT/soak.txt" || soak_rc=${PIPESTATUS[0]}

tern_rc=0
if kill -0 "$TERN_PID" 2>/dev/null; then
    kill -TERM "$TERN_PID"
    # It must be gone (a zombie until waited for) within 10 s.
    for _ in $(seq 100); do
        state=$(sed 's/.*) \(.\).*/\1/' "/proc/$TERN_PID/stat" 2>/dev/null || true)
        [[ -z $state || $state == Z ]] && break
        sleep 0.1
    done
    if [[ -n $state && $state != Z ]]; then
        echo "soak.sh: tern did not stop within 10 s of SIGTERM; killing it" >&2
        kill -KILL "$TERN_PID"
    fi
    wait "$TERN_PID" || tern_rc=$?
    [[ $tern_rc == 0 ]] || echo "soak.sh: tern exited with status $tern_rc after SIGTERM" >&2
else
    wait "$TERN_PID" || true
    echo "soak.sh: tern was no longer running at the end of the soak" >&2
    tern_rc=1
fi
TERN_PID=

if [[ $soak_rc != 0 || $tern_rc != 0 ]]; then
    echo "== tern's log (last 40 lines; all of it in $LOG)" >&2
    tail -n 40 "$LOG" >&2
    echo "soak.sh: FAILED (tern-soak status $soak_rc, tern status $tern_rc)" >&2
    exit 1
fi
echo "soak.sh: passed; tern's log in $LOG, the soak's output in $OUT/soak.txt"
