"""The `streamer` command: run, check-config, replay."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from functools import partial
from pathlib import Path

import yaml
from pydantic import BaseModel, SecretStr

from . import __version__
from .config import Config, ConfigError, load_config
from .logs import setup_logging

EXIT_CONFIG = 2
EXIT_CRASHED = 1


def _config_path(arg: str | None) -> Path | None:
    """`-c FILE`, else $STREAMER_CONFIG, else ./config.yaml when present, else built-in defaults."""
    if arg:
        return Path(arg)
    if os.environ.get("STREAMER_CONFIG"):
        return Path(os.environ["STREAMER_CONFIG"])
    default = Path("config.yaml")
    return default if default.exists() else None


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args.config))


def _secrets(config: Config) -> list[str]:
    """Every secret value in the configuration, so no log line can carry one.

    A value equal to the field's documented default (QuestDB's well-known `quest`) is no secret, and masking it
    would mangle ordinary words ("re***", "***db") in every line."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, SecretStr):
            found.append(node.get_secret_value())
        elif isinstance(node, BaseModel):
            for name, field in type(node).model_fields.items():
                value = getattr(node, name)
                if isinstance(value, SecretStr) and value == field.default:
                    continue
                walk(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(config)
    return found


def check_role(role: str, config: Config) -> None:
    """Refuse a role its configuration cannot run: ingest and edge talk to Redis (`broker.url`; the configuration
    has already named a malformed one)."""
    if role in ("ingest", "edge") and not config.broker.configured:
        what = "publishes the stream to Redis" if role == "ingest" else "reads the stream from Redis"
        raise ValueError(
            f"broker.url: --role {role} {what}; set broker.url (STREAMER_REDIS_URL), e.g. redis://127.0.0.1:6379/0"
        )


def worker_count(args: argparse.Namespace, config: Config) -> int:
    """How many processes `run` starts: --workers N (default one per core) for an edge, else one."""
    if args.workers is not None and args.role != "edge":
        raise ValueError(f"--workers applies to --role edge only (--role {args.role} runs in one process)")
    if args.role != "edge":
        return 1
    from .supervisor import default_workers

    workers: int = args.workers or default_workers()
    shared = [("websocket.port", config.websocket.enabled, config.websocket.port)]
    shared.append(("http.port", config.http.enabled, config.http.port))
    for key, enabled, port in shared:
        if workers > 1 and enabled and port == 0:
            raise ValueError(f"{key}: 0 (any free port) cannot be shared by {workers} workers: set a port")
    return workers


def worker_command(args: argparse.Namespace, path: Path | None) -> list[str]:
    """The command of one worker of `streamer run --workers N`: the same run, in one process."""
    command = [sys.executable, "-m", "streamer.cli", "run", "--role", args.role, "--workers", "1"]
    if path is not None:
        command += ["-c", str(path.resolve())]
    return command + (["--demo"] if args.demo else [])


def cmd_run(args: argparse.Namespace) -> int:
    if args.push and not args.demo:
        raise ValueError("--push goes with --demo (a live push feed is configured in providers.push)")
    path = _config_path(args.config)
    config = load_config(path)
    workers = worker_count(args, config)
    check_role(args.role, config)
    masker = setup_logging(config.logging.level, config.logging.format, secrets=_secrets(config))
    if workers > 1:
        # The supervisor only starts the workers: it imports nothing of the daemon (and starts no thread).
        from .supervisor import SupervisorSettings, run_workers

        # A worker drains within (1 + its components) x shutdown_timeout; five components at most. A worker that
        # finds its configuration or command line wrong says so and exits 2: that stops a group still starting.
        settings = SupervisorSettings(
            stop_timeout=6 * config.shutdown_timeout, fatal_exit_codes=frozenset({EXIT_CONFIG})
        )
        return run_workers(worker_command(args, path), workers, settings)
    from .app import demo_config, run_daemon
    from .compose import Role

    prepare = partial(demo_config, push=args.push) if args.demo else (lambda c: c)
    config = prepare(config)
    try:
        # A reload may bring new secrets: the masker learns them before anything is logged about the new file.
        return asyncio.run(
            run_daemon(
                config,
                config_path=path,
                prepare=prepare,
                on_secrets=lambda new: masker.add(_secrets(new)),
                role=Role(args.role),
            )
        )
    except (KeyboardInterrupt, SystemExit, ConfigError, ValueError, FileNotFoundError):
        raise  # main() reports bad input in one line
    except BaseException:
        # Through the log, not Python's default hook, so the traceback is masked like every other line.
        logging.getLogger("streamer.cli").critical(
            "daemon.crashed the daemon stopped on an unexpected error", exc_info=True
        )
        return EXIT_CRASHED


def cmd_check_config(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    config = load_config(path)
    check_role(args.role, config)
    role = f" for --role {args.role}" if args.role != "all" else ""
    print(f"# {path or 'built-in defaults'}: valid{role}. Effective configuration (secrets masked):")
    print(yaml.safe_dump(config.masked(), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay_command import replay_file

    config = _load(args)
    setup_logging(config.logging.level, config.logging.format, secrets=_secrets(config))
    speed = None if args.speed == "max" else float(args.speed)
    summary = asyncio.run(replay_file(config, Path(args.file), speed, progress=sys.stderr.isatty()))
    print(
        json.dumps(summary)
        if args.json
        else f"replayed {summary['rows']} rows, {summary['symbols']} symbols, {summary['batches']} batches "
        f"in {summary['seconds']:.2f} s ({summary['rows_per_second']:.0f} rows/s)"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status_command import status_main

    return status_main(args.url, args.timeout)


def _speed(text: str) -> str:
    if text == "max":
        return text
    try:
        if float(text) > 0:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"must be a number greater than 0 or 'max' (got {text!r})")


def _positive_int(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer", description="Real-time WSE quotes into QuestDB, PocketBase and WebSocket clients."
    )
    parser.add_argument("--version", action="version", version=f"stock-streamer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "configuration file (default: $STREAMER_CONFIG, else ./config.yaml if present, else defaults)"

    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="Poll the providers and stream quotes "
        "to every configured sink until SIGINT/SIGTERM; SIGHUP re-reads the configuration.",
    )
    run.add_argument("-c", "--config", help=config_help)
    run.add_argument(
        "--demo",
        action="store_true",
        help="run offline on the built-in recorded session "
        "(replay feed; the clock follows the session, so the market is open on any day)",
    )
    run.add_argument(
        "--role",
        choices=("all", "ingest", "edge"),
        default="all",
        help="all: the whole daemon in one process (default); ingest: providers, alerts and storage, publishing to "
        "the broker; edge: WebSocket, SSE and the REST API, fed from the broker",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="--role edge only: run N processes sharing the ports, under a supervisor (default: one per core)",
    )
    run.add_argument(
        "--push",
        action="store_true",
        help="with --demo: the session also arrives as live ticks from a loopback Upstox-format server "
        "(sub-second updates, shown as live; the replay feed stands by as the delayed fallback)",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate a configuration and print it, secrets masked",
        description="Validate the configuration; exit 2 with one line per problem if invalid.",
    )
    check.add_argument("-c", "--config", help=config_help)
    check.add_argument(
        "--role",
        choices=("all", "ingest", "edge"),
        default="all",
        help="also check what this role needs (ingest and edge: broker.url)",
    )
    check.set_defaults(func=cmd_check_config)

    replay = sub.add_parser(
        "replay",
        help="publish a recorded session file to the sinks",
        description="Replay a recorded session CSV (.csv or .csv.gz) through the bus "
        "into the configured sinks, paced by its timestamps or as fast as possible.",
    )
    replay.add_argument("file", help="recorded session file")
    replay.add_argument(
        "--speed", type=_speed, default="1", help="N = N times real time; max = as fast as possible (default: 1)"
    )
    replay.add_argument("-c", "--config", help=config_help)
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    replay.set_defaults(func=cmd_replay)

    status = sub.add_parser(
        "status",
        help="summarise a running daemon's health",
        description="Print a short summary from the daemon's /api/v1/health. "
        "Exit 0 ok or degraded, 1 failed, 3 unreachable.",
    )
    status.add_argument(
        "--url",
        default=os.environ.get("STREAMER_URL", "http://127.0.0.1:8080"),
        help="the daemon's HTTP API (default: $STREAMER_URL or http://127.0.0.1:8080)",
    )
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"streamer: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (ValueError, FileNotFoundError) as e:
        # Bad input from the user (a replay file, a symbol file): say what and where, no traceback.
        print(f"streamer: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
