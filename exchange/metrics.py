"""The Prometheus endpoint of a node: what it did, read off its audit log and store.

Counters and latency histograms follow the audit log. Every notice submitted,
delivered, failed or received, every refusal and every hit/no-hit query is an
audit entry already, so the metrics are derived from the tamper-evident record
rather than kept by a second bookkeeping that could disagree with it. Each scrape
reads the entries appended since the previous one, starting from the log's size
when the endpoint started (so counters start at zero, as Prometheus expects of a
new process). On PostgreSQL every process of a node follows the same log: each
reports the node's totals, so scrape one of them.

Gauges are read at scrape time: the outbox per peer, the audit log and the age
of its last signed head, the trust list, overdue requests, health problems, and
whether the store answered at all.

No label carries a case reference, a message id or anything personal: labels are
notice types, node ids of federation members, RPC names and fixed reason names.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exchange.audit import LoggedEntry
from exchange.checkpoint import TreeHead
from exchange.clock import Clock, to_millis
from exchange.errors import StoreUnavailableError, VerificationFailure
from exchange.notices import REQUEST_KINDS, kind_name
from exchange.refusals import REASONS
from exchange.store import audit_heads, audit_log, lifecycle, node_state
from exchange.store.engine import Store
from exchange.trust_state import held

__all__ = ["MetricsEndpoint", "NodeMetrics"]

# Deliveries take milliseconds on a good day and hours after an outage.
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    3600,
    86400,
)
_FOLLOW_BATCH = 5000
_VERIFICATION_REASONS = frozenset(failure.value for failure in VerificationFailure)


def _bounded(value: str, known: frozenset[str]) -> str:
    """A label value from a fixed set; anything else (free text) is "other"."""
    return value if value in known else "other"


def _failure_reason(reason: str) -> str:
    if reason.startswith("expired"):
        return "expired"
    if reason.startswith("rejected by recipient"):
        return "rejected"
    if reason.startswith("withdrawn"):
        return "withdrawn"
    return "other"


@dataclasses.dataclass
class _Counters:
    submitted: Counter
    delivered: Counter
    failed: Counter
    attempts_failed: Counter
    received: Counter
    rejected: Counter
    envelopes_refused: Counter
    calls_refused: Counter
    queries: Counter
    evaluations: Counter
    evaluated_elements: Counter
    delivery_latency: Histogram
    receive_latency: Histogram

    @staticmethod
    def register(registry: CollectorRegistry) -> _Counters:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=_LATENCY_BUCKETS, registry=registry)

        return _Counters(
            submitted=counter("exchange_notices_submitted", "Notices submitted.", "type"),
            delivered=counter(
                "exchange_notices_delivered", "Deliveries ended by a receipt.", "type", "peer"
            ),
            failed=counter(
                "exchange_deliveries_failed",
                "Deliveries ended without one (expired, rejected, withdrawn).",
                "type",
                "peer",
                "reason",
            ),
            attempts_failed=counter(
                "exchange_delivery_attempts_failed", "Attempts to be retried.", "peer"
            ),
            received=counter("exchange_notices_received", "Notices received.", "type", "peer"),
            rejected=counter(
                "exchange_notices_rejected",
                "Authentic notices refused with a signed rejection.",
                "type",
                "peer",
                "reason",
            ),
            envelopes_refused=counter(
                "exchange_envelopes_refused", "Envelopes that failed verification.", "reason"
            ),
            calls_refused=counter(
                "exchange_calls_refused",
                "Calls refused (authentication, limits).",
                "method",
                "reason",
            ),
            queries=counter("exchange_match_queries", "Hit/no-hit queries by this authority."),
            evaluations=counter(
                "exchange_match_evaluations", "Blinded evaluations answered for peers.", "peer"
            ),
            evaluated_elements=counter(
                "exchange_match_evaluated_elements", "Identifiers evaluated for peers.", "peer"
            ),
            delivery_latency=histogram(
                "exchange_delivery_latency_seconds", "From submission to the peer's receipt."
            ),
            receive_latency=histogram(
                "exchange_receive_latency_seconds",
                "From the sender's signature to storing the notice (includes clock skew).",
            ),
        )


@dataclasses.dataclass(frozen=True)
class _Seen:
    """An audit entry being counted, with its notice's type and creation time if stored."""

    entry: LoggedEntry
    details: dict[str, str]
    notice: node_state.NoticeFacts | None

    @property
    def peer(self) -> str:
        return self.entry.peer_node_id or "none"

    @property
    def kind(self) -> str:
        return kind_name(self.notice.kind) if self.notice else "unknown"

    @property
    def since_created(self) -> float | None:
        if self.notice is None:
            return None
        return max((self.entry.occurred_at_ms - self.notice.created_at) / 1000, 0.0)


