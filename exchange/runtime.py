"""What a running node's parts share: keys, store, clock, trust list, signals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from exchange import notices
from exchange._proto.exchange.v1 import notices_pb2
from exchange.clock import Clock
from exchange.config import NodeConfig
from exchange.envelope import ReceivePolicy
from exchange.errors import PreconditionError
from exchange.health import HealthConditions
from exchange.identity import NodeIdentity
from exchange.seal import open_sealed
from exchange.store.engine import AsyncStore
from exchange.store.notices import NoticeRecord, load_envelope
from exchange.trust import TrustList

if TYPE_CHECKING:
    from exchange.delivery import Lease
    from exchange.store.outbox import OutboxItem

__all__ = ["Handover", "NodeContext", "Signal"]


class Handover(Protocol):
    """This process's delivery worker, as a submission hands it new outbox rows."""

    def lease_for(self, rows: int, size: int, now: int) -> Lease | None: ...

    def hand_over(self, lease: Lease, items: Sequence[OutboxItem]) -> None: ...


class Signal:
    """Wakes everyone waiting for "something changed".

    A waiter takes `snapshot()` *before* it looks at the store and then waits on
    that snapshot, so a change made between the look and the wait is not missed.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def snapshot(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(snapshot: asyncio.Event, timeout: float) -> None:
        """Until `snapshot` is set or `timeout` seconds pass; a cancellation always cancels.

        Not `asyncio.wait_for`: on Python 3.11 it returns normally when the event
        is set in the same turn as the task is cancelled, and a node's stop then
        waits on a loop that never ends. `asyncio.timeout` tells its own
        cancellation from another's.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await snapshot.wait()


@dataclasses.dataclass
class NodeContext:
    """The running node, as its services see it.

    Attributes:
        trust: the newest verified trust list; replaced when a newer one is installed.
        inbox_changed: fired after an inbox event is committed (by this process,
            or on PostgreSQL by another process of the node: `store.coordination`).
        outbox_changed: fired after outbox rows are committed (likewise).
        rng: randomness for backoff jitter (seeded in tests).
        handover: the delivery worker of this process, while it has one.
        health: named problems; any makes the node's health services NOT_SERVING.
    """

    config: NodeConfig
    identity: NodeIdentity
    store: AsyncStore
    clock: Clock
    trust: TrustList
    policy: ReceivePolicy
    log: Any
    inbox_changed: Signal = dataclasses.field(default_factory=Signal)
    outbox_changed: Signal = dataclasses.field(default_factory=Signal)
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    health: HealthConditions = dataclasses.field(default_factory=HealthConditions)
    # Peers exchanged with since the audit watcher last looked: it checks their heads.
    peers_heard_from: set[str] = dataclasses.field(default_factory=set)
    peer_activity: Signal = dataclasses.field(default_factory=Signal)
    handover: Handover | None = None

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def actor(self) -> str:
        return f"node:{self.node_id}"

    def peer_heard_from(self, node_id: str) -> None:
        """Note a delivery to or from `node_id`, so its audit head is checked soon."""
        self.peers_heard_from.add(node_id)
        self.peer_activity.fire()

    def open_content(
        self, sealed_payload: bytes, message_id: str, sender_node_id: str
    ) -> notices_pb2.Notice:
        """Open a payload sealed to this node and parse its notice.

        Raises:
            VerificationError: it cannot be opened or is not a notice.
        """
        return notices.decode_notice(
            open_sealed(
                sealed_payload,
                message_id=message_id,
                sender_node_id=sender_node_id,
                recipient_node_id=self.node_id,
                keys=self.identity.sealing_keys,
            )
        )

    async def open_stored(self, record: NoticeRecord) -> notices_pb2.Notice | None:
        """Open a notice this node received, for its own use; None once purged."""
        envelope = await self.store.read(lambda c: load_envelope(c, record.message_id))
        if envelope is None or not envelope.sealed_payload:
            return None
        return self.open_content(envelope.sealed_payload, record.message_id, record.sender_node_id)

    def usable_trust(self, now: dt.datetime) -> TrustList:
        """The trust list, if it may be used to send or receive now.

        Raises:
            PreconditionError: it has expired; the node neither sends nor accepts
                until a newer one is installed (an expired list may no longer say
                who the members are).
        """
        if self.trust.expired(now):
            raise PreconditionError(
                f"trust list version {self.trust.version} expired at "
                f"{self.trust.expires_at.isoformat()}; install a newer one"
            )
        return self.trust

    def trust_staleness(self, now: dt.datetime) -> str | None:
        """Why the held list may not be used to send now (expired or past
        [trust] max_age_days); None while it is fresh."""
        return self.trust.staleness(now, self.config.trust.max_age())

    def sendable_trust(self, now: dt.datetime) -> TrustList:
        """The trust list, if this node may send with it now.

        Raises:
            PreconditionError: it is stale; saying why and what to do.
        """
        reason = self.trust_staleness(now)
        if reason is not None:
            raise PreconditionError(f"sending refused: {reason}")
        return self.trust
