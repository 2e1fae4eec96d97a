"""The delivery worker: drains the outbox, a batch of claimed rows per peer.

Claimed rows are grouped by recipient, and each peer's group travels over one
`DeliverStream` call (unary `Deliver`, one call per envelope, to a peer that
lacks it). Each envelope is sent as stored (signed anew first if the key that
signed it has since been revoked or retired: a backlog drains with the new
key); each answer is checked on its own: the recipient's signed receipt is
verified against the trust list and that envelope's digest, and the outcomes
of the group are committed together, in one transaction, each with its audit
entry:

- an accepted receipt ends the row as delivered;
- a signed rejection ends it as failed, and the authority is told in its inbox;
- anything else (unreachable peer, transport error, a refusal of that
  envelope, a receipt that does not verify) is retried with exponential
  backoff and jitter until the envelope expires; then the row fails and the
  authority is told.

A row is ended only by one of those outcomes, so nothing accepted is silently
dropped; a crash between send and commit only means one more (idempotent)
delivery after the lease runs out: the recipient answers a repeat with the
receipt it gave first. Several batches are in flight at once (`PIPELINE`), so
that one is sent while another's outcomes are committed; the leases keep them
apart.

A submission does not wait for a claim: while the worker has room, the
submitter inserts its rows already leased to it and hands them over once they
are committed (`lease_for`, `hand_over`), which saves a write transaction on
the path of every notice. The rows are in the outbox all the same: should the
process die first, they are claimed when their lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection

from exchange import failpoints
from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.composing import resign
from exchange.envelope import Envelope, Header
from exchange.errors import (
    PeerUnreachableError,
    PreconditionError,
    StoreUnavailableError,
    VerificationError,
)
from exchange.receipt import Receipt, SignedReceipt, verify_receipt
from exchange.runtime import NodeContext
from exchange.store import audit_log, inbox, outbox
from exchange.store.notices import load_envelope
from exchange.trust import TrustedNode

__all__ = ["BatchTransport", "DeliveryTransport", "DeliveryWorker", "Lease", "backoff"]

IDLE_WAIT_SECONDS = 5.0
# Batches in flight at once (each claimed, sent and committed in turn).
PIPELINE = 4
# Batches of rows handed over by submissions in flight at once; more wait and go together.
PIPELINE_HANDED = 4


class DeliveryTransport(Protocol):
    """How envelopes reach a peer (gRPC in production, anything in tests)."""

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        """Deliver `envelope` to `peer`; raises PeerUnreachableError on any failure."""
        ...


@runtime_checkable
class BatchTransport(DeliveryTransport, Protocol):
    """A transport that also delivers many envelopes to one peer at once."""

    async def deliver_many(
        self, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError]:
        """For each envelope, in order, its receipt or why it was not delivered."""
        ...


def backoff(attempts: int, initial: float, maximum: float, jitter: float) -> dt.timedelta:
    """Exponential backoff with jitter for the attempt after `attempts` failures.

    Args:
        jitter: a number in [0, 1); the delay is scaled into [50%, 100%) of the
            exponential value, so peers recovering from an outage are not hit
            by every sender at once.
    """
    exponential = min(maximum, initial * 2 ** min(attempts, 32))
    return dt.timedelta(seconds=exponential * (0.5 + jitter / 2))


def _rejection(receipt: Receipt) -> str:
    """A receipt's outcome as the row's last error: empty if it accepts."""
    return "" if receipt.accepted else f"rejected by recipient: {receipt.rejection_name}"


def _error_category(error: str) -> str:
    """What went wrong, for the audit log: a peer's status code, never its free text.

    A peer chooses the details of the errors it returns; only its status code
    (or our own wording, for failures found here) goes on the record.
    """
    code, sep, _ = error.partition(":")
    if sep and code.isupper() and code.replace("_", "").isalpha():
        return code
    return error[:120]


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """How one attempt ended: a receipt to record, or an error to retry (or fail) on."""

    item: outbox.OutboxItem
    now: dt.datetime
    error: str = ""
    # Expired: the row fails instead of being retried.
    final: bool = False
    # Not attempted (its peer is down, see `_Outage`): due again then, epoch ms.
    postponed_until: int | None = None
    # Attempted, and its batch found the peer down: not due before the peer's next
    # try (epoch ms), which its own backoff, jittered apart, could otherwise precede.
    not_before: int | None = None
    signed: SignedReceipt | None = None
    receipt: Receipt | None = None


@dataclasses.dataclass(frozen=True)
class _Outage:
    """A peer whose last attempt reached it with no envelope: nothing more is sent to
    it before `until`, and then one envelope (the probe, see `_wait_for`), instead of
    every row at its own time (each attempt a row update and an audit entry, for
    nothing). Its waiting rows are parked meanwhile, unattempted: not due before
    `parked_until`, unless an answer to a probe makes them due at once.

    Parked once for many tries, not put off to each next try: a backlog rewritten
    at each try costs as much as it is large, each time (and on PostgreSQL leaves as
    many dead row versions)."""

    failures: int  # attempts in a row that reached nothing
    until: int  # epoch ms, as the rows' times: when the next probe goes
    error: str
    endpoint: str  # where it was tried: a trust list naming another ends the outage
    # When the peer's backlog, parked by this process, falls due again (epoch ms).
    parked_until: int | None = None
    # When the try of the peer out now (a batch found the outage over) has had its
    # time, an attempt's timeout after it went (epoch ms). Until it is answered or
    # then, other rows wait for it instead of each trying (and each failing, audited).
    probe_until: int | None = None

    @property
    def next_probe(self) -> int:
        """When the peer is next tried (epoch ms): after the outage, and after the
        probe out now has had its time."""
        return max(self.until, self.probe_until or self.until)


@dataclasses.dataclass(frozen=True)
class _Waiting:
    """Rows to a peer known down wait unattempted, parked until `until` (epoch ms),
    all of them, or all but one if `probe`: that one tries the peer."""

    until: int
    error: str
    probe: bool = False


@dataclasses.dataclass(frozen=True)
class Lease:
    """Outbox rows promised to this process's worker (`DeliveryWorker.lease_for`)."""

    until: int  # epoch ms: the rows' lease_until
    rows: int
    size: int  # bytes of their envelope


