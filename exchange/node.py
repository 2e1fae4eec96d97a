"""A node: loaded from its directory, checked, and served.

`Node.load` refuses to build a node that could not work correctly: a store
that is not migrated, no trust list, or a trust list that does not list this
node with exactly the keys and TLS certificate it holds. `start` binds both
ports and starts the delivery worker and the trust list follower (adopts lists
installed in the store, asks peers for newer ones, and reports a stale list
through health); `stop` stops accepting calls, lets calls
in flight finish within the grace period, and cancels the worker (a row it had
claimed is retried by the next start after its lease).

On PostgreSQL a node may run as several `serve` processes (each with its own
ports, behind a load balancer; see the README's deployment section). Each
process serves calls and delivers (workers claim outbox rows with FOR UPDATE
SKIP LOCKED), follows the trust list, the OPRF key states and the recorded
audit conflicts from the store, and hears of the others' inbox and outbox
changes through LISTEN/NOTIFY (`store.coordination`). The periodic jobs that
one process does for all (purge, fetching trust lists from peers, OPRF key
rotation steps, audit head signing, the timed peer head rounds) run in the
leader only. Per process, and so per node multiplied by the processes: the
hit/no-hit rate limits and the throttling of `call.refused` audit entries. A
SQLite store serves one process; a second `serve` on it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc

from exchange import pki
from exchange.addresses import is_loopback
from exchange.answering import MatchResponder
from exchange.auditing import AuditLog
from exchange.clock import Clock, SystemClock, to_millis
from exchange.config import NodeConfig, load_node_config, passphrase_from_env
from exchange.delivery import DeliveryWorker
from exchange.envelope import ReceivePolicy
from exchange.errors import (
    ConfigError,
    ExchangeError,
    PeerUnreachableError,
    StoreUnavailableError,
    TrustListError,
)
from exchange.health import TRUST_LIST_STALE, HealthConditions
from exchange.identity import NodeIdentity
from exchange.layout import NodeLayout
from exchange.logs import get_logger
from exchange.match_keys import MatchKeys, load_key_files
from exchange.metrics import MetricsEndpoint, NodeMetrics
from exchange.oprf import ServerKey
from exchange.oprf_keys import write_oprf_key
from exchange.peer_heads import PeerHeadWatcher, report_conflict
from exchange.querying import Querier
from exchange.ratelimit import RateLimiter
from exchange.reading import Reader
from exchange.receiving import Receiver
from exchange.refusals import RefusalAudit
from exchange.registering import Registrar
from exchange.retention import PURGE_BATCH, purge_batch
from exchange.rpc.authority import AuthorityService
from exchange.rpc.federation import FederationService
from exchange.rpc.peers import PeerTransport
from exchange.rpc.server import RunningServers, start_servers
from exchange.rpc.tls import NodeTls, authority_server_credentials
from exchange.runtime import NodeContext
from exchange.store import audit_heads, audit_log, coordination, migrate, outbox
from exchange.store.engine import AsyncStore, Store
from exchange.store_probe import probe_store
from exchange.submitting import Submitter
from exchange.trust import TrustList
from exchange.trust_state import (
    audit_refusal_async,
    current_trust_list,
    held,
    install_trust_list_async,
)

__all__ = ["Node", "check_membership"]

# How often a running node looks for OPRF key files added meanwhile (rotate-keys --oprf).
MATCH_KEYS_POLL_SECONDS = 10.0
# How often a running node looks for a trust list installed meanwhile.
TRUST_REFRESH_SECONDS = 5.0


def check_membership(trust: TrustList, identity: NodeIdentity, tls_certificate: bytes) -> None:
    """Refuse to run unless the trust list lists this node with the keys it holds.

    Raises:
        ConfigError: saying what does not match and what to do.
    """
    entry = trust.node(identity.node_id)
    if entry is None:
        raise ConfigError(
            f"node {identity.node_id} is not in trust list version {trust.version}; "
            "ask the stewards to add it (exchange federation add-node) and install the new list"
        )
    if not entry.active:
        raise ConfigError(
            f"node {identity.node_id} is suspended in trust list version {trust.version}"
        )
    if not set(identity.signing_keys) & {k.key_id for k in entry.signing_keys}:
        raise ConfigError("the trust list does not list this node's signing key")
    if not set(identity.sealing_keys) & {k.key_id for k in entry.sealing_keys}:
        raise ConfigError("the trust list does not list this node's sealing key")
    if (
        pki.certificate_sha256(pki.load_certificate(tls_certificate))
        != entry.tls_certificate_sha256
    ):
        raise ConfigError("the trust list pins another TLS certificate for this node")


def _oprf_keys(layout: NodeLayout, passphrase: bytes | None) -> dict[int, ServerKey]:
    """The node's OPRF keys; the first is made on first start for a node set up before."""
    if not layout.oprf_key.exists():
        write_oprf_key(layout.oprf_key, ServerKey.generate(), 1, passphrase)
    return load_key_files(layout.oprf_key.parent, passphrase)


