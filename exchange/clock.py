"""Time as a parameter.

Every rule that depends on time (expiry, skew, key validity, backoff) takes a
`Clock`, so tests can replay expiry, skew and rotation deterministically.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "from_millis", "to_millis", "utc"]


class Clock(Protocol):
    """Source of the current time (timezone-aware, UTC)."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = utc(start)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta

    def set(self, when: dt.datetime) -> None:
        self._now = utc(when)


def utc(when: dt.datetime) -> dt.datetime:
    """`when` as an aware UTC datetime; naive values are refused."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: every time in the exchange is timezone-aware")
    return when.astimezone(dt.UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)


def to_millis(when: dt.datetime) -> int:
    """Milliseconds since the Unix epoch (the store's time representation).

    Integer arithmetic on timedeltas, so no float rounding ever shifts a time.
    """
    return (utc(when) - _EPOCH) // _MILLISECOND


def from_millis(millis: int) -> dt.datetime:
    """The inverse of `to_millis`."""
    return _EPOCH + millis * _MILLISECOND
