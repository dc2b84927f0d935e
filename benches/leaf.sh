#!/usr/bin/env bash
# Leaf-node figures (docs/cluster.md), in one interleaved run:
#
#   x-tern  tern A -> hub 1 -> hub 2 -> tern B: NATS publisher on tern A,
#           NATS subscriber on tern B, the hubs two nats-servers clustered
#           by a route, each tern a leaf of one hub;
#   x-nats  the same path with nats-server leaf nodes in place of the terns;
#   up      tern A's local path (line protocol, 1->1 on tern A) with its
#           link up;
#   down    the same on a tern without a link.
#
# Every server is pinned to CPU $SERVER_CPU, the generator to $CLIENT_CPU;
# 128 B messages at full speed; $RUNS interleaved runs, medians. On two
# cores, the cross-host rows measure four servers sharing one CPU: compare
# them with each other, not with the one-server figures of compare.sh.
#
#   cargo build --release --workspace && benches/leaf.sh
#
# Needs nats-server on PATH (apt-get install nats-server). Writes
# target/bench-leaf/ and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
OUT=${OUT:-$TARGET_DIR/bench-leaf}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || true)}
[[ -x $NATS_SERVER ]] || die "nats-server not found (apt-get install nats-server)"
[[ -x $TERN && -x $LOADGEN ]] || die "build first: cargo build --release --workspace"

# The backbone: two nats-servers routed to each other, each with a leafnode
# port.
hub() { # NAME CLIENT_PORT CLUSTER_PORT ROUTE_PORT LEAF_PORT
    local conf=$OUT/$1.conf
    cat >"$conf" <<EOF
port: $2
cluster { name: backbone, listen: "127.0.0.1:$3", routes: ["nats://127.0.0.1:$4"] }
leafnodes { listen: "127.0.0.1:$5" }
EOF
    start_server "$1" "$2" env GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$NATS_SERVER" -c "$conf"
}
leaf_nats() { # NAME CLIENT_PORT HUB_LEAF_PORT
    local conf=$OUT/$1.conf
    cat >"$conf" <<EOF
port: $2
leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:$3" } ] }
EOF
    start_server "$1" "$2" env GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$NATS_SERVER" -c "$conf"
}
leaf_tern() { # NAME NATS_PORT LINE_PORT [REMOTE]
    local args=(--cores "$SERVER_CPU" --nats-listen "127.0.0.1:$2" --listen "127.0.0.1:$3" --log-level warn)
    [[ -n ${4:-} ]] && args+=(--leafnode-remote "nats-leaf://127.0.0.1:$4")
    start_server "$1" "$3" taskset -c "$SERVER_CPU" "$TERN" "${args[@]}"
}

c1=$(free_port) r1=$(free_port) l1=$(free_port)
c2=$(free_port) r2=$(free_port) l2=$(free_port)
hub hub1 "$c1" "$r1" "$r2" "$l1"
hub hub2 "$c2" "$r2" "$r1" "$l2"
ta=$(free_port) tal=$(free_port) tb=$(free_port) tbl=$(free_port)
leaf_tern ternA "$ta" "$tal" "$l1"
leaf_tern ternB "$tb" "$tbl" "$l2"
na=$(free_port) nb=$(free_port)
leaf_nats natsA "$na" "$l1"
leaf_nats natsB "$nb" "$l2"
td=$(free_port) tdl=$(free_port)
leaf_tern ternDown "$td" "$tdl"
sleep 2 # the routes and links come up (each is logged in $OUT)

common=(--rate 0 --window "$WINDOW" --size 128 --duration "$DURATION" --warmup "$WARMUP")
for run in $(seq "$RUNS"); do
    log "run $run of $RUNS"
    measure "$OUT/x-tern-$run.json" "$OUT/x-tern-$run.txt" "${common[@]}" --protocol nats \
        --target "127.0.0.1:$ta" --subscriber-protocol nats --subscriber-target "127.0.0.1:$tb"
    measure "$OUT/x-nats-$run.json" "$OUT/x-nats-$run.txt" "${common[@]}" --protocol nats \
        --target "127.0.0.1:$na" --subscriber-protocol nats --subscriber-target "127.0.0.1:$nb"
    measure "$OUT/up-tern-$run.json" "$OUT/up-tern-$run.txt" "${common[@]}" --protocol line \
        --target "127.0.0.1:$tal"
    measure "$OUT/down-tern-$run.json" "$OUT/down-tern-$run.txt" "${common[@]}" --protocol line \
        --target "127.0.0.1:$tdl"
done

xt=$(figure x tern tput) xn=$(figure x nats tput)
up=$(figure up tern tput) down=$(figure down tern tput)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "—"; else printf "%.2f×", a / b }'; }
cat <<EOF

Leaf node, 128 B, msgs/s received (medians of $RUNS), $(date -u +%Y-%m-%dT%H:%MZ)

| path | msgs/s | ratio |
| --- | ---: | ---: |
| tern A -> hub 1 -> hub 2 -> tern B (NATS) | $(fmt_num "$xt") | $(ratio "$xt" "$xn") of nats-server leafs |
| nats-server leaf A -> hub 1 -> hub 2 -> leaf B | $(fmt_num "$xn") | |
| tern A local, 1->1 line, link up | $(fmt_num "$up") | $(ratio "$up" "$down") of link down |
| tern local, 1->1 line, no link | $(fmt_num "$down") | |
EOF
