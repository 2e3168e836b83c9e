import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.config import Config, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def problems(data, env=None):
    with pytest.raises(ConfigError) as err:
        parse_config(data, env or {})
    return err.value.problems


def test_shipped_config_is_valid_and_documents_every_key():
    text = (REPO / "config.yaml").read_text()
    config = load_config(REPO / "config.yaml", env={})
    assert isinstance(config, Config)

    def keys(model, prefix=""):
        for name in type(model).model_fields:
            value = getattr(model, name)
            yield prefix + name
            if hasattr(type(value), "model_fields"):
                yield from keys(value, f"{prefix}{name}.")

    data = yaml.safe_load(text)
    for path in keys(config):
        node = data
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"config.yaml does not show {path}"
            node = node[part]
    # Every key line carries a comment (on the line or the line above).
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.startswith("-"):
            above = lines[i - 1].strip() if i else ""
            assert "#" in line or above.startswith("#"), f"line {i + 1} has no comment: {line!r}"


def test_bad_value_names_key_path_and_value():
    assert problems({"providers": {"stooq": {"interval": -5}}}) == [
        "providers.stooq.interval: must be greater than 0 (got -5)"
    ]


def test_unknown_keys_are_errors():
    assert problems({"polling": {"intervall": 30}}) == [
        "polling.intervall: unknown key (not one of the documented settings)"
    ]


def test_every_problem_is_reported_at_once():
    found = problems({"polling": {"interval": "soon"}, "logging": {"level": "LOUD"}, "extra": 1})
    assert [p.split(":")[0] for p in found] == ["polling.interval", "logging.level", "extra"]


def test_session_times_must_be_ordered():
    found = problems({"market": {"open": "18:00"}})
    assert found[0].startswith("market: ") and "open < close" in found[0]


def test_replay_cannot_be_mixed_with_live_providers():
    assert "replay cannot be combined" in problems({"providers": {"chain": ["stooq", "replay"]}})[0]


def test_environment_interpolation():
    env = {"AV_KEY": "k-123456", "PORT_S": "45"}
    config = parse_config(
        {
            "providers": {
                "alpha_vantage": {"apikey": "${AV_KEY}"},
                "stooq": {"timeout": "${PORT_S}", "apikey": "${STOOQ_KEY:-}"},
            },
            "data_dir": "/srv/$${literal}",
        },
        env,
    )
    assert config.providers.alpha_vantage.apikey.get_secret_value() == "k-123456"
    assert config.providers.stooq.timeout == 45 and config.providers.stooq.apikey is None
    assert str(config.data_dir) == "/srv/${literal}"


def test_missing_variable_without_default_names_key_and_variable():
    assert problems({"providers": {"alpha_vantage": {"apikey": "${NOPE}"}}}) == [
        "providers.alpha_vantage.apikey: environment variable NOPE is not set (use ${NOPE:-default} for a default)"
    ]


def test_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("polling:\n  interval: 30\n  interval: 40\n")
    with pytest.raises(ConfigError, match=r"(?s)c\.yaml.*line 3.*duplicate key 'interval'"):
        load_config(bad)
    bad.write_text("polling: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )


def test_check_config_exits_2_naming_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  stooq:\n    interval: -5\n")
    result = run_cli("check-config", "-c", str(bad))
    assert result.returncode == 2
    assert "providers.stooq.interval: must be greater than 0 (got -5)" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_prints_effective_config_with_secrets_masked(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("providers:\n  alpha_vantage:\n    apikey: ${AV_SECRET}\n")
    result = run_cli("check-config", "-c", str(good), env={"AV_SECRET": "very-secret-key", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "very-secret-key" not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["providers"]["alpha_vantage"]["apikey"] == "**********"
    assert printed["polling"]["interval"] == 30


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["polling", "providers", "market", "symbols", "logging", "data_dir", "shutdown_timeout", "zzz"]
        ),
        yaml_values,
        max_size=4,
    )
)
def test_any_tree_either_validates_or_fails_with_named_problems(data):
    try:
        parse_config(data, {})
    except ConfigError as e:
        assert e.problems and all(":" in p for p in e.problems)
