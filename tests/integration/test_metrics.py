"""The Prometheus endpoint of running nodes: what it counts, and what it never shows.

Two nodes with `[metrics] listen` on an ephemeral loopback port, real traffic
between them, each endpoint scraped over HTTP and parsed with prometheus_client's
own parser; both store engines.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exchange.harness import samples
from exchange.rpc.client import AuthorityClient
from tests.conftest import DatabaseFactory
from tests.integration.test_lifecycle import delivered, eventually, received
from tests.live import Federation, start_federation

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int | None) -> tuple[str, Samples]:
    assert port is not None, "the metrics endpoint is off"

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body: bytes = answer.read()
            return body.decode()

    text = await asyncio.to_thread(get)
    parsed: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, parsed


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
async def metered(
    tmp_path: Path, databases: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Federation]:
    monkeypatch.setenv("EXCHANGE_METRICS_LISTEN", "127.0.0.1:0")
    running = await start_federation(tmp_path, databases, countries=2)
    try:
        yield running
    finally:
        await running.close()


async def test_notices_are_counted_on_both_sides_and_no_label_is_personal(
    metered: Federation,
) -> None:
    federation = metered
    xa, xb = federation.sim(0).node_id, federation.sim(1).node_id
    sender, recipient = federation.client(0), federation.client(1)
    sent = []
    for i in range(2):
        request = samples.case_referral([xb], f"XA-2026-09{i:02}", "Counted, never shown.")
        sent.append((await sender.submit(request)).message_id)
    for message_id in sent:
        await delivered(sender, message_id)
        await received(recipient, message_id)

    text, at_sender = await scrape(federation.node(0).metrics_port)
    assert value(at_sender, "exchange_notices_submitted_total", type="CASE_REFERRAL") == 2
    delivered_count = value(
        at_sender, "exchange_notices_delivered_total", type="CASE_REFERRAL", peer=xb
    )
    assert delivered_count == 2
    assert value(at_sender, "exchange_delivery_latency_seconds_count") == 2
    assert value(at_sender, "exchange_outbox_pending", peer=xb) is None
    assert value(at_sender, "exchange_store_up") == 1
    assert value(at_sender, "exchange_health_serving") == 1
    assert (
        value(at_sender, "exchange_trust_list_version") == federation.node(0).context.trust.version
    )
    entries = value(at_sender, "exchange_audit_log_entries")
    assert entries is not None
    assert entries >= 4

    other_text, at_recipient = await scrape(federation.node(1).metrics_port)
    received_count = value(
        at_recipient, "exchange_notices_received_total", type="CASE_REFERRAL", peer=xa
    )
    assert received_count == 2
    assert value(at_recipient, "exchange_receive_latency_seconds_count") == 2

    for exposition in (text, other_text):
        for message_id in sent:
            assert message_id not in exposition
        assert "XA-2026" not in exposition
        assert "Counted, never shown" not in exposition


async def test_a_backlog_and_refused_calls_show(metered: Federation) -> None:
    federation = metered
    xb = federation.sim(1).node_id
    await federation.crash(xb)
    sender = federation.client(0)
    await sender.submit(samples.case_referral([xb], "XA-2026-0950", "Waiting."))

    async def backlog() -> bool:
        _, now = await scrape(federation.node(0).metrics_port)
        return value(now, "exchange_outbox_pending", peer=xb) == 1

    await eventually(backlog)
    _, at_sender = await scrape(federation.node(0).metrics_port)
    age = value(at_sender, "exchange_outbox_oldest_age_seconds", peer=xb)
    assert age is not None
    assert 0 <= age < 600

    sim = federation.sim(0)
    stranger = AuthorityClient(
        sim.authority_address, "not-a-token", ca_certificate=sim.authority_certificate, timeout=10
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stranger.list_inbox()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stranger.close()
    _, after = await scrape(federation.node(0).metrics_port)
    assert (
        value(after, "exchange_calls_refused_total", method="ListInbox", reason="malformed token")
        == 1
    )