def _checked_trust(store: Store, identity: NodeIdentity, tls: NodeTls) -> TrustList:
    """The store's trust list, once the schema is current and the list lists this node."""
    revision = migrate.current_revision(store)
    if revision != migrate.head_revision():
        raise ConfigError(
            f"database schema is at {revision or 'nothing'}, not {migrate.head_revision()}; "
            "run `exchange node migrate`"
        )
    trust = current_trust_list(store)
    if trust is None:
        raise ConfigError(
            "this node holds no trust list; install one with `exchange node update-trust`"
        )
    check_membership(trust, identity, tls.certificate_pem)
    return trust


@dataclasses.dataclass
class Node:
    """A node's parts, ready to start."""

    config: NodeConfig
    context: NodeContext
    tls: NodeTls
    # None when the authority port is plaintext (--insecure-loopback).
    authority_credentials: grpc.ServerCredentials | None
    # The OPRF keys of hit/no-hit matching and their rotation.
    match_keys: MatchKeys
    _servers: RunningServers | None = None
    _tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    _transport: PeerTransport | None = None
    # Hit/no-hit rate limits (set at start from [matching]; tests may tighten them).
    peer_limiter: RateLimiter | None = None
    client_limiter: RateLimiter | None = None
    refusals: RefusalAudit | None = None
    # To load keys rotated in while running (exchange node rotate-keys).
    _passphrase: bytes | None = None
    _worker: DeliveryWorker | None = None
    # The Prometheus endpoint, when [metrics] listen is set.
    _metrics: MetricsEndpoint | None = None
    # PostgreSQL: this process's session (change notifications, leadership); None on SQLite.
    session: coordination.ProcessSession | None = None
    _release_store: Callable[[], None] | None = None

    @staticmethod
    def load(
        directory: Path,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        insecure_loopback: bool = False,
    ) -> Node:
        """Load and check the node in `directory`.

        Raises:
            ConfigError, KeyMaterialError: the node cannot run as configured.
        """
        environ = os.environ if environ is None else environ
        config = load_node_config(directory, environ)
        layout = NodeLayout(config.directory)
        passphrase = passphrase_from_env(environ)
        if insecure_loopback and not is_loopback(config.authority.listen):
            raise ConfigError(
                f"--insecure-loopback refused: authority.listen {config.authority.listen} "
                "is not a loopback address"
            )
        identity = NodeIdentity.load(
            config.node_id, layout.key_files("signing"), layout.key_files("sealing"), passphrase
        )
        tls = NodeTls.load(layout, passphrase)
        oprf_keys = _oprf_keys(layout, passphrase)
        authority_credentials = (
            None if insecure_loopback else authority_server_credentials(layout, passphrase)
        )
        store = Store.open(
            config.database_url(),
            # The readers, the writer, and one for metrics and startup (config.StoreConfig).
            pool_size=config.store.readers + 2,
            sqlite_synchronous=config.store.sqlite_synchronous,
            lock_timeout_ms=round(config.store.lock_timeout_seconds * 1000),
        )
        try:
            trust = _checked_trust(store, identity, tls)
        except BaseException:
            store.dispose()
            raise
        log = get_logger("exchange.node", node_id=config.node_id)
        context = NodeContext(
            config=config,
            identity=identity,
            # The node's processes take the audit lock before any other (engine.AsyncStore).
            store=AsyncStore(store, readers=config.store.readers, lock_first=audit_log.lock),
            clock=clock or SystemClock(),
            trust=trust,
            policy=ReceivePolicy(
                max_clock_skew=dt.timedelta(seconds=config.receive.max_clock_skew_seconds),
                max_message_age=dt.timedelta(days=config.receive.max_message_age_days),
            ),
            log=log,
            health=HealthConditions(log),
        )
        return Node(
            config,
            context,
            tls,
            authority_credentials,
            MatchKeys(
                context,
                oprf_keys,
                loader=functools.partial(load_key_files, layout.oprf_key.parent, passphrase),
            ),
            _passphrase=passphrase,
        )

    @property
    def federation_port(self) -> int:
        assert self._servers is not None, "not started"
        return self._servers.federation_port

    @property
    def authority_port(self) -> int:
        assert self._servers is not None, "not started"
        return self._servers.authority_port

    async def start(self, *, deliver: bool = True) -> None:
        """Bind both ports and start delivering.

        Args:
            deliver: False leaves the outbox alone (for tests that drive it).
        """
        try:
            # Refused before anything binds: a second `serve` on one SQLite file.
            self._release_store = self.context.store.store.hold_serving()
            await self._start(deliver)
        except BaseException:
            await self.stop(grace=0)
            raise

    @property
    def leads(self) -> bool:
        """Whether this process runs the node's one-process jobs (always, on SQLite)."""
        if self.context.store.store.is_sqlite:
            return True
        return self.session is not None and self.session.is_leader

    async def _start(self, deliver: bool) -> None:
        context = self.context
        if context.store.store.is_sqlite:
            # One process serves a SQLite store (`hold_serving`): a lease found now was
            # taken by a process of this node that died, and its rows go again at once
            # rather than when their lease ends; so do rows it parked for a peer it
            # knew down. (On PostgreSQL other processes may hold theirs; there the
            # leases and the parks run out.)
            now = to_millis(context.clock.now())
            released = await context.store.write(lambda c: outbox.release_and_resume(c, now))
            if released:
                context.log.info("delivery.released", rows=released)
        else:
            self.session = coordination.ProcessSession(
                self.config.database_url(),
                {
                    coordination.INBOX: context.inbox_changed,
                    coordination.OUTBOX: context.outbox_changed,
                },
                context.log,
                own=context.store.store.sender,
            )
            self._tasks.append(asyncio.create_task(self.session.run(), name="store-session"))
        audit = AuditLog(context)
        self._transport = PeerTransport(self.tls.channel_credentials())
        matching_limits = context.config.matching
        self.peer_limiter = RateLimiter(
            "evaluation", matching_limits.peer_evaluations_per_minute, context.clock
        )
        self.client_limiter = RateLimiter(
            "query", matching_limits.client_identifiers_per_minute, context.clock
        )
        self.refusals = RefusalAudit(context)
        await self.match_keys.sync()
        responder = MatchResponder(context, self.match_keys, self.peer_limiter, self.refusals)
        self._servers = await start_servers(
            federation=FederationService(
                context, Receiver(context), audit, responder, self.refusals
            ),
            authority=AuthorityService(
                context,
                submitter=Submitter(context),
                reader=Reader(context),
                audit=audit,
                registrar=Registrar(context, self.match_keys),
                querier=Querier(context, self._transport, self.client_limiter, self.refusals),
                refusals=self.refusals,
            ),
            federation_address=self.config.federation.listen,
            federation_credentials=self.tls.server_credentials(),
            authority_address=self.config.authority.listen,
            authority_credentials=self.authority_credentials,
            log=context.log,
        )
        await context.health.watch(self._servers.set_serving)
        for conflict in await context.store.read(audit_heads.conflicts):
            # Seen before a restart and still on record: the operator has not cleared it.
            await report_conflict(context, conflict.node_id, conflict.reason)
        await self.check_trust()

        def leads() -> bool:
            return self.leads

        self._tasks.append(asyncio.create_task(audit.run(leads), name="audit-heads"))
        self._tasks.append(
            asyncio.create_task(
                PeerHeadWatcher(context, self._transport, leads=leads).run(),
                name="peer-audit-heads",
            )
        )
        self._tasks.append(asyncio.create_task(self._follow_trust(), name="trust"))
        self._tasks.append(asyncio.create_task(self._rotate_match_keys(), name="match-keys"))
        self._tasks.append(asyncio.create_task(self._purge_periodically(), name="retention"))
        self._tasks.append(
            asyncio.create_task(
                probe_store(context, self.config.store.probe_interval_seconds), name="store-probe"
            )
        )
        if deliver:
            self._worker = DeliveryWorker(context, self._transport)
            context.handover = self._worker
            self._tasks.append(asyncio.create_task(self._worker.run(), name="delivery"))
        if self.config.metrics.listen:
            self._metrics = await asyncio.to_thread(self._serve_metrics)
        context.log.info(
            "node.started",
            federation_port=self._servers.federation_port,
            authority_port=self._servers.authority_port,
            metrics_port=self._metrics.port if self._metrics else None,
            trust_list_version=context.trust.version,
        )

    def _serve_metrics(self) -> MetricsEndpoint:
        host, _, port = self.config.metrics.listen.rpartition(":")
        context = self.context
        metrics = NodeMetrics(context.store.store, context.clock, context.health.problems)
        return MetricsEndpoint(metrics, host.strip("[]"), int(port))

    @property
    def metrics_port(self) -> int | None:
        """The metrics endpoint's port (bound to port 0 in tests), if it is on."""
        return self._metrics.port if self._metrics else None

    async def stop(self, grace: float = 5.0) -> None:
        """Stop gracefully: refuse new calls, and within `grace` seconds let the calls
        and deliveries in flight finish; deliveries still unrecorded then go back to
        the outbox at once (they are sent again at the next start)."""
        finishing = []
        if self._servers is not None:
            finishing.append(self._servers.stop(grace))
        if self._worker is not None:
            finishing.append(self._worker.finish(grace))
            self._worker = None
            self.context.handover = None
        await asyncio.gather(*finishing)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.session = None
        if self._transport is not None:
            await self._transport.close()
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.close)
            self._metrics = None
        # Waits for store threads to finish their statement: off the event loop.
        await asyncio.to_thread(self.context.store.close)
        if self._release_store is not None:
            self._release_store()
            self._release_store = None
        self.context.log.info("node.stopped")

    async def refresh_trust(self) -> bool:
        """Adopt a newer trust list installed in the store (`exchange node update-trust`).

        The list was verified when it was installed. A list that no longer
        lists this node as it is (suspended, re-keyed) is adopted all the same,
        since it is authoritative, and the mismatch is logged as an error.

        Returns:
            Whether a newer list was adopted.
        """
        context = self.context
        newest = await context.store.read(held)
        if newest is None or newest.version <= context.trust.version:
            return False
        await self._load_rotated_keys(newest)
        try:
            check_membership(newest, context.identity, self.tls.certificate_pem)
        except ConfigError as exc:
            context.log.error("trust_list.membership", version=newest.version, problem=str(exc))
        context.trust = newest
        context.log.info("trust_list.adopted", version=newest.version)
        await self.check_trust()
        return True

    async def _load_rotated_keys(self, trust: TrustList) -> None:
        """Load key files added since start if `trust` lists keys of ours not yet loaded.

        After `exchange node rotate-keys` and the stewards' publication, the node
        must hold the new private keys before it adopts the list: peers seal to
        the newest sealing key as soon as they hold that list.
        """
        entry = trust.node(self.context.node_id)
        identity = self.context.identity
        if entry is None or {k.key_id for k in (*entry.signing_keys, *entry.sealing_keys)} <= {
            *identity.signing_keys,
            *identity.sealing_keys,
        }:
            return
        layout = NodeLayout(self.config.directory)
        try:
            self.context.identity = await asyncio.to_thread(
                NodeIdentity.load,
                self.context.node_id,
                layout.key_files("signing"),
                layout.key_files("sealing"),
                self._passphrase,
            )
        except (ExchangeError, OSError) as exc:
            # Adopted all the same (it is authoritative); the membership check says what lacks.
            self.context.log.error("keys.load_failed", error=str(exc))
            return
        self.context.log.info(
            "keys.loaded",
            signing_keys=len(self.context.identity.signing_keys),
            sealing_keys=len(self.context.identity.sealing_keys),
        )

    async def check_trust(self) -> str | None:
        """Report (or clear) the stale trust list health problem; returns the reason."""
        context = self.context
        reason = context.trust_staleness(context.clock.now())
        if reason is None:
            await context.health.clear(TRUST_LIST_STALE)
        else:
            await context.health.report(TRUST_LIST_STALE, f"sending refused: {reason}")
        return reason

    async def fetch_trust(self) -> int | None:
        """Ask every active peer for its trust list; install and adopt a newer one.

        A list no newer than the held one is ignored without a word (peers lag
        behind); a newer one is installed only through `install_trust_list`, so
        the TUF rules decide, and a refusal (forged, under threshold, expired)
        is audited and logged. Peers are asked in turn until one offers a list
        that is accepted.

        Returns:
            The version adopted, or None.
        """
        context = self.context
        transport = self._transport
        assert transport is not None, "not started"
        # Another process of the node may have installed a newer list meanwhile.
        await self.refresh_trust()
        peers = sorted(
            (n for n in context.trust.nodes.values() if n.active and n.node_id != context.node_id),
            key=lambda n: n.node_id,
        )
        timeout = context.config.delivery.attempt_timeout_seconds
        # Asked together: a peer that is down costs one timeout, not one each.
        offers = await asyncio.gather(
            *(transport.get_trust_list(peer, timeout) for peer in peers), return_exceptions=True
        )
        for peer, offered in zip(peers, offers, strict=True):
            try:
                if isinstance(offered, BaseException):
                    raise offered
                version = offered.trust_list.version
            except PeerUnreachableError as exc:
                context.log.info("trust_list.fetch_failed", peer=peer.node_id, error=str(exc))
                continue
            except TrustListError as exc:
                # Not even a consistent list (a steward or a key listed twice, bad bytes):
                # a member serving one is misbehaving, and that goes on the record.
                await audit_refusal_async(
                    context.store,
                    exc,
                    now=context.clock.now(),
                    actor=context.actor,
                    source=peer.node_id,
                )
                context.log.warning("trust_list.refused", peer=peer.node_id, reason=str(exc))
                continue
            if version <= context.trust.version:
                continue
            try:
                await install_trust_list_async(
                    context.store,
                    offered,
                    now=context.clock.now(),
                    actor=context.actor,
                    source=peer.node_id,
                )
            except TrustListError as exc:
                context.log.warning("trust_list.refused", peer=peer.node_id, reason=str(exc))
                continue
            await self.refresh_trust()
            return context.trust.version
        return None

    async def _follow_trust(self) -> None:
        loop = asyncio.get_running_loop()
        fetched_at = loop.time()
        while True:
            await asyncio.sleep(TRUST_REFRESH_SECONDS)
            try:
                await self.refresh_trust()
                await self.check_trust()
                await self._follow_conflicts()
                interval = self.config.trust.fetch_interval_seconds
                if self.leads and loop.time() - fetched_at >= interval:
                    fetched_at = loop.time()
                    await self.fetch_trust()
            except StoreUnavailableError as exc:
                self.context.log.warning("trust_list.refresh_failed", error=str(exc))
            except Exception as exc:
                # Whatever went wrong, following goes on next round: a node that stops
                # following would keep a list that goes stale.
                self.context.log.error("trust_list.follow_failed", error=repr(exc))

    async def _follow_conflicts(self) -> None:
        """Report the audit conflicts on record, whichever process of the node found them."""
        for conflict in await self.context.store.read(audit_heads.conflicts):
            await report_conflict(self.context, conflict.node_id, conflict.reason)

    async def purge(self) -> int:
        """Purge the content whose retention has ended; returns how many notices."""
        context = self.context
        total = 0
        while True:
            purged = await context.store.write(
                functools.partial(purge_batch, now=context.clock.now(), actor=context.actor)
            )
            total += purged
            if purged < PURGE_BATCH:
                break
        if total:
            await context.store.reclaim_deleted()
            context.log.info("retention.purged", notices=total)
        return total

    async def rotate_match_keys_once(self) -> str:
        """Adopt OPRF key files added meanwhile, then do one unit of rotation work."""
        await self.match_keys.sync()
        return await self.match_keys.step()

    async def _rotate_match_keys(self) -> None:
        while True:
            try:
                if self.leads:
                    done = await self.rotate_match_keys_once()
                else:
                    # The leader rotates; this process follows the key states it stores.
                    await self.match_keys.sync()
                    done = "nothing to do"
            except Exception as exc:
                # A bad key file or a busy store must not stop matching; it is retried.
                self.context.log.error("match_keys.rotation_failed", error=repr(exc))
                done = "failed"
            # Busy while there is work: the copy goes on batch after batch.
            busy = done not in ("nothing to do", "failed")
            await asyncio.sleep(0.05 if busy else MATCH_KEYS_POLL_SECONDS)

    async def _purge_periodically(self) -> None:
        while True:
            if not self.leads:
                # Another process purges; this one looks again in case it takes over.
                await asyncio.sleep(coordination.HEARTBEAT_SECONDS)
                continue
            try:
                await self.purge()
            except Exception as exc:
                # Whatever went wrong, purging goes on next round: retention is a legal duty.
                self.context.log.error("retention.purge_failed", error=repr(exc))
            await asyncio.sleep(self.config.retention.purge_interval_seconds)

    async def wait(self) -> None:
        assert self._servers is not None, "not started"
        await self._servers.federation.wait_for_termination()
