"""Attacks on the trust list: rollback, fast-forward with a compromised key, under-threshold
lists, the same key counted twice.

A trust list travels between nodes: each node asks its peers (GetTrustList,
over mTLS) and installs a newer list only if the TUF rules hold
(`exchange.trust.verify_update`). Here XA plays a compromised peer: it serves
whatever the attacker put in its store. XB asks, as it does every fetch
interval. Every forged list is refused and audited at XB (`trust_list.refused`,
naming the peer and the rule), XB stores nothing and keeps its version, and
what the forged list would have changed (a suspended node let back in) stays
refused at the federation port. The stewards' own next version is still
taken afterwards: a forged list leaves nothing behind.

The federation has three stewards (steward-1..3) and a threshold of two.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Connection, delete

from exchange._proto.exchange.v1 import federation_pb2
from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.clock import to_millis
from exchange.errors import TrustListError
from exchange.keys import load_ed25519
from exchange.layout import FederationLayout
from exchange.node import Node
from exchange.store import audit_log, registry
from exchange.store.tables import TRUST_LISTS
from exchange.trust import SignedTrustList, TrustList, sign_trust_list, steward_from_key
from tests.live import Federation
from tests.peers import craft_envelope, deliver_as, referral_notice

XA, XB, XC = 0, 1, 2
Signer = str | ed25519.Ed25519PrivateKey


def _steward(root: Path, name: str) -> ed25519.Ed25519PrivateKey:
    return load_ed25519(FederationLayout(root / "federation").steward_key(name), None)


def _held(root: Path) -> TrustList:
    """The newest list the stewards published (the one every node holds at the start)."""
    return federation_admin.latest_published(root / "federation")[1].trust_list


def _successor(root: Path, **changes: object) -> TrustList:
    """The next version after the held one, issued now, with `changes`."""
    held = _held(root)
    now = dt.datetime.now(dt.UTC)
    fields: dict[str, object] = {
        "version": held.version + 1,
        "issued_at": now,
        "expires_at": now + dt.timedelta(days=30),
    }
    fields.update(changes)
    return dataclasses.replace(held, **fields)  # type: ignore[arg-type]


def _suspending(root: Path, node_id: str, **changes: object) -> TrustList:
    nodes = dict(_held(root).nodes)
    nodes[node_id] = dataclasses.replace(nodes[node_id], active=False)
    return _successor(root, nodes=nodes, **changes)


def _sign(root: Path, trust: TrustList, signers: Sequence[Signer]) -> SignedTrustList:
    """`trust` with one signature per entry of `signers` (a steward's name or any key)."""
    signed = SignedTrustList(trust.to_bytes(), ())
    for signer in signers:
        key = _steward(root, signer) if isinstance(signer, str) else signer
        key_id, signature = sign_trust_list(signed.body, key)
        # Appended, not replaced: a key may sign twice.
        signed = SignedTrustList(signed.body, (*signed.signatures, (key_id, signature)))
    return signed


async def _serve(peer: Node, signed: SignedTrustList, version: int) -> None:
    """The compromised peer holds `signed` as its newest list: GetTrustList answers with it."""

    def put(connection: Connection) -> None:
        connection.execute(delete(TRUST_LISTS).where(TRUST_LISTS.c.version == version))
        registry.insert_trust_list(
            connection,
            version=version,
            signed=signed.to_bytes(),
            expires_at=to_millis(dt.datetime.now(dt.UTC) + dt.timedelta(days=30)),
            installed_at=to_millis(dt.datetime.now(dt.UTC)),
        )

    await peer.context.store.write(put)


async def _refusals(node: Node) -> list[dict[str, str]]:
    entries = await node.context.store.read(lambda c: list(audit_log.iter_entries(c)))
    return [
        dict(json.loads(e.details_json), actor=e.actor)
        for e in entries
        if e.action == "trust_list.refused"
    ]


async def _stored_versions(node: Node) -> list[int]:
    query = TRUST_LISTS.select().with_only_columns(TRUST_LISTS.c.version)
    return await node.context.store.read(lambda c: sorted(c.execute(query).scalars()))


async def _offered_and_refused(federation: Federation, signed: SignedTrustList, rule: str) -> None:
    """XA serves `signed` (as a newer version); XB refuses it, audits why, stores nothing."""
    a, b = federation.node(XA), federation.node(XB)
    held, stored = b.context.trust.version, await _stored_versions(b)
    refused_before = len(await _refusals(b))
    # The forged body is read raw: some are not even consistent lists.
    await _serve(a, signed, federation_pb2.TrustList.FromString(signed.body).version)

    assert await b.fetch_trust() is None
    assert b.context.trust.version == held
    assert await _stored_versions(b) == stored, "nothing of a forged list is stored"
    refusals = await _refusals(b)
    assert len(refusals) == refused_before + 1, "each offer refused and audited once"
    refusal = refusals[-1]
    assert refusal["source"] == a.context.node_id
    assert rule in refusal["reason"], refusal["reason"]


async def _still_refused(federation: Federation, index: int) -> None:
    """Node `index`, suspended by the list XB holds, still cannot deliver to XB."""
    sender, b = federation.node(index), federation.node(XB)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(sender, b, craft_envelope(sender, [b.context.node_id], referral_notice()))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown or inactive sender" in (refused.value.details() or "")


async def _the_stewards_next_list_is_still_taken(federation: Federation, root: Path) -> None:
    """A forged list leaves nothing behind: the real next version installs at XB."""
    b = federation.node(XB)
    real = _suspending(root, federation.sim(XC).node_id)
    path = FederationLayout(root / "federation").trust_list(real.version)
    path.write_bytes(_sign(root, real, ["steward-1", "steward-2"]).to_bytes())
    node_admin.update_trust(federation.sim(XB).directory, path, now=dt.datetime.now(dt.UTC))
    assert await b.refresh_trust()
    assert b.context.trust.version == real.version


# --- rollback --------------------------------------------------------------------------------


async def test_rollback_to_an_older_list_is_refused_and_the_suspension_holds(
    federation: Federation, tmp_path: Path
) -> None:
    """XC is suspended in v3; its accomplice offers v2 again, where XC was active."""
    b, b_dir = federation.node(XB), federation.sim(XB).directory
    c_id = federation.sim(XC).node_id
    old = federation_admin.latest_published(tmp_path / "federation")
    stored = await _stored_versions(b)
    v3 = _suspending(tmp_path, c_id)
    v3_file = tmp_path / "v3.pb"
    v3_file.write_bytes(_sign(tmp_path, v3, ["steward-1", "steward-2"]).to_bytes())
    node_admin.update_trust(b_dir, v3_file, now=dt.datetime.now(dt.UTC))
    assert await b.refresh_trust()
    await _still_refused(federation, XC)

    # A peer still serving v2 is ignored: peers lag behind, that is no attack.
    assert await b.fetch_trust() is None
    assert b.context.trust.version == 3
    assert await _refusals(b) == []

    # v2 installed on purpose (a tricked operator): refused as a rollback, and audited.
    v2_file = tmp_path / "v2.pb"
    v2_file.write_bytes(old[1].to_bytes())
    with pytest.raises(TrustListError, match="not newer than the held version 3"):
        node_admin.update_trust(b_dir, v2_file, now=dt.datetime.now(dt.UTC))
    # So is another v3, signed by the threshold, but not the one held.
    other_v3 = _successor(tmp_path)
    other_file = tmp_path / "v3-other.pb"
    other_file.write_bytes(_sign(tmp_path, other_v3, ["steward-2", "steward-3"]).to_bytes())
    with pytest.raises(TrustListError, match="rollback refused"):
        node_admin.update_trust(b_dir, other_file, now=dt.datetime.now(dt.UTC))

    assert not await b.refresh_trust()
    assert b.context.trust.version == 3
    assert await _stored_versions(b) == [*stored, 3]
    refusals = await _refusals(b)
    assert [r["reason"].split(" (")[0] for r in refusals] == [
        "trust list version 2 is not newer than the held version 3",
        "trust list version 3 is not newer than the held version 3",
    ]
    assert {r["actor"] for r in refusals} == {"admin"}
    await _still_refused(federation, XC)


# --- fast-forward with a compromised key -----------------------------------------------------


async def test_fast_forward_signed_with_a_compromised_steward_key_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    """steward-3's key is stolen. The attacker jumps the version to 2**62 (so the stewards'
    next lists would look like rollbacks) and hands the federation to a steward set of
    their own, with a threshold of one, that its own keys satisfy."""
    attacker = ed25519.Ed25519PrivateKey.generate()
    stolen = _steward(tmp_path, "steward-3")
    forged = _successor(
        tmp_path,
        version=2**62,
        stewards=(
            steward_from_key("attacker", attacker.public_key()),
            steward_from_key("steward-3", stolen.public_key()),
        ),
        threshold=1,
    )
    # The stolen key alone, then with the attacker's own key besides.
    for signers in ([stolen], [stolen, attacker]):
        await _offered_and_refused(
            federation,
            _sign(tmp_path, forged, signers),
            "lacks the current stewards' threshold: 1 of 2 required steward signatures",
        )
    await _the_stewards_next_list_is_still_taken(federation, tmp_path)
    await _still_refused(federation, XC)


# --- under the threshold ---------------------------------------------------------------------


# Named cases: who signs (a steward's name, "outsider" for a key that is no steward's,
# "corrupt:<steward>" for that steward's signature with one bit flipped); what XB counts.
UNDER_THRESHOLD = {
    "one-steward": (["steward-3"], "1 of 2"),
    "no-signature": ([], "0 of 2"),
    "a-steward-and-an-outsider": (["steward-1", "outsider"], "1 of 2"),
    "second-signature-corrupt": (["steward-1", "corrupt:steward-2"], "1 of 2"),
}


async def test_a_list_signed_under_the_threshold_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    """The forged list would suspend XB's peer XC: not with fewer than two stewards."""
    forged = _suspending(tmp_path, federation.sim(XC).node_id)
    for name, (signers, count) in UNDER_THRESHOLD.items():
        signed = _sign(tmp_path, forged, [s for s in signers if ":" not in s and s != "outsider"])
        if "outsider" in signers:
            outsider = ed25519.Ed25519PrivateKey.generate()
            signed = signed.with_signature(*sign_trust_list(signed.body, outsider))
        for corrupt in (s.split(":")[1] for s in signers if s.startswith("corrupt:")):
            key_id, signature = sign_trust_list(signed.body, _steward(tmp_path, corrupt))
            signed = signed.with_signature(key_id, bytes([signature[0] ^ 1]) + signature[1:])
        try:
            await _offered_and_refused(
                federation, signed, f"lacks the current stewards' threshold: {count} required"
            )
        except AssertionError as failed:
            raise AssertionError(f"case {name}: {failed}") from failed
    await _the_stewards_next_list_is_still_taken(federation, tmp_path)


# --- the same key twice ----------------------------------------------------------------------


async def test_one_stewards_signature_twice_counts_once(
    federation: Federation, tmp_path: Path
) -> None:
    forged = _suspending(tmp_path, federation.sim(XC).node_id)
    signed = _sign(tmp_path, forged, ["steward-1", "steward-1"])
    assert len(signed.signatures) == 2
    await _offered_and_refused(federation, signed, "1 of 2 required steward signatures")


async def test_a_steward_key_listed_twice_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    """The list names steward-1's key twice (threshold 2) so that it alone would do."""
    one = _steward(tmp_path, "steward-1")
    forged = _successor(
        tmp_path,
        stewards=(
            steward_from_key("steward-1", one.public_key()),
            steward_from_key("steward-1-again", one.public_key()),
        ),
        threshold=2,
    )
    await _offered_and_refused(
        federation, _sign(tmp_path, forged, [one, one]), "a steward key is listed twice"
    )


async def test_a_node_key_listed_twice_is_refused(federation: Federation, tmp_path: Path) -> None:
    """A key listed twice for a node could stay usable through one entry once the other is
    revoked; even signed by the threshold, such a list is refused."""
    c_id = federation.sim(XC).node_id
    nodes = dict(_held(tmp_path).nodes)
    key = nodes[c_id].signing_keys[0]
    nodes[c_id] = dataclasses.replace(nodes[c_id], signing_keys=(key, key))
    forged = _successor(tmp_path, nodes=nodes)
    await _offered_and_refused(
        federation, _sign(tmp_path, forged, ["steward-1", "steward-2"]), "lists a key twice"
    )
