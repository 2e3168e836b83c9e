# shellcheck shell=bash
# Shared helpers for the scripts/run_*.sh server scripts.
# Sourced, never executed. The caller sets LOG_TAG (e.g. "questdb") before sourcing
# and runs under `set -euo pipefail`.
#
# Conventions:
#   - log/warn go to stdout/stderr with a "[tag]" prefix; die prints to stderr and exits 1.
#   - "alive" means: the pid exists, is not a zombie and its command line contains a marker
#     (the data dir), so a recycled pid is never mistaken for our server.
#   - Time-outs are deadlines polled every POLL_INTERVAL seconds; no fixed sleeps.

LOG_TAG=${LOG_TAG:-server}
POLL_INTERVAL=${POLL_INTERVAL:-0.2}

# Exit codes of `status`, LSB init-script convention. (Used by the sourcing scripts.)
# shellcheck disable=SC2034
readonly STATUS_RUNNING=0
# shellcheck disable=SC2034
readonly STATUS_STOPPED=3
# shellcheck disable=SC2034
readonly STATUS_UNKNOWN=4

log()  { printf '[%s] %s\n' "$LOG_TAG" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$LOG_TAG" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# die, but first show the end of the server log: that is where the real reason is.
die_with_log() {
    local logfile=$1; shift
    printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2
    if [[ -s $logfile ]]; then
        printf '[%s] last 40 lines of %s:\n' "$LOG_TAG" "$logfile" >&2
        tail -n 40 "$logfile" | sed 's/^/    /' >&2
    fi
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# A value in redis.conf's quoting: double quotes, with backslash and double quote escaped.
conf_quote() {
    local v=${1//\\/\\\\}
    printf '"%s"' "${v//\"/\\\"}"
}

# Absolute path without requiring it to exist (the data dir may be created later).
abspath() {
    if have realpath; then realpath -m -- "$1"
    else case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac
    fi
}

require_port() {  # name value
    # No leading zeros: bash arithmetic and printf would read "08" as (bad) octal.
    if ! [[ $2 =~ ^[1-9][0-9]{0,4}$ ]] || (($2 > 65535)); then
        die "$1 must be a TCP port number, got '$2'"
    fi
}

require_seconds() {  # name value
    if ! [[ $2 =~ ^[1-9][0-9]{0,5}$ ]]; then
        die "$1 must be a whole number of seconds >= 1, got '$2'"
    fi
}

# True when major.minor.patch version $1 >= $2 (sort -V does the numeric comparison).
version_ge() {
    [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1) == "$2" ]]
}

# ---------------------------------------------------------------- locking
# Serialises start/stop (and cache downloads) between concurrent invocations, e.g. a
# parallel `make`. flock is util-linux; without it we run unlocked rather than fail.
# The fd is closed for the server process in spawn_daemon so the lock dies with the script.
# shellcheck disable=SC2034
LOCK_FD=9
# shellcheck disable=SC2034
CACHE_LOCK_FD=8
take_lock() {  # fd lockfile what
    local fd=$1 file=$2 what=$3
    have flock || return 0
    eval "exec $fd>\"\$file\""
    if ! flock -n "$fd"; then
        log "waiting for another invocation holding the $what lock ($file)"
        flock -w 900 "$fd" || die "timed out waiting for the $what lock $file"
    fi
}

# ---------------------------------------------------------------- processes
# Echo the pid stored in a pidfile (empty when missing or garbage).
read_pidfile() {
    local pid=
    if [[ -r $1 ]]; then read -r pid <"$1" || true; fi
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
    return 0
}

# pid_alive PID [MARKER]: running, not a zombie, and (when given) MARKER is in its cmdline.
# Zombies matter: when PID 1 does not reap (some containers), a killed server stays a
# zombie forever and `kill -0` keeps succeeding.
pid_alive() {
    local pid=$1 marker=${2:-} state cmdline
    kill -0 "$pid" 2>/dev/null || return 1
    [[ -r /proc/$pid/stat ]] || return 0            # no procfs (not Linux): trust kill -0
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ $state != Z && $state != X ]] || return 1
    [[ -z $marker ]] && return 0
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$marker"* ]]
}

# Echo the pid from PIDFILE if that process is alive and is ours (MARKER); else return 1.
running_pid() {  # pidfile marker
    local pid
    pid=$(read_pidfile "$1")
    [[ -n $pid ]] && pid_alive "$pid" "$2" && { printf '%s\n' "$pid"; return 0; }
    return 1
}

# Start a long-running server detached from this script:
#   - setsid: own session and no controlling terminal, so Ctrl-C in `make` or the end
#     of a CI step's shell does not signal it;
#   - the wrapper writes its own pid and then execs, so the pidfile holds the server's
#     real pid (not a wrapper's), whatever setsid decides about forking;
#   - stdin from /dev/null, stdout/stderr appended to the log, our lock fd closed.
spawn_daemon() {  # pidfile logfile cmd...
    local pidfile=$1 logfile=$2; shift 2
    local -a detach=()
    if have setsid; then detach=(setsid); else warn "setsid not found; server stays in this session"; fi
    rm -f -- "$pidfile"
    # shellcheck disable=SC2016  # $$ and $0 are for the inner shell
    "${detach[@]}" bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
        "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 8>&- 9>&- &
    local deadline=$((SECONDS + 10))
    until [[ -s $pidfile ]]; do
        ((SECONDS < deadline)) || die_with_log "$logfile" "server process did not start (no pidfile after 10 s)"
        sleep "$POLL_INTERVAL"
    done
}

