#!/usr/bin/env bash
# What authentication, permissions and TLS cost: tern with each against
# plain tern, and tern's TLS against nats-server's, measured by
# tern-loadgen.
#
#   benches/security.sh                 # 3 runs of each workload, 5 s each
#   RUNS=5 DURATION=10s benches/security.sh
#
# Servers, each alone on CPU $SERVER_CPU (tern: 1 shard; nats-server:
# GOMAXPROCS=1), the generator on CPU $CLIENT_CPU:
#   tern           the line protocol in clear text, no users
#   tern-auth      the same, with users: the generator logs in as a user whose
#                  publish and subscribe rules (allow and deny lists) are
#                  checked on every message
#   tern-tls       the line protocol over TLS (another tern process)
#   tern-nats-tls  that process's NATS listener (clear-text INFO, then TLS)
#   nats-tls       nats-server 2.x with `tls {}` in its config file
# Workloads, 128-byte payloads: (a) max throughput 1 -> 1 (--rate 0
# --window W), (c) latency at $LAT_RATE msgs/s 1 -> 1, p50 / p99 / p99.9
# corrected for coordinated omission. Each runs $RUNS times, the servers
# interleaved (the order rotates every run); the tables show medians.
# Certificates (a throwaway CA and a server certificate for 127.0.0.1) are
# made with openssl in $OUT/pki. Every process started is stopped by PID.
# REPORT_ONLY=1 prints the tables again from the runs already in $OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
# The settings (RUNS, DURATION, WARMUP, WINDOW, LAT_RATE, SERVER_CPU,
# CLIENT_CPU, RETRIES, from the environment) and the binaries' paths.
# shellcheck source=benches/common.sh
source benches/common.sh
OUT=${OUT:-$TARGET_DIR/security}

command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v openssl >/dev/null || die "openssl is required to make the test certificates"
SERVERS=(tern tern-auth tern-tls tern-nats-tls)
NOTES=()
if command -v nats-server >/dev/null; then
    SERVERS+=(nats-tls)
else
    NOTES+=("nats-server is not installed: its TLS column is empty (apt-get install nats-server)")
