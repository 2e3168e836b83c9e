#!/usr/bin/env bash
# The system prerequisites of stock-streamer, checked and installed in one place. `make setup` (so `make run`
# and `make test`) and `.ci/run` call it; nothing else in the repository lists system packages.
#
#   scripts/bootstrap.sh          check every prerequisite; install the missing ones with apt-get when run as
#                                 root, otherwise print the one `sudo apt-get install ...` line and exit 1
#   scripts/bootstrap.sh check    only check: exit 1 with that line when something is missing, never install
#   scripts/bootstrap.sh list     print the Debian packages, one per line
#
# Quiet (no output, exit 0) when everything is present: it only looks up commands, no apt call.
#
# For tests: STREAMER_BOOTSTRAP_PROBES="package=command ..." makes the script look for `command` instead of
# the package's own probe, so a test can simulate a missing prerequisite with a name that cannot exist
# without uninstalling anything.
set -euo pipefail

TAG=bootstrap

# package                   probe: a command on PATH, or py:modules  what needs it
REQUIREMENTS=(
    "make                    make              the two commands (make run, make test)"
    "curl                    curl              the server scripts' health checks"
    "openjdk-17-jre-headless java              QuestDB 9.3.x (Java 17)"
    "maven                   mvn               fetching the QuestDB jar from Maven Central"
    "golang-go               go                building PocketBase (an old Go fetches a newer toolchain)"
    "python3-venv            py:venv,ensurepip the project's virtualenv (.venv)"
    "chromium                chromium          the dashboard's browser tests (Playwright drives it)"
    "systemd                 systemd-analyze   checking deploy/*.service (systemd-analyze verify)"
    "redis-server            redis-server      the Redis 7 broker"
    "redis-sentinel          redis-sentinel    Redis Sentinel (failover)"
    "redis-tools             redis-cli         redis-cli, used by the Redis scripts and tests"
)
MIN_PYTHON=3.11

say() { printf '[%s] %s\n' "$TAG" "$*" >&2; }

PROBE=
probe_of() {  # package default-probe: sets PROBE, after STREAMER_BOOTSTRAP_PROBES (no subshell: forks cost)
    local pair
    PROBE=$2
    for pair in ${STREAMER_BOOTSTRAP_PROBES:-}; do
        [[ ${pair%%=*} == "$1" ]] && PROBE=${pair#*=}
    done
    return 0
}

# One python3 run answers for the interpreter and every py: probe (python3 starts in ~20 ms on a quiet machine;
# a start per probe would be most of the script's time). Prints the version, then 1 or 0 per argument, a
# comma-separated group of modules.
python_probe() {
    python3 -I -S -c '
import sys
from importlib.util import find_spec
print("%d.%d" % sys.version_info[:2])
for group in sys.argv[1:]:
    print(int(all(find_spec(m) is not None for m in group.split(","))))
' "$@" 2>/dev/null
}

MISSING=()
find_missing() {  # sets MISSING to the packages whose probe fails; exits when python3 is absent or too old
    local line package probe version i
    local -a py_packages=() py_groups=() found=()
    MISSING=()
    for line in "${REQUIREMENTS[@]}"; do
        read -r package probe _ <<<"$line"
        probe_of "$package" "$probe"
        probe=$PROBE
        if [[ $probe == py:* ]]; then
            py_packages+=("$package")
            py_groups+=("${probe#py:}")
        elif ! command -v "$probe" >/dev/null 2>&1; then
            MISSING+=("$package")
        fi
    done
    mapfile -t found < <(python_probe "${py_groups[@]}" || true)
    version=${found[0]:-}
    if [[ -z $version ]]; then
        say "python3 is not installed (or does not start): stock-streamer needs Python $MIN_PYTHON or newer"
        exit 1
    fi
    if [[ $(printf '%s\n%s\n' "$MIN_PYTHON" "$version" | sort -V | head -n 1) != "$MIN_PYTHON" ]]; then
        say "python3 is $version: stock-streamer needs Python $MIN_PYTHON or newer"
        exit 1
    fi
    for i in "${!py_packages[@]}"; do
        [[ ${found[i + 1]:-0} == 1 ]] || MISSING+=("${py_packages[i]}")
    done
}

cannot_install() {  # reason packages...
    local reason=$1
    shift
    say "missing: $* ($reason). Install them with:"
    printf '    sudo apt-get install -y %s\n' "$*" >&2
    exit 1
}

install() {  # packages...
    if [[ $(id -u) != 0 ]]; then
        cannot_install "not root" "$@"
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        cannot_install "no apt-get here: install the equivalents with this system's package manager" "$@"
    fi
    say "installing: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
    find_missing
    if ((${#MISSING[@]})); then
        say "still missing after apt-get install: ${MISSING[*]}"
        exit 1
    fi
}

main() {
    local command=${1:-install} line package
    case $command in
        list)
            for line in "${REQUIREMENTS[@]}"; do
                read -r package _ <<<"$line"
                printf '%s\n' "$package"
            done
            return
            ;;
        check | install) ;;
        *)
            say "unknown command '$command' (commands: install, check, list)"
            exit 2
            ;;
    esac
    find_missing
    ((${#MISSING[@]})) || return 0
    if [[ $command == check ]]; then
        cannot_install "check only" "${MISSING[@]}"
    fi
    install "${MISSING[@]}"
}

main "$@"
