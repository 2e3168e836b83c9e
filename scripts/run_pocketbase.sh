#!/usr/bin/env bash
# Run a local PocketBase server for stock-streamer, bound to 127.0.0.1 only.
#
#   scripts/run_pocketbase.sh start|stop|restart|status|fetch
#
# start    obtain PocketBase if needed, create/update the superuser, start `serve` in the
#          background and wait until /api/health answers. No-op if already running.
# stop     SIGTERM, wait up to PB_STOP_TIMEOUT s, then SIGKILL. No-op if not running.
# status   print state, pid, version and port; exit 0 running, 3 stopped, 4 running but not
#          answering (LSB).
# fetch    only obtain the binary (warm the cache) and print its path.
#
# Environment: see docs/servers.md. The essentials:
#   PB_DATA_DIR  (default ${STREAMER_DATA:-~/.local/share/stock-streamer}/pocketbase)
#   PB_PORT=8090 PB_START_TIMEOUT=90 PB_STOP_TIMEOUT=30
#   PB_ADMIN_EMAIL / PB_ADMIN_PASSWORD  superuser (dev defaults with a warning when both unset)
#   POCKETBASE_BIN  use this binary; else `pocketbase` on PATH; else build the pin with Go
#   PB_VERSION    build this module version instead of the pin
#   PB_HOOKS_DIR / PB_MIGRATIONS_DIR  passed as --hooksDir / --migrationsDir when set
#   PB_GO_TOOLCHAIN=go1.26.8  toolchain fetched from the Go proxy when the local go is < 1.25
#   STREAMER_CACHE (default ~/.cache/stock-streamer) where builds are kept
set -euo pipefail

LOG_TAG=pocketbase
SERVER_NAME=PocketBase
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

# Pin: newest v0.39.x on the Go module proxy (v0.39.11, 2026-08-14; v0.40.0 followed on
# 2026-08-22). Note `go list -m -versions` omits most versions on this proxy, so the
# pin was found by querying module@v0.39.N directly. v0.39 needs Go >= 1.25 (go.mod).
readonly PB_PIN=v0.39.11
readonly PB_MODULE=github.com/pocketbase/pocketbase
readonly PB_PACKAGE=$PB_MODULE/examples/base       # the stock server (JS hooks + migrations)
readonly PB_MIN_GO=1.25
# Toolchain used when the local go is older than PB_MIN_GO. Pinned (not GOTOOLCHAIN=auto,
# which would pick exactly go1.25.0 from go.mod) because the toolchain's net/http and
# crypto end up inside the server binary; go1.26.8 is what the pin was verified with.
PB_GO_TOOLCHAIN=${PB_GO_TOOLCHAIN:-go1.26.8}
# Local-development superuser used only when neither PB_ADMIN_EMAIL nor PB_ADMIN_PASSWORD
# is set (documented in docs/servers.md). Its password is random, made on first use and kept
# in the data directory (mode 600), so no password lives in the repository.
readonly DEV_ADMIN_EMAIL=admin@example.com

CACHE_ROOT=$(abspath "${STREAMER_CACHE:-$HOME/.cache/stock-streamer}")
DATA_DIR=$(abspath "${PB_DATA_DIR:-${STREAMER_DATA:-$HOME/.local/share/stock-streamer}/pocketbase}")
PORT=${PB_PORT:-8090}
START_TIMEOUT=${PB_START_TIMEOUT:-90}
STOP_TIMEOUT=${PB_STOP_TIMEOUT:-30}
PB_VER=${PB_VERSION:-$PB_PIN}

PIDFILE=$DATA_DIR/pocketbase.pid
LOGFILE=$DATA_DIR/pocketbase.log
RUNINFO=$DATA_DIR/pocketbase.run
# Every server we start has "--dir=$DATA_DIR" on its command line; used to recognise it.
MARKER="--dir=$DATA_DIR "   # trailing space: /data/pb must not match /data/pb2

validate_settings() {
    require_port PB_PORT "$PORT"
    require_seconds PB_START_TIMEOUT "$START_TIMEOUT"
    require_seconds PB_STOP_TIMEOUT "$STOP_TIMEOUT"
    [[ $PB_VER == v* ]] || die "PB_VERSION must be a Go module version like v0.39.11, got '$PB_VER'"
}

# ---------------------------------------------------------------- obtaining PocketBase
PB_BIN=''
PB_ORIGIN=''

# `superuser upsert` exists since v0.23 (before that: `admin create`); -h/--help make
# PocketBase skip its bootstrap, so probing creates no pb_data anywhere.
supports_upsert() {
    local out
    out=$("$1" superuser upsert --help 2>&1) || return 1
    [[ $out == *"superuser upsert"* ]]
}

