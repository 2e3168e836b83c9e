"""Reading a configuration: YAML with `${VAR}` / `${VAR:-default}` from the environment, duplicate keys refused,
validated into `Config`, every problem one line naming its key path."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .base import ConfigError
from .model import Config

_VAR = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(part: Any) -> str:
    # A key that is empty or holds dots, colons, spaces... is quoted, so the path still reads unambiguously.
    text = str(part)
    return text if isinstance(part, int) or _PLAIN_KEY.fullmatch(text) else repr(text)


def interpolate(value: Any, env: dict[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree (`$$` is a literal `$`)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{_key(k)}" if path else _key(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name, default = m.group(2), m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError([f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a default)"])

    return _VAR.sub(sub, value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _describe(err: ErrorDetails) -> str:
    path = ".".join(_key(p) for p in err["loc"]) or "(top level)"
    kind, msg = err["type"], err["msg"]
    if kind == "masked_input":
        return f"{path}: {msg}"
    if kind == "extra_forbidden":
        return f"{path}: unknown key (not one of the documented settings)"
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    if msg.startswith("must be") or kind in ("missing",):
        msg = msg if kind != "missing" else "is required"
    return f"{path}: {msg} (got {err['input']!r})" if "input" in err and kind != "missing" else f"{path}: {msg}"


def parse_config(data: Any, env: dict[str, str] | None = None, source: str | None = None) -> Config:
    """Validate an already-parsed YAML tree."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): must be a mapping of settings (got {type(data).__name__})"], source)
    try:
        data = interpolate(data, dict(os.environ) if env is None else env)
    except ConfigError as e:
        raise ConfigError(e.problems, source) from None
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([_describe(err) for err in e.errors(include_url=False)], source) from None


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> Config:
    """Read and validate a config file; `None` gives the built-in defaults."""
    if path is None:
        return parse_config({}, env)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"cannot read the file: {e.strerror}"], str(path)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"cannot read the file: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"], str(path)
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as e:
        marked = e if isinstance(e, yaml.MarkedYAMLError) else None
        mark = marked.problem_mark if marked else None
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = (marked.problem if marked else None) or str(e)
        raise ConfigError([f"{where}not valid YAML: {problem}"], str(path)) from None
    return parse_config(data, env, str(path))