# SIGTERM, wait up to TIMEOUT s, then SIGKILL. Returns once the process is gone.
stop_pid() {  # pid marker timeout
    local pid=$1 marker=$2 timeout=$3 deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while pid_alive "$pid" "$marker"; do
        if ((SECONDS >= deadline)); then
            warn "pid $pid still running ${timeout} s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while pid_alive "$pid" "$marker"; do
                ((SECONDS < deadline)) || die "pid $pid survived SIGKILL"
                sleep "$POLL_INTERVAL"
            done
            return 0
        fi
        sleep "$POLL_INTERVAL"
    done
}

# ---------------------------------------------------------------- network
# True if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    local port=$1
    # bash's /dev/tcp; timeout guards against a filtered port hanging the connect.
    # shellcheck disable=SC2016  # $0 is expanded by the inner bash
    if have timeout; then
        timeout 3 bash -c ': <"/dev/tcp/127.0.0.1/$0"' "$port" 2>/dev/null
    else
        (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# Echo the HTTP status of a GET (000 when nothing answers). Proxies are bypassed: CI often
# sets http_proxy, and a proxy must never see (or answer for) loopback requests.
http_status() {
    local url=$1
    if have curl; then
        curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" 2>/dev/null || true
    else
        python3 - "$url" <<'PY' 2>/dev/null || printf '000'
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as r:
        print(r.status, end="")
except urllib.error.HTTPError as e:
    print(e.code, end="")
except Exception:
    print("000", end="")
PY
    fi
}

http_ok() { [[ $(http_status "$1") == 200 ]]; }

# Inodes of the TCP sockets listening on PORT (any address), from /proc/net/tcp{,6}.
listen_inodes() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null || true
}

# True if PID holds a listening socket on PORT. This is what proves that the server which
# answers the health check is ours: a foreign server that grabbed the port between our
# free-port check and our bind would otherwise answer for a server that failed to bind.
# Without procfs (not Linux) we cannot tell and assume yes.
pid_owns_port() {  # pid port
    local pid=$1 port=$2 inode links
    [[ -r /proc/net/tcp && -d /proc/$pid/fd ]] || return 0
    links=$(find "/proc/$pid/fd" -maxdepth 1 -type l -printf '%l\n' 2>/dev/null) || true
    for inode in $(listen_inodes "$port"); do
        [[ $links == *"socket:[$inode]"* ]] && return 0
    done
    return 1
}

# wait_until TIMEOUT PID MARKER CMD...: poll CMD until it succeeds.
# Returns 0 ready, 1 timed out, 2 the process died meanwhile.
wait_until() {
    local timeout=$1 pid=$2 marker=$3; shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        pid_alive "$pid" "$marker" || return 2
        ((SECONDS < deadline)) || return 1
        sleep "$POLL_INTERVAL"
    done
}

# ---------------------------------------------------------------- key=value state files
# The "run file" records what a running server was started with (version, ports), so
# `status` reports the truth even when the caller's environment has changed since.
write_runinfo() {  # file key=value...
    local file=$1; shift
    printf '%s\n' "$@" >"$file.tmp" && mv -f "$file.tmp" "$file"
}

runinfo_get() {  # file key
    local k v
    [[ -r $1 ]] || return 0
    while IFS='=' read -r k v; do
        [[ $k == "$2" ]] && { printf '%s\n' "$v"; return 0; }
    done <"$1"
}

# --- commands shared by the run scripts. They use the caller's globals: SERVER_NAME, DATA_DIR,
# PIDFILE, RUNINFO, MARKER (what identifies our process), LOCK_FD and STOP_TIMEOUT.
# shellcheck disable=SC2153  # those globals are assigned by the sourcing script

clear_stale_state() {
    if [[ -e $PIDFILE ]] && ! running_pid "$PIDFILE" "$MARKER" >/dev/null; then
        log "removing stale pidfile $PIDFILE (pid $(read_pidfile "$PIDFILE") is not a running $SERVER_NAME for this data dir)"
        rm -f -- "$PIDFILE" "$RUNINFO"
    fi
}

cmd_stop() {
    [[ -d $DATA_DIR ]] || { log "not running (no data dir $DATA_DIR)"; return 0; }
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    local pid
    if ! pid=$(running_pid "$PIDFILE" "$MARKER"); then
        clear_stale_state
        log "not running; nothing to stop"
        return 0
    fi
    log "stopping pid $pid (SIGTERM, SIGKILL after ${STOP_TIMEOUT} s)"
    stop_pid "$pid" "$MARKER" "$STOP_TIMEOUT"
    rm -f -- "$PIDFILE" "$RUNINFO"
    log "stopped"
}

# The command line both run scripts share: start|stop|restart|status|fetch, plus the extra commands a script
# names in EXTRA_COMMANDS (each runs the function cmd_<name>, dashes as underscores).
main() {
    local commands="start stop restart status fetch${EXTRA_COMMANDS:+ $EXTRA_COMMANDS}"
    if (($# != 1)) || [[ " $commands " != *" $1 "* ]]; then
        printf 'usage: %s %s\n' "$0" "${commands// /|}" >&2
        exit 2
    fi
    case $1 in
        restart) cmd_stop && cmd_start ;;
        *) "cmd_${1//-/_}" ;;
    esac
}

