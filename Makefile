# The two commands a new user needs:  make run  (whole system, offline)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bootstrap setup run run-scaled test lint proto servers fetch-servers stop-servers check-config clean bench-quick bench

## System packages (Java, Maven, Go, chromium, Redis ...): installed with apt-get when root, else it prints
## the exact command to run. Silent and quick when everything is there, so every target runs it.
bootstrap:
	@scripts/bootstrap.sh

setup: $(STAMP)

# Order-only: the check runs every time, but only a changed pyproject.toml reinstalls the venv.
$(STAMP): pyproject.toml | bootstrap
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## Start QuestDB and PocketBase (obtained and cached on first use), then the daemon on the recorded demo session.
## RUN_ARGS=--push: the session also arrives as live ticks from a loopback Upstox-format server (docs/providers.md).
run: setup servers
	PB_ADMIN_PASSWORD="$${PB_ADMIN_PASSWORD:-$$(scripts/run_pocketbase.sh dev-password)}" \
		$(BIN)/streamer run --demo $(RUN_ARGS) -c config.yaml

## The same, scaled out (docs/scaling.md): Redis, one ingest on the demo feed and an edge of two workers on the
## default ports, so the dashboard at http://127.0.0.1:8080/ is served through Redis. Ctrl-C stops both roles.
run-scaled: setup servers
	PB_ADMIN_PASSWORD="$${PB_ADMIN_PASSWORD:-$$(scripts/run_pocketbase.sh dev-password)}" \
		STREAMER_BIN=$(BIN)/streamer STREAMER_CONFIG=config.yaml scripts/run_scaled.sh

## Download QuestDB and build PocketBase into the cache (once; later runs find them there).
fetch-servers: bootstrap
	scripts/run_questdb.sh fetch >/dev/null
	scripts/run_pocketbase.sh fetch >/dev/null

servers: bootstrap
	scripts/run_questdb.sh start
	scripts/run_pocketbase.sh start

stop-servers:
	-scripts/run_pocketbase.sh stop
	-scripts/run_questdb.sh stop
	-scripts/run_redis.sh stop

## The whole test suite; it starts its own QuestDB and PocketBase instances on test ports through scripts/.
test: setup fetch-servers
	$(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks (docs/benchmarks.md): each rewrites its section there. bench-quick takes about 10 minutes;
# bench adds the one-hour soak. They start their own servers on the bench ports (bench/servers.py).
bench-quick: setup fetch-servers
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	for b in bus pocketbase_writes e2e questdb_ingest fanout; do $(BIN)/python -m bench.$$b || exit 1; done

bench: bench-quick
	$(BIN)/python -m bench.soak --duration 3600

LINTED := streamer providers sinks bench examples tests scripts
## Formatting and lint (ruff), then types: mypy --strict over the files [tool.mypy] names (streamer, providers,
## sinks, bench, examples); CI runs it before the tests.
lint: setup
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

## Regenerate providers/upstox/proto/*_pb2.py(i) from its .proto (protoc from the pinned grpcio-tools).
proto: setup
	$(BIN)/python scripts/gen_upstox_proto.py

check-config: setup
	$(BIN)/streamer check-config -c config.yaml

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
