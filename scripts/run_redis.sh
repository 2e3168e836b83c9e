#!/usr/bin/env bash
# Run a local Redis server for stock-streamer's scale-out roles, bound to 127.0.0.1 only.
#
#   scripts/run_redis.sh start|stop|restart|status|fetch
#
# start    write DATA_DIR/redis.conf, start redis-server in the background and wait until it answers
#          PING. No-op if already running.
# stop     SIGTERM, wait up to REDIS_STOP_TIMEOUT s, then SIGKILL. No-op if not running.
# status   print state, pid, version and ports; exit 0 running, 3 stopped, 4 running but not
#          answering (LSB).
# fetch    check that redis-server is installed (Debian's redis-server package; nothing is
#          downloaded) and print its path.
#
# Environment: see docs/servers.md. The essentials:
#   REDIS_DATA_DIR  (default ${STREAMER_DATA:-~/.local/share/stock-streamer}/redis)
#   REDIS_PORT=6379 REDIS_START_TIMEOUT=30 REDIS_STOP_TIMEOUT=30
#   REDIS_PASSWORD  requirepass (unset = no password, fine on loopback for development)
#   REDIS_SAVE      RDB save points, e.g. "3600 1 300 100" (default "": no snapshots, a restart is empty)
#   REDIS_TLS_PORT with REDIS_TLS_CERT, REDIS_TLS_KEY and REDIS_TLS_CA: also serve TLS on that port
#   REDIS_REPLICAOF "host port": start as a replica of that master (scripts/run_sentinel.sh sets it)
#   REDIS_SERVER    the redis-server binary (default: redis-server on PATH)
set -euo pipefail
# Everything this script and the server write is private: redis.conf holds the password, and Sentinel's CONFIG
# REWRITE recreates it with the server's umask.
umask 077

LOG_TAG=redis
SERVER_NAME=Redis
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

DATA_DIR=$(abspath "${REDIS_DATA_DIR:-${STREAMER_DATA:-$HOME/.local/share/stock-streamer}/redis}")
PORT=${REDIS_PORT:-6379}
TLS_PORT=${REDIS_TLS_PORT:-}
START_TIMEOUT=${REDIS_START_TIMEOUT:-30}
STOP_TIMEOUT=${REDIS_STOP_TIMEOUT:-30}
SAVE=${REDIS_SAVE:-}
REPLICAOF=${REDIS_REPLICAOF:-}

PIDFILE=$DATA_DIR/redis.pid
LOGFILE=$DATA_DIR/redis.log
RUNINFO=$DATA_DIR/redis.run
CONF=$DATA_DIR/redis.conf
# Every server we start has this config file on its command line (redis.conf sets set-proc-title no, so Redis
# keeps its argv); the trailing space keeps /data/r/redis.conf from matching /data/r2/redis.conf.
MARKER="$CONF "

validate_settings() {
    require_port REDIS_PORT "$PORT"
    require_seconds REDIS_START_TIMEOUT "$START_TIMEOUT"
    require_seconds REDIS_STOP_TIMEOUT "$STOP_TIMEOUT"
    [[ $SAVE =~ ^([0-9]+[[:space:]]+[0-9]+[[:space:]]*)*$ ]] ||
        die "REDIS_SAVE must be pairs of numbers \"seconds changes ...\" (or empty for no snapshots), got '$SAVE'"
    if [[ -n $TLS_PORT ]]; then
        require_port REDIS_TLS_PORT "$TLS_PORT"
        [[ $TLS_PORT != "$PORT" ]] || die "REDIS_TLS_PORT must differ from REDIS_PORT ($PORT)"
        local var
        for var in REDIS_TLS_CERT REDIS_TLS_KEY REDIS_TLS_CA; do
            [[ -n ${!var:-} ]] || die "REDIS_TLS_PORT is set, so $var must name a PEM file too"
            [[ -r ${!var} ]] || die "$var=${!var} is not a readable file"
        done
    fi
    if [[ -n $REPLICAOF ]]; then
        [[ $REPLICAOF =~ ^[A-Za-z0-9.:-]+\ [0-9]+$ ]] || die "REDIS_REPLICAOF must be \"host port\", got '$REPLICAOF'"
        require_port "the port of REDIS_REPLICAOF" "${REPLICAOF#* }"
    fi
    if [[ -n ${REDIS_PASSWORD:-} && ${REDIS_PASSWORD} == *$'\n'* ]]; then
        die "REDIS_PASSWORD must be one line"
    fi
}

redis_bin() {
    if [[ -n ${REDIS_SERVER:-} ]]; then
        [[ -x $REDIS_SERVER ]] || die "REDIS_SERVER=$REDIS_SERVER is not executable"
        printf '%s\n' "$REDIS_SERVER"
    else
        command -v redis-server || die "redis-server not found: run scripts/bootstrap.sh (it installs Debian's redis-server)"
    fi
}

