"""Work on large notices runs off the event loop.

Checking, sealing or opening a content hash referral of 200,000 hashes takes
long enough to stall every other call a node is serving; small notices are
cheaper to handle in place than to hand to a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["LARGE", "in_thread_if_large"]

# Bytes of encoded notice above which the work goes to a thread.
LARGE = 256 * 1024

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread_if_large(
    size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """`fn(*args, **kwargs)`, in a worker thread if `size` bytes is LARGE or more."""
    if size < LARGE:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