@dataclasses.dataclass(frozen=True)
class _Handed:
    lease: Lease
    items: Sequence[outbox.OutboxItem]


class DeliveryWorker:
    """Sends due outbox rows until cancelled."""

    def __init__(self, context: NodeContext, transport: DeliveryTransport) -> None:
        self._context = context
        self._transport = transport
        self._config = context.config.delivery
        # Set by `finish`: claim nothing more.
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        # Rows committed by submissions in this process, leased to this worker.
        self._handed: list[_Handed] = []
        # Rows and envelope bytes promised or handed over and not yet sent: bounded
        # like a claimed batch (batch_size rows, outbox.CLAIM_BYTES).
        self._waiting_rows = 0
        self._waiting_bytes = 0
        self._sending: set[asyncio.Task[None]] = set()  # attempts of handed rows
        self._ended = False
        self._outages: dict[str, _Outage] = {}  # by peer node id
        # Peers whose probe row is being claimed (`_claim_probes`): one claim each.
        self._probing: set[str] = set()
        # Peers whose outage an answer has just ended: their waiting rows are due now.
        self._recovered: set[str] = set()

    def lease_for(self, rows: int, size: int, now: int) -> Lease | None:
        """A lease for the `rows` outbox rows of one envelope of `size` bytes about to
        be inserted, or None if the worker has no room for them.

        The caller inserts its rows with that lease (no other worker claims them)
        and calls `hand_over` once its transaction has ended, committed or not.
        With no room (or while the worker stops), rows are inserted due and
        claimed like any other. As for a claim, one submission is taken whatever
        its size when nothing else waits.
        """
        if self._stopping.is_set() or self._ended:
            return None
        if self._waiting_rows and (
            self._waiting_rows + rows > self._config.batch_size
            or self._waiting_bytes + size > outbox.CLAIM_BYTES
        ):
            return None
        self._waiting_rows += rows
        self._waiting_bytes += size
        return Lease(now + int(self._config.lease_seconds * 1000), rows, size)

    def hand_over(self, lease: Lease, items: Sequence[outbox.OutboxItem]) -> None:
        """The committed rows of `lease` (none if the transaction failed)."""
        if items and not self._ended:
            self._handed.append(_Handed(lease, items))
            self._send_handed()
            return
        self._no_longer_waiting([lease])
        if items:
            # Committed after the worker stopped (the store still takes writes until it
            # closes): back to the outbox at once, for another process or the next start.
            self._context.log.warning("delivery.handed_after_stop", rows=len(items))
            self._start(self._release(list(items)))

    def _no_longer_waiting(self, leases: Sequence[Lease]) -> None:
        self._waiting_rows -= sum(lease.rows for lease in leases)
        self._waiting_bytes -= sum(lease.size for lease in leases)

    def _send_handed(self) -> None:
        """Attempt the handed rows at once, or with the next ones if enough are in flight."""
        if self._handed and len(self._sending) < PIPELINE_HANDED:
            handed, self._handed = self._handed, []
            self._no_longer_waiting([h.lease for h in handed])
            self._start(self._attempt_handed([item for h in handed for item in h.items]))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` on handed rows as one of the batches in flight."""
        sending = asyncio.ensure_future(work)
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Only a release fails here (an attempt records its own failures): the
            # rows are claimed when their lease ends.
            self._context.log.warning("delivery.unreleased", error=str(task.exception()))
        if not self._ended:
            self._send_handed()

    async def _attempt_handed(self, items: list[outbox.OutboxItem]) -> None:
        if self._held():
            # Back to the outbox, where the claims hold them too until a newer list.
            await self._release(self._still_leased(items))
            return
        await self._attempt_by_peer(self._still_leased(items))

    def _held(self) -> bool:
        """Whether nothing may be sent now: the trust list is stale (see
        `NodeContext.trust_staleness`). Held, not failed: rows go out once a newer
        list is adopted."""
        stale = self._context.trust_staleness(self._context.clock.now())
        if stale is not None:
            self._context.log.warning("delivery.held", reason=stale)
        return stale is not None

    def _still_leased(self, items: list[outbox.OutboxItem]) -> list[outbox.OutboxItem]:
        """The rows whose lease lasts beyond one more attempt.

        The others are claimable by any worker (ours too, once due): left to the
        claims rather than sent, or released, while another may hold them.
        """
        soon = to_millis(self._context.clock.now()) + int(
            self._config.attempt_timeout_seconds * 1000
        )
        return [item for item in items if item.lease_until > soon]

    async def finish(self, grace: float) -> None:
        """Stop claiming, and give the batches in flight up to `grace` seconds to end.

        What is still unrecorded when the task is then cancelled goes back to the
        outbox at once (see `_attempt`), for the next start or another process.
        """
        self._stopping.set()
        running = [*self._loops, *self._sending]
        if running:
            await asyncio.wait(running, timeout=grace)

    async def run(self) -> None:
        """Deliver forever; cancel the task to stop (claimed rows return after their lease).

        Nothing ends the loop but cancellation: a store that is unavailable is
        waited for with backoff, and a failed attempt only reschedules its row.
        """
        self._loops = [asyncio.ensure_future(self._run()) for _ in range(PIPELINE)]
        try:
            await asyncio.gather(*self._loops)
            # Told to finish: the handed batches in flight, and those waiting behind
            # them, go on until they end or the task is cancelled (after the grace).
            while self._sending:
                await asyncio.wait(set(self._sending))
        finally:
            # However it ends (a bug in a loop included): no more leases, nothing left
            # held. Shielded: a second cancellation must not cut the putting back short.
            self._stopping.set()
            self._ended = True
            winding_down = asyncio.ensure_future(self._wind_down())
            try:
                await asyncio.shield(winding_down)
            except asyncio.CancelledError:
                await winding_down
                raise

    async def _wind_down(self) -> None:
        """Cancel what is in flight (each batch puts its rows back) and put back the rest."""
        tasks = [*self._loops, *self._sending]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._handed:
            unsent, self._handed = self._handed, []
            await self._give_back(self._still_leased([i for h in unsent for i in h.items]))
        await self._unpark()

    async def _unpark(self) -> None:
        """Make the rows this worker parked due (best effort): no one here tries their
        peers any more, and the next start or another process finds out whether
        they are still down, instead of waiting for the park to end."""
        now = to_millis(self._context.clock.now())
        parked = [p for p, outage in self._outages.items() if outage.parked_until is not None]
        for peer_id in parked:
            with contextlib.suppress(Exception):
                await self._context.store.write(
                    functools.partial(outbox.resume_peer, recipient_node_id=peer_id, now=now)
                )

    async def _run(self) -> None:
        context = self._context
        outages = 0
        while not self._stopping.is_set():
            snapshot = context.outbox_changed.snapshot()
            try:
                if await self.run_once():
                    outages = 0
                    continue
                due = await self.next_due()
                outages = 0
            except StoreUnavailableError as exc:
                outages += 1
                delay = backoff(outages, 0.5, IDLE_WAIT_SECONDS * 6, context.rng.random())
                context.log.warning(
                    "delivery.store_unavailable", error=str(exc), retry_in=delay.total_seconds()
                )
                await asyncio.sleep(delay.total_seconds())
                continue
            wait = IDLE_WAIT_SECONDS
            if due is not None:
                wait = (due - to_millis(context.clock.now())) / 1000
            await self._idle(snapshot, min(max(wait, 0.01), IDLE_WAIT_SECONDS))

    async def _idle(self, snapshot: asyncio.Event, timeout: float) -> None:
        """Until the outbox changes, `timeout` passes, or the worker is told to finish."""
        waits = {
            asyncio.ensure_future(snapshot.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def next_due(self) -> int | None:
        """When there is next something to send (epoch ms): a row due, or a peer known
        down to try again (its parked rows are not due)."""
        due = await self._context.store.read(outbox.next_due_at)
        probes = [outage.next_probe for outage in self._outages.values()]
        return min([at for at in (due, *probes) if at is not None], default=None)

    async def run_once(self) -> int:
        """Claim and attempt one batch of due rows, and a row of each peer known down
        whose next try has come; returns how many were attempted."""
        context = self._context
        if self._held():
            return 0
        now = to_millis(context.clock.now())
        lease_ms = int(self._config.lease_seconds * 1000)
        probes = await self._claim_probes(now, lease_ms)
        try:
            try:
                items = await context.store.write(
                    lambda c: outbox.claim_due(
                        c, now=now, lease_ms=lease_ms, limit=self._config.batch_size
                    )
                )
            except BaseException:
                await self._give_back(probes)
                raise
            await self._attempt_by_peer([*probes, *items])
        finally:
            # Only now may another loop claim a probe of these peers: their tries
            # have been answered, or have failed, or have had their time.
            self._probing.difference_update(item.recipient_node_id for item in probes)
        return len(probes) + len(items)

    async def _claim_probes(self, now: int, lease_ms: int) -> list[outbox.OutboxItem]:
        """A row of each peer known down whose next try has come (or whose endpoint a
        trust list moved), due or parked. Their peers stay in `_probing` until the
        caller has attempted them.

        A peer with nothing left to send it, or no longer an active member, is
        forgotten: the next row to it, when one comes, finds out how it stands.
        """
        outages: dict[str, _Outage] = {}
        for peer_id, outage in list(self._outages.items()):
            peer = self._context.trust.active_node(peer_id)
            if peer is None:
                del self._outages[peer_id]
            elif peer_id not in self._probing and (
                outage.next_probe <= now or peer.endpoint != outage.endpoint
            ):
                outages[peer_id] = outage
        if not outages:
            return []
        self._probing.update(outages)
        try:
            claimed = await self._context.store.write(
                lambda c: {
                    peer_id: outbox.claim_probe(c, peer_id, now=now, lease_ms=lease_ms)
                    for peer_id in outages
                }
            )
        except BaseException:
            self._probing.difference_update(outages)
            raise
        for peer_id, rows in claimed.items():
            if not rows:
                self._probing.discard(peer_id)
                if self._outages.get(peer_id) is outages[peer_id]:  # not a newer one
                    del self._outages[peer_id]
        return [item for rows in claimed.values() for item in rows]

    async def _attempt_by_peer(self, items: list[outbox.OutboxItem]) -> None:
        by_peer: dict[str, list[outbox.OutboxItem]] = {}
        for item in items:
            by_peer.setdefault(item.recipient_node_id, []).append(item)
        await asyncio.gather(*(self._attempt(group) for group in by_peer.values()))

    async def _attempt(self, items: list[outbox.OutboxItem]) -> None:
        """One delivery attempt of one peer's rows; never raises (but for cancellation).

        Cancelled (the node stops) before its outcomes are recorded, it puts its
        rows back at once instead of leaving them leased: whether or not the peer
        got them, sending them again is safe (a repeat gets the same receipt).
        """
        try:
            outcomes = await self._try(items)
            await self._commit(outcomes)
            peer_id = items[0].recipient_node_id
            await self._park_backlog(peer_id)
            if peer_id not in self._outages and any(
                o.postponed_until is not None for o in outcomes
            ):
                # The peer answered another batch while these rows were being put back.
                self._recovered.add(peer_id)
            await self._resume_backlog(peer_id)
        except asyncio.CancelledError:
            await self._give_back(items)
            raise
        except StoreUnavailableError as exc:
            # The outcomes could not be recorded: the leases run out and the rows are
            # tried again (the recipient answers a repeat with the same receipt).
            self._context.log.warning(
                "delivery.unrecorded",
                message_ids=[item.message_id for item in items],
                error=str(exc),
            )
        except Exception as exc:
            self._context.log.exception(
                "delivery.attempt_failed",
                message_ids=[item.message_id for item in items],
                error_type=type(exc).__name__,
            )
            now = self._context.clock.now()
            error = f"internal error ({type(exc).__name__})"
            try:
                await self._commit([_Outcome(item, now, error) for item in items])
            except Exception as unrecorded:  # never out of here: the worker must go on
                # Their leases run out and the rows are tried again.
                self._context.log.warning(
                    "delivery.unrecorded",
                    message_ids=[item.message_id for item in items],
                    error=f"{type(unrecorded).__name__}: {unrecorded}",
                )

    async def _try(self, items: list[outbox.OutboxItem]) -> list[_Outcome]:
        """Send one peer's due rows; how each attempt ended (nothing recorded yet)."""
        context = self._context
        now = context.clock.now()
        peer_id = items[0].recipient_node_id
        peer = context.trust.active_node(peer_id)
        # Asked once there is a row to send: a batch of expired rows is no probe.
        waiting: _Waiting | None = None
        asked = False
        outcomes: list[_Outcome] = []
        sending: list[outbox.OutboxItem] = []
        for item in items:
            if item.expires_at <= to_millis(now):
                outcomes.append(_Outcome(item, now, "expired before delivery", final=True))
                continue
            if peer is None:
                outcomes.append(
                    _Outcome(item, now, "recipient is not an active node of the trust list")
                )
                continue
            if not asked:
                waiting, asked = self._wait_for(peer, to_millis(now)), True
            if waiting is not None and not (waiting.probe and not sending):
                # (A probe sends the first row it can sign.) Never past expiry: the
                # failure must be reported when it happens.
                due = min(waiting.until, item.expires_at)
                outcomes.append(_Outcome(item, now, waiting.error, postponed_until=due))
            else:
                try:
                    sending.append(await self._signed_acceptably(item, now))
                except PreconditionError as exc:
                    # No valid key of ours: held until the stewards publish one.
                    outcomes.append(_Outcome(item, now, str(exc)))
        if not sending:
            return outcomes
        assert peer is not None
        failpoints.reached("deliver.before_send")
        answers = await self._send(peer, sending)
        failpoints.reached("deliver.after_send")
        now = context.clock.now()
        self._note_reach(peer, answers, now)
        down = self._outages.get(peer.node_id)
        next_try = None if down is None else down.until
        for item, answer in zip(sending, answers, strict=True):
            if isinstance(answer, SignedReceipt):
                outcomes.append(self._checked(item, answer, now))
            elif isinstance(answer, PeerUnreachableError):
                outcomes.append(_Outcome(item, now, str(answer), not_before=next_try))
            else:
                context.log.error(
                    "delivery.attempt_failed",
                    message_id=item.message_id,
                    error_type=type(answer).__name__,
                    exc_info=answer,
                )
                outcomes.append(_Outcome(item, now, f"internal error ({type(answer).__name__})"))
        return outcomes

    def _wait_for(self, peer: TrustedNode, now: int) -> _Waiting | None:
        """Whether rows to `peer` wait unattempted (None: send them all).

        While an outage lasts, rows are parked with the peer's backlog. The first
        batch to find it over sends one envelope (the probe) and parks the rest;
        batches after it park theirs too: an answer makes the peer's rows due at
        once (`_resume_backlog`); otherwise the next probe goes at the next outage's
        end, or an attempt's timeout after this one.
        """
        outage = self._outages.get(peer.node_id)
        if outage is None:
            return None
        if peer.endpoint != outage.endpoint:
            # Moved (a new trust list): the new endpoint gets a probe, as after a backoff.
            outage = dataclasses.replace(
                outage, endpoint=peer.endpoint, failures=0, until=now, probe_until=None
            )
        parked = self._parked_until(outage, now)
        if now < outage.next_probe:
            return _Waiting(parked, outage.error)
        timeout = int(self._config.attempt_timeout_seconds * 1000)
        self._outages[peer.node_id] = dataclasses.replace(outage, probe_until=now + timeout)
        return _Waiting(parked, outage.error, probe=True)

    def _parked_until(self, outage: _Outage, now: int) -> int:
        """Until when the rows of a peer known down wait, unless an answer comes first:
        the park under way, or a new one if that ends before the peer's next try (a
        park that has ended, say while tries of the peer ran out of time, would leave
        rows put back due, to be claimed again at once)."""
        start = max(now, outage.next_probe)
        if outage.parked_until is not None and outage.parked_until > start:
            return outage.parked_until
        return start + int(self._config.park_seconds * 1000)

    async def _park_backlog(self, peer_id: str) -> None:
        """Park the whole backlog of a peer known down (see `_Outage`): when it is first
        found down, and again when the park would end before the peer's next try."""
        outage = self._outages.get(peer_id)
        if outage is None:
            return
        now = to_millis(self._context.clock.now())
        until = self._parked_until(outage, now)
        if until == outage.parked_until:
            return
        self._outages[peer_id] = dataclasses.replace(outage, parked_until=until)
        rows = await self._context.store.write(
            lambda c: outbox.postpone_peer(c, peer_id, until=until, error=outage.error, now=now)
        )
        self._context.log.info("delivery.peer_down", peer=peer_id, parked=rows)

    async def _resume_backlog(self, peer_id: str) -> None:
        """Once an answer has ended the peer's outage, make the rows waiting for it due."""
        if peer_id not in self._recovered:
            return
        now = to_millis(self._context.clock.now())
        rows = await self._context.store.write(lambda c: outbox.resume_peer(c, peer_id, now=now))
        # Only now: should the write fail, the peer's next batch resumes its backlog.
        self._recovered.discard(peer_id)
        self._context.log.info("delivery.peer_back", peer=peer_id, resumed=rows)
        if rows:
            self._context.outbox_changed.fire()

    def _note_reach(self, peer: TrustedNode, answers: Sequence[object], now: dt.datetime) -> None:
        """Remember a peer that no envelope reached (an `_Outage`), or forget it once it
        answers.

        Only UNAVAILABLE unanswered starts an outage, and only an answer ends one: a
        receipt, or a refusal (even UNAVAILABLE, the peer's store busy), which says the
        peer is up. A deadline or an error does neither: it may be one large
        envelope's, and the next probe goes after an attempt's timeout.
        """
        if any(
            isinstance(answer, SignedReceipt)
            or (isinstance(answer, PeerUnreachableError) and answer.refused)
            for answer in answers
        ):
            if self._outages.pop(peer.node_id, None) is not None:
                self._recovered.add(peer.node_id)
            return
        if not all(
            isinstance(answer, PeerUnreachableError)
            and _error_category(str(answer)) == "UNAVAILABLE"
            for answer in answers
        ):
            return
        self._recovered.discard(peer.node_id)  # down again before its backlog was resumed
        previous = self._outages.get(peer.node_id)
        if previous is not None and previous.endpoint != peer.endpoint:
            previous = None  # down at its new endpoint too: an outage of its own
        elif previous is not None and previous.until > to_millis(now):
            return  # another batch in flight found out first
        elif previous is not None and to_millis(now) - previous.until > int(
            self._config.max_backoff_seconds * 1000
        ):
            previous = None  # an outage long over: this one starts afresh
        failures = 1 if previous is None else previous.failures + 1
        delay = backoff(
            failures - 1,
            self._config.initial_backoff_seconds,
            self._config.max_backoff_seconds,
            self._context.rng.random(),
        )
        self._outages[peer.node_id] = _Outage(
            failures,
            to_millis(now + delay),
            str(answers[0]),
            peer.endpoint,
            parked_until=None if previous is None else previous.parked_until,
        )

    async def _send(
        self, peer: TrustedNode, items: list[outbox.OutboxItem]
    ) -> list[SignedReceipt | PeerUnreachableError | Exception]:
        """Each item's receipt, or why it was not delivered."""
        timeout = self._config.attempt_timeout_seconds
        transport = self._transport
        if isinstance(transport, BatchTransport):
            return list(await transport.deliver_many(peer, [i.envelope for i in items], timeout))

        async def one(item: outbox.OutboxItem) -> SignedReceipt | PeerUnreachableError | Exception:
            try:
                return await transport.deliver(peer, item.envelope, timeout)
            except Exception as exc:  # one envelope's failure is that envelope's alone
                return exc

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _give_back(self, items: list[outbox.OutboxItem]) -> None:
        """Release `items` at once, even from a task being cancelled (best effort)."""
        released = asyncio.ensure_future(self._release(items))
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(released)

    async def _release(self, items: list[outbox.OutboxItem]) -> None:
        if not items:
            return
        now = to_millis(self._context.clock.now())
        ids = [item.outbox_id for item in items]
        released = await self._context.store.write(lambda c: outbox.release(c, now, ids))
        self._context.log.info("delivery.released", rows=released)

    def _checked(
        self, item: outbox.OutboxItem, signed: SignedReceipt, now: dt.datetime
    ) -> _Outcome:
        context = self._context
        try:
            receipt = verify_receipt(
                signed,
                trust=context.trust,
                recipient_node_id=item.recipient_node_id,
                message_id=item.message_id,
                envelope_digest=item.envelope_digest,
                now=now,
            )
        except VerificationError as exc:
            # A forged or mismatched receipt proves nothing: keep the row pending.
            context.log.warning(
                "receipt.refused",
                message_id=item.message_id,
                peer=item.recipient_node_id,
                reason=exc.failure.value,
            )
            return _Outcome(item, now, f"invalid receipt: {exc.failure.value}")
        return _Outcome(item, now, signed=signed, receipt=receipt)

    async def _signed_acceptably(
        self, item: outbox.OutboxItem, now: dt.datetime
    ) -> outbox.OutboxItem:
        """The item, its envelope signed anew first if its key was revoked or retired.

        The stored envelope is replaced only if it is still the one this item
        carries (another worker may have re-signed it meanwhile: then that one is
        sent), so every recipient gets, and every receipt covers, the envelope
        on record; the replaced signature stays evidence in the audit entry.
        """
        context = self._context
        renewed = resign(item.envelope, identity=context.identity, trust=context.trust, now=now)
        if renewed is None:
            return item
        old = Header.from_bytes(item.envelope.header)
        new = Header.from_bytes(renewed.header)
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="notice.resigned",
            message_id=item.message_id,
            details={
                "previous_key_id": old.sender_key_id,
                "key_id": new.sender_key_id,
                "previous_envelope_digest": item.envelope_digest.hex(),
                "envelope_digest": renewed.digest().hex(),
                "previous_created_at": old.created_at.isoformat(),
                "previous_signature": item.envelope.signature.hex(),
            },
        )

        def swap(connection: Connection) -> outbox.OutboxItem:
            if outbox.replace_envelope(
                connection,
                item.message_id,
                previous=item.envelope,
                envelope=renewed,
                now=to_millis(now),
            ):
                audit_log.append(connection, [record])
                return dataclasses.replace(item, envelope=renewed, envelope_digest=renewed.digest())
            stored = load_envelope(connection, item.message_id)
            assert stored is not None, "an outbox row always has its envelope"
            return dataclasses.replace(item, envelope=stored, envelope_digest=stored.digest())

        swapped = await context.store.write(swap)
        context.log.info(
            "delivery.resigned",
            message_id=item.message_id,
            previous_key_id=old.sender_key_id,
            key_id=Header.from_bytes(swapped.envelope.header).sender_key_id,
        )
        return swapped

    # --- recording outcomes -------------------------------------------------------------------

    async def _commit(self, outcomes: Sequence[_Outcome]) -> None:
        """Record `outcomes` in one transaction: one write for a whole batch.

        Should the batch fail for anything but an unavailable store (a row that
        breaks a constraint, say), each outcome is recorded on its own, so that
        one cannot hold back the others.
        """
        if not outcomes:
            return
        try:
            told = await self._context.store.write(lambda c: self._record(c, outcomes))
        except StoreUnavailableError:
            raise
        except Exception:
            if len(outcomes) == 1:
                raise
            told = False
            for outcome in outcomes:
                try:
                    told |= await self._context.store.write(
                        functools.partial(self._record, outcomes=[outcome])
                    )
                except StoreUnavailableError:
                    raise
                except Exception as exc:
                    self._context.log.exception(
                        "delivery.unrecorded",
                        message_id=outcome.item.message_id,
                        error_type=type(exc).__name__,
                    )
        self._after_commit(outcomes, told)

    def _record(self, connection: Connection, outcomes: Sequence[_Outcome]) -> bool:
        """Write each outcome and its audit entry; returns whether the authority was told.

        One append to the audit log for the whole batch (its head is read and
        written once), in the order of `outcomes`.
        """
        actor = self._context.actor
        records: list[AuditRecord] = []
        # (index of the delivery.failed entry, the outcome): each gets an inbox event.
        failures: list[tuple[int, _Outcome, str]] = []
        ended = outbox.record_receipts(
            connection,
            [
                outbox.Landing(
                    outbox_id=outcome.item.outbox_id,
                    message_id=outcome.item.message_id,
                    recipient_node_id=outcome.item.recipient_node_id,
                    receipt=outcome.signed,
                    accepted=outcome.receipt.accepted,
                    received_at=to_millis(outcome.receipt.received_at),
                    error=_rejection(outcome.receipt),
                    now=to_millis(outcome.now),
                )
                for outcome in outcomes
                if outcome.receipt is not None and outcome.signed is not None
            ],
        )
        postponed = [(o, o.postponed_until) for o in outcomes if o.postponed_until is not None]
        if postponed:
            first, _ = postponed[0]  # one peer's outage: the same error for each
            outbox.postpone(
                connection,
                {outcome.item.outbox_id: until for outcome, until in postponed},
                error=first.error,
                now=to_millis(first.now),
            )
        for outcome in outcomes:
            item, now = outcome.item, to_millis(outcome.now)
            if outcome.postponed_until is not None:
                continue  # not attempted: nothing to audit
            if outcome.receipt is not None and outcome.signed is not None:
                receipt = outcome.receipt
                if item.outbox_id not in ended:
                    continue
                if receipt.accepted:
                    records.append(
                        AuditRecord(
                            occurred_at=outcome.now,
                            actor=actor,
                            action="notice.delivered",
                            message_id=item.message_id,
                            peer_node_id=item.recipient_node_id,
                            details={
                                "receipt_received_at": receipt.received_at.isoformat(),
                                "receipt_digest": hashlib.sha256(outcome.signed.body).hexdigest(),
                                "envelope_digest": item.envelope_digest.hex(),
                            },
                        )
                    )
                else:
                    reason = _rejection(receipt)
                    failures.append((len(records), outcome, reason))
                    records.append(self._failure_record(outcome, reason))
            elif outcome.final:
                if outbox.fail(connection, outbox_id=item.outbox_id, error=outcome.error, now=now):
                    failures.append((len(records), outcome, outcome.error))
                    records.append(self._failure_record(outcome, outcome.error))
            else:
                delay = backoff(
                    item.attempts,
                    self._config.initial_backoff_seconds,
                    self._config.max_backoff_seconds,
                    self._context.rng.random(),
                )
                next_attempt = max(to_millis(outcome.now + delay), outcome.not_before or 0)
                # Never sleep past expiry: the failure must be reported when it happens.
                next_attempt = min(next_attempt, item.expires_at)
                outbox.retry_later(
                    connection,
                    outbox_id=item.outbox_id,
                    error=outcome.error,
                    next_attempt_at=next_attempt,
                    now=now,
                )
                records.append(
                    AuditRecord(
                        occurred_at=outcome.now,
                        actor=actor,
                        action="delivery.attempt_failed",
                        message_id=item.message_id,
                        peer_node_id=item.recipient_node_id,
                        details={
                            "attempt": str(item.attempts + 1),
                            "error": _error_category(outcome.error),
                        },
                    )
                )
        if not records:
            return False
        sequences = audit_log.append(connection, records)
        for index, outcome, reason in failures:
            inbox.insert_event(
                connection,
                inbox.InboxEvent(
                    sequence=sequences[index],
                    event_type=inbox.DELIVERY_FAILED,
                    message_id=outcome.item.message_id,
                    peer_node_id=outcome.item.recipient_node_id,
                    reason=reason,
                    occurred_at=to_millis(outcome.now),
                ),
            )
        return bool(failures)

    def _failure_record(self, outcome: _Outcome, reason: str) -> AuditRecord:
        return AuditRecord(
            occurred_at=outcome.now,
            actor=self._context.actor,
            action="delivery.failed",
            message_id=outcome.item.message_id,
            peer_node_id=outcome.item.recipient_node_id,
            details={"reason": reason, "attempts": str(outcome.item.attempts + 1)},
        )

    def _after_commit(self, outcomes: Sequence[_Outcome], told: bool) -> None:
        context = self._context
        if told:
            context.inbox_changed.fire()
        delivered = postponed = 0
        for outcome in outcomes:
            item = outcome.item
            if outcome.postponed_until is not None:
                postponed += 1
            elif outcome.receipt is not None:
                context.peer_heard_from(item.recipient_node_id)
                if outcome.receipt.accepted:
                    delivered += 1
                    continue
                context.log.info(
                    "delivery.rejected", message_id=item.message_id, peer=item.recipient_node_id
                )
            elif outcome.final:
                context.log.warning(
                    "delivery.failed",
                    message_id=item.message_id,
                    peer=item.recipient_node_id,
                    reason=outcome.error,
                )
            else:
                context.log.info(
                    "delivery.retry",
                    message_id=item.message_id,
                    peer=item.recipient_node_id,
                    attempts=item.attempts + 1,
                    error=outcome.error,
                )
        if delivered:
            context.log.info(
                "delivery.done", peer=outcomes[0].item.recipient_node_id, notices=delivered
            )
        if postponed:
            context.log.info(
                "delivery.postponed", peer=outcomes[0].item.recipient_node_id, rows=postponed
            )
