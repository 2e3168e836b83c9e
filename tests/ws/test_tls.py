"""The WebSocket server over TLS (wss://) with a certificate of its own, as a real client sees it."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from websockets.asyncio.client import connect

from tests.support.quotes import batch
from tests.support.ws import client, expect, running_server, subscribed, symbols_of


async def test_wss_with_a_self_signed_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    async with running_server(tls_cert=cert, tls_key=key) as (server, bus):
        assert server.url.startswith("wss://")
        async with client(server.url, ssl=trust) as ws:
            await subscribed(ws, "PKN")
            await bus.publish(batch("PKN"))
            assert symbols_of(await expect(ws, "stock_updates")) == ["PKN"]
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(server.url)  # the system trust store does not know this certificate