# The whole file is ours and rewritten on every start (mode 600: it may hold the password). Persistence is off
# unless REDIS_SAVE asks for it: the broker numbers its stream itself and notices a Redis that restarted empty or
# older (docs/scaling.md), so a throwaway Redis is the honest default for development.
# masterauth is written whenever there is a password: under Sentinel any node may become a replica of another.
# A replica syncs at once (repl-diskless-sync-delay 0) instead of waiting 5 s for others to join it.
write_conf() {
    (
        {
            printf '# managed by stock-streamer scripts/run_redis.sh (rewritten on every start)\n'
            printf 'bind 127.0.0.1\nprotected-mode yes\nport %s\n' "$PORT"
            printf 'dir %s\ndbfilename dump.rdb\nappendonly no\n' "$(conf_quote "$DATA_DIR")"
            if [[ -n $SAVE ]]; then printf 'save %s\n' "$SAVE"; else printf 'save ""\n'; fi
            printf 'daemonize no\nset-proc-title no\nlogfile ""\n'
            printf 'repl-diskless-sync-delay 0\n'
            if [[ -n ${REDIS_PASSWORD:-} ]]; then
                printf 'requirepass %s\n' "$(conf_quote "$REDIS_PASSWORD")"
                printf 'masterauth %s\n' "$(conf_quote "$REDIS_PASSWORD")"
            fi
            [[ -z $REPLICAOF ]] || printf 'replicaof %s\n' "$REPLICAOF"
            if [[ -n $TLS_PORT ]]; then
                printf 'tls-port %s\ntls-auth-clients no\n' "$TLS_PORT"
                printf 'tls-cert-file %s\n' "$(conf_quote "$(abspath "$REDIS_TLS_CERT")")"
                printf 'tls-key-file %s\n' "$(conf_quote "$(abspath "$REDIS_TLS_KEY")")"
                printf 'tls-ca-cert-file %s\n' "$(conf_quote "$(abspath "$REDIS_TLS_CA")")"
            fi
        } >"$CONF.tmp"
        mv -f "$CONF.tmp" "$CONF"
    )
}

# PING answered with PONG on the plain port; the password travels in REDISCLI_AUTH, never on a command line.
redis_ping() {  # port
    local out
    out=$(REDISCLI_AUTH=${REDIS_PASSWORD:-} timeout 5 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) || return 1
    [[ $out == PONG ]]
}

redis_ready() {  # pid port [tls_port]
    redis_ping "$2" || return 1
    pid_owns_port "$1" "$2" || return 1
    [[ -z ${3:-} ]] || pid_owns_port "$1" "$3"
}

cmd_start() {
    validate_settings
    have redis-cli || die "redis-cli not found: install Debian's redis-tools package"
    mkdir -p "$DATA_DIR"
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    clear_stale_state
    local pid
    if pid=$(running_pid "$PIDFILE" "$MARKER"); then
        local port
        port=$(runinfo_get "$RUNINFO" port)
        if redis_ready "$pid" "${port:-$PORT}"; then
            log "already running (pid $pid) and answering on 127.0.0.1:${port:-$PORT}; nothing to do"
            return 0
        fi
        wait_until "$START_TIMEOUT" "$pid" "$MARKER" redis_ready "$pid" "${port:-$PORT}" ||
            die_with_log "$LOGFILE" "Redis pid $pid is running but does not answer PING; try: $0 restart"
        log "running (pid $pid) and answering"
        return 0
    fi

    local bin version
    bin=$(redis_bin)
    version=$("$bin" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
    local p
    for p in "$PORT" ${TLS_PORT:+"$TLS_PORT"}; do
        ! port_in_use "$p" || die "port 127.0.0.1:$p is already in use by another process; stop it or choose another REDIS_PORT / REDIS_TLS_PORT"
    done
    write_conf
    printf '\n===== %s run_redis.sh start: Redis %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$version" >>"$LOGFILE"
    log "starting: $bin $CONF"
    spawn_daemon "$PIDFILE" "$LOGFILE" "$bin" "$CONF"
    pid=$(read_pidfile "$PIDFILE")

    local rc=0
    wait_until "$START_TIMEOUT" "$pid" "$MARKER" redis_ready "$pid" "$PORT" "$TLS_PORT" || rc=$?
    if ((rc != 0)); then
        local why="Redis exited during startup"
        ((rc == 1)) && why="Redis did not answer PING on 127.0.0.1:$PORT within ${START_TIMEOUT} s"
        if pid_alive "$pid" "$MARKER"; then stop_pid "$pid" "$MARKER" 10; fi
        rm -f -- "$PIDFILE" "$RUNINFO"
        die_with_log "$LOGFILE" "$why (log: $LOGFILE)"
    fi
    write_runinfo "$RUNINFO" "version=$version" "port=$PORT" "tls_port=$TLS_PORT"
    log "started (pid $pid): redis://127.0.0.1:$PORT${TLS_PORT:+ rediss://127.0.0.1:$TLS_PORT}${REPLICAOF:+, replica of ${REPLICAOF/ /:}}; data $DATA_DIR; log $LOGFILE"
}

cmd_status() {
    local pid
    if ! pid=$(running_pid "$PIDFILE" "$MARKER"); then
        local stale=''
        [[ -e $PIDFILE ]] && stale=", stale pidfile: pid $(read_pidfile "$PIDFILE") is gone (crashed or killed?)"
        log "stopped (data dir $DATA_DIR$stale)"
        return "$STATUS_STOPPED"
    fi
    local port tls ver
    port=$(runinfo_get "$RUNINFO" port); tls=$(runinfo_get "$RUNINFO" tls_port); ver=$(runinfo_get "$RUNINFO" version)
    local where="version ${ver:-?}, port 127.0.0.1:${port:-?}${tls:+, tls 127.0.0.1:$tls}, data $DATA_DIR"
    if [[ -n $port ]] && redis_ready "$pid" "$port" "$tls"; then
        log "running (pid $pid), $where"
        return "$STATUS_RUNNING"
    fi
    log "running (pid $pid) but NOT answering PING, $where"
    return "$STATUS_UNKNOWN"
}

cmd_fetch() {
    local bin
    bin=$(redis_bin)
    log "$("$bin" --version)"
    printf '%s\n' "$bin"
}

main "$@"
