"""Envelopes signed by a key the trust list does not allow (issue 6, attack 4).

XB holds a trust list (version 2, published by two stewards and installed as
admins do) in which XA has, beside its current key, a key revoked a minute ago
and a key announced for tomorrow. Every envelope of the case table is made exactly
as XA's submission path makes it, but signed with a key the receiver must not
accept; each is refused with UNAUTHENTICATED (or FAILED_PRECONDITION where the claimed
time itself is refused), stores nothing, and is audited with its reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange._encoding import encode
from exchange.admin import node as node_admin
from exchange.admin.federation import latest_published
from exchange.envelope import Envelope
from exchange.errors import VerificationFailure
from exchange.keys import ed25519_key_id, load_ed25519, raw_public
from exchange.layout import FederationLayout
from exchange.node import Node
from exchange.trust import ED25519, KeyInfo, SignedTrustList, sign_trust_list
from tests.adversarial._envelopes import (
    Trace,
    accepted_delivery,
    refused_delivery,
    resigned,
    trace,
)
from tests.live import Federation
from tests.peers import craft_envelope, referral_notice

NOW = dt.datetime.now(dt.UTC)
REVOKED = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ANNOUNCED = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


def _key(
    private: ed25519.Ed25519PrivateKey, not_before: dt.datetime, **window: dt.datetime
) -> KeyInfo:
    public = private.public_key()
    return KeyInfo(ed25519_key_id(public), ED25519, raw_public(public), not_before, **window)


async def _publish_keys(root: Path, receiver: Node, directory: Path, sender_id: str) -> None:
    """Stewards publish version 2: the sender gains a revoked and an announced key."""
    layout = FederationLayout(root / "federation")
    version, current = latest_published(layout.root)
    listed = current.trust_list.nodes[sender_id]
    since = listed.signing_keys[0].not_before
    sender = dataclasses.replace(
        listed,
        signing_keys=(
            *listed.signing_keys,
            _key(REVOKED, since, revoked_at=NOW - dt.timedelta(minutes=1)),
            _key(ANNOUNCED, NOW + dt.timedelta(days=1)),
        ),
    )
    trust = dataclasses.replace(
        current.trust_list,
        version=version + 1,
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(days=30),
        nodes={**current.trust_list.nodes, sender_id: sender},
    )
    signed = SignedTrustList(trust.to_bytes(), ())
    for steward in ("steward-1", "steward-2"):
        key = load_ed25519(layout.steward_key(steward), None)
        signed = signed.with_signature(*sign_trust_list(signed.body, key))
    path = layout.trust_list(trust.version)
    path.write_bytes(signed.to_bytes())
    node_admin.update_trust(directory, path, now=NOW)
    assert await receiver.refresh_trust()


class Case(NamedTuple):
    make: Callable[[Node, Node, Node], Envelope]
    failure: VerificationFailure


def _signed(
    key: ed25519.Ed25519PrivateKey, created_at: dt.datetime | None = None
) -> Callable[[Node, Node, Node], Envelope]:
    def make(a: Node, b: Node, c: Node) -> Envelope:
        recipients = [b.context.node_id]
        notice = referral_notice()
        return craft_envelope(a, recipients, notice, signing_key=key, created_at=created_at)

    return make


def _another_nodes_key(named: str) -> Callable[[Node, Node, Node], Envelope]:
    """XA's envelope signed with XC's key, the header naming XC's key or XA's own."""

    def make(a: Node, b: Node, c: Node) -> Envelope:
        genuine = craft_envelope(a, [b.context.node_id], referral_notice())
        key = c.context.identity.signing_key
        if named == "its own":
            return resigned(genuine, key, sender_key_id=c.context.identity.signing_key_id)
        return dataclasses.replace(
            genuine, signature=key.sign(encode("exchange.v1.EnvelopeHeader", genuine.header))
        )

    return make


CASES = {
    "revoked key": Case(_signed(REVOKED), VerificationFailure.UNKNOWN_KEY),
    # Whoever holds a stolen key chooses created_at: backdating does not help.
    "revoked key, backdated before the revocation": Case(
        _signed(REVOKED, created_at=NOW - dt.timedelta(minutes=10)), VerificationFailure.UNKNOWN_KEY
    ),
    "key not yet valid": Case(_signed(ANNOUNCED), VerificationFailure.UNKNOWN_KEY),
    # Claiming a time when the announced key is valid is claiming the future.
    "key not yet valid, dated when it will be": Case(
        _signed(ANNOUNCED, created_at=NOW + dt.timedelta(days=1, minutes=1)),
        VerificationFailure.CLOCK_SKEW,
    ),
    "current key, dated before it was listed": Case(
        lambda a, b, c: craft_envelope(
            a,
            [b.context.node_id],
            referral_notice(),
            created_at=NOW - dt.timedelta(days=3),
            ttl=dt.timedelta(days=4),
        ),
        VerificationFailure.UNKNOWN_KEY,
    ),
    "key of another node, named as its own": Case(
        _another_nodes_key("its own"), VerificationFailure.UNKNOWN_KEY
    ),
    "key of another node, under the sender's key id": Case(
        _another_nodes_key("the sender's"), VerificationFailure.BAD_SIGNATURE
    ),
}


async def test_envelope_signed_by_a_key_not_allowed_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    await _publish_keys(tmp_path, b, federation.sim(1).directory, a.context.node_id)
    for name, case in CASES.items():
        try:
            await refused_delivery(a, b, case.make(a, b, c), case.failure)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    assert await trace(b) == Trace(0, 0, 0, 0, 0)
    # The sender's current key is still good: each refusal was about the key.
    await accepted_delivery(a, b, craft_envelope(a, [b.context.node_id], referral_notice()))
