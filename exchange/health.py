"""Named problems that make a running node report NOT_SERVING.

A part of the node that sees a problem it cannot fix on its own reports it by
name, with a reason a person can act on; while any problem is reported, every
health service the node serves (`grpc.health.v1`, both ports) answers
NOT_SERVING, and `problems()` says why. Clearing the last problem makes the
node SERVING again. Each change is logged once (warning when set, info when
cleared), so the reason is in the log too.

    await node.context.health.report(TRUST_LIST_STALE, "trust list version 3 expired at ...")
    await node.context.health.clear(TRUST_LIST_STALE)

This module knows nothing of gRPC: the servers subscribe with `watch`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from exchange.logs import get_logger

__all__ = ["STORE_UNREACHABLE", "TRUST_LIST_STALE", "HealthConditions"]

# The held trust list is expired or older than [trust] max_age_days: sending stops.
TRUST_LIST_STALE = "trust_list_stale"

# The store does not answer reads (exchange.store_probe).
STORE_UNREACHABLE = "store_unreachable"

Listener = Callable[[bool], Awaitable[None]]


class HealthConditions:
    """The set of named problems of one node, and who to tell when serving changes."""

    def __init__(self, log: Any = None) -> None:
        self._log = log if log is not None else get_logger(__name__)
        self._problems: dict[str, str] = {}
        self._listeners: list[Listener] = []

    @property
    def serving(self) -> bool:
        return not self._problems

    def problems(self) -> Mapping[str, str]:
        """The problems reported now: name -> reason (read-only)."""
        return MappingProxyType(self._problems)

    async def report(self, name: str, reason: str) -> None:
        """Set (or update the reason of) the problem `name`."""
        if self._problems.get(name) == reason:
            return
        was_serving = self.serving
        self._problems[name] = reason
        self._log.warning("health.problem", problem=name, reason=reason)
        if was_serving:
            await self._tell()

    async def clear(self, name: str) -> None:
        """Clear the problem `name`, if it was reported."""
        if self._problems.pop(name, None) is None:
            return
        self._log.info("health.problem_cleared", problem=name)
        if self.serving:
            await self._tell()

    async def watch(self, listener: Listener) -> None:
        """Call `listener(serving)` now and whenever serving changes."""
        self._listeners.append(listener)
        await listener(self.serving)

    async def _tell(self) -> None:
        for listener in self._listeners:
            await listener(self.serving)
