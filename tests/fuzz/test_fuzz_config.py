"""Fuzz the configuration loader: any YAML file or parsed tree gives a `Config` or a `ConfigError` whose every
line names the key path (or the line and column of the YAML) that is wrong."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from streamer.config import Config, ConfigError, load_config, parse_config
from tests.fuzz.conftest import FUZZ, TRIED

KEYS = {
    "data_dir": None,
    "shutdown_timeout": None,
    "symbols": ["file", "include", "exclude", "indices"],
    "market": ["timezone", "calendar", "pre_market_start", "open", "close", "after_hours_end"],
    "polling": ["interval", "pre_market_interval", "after_hours_interval", "publish_unchanged"],
    "providers": ["chain", "stooq", "alpha_vantage", "replay"],
    "sinks": ["questdb", "pocketbase"],
    "websocket": [
        "enabled",
        "host",
        "port",
        "tls_cert",
        "tls_key",
        "history_size",
        "send_buffer",
        "max_frame_bytes",
        "max_subscriptions",
        "max_messages_per_second",
        "require_auth",
        "tokens",
        "allowed_origins",
    ],
    "http": ["enabled", "host", "port"],
    "alerts": ["enabled", "rules"],
    "logging": ["level", "format"],
}
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "${HOME}",
            "${NOPE}",
            "${NOPE:-3}",
            "$$",
            "${",
            "09:00",
            "30",
            "stooq",
            "replay",
            "Europe/Warsaw",
            "Mars/Base",
            "DEBUG",
            "json",
        ]
    ),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
section = st.dictionaries(
    st.sampled_from([*sorted({k for ks in KEYS.values() if ks for k in ks}), "typo"]), value, max_size=4
)
tree = st.one_of(
    st.dictionaries(st.sampled_from([*sorted(KEYS), "unknown"]), st.one_of(section, value), max_size=5),
    value,
)
# A problem line starts with a key path ("a.b[0].c: ..."), "(top level)", or names a place in the file.
_PART = r"""(?:[A-Za-z0-9_-]+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(?:\[\d+\])*"""
PROBLEM = re.compile(
    rf"^(?:{_PART}(?:\.{_PART})*|\(top level\)|line \d+, column \d+|cannot read the file)(?::| is)? \S"
)
ENV = {"HOME": "/home/test"}


def assert_names_the_problem(error: ConfigError) -> None:
    assert error.problems
    for line in error.problems:
        assert PROBLEM.match(line), line


@FUZZ
@given(tree)
def test_any_parsed_tree_is_a_config_or_named_problems(data):
    TRIED["config.parse_config"] += 1
    try:
        assert isinstance(parse_config(data, ENV), Config)
    except ConfigError as e:
        assert_names_the_problem(e)


YAML_NOISE = ["{a: 1", "[1, 2", "&a x", "*a", "!!python/object:os.system", "|", "'", '"', "? x", "%YAML 9"]
yaml_line = st.tuples(
    st.sampled_from([*sorted(KEYS), "  interval", "  port", "- ", "  - x"]),
    st.sampled_from([":", ": ", ":: ", " = "]),
    st.one_of(scalar.map(str), st.sampled_from(YAML_NOISE)),
)
yaml_text = st.one_of(
    st.text(), st.binary(), st.lists(yaml_line).map(lambda items: "\n".join(k + s + v for k, s, v in items))
)


@FUZZ
@given(yaml_text)
def test_any_file_is_a_config_or_named_problems(tmp_path_factory, content):
    TRIED["config.load_config"] += 1
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        assert isinstance(load_config(path, ENV), Config)
    except ConfigError as e:
        assert e.source == str(path)
        assert_names_the_problem(e)


def test_regression_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"http:\n  port: 80\x80\n")
    try:
        load_config(path, ENV)
    except ConfigError as e:
        assert e.problems == ["cannot read the file: not UTF-8 text (byte 0x80 at offset 16)"]
    else:
        raise AssertionError("a non-UTF-8 file was accepted")


def test_regression_odd_keys_are_quoted_in_the_key_path():
    for data, line in [
        ({"": 1}, "'': unknown key (not one of the documented settings)"),
        ({"http": {"a.b": 1}}, "http.'a.b': unknown key (not one of the documented settings)"),
        ({"x:y": "${NOPE}"}, "'x:y': environment variable NOPE is not set"),
    ]:
        try:
            parse_config(data, ENV)
        except ConfigError as e:
            assert e.problems[0].startswith(line), e.problems
        else:
            raise AssertionError(data)


def test_regression_a_session_time_given_as_a_number_or_with_a_zone_is_named():
    """Found by the fuzzer: `after_hours_end: 0.0` (or YAML's unquoted 9:00 = 540) raised a TypeError."""
    for value, problem in [
        (0.0, "must be a time of day written as text"),
        (540, "YAML reads an unquoted 9:00"),
        ("17:05+01:00", "must be a local time without a time zone"),
    ]:
        try:
            parse_config({"market": {"after_hours_end": value}}, ENV)
        except ConfigError as e:
            assert e.problems[0].startswith("market.after_hours_end: ") and problem in e.problems[0], e.problems
        else:
            raise AssertionError(value)
