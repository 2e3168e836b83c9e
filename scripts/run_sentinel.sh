#!/usr/bin/env bash
# Run a Redis Sentinel topology on 127.0.0.1 for trying and testing failover: Redis servers (the first a master,
# the others its replicas, each through scripts/run_redis.sh) and Sentinels watching them.
#
#   scripts/run_sentinel.sh start|stop|restart|status|fetch|master|failover
#
# start     start whatever is not running, then return once every Sentinel sees the master, every running
#           replica and every other Sentinel. A Redis server starts as a replica of the current master unless
#           it is that master: the master a running Sentinel names, else a running server that is a master,
#           else (a cold start) the first of SENTINEL_REDIS_PORTS. So `start` after a kill brings the killed
#           server back as a replica of whichever server took over. No-op when everything runs.
# stop      the Sentinels first (stopping the master must not start a failover), then the Redis servers.
# status    each process and its role, and the master the Sentinels name; exit 0 all running and answering,
#           3 all stopped, 4 anything in between (LSB).
# fetch     check that redis-server is installed (Debian's redis-server; it runs the Sentinels too).
# master    print the master's host:port as a running Sentinel names it (exit 1 when none answers).
# failover  ask a Sentinel for a failover (SENTINEL FAILOVER) and wait until another server is the master.
#
# Environment: see docs/servers.md. The essentials:
#   SENTINEL_DATA_DIR   (default ${STREAMER_DATA:-~/.local/share/stock-streamer}/sentinel): holds redis-<port>/
#                       (run_redis.sh data dirs) and sentinel-<port>/ (sentinel.conf, .pid, .log, .run)
#   SENTINEL_MASTER_NAME=streamer   the service name clients ask for (broker.master_name)
#   SENTINEL_REDIS_PORTS="6380 6381"  SENTINEL_PORTS="26379 26380 26381"  SENTINEL_QUORUM=2
#   SENTINEL_DOWN_AFTER_MS=5000  SENTINEL_FAILOVER_TIMEOUT_MS=60000
#   SENTINEL_START_TIMEOUT=60  SENTINEL_STOP_TIMEOUT=30
#   REDIS_PASSWORD      the Redis servers' password (their requirepass and masterauth, the Sentinels' auth-pass)
#   SENTINEL_PASSWORD   the Sentinels' own password (requirepass; unset = none)
#   REDIS_SAVE, REDIS_SERVER  passed to run_redis.sh
set -euo pipefail
# sentinel.conf holds the passwords and Sentinel rewrites it with its own umask: everything here is private.
umask 077

LOG_TAG=sentinel
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

DATA_DIR=$(abspath "${SENTINEL_DATA_DIR:-${STREAMER_DATA:-$HOME/.local/share/stock-streamer}/sentinel}")
NAME=${SENTINEL_MASTER_NAME:-streamer}
read -r -a NODES <<<"${SENTINEL_REDIS_PORTS:-6380 6381}"
read -r -a SENTINELS <<<"${SENTINEL_PORTS:-26379 26380 26381}"
QUORUM=${SENTINEL_QUORUM:-2}
DOWN_AFTER=${SENTINEL_DOWN_AFTER_MS:-5000}
FAILOVER_TIMEOUT=${SENTINEL_FAILOVER_TIMEOUT_MS:-60000}
START_TIMEOUT=${SENTINEL_START_TIMEOUT:-60}
STOP_TIMEOUT=${SENTINEL_STOP_TIMEOUT:-30}
EXTRA_COMMANDS="master failover"

