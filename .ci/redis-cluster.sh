#!/usr/bin/env bash
# Starts or stops a 3-node Redis Cluster (masters only) on spare local ports, for the
# RedisStore cluster test:
#
#   bash .ci/redis-cluster.sh start   # prints: export IDEM_REDIS_CLUSTER_URLS=...
#   bash .ci/redis-cluster.sh stop
#
# Ports: IDEM_CLUSTER_PORTS (default "7001 7002 7003"). State (configs, logs, pids) lives in
# IDEM_CLUSTER_DIR (default ${TMPDIR:-/tmp}/idem-redis-cluster); `stop` kills exactly the pids
# recorded there and removes the directory.
set -euo pipefail

PORTS=(${IDEM_CLUSTER_PORTS:-7001 7002 7003})
DIR="${IDEM_CLUSTER_DIR:-${TMPDIR:-/tmp}/idem-redis-cluster}"

urls() {
    local out=() port
    for port in "${PORTS[@]}"; do out+=("redis://127.0.0.1:${port}"); done
    (IFS=,; echo "${out[*]}")
}

stop() {
    local pidfile pid
    [ -d "$DIR" ] || return 0
    for pidfile in "$DIR"/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$DIR"
}

start() {
    stop
    local port node hosts=()
    for port in "${PORTS[@]}"; do
        if redis-cli -p "$port" ping >/dev/null 2>&1; then
            echo "port $port is already in use; set IDEM_CLUSTER_PORTS" >&2
            exit 1
        fi
    done
    for port in "${PORTS[@]}"; do
        node="$DIR/$port"
        mkdir -p "$node"
        redis-server --port "$port" --bind 127.0.0.1 --dir "$node" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --save "" --appendonly no --daemonize yes \
            --pidfile "$node/redis.pid" --logfile "$node/redis.log"
        hosts+=("127.0.0.1:$port")
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 100); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log"
    for _ in $(seq 100); do
        if redis-cli -p "${PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; then
            echo "export IDEM_REDIS_CLUSTER_URLS=$(urls)"
            return 0
        fi
        sleep 0.1
    done
    echo "the cluster did not reach cluster_state:ok; see $DIR" >&2
    exit 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
