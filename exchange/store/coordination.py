"""How the `serve` processes of one node coordinate through PostgreSQL.

Several processes may serve one node on one PostgreSQL database; SQLite
serves one process (`Store.hold_serving`). Two things cross processes here:

- **Change notifications.** A transaction that inserts an inbox event or an
  outbox row is marked (`notify_inserts` watches every INSERT the engine runs
  into those two tables, whichever module issues it, so no writer can forget);
  the store sends one `pg_notify` per marked channel just before that
  transaction commits (`send_marked`), and PostgreSQL delivers it at commit,
  or never if it rolls back. Each process's
  `ProcessSession` LISTENs on one connection of its own and fires the local
  signals (`NodeContext.inbox_changed`, `outbox_changed`). The payload is a
  random token of the sending `Store` and the schema's name, nothing else: nodes
  that share a database (as in the simulation) ignore each other's, and a
  process ignores its own, whose signals it fired itself; no message id or
  case reference crosses.
  A notification is only a wake-up: waiters re-read the store on a timeout
  anyway, so a notification lost while the session reconnects only delays an
  event, and every (re)connect fires the signals once.
- **Leadership.** Jobs that one process of the node should run (retention
  purge, trust list fetching, OPRF key rotation, audit head signing, timed
  peer head rounds) run where `is_leader` is true: the process whose session
  holds the node's advisory lock. The lock goes with the session, so a
  process that dies or loses its connection gives it up, and another takes it
  within `HEARTBEAT_SECONDS`. A leader learns it lost its connection only at
  its next heartbeat, so for a moment two processes may both lead: each job's
  transactions stay safe when run twice at once (they serialize on the audit
  lock or on row locks); leadership saves repeated work, not correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, Insert, event, text
from sqlalchemy.engine import make_url

__all__ = [
    "HEARTBEAT_SECONDS",
    "INBOX",
    "OUTBOX",
    "ProcessSession",
    "forget_marked",
    "libpq_url",
    "mark_changed",
    "notify_inserts",
    "send_marked",
]

INBOX = "exchange_inbox"
OUTBOX = "exchange_outbox"
_CHANNELS = (INBOX, OUTBOX)

# How often the session proves its connection alive and a follower tries to lead.
HEARTBEAT_SECONDS = 2.0
# Reconnection backoff after the connection is lost, doubled up to its maximum.
_RETRY_SECONDS = 0.25
_RETRY_MAX_SECONDS = 5.0
_CONNECT_TIMEOUT_SECONDS = 5

_MARKED = "exchange_notify"
_NOTIFY = text("SELECT pg_notify(:channel, :sender || ' ' || coalesce(current_schema(), ''))")
# One advisory lock per node: keyed by the schema, so nodes sharing a database do not collide.
_TRY_LEAD = "SELECT pg_try_advisory_lock(hashtextextended('exchange.leader.' || %s, 0))"


# The tables whose new rows another process of the node must hear of.
_CHANNEL_OF_TABLE = {"inbox_events": INBOX, "outbox": OUTBOX}


def notify_inserts(engine: Engine) -> None:
    """Mark every transaction of `engine` that inserts into a watched table."""

    @event.listens_for(engine, "after_execute")
    def _after_execute(
        connection: Connection, statement: Any, multiparams: Any, params: Any, *_: Any, **__: Any
    ) -> None:
        if isinstance(statement, Insert):
            channel = _CHANNEL_OF_TABLE.get(getattr(statement.table, "name", ""))
            if channel == OUTBOX and _born_leased(multiparams or [params]):
                # The inserting process's own worker sends them (DeliveryWorker.lease_for):
                # the others, woken, would claim nothing.
                return
            if channel is not None:
                mark_changed(connection, channel)


def _born_leased(rows: list[Any]) -> bool:
    return all(isinstance(row, Mapping) and row.get("lease_until", 0) > 0 for row in rows)


def mark_changed(connection: Connection, channel: str) -> None:
    """Note that this transaction changed `channel` (INBOX or OUTBOX): notified at commit.

    Nothing on SQLite, whose node runs in one process.
    """
    if connection.dialect.name == "postgresql":
        connection.info.setdefault(_MARKED, set()).add(channel)


def forget_marked(connection: Connection) -> None:
    """Drop marks left by a transaction that did not commit (the info outlives it)."""
    connection.info.pop(_MARKED, None)


def send_marked(connection: Connection, sender: str) -> None:
    """Send the notifications this transaction marked; call it last before commit.

    Args:
        sender: the sending store's token (`Store.sender`): no spaces.
    """
    marked = connection.info.pop(_MARKED, None)
    for channel in sorted(marked or ()):
        connection.execute(_NOTIFY, {"channel": channel, "sender": sender})


def libpq_url(url: str) -> str:
    """The store URL (SQLAlchemy's form) as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ProcessSession:
    """One PostgreSQL session per process: it listens for changes and may lead.

    Args:
        url: the node's store URL (postgresql+psycopg://...).
        signals: channel -> signal fired when another process commits a change.
        log: the node's logger.
        lead: whether this process may take the leadership at all.
        own: the token of this process's store (`Store.sender`): its own
            notifications are not heard (it fired those signals itself).
    """

    def __init__(
        self,
        url: str,
        signals: Mapping[str, Any],
        log: Any,
        *,
        lead: bool = True,
        own: str | None = None,
    ) -> None:
        self._conninfo = libpq_url(url)
        self._own = own
        self._signals = dict(signals)
        self._log = log
        self._lead = lead
        self.is_leader = False
        # Set while the session is connected and listening (tests wait on it).
        self.listening = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        """Listen (and lead when it can) until cancelled, reconnecting after any loss."""
        retry = _RETRY_SECONDS
        while True:
            connected = self.connections
            try:
                await self._session()
            except (psycopg.Error, OSError) as exc:
                if self.connections > connected:
                    retry = _RETRY_SECONDS  # it was up: the first retry comes quickly
                was_leader = self.is_leader
                self.is_leader = False
                self.listening.clear()
                self._log.warning(
                    "store.session_lost",
                    error=type(exc).__name__,
                    was_leader=was_leader,
                    retry_in=retry,
                )
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX_SECONDS)

    async def _session(self) -> None:
        connection = await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            application_name="exchange-session",
        )
        async with connection:
            cursor = await connection.execute("SELECT coalesce(current_schema(), '')")
            row = await cursor.fetchone()
            schema = "" if row is None else str(row[0])
            # Named after the node's schema, so an operator (or a test) can tell sessions apart.
            await connection.execute(
                "SELECT set_config('application_name', %s, false)",
                (f"exchange-session:{schema}"[:63],),
            )
            for channel in self._signals:
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.connections += 1
            self.listening.set()
            self._log.info("store.session_connected", connections=self.connections)
            # Whatever was committed while no one listened is found by re-reading.
            self._fire_all()
            while True:
                if self._lead and not self.is_leader:
                    cursor = await connection.execute(_TRY_LEAD, (schema,))
                    row = await cursor.fetchone()
                    if row is not None and row[0]:
                        self.is_leader = True
                        self._log.info("node.leader")
                else:
                    await connection.execute("SELECT 1")  # the heartbeat: raises once gone
                async for notice in connection.notifies(timeout=HEARTBEAT_SECONDS):
                    sender, _, of_schema = notice.payload.partition(" ")
                    if of_schema == schema and sender != self._own:
                        signal = self._signals.get(notice.channel)
                        if signal is not None:
                            signal.fire()

    def _fire_all(self) -> None:
        for signal in self._signals.values():
            signal.fire()

    async def close(self, task: asyncio.Task[None]) -> None:
        """Cancel the session's task (its connection closes, and the leadership with it)."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.is_leader = False
        self.listening.clear()
