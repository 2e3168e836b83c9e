#!/usr/bin/env bash
# Run a local QuestDB server for stock-streamer, bound to 127.0.0.1 only.
#
#   scripts/run_questdb.sh start|stop|restart|status|fetch
#
# start    obtain QuestDB if needed, (re)write the bind/telemetry keys in server.conf, start it
#          in the background and wait until /exec answers. No-op if already running.
# stop     SIGTERM, wait up to QDB_STOP_TIMEOUT s, then SIGKILL. No-op if not running.
# status   print state, pid, version and ports; exit 0 running, 3 stopped, 4 running but
#          not answering (LSB).
# fetch    only obtain the server (warm the cache) and print the jar path.
#
# Environment: see docs/servers.md. The essentials:
#   QDB_DATA_DIR  (default ${STREAMER_DATA:-~/.local/share/stock-streamer}/questdb)
#   QDB_HTTP_PORT=9000 QDB_PG_PORT=8812 QDB_ILP_PORT=9009 QDB_MIN_HTTP_PORT=9003
#   QDB_JAVA_OPTS=-Xmx1g QDB_START_TIMEOUT=90 QDB_STOP_TIMEOUT=30 JAVA_HOME
#   QUESTDB_JAR / QUESTDB_HOME  use an existing install instead of downloading
#   QDB_VERSION   force a Maven Central version instead of the pin picked by Java version
#   STREAMER_CACHE (default ~/.cache/stock-streamer) where downloads are kept
set -euo pipefail

LOG_TAG=questdb
SERVER_NAME=QuestDB
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

# Pinned versions, checked against Maven Central's maven-metadata.xml for org.questdb:questdb
# (lastUpdated 2026-10-19): 9.3.4 is the newest 9.3.x and NO 9.4.x is published there yet.
# 9.3.x is built for Java 17; 9.4+ would need Java 25. 9.3.4 also runs on Java 25 (verified
# with Temurin 25.0.3), so the Java 25 pin is 9.3.4 too until a 9.4.x reaches Maven Central;
# bump QDB_PIN_JAVA25 then (the --add-exports for 9.4+ is already handled below).
readonly QDB_PIN_JAVA17=9.3.4
readonly QDB_PIN_JAVA25=9.3.4
readonly MAVEN_DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
readonly MAIN_MODULE=io.questdb/io.questdb.ServerMain

CACHE_ROOT=$(abspath "${STREAMER_CACHE:-$HOME/.cache/stock-streamer}")
DATA_DIR=$(abspath "${QDB_DATA_DIR:-${STREAMER_DATA:-$HOME/.local/share/stock-streamer}/questdb}")
HTTP_PORT=${QDB_HTTP_PORT:-9000}
PG_PORT=${QDB_PG_PORT:-8812}
ILP_PORT=${QDB_ILP_PORT:-9009}
MIN_PORT=${QDB_MIN_HTTP_PORT:-9003}
START_TIMEOUT=${QDB_START_TIMEOUT:-90}
STOP_TIMEOUT=${QDB_STOP_TIMEOUT:-30}
JAVA_OPTS=${QDB_JAVA_OPTS:--Xmx1g}

PIDFILE=$DATA_DIR/questdb.pid
LOGFILE=$DATA_DIR/questdb.log
RUNINFO=$DATA_DIR/questdb.run     # what the running server was started with
CONF=$DATA_DIR/conf/server.conf
# Every server we start has "-d $DATA_DIR" on its command line; used to recognise it.
MARKER="-d $DATA_DIR "   # trailing space: /data/q must not match /data/q2

validate_settings() {
    require_port QDB_HTTP_PORT "$HTTP_PORT"
    require_port QDB_PG_PORT "$PG_PORT"
    require_port QDB_ILP_PORT "$ILP_PORT"
    require_port QDB_MIN_HTTP_PORT "$MIN_PORT"
    require_seconds QDB_START_TIMEOUT "$START_TIMEOUT"
    require_seconds QDB_STOP_TIMEOUT "$STOP_TIMEOUT"
    local -A seen=()
    local p
    for p in "$HTTP_PORT" "$PG_PORT" "$ILP_PORT" "$MIN_PORT"; do
        [[ -z ${seen[$p]:-} ]] || die "port $p is configured twice; QuestDB needs four distinct ports"
        seen[$p]=1
    done
}

# ---------------------------------------------------------------- Java
JAVA=''
JAVA_MAJOR=''