def _submitted(c: _Counters, seen: _Seen) -> None:
    c.submitted.labels(seen.kind).inc()


def _delivered(c: _Counters, seen: _Seen) -> None:
    c.delivered.labels(seen.kind, seen.peer).inc()
    if (latency := seen.since_created) is not None:
        c.delivery_latency.observe(latency)


def _failed(c: _Counters, seen: _Seen) -> None:
    reason = _failure_reason(seen.details.get("reason", ""))
    c.failed.labels(seen.kind, seen.peer, reason).inc()


def _attempt_failed(c: _Counters, seen: _Seen) -> None:
    c.attempts_failed.labels(seen.peer).inc()


def _received(c: _Counters, seen: _Seen) -> None:
    c.received.labels(seen.kind, seen.peer).inc()
    if (latency := seen.since_created) is not None:
        c.receive_latency.observe(latency)


def _rejected(c: _Counters, seen: _Seen) -> None:
    reason = _bounded(seen.details.get("reason", ""), _VERIFICATION_REASONS)
    c.rejected.labels(seen.kind, seen.peer, reason).inc()


def _envelope_refused(c: _Counters, seen: _Seen) -> None:
    c.envelopes_refused.labels(
        _bounded(seen.details.get("reason", ""), _VERIFICATION_REASONS)
    ).inc()


def _call_refused(c: _Counters, seen: _Seen) -> None:
    # One entry stands for every refusal of its kind since the previous one.
    method, reason = seen.details.get("method", "other"), seen.details.get("reason", "")
    c.calls_refused.labels(method, _bounded(reason, REASONS)).inc(
        int(seen.details.get("refusals", "1"))
    )


def _queried(c: _Counters, seen: _Seen) -> None:
    c.queries.inc()


def _evaluated(c: _Counters, seen: _Seen) -> None:
    c.evaluations.labels(seen.peer).inc()
    c.evaluated_elements.labels(seen.peer).inc(int(seen.details.get("elements", "0")))


_COUNTING: dict[str, Callable[[_Counters, _Seen], None]] = {
    "notice.submitted": _submitted,
    "notice.delivered": _delivered,
    "delivery.failed": _failed,
    "delivery.attempt_failed": _attempt_failed,
    "notice.received": _received,
    "notice.rejected": _rejected,
    "envelope.refused": _envelope_refused,
    "call.refused": _call_refused,
    "match.queried": _queried,
    "match.evaluated": _evaluated,
}


