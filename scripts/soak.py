"""A bounded load run: thousands of notices of every type while nodes are killed.

Several countries' nodes run as `exchange serve` processes on loopback (mTLS,
real stores). This process plays every country's authority system: concurrent
conversations of every notice type (referrals and their acknowledgements,
assistance and seizure requests and their responses, extradition notices,
travel alerts, content hash referrals, victim support with a staged
disclosure, and withdrawals, which the recipient's node confirms on its own),
each request sent with an idempotency key and retried while its node is down.
Meanwhile nodes are killed at random: SIGKILL at a random moment, or restarted
with a random failpoint armed (`exchange.failpoints`) so that they die at a
point of sending or receiving. One node (the first) is spared, so that its
memory can be watched over the whole run.

At the end (no more kills, every node running, every outbox drained) it checks
that every notice is accounted for on both sides: in each store exactly the
notices sent and received, one envelope, one receipt per recipient (the same
bytes at both ends), one inbox event, delivered outbox rows only, one audit
entry each; as each authority sees it, every delivery status delivered and each
inbox listing its notices once. The audit logs verify (`exchange audit verify`)
and agree across nodes (each notice's envelope digest is the same in its
sender's and its recipients' logs; no peer head was found inconsistent). The
node processes' RSS is sampled every second; the spared node's must not grow
by more than half (and 64 MiB) between the start and the end of the run.

Prints the counts; exits 1 on any loss, duplicate, mismatch or growth. The seed
fixes the choices (countries, types, victims, failpoints), not their interleaving
with the nodes' timing: two runs with one seed differ in their counts.

Usage (defaults finish in a few minutes on a small machine):
    scripts/soak [--countries 4] [--notices 2000] [--concurrency 32]
        [--kill-every 5] [--seed N] [--postgres-url URL] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import text

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.failpoints import ENVIRONMENT_VARIABLE, POINTS
from exchange.harness import postgres_schemas, samples
from exchange.harness.processes import NodeProcess
from exchange.harness.setup import SimNode, build_federation, sample_countries
from exchange.rpc.client import AuthorityClient
from exchange.store.engine import Store

# Quick retries, and a lease short enough that a row claimed by a killed node
# goes out again within seconds (60 s by default).
SOAK_CONFIG = """
[delivery]
initial_backoff_seconds = 0.2
max_backoff_seconds = 2.0
park_seconds = 30.0
attempt_timeout_seconds = 5.0
lease_seconds = 6.0