binary_version() {
    local out
    out=$("$1" --version 2>/dev/null) || true
    out=${out##* }
    printf '%s\n' "${out:-unknown}"
}

go_version() {  # "1.26.8" from "go1.26.8"
    local v
    v=$(go env GOVERSION 2>/dev/null) || v=''
    v=${v#go}
    printf '%s\n' "${v%%[!0-9.]*}"
}

# Pick the go command for the build:
#   go >= PB_MIN_GO       -> as is;
#   go 1.21 .. < MIN      -> GOTOOLCHAIN=$PB_GO_TOOLCHAIN: go fetches that toolchain from the
#                            Go module proxy itself;
#   go < 1.21 (e.g. Debian 12's golang-go 1.19, which ignores GOTOOLCHAIN)
#                         -> bootstrap_go fetches the same toolchain module explicitly.
GO_CMD=(go)
choose_go() {
    local gov
    gov=$(go_version)
    if [[ -n $gov ]] && version_ge "$gov" "$PB_MIN_GO"; then
        log "using go $gov"
    elif [[ -n $gov ]] && version_ge "$gov" 1.21; then
        log "go $gov is older than $PB_MIN_GO (needed by PocketBase $PB_VER); GOTOOLCHAIN=$PB_GO_TOOLCHAIN makes it fetch that toolchain from the Go module proxy"
        export GOTOOLCHAIN=$PB_GO_TOOLCHAIN
    else
        log "go ${gov:-?} predates toolchain switching (Go 1.21); fetching $PB_GO_TOOLCHAIN from the Go module proxy"
        bootstrap_go
    fi
}

# A Go toolchain is published on the module proxy as golang.org/toolchain@v0.0.1-<goX>.<os>-<arch>
# (that is what GOTOOLCHAIN downloads). Fetch it with the old go into the cache; module zips
# carry no file modes, so the executables get +x here, as cmd/go does for its own downloads.
bootstrap_go() {
    local root=$CACHE_ROOT/go/$PB_GO_TOOLCHAIN tmp mod
    if [[ ! -x $root/bin/go ]]; then
        mod="golang.org/toolchain@v0.0.1-$PB_GO_TOOLCHAIN.$(go env GOOS)-$(go env GOARCH)"
        mkdir -p "$CACHE_ROOT/go"
        tmp=$(mktemp -d "$CACHE_ROOT/go/.fetch.XXXXXX")
        # Private GOMODCACHE so the 300 MB toolchain is not kept twice; -modcacherw so it can be moved.
        if ! (cd "$tmp" && GOMODCACHE=$tmp/mod GOFLAGS=-modcacherw go mod download "$mod" >"$tmp/dl.log" 2>&1); then
            sed 's/^/    /' "$tmp/dl.log" >&2
            rm -rf "$tmp"
            die "could not download $mod from the Go module proxy; install Go >= $PB_MIN_GO or set POCKETBASE_BIN"
        fi
        rm -rf "$root"
        mv "$tmp/mod/$mod" "$root"
        chmod +x "$root"/bin/* "$root"/pkg/tool/*/*
        rm -rf "$tmp"
    fi
    # GOROOT from the environment would point at the old installation.
    GO_CMD=(env -u GOROOT GOTOOLCHAIN=local "$root/bin/go")
    log "using $("${GO_CMD[@]}" version)"
}

# go install the pinned module into the cache (once; atomic).
build_pocketbase() {
    local dir=$CACHE_ROOT/pocketbase/$PB_VER tmp started
    PB_BIN=$dir/pocketbase
    [[ -x $PB_BIN ]] && return 0
    have go || die "Go is needed to build PocketBase $PB_VER; install Go (>= $PB_MIN_GO ideally), or set POCKETBASE_BIN to an existing pocketbase binary"
    mkdir -p "$dir"
    take_lock "$CACHE_LOCK_FD" "$dir/.lock" "build"
    [[ -x $PB_BIN ]] && return 0                     # another invocation built it meanwhile
    choose_go
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    log "building $PB_PACKAGE@$PB_VER into $dir (first time only; takes a minute or two)"
    started=$SECONDS
    # CGO_ENABLED=0: pure-Go SQLite, static binary. -X Version: makes `pocketbase --version`
    # report the pin (it says "(untracked)" otherwise). Built from an empty dir so a go.mod
    # or go.work in the caller's cwd cannot interfere.
    if ! (cd "$tmp" && GOBIN=$tmp CGO_ENABLED=0 "${GO_CMD[@]}" install -trimpath \
            -ldflags "-s -w -X $PB_MODULE.Version=${PB_VER#v}" "$PB_PACKAGE@$PB_VER" \
            >"$tmp/build.log" 2>&1); then
        sed 's/^/    /' "$tmp/build.log" >&2
        rm -rf "$tmp"
        die "go install $PB_PACKAGE@$PB_VER failed (see above)"
    fi
    mv -f "$tmp/base" "$PB_BIN"                      # the package's binary is called "base"
    rm -rf "$tmp"
    log "built PocketBase $PB_VER in $((SECONDS - started)) s"
}

# Precedence: POCKETBASE_BIN > pocketbase on PATH (if new enough) > pinned build.
resolve_pocketbase() {
    local onpath
    if [[ -n ${POCKETBASE_BIN:-} ]]; then
        [[ -x $POCKETBASE_BIN && -f $POCKETBASE_BIN ]] || die "POCKETBASE_BIN=$POCKETBASE_BIN is not an executable file"
        PB_BIN=$(abspath "$POCKETBASE_BIN")
        supports_upsert "$PB_BIN" || die "POCKETBASE_BIN=$PB_BIN has no 'superuser upsert' command (PocketBase < v0.23?); v0.23+ is required"
        PB_ORIGIN=POCKETBASE_BIN
    elif onpath=$(command -v pocketbase) && supports_upsert "$onpath"; then
        PB_BIN=$onpath
        PB_ORIGIN="pocketbase on PATH"
    else
        [[ -n ${onpath:-} ]] && warn "ignoring $onpath: no 'superuser upsert' command (PocketBase < v0.23?)"
        build_pocketbase
        PB_ORIGIN="built from $PB_PACKAGE@$PB_VER"
    fi
}

# ---------------------------------------------------------------- superuser
ADMIN_EMAIL=''
ADMIN_PASSWORD=''

dev_password_file() { printf '%s/.dev-superuser-password\n' "$DATA_DIR"; }

# The development superuser's password: made once (random), then read back.
cmd_dev_password() {
    local file
    file=$(dev_password_file)
    if [[ ! -s $file ]]; then
        mkdir -p "$DATA_DIR"
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$file")
    fi
    cat "$file"
}

resolve_admin() {
    if [[ -z ${PB_ADMIN_EMAIL:-} && -z ${PB_ADMIN_PASSWORD:-} ]]; then
        ADMIN_EMAIL=$DEV_ADMIN_EMAIL
        ADMIN_PASSWORD=$(cmd_dev_password)
        warn "PB_ADMIN_EMAIL/PB_ADMIN_PASSWORD not set: using the local-development superuser $DEV_ADMIN_EMAIL (password in $(dev_password_file); '$0 dev-password' prints it). Set both for anything but a local dev server."
    elif [[ -z ${PB_ADMIN_EMAIL:-} || -z ${PB_ADMIN_PASSWORD:-} ]]; then
        die "set both PB_ADMIN_EMAIL and PB_ADMIN_PASSWORD (or neither, for the dev defaults)"
    else
        ADMIN_EMAIL=$PB_ADMIN_EMAIL
        ADMIN_PASSWORD=$PB_ADMIN_PASSWORD
    fi
    [[ $ADMIN_EMAIL == ?*@?* ]] || die "PB_ADMIN_EMAIL='$ADMIN_EMAIL' is not an email address"
    # Checked here so the failure is clear; the password itself is never printed.
    ((${#ADMIN_PASSWORD} >= 8)) || die "PB_ADMIN_PASSWORD must be at least 8 characters (PocketBase's minimum)"
}

# ---------------------------------------------------------------- command lines
# Flags shared by every PocketBase command we run.
#  --dev=false: our cached binary lives under ~/.cache, which PocketBase mistakes for a
#    `go run` build dir (osutils.IsProbablyGoRun checks os.UserCacheDir()); it then turns
#    dev mode on and logs every SQL statement, password hashes and token keys included.
#  --publicDir: likewise it would serve ./pb_public from the caller's cwd; pin it to the
#    data dir (only served if it exists). Custom builds may lack these flags: probe first.
PB_FLAGS=()
compute_flags() {
    local help
    help=$("$PB_BIN" serve --help 2>&1) || true
    PB_FLAGS=(--dir="$DATA_DIR" --dev=false)
    [[ $help == *--publicDir* ]] && PB_FLAGS+=(--publicDir="$DATA_DIR/pb_public")
    if [[ -n ${PB_HOOKS_DIR:-} ]]; then
        [[ $help == *--hooksDir* ]] || die "PB_HOOKS_DIR is set but $PB_BIN has no --hooksDir flag"
        PB_FLAGS+=(--hooksDir="$(abspath "$PB_HOOKS_DIR")")
    fi
    if [[ -n ${PB_MIGRATIONS_DIR:-} ]]; then
        [[ $help == *--migrationsDir* ]] || die "PB_MIGRATIONS_DIR is set but $PB_BIN has no --migrationsDir flag"
        PB_FLAGS+=(--migrationsDir="$(abspath "$PB_MIGRATIONS_DIR")")
    fi
    return 0
}

# ---------------------------------------------------------------- commands
health_url() { printf 'http://127.0.0.1:%s/api/health\n' "${1:-$PORT}"; }

# Ready = /api/health answers 200 from a socket our pid holds.
pb_ready() {  # pid port
    http_ok "$(health_url "$2")" && pid_owns_port "$1" "$2"
}

cmd_start() {
    validate_settings
    mkdir -p "$DATA_DIR"
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    clear_stale_state
    local pid port
    if pid=$(running_pid "$PIDFILE" "$MARKER"); then
        port=$(runinfo_get "$RUNINFO" port)
        port=${port:-$PORT}
        if pb_ready "$pid" "$port"; then
            log "already running (pid $pid) and answering on 127.0.0.1:$port; nothing to do"
            return 0
        fi
        log "already running (pid $pid) but not answering yet; waiting up to ${START_TIMEOUT} s"
        wait_until "$START_TIMEOUT" "$pid" "$MARKER" pb_ready "$pid" "$port" ||
            die_with_log "$LOGFILE" "PocketBase pid $pid is running but does not answer $(health_url "$port"); try: $0 restart"
        log "running (pid $pid) and answering"
        return 0
    fi

    resolve_admin
    resolve_pocketbase
    compute_flags
    local version
    version=$(binary_version "$PB_BIN")
    log "using PocketBase $version ($PB_ORIGIN): $PB_BIN"

    # A foreign server on the port would answer the health check for us; refuse up front.
    ! port_in_use "$PORT" || die "port 127.0.0.1:$PORT is already in use by another process; stop it or set PB_PORT"

    printf '\n===== %s run_pocketbase.sh start: PocketBase %s =====\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$version" >>"$LOGFILE"
    # Before serve, so the superuser exists by the time the server answers. The password
    # goes on argv (the CLI has no other way) but never into our output or the log.
    log "creating/updating superuser $ADMIN_EMAIL"
    "$PB_BIN" superuser upsert "$ADMIN_EMAIL" "$ADMIN_PASSWORD" "${PB_FLAGS[@]}" </dev/null >>"$LOGFILE" 2>&1 ||
        die_with_log "$LOGFILE" "'pocketbase superuser upsert $ADMIN_EMAIL ***' failed"

    local -a cmd=("$PB_BIN" serve --http="127.0.0.1:$PORT" "${PB_FLAGS[@]}")
    log "starting: ${cmd[*]}"
    spawn_daemon "$PIDFILE" "$LOGFILE" "${cmd[@]}"
    pid=$(read_pidfile "$PIDFILE")

    local rc=0
    wait_until "$START_TIMEOUT" "$pid" "$MARKER" pb_ready "$pid" "$PORT" || rc=$?
    if ((rc != 0)); then
        local why="PocketBase exited during startup"
        if ((rc == 1)); then
            why="PocketBase did not answer $(health_url) within ${START_TIMEOUT} s"
            pid_owns_port "$pid" "$PORT" || why+=" (pid $pid does not hold 127.0.0.1:$PORT)"
        fi
        if pid_alive "$pid" "$MARKER"; then stop_pid "$pid" "$MARKER" 10; fi
        rm -f -- "$PIDFILE" "$RUNINFO"
        die_with_log "$LOGFILE" "$why (log: $LOGFILE)"
    fi
    write_runinfo "$RUNINFO" "version=$version" "binary=$PB_BIN" "port=$PORT" "admin_email=$ADMIN_EMAIL"
    log "started (pid $pid): http://127.0.0.1:$PORT (admin UI http://127.0.0.1:$PORT/_/, superuser $ADMIN_EMAIL); data $DATA_DIR; log $LOGFILE"
}

cmd_status() {
    local pid
    if ! pid=$(running_pid "$PIDFILE" "$MARKER"); then
        local stale=''
        [[ -e $PIDFILE ]] && stale=", stale pidfile: pid $(read_pidfile "$PIDFILE") is gone (crashed or killed?)"
        log "stopped (data dir $DATA_DIR$stale)"
        return "$STATUS_STOPPED"
    fi
    local port ver email where
    port=$(runinfo_get "$RUNINFO" port)
    ver=$(runinfo_get "$RUNINFO" version)
    email=$(runinfo_get "$RUNINFO" admin_email)
    where="version ${ver:-?}, http 127.0.0.1:${port:-?}, superuser ${email:-?}, data $DATA_DIR"
    if [[ -n $port ]] && pb_ready "$pid" "$port"; then
        log "running (pid $pid), $where"
        return "$STATUS_RUNNING"
    fi
    log "running (pid $pid) but NOT answering, $where"
    return "$STATUS_UNKNOWN"
}

cmd_fetch() {
    validate_settings
    resolve_pocketbase
    log "PocketBase $(binary_version "$PB_BIN") ($PB_ORIGIN)"
    printf '%s\n' "$PB_BIN"
}

EXTRA_COMMANDS=dev-password
main "$@"