fi
FAILED=()
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -z ${REPORT_ONLY:-} ]]; then
    log "building tern and tern-loadgen (release)..."
    cargo build --release --quiet -p tern -p tern-loadgen
    mkdir -p "$OUT/pki"
    rm -f "$OUT"/*.json "$OUT"/*.txt

    # --- certificates and config files -------------------------------------------
    pki=$OUT/pki
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$pki/key.pem" -out "$pki/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$pki/ext"
    openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 2 -extfile "$pki/ext" -out "$pki/cert.pem" 2>/dev/null
    cat >"$OUT/auth.toml" <<'EOF'
[authorization]
[[authorization.users]]
user = "bench"
password = "bench-pw"
[authorization.users.permissions]
publish = { allow = ["bench.>"], deny = ["bench.secret"] }
subscribe = { allow = ["bench.>", "_INBOX.>"], deny = ["bench.secret"] }
EOF

    declare -A PROTO EXTRA
    for s in "${SERVERS[@]}"; do
        port=$(free_port)
        case $s in
            tern)
                start_server tern "$port" "$TERN" --cores "$SERVER_CPU" --listen "127.0.0.1:$port" --nats-listen off
                PROTO[tern]=line EXTRA[tern]="" ;;
            tern-auth)
                start_server tern-auth "$port" "$TERN" --config "$OUT/auth.toml" --cores "$SERVER_CPU" \
                    --listen "127.0.0.1:$port" --nats-listen off
                PROTO[tern-auth]=line EXTRA[tern-auth]="--user bench --password bench-pw" ;;
            tern-tls)
                nats_port=$(free_port)
                start_server tern-tls "$port" "$TERN" --cores "$SERVER_CPU" --listen "127.0.0.1:$port" \
                    --nats-listen "127.0.0.1:$nats_port" --tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem"
                PROTO[tern-tls]=line EXTRA[tern-tls]="--tls --tls-ca $pki/ca.pem" ;;
            tern-nats-tls)
                PORT[tern-nats-tls]=$nats_port PID[tern-nats-tls]=${PID[tern-tls]} port=$nats_port
                PROTO[tern-nats-tls]=nats EXTRA[tern-nats-tls]="--tls --tls-ca $pki/ca.pem" ;;
            nats-tls)
                cat >"$OUT/nats-tls.conf" <<EOF
listen: 127.0.0.1:$port
tls {
  cert_file: "$pki/cert.pem"
  key_file: "$pki/key.pem"
}
EOF
                start_server nats-tls "$port" env GOMAXPROCS=1 taskset -c "$SERVER_CPU" nats-server -c "$OUT/nats-tls.conf"
                PROTO[nats-tls]=nats EXTRA[nats-tls]="--tls --tls-ca $pki/ca.pem" ;;
        esac
        log "started $s (pid ${PID[$s]}) on 127.0.0.1:$port"
    done

    workload_args() {
        case $1 in
            a) echo "--rate 0 --window $WINDOW --publishers 1 --subscribers 1" ;;
            c) echo "--rate $LAT_RATE --publishers 1 --subscribers 1" ;;
        esac
    }

    n=${#SERVERS[@]}
    for run in $(seq "$RUNS"); do
        for w in a c; do
            for i in $(seq 0 $(( n - 1 ))); do
                s=${SERVERS[$(( (i + run - 1) % n ))]}
                log "run $run/$RUNS, workload $w, $s..."
                # shellcheck disable=SC2046 # word splitting is intended
                measure "$OUT/$w-$s-$run.json" "$OUT/$w-$s-$run.txt" --target "127.0.0.1:${PORT[$s]}" \
                    --protocol "${PROTO[$s]}" --size 128 --duration "$DURATION" --warmup "$WARMUP" \
                    $(workload_args "$w") ${EXTRA[$s]}
                if (( MEASURE_RC != 0 )); then
                    FAILED+=("$w/$s run $run: $(tail -1 "$OUT/$w-$s-$run.txt")")
                    rm -f "$OUT/$w-$s-$run.json"
                fi
            done
        done
    done
fi

# --- tables ------------------------------------------------------------------
quotient() { # a / b, two decimals, "—" if either is missing
    [[ -n $1 && -n $2 ]] || { echo "—"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "—" }'
}
echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, Linux $(uname -r); servers on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU."
echo "$RUNS runs of $DURATION (+$WARMUP warm-up) per cell, interleaved, medians; 128 B payloads, 1 publisher -> 1 subscriber."
vers="tern $("$TERN" --version | awk '{print $2}')"
if command -v nats-server >/dev/null; then vers+=", nats-server $(nats-server --version | awk '{print $NF}')"; fi
echo "Versions: $vers. Load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| server | (a) msgs/s | (c) p50 | (c) p99 | (c) p99.9 |"
echo "| --- | ---: | ---: | ---: | ---: |"
for s in "${SERVERS[@]}"; do
    echo "| $s | $(fmt_num "$(figure a "$s" tput)") | $(fmt_us "$(figure c "$s" p50)") | $(fmt_us "$(figure c "$s" p99)") | $(fmt_us "$(figure c "$s" p999)") |"
done
echo
echo "| ratio | value | target |"
echo "| --- | ---: | --- |"
echo "| (a) tern-auth ÷ tern | $(quotient "$(figure a tern-auth tput)" "$(figure a tern tput)") | ≥ 0.95× |"
echo "| (a) tern-tls ÷ tern | $(quotient "$(figure a tern-tls tput)" "$(figure a tern tput)") | ≥ 0.5× |"
echo "| (a) tern-nats-tls ÷ nats-tls | $(quotient "$(figure a tern-nats-tls tput)" "$(figure a nats-tls tput)") | ≥ 2× |"
echo "| (c) p99 tern-nats-tls ÷ nats-tls | $(quotient "$(figure c tern-nats-tls p99)" "$(figure c nats-tls p99)") | ≤ 1× |"
echo "| (c) p99 tern-tls ÷ nats-tls | $(quotient "$(figure c tern-tls p99)" "$(figure c nats-tls p99)") | ≤ 1× |"
for note in "${NOTES[@]}"; do echo "Note: $note."; done
for f in "${FAILED[@]}"; do echo "Failed run: $f"; done
exit 0