[audit]
head_interval_seconds = 2.0
peer_check_interval_seconds = 5.0
"""
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
STEP_DEADLINE_SECONDS = 180.0
DRAIN_DEADLINE_SECONDS = 300.0
POLL_SECONDS = 0.2
RSS_INTERVAL_SECONDS = 1.0
# The spared node's memory may not grow more than this between start and end.
MAX_RSS_GROWTH = 1.5
MIN_RSS_GROWTH_BYTES = 64 * 1024 * 1024


class SoakError(Exception):
    """A step could not complete in time."""


@dataclasses.dataclass
class Sent:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    kind: str


class Clients:
    """One authority client per node, replaced when its node went away."""

    def __init__(self, nodes: dict[str, SimNode]) -> None:
        self._nodes = nodes
        self._clients: dict[str, AuthorityClient] = {}
        self._retired: list[AuthorityClient] = []

    def get(self, node_id: str) -> AuthorityClient:
        client = self._clients.get(node_id)
        if client is None:
            sim = self._nodes[node_id]
            client = AuthorityClient(
                sim.authority_address,
                sim.case_worker_token,
                ca_certificate=sim.authority_certificate,
                timeout=10,
            )
            self._clients[node_id] = client
        return client

    def renew(self, node_id: str, failed: AuthorityClient) -> None:
        """A new channel next time (a restarted node is reached at once, not after backoff)."""
        if self._clients.get(node_id) is failed:
            self._retired.append(self._clients.pop(node_id))

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
            await client.close()


class Soak:
    def __init__(
        self,
        nodes: list[SimNode],
        processes: dict[str, NodeProcess],
        *,
        rng: random.Random,
        notices: int,
        concurrency: int,
        kill_every: float,
    ) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.ids = [n.node_id for n in nodes]
        self.processes = processes
        self.rng = rng
        self.target = notices
        self.concurrency = concurrency
        self.kill_every = kill_every
        self.clients = Clients(self.nodes)
        self.sent: list[Sent] = []
        self.withdrawals: dict[str, Sent] = {}
        self.kills: collections.Counter[str] = collections.Counter()
        self.retries = 0
        self.rss: dict[str, list[tuple[float, int, int]]] = collections.defaultdict(list)
        self._restarting: set[str] = set()
        self._armed: dict[str, str] = {}
        self._traffic_done = asyncio.Event()

    # --- calls through the chaos -----------------------------------------------------------

    async def call(self, node_id: str, fn: Callable[[AuthorityClient], Awaitable[Any]]) -> Any:
        """`fn` on node_id's authority port, retried while the node is down or restarting."""
        deadline = time.monotonic() + STEP_DEADLINE_SECONDS
        while True:
            client = self.clients.get(node_id)
            try:
                return await fn(client)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT or time.monotonic() > deadline:
                    raise
                self.retries += 1
                self.clients.renew(node_id, client)
                await asyncio.sleep(POLL_SECONDS)

    async def send(
        self,
        sender: str,
        recipients: list[str],
        kind: str,
        fn: Callable[[AuthorityClient], Awaitable[Any]],
    ) -> Sent:
        """Send (idempotent request), then wait until every recipient holds it."""
        response = await self.call(sender, fn)
        sent = Sent(response.message_id, sender, tuple(recipients), kind)
        if list(response.recipient_node_ids) != recipients:
            raise SoakError(f"{kind} {response.message_id} went to {response.recipient_node_ids}")
        self.sent.append(sent)
        await self.delivered(sent)
        return sent

    async def delivered(self, sent: Sent) -> None:
        deadline = time.monotonic() + STEP_DEADLINE_SECONDS
        while True:
            status = await self.call(sent.sender, lambda c: c.delivery_status(sent.message_id))
            states = {r.state for r in status.recipients}
            if states == {apb.DELIVERY_STATE_DELIVERED}:
                return
            if apb.DELIVERY_STATE_FAILED in states:
                raise SoakError(f"{sent.kind} {sent.message_id} failed: {status}")
            if time.monotonic() > deadline:
                raise SoakError(f"{sent.kind} {sent.message_id} not delivered: {status}")
            await asyncio.sleep(POLL_SECONDS)

    # --- conversations ---------------------------------------------------------------------

    def key(self) -> str:
        return uuid.uuid4().hex

    async def conversation(self) -> None:
        """One exchange between random countries, of a random type."""
        a, b, c = self.rng.sample(self.ids, 3)
        case = f"{a[:2].upper()}-2026-{self.rng.randrange(10_000):04d}"
        talk = self.rng.choice(
            [
                self.referral,
                self.assistance,
                self.seizure,
                self.extradition,
                self.travel,
                self.hashes,
                self.victim_support,
                self.withdrawal,
            ]
        )
        await talk(a, b, c, case)

    async def referral(self, a: str, b: str, c: str, case: str) -> None:
        referral = samples.case_referral([b, c], case, "Soak referral.")
        referral.client_request_id = self.key()
        sent = await self.send(a, [b, c], "case_referral", lambda x: x.submit(referral))
        ack = apb.AcknowledgeRequest(
            message_id=sent.message_id,
            status=npb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION,
            client_request_id=self.key(),
        )
        await self.send(b, [a], "acknowledgement", lambda x: x.acknowledge(ack))

    async def assistance(self, a: str, b: str, _: str, case: str) -> None:
        now = dt.datetime.now(dt.UTC)
        ask = samples.assistance_request(b, case, now, "Soak assistance request.")
        ask.client_request_id = self.key()
        sent = await self.send(a, [b], "assistance_request", lambda x: x.submit(ask))
        answer = samples.assistance_response(sent.message_id, case, "Soak answer.")
        answer.client_request_id = self.key()
        await self.send(b, [a], "assistance_response", lambda x: x.respond(answer))

    async def seizure(self, a: str, b: str, _: str, case: str) -> None:
        seize = samples.seizure_request(b, case, dt.datetime.now(dt.UTC), "1 Soak Street")
        seize.client_request_id = self.key()
        sent = await self.send(a, [b], "seizure_request", lambda x: x.submit(seize))
        done = samples.seizure_response(sent.message_id, case)
        done.client_request_id = self.key()
        await self.send(b, [a], "seizure_response", lambda x: x.respond(done))

    async def extradition(self, a: str, b: str, _: str, case: str) -> None:
        notice = samples.extradition_notice(b, case)
        notice.client_request_id = self.key()
        await self.send(a, [b], "extradition_notice", lambda x: x.submit(notice))

    async def travel(self, a: str, b: str, _: str, case: str) -> None:
        alert = samples.travel_alert(b, case, dt.datetime.now(dt.UTC))
        alert.client_request_id = self.key()
        await self.send(a, [b], "travel_alert", lambda x: x.submit(alert))

    async def hashes(self, a: str, b: str, _: str, case: str) -> None:
        hashes = [self.rng.randbytes(32) for _ in range(50)]
        bulk = samples.content_hash_referral(b, case, hashes)
        bulk.client_request_id = self.key()
        await self.send(a, [b], "content_hash_referral", lambda x: x.submit(bulk))

    async def victim_support(self, a: str, b: str, _: str, case: str) -> None:
        """Victim support with the identity held back; asked for, and granted."""
        support = samples.victim_support(b, case, "Victim: soak test person")
        support.client_request_id = self.key()
        sent = await self.send(a, [b], "victim_support", lambda x: x.submit(support))
        asking = samples.disclosure_request(sent.message_id, case, sections=["s1"])
        asking.client_request_id = self.key()
        asked = await self.send(b, [a], "disclosure_request", lambda x: x.respond(asking))
        decision = apb.DecideDisclosureRequest(
            request_message_id=asked.message_id,
            decision=npb.DISCLOSURE_DECISION_APPROVED,
            client_request_id=self.key(),
        )
        await self.send(a, [b], "disclosure_grant", lambda x: x.decide_disclosure(decision))

    async def withdrawal(self, a: str, b: str, _: str, case: str) -> None:
        """A referral withdrawn: the recipient's node confirms on its own."""
        referral = samples.case_referral([b], case, "Soak referral, to be withdrawn.")
        referral.client_request_id = self.key()
        sent = await self.send(a, [b], "case_referral", lambda x: x.submit(referral))
        withdraw = apb.WithdrawRequest(
            message_id=sent.message_id,
            reason=npb.WITHDRAWAL_REASON_SENT_IN_ERROR,
            client_request_id=self.key(),
        )
        withdrawal = await self.send(a, [b], "withdrawal", lambda x: x.withdraw(withdraw))
        self.withdrawals[withdrawal.message_id] = withdrawal

    async def traffic(self) -> None:
        async def worker() -> None:
            while len(self.sent) < self.target:
                await self.conversation()

        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            self._traffic_done.set()

    # --- chaos -----------------------------------------------------------------------------

    async def restart(self, node_id: str, failpoint: str = "") -> None:
        self._restarting.add(node_id)
        try:
            process = self.processes[node_id]
            if process.running:
                self.kills["SIGKILL at a random moment"] += 1
            await asyncio.to_thread(process.kill)
            environ = {ENVIRONMENT_VARIABLE: failpoint} if failpoint else None
            await asyncio.to_thread(process.start, environ)
            if failpoint:
                self._armed[node_id] = failpoint
            else:
                self._armed.pop(node_id, None)
        finally:
            self._restarting.discard(node_id)

    async def chaos(self) -> None:
        victims = self.ids[1:]
        next_kill = time.monotonic() + self.kill_every
        while not self._traffic_done.is_set():
            for node_id in victims:
                # Died at its failpoint: back up, clean this time.
                if node_id not in self._restarting and not self.processes[node_id].running:
                    self.kills[f"at failpoint {self._armed.get(node_id, '?').split('@')[0]}"] += 1
                    await self.restart(node_id)
            if time.monotonic() >= next_kill:
                next_kill = time.monotonic() + self.kill_every
                node_id = self.rng.choice(victims)
                if self.rng.random() < 0.5:
                    await self.restart(node_id)
                else:
                    point = self.rng.choice(sorted(POINTS))
                    await self.restart(node_id, f"{point}@{self.rng.randint(1, 40)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._traffic_done.wait(), 0.5)
        # Quiet from here: every node up, nothing armed.
        for node_id in victims:
            if node_id in self._armed or not self.processes[node_id].running:
                if not self.processes[node_id].running:
                    self.kills[f"at failpoint {self._armed.get(node_id, '?').split('@')[0]}"] += 1
                await self.restart(node_id)

    def sample_memory(self, stop: threading.Event) -> None:
        """RSS of every node process, every second (in a thread: the event loop is busy)."""
        started = time.monotonic()
        while not stop.wait(RSS_INTERVAL_SECONDS):
            for node_id, process in self.processes.items():
                pid = process.pid
                if pid is None or not process.running:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1]) * 1024
                            self.rss[node_id].append((time.monotonic() - started, pid, rss))

    async def run(self) -> None:
        stop = threading.Event()
        sampler = threading.Thread(target=self.sample_memory, args=(stop,), daemon=True)
        sampler.start()
        try:
            await asyncio.gather(self.traffic(), self.chaos())
        finally:
            stop.set()
            sampler.join()


