#!/usr/bin/env bash
# Run a devicehub cluster on this machine, each role its own twistd process: 2 brokers
# sharing one PostgreSQL queue, 3 nodes reporting to both brokers, 2 HTTP APIs using
# either broker (docs/cluster.md). Ctrl-C (or SIGTERM) stops them all gracefully.
#
# The queue: STORE=postgresql://USER@HOST[:PORT]/DB, or else a PostgreSQL server of the
# script's own (Debian's postgresql package; as root it runs as the user postgres) in
# $LOGS/pg on port $PG_PORT. Ports can be changed:
#   FRONTENDS="5555 5565" BACKENDS="5556 5566" EVENTS="5557 5567" NODE_PORTS="7701 7702 7703" \
#   API_PORTS="8081 8082" PG_PORT=5433 examples/cluster.sh
set -euo pipefail
FRONTENDS=(${FRONTENDS:-5555 5565})
BACKENDS=(${BACKENDS:-5556 5566})
EVENTS=(${EVENTS:-5557 5567})
NODE_PORTS=${NODE_PORTS:-"7701 7702 7703"}
API_PORTS=${API_PORTS:-"8081 8082"}
NODE_TTL=${NODE_TTL:-5}
PG_PORT=${PG_PORT:-5433}
LOGS=${LOGS:-$(mktemp -d -t devicehub-cluster.XXXXXX)}
pids=()
pg=""

list() {  # list PORT...: the comma list of their ZeroMQ addresses
    local IFS=,
    local addresses=()
    for port in "$@"; do addresses+=("tcp://127.0.0.1:$port"); done
    echo "${addresses[*]}"
}

as_postgres() {  # initdb and postgres refuse to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    bin=${bin:-$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")}
    if [ ! -x "$bin/initdb" ]; then
        echo "no PostgreSQL: apt-get install -y postgresql, or give STORE=postgresql://USER@HOST/DB" >&2
        exit 1
    fi
    pg="$LOGS/pg"
    mkdir -p "$pg"
    [ "$(id -u)" = 0 ] && chown postgres "$pg"
    as_postgres "$bin/initdb" -D "$pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-instructions >/dev/null
    as_postgres "$bin/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w \
        -o "-p $PG_PORT -k $pg -c listen_addresses=127.0.0.1" start >/dev/null
    STORE="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    PG_CTL=("$bin/pg_ctl" -D "$pg/data" -m fast stop)
}

run() {  # run NAME ARGS...: one twistd process, logging to $LOGS/NAME.log
    local name=$1; shift
    twistd -n --pidfile= -l "$LOGS/$name.log" devicehub "$@" --node-ttl "$NODE_TTL" --store "$STORE" &
    pids+=($!)
}

stop() {
    trap - INT TERM EXIT
    echo "stopping ${#pids[@]} processes"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    if [ -n "$pg" ]; then as_postgres "${PG_CTL[@]}" >/dev/null || true; fi
}
trap stop INT TERM EXIT

[ -n "${STORE:-}" ] || start_postgres

for i in 0 1; do
    run "broker$((i + 1))" --roles broker --frontend "tcp://127.0.0.1:${FRONTENDS[$i]}" \
        --backend "tcp://127.0.0.1:${BACKENDS[$i]}" --events "tcp://127.0.0.1:${EVENTS[$i]}"
done
i=0
for port in $NODE_PORTS; do
    i=$((i + 1))
    run "node$i" --roles node --node-id "node$i" --devices "tcp:$port" --backend "$(list "${BACKENDS[@]}")"
done
i=0
for port in $API_PORTS; do
    i=$((i + 1))
    # each api subscribes to the events of one broker (every broker publishes every event)
    run "api$i" --roles api --http "tcp:$port:interface=127.0.0.1" --frontend "$(list "${FRONTENDS[@]}")" \
        --events "tcp://127.0.0.1:${EVENTS[$(((i - 1) % 2))]}"
done

echo "devicehub cluster: brokers $(list "${FRONTENDS[@]}") (frontends), $(list "${BACKENDS[@]}") (backends)"
echo "  queue: $STORE"
echo "  nodes (devices connect here): $NODE_PORTS"
echo "  HTTP APIs: $(for p in $API_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)"
echo "  Demand or CLI: --frontend $(list "${FRONTENDS[@]}")"
echo "  logs: $LOGS"
echo "Ctrl-C stops the cluster."
wait
