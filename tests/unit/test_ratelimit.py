"""Token-bucket rate limits: a burst of the limit, refilled over the minute, refused not queued."""

from __future__ import annotations

import datetime as dt

import pytest

from exchange.clock import ManualClock
from exchange.errors import ResourceLimitError
from exchange.ratelimit import RateLimiter

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def limiter(per_minute: int = 60) -> tuple[RateLimiter, ManualClock]:
    clock = ManualClock(T0)
    return RateLimiter("evaluation", per_minute, clock), clock


def test_a_burst_up_to_the_limit_passes_and_one_more_is_refused() -> None:
    limits, _ = limiter()
    limits.take("xb", 60)
    with pytest.raises(
        ResourceLimitError, match=r"rate limit of 60 a minute reached for xb; retry in 1\.0 s"
    ):
        limits.take("xb")


def test_tokens_come_back_over_time() -> None:
    limits, clock = limiter()
    limits.take("xb", 60)
    clock.advance(dt.timedelta(seconds=10))
    limits.take("xb", 10)
    with pytest.raises(ResourceLimitError):
        limits.take("xb")


def test_a_refused_request_takes_nothing() -> None:
    limits, _ = limiter()
    limits.take("xb", 50)
    with pytest.raises(ResourceLimitError):
        limits.take("xb", 20)
    limits.take("xb", 10)


def test_each_key_has_its_own_bucket_and_none_fills_beyond_the_limit() -> None:
    limits, clock = limiter()
    limits.take("xb", 60)
    limits.take("xc", 60)
    clock.advance(dt.timedelta(hours=1))
    limits.take("xb", 60)
    with pytest.raises(ResourceLimitError):
        limits.take("xb")


def test_more_than_the_limit_at_once_is_never_possible() -> None:
    limits, _ = limiter(per_minute=5)
    with pytest.raises(ResourceLimitError):
        limits.take("client", 6)