# --- the accounting ----------------------------------------------------------------------


class Books:
    """Reads each node's store and authority views, and lists every discrepancy."""

    def __init__(self, soak: Soak, urls: dict[str, str]) -> None:
        self.soak = soak
        self.urls = urls
        self.problems: list[str] = []
        self.figures: dict[str, int] = collections.Counter()

    def query(self, node_id: str, sql: str) -> list[Any]:
        store = Store.open(self.urls[node_id])
        try:
            return list(store.read(lambda c: c.execute(text(sql)).all()))
        finally:
            store.dispose()

    def problem(self, what: str) -> None:
        self.problems.append(what)

    async def drain(self) -> None:
        deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
        while True:
            pending = {
                n: self.query(n, "SELECT COUNT(*) FROM outbox WHERE state='pending'")[0][0]
                for n in self.soak.ids
            }
            if not any(pending.values()):
                return
            if time.monotonic() > deadline:
                self.problem(f"outboxes not drained: {pending}")
                return
            await asyncio.sleep(1.0)

    def expected(self) -> dict[str, Sent]:
        """Every notice: those the authorities were told of, and the nodes' own confirmations."""
        expected = {s.message_id: s for s in self.soak.sent}
        if len(expected) != len(self.soak.sent):
            self.problem("an authority was given the same message id for two requests")
        for node_id in self.soak.ids:
            for message_id, in_reply_to, recipients, kind in self.query(
                node_id,
                "SELECT message_id, in_reply_to, recipient_node_ids, kind FROM notices "
                "WHERE direction='outgoing' AND client_id IS NULL",
            ):
                withdrawal = self.soak.withdrawals.get(in_reply_to)
                if (
                    kind != epb.NOTICE_KIND_ACKNOWLEDGEMENT
                    or withdrawal is None
                    or node_id not in withdrawal.recipients
                ):
                    self.problem(f"{node_id} sent {message_id} that no one asked for")
                    continue
                expected[message_id] = Sent(
                    message_id, node_id, tuple(recipients.split(",")), "withdrawal confirmation"
                )
        confirmations = [s for s in expected.values() if s.kind == "withdrawal confirmation"]
        if len(confirmations) != len(self.soak.withdrawals):
            self.problem(
                f"{len(self.soak.withdrawals)} withdrawals, {len(confirmations)} confirmations"
            )
        return expected

    def once(
        self, node_id: str, what: str, found: Iterable[Hashable], wanted: Iterable[Hashable]
    ) -> int:
        """Each wanted row found exactly once, and no other; returns how many were found."""
        counted = collections.Counter(found)
        wanted = set(wanted)
        for key in wanted:
            if counted[key] != 1:
                self.problem(f"{node_id}: {what} {key} found {counted[key]}x")
        for key in counted.keys() - wanted:
            self.problem(f"{node_id}: {what} {key} sent by no authority")
        self.figures[f"{what} rows, all nodes"] += sum(counted.values())
        return sum(counted.values())

    def check_stores(self, expected: dict[str, Sent]) -> None:
        """Each node's tables hold exactly what it sent and received, once."""
        for node_id in self.soak.ids:
            outgoing = {m for m, s in expected.items() if s.sender == node_id}
            incoming = {m for m, s in expected.items() if node_id in s.recipients}
            sent_to = {(m, r) for m in outgoing for r in expected[m].recipients}

            def rows(sql: str, node_id: str = node_id) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in self.query(node_id, sql)]

            self.once(
                node_id,
                "notices",
                rows("SELECT message_id, direction FROM notices"),
                {(m, "outgoing") for m in outgoing} | {(m, "incoming") for m in incoming},
            )
            self.once(
                node_id,
                "envelopes",
                (m for (m,) in rows("SELECT message_id FROM envelopes")),
                outgoing | incoming,
            )
            self.once(
                node_id,
                "inbox_events",
                (
                    m
                    for (m,) in rows(
                        "SELECT message_id FROM inbox_events WHERE event_type='notice_received'"
                    )
                ),
                incoming,
            )
            self.once(
                node_id,
                "outbox",
                rows("SELECT message_id, recipient_node_id, state FROM outbox"),
                {(m, r, "delivered") for m, r in sent_to},
            )
            self.once(
                node_id,
                "receipts",
                rows("SELECT message_id, recipient_node_id FROM receipts"),
                sent_to | {(m, node_id) for m in incoming},
            )
        self.check_receipts_match(expected)

    def check_receipts_match(self, expected: dict[str, Sent]) -> None:
        """The receipt each sender holds is the one its recipient signed and stored."""
        held = {
            node_id: {
                (m, r): bytes(body)
                for m, r, body in self.query(
                    node_id, "SELECT message_id, recipient_node_id, body FROM receipts"
                )
            }
            for node_id in self.soak.ids
        }
        for m, sent in expected.items():
            for r in sent.recipients:
                if held[sent.sender].get((m, r)) != held[r].get((m, r)):
                    self.problem(f"receipt for {m} differs between {sent.sender} and {r}")

    def check_audit(self, expected: dict[str, Sent]) -> None:
        """One entry per event, the same envelope digest in sender's and recipients' logs."""
        digests: dict[tuple[str, str], str] = {}
        own = "withdrawal confirmation"  # a node's own message: audited with the withdrawal
        for node_id in self.soak.ids:
            entries = self.query(
                node_id, "SELECT action, message_id, peer_node_id, details FROM audit_entries"
            )
            self.figures["audit entries, all nodes"] += len(entries)
            outgoing = {m: s for m, s in expected.items() if s.sender == node_id}
            incoming = {m: s for m, s in expected.items() if node_id in s.recipients}
            self.once(
                node_id,
                "notice.submitted",
                (m for a, m, _, _ in entries if a == "notice.submitted"),
                {m for m, s in outgoing.items() if s.kind != own},
            )
            self.once(
                node_id,
                "notice.delivered / received",
                (
                    (a, m, p)
                    for a, m, p, _ in entries
                    if a in ("notice.delivered", "notice.received")
                ),
                {("notice.delivered", m, r) for m, s in outgoing.items() for r in s.recipients}
                | {("notice.received", m, s.sender) for m, s in incoming.items()},
            )
            inconsistent = sum(a == "audit.peer_inconsistent" for a, _, _, _ in entries)
            if inconsistent:
                self.problem(f"{node_id}: {inconsistent} peer heads found inconsistent")
            for action, m, _, details in entries:
                if action in ("notice.submitted", "notice.received"):
                    digests[(node_id, m)] = json.loads(details).get("envelope_digest", "")
        for m, sent in expected.items():
            if sent.kind == own:
                continue
            first = digests.get((sent.sender, m))
            for r in sent.recipients:
                if digests.get((r, m)) != first:
                    self.problem(f"audit logs of {sent.sender} and {r} differ about {m}")

    async def check_authorities(self, expected: dict[str, Sent]) -> None:
        soak = self.soak
        for node_id in soak.ids:
            listed: list[str] = []
            token = ""
            while True:
                page = await soak.call(
                    node_id,
                    functools.partial(AuthorityClient.list_inbox, page_size=500, page_token=token),
                )
                listed.extend(s.message_id for s in page.notices)
                token = page.next_page_token
                if not token:
                    break
            incoming = {m for m, s in expected.items() if node_id in s.recipients}
            for m, n in collections.Counter(listed).items():
                if n != 1 or m not in incoming:
                    self.problem(f"{node_id}'s inbox lists {m} {n}x")
            for m in incoming - set(listed):
                self.problem(f"{node_id}'s inbox does not list {m}")
            self.figures["inbox entries listed"] += len(listed)
        for m, sent in expected.items():
            status = await soak.call(
                sent.sender, functools.partial(AuthorityClient.delivery_status, message_id=m)
            )
            states = {r.recipient_node_id: r.state for r in status.recipients}
            if states != {r: apb.DELIVERY_STATE_DELIVERED for r in sent.recipients}:
                self.problem(f"{sent.sender}'s authority sees {m} as {states}")
            self.figures["delivery statuses checked"] += 1