# Major version from `java -version` ("17.0.15", "25", "25-ea", legacy "1.8.0_402").
java_major_of() {
    local out ver
    out=$("$1" -version 2>&1) || die "'$1 -version' failed: $out"
    [[ $out =~ version\ \"([^\"]+)\" ]] || die "cannot parse the output of '$1 -version': $out"
    ver=${BASH_REMATCH[1]}
    ver=${ver#1.}
    printf '%s\n' "${ver%%[!0-9]*}"
}

resolve_java() {  # [java binary]; default: $JAVA_HOME/bin/java, else java on PATH
    if [[ -n ${1:-} ]]; then
        JAVA=$1
    elif [[ -n ${JAVA_HOME:-} ]]; then
        JAVA=$JAVA_HOME/bin/java
        [[ -x $JAVA ]] || die "JAVA_HOME=$JAVA_HOME but $JAVA is not executable"
    else
        JAVA=$(command -v java) || die "no Java found: install Java 17+ or set JAVA_HOME"
    fi
    JAVA_MAJOR=$(java_major_of "$JAVA")
    ((JAVA_MAJOR >= 17)) || die "Java $JAVA_MAJOR at $JAVA is too old: QuestDB 9.x needs Java 17+"
}

# ---------------------------------------------------------------- obtaining QuestDB
# Outputs of resolve_server:
QDB_JAR=''        # jar for -p; empty when running from a QuestDB runtime image
QDB_VER=''        # version, "unknown" when it cannot be read
QDB_ORIGIN=''     # human-readable "where from", for the log

# Implementation-Version from the jar manifest (the file name may lie, e.g. questdb.jar).
jar_version() {
    local mf=''
    if have unzip; then
        mf=$(unzip -p "$1" META-INF/MANIFEST.MF 2>/dev/null) || true
    else
        mf=$(python3 -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read("META-INF/MANIFEST.MF").decode())' "$1" 2>/dev/null) || true
    fi
    [[ $mf =~ Implementation-Version:\ *([^[:space:]]+) ]] && { printf '%s\n' "${BASH_REMATCH[1]}"; return; }
    printf 'unknown\n'
}

# Download org.questdb:questdb:VERSION with Maven into the cache (once; atomic).
fetch_questdb() {  # version -> sets QDB_JAR
    local version=$1 dir jar tmp mvnlog started
    dir=$CACHE_ROOT/questdb/$version
    jar=$dir/questdb-$version.jar
    QDB_JAR=$jar
    [[ -s $jar ]] && return 0
    have mvn || die "Maven (mvn) is needed to download QuestDB $version; install it, or point QUESTDB_JAR/QUESTDB_HOME at an existing install"
    mkdir -p "$dir"
    take_lock "$CACHE_LOCK_FD" "$dir/.lock" "download"
    [[ -s $jar ]] && return 0                         # another invocation fetched it meanwhile
    tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
    mvnlog=$tmp/mvn.log
    log "downloading org.questdb:questdb:$version from Maven Central into $dir"
    started=$SECONDS
    # Run from an empty dir so a pom.xml in the caller's cwd cannot change the build.
    # --strict-checksums: fail on a corrupt download instead of warning.
    if ! (cd "$tmp" && mvn -B -q --strict-checksums -Dstyle.color=never \
            "$MAVEN_DEP_PLUGIN:copy" "-Dartifact=org.questdb:questdb:$version:jar" \
            "-DoutputDirectory=$tmp" >"$mvnlog" 2>&1); then
        sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /' "$mvnlog" >&2   # strip jansi colour codes
        rm -rf "$tmp"
        die "Maven could not download org.questdb:questdb:$version (see above)"
    fi
    [[ $(jar_version "$tmp/questdb-$version.jar") == "$version" ]] ||
        { rm -rf "$tmp"; die "downloaded jar does not report version $version"; }
    mv -f "$tmp/questdb-$version.jar" "$jar"
    rm -rf "$tmp"
    log "downloaded QuestDB $version in $((SECONDS - started)) s"
}

# A QuestDB "rt" distribution is a jlink image: bin/java with the io.questdb module linked in.
# Prints the module version ("io.questdb@9.3.4" -> 9.3.4; "unknown" if it has none).
runtime_image_version() {
    local mods
    [[ -x $1/bin/java ]] || return 1
    mods=$("$1/bin/java" --list-modules 2>/dev/null) || return 1
    [[ $mods =~ (^|[[:space:]])io\.questdb(@([^[:space:]]+))? ]] || return 1
    printf '%s\n' "${BASH_REMATCH[3]:-unknown}"
}

# The questdb jar inside QUESTDB_HOME: top level (no-JRE tarball: questdb.sh + questdb.jar,
# or a directory holding a Maven jar), else lib/ or bin/. Returns 1 if none, 2 (and prints
# them all) if several.
find_home_jar() {
    local home=$1 d f
    local -a found=()
    for d in "$home" "$home/lib" "$home/bin"; do
        for f in "$d"/questdb.jar "$d"/questdb-[0-9]*.jar; do
            [[ -f $f ]] || continue
            case $f in *-sources.jar | *-javadoc.jar | *-tests.jar) continue ;; esac
            found+=("$f")
        done
        ((${#found[@]} == 0)) || break
    done
    case ${#found[@]} in
        0) return 1 ;;
        1) printf '%s\n' "${found[0]}" ;;
        *) printf '%s\n' "${found[@]}"; return 2 ;;
    esac
}

# Decide what to run. Precedence: QUESTDB_JAR > QUESTDB_HOME > pinned download.
resolve_server() {
    if [[ -n ${QUESTDB_JAR:-} ]]; then
        [[ -f $QUESTDB_JAR ]] || die "QUESTDB_JAR=$QUESTDB_JAR is not a file"
        resolve_java
        QDB_JAR=$(abspath "$QUESTDB_JAR")
        QDB_VER=$(jar_version "$QDB_JAR")
        QDB_ORIGIN="QUESTDB_JAR"
    elif [[ -n ${QUESTDB_HOME:-} ]]; then
        [[ -d $QUESTDB_HOME ]] || die "QUESTDB_HOME=$QUESTDB_HOME is not a directory"
        local home rc=0
        home=$(abspath "$QUESTDB_HOME")
        QDB_JAR=$(find_home_jar "$home") || rc=$?
        ((rc != 2)) || die "several QuestDB jars in $home: ${QDB_JAR//$'\n'/ }; set QUESTDB_JAR to the one to use"
        if ((rc == 0)); then
            resolve_java
            QDB_VER=$(jar_version "$QDB_JAR")
            QDB_ORIGIN="QUESTDB_HOME jar"
        elif QDB_VER=$(runtime_image_version "$home"); then
            # The bundled runtime contains the server; JAVA_HOME is deliberately ignored.
            QDB_JAR=''
            resolve_java "$home/bin/java"
            QDB_ORIGIN="QUESTDB_HOME runtime image (bundled Java, JAVA_HOME ignored)"
        else
            die "QUESTDB_HOME=$home holds neither questdb.jar / questdb-<version>.jar (top level, lib/ or bin/) nor a QuestDB runtime image (bin/java with module io.questdb)"
        fi
    else
        resolve_java
        if [[ -n ${QDB_VERSION:-} ]]; then
            QDB_VER=$QDB_VERSION
            QDB_ORIGIN="Maven Central, QDB_VERSION override"
        elif ((JAVA_MAJOR >= 25)); then
            QDB_VER=$QDB_PIN_JAVA25
            QDB_ORIGIN="Maven Central, pin for Java >= 25 (no 9.4.x on Maven Central yet)"
        else
            QDB_VER=$QDB_PIN_JAVA17
            QDB_ORIGIN="Maven Central, pin for Java 17-24 (9.3.x line)"
        fi
        fetch_questdb "$QDB_VER"
    fi
    if [[ $QDB_VER != unknown ]] && version_ge "$QDB_VER" 9.4.0 && ((JAVA_MAJOR < 25)); then
        die "QuestDB $QDB_VER needs Java 25+, but $JAVA is Java $JAVA_MAJOR; set JAVA_HOME to a Java 25 install"
    fi
}

# JVM flags the QuestDB/Java combination needs.
QDB_JVM_FLAGS=()
compute_jvm_flags() {
    QDB_JVM_FLAGS=(--add-exports java.base/jdk.internal.math=io.questdb)
    # 9.4+: without this the worker threads die and HTTP never comes up.
    if [[ $QDB_VER == unknown ]] || version_ge "$QDB_VER" 9.4.0; then
        QDB_JVM_FLAGS+=(--add-exports java.base/jdk.internal.vm=io.questdb)
    fi
    # QuestDB loads its native library and uses sun.misc.Unsafe; newer JDKs warn loudly
    # about both unless told this module is allowed to.
    ((JAVA_MAJOR >= 22)) && QDB_JVM_FLAGS+=(--enable-native-access=io.questdb)
    ((JAVA_MAJOR >= 24)) && QDB_JVM_FLAGS+=(--sun-misc-unsafe-memory-access=allow)
    return 0
}

# ---------------------------------------------------------------- server.conf
# Keys (checked against the server.conf shipped in the 9.3.4 jar and PropServerConfiguration):
# http.net.bind.to is the current HTTP key (http.bind.to is only a legacy fallback), likewise
# http.min.net.bind.to. UDP line protocol is off by default but would bind 0.0.0.0:9009,
# so it is pinned off and to loopback. telemetry.enabled=false stops the telemetry tables
# the web console reports home from.
readonly MANAGED_BEGIN='# >>> managed by stock-streamer scripts/run_questdb.sh (rewritten on every start)'
readonly MANAGED_END='# <<< end of managed block'

write_server_conf() {
    local -a managed=(
        "http.net.bind.to=127.0.0.1:$HTTP_PORT"
        "http.min.net.bind.to=127.0.0.1:$MIN_PORT"
        "pg.net.bind.to=127.0.0.1:$PG_PORT"
        "line.tcp.net.bind.to=127.0.0.1:$ILP_PORT"
        "line.udp.enabled=false"
        "line.udp.bind.to=127.0.0.1:$ILP_PORT"
        "telemetry.enabled=false"
    )
    # Legacy aliases are dropped too so nobody is misled into editing a key that is ignored.
    local drop='http.bind.to http.min.bind.to' kv
    for kv in "${managed[@]}"; do drop+=" ${kv%%=*}"; done
    mkdir -p "$DATA_DIR/conf"
    touch "$CONF"
    # Keep the user's other settings; remove our previous block and any uncommented line
    # that sets a managed key (Java properties allow "k=v", "k = v", "k: v", "k v").
    awk -v begin="$MANAGED_BEGIN" -v end="$MANAGED_END" -v drop="$drop" '
        BEGIN { n = split(drop, keys, " "); for (i = 1; i <= n; i++) managed[keys[i]] = 1 }
        $0 == begin { skip = 1; next }
        $0 == end   { skip = 0; next }
        skip { next }
        {
            line = $0; sub(/^[ \t]+/, "", line)
            key = line; sub(/[ \t]*[=: \t].*$/, "", key)
            if (substr(line, 1, 1) != "#" && substr(line, 1, 1) != "!" && (key in managed)) next
            print
        }' "$CONF" >"$CONF.tmp"
    { printf '%s\n' "$MANAGED_BEGIN"; printf '%s\n' "${managed[@]}"; printf '%s\n' "$MANAGED_END"; } >>"$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
}

# ---------------------------------------------------------------- commands
health_url() { printf 'http://127.0.0.1:%s/exec?query=SELECT%%201\n' "${1:-$HTTP_PORT}"; }

# Ready = /exec answers 200 AND every configured port is held by our pid (QuestDB keeps
# running, half-broken, when one listener fails to bind).
qdb_ready() {  # pid http pg ilp min
    local pid=$1 p
    http_ok "$(health_url "$2")" || return 1
    for p in "${@:2}"; do pid_owns_port "$pid" "$p" || return 1; done
}

# Why a started server is not ready: name the ports it failed to take.
qdb_not_ready_reason() {  # pid http pg ilp min
    local pid=$1 p bad=''
    for p in "${@:2}"; do pid_owns_port "$pid" "$p" || bad+=" 127.0.0.1:$p"; done
    if [[ -n $bad ]]; then
        printf 'pid %s does not hold%s (another process took the port, or the bind failed)\n' "$pid" "$bad"
    else
        printf 'no HTTP 200 from %s\n' "$(health_url "$2")"
    fi
}

# Ports of the running server as recorded at its start (falls back to the environment).
recorded_ports() {
    printf '%s %s %s %s\n' "$(runinfo_get "$RUNINFO" http_port)" "$(runinfo_get "$RUNINFO" pg_port)" \
        "$(runinfo_get "$RUNINFO" ilp_port)" "$(runinfo_get "$RUNINFO" min_http_port)"
}

cmd_start() {
    validate_settings
    mkdir -p "$DATA_DIR"
    take_lock "$LOCK_FD" "$DATA_DIR/.run.lock" "data dir"
    clear_stale_state
    local pid
    if pid=$(running_pid "$PIDFILE" "$MARKER"); then
        local -a ports
        read -r -a ports <<<"$(recorded_ports)"
        ((${#ports[@]} == 4)) || ports=("$HTTP_PORT" "$PG_PORT" "$ILP_PORT" "$MIN_PORT")
        if qdb_ready "$pid" "${ports[@]}"; then
            log "already running (pid $pid) and answering on 127.0.0.1:${ports[0]}; nothing to do"
            return 0
        fi
        log "already running (pid $pid) but not answering yet; waiting up to ${START_TIMEOUT} s"
        wait_until "$START_TIMEOUT" "$pid" "$MARKER" qdb_ready "$pid" "${ports[@]}" ||
            die_with_log "$LOGFILE" "QuestDB pid $pid is running but not ready: $(qdb_not_ready_reason "$pid" "${ports[@]}"); try: $0 restart"
        log "running (pid $pid) and answering"
        return 0
    fi

    resolve_server
    compute_jvm_flags
    log "using QuestDB $QDB_VER (${QDB_ORIGIN}) on Java $JAVA_MAJOR ($JAVA)"
    [[ -n $QDB_JAR ]] && log "jar: $QDB_JAR"

    # A foreign process on one of our ports would answer the health check for us (HTTP) or
    # make QuestDB fail to bind; refuse up front with a clear message.
    local p
    for p in "$HTTP_PORT" "$PG_PORT" "$ILP_PORT" "$MIN_PORT"; do
        ! port_in_use "$p" || die "port 127.0.0.1:$p is already in use by another process; stop it or choose other QDB_*_PORT values"
    done

    write_server_conf
    local -a opts cmd
    read -r -a opts <<<"$JAVA_OPTS"
    cmd=("$JAVA" "${opts[@]}" "${QDB_JVM_FLAGS[@]}")
    [[ -n $QDB_JAR ]] && cmd+=(-p "$QDB_JAR")
    cmd+=(-m "$MAIN_MODULE" -d "$DATA_DIR")

    printf '\n===== %s run_questdb.sh start: QuestDB %s, Java %s =====\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$QDB_VER" "$JAVA_MAJOR" >>"$LOGFILE"
    log "starting: ${cmd[*]}"
    spawn_daemon "$PIDFILE" "$LOGFILE" "${cmd[@]}"
    pid=$(read_pidfile "$PIDFILE")

    local rc=0 ports=("$HTTP_PORT" "$PG_PORT" "$ILP_PORT" "$MIN_PORT")
    wait_until "$START_TIMEOUT" "$pid" "$MARKER" qdb_ready "$pid" "${ports[@]}" || rc=$?
    if ((rc != 0)); then
        local why="QuestDB exited during startup"
        ((rc == 1)) && why="QuestDB not ready within ${START_TIMEOUT} s: $(qdb_not_ready_reason "$pid" "${ports[@]}")"
        if pid_alive "$pid" "$MARKER"; then stop_pid "$pid" "$MARKER" 10; fi
        rm -f -- "$PIDFILE" "$RUNINFO"
        die_with_log "$LOGFILE" "$why (log: $LOGFILE)"
    fi
    write_runinfo "$RUNINFO" "version=$QDB_VER" "java=$JAVA" "java_major=$JAVA_MAJOR" \
        "jar=$QDB_JAR" "http_port=$HTTP_PORT" "pg_port=$PG_PORT" "ilp_port=$ILP_PORT" \
        "min_http_port=$MIN_PORT"
    log "started (pid $pid): http://127.0.0.1:$HTTP_PORT pg 127.0.0.1:$PG_PORT ilp/tcp 127.0.0.1:$ILP_PORT health http://127.0.0.1:$MIN_PORT; data $DATA_DIR; log $LOGFILE"
}

cmd_status() {
    local pid
    if ! pid=$(running_pid "$PIDFILE" "$MARKER"); then
        local stale=''
        [[ -e $PIDFILE ]] && stale=", stale pidfile: pid $(read_pidfile "$PIDFILE") is gone (crashed or killed?)"
        log "stopped (data dir $DATA_DIR$stale)"
        return "$STATUS_STOPPED"
    fi
    local http pg ilp mn ver
    http=$(runinfo_get "$RUNINFO" http_port); pg=$(runinfo_get "$RUNINFO" pg_port)
    ilp=$(runinfo_get "$RUNINFO" ilp_port); mn=$(runinfo_get "$RUNINFO" min_http_port)
    ver=$(runinfo_get "$RUNINFO" version)
    local where="version ${ver:-?}, http 127.0.0.1:${http:-?}, pg 127.0.0.1:${pg:-?}, ilp 127.0.0.1:${ilp:-?}, health 127.0.0.1:${mn:-?}, data $DATA_DIR"
    if [[ -n $http && -n $pg && -n $ilp && -n $mn ]] && qdb_ready "$pid" "$http" "$pg" "$ilp" "$mn"; then
        log "running (pid $pid), $where"
        return "$STATUS_RUNNING"
    fi
    log "running (pid $pid) but NOT answering on http port ${http:-?}, $where"
    return "$STATUS_UNKNOWN"
}

cmd_fetch() {
    resolve_server
    log "QuestDB $QDB_VER (${QDB_ORIGIN}) for Java $JAVA_MAJOR ($JAVA)"
    printf '%s\n' "${QDB_JAR:-${QUESTDB_HOME:-}}"
}

main "$@"
