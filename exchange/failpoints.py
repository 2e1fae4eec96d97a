"""Named crash points for the fault suite: SIGKILL this process where a test asks.

Inert unless the environment variable ``EXCHANGE_FAILPOINT`` names a point when
the process starts; then the process kills itself with SIGKILL (no cleanup, no
flush, exactly as a power cut or an OOM kill) the Nth time it reaches that point:

    EXCHANGE_FAILPOINT=receive.before_commit        # the first time it is reached
    EXCHANGE_FAILPOINT=deliver.after_send@3         # the third time

Never set it on a node that holds real data. The points, in the order a notice
passes them:

=========================  =====================================================
``submit.before_commit``   sender: the submission's transaction is written but
                           not committed
``submit.after_commit``    sender: committed, the authority not yet answered
``deliver.before_send``    sender: the outbox row is claimed, the envelope not
                           yet sent
``deliver.after_send``     sender: the recipient's receipt is in hand, not yet
                           verified or stored
``receive.before_commit``  recipient: the notice's transaction is written but
                           not committed
``receive.after_commit``   recipient: committed, the receipt not yet returned
=========================  =====================================================

`reached` costs one truth test of a module constant when nothing is armed.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENVIRONMENT_VARIABLE", "POINTS", "reached"]

ENVIRONMENT_VARIABLE = "EXCHANGE_FAILPOINT"
POINTS = frozenset(
    {
        "submit.before_commit",
        "submit.after_commit",
        "deliver.before_send",
        "deliver.after_send",
        "receive.before_commit",
        "receive.after_commit",
    }
)


def _armed(value: str) -> tuple[str, int] | None:
    """The point named by `value` ("name" or "name@N") and the hit that kills."""
    if not value:
        return None
    name, _, nth = value.partition("@")
    if name not in POINTS:
        # A typo must not let a fault test pass without its fault.
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: unknown failpoint {name!r}")
    count = int(nth) if nth else 1
    if count < 1:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: the hit count must be 1 or more")
    return name, count


_ARMED = _armed(os.environ.get(ENVIRONMENT_VARIABLE, ""))
_hits = 0


def reached(name: str) -> None:
    """Mark that this process reached failpoint `name`; dies here if it is armed."""
    if _ARMED is None or _ARMED[0] != name:
        return
    global _hits  # noqa: PLW0603 (one counter per process, by design)
    _hits += 1
    if _hits >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
