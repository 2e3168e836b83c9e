"""`run_workers` as a process of its own for the tests: JSON log lines on stderr, the settings as JSON, the worker
command after `--`."""

import argparse
import json
import sys

from streamer.logs import setup_logging
from streamer.supervisor import SupervisorSettings, run_workers

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--settings", default="{}", help="SupervisorSettings fields as a JSON object")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    setup_logging("DEBUG", "json")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    settings = json.loads(args.settings)
    settings["fatal_exit_codes"] = frozenset(settings.get("fatal_exit_codes", ()))
    sys.exit(run_workers(command, args.count, SupervisorSettings(**settings)))
