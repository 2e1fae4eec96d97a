"""Logs are evidence, not leaks: no content, keys or tokens ever reach them."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives import serialization

from exchange.harness import samples
from exchange.keys import raw_public
from exchange.logs import configure_logging
from tests.conftest import DatabaseFactory
from tests.live import start_federation

SECRET_SUMMARY = "Operation Lantern: suspect uses the handle nightowl-77"
SECRET_UNIT = "Unit Seven Bravo"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def _key_forms(raw: bytes) -> list[str]:
    return [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]


async def test_logs_hold_ids_but_no_content_keys_or_tokens(
    captured_logs: io.StringIO, tmp_path: Path, databases: DatabaseFactory
) -> None:
    federation = await start_federation(tmp_path, databases)
    try:
        a, b = federation.client(0), federation.client(1)
        request = samples.case_referral([federation.sim(1).node_id], "XA-2026-0077", SECRET_SUMMARY)
        request.notice.case_referral.contact_point.unit = SECRET_UNIT
        sent = await a.submit(request)
        async for _ in b.watch(0):
            break
        opened = await b.get_notice(sent.message_id)
        assert opened.notice.case_referral.summary == SECRET_SUMMARY
        secrets: list[str] = [SECRET_SUMMARY, "nightowl", SECRET_UNIT]
        for sim in federation.nodes:
            # exn_<client id>_<secret>; the secret itself may contain "_".
            secrets += [sim.case_worker_token, sim.case_worker_token.split("_", 2)[2]]
            secrets += [sim.auditor_token.split("_", 2)[2]]
        for node in federation.running.values():
            identity = node.context.identity
            signing = identity.signing_key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            secrets += _key_forms(signing)
            for sealing in identity.sealing_keys.values():
                secrets += _key_forms(
                    sealing.private_bytes(
                        serialization.Encoding.Raw,
                        serialization.PrivateFormat.Raw,
                        serialization.NoEncryption(),
                    )
                )
            secrets.append(node.tls.key_pem.decode().splitlines()[1])
            # Public keys are not secret, but logging them would hint at key material handling.
            secrets += _key_forms(raw_public(identity.signing_key.public_key()))
    finally:
        await federation.close()
    logs = captured_logs.getvalue()
    # Positive control: the flow was logged, by ids.
    assert sent.message_id in logs
    assert "notice.received" in logs
    leaked = [secret for secret in secrets if secret in logs]
    assert not leaked, f"{len(leaked)} secret values found in the logs"
