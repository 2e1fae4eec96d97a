"""What a failed delivery attempt puts on the audit record: a category, never a peer's text."""

from __future__ import annotations

import pytest

from exchange.delivery import _error_category


@pytest.mark.parametrize(
    ("error", "recorded"),
    [
        ("UNAVAILABLE: failed to connect to all addresses", "UNAVAILABLE"),
        ("PERMISSION_DENIED: anything the peer chose to say, names included", "PERMISSION_DENIED"),
        ("DEADLINE_EXCEEDED: Deadline Exceeded", "DEADLINE_EXCEEDED"),
        ("invalid receipt: bad signature", "invalid receipt: bad signature"),
        (
            "recipient is not an active node of the trust list",
            "recipient is not an active node of the trust list",
        ),
        ("x" * 300, "x" * 120),
    ],
    ids=["unreachable", "peer-text-dropped", "deadline", "own-wording", "own-sentence", "bounded"],
)
def test_only_the_status_code_of_a_peer_error_is_recorded(error: str, recorded: str) -> None:
    assert _error_category(error) == recorded
