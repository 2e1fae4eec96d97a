"""Evidence bundles checked offline: every part tampered with is refused, naming the part.

The honest bundle is XA's evidence about one notice it sent to XB: three of
the seven entries of XA's log, proven in a head XA signed over all seven, the
envelope and XB's receipt. Each named case changes one thing an attacker (or
a careless exporter) could change, and expects the step that catches it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest

from exchange import merkle
from exchange.audit import AuditRecord, LoggedEntry
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.envelope import Envelope
from exchange.errors import AuditError, TrustListError
from exchange.evidence import (
    Evidence,
    Part,
    ProvenEntry,
    covering_head,
    evidence_trust,
    verify_evidence,
)
from exchange.trust import TrustList

from ._builders import (
    T0,
    XA,
    XB,
    XC,
    NodeKeys,
    ed_key,
    envelope,
    federation,
    key_info,
    message_id,
    signed_by,
    signed_receipt,
    trust_list,
)

MESSAGE = message_id(1)
OTHER_MESSAGE = message_id(2)
ENVELOPE = envelope(msg_id=MESSAGE)
# Which message each of the log's seven entries is about ("" for none).
ABOUT = ["", MESSAGE, OTHER_MESSAGE, MESSAGE, "", MESSAGE, OTHER_MESSAGE]
ACTIONS = ["client.added", "notice.submitted", "notice.submitted", "notice.delivery_attempted"]
ACTIONS += ["trust_list.installed", "notice.delivered", "notice.submitted"]
ABOUT_MESSAGE = (2, 4, 6)


def entry(sequence: int, *, node: NodeKeys = XA) -> LoggedEntry:
    return LoggedEntry.of(
        sequence,
        AuditRecord(
            occurred_at=T0 + dt.timedelta(seconds=sequence),
            actor=f"node:{node.node_id}",
            action=ACTIONS[sequence - 1],
            message_id=ABOUT[sequence - 1],
            peer_node_id=XB.node_id if ABOUT[sequence - 1] else "",
            details={"n": str(sequence)},
        ),
    )


def log(node: NodeKeys = XA) -> list[LoggedEntry]:
    return [entry(sequence, node=node) for sequence in range(1, len(ABOUT) + 1)]


def path(entries: list[LoggedEntry], sequence: int, size: int) -> tuple[bytes, ...]:
    """The RFC 9162 inclusion path, computed from the leaves (as the store's subtrees hold it)."""
    leaves = [e.leaf_hash for e in entries]
    return tuple(
        merkle.root_of(leaves[start:end])
        for start, end in merkle.inclusion_ranges(sequence - 1, size)
    )


def head(
    entries: list[LoggedEntry],
    *,
    node: NodeKeys = XA,
    size: int | None = None,
    at: dt.datetime = T0 + dt.timedelta(minutes=1),
    key: NodeKeys | None = None,
) -> SignedTreeHead:
    size = len(entries) if size is None else size
    root = merkle.root_of([e.leaf_hash for e in entries[:size]])
    return SignedTreeHead.sign(TreeHead(node.node_id, size, root, at), (key or node).signing)


def bundle(node: NodeKeys = XA) -> Evidence:
    entries = log(node)
    return Evidence(
        node_id=node.node_id,
        message_id=MESSAGE,
        head=head(entries, node=node),
        entries=tuple(
            ProvenEntry(entries[s - 1], path(entries, s, len(entries))) for s in ABOUT_MESSAGE
        ),
        envelope=ENVELOPE,
        receipts=(signed_receipt(ENVELOPE),),
    )


BUNDLE = bundle()

Tamper = Callable[[Evidence], Evidence]


def flip(data: bytes, at: int = -1) -> bytes:
    flipped = bytearray(data)
    flipped[at] ^= 0x01
    return bytes(flipped)


def with_entry(index: int, change: Callable[[ProvenEntry], ProvenEntry]) -> Tamper:
    def apply(evidence: Evidence) -> Evidence:
        entries = list(evidence.entries)
        entries[index] = change(entries[index])
        return dataclasses.replace(evidence, entries=tuple(entries))

    return apply


def edit_entry(index: int, *, rehash: bool = False, **fields: object) -> Tamper:
    def change(proven: ProvenEntry) -> ProvenEntry:
        edited = dataclasses.replace(proven.entry, **fields)  # type: ignore[arg-type]
        if rehash:
            edited = dataclasses.replace(edited, leaf_hash=edited.expected_leaf_hash())
        return dataclasses.replace(proven, entry=edited)

    return with_entry(index, change)


def flip_path(index: int, hop: int) -> Tamper:
    def change(proven: ProvenEntry) -> ProvenEntry:
        hashes = list(proven.path)
        hashes[hop] = flip(hashes[hop])
        return dataclasses.replace(proven, path=tuple(hashes))

    return with_entry(index, change)


def with_head(signed: SignedTreeHead) -> Tamper:
    return lambda evidence: dataclasses.replace(evidence, head=signed)


def flip_envelope(part: str, at: int = -1) -> Tamper:
    def apply(evidence: Evidence) -> Evidence:
        assert evidence.envelope is not None
        changed = {part: flip(getattr(evidence.envelope, part), at)}
        return dataclasses.replace(evidence, envelope=dataclasses.replace(ENVELOPE, **changed))

    return apply


def with_envelope(replacement: Envelope) -> Tamper:
    return lambda evidence: dataclasses.replace(evidence, envelope=replacement)


def with_receipt(**fields: object) -> Tamper:
    return lambda evidence: dataclasses.replace(
        evidence, receipts=(signed_receipt(ENVELOPE, **fields),)
    )


def a_foreign_entry(evidence: Evidence) -> Evidence:
    # Entry 3 is honestly logged and proven, but about another message.
    entries = log()
    foreign = ProvenEntry(entries[2], path(entries, 3, len(entries)))
    return dataclasses.replace(evidence, entries=(*evidence.entries, foreign))


TAMPERING = [
    # Step 1: the bundle's shape.
    pytest.param(
        lambda e: dataclasses.replace(e, entries=()),
        Part.BUNDLE,
        "no audit entries",
        id="no-entries",
    ),
    pytest.param(
        lambda e: dataclasses.replace(e, message_id=""),
        Part.BUNDLE,
        "names no message",
        id="envelope-in-a-proof",
    ),
    # Step 2: the head.
    pytest.param(
        with_head(dataclasses.replace(BUNDLE.head, signature=flip(BUNDLE.head.signature))),
        Part.HEAD,
        "bad signature",
        id="head-signature-flipped",
    ),
    pytest.param(
        with_head(head(log(), key=XB)),
        Part.HEAD,
        "key the trust list does not allow",
        id="head-signed-with-another-nodes-key",
    ),
    pytest.param(
        with_head(head(log(XB), node=XB)),
        Part.HEAD,
        "is for xb-node, not xa-node",
        id="head-of-another-nodes-log",
    ),
    pytest.param(
        with_head(head(log(), at=T0 - dt.timedelta(days=400))),
        Part.HEAD,
        "key the trust list does not allow",
        id="head-dated-before-its-key",
    ),
    pytest.param(
        with_head(
            dataclasses.replace(BUNDLE.head, text=BUNDLE.head.text.replace(b"\n7\n", b"\n8\n"))
        ),
        Part.HEAD,
        "bad signature",
        id="head-size-edited",
    ),
    # Step 3: the entries.
    pytest.param(
        edit_entry(1, actor="admin"),
        Part.ENTRY,
        "entry 4: its fields do not give its leaf hash",
        id="entry-field-edited",
    ),
    pytest.param(
        edit_entry(1, rehash=True, action="notice.withdrawn"),
        Part.ENTRY,
        "entry 4: inclusion proof fails: the proof leads to another root",
        id="entry-edited-and-rehashed",
    ),
    pytest.param(
        edit_entry(1, rehash=True, sequence=5),
        Part.ENTRY,
        "entry 5: inclusion proof fails",
        id="entry-moved-to-another-index",
    ),
    pytest.param(
        flip_path(0, 0), Part.ENTRY, "entry 2: inclusion proof fails", id="path-hash-flipped"
    ),
    pytest.param(
        flip_path(2, -1), Part.ENTRY, "entry 6: inclusion proof fails", id="last-path-hash-flipped"
    ),
    pytest.param(
        with_entry(0, lambda p: dataclasses.replace(p, path=p.path[:-1])),
        Part.ENTRY,
        "shorter than the tree is deep",
        id="path-truncated",
    ),
    pytest.param(
        with_head(head(log(), size=5)),
        Part.ENTRY,
        "entry 2: inclusion proof fails",
        id="head-of-an-earlier-tree",
    ),
    pytest.param(
        with_head(head(log()[:4] + log(XC)[4:])),
        Part.ENTRY,
        "entry 2: inclusion proof fails",
        id="head-over-another-history",
    ),
    pytest.param(
        a_foreign_entry,
        Part.ENTRY,
        f"entry 3: is about message '{OTHER_MESSAGE}', not {MESSAGE}",
        id="entry-of-another-message",
    ),
    # Step 4: the envelope.
    pytest.param(flip_envelope("header", 10), Part.ENVELOPE, "", id="envelope-header-byte-flipped"),
    pytest.param(
        flip_envelope("signature"), Part.ENVELOPE, "bad signature", id="envelope-signature-flipped"
    ),
    pytest.param(
        flip_envelope("sealed_payload"),
        Part.ENVELOPE,
        "payload digest mismatch",
        id="envelope-payload-byte-flipped",
    ),
    pytest.param(
        with_envelope(envelope(msg_id=OTHER_MESSAGE)),
        Part.ENVELOPE,
        f"is message {OTHER_MESSAGE}, not {MESSAGE}",
        id="envelope-of-another-message",
    ),
    pytest.param(
        with_envelope(envelope(msg_id=MESSAGE, signing_key=ed_key(9))),
        Part.ENVELOPE,
        "unknown, expired or revoked key",
        id="envelope-signed-with-a-key-not-in-the-list",
    ),
    # Step 5: the receipts.
    pytest.param(
        with_receipt(envelope_digest=bytes(32)),
        Part.RECEIPT,
        "receipt from xb-node: receipt does not match the envelope",
        id="receipt-over-another-digest",
    ),
    pytest.param(
        with_receipt(message_id=OTHER_MESSAGE),
        Part.RECEIPT,
        "receipt does not match the envelope",
        id="receipt-for-another-message",
    ),
    pytest.param(
        lambda e: dataclasses.replace(e, receipts=(signed_receipt(ENVELOPE, recipient=XC),)),
        Part.RECEIPT,
        "receipt from xc-node: not a recipient of the envelope",
        id="receipt-from-a-node-not-addressed",
    ),
    pytest.param(
        lambda e: dataclasses.replace(
            e,
            receipts=(
                dataclasses.replace(e.receipts[0], signature=XC.signing.sign(e.receipts[0].body)),
            ),
        ),
        Part.RECEIPT,
        "bad signature",
        id="receipt-re-signed-by-another-node",
    ),
    pytest.param(
        lambda e: dataclasses.replace(
            e, receipts=(dataclasses.replace(e.receipts[0], body=b"\xff"),)
        ),
        Part.RECEIPT,
        "malformed",
        id="receipt-body-garbled",
    ),
]


@pytest.mark.parametrize(("tamper", "part", "detail"), TAMPERING)
def test_a_tampered_bundle_is_refused_naming_the_part(
    tamper: Tamper, part: Part, detail: str
) -> None:
    check = verify_evidence(tamper(BUNDLE), federation())
    assert not check.ok
    assert check.failure is not None
    assert check.failure.part is part, check.failure
    assert detail in check.failure.detail
    with pytest.raises(AuditError, match=f"evidence does not verify: {part.value}: "):
        check.raise_for_failure()


def test_the_honest_bundle_verifies_every_part() -> None:
    check = verify_evidence(BUNDLE, federation())
    assert check.ok, check.failure
    assert check.head is not None
    assert (check.head.node_id, check.head.size) == (XA.node_id, len(ABOUT))
    # One head, three entries, the envelope, one receipt.
    assert len(check.passed) == 6
    assert check.passed[1:4] == (
        "entry 2 (notice.submitted) is in the head's tree",
        "entry 4 (notice.delivery_attempted) is in the head's tree",
        "entry 6 (notice.delivered) is in the head's tree",
    )
    assert check.passed[-1] == "receipt from xb-node signed over this envelope's digest, accepted"
    check.raise_for_failure()


def test_the_recipients_bundle_verifies_too() -> None:
    # XB's evidence about the same message: its log, its head, the same envelope.
    assert verify_evidence(bundle(XB), federation()).ok


def test_a_bundle_of_a_node_that_neither_sent_nor_received_the_envelope_is_refused() -> None:
    check = verify_evidence(bundle(XC), federation())
    assert check.failure is not None
    assert (check.failure.part, check.failure.detail) == (
        Part.ENVELOPE,
        "was neither sent nor received by xc-node",
    )


def test_the_first_failure_is_named_and_the_checks_before_it_are_kept() -> None:
    check = verify_evidence(with_receipt(envelope_digest=bytes(32))(BUNDLE), federation())
    assert len(check.passed) == 5
    assert check.failure is not None
    assert check.failure.part is Part.RECEIPT


def test_a_single_entry_proof_needs_no_message() -> None:
    entries = log()
    proof = Evidence(XA.node_id, "", head(entries), (ProvenEntry(entries[2], path(entries, 3, 7)),))
    check = verify_evidence(proof, federation())
    assert check.ok, check.failure
    assert check.passed[-1] == "entry 3 (notice.submitted) is in the head's tree"


def test_a_purged_notice_is_proven_without_its_envelope() -> None:
    purged = dataclasses.replace(BUNDLE, envelope=None)
    check = verify_evidence(purged, federation())
    assert check.ok, check.failure
    assert check.passed[-1].endswith("envelope absent, its digest not checked")
    # The receipt's signature is still checked.
    forged = dataclasses.replace(
        purged, receipts=(dataclasses.replace(purged.receipts[0], signature=bytes(64)),)
    )
    assert verify_evidence(forged, federation()).failure is not None


def revoked(node: NodeKeys, at: dt.datetime) -> TrustList:
    """The federation after `node`'s signing key was revoked at `at`."""
    signing = key_info(node.signing.public_key(), revoked_at=at)
    nodes = [n.trusted() for n in (XA, XB, XC) if n != node]
    return trust_list([*nodes, node.trusted(signing_keys=[signing])], version=2)


KEY_REVOCATION = [
    # Evidence is judged at its own time: signed before the revocation, it stands.
    pytest.param(T0 + dt.timedelta(days=30), True, id="revoked-after-signing"),
    pytest.param(T0 - dt.timedelta(days=1), False, id="revoked-before-signing"),
]


@pytest.mark.parametrize(("revoked_at", "verifies"), KEY_REVOCATION)
def test_a_head_is_judged_by_its_keys_validity_at_its_own_time(
    revoked_at: dt.datetime, verifies: bool
) -> None:
    check = verify_evidence(BUNDLE, revoked(XA, revoked_at))
    assert check.ok is verifies
    if not verifies:
        assert check.failure is not None
        assert check.failure.part is Part.HEAD


def test_an_expired_trust_list_still_judges_old_evidence() -> None:
    expired = trust_list(
        [XA.trusted(), XB.trusted(), XC.trusted()],
        issued_at=T0 - dt.timedelta(days=200),
        expires_at=T0 - dt.timedelta(days=100),
    )
    listed = evidence_trust(signed_by(expired, 1, 2))
    assert listed.expired(T0)
    assert verify_evidence(BUNDLE, listed).ok


TRUST_FILES = [
    pytest.param((1,), "1 of 2 required steward signatures", id="under-threshold"),
    pytest.param((), "0 of 2 required steward signatures", id="unsigned"),
]


@pytest.mark.parametrize(("stewards", "message"), TRUST_FILES)
def test_a_trust_list_short_of_its_own_threshold_is_refused(
    stewards: tuple[int, ...], message: str
) -> None:
    with pytest.raises(TrustListError, match=message):
        evidence_trust(signed_by(federation(), *stewards))


def test_a_trust_list_signed_by_strangers_is_refused() -> None:
    signed = signed_by(federation(), 1, 2)
    forged = dataclasses.replace(
        signed, signatures=((signed.signatures[0][0], bytes(64)), signed.signatures[1])
    )
    with pytest.raises(TrustListError, match="bad or unknown"):
        evidence_trust(forged)


COVERING = [
    pytest.param(None, 1, False, id="no-head-yet"),
    pytest.param(7, 7, True, id="head-at-the-entry"),
    pytest.param(7, 3, True, id="head-past-the-entry"),
    pytest.param(5, 6, False, id="entry-after-the-head"),
]


@pytest.mark.parametrize(("size", "sequence", "covers"), COVERING)
def test_a_fresh_head_is_needed_only_when_the_newest_does_not_hold_the_entry(
    size: int | None, sequence: int, covers: bool
) -> None:
    latest = None if size is None else head(log(), size=size)
    assert covering_head(latest, sequence) == (latest if covers else None)


# --- a message signed anew after its sender's key was revoked ---------------------------------

# XB was served the first signing (and receipted it); XC the second, after the re-signing.
FIRST_SIGNING = envelope(msg_id=MESSAGE, recipients=(XB, XC))
SECOND_SIGNING = envelope(
    msg_id=MESSAGE,
    recipients=(XB, XC),
    sealed_payload=FIRST_SIGNING.sealed_payload,
    created_at=T0 + dt.timedelta(minutes=5),
)
RESIGNED = dataclasses.replace(
    BUNDLE,
    envelope=SECOND_SIGNING,
    superseded=(FIRST_SIGNING,),
    receipts=(signed_receipt(FIRST_SIGNING), signed_receipt(SECOND_SIGNING, recipient=XC)),
)


def test_receipts_over_a_superseded_signing_verify_with_it() -> None:
    check = verify_evidence(RESIGNED, federation())
    assert check.ok, check.failure
    assert any(line.startswith("superseded envelope signed by xa-node") for line in check.passed)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        pytest.param(
            lambda e: dataclasses.replace(e, superseded=()),
            "receipt from xb-node: receipt does not match the envelope",
            id="superseded-signing-left-out",
        ),
        pytest.param(
            lambda e: dataclasses.replace(
                e,
                superseded=(
                    envelope(msg_id=MESSAGE, recipients=(XB, XC), sealed_payload=b"other"),
                ),
            ),
            "another payload",
            id="superseded-signing-of-another-payload",
        ),
        pytest.param(
            lambda e: dataclasses.replace(
                e,
                superseded=(
                    dataclasses.replace(FIRST_SIGNING, signature=flip(FIRST_SIGNING.signature)),
                ),
            ),
            "bad signature",
            id="superseded-signing-forged",
        ),
        pytest.param(
            lambda e: dataclasses.replace(
                e, superseded=(envelope(msg_id=OTHER_MESSAGE, recipients=(XB, XC)),)
            ),
            f"not {MESSAGE}",
            id="superseded-signing-of-another-message",
        ),
    ],
)
def test_a_superseded_signing_is_held_to_the_envelope(change: Tamper, detail: str) -> None:
    check = verify_evidence(change(RESIGNED), federation())
    assert check.failure is not None
    assert detail in check.failure.detail, check.failure


@pytest.mark.parametrize("suspended", [XA, XB], ids=["sender-suspended", "recipient-suspended"])
def test_a_later_suspension_does_not_undo_earlier_evidence(suspended: NodeKeys) -> None:
    later = dataclasses.replace(
        federation(),
        nodes={
            node_id: dataclasses.replace(node, active=node_id != suspended.node_id)
            for node_id, node in federation().nodes.items()
        },
    )
    assert later.active_node(suspended.node_id) is None
    check = verify_evidence(BUNDLE, later)
    assert check.ok, check.failure
