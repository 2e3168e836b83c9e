#!/usr/bin/env bash
# The scaled-out topology on one machine, offline (docs/scaling.md): Redis, one ingest on the demo feed and an
# edge of EDGE_WORKERS worker processes on the configuration's ports, so the dashboard and the WebSocket API are
# where `make run` puts them (http://127.0.0.1:8080/, ws://127.0.0.1:8765) and are served through Redis.
#
#   scripts/run_scaled.sh        runs in the foreground; Ctrl-C or SIGTERM stops the edge and the ingest
#
# Redis is started through scripts/run_redis.sh (if not running) and left running, as `make run` leaves QuestDB
# and PocketBase; `make stop-servers` stops it. Environment:
#   STREAMER_CONFIG   the configuration both roles read (default: config.yaml)
#   STREAMER_BIN      the streamer command (default: .venv/bin/streamer)
#   REDIS_PORT        Redis's port (default 6379); REDIS_DATA_DIR, REDIS_PASSWORD as for run_redis.sh
#   EDGE_WORKERS      the edge's worker processes (default 2)
#   INGEST_HTTP_PORT  the ingest's own HTTP API: health, /metrics, REST (default 8081; the edge has http.port)
set -euo pipefail

LOG_TAG=scaled
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

CONFIG=${STREAMER_CONFIG:-config.yaml}
BIN=${STREAMER_BIN:-.venv/bin/streamer}
REDIS_PORT=${REDIS_PORT:-6379}
EDGE_WORKERS=${EDGE_WORKERS:-2}
INGEST_HTTP_PORT=${INGEST_HTTP_PORT:-8081}

require_port REDIS_PORT "$REDIS_PORT"
require_port INGEST_HTTP_PORT "$INGEST_HTTP_PORT"
[[ $EDGE_WORKERS =~ ^[1-9][0-9]*$ ]] || die "EDGE_WORKERS must be a whole number of at least 1, got '$EDGE_WORKERS'"
[[ -x $BIN ]] || die "$BIN is not executable (run make setup, or set STREAMER_BIN)"
[[ -r $CONFIG ]] || die "$CONFIG is not a readable file (set STREAMER_CONFIG)"

REDIS_PORT=$REDIS_PORT "$SCRIPT_DIR/run_redis.sh" start
export STREAMER_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
if [[ -n ${REDIS_PASSWORD:-} ]]; then
    export STREAMER_REDIS_PASSWORD=$REDIS_PASSWORD
fi

pids=()
signalled=0
stop() {
    trap - INT TERM
    log "stopping the edge and the ingest"
    kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap 'signalled=1; stop' INT TERM

log "ingest: the demo feed into Redis (its HTTP API on 127.0.0.1:$INGEST_HTTP_PORT)"
STREAMER_HTTP_PORT=$INGEST_HTTP_PORT "$BIN" run --role ingest --demo -c "$CONFIG" &
pids+=($!)
log "edge: $EDGE_WORKERS workers on the configured ports, fed from Redis"
"$BIN" run --role edge --workers "$EDGE_WORKERS" -c "$CONFIG" &
pids+=($!)

# When either ends on its own (it failed), the other is stopped too and the first one's code is ours; after a
# signal both stop, and the code is 0 when both stopped cleanly.
status=0
wait -n "${pids[@]}" || status=$?
if ((signalled)); then
    status=0
else
    stop
fi
for pid in "${pids[@]}"; do
    code=0
    wait "$pid" 2>/dev/null || code=$?
    if ((signalled && code != 0 && status == 0)); then
        status=$code
    fi
done
exit "$status"