validate_settings() {
    [[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "SENTINEL_MASTER_NAME may hold only letters, digits and . _ -, got '$NAME'"
    ((${#NODES[@]} >= 2)) || die "SENTINEL_REDIS_PORTS must name at least two ports (a master and a replica)"
    ((${#SENTINELS[@]} >= 1)) || die "SENTINEL_PORTS must name at least one port"
    local p
    for p in "${NODES[@]}"; do require_port SENTINEL_REDIS_PORTS "$p"; done
    for p in "${SENTINELS[@]}"; do require_port SENTINEL_PORTS "$p"; done
    local all
    all=$(printf '%s\n' "${NODES[@]}" "${SENTINELS[@]}")
    [[ -z $(sort <<<"$all" | uniq -d) ]] || die "SENTINEL_REDIS_PORTS and SENTINEL_PORTS must all differ, got: ${all//$'\n'/ }"
    if ! [[ $QUORUM =~ ^[1-9][0-9]*$ ]] || ((QUORUM > ${#SENTINELS[@]})); then
        die "SENTINEL_QUORUM must be between 1 and the number of Sentinels (${#SENTINELS[@]}), got '$QUORUM'"
    fi
    [[ $DOWN_AFTER =~ ^[1-9][0-9]*$ ]] || die "SENTINEL_DOWN_AFTER_MS must be a positive number of milliseconds, got '$DOWN_AFTER'"
    [[ $FAILOVER_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
        die "SENTINEL_FAILOVER_TIMEOUT_MS must be a positive number of milliseconds, got '$FAILOVER_TIMEOUT'"
    require_seconds SENTINEL_START_TIMEOUT "$START_TIMEOUT"
    require_seconds SENTINEL_STOP_TIMEOUT "$STOP_TIMEOUT"
    local var
    for var in REDIS_PASSWORD SENTINEL_PASSWORD; do
        [[ ${!var:-} != *$'\n'* ]] || die "$var must be one line"
    done
}

server_bin() {
    if [[ -n ${REDIS_SERVER:-} ]]; then
        [[ -x $REDIS_SERVER ]] || die "REDIS_SERVER=$REDIS_SERVER is not executable"
        printf '%s\n' "$REDIS_SERVER"
    else
        command -v redis-server || die "redis-server not found: run scripts/bootstrap.sh (it installs Debian's redis-server)"
    fi
}

# ---------------------------------------------------------------- the Redis servers (through run_redis.sh)
node_dir() { printf '%s/redis-%s\n' "$DATA_DIR" "$1"; }

run_node() {  # port command [replicaof "host port"]
    REDIS_DATA_DIR=$(node_dir "$1") REDIS_PORT=$1 REDIS_REPLICAOF=${3:-} REDIS_TLS_PORT='' \
        REDIS_START_TIMEOUT=$START_TIMEOUT REDIS_STOP_TIMEOUT=$STOP_TIMEOUT "$SCRIPT_DIR/run_redis.sh" "$2"
}

node_pid() { running_pid "$(node_dir "$1")/redis.pid" "$(node_dir "$1")/redis.conf "; }

# Passwords travel in REDISCLI_AUTH, never on a command line.
node_cli() {  # port args...
    local port=$1; shift
    REDISCLI_AUTH=${REDIS_PASSWORD:-} timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

sentinel_cli() {  # port args...
    local port=$1; shift
    REDISCLI_AUTH=${SENTINEL_PASSWORD:-} timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

# "master", "slave" (Redis's word for a replica) or nothing when the server does not answer.
node_role() { node_cli "$1" role | head -n 1; }

node_linked() {  # port: a replica whose link to its master is up
    node_cli "$1" info replication | tr -d '\r' | grep -qx 'master_link_status:up'
}

# ---------------------------------------------------------------- the Sentinels
sentinel_dir() { printf '%s/sentinel-%s\n' "$DATA_DIR" "$1"; }
sentinel_conf() { printf '%s/sentinel.conf\n' "$(sentinel_dir "$1")"; }
sentinel_pid() { running_pid "$(sentinel_dir "$1")/sentinel.pid" "$(sentinel_conf "$1") "; }

sentinel_ready() {  # pid port
    [[ $(sentinel_cli "$2" ping) == PONG ]] && pid_owns_port "$1" "$2"
}

# The master's port as the first running Sentinel that knows it names it.
sentinel_master() {
    local s out
    for s in "${SENTINELS[@]}"; do
        sentinel_pid "$s" >/dev/null || continue
        out=$(sentinel_cli "$s" sentinel get-master-addr-by-name "$NAME") || continue
        out=$(sed -n 2p <<<"$out")
        [[ $out =~ ^[0-9]+$ ]] && { printf '%s\n' "$out"; return 0; }
    done
    return 1
}

# The master to start replicas of: what the Sentinels say, else a running master, else the first port.
current_master() {
    sentinel_master && return 0
    local n
    for n in "${NODES[@]}"; do
        if node_pid "$n" >/dev/null && [[ $(node_role "$n") == master ]]; then
            printf '%s\n' "$n"
            return 0
        fi
    done
    printf '%s\n' "${NODES[0]}"
}

# Rewritten on every start of a Sentinel (mode 600: it may hold both passwords). Sentinel appends what it
# learns (replicas, other Sentinels, epochs) and relearns it within seconds from the master and its peers.
write_sentinel_conf() {  # port master_port
    local dir conf
    dir=$(sentinel_dir "$1"); conf=$(sentinel_conf "$1")
    {
        printf '# managed by stock-streamer scripts/run_sentinel.sh (rewritten on every start)\n'
        printf 'bind 127.0.0.1\nprotected-mode yes\nport %s\n' "$1"
        printf 'dir %s\ndaemonize no\nset-proc-title no\nlogfile ""\n' "$(conf_quote "$dir")"
        printf 'sentinel resolve-hostnames no\n'
        printf 'sentinel monitor %s 127.0.0.1 %s %s\n' "$NAME" "$2" "$QUORUM"
        printf 'sentinel down-after-milliseconds %s %s\n' "$NAME" "$DOWN_AFTER"
        printf 'sentinel failover-timeout %s %s\n' "$NAME" "$FAILOVER_TIMEOUT"
        printf 'sentinel parallel-syncs %s 1\n' "$NAME"
        [[ -z ${REDIS_PASSWORD:-} ]] || printf 'sentinel auth-pass %s %s\n' "$NAME" "$(conf_quote "$REDIS_PASSWORD")"
        [[ -z ${SENTINEL_PASSWORD:-} ]] || printf 'requirepass %s\n' "$(conf_quote "$SENTINEL_PASSWORD")"
    } >"$conf.tmp"
    mv -f "$conf.tmp" "$conf"
}

start_sentinel() {  # port master_port
    local port=$1 dir pidfile logfile runinfo pid bin version
    dir=$(sentinel_dir "$port"); pidfile=$dir/sentinel.pid; logfile=$dir/sentinel.log; runinfo=$dir/sentinel.run
    mkdir -p "$dir"
    if pid=$(sentinel_pid "$port"); then
        log "sentinel 127.0.0.1:$port already running (pid $pid)"
        return 0
    fi
    rm -f -- "$pidfile" "$runinfo"
    ! port_in_use "$port" || die "port 127.0.0.1:$port is already in use by another process; stop it or choose other SENTINEL_PORTS"
    bin=$(server_bin)
    version=$("$bin" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
    write_sentinel_conf "$port" "$2"
    printf '\n===== %s run_sentinel.sh start: Redis Sentinel %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$version" >>"$logfile"
    spawn_daemon "$pidfile" "$logfile" "$bin" "$(sentinel_conf "$port")" --sentinel
    pid=$(read_pidfile "$pidfile")
    local rc=0
    wait_until "$START_TIMEOUT" "$pid" "$(sentinel_conf "$port") " sentinel_ready "$pid" "$port" || rc=$?
    if ((rc != 0)); then
        if pid_alive "$pid" "$(sentinel_conf "$port") "; then stop_pid "$pid" "$(sentinel_conf "$port") " 10; fi
        rm -f -- "$pidfile" "$runinfo"
        die_with_log "$logfile" "Sentinel on 127.0.0.1:$port did not come up (log: $logfile)"
    fi
    write_runinfo "$runinfo" "version=$version" "port=$port"
    log "sentinel 127.0.0.1:$port started (pid $pid), watching master $NAME at 127.0.0.1:$2"
}

# Lines "port flags link-status" for each replica a Sentinel knows.
sentinel_replicas() {  # sentinel_port
    sentinel_cli "$1" sentinel replicas "$NAME" | awk '
        NR % 2 == 1 { key = $0; next }
        key == "name" && port != "" { print port, flags, link; port = flags = link = "" }
        key == "port" { port = $0 } key == "flags" { flags = $0 } key == "master-link-status" { link = $0 }
        END { if (port != "") print port, flags, link }'
}

sentinel_field() {  # sentinel_port field: a field of SENTINEL MASTER
    sentinel_cli "$1" sentinel master "$NAME" | awk -v f="$2" 'NR % 2 == 1 { key = $0; next } key == f { print; exit }'
}

# Every Sentinel names the same master, sees it up, sees the other Sentinels and knows every running replica,
# and every replica has its link to the master up: only then can a kill of the master be failed over. (A
# Sentinel's view of a replica's link lags by up to 10 s, its INFO period; the replica's own word is current.)
topology_ready() {  # master_port
    local s n
    replicas_linked "$1" || return 1
    for s in "${SENTINELS[@]}"; do
        [[ $(sentinel_master_of "$s") == "$1" ]] || return 1
        [[ $(sentinel_field "$s" flags) == master ]] || return 1
        [[ $(sentinel_field "$s" num-other-sentinels) == $((${#SENTINELS[@]} - 1)) ]] || return 1
        local known
        known=$(sentinel_replicas "$s")
        for n in "${NODES[@]}"; do
            [[ $n != "$1" ]] && node_pid "$n" >/dev/null || continue
            grep -q "^$n slave " <<<"$known" || return 1
        done
    done
}

sentinel_master_of() {  # sentinel_port
    sentinel_cli "$1" sentinel get-master-addr-by-name "$NAME" | sed -n 2p
}

replicas_linked() {  # master_port
    local n
    for n in "${NODES[@]}"; do
        [[ $n != "$1" ]] && node_pid "$n" >/dev/null || continue
        node_linked "$n" || return 1
    done
}

# wait_until wants a process to watch; these waits span several, so they poll under a plain deadline.
wait_for() {  # what cmd...
    local what=$1; shift
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@"; do
        ((SECONDS < deadline)) || die "$what within ${START_TIMEOUT} s; see the logs under $DATA_DIR"
        sleep "$POLL_INTERVAL"
    done
}

# ---------------------------------------------------------------- commands
cmd_start() {
    validate_settings
    have redis-cli || die "redis-cli not found: install Debian's redis-tools package"
    mkdir -p "$DATA_DIR"
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    local master n s
    master=$(current_master)
    node_pid "$master" >/dev/null || run_node "$master" start
    for n in "${NODES[@]}"; do
        [[ $n == "$master" ]] || run_node "$n" start "127.0.0.1 $master"
    done
    if node_pid "$master" >/dev/null; then
        wait_for "the replicas did not link to the master 127.0.0.1:$master" replicas_linked "$master"
    fi
    for s in "${SENTINELS[@]}"; do start_sentinel "$s" "$master"; done
    if node_pid "$master" >/dev/null; then
        wait_for "the Sentinels did not all see master 127.0.0.1:$master, its replicas and each other" \
            topology_ready "$master"
        log "ready: master $NAME at 127.0.0.1:$master; sentinels ${SENTINELS[*]/#/127.0.0.1:}"
    else
        warn "the master 127.0.0.1:$master the Sentinels name is down; they fail it over after ${DOWN_AFTER} ms"
    fi
}

cmd_stop() {
    [[ -d $DATA_DIR ]] || { log "not running (no data dir $DATA_DIR)"; return 0; }
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    local s n pid
    for s in "${SENTINELS[@]}"; do
        if pid=$(sentinel_pid "$s"); then
            log "stopping sentinel 127.0.0.1:$s (pid $pid)"
            stop_pid "$pid" "$(sentinel_conf "$s") " "$STOP_TIMEOUT"
        fi
        rm -f -- "$(sentinel_dir "$s")/sentinel.pid" "$(sentinel_dir "$s")/sentinel.run"
    done
    for n in "${NODES[@]}"; do
        [[ -d $(node_dir "$n") ]] && run_node "$n" stop
    done
    log "stopped"
}

cmd_status() {
    local total=0 up=0 stopped=0 n s pid role master
    master=$(sentinel_master) || master=''
    for n in "${NODES[@]}"; do
        total=$((total + 1))
        if ! pid=$(node_pid "$n"); then
            stopped=$((stopped + 1)); log "redis 127.0.0.1:$n stopped"; continue
        fi
        role=$(node_role "$n")
        case $role in
            master) up=$((up + 1)); log "redis 127.0.0.1:$n running (pid $pid), master" ;;
            slave) up=$((up + 1)); log "redis 127.0.0.1:$n running (pid $pid), replica" ;;
            *) log "redis 127.0.0.1:$n running (pid $pid) but NOT answering" ;;
        esac
    done
    for s in "${SENTINELS[@]}"; do
        total=$((total + 1))
        if ! pid=$(sentinel_pid "$s"); then
            stopped=$((stopped + 1)); log "sentinel 127.0.0.1:$s stopped"; continue
        fi
        if sentinel_ready "$pid" "$s"; then
            up=$((up + 1)); log "sentinel 127.0.0.1:$s running (pid $pid), names master 127.0.0.1:$(sentinel_master_of "$s")"
        else
            log "sentinel 127.0.0.1:$s running (pid $pid) but NOT answering"
        fi
    done
    if [[ -n $master ]]; then
        log "master $NAME: 127.0.0.1:$master; data $DATA_DIR"
    else
        log "master $NAME: unknown, no Sentinel answers; data $DATA_DIR"
    fi
    ((up == total)) && return "$STATUS_RUNNING"
    ((stopped == total)) && return "$STATUS_STOPPED"
    return "$STATUS_UNKNOWN"
}

cmd_fetch() {
    local bin
    bin=$(server_bin)
    log "$("$bin" --version)"
    printf '%s\n' "$bin"
}

cmd_master() {
    local port
    port=$(sentinel_master) || die "no running Sentinel names a master for $NAME"
    printf '127.0.0.1:%s\n' "$port"
}

cmd_failover() {
    validate_settings
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    local before s reply
    before=$(sentinel_master) || die "no running Sentinel names a master for $NAME"
    for s in "${SENTINELS[@]}"; do
        sentinel_pid "$s" >/dev/null || continue
        reply=$(sentinel_cli "$s" sentinel failover "$NAME") || continue
        [[ $reply == OK ]] || die "sentinel 127.0.0.1:$s refused the failover: $reply"
        break
    done
    [[ ${reply:-} == OK ]] || die "no running Sentinel answered"
    master_moved() { local now; now=$(sentinel_master) && [[ $now != "$before" ]]; }
    wait_for "no other server became master" master_moved
    local after
    after=$(sentinel_master)
    wait_for "the Sentinels did not all see the new master 127.0.0.1:$after, its replicas and each other" \
        topology_ready "$after"
    log "failed over: master $NAME moved from 127.0.0.1:$before to 127.0.0.1:$after"
}

main "$@"
