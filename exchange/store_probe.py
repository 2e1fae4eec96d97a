"""Health while the store is unreachable: a node that cannot reach its store says so.

A trivial read every `[store] probe_interval_seconds`. While it fails, or takes
longer than the interval, the node reports STORE_UNREACHABLE (NOT_SERVING, with the
reason); the first read that answers clears it. One probe is in flight at a time,
so a database that hangs rather than refuses cannot take up every reader thread.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, text

from exchange.errors import StoreUnavailableError
from exchange.health import STORE_UNREACHABLE
from exchange.runtime import NodeContext

__all__ = ["probe_store"]


def _answer(connection: Connection) -> None:
    connection.execute(text("SELECT 1")).scalar_one()


async def probe_store(context: NodeContext, interval: float) -> None:
    """Probe until cancelled."""
    probe: asyncio.Future[None] | None = None
    try:
        while True:
            if probe is None:
                probe = asyncio.ensure_future(context.store.read(_answer))
            done, _ = await asyncio.wait({probe}, timeout=interval)
            if not done:
                await context.health.report(
                    STORE_UNREACHABLE, f"the store has not answered a read for {interval:g} s"
                )
                continue
            try:
                probe.result()
            except StoreUnavailableError as exc:
                await context.health.report(STORE_UNREACHABLE, str(exc))
            else:
                await context.health.clear(STORE_UNREACHABLE)
            probe = None
            await asyncio.sleep(interval)
    finally:
        if probe is not None:
            probe.cancel()
