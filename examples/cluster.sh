#!/usr/bin/env bash
# Run a devicehub cluster on this machine: 1 broker, 3 nodes, 2 HTTP APIs, each its own
# twistd process. Ctrl-C (or SIGTERM) stops them all gracefully. Ports can be changed:
#   FRONTEND=5555 BACKEND=5556 EVENTS=5557 NODE_PORTS="7701 7702 7703" API_PORTS="8081 8082" examples/cluster.sh
set -euo pipefail
FRONTEND=${FRONTEND:-5555}
BACKEND=${BACKEND:-5556}
EVENTS=${EVENTS:-5557}
NODE_PORTS=${NODE_PORTS:-"7701 7702 7703"}
API_PORTS=${API_PORTS:-"8081 8082"}
NODE_TTL=${NODE_TTL:-5}
LOGS=${LOGS:-$(mktemp -d -t devicehub-cluster.XXXXXX)}
common=(--frontend "tcp://127.0.0.1:$FRONTEND" --backend "tcp://127.0.0.1:$BACKEND"
        --events "tcp://127.0.0.1:$EVENTS" --node-ttl "$NODE_TTL")
pids=()

run() {  # run NAME ARGS...: one twistd process, logging to $LOGS/NAME.log
    local name=$1; shift
    twistd -n --pidfile= -l "$LOGS/$name.log" devicehub "$@" "${common[@]}" &
    pids+=($!)
}

stop() {
    trap - INT TERM EXIT
    echo "stopping ${#pids[@]} processes"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

run broker --roles broker --store "$LOGS/queue.sqlite3"
i=0
for port in $NODE_PORTS; do
    i=$((i + 1))
    run "node$i" --roles node --node-id "node$i" --devices "tcp:$port"
done
i=0
for port in $API_PORTS; do
    i=$((i + 1))
    run "api$i" --roles api --http "tcp:$port:interface=127.0.0.1"
done

echo "devicehub cluster: broker tcp://127.0.0.1:$FRONTEND (frontend) / :$BACKEND (backend) / :$EVENTS (events)"
echo "  nodes (devices connect here): $NODE_PORTS"
echo "  HTTP APIs: $(for p in $API_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)"
echo "  logs: $LOGS"
echo "Ctrl-C stops the cluster."
wait