def verify_audit(directory: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-m", "exchange", "audit", "verify", str(directory), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0, (done.stdout.strip() or done.stderr.strip())[-400:]


def memory_report(soak: Soak) -> tuple[list[str], bool]:
    lines, flat = [], True
    for node_id in soak.ids:
        samples_ = soak.rss[node_id]
        if not samples_:
            continue
        mib = [rss / 2**20 for _, _, rss in samples_]
        generations = len({pid for _, pid, _ in samples_})
        line = (
            f"  {node_id}: {len(samples_)} samples over {generations} process(es); "
            f"RSS min {min(mib):.0f} MiB, median {statistics.median(mib):.0f}, "
            f"max {max(mib):.0f}"
        )
        if node_id == soak.ids[0] and len(samples_) >= 20:
            fifth = len(samples_) // 5
            # After a warm-up (keys loaded, caches filled): the second fifth against the last.
            early = statistics.median(r for _, _, r in samples_[fifth : 2 * fifth])
            late = statistics.median(r for _, _, r in samples_[-fifth:])
            grown = late / early
            line += (
                f"; spared node, never restarted: {early / 2**20:.0f} MiB early, "
                f"{late / 2**20:.0f} MiB late (x{grown:.2f})"
            )
            if grown > MAX_RSS_GROWTH and late - early > MIN_RSS_GROWTH_BYTES:
                flat = False
        lines.append(line)
    return lines, flat


async def soak_run(args: argparse.Namespace, root: Path, urls: dict[str, str] | None) -> int:
    rng = random.Random(args.seed)  # noqa: S311 (a reproducible run, not a secret)
    used: dict[str, str] = {}

    def url_for(node_id: str) -> str:
        used[node_id] = urls[node_id] if urls is not None else f"sqlite:///{root / node_id}.db"
        return used[node_id]

    nodes = build_federation(
        root,
        sample_countries(args.countries),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        database_url_for=url_for,
        delivery_overrides=SOAK_CONFIG,
    )
    processes = {n.node_id: NodeProcess(n, {"EXCHANGE_LOG_LEVEL": "warning"}) for n in nodes}
    soak = Soak(
        nodes,
        processes,
        rng=rng,
        notices=args.notices,
        concurrency=args.concurrency,
        kill_every=args.kill_every,
    )
    began = time.monotonic()
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in processes.values()))
        print(
            f"soak: {args.countries} countries, {args.notices} notices, concurrency "
            f"{args.concurrency}, a kill every {args.kill_every} s, seed {args.seed}, "
            f"{'PostgreSQL' if urls is not None else 'SQLite'} stores in {root}",
            flush=True,
        )
        try:
            await soak.run()
        except (SoakError, grpc.aio.AioRpcError) as exc:
            print(f"soak: traffic stopped: {exc}")
            for process in processes.values():
                print(f"--- {process.node.node_id} ---\n{process.log_tail()}")
            return 1
        traffic_seconds = time.monotonic() - began
        books = Books(soak, used)
        await books.drain()
        expected = books.expected()
        books.check_stores(expected)
        books.check_audit(expected)
        await books.check_authorities(expected)
    finally:
        await soak.clients.close()
        for process in processes.values():
            await asyncio.to_thread(process.stop)
    audits = {n.node_id: verify_audit(n.directory) for n in nodes}
    memory, flat = memory_report(soak)

    kinds = collections.Counter(s.kind for s in expected.values())
    deliveries = sum(len(s.recipients) for s in expected.values())
    print(
        f"traffic: {len(expected)} notices ({deliveries} deliveries) in {traffic_seconds:.0f} s; "
        f"{soak.retries} calls retried while a node was down"
    )
    for kind, n in sorted(kinds.items()):
        print(f"  {kind}: {n}")
    print(f"kills: {sum(soak.kills.values())}")
    for what, n in sorted(soak.kills.items()):
        print(f"  {what}: {n}")
    print("accounted for:")
    for what, n in books.figures.items():
        print(f"  {what}: {n}")
    print("audit verify:")
    for node_id, (ok, said) in audits.items():
        entries = json.loads(said).get("entries", "?") if ok else said
        print(f"  {node_id}: {'intact' if ok else 'FAILED'} ({entries} entries)")
    print("memory (RSS of the node processes, sampled every second):")
    print("\n".join(memory))
    failures = [
        *books.problems,
        *(f"{n}: audit verify failed" for n, (ok, _) in audits.items() if not ok),
        *([] if flat else ["the spared node's memory grew"]),
    ]
    for failure in failures[:50]:
        print(f"PROBLEM {failure}")
    print(
        f"soak: {'FAILED, ' + str(len(failures)) + ' problems' if failures else 'ok'}: "
        f"{len(expected)} notices, none lost, none duplicated"
        if not failures
        else f"soak: FAILED with {len(failures)} problems"
    )
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--countries", type=int, default=4)
    parser.add_argument("--notices", type=int, default=2000, help="at least this many sent")
    parser.add_argument("--concurrency", type=int, default=32, help="conversations at once")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    parser.add_argument("--postgres-url", default="", help="PostgreSQL stores (else SQLite)")
    parser.add_argument("--keep", type=Path, help="keep the federation in this directory")
    args = parser.parse_args()
    if args.countries < 3:
        parser.error("at least 3 countries")
    root = args.keep or Path(tempfile.mkdtemp(prefix="exchange-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            urls = (
                stack.enter_context(postgres_schemas(args.postgres_url))
                if args.postgres_url
                else None
            )
            return asyncio.run(soak_run(args, root, urls))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
