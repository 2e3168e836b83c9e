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


def cmd_run(args: argparse.Namespace) -> int:
    from .app import demo_config, run_daemon

    if args.push and not args.demo:
        raise ValueError("--push goes with --demo (a live push feed is configured in providers.push)")
    path = _config_path(args.config)
    prepare = partial(demo_config, push=args.push) if args.demo else (lambda c: c)
    config = prepare(load_config(path))
    masker = setup_logging(config.logging.level, config.logging.format, secrets=_secrets(config))
    try:
        # A reload may bring new secrets: the masker learns them before anything is logged about the new file.
        return asyncio.run(
            run_daemon(config, config_path=path, prepare=prepare, on_secrets=lambda new: masker.add(_secrets(new)))
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
    print(f"# {path or 'built-in defaults'}: valid. Effective configuration (secrets masked):")
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
