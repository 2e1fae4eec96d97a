"""Token-bucket rate limits, per peer node or per authority client.

Each key has a bucket of `per_minute` tokens, refilled continuously at
`per_minute / 60` a second; a request takes as many tokens as it does work
(one per identifier evaluated) and is refused, never queued, when the bucket
is short: RESOURCE_EXHAUSTED, saying when to try again. Time comes from the
node's clock, so tests can run the limit forwards.
"""

from __future__ import annotations

import dataclasses

from exchange.clock import Clock
from exchange.errors import ResourceLimitError

__all__ = ["RateLimiter"]


@dataclasses.dataclass
class RateLimiter:
    """`per_minute` units of work per key and minute, with a burst of as many."""

    what: str
    per_minute: int
    clock: Clock
    _buckets: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def take(self, key: str, amount: int = 1) -> None:
        """Take `amount` tokens from `key`'s bucket.

        Raises:
            ResourceLimitError: not enough left; nothing is taken.
        """
        now = self.clock.now().timestamp()
        level, then = self._buckets.get(key, (float(self.per_minute), now))
        level = min(float(self.per_minute), level + (now - then) * self.per_minute / 60)
        if amount > level:
            wait = (amount - level) * 60 / self.per_minute
            raise ResourceLimitError(
                f"{self.what} rate limit of {self.per_minute} a minute reached for {key}; "
                f"retry in {wait:.1f} s"
            )
        self._buckets[key] = (level - amount, now)
