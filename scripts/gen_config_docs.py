#!/usr/bin/env python3
"""Write docs/configuration.md from the configuration model (keys, types, defaults, constraints) and the
comments of config.yaml (what each key means), so the reference cannot drift from the code.

    python scripts/gen_config_docs.py          # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check  # exit 1 if it is out of date or a key has no comment"""

from __future__ import annotations

import argparse
import re
import sys
import types
from datetime import time
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamer.config import AlertRule, Config

OUTPUT = REPO / "docs" / "configuration.md"
CONFIG_YAML = REPO / "config.yaml"
_KEY = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):(?:\s+(.*))?$")


def yaml_comments(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Key path -> the comment lines right above it, and key path -> its value as written in config.yaml."""
    comments: dict[str, str] = {}
    values: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if match is None:  # a list item or a continuation: not a key of the model
            pending = []
            continue
        indent, key, value = len(match[1]), match[2], (match[3] or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path = ".".join(k for _, k in stack)
        comments[path] = " ".join(pending)
        if value:
            values[path] = value
        pending = []
    return comments, values


def _model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def describe_type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(describe_type(a) for a in rest)
        return text + " (empty = not set)" if len(rest) < len(args) else text
    if origin is list:
        return f"list of {describe_type(args[0])}"
    if origin is dict:
        return f"mapping {describe_type(args[0])} → {describe_type(args[1])}"
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path",
        time: "time HH:MM",
        SecretStr: "secret string",
    }
    if annotation in names:
        return names[annotation]
    if _model(annotation):
        return annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: FieldInfo) -> str:
    out = []
    for item in field.metadata:
        for attr, sign in (
            ("gt", ">"),
            ("ge", "≥"),
            ("lt", "<"),
            ("le", "≤"),
            ("min_length", "length ≥"),
            ("max_length", "length ≤"),
            ("pattern", "matches"),
        ):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} `{value}`" if attr == "pattern" else f"{sign} {value}")
    return ", ".join(out)


def show_default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, time):
        value = value.strftime("%H:%M")
    if value is None:
        return "not set"
    if isinstance(value, (list, dict)) and not value:
        return "`[]`" if isinstance(value, list) else "`{}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(
    model: type[BaseModel], prefix: str, comments: dict[str, str], values: dict[str, str], missing: list[str]
) -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        comment = comments.get(path, "")
        if not comment:
            missing.append(path)
        nested = _model(field.annotation)
        if nested is not None:
            out.append(f"| **`{path}`** | section | | {cell(comment)} |")
            out += rows(nested, path, comments, values, missing)
            continue
        kind = describe_type(field.annotation)
        limits = constraints(field)
        written = values.get(path)
        description = comment + (f" In config.yaml: `{written}`." if written and "${" in written else "")
        out.append(
            f"| `{path}` | {cell(kind)}{', ' + cell(limits) if limits else ''} | {cell(show_default(field))} "
            f"| {cell(description)} |"
        )
    return out


def render() -> tuple[str, list[str]]:
    comments, values = yaml_comments(CONFIG_YAML.read_text(encoding="utf-8"))
    missing: list[str] = []
    table = rows(Config, "", comments, values, missing)
    rule = [
        f"| `{name}` | {cell(describe_type(f.annotation))}"
        f"{', ' + cell(constraints(f)) if constraints(f) else ''} | {cell(show_default(f))} |"
        for name, f in AlertRule.model_fields.items()
    ]
    text = "\n".join(
        [
            "# Configuration reference",
            "",
            "<!-- Generated by scripts/gen_config_docs.py from streamer/config/ and the comments of config.yaml;",
            "     do not edit by hand: change those two and run `python scripts/gen_config_docs.py`. -->",
            "",
            "The daemon reads one YAML file (`streamer run -c FILE`; default `$STREAMER_CONFIG`, else `./config.yaml`,",
            "else built-in defaults). `${VAR}` and `${VAR:-default}` are replaced from the environment (`$$` is a",
            "literal `$`), so secrets stay in the environment (under systemd: the `EnvironmentFile`, see",
            "[operations.md](operations.md)). Unknown keys are errors, and every problem is reported with its key",
            "path: `streamer check-config -c FILE` validates a file and prints it with secrets masked.",
            "",
            "On SIGHUP (`systemctl reload stock-streamer`) the file is read again: `symbols.*`, `alerts.rules` and",
            "`logging.level` apply at once; other changed keys are logged as `reload.needs_restart`; a file that fails",
            "validation is logged as `reload.invalid` and the running configuration is kept.",
            "",
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
            *table,
            "",
            "## Alert rules",
            "",
            "Each entry of `alerts.rules` is a mapping with these keys:",
            "",
            "| key | type | default |",
            "| --- | --- | --- |",
            *rule,
            "",
            "`threshold` means: `change_percent`: the absolute change in % against the previous close; `price_cross`: "
            "the price level; `volume_spike`: the multiple of the average volume per cycle over the last `window` "
            "cycles. `cooldown` is in seconds per rule and symbol, measured in quote time.",
            "",
        ]
    )
    return text, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text, missing = render()
    if missing:
        print("config.yaml has no comment above: " + ", ".join(missing), file=sys.stderr)
        return 1
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.relative_to(REPO)} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