class NodeMetrics(Collector):
    """One node's metrics in a registry of its own (tests run several nodes per process).

    Args:
        problems: the node's current health problems (name -> reason).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        problems: Callable[[], Mapping[str, str]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._problems = problems
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self._counters = _Counters.register(self.registry)
        self._followed = store.read(audit_log.size)
        self.registry.register(self)

    def refresh(self) -> None:
        """Count the audit entries appended since the last refresh."""
        with self._lock:
            try:
                while True:
                    entries = self._store.read(
                        lambda c: audit_log.entries_after(c, self._followed, _FOLLOW_BATCH)
                    )
                    if not entries:
                        return
                    self._count(entries)
                    self._followed = entries[-1].sequence
            except StoreUnavailableError:
                return  # exchange_store_up says so; the next scrape catches up

    def _count(self, entries: list[LoggedEntry]) -> None:
        parsed = [(entry, json.loads(entry.details_json)) for entry in entries]
        ids = {entry.message_id for entry, _ in parsed if entry.message_id}
        facts = self._store.read(lambda c: node_state.notice_facts(c, ids))
        for entry, details in parsed:
            count = _COUNTING.get(entry.action)
            if count is not None:
                count(self._counters, _Seen(entry, details, facts.get(entry.message_id)))

    def collect(self) -> Iterable[Metric]:
        """The scrape-time gauges (the counters are collected by their own objects)."""
        up = GaugeMetricFamily("exchange_store_up", "1 if the store answered this scrape.")
        try:
            # One scrape at a time reads the store: the endpoint has one connection of
            # the process's budget (StoreConfig.readers), however many scrape at once.
            with self._lock:
                gauges = self._store.read(self._gauges)
        except StoreUnavailableError:
            up.add_metric([], 0)
            gauges = []
        else:
            up.add_metric([], 1)
        yield up
        yield from gauges
        serving = GaugeMetricFamily("exchange_health_serving", "1 if the node reports SERVING.")
        problems = GaugeMetricFamily(
            "exchange_health_problem",
            "1 per problem that makes the node NOT_SERVING.",
            labels=["problem"],
        )
        current = self._problems()
        serving.add_metric([], 0 if current else 1)
        for name in sorted(current):
            problems.add_metric([name], 1)
        yield serving
        yield problems

    def _gauges(self, connection: Any) -> list[Metric]:
        now = to_millis(self._clock.now())
        pending = GaugeMetricFamily(
            "exchange_outbox_pending", "Deliveries waiting, per peer.", labels=["peer"]
        )
        oldest = GaugeMetricFamily(
            "exchange_outbox_oldest_age_seconds",
            "Age of the oldest notice waiting, per peer.",
            labels=["peer"],
        )
        for backlog in node_state.outbox_backlog(connection):
            pending.add_metric([backlog.peer_node_id], backlog.pending)
            oldest.add_metric([backlog.peer_node_id], (now - backlog.oldest_created_at) / 1000)
        size = GaugeMetricFamily("exchange_audit_log_entries", "Entries in the audit log.")
        size.add_metric([], audit_log.size(connection))
        metrics: list[Metric] = [pending, oldest, size]
        head = audit_heads.latest_own(connection)
        if head is not None:
            age = GaugeMetricFamily(
                "exchange_audit_head_age_seconds", "Age of the newest signed head of the log."
            )
            issued = TreeHead.parse(head.text).issued_at
            age.add_metric([], (now - to_millis(issued)) / 1000)
            metrics.append(age)
        trust = held(connection)
        if trust is not None:
            version = GaugeMetricFamily("exchange_trust_list_version", "The held trust list.")
            version.add_metric([], trust.version)
            age = GaugeMetricFamily("exchange_trust_list_age_seconds", "Since it was issued.")
            age.add_metric([], (now - to_millis(trust.issued_at)) / 1000)
            left = GaugeMetricFamily("exchange_trust_list_expires_in_seconds", "Until it expires.")
            left.add_metric([], (to_millis(trust.expires_at) - now) / 1000)
            metrics += [version, age, left]
        overdue = GaugeMetricFamily(
            "exchange_overdue_requests", "Requests past their deadline unanswered.", labels=["owed"]
        )
        owed = {"by_us": 0, "to_us": 0}
        for request in lifecycle.overdue_requests(connection, now=now, answers=dict(REQUEST_KINDS)):
            owed["by_us" if request.owed_by_us else "to_us"] += 1
        for key, count in owed.items():
            overdue.add_metric([key], count)
        metrics.append(overdue)
        return metrics


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the node's own log."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsEndpoint:
    """`/metrics` over HTTP on its own port, in a thread of its own."""

    def __init__(self, metrics: NodeMetrics, host: str, port: int) -> None:
        app = make_wsgi_app(metrics.registry)

        def refreshed(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            metrics.refresh()
            return app(environ, start_response)  # type: ignore[no-any-return]

        self._server = make_server(
            host, port, refreshed, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
