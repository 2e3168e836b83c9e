"""The broker's configuration and connection: a malformed URL named (password masked), the password kept out
of check-config, log lines and status answers while it does reach Redis, and rediss:// against a Redis that
serves TLS with a self-signed certificate."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from streamer.broker.connection import connect, describe
from streamer.broker.layout import Keys
from streamer.broker.lease import Lease
from streamer.broker.publisher import Publisher
from streamer.broker.scripts import Scripts
from streamer.broker.subscriber import Subscriber
from streamer.cli import _secrets
from streamer.config import ConfigError, parse_config
from streamer.logs import setup_logging
from tests.broker.helpers import quotes, redis_client
from tests.conftest import REDIS_PASSWORD, REDIS_PORT, REPO, Server
from tests.support.network import free_ports
from tests.support.waiting import until
from tests.test_secrets import spellings

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

SECRET = "redis-Secret+5/z@x"  # characters a URL must percent-encode


def check_config(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text("broker:\n  url: ${STREAMER_REDIS_URL}\n")
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", "check-config", "-c", str(config)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "STREAMER_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    for spelling in spellings(secret):
        assert spelling not in text, f"{spelling} leaked: {text}"


def test_check_config_names_a_malformed_url_with_its_password_masked(tmp_path):
    result = check_config(tmp_path, f"redis://:{quote(SECRET, safe='')}@127.0.0.1:99999/0")
    assert result.returncode == 2
    assert "broker.url: 'redis://:***@127.0.0.1:99999/0' is not a usable Redis URL: the port must be" in result.stderr
    assert_no_secret(result.stdout + result.stderr)

    for url, problem in [
        ("http://127.0.0.1:6379", "the scheme must be redis or rediss"),
        ("redis:///0", "it names no host"),
        ("redis://127.0.0.1/zero", "the path must be a database number"),
        (f"redis://127.0.0.1/0?password={quote(SECRET, safe='')}", "it takes no ?query"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config({"broker": {"url": url}}, {})
        (line,) = err.value.problems
        assert line.startswith("broker.url: '") and problem in line, line
        assert_no_secret(line)


def test_check_config_prints_the_url_without_its_password(tmp_path):
    result = check_config(tmp_path, f"rediss://streamer:{quote(SECRET, safe='')}@redis.example:6380/2")
    assert result.returncode == 0, result.stderr
    broker = yaml.safe_load(result.stdout.split("\n", 1)[1])["broker"]
    assert broker["url"] == "rediss://streamer@redis.example:6380/2"
    assert broker["password"] == "**********"
    assert_no_secret(result.stdout + result.stderr)


def test_sentinels_come_from_one_variable_and_their_password_is_masked(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "broker:\n  url: redis://127.0.0.1:6379/0\n  sentinels: ${STREAMER_REDIS_SENTINELS}\n"
        "  master_name: streamer\n  sentinel_password: ${STREAMER_REDIS_SENTINEL_PASSWORD}\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "STREAMER_REDIS_SENTINELS": "127.0.0.1:26379, sentinel-2.example:26380",
        "STREAMER_REDIS_SENTINEL_PASSWORD": SECRET,
    }
    command = [sys.executable, "-m", "streamer.cli", "check-config", "-c", str(config)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    broker = yaml.safe_load(result.stdout.split("\n", 1)[1])["broker"]
    assert broker["sentinels"] == ["127.0.0.1:26379", "sentinel-2.example:26380"]
    assert broker["sentinel_password"] == "**********"
    assert_no_secret(result.stdout + result.stderr)

    with pytest.raises(ConfigError) as err:
        parse_config({"broker": {"url": "redis://h/0", "sentinels": "h1:26379,h2", "master_name": "m"}}, {})
    assert "each sentinel must be host:port, not 'h2'" in str(err.value.problems)


@pytest.fixture
def restore_logging():
    """setup_logging configures the whole process: put back what other tests (caplog) rely on."""
    loggers = [logging.getLogger(name) for name in ("", "asyncio", "aiohttp.access", "websockets.server")]
    saved = [(logger, list(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    logging.captureWarnings(False)


async def test_the_password_reaches_redis_but_no_log_line_or_status(broker_config, restore_logging):
    env = {"STREAMER_REDIS_URL": f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{REDIS_PORT}/0"}
    config = parse_config({"broker": {"url": "${STREAMER_REDIS_URL}", "key_prefix": broker_config.key_prefix}}, env)
    assert config.broker.password is not None and config.broker.password.get_secret_value() == REDIS_PASSWORD

    output = io.StringIO()
    setup_logging("DEBUG", "json", stream=output, secrets=_secrets(config))
    # The server wants the password: without it nothing works, with it (from the URL) everything does.
    async with redis_client(config.broker.model_copy(update={"password": None})) as anonymous:
        with pytest.raises((AuthenticationError, ResponseError)):
            await anonymous.ping()
    async with redis_client(config.broker) as redis:
        assert await redis.ping()
        publisher = Publisher(redis, config.broker, Lease(redis, Keys.for_prefix(config.broker.key_prefix).lease, 5))
        edge = Subscriber(redis, config.broker)
        # A component that logs what it was given, as a careless one might: the masker knows the password.
        logging.getLogger("streamer.test").warning("test.echo url=%s password=%s", env, REDIS_PASSWORD)
        statuses = [publisher.status(), edge.status(), describe(config.broker)]

    wrong = config.broker.model_copy(update={"password": SecretStr("wrong-" + SECRET)})
    async with redis_client(wrong) as refused:
        failing = Subscriber(refused, wrong)
        updates = failing.updates()
        task = asyncio.create_task(anext(updates))
        await until(lambda: failing.state in ("disconnected", "failed"), 10, "the refused edge")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await updates.aclose()
        statuses.append(failing.status())
    assert "test.echo" in output.getvalue() and "AuthenticationError" in str(statuses[-1]["error"])
    for text in [output.getvalue(), *map(str, statuses)]:
        assert_no_secret(text, REDIS_PASSWORD)
        assert_no_secret(text, "wrong-" + SECRET)


@pytest.fixture
def tls_redis(tmp_path) -> tuple[Server, int, Path]:
    """A Redis serving TLS with a certificate signed by a CA made for this test."""
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ssl = ["openssl"]

    def run(*args: object) -> None:
        subprocess.run([*ssl, *map(str, args)], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-out", cert, "-days", "1", "-extfile", ext)
    port, tls_port = free_ports(2)
    env = {
        **os.environ,
        "REDIS_DATA_DIR": str(tmp_path / "redis"),
        "REDIS_PORT": str(port),
        "REDIS_TLS_PORT": str(tls_port),
        "REDIS_TLS_CERT": str(cert),
        "REDIS_TLS_KEY": str(key),
        "REDIS_TLS_CA": str(ca),
        "REDIS_PASSWORD": REDIS_PASSWORD,
    }
    server = Server(REPO / "scripts" / "run_redis.sh", env, tmp_path / "redis" / "redis.pid")
    server.start()
    yield server, tls_port, ca
    server.stop()


async def test_rediss_publishes_and_loads_over_tls_verified_against_the_ca(tls_redis, broker_config):
    _, tls_port, ca = tls_redis
    config = broker_config.model_copy(update={"url": f"rediss://127.0.0.1:{tls_port}/0", "tls_ca_file": ca})
    async with redis_client(config) as redis:
        lease = Lease(redis, Keys.for_prefix(config.key_prefix).lease, config.lease_ttl)
        assert await lease.refresh()
        published = await Publisher(redis, config, lease).publish(*quotes(0, ["PKO"]))
        loaded = await Scripts(redis, Keys.for_prefix(config.key_prefix)).load()
        assert loaded is not None and published is not None
        assert (loaded.position.epoch, loaded.position.seq, loaded.latest) == (
            published.epoch,
            published.seq,
            dict(published.quotes),
        )
        info = await redis.execute_command("CLIENT", "INFO")
        assert f"laddr=127.0.0.1:{tls_port}" in info.decode()

    # Without the CA the server's certificate is not trusted: verification is on, not skipped.
    untrusted = config.model_copy(update={"tls_ca_file": None})
    async with redis_client(untrusted) as redis:
        with pytest.raises(ConnectionError, match=r"(?i)certificate"):
            await redis.ping()


def test_connect_refuses_a_config_without_url(broker_config):
    with pytest.raises(ValueError, match=r"broker\.url is not set"):
        connect(broker_config.model_copy(update={"url": None}))
