"""Delivery retry delays: exponential, capped, jittered into [50%, 100%)."""

from __future__ import annotations

import datetime as dt

import pytest

from exchange.delivery import backoff


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        (0, 0.5, 1.0),
        (1, 1.0, 2.0),
        (3, 4.0, 8.0),
        (9, 256.0, 512.0),
        (10, 300.0, 600.0),  # capped at the maximum
        (1000, 300.0, 600.0),  # no overflow however many attempts
    ],
)
def test_backoff_doubles_up_to_the_cap(attempts: int, low: float, high: float) -> None:
    assert backoff(attempts, 1.0, 600.0, 0.0) == dt.timedelta(seconds=low)
    longest = backoff(attempts, 1.0, 600.0, 0.999999)
    assert dt.timedelta(seconds=low) < longest < dt.timedelta(seconds=high)
