"""Evidence bundles: what a node did with one message, checkable offline.

A bundle holds a head the node signed over its audit log, audit entries each
with an inclusion proof in that head (RFC 9162 2.1.3), the signed envelope
exactly as sent or received, and every signed receipt for it. Nothing in it is
taken on the node's word: `verify_evidence` needs only the federation's trust
list, and runs these steps in order, stopping at the first that fails:

    1. The bundle names a node and holds at least one entry.
    2. The head is the node's, signed with a key the trust list allows at the
       head's own time.
    3. Each entry's fields give its leaf hash, its inclusion proof leads from
       that leaf to the head's root, and it names the bundle's message.
    4. The envelope parses, its sender signed it with a key valid when it was
       made, its payload matches the signed digest, it is the bundle's message,
       and the node sent or received it. So does each superseded envelope (an
       earlier signing of the same message, replaced when the sender's key was
       revoked), which must carry the same payload.
    5. Each receipt is signed by a recipient of the envelope with a key valid
       when it signed, and states exactly the digest of the envelope or of one
       of its superseded signings.

What a bundle cannot show: that no entry about the message was left out (an
inclusion proof proves presence, not absence); the CLI says so.

Evidence is judged at its own time, never "now": a head or envelope signed
before a key was revoked stays provable after it (`TrustedNode.signing_key`),
and an old bundle stays checkable against an expired trust list
(`evidence_trust`) or one that has since suspended the sender or a recipient.
Everything here is pure; reading the store and the bundle file is the CLI's part.
"""

from __future__ import annotations

import dataclasses
import enum

from exchange import merkle
from exchange.audit import LoggedEntry
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.envelope import Envelope, Header, ReceivePolicy, check_envelope
from exchange.errors import AuditError, TrustListError, VerificationError
from exchange.receipt import Receipt, SignedReceipt, verify_receipt
from exchange.trust import SignedTrustList, TrustList, check_signatures

__all__ = [
    "Evidence",
    "EvidenceCheck",
    "EvidenceFailure",
    "Part",
    "ProvenEntry",
    "covering_head",
    "evidence_trust",
    "verify_evidence",
]


class Part(enum.Enum):
    """The part of a bundle a check is about."""

    BUNDLE = "bundle"
    HEAD = "head"
    ENTRY = "entry"
    ENVELOPE = "envelope"
    RECEIPT = "receipt"


@dataclasses.dataclass(frozen=True)
class ProvenEntry:
    """An audit entry and its inclusion path in the bundle's head.

    Attributes:
        path: from the leaf's sibling up to the root's other child.
    """

    entry: LoggedEntry
    path: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One node's evidence about one message (or, with no message, about one entry).

    Attributes:
        node_id: whose audit log the entries are from.
        message_id: the message every entry names; empty for a single-entry proof.
        head: a head signed by `node_id`, covering every entry.
        envelope: the envelope exactly as stored; None once purged, or in a proof.
        receipts: every signed receipt for the envelope, exactly as stored.
        superseded: earlier signings of the envelope (same payload), replaced
            when the sender's key was revoked; receipts may cover them.
    """

    node_id: str
    message_id: str
    head: SignedTreeHead
    entries: tuple[ProvenEntry, ...]
    envelope: Envelope | None = None
    receipts: tuple[SignedReceipt, ...] = ()
    superseded: tuple[Envelope, ...] = ()


@dataclasses.dataclass(frozen=True)
class EvidenceFailure:
    """The first check that failed: which part, and what was wrong with it."""

    part: Part
    detail: str

    def __str__(self) -> str:
        return f"{self.part.value}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class EvidenceCheck:
    """The outcome of `verify_evidence`.

    Attributes:
        passed: each check that passed, in words, in the order run.
        failure: the first check that failed, or None.
        head: the verified head, once step 2 has passed.
    """

    passed: tuple[str, ...]
    failure: EvidenceFailure | None = None
    head: TreeHead | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def raise_for_failure(self) -> None:
        """Raises: AuditError: naming the part that failed."""
        if self.failure is not None:
            raise AuditError(f"evidence does not verify: {self.failure}")


class _Failed(Exception):
    """Stops the steps at the first failure (never leaves this module)."""

    def __init__(self, part: Part, detail: str) -> None:
        super().__init__(detail)
        self.failure = EvidenceFailure(part, detail)


def evidence_trust(signed: SignedTrustList) -> TrustList:
    """The trust list to judge evidence with, once its own stewards' threshold is met.

    Expiry is deliberately not checked (unlike `trust.verify_update`): a list
    that has expired still says which keys were valid when old evidence was
    signed, and a court may check a bundle years later. Whoever verifies
    chooses which published list to trust; the threshold check only shows the
    file is that list as its stewards signed it.

    Raises:
        TrustListError: malformed, or short of its stewards' threshold.
    """
    listed = signed.trust_list
    check = check_signatures(signed.body, signed.signatures, listed.stewards, listed.threshold)
    if not check.ok:
        raise TrustListError(
            f"trust list version {listed.version} lacks its own stewards' threshold: "
            + check.describe()
        )
    return listed


def _listed_as_signers(trust: TrustList) -> TrustList:
    """`trust` with every listed node counted as a signer, suspended or not.

    Suspension stops a node's *new* messages; what it signed while its keys were
    valid stays its signature (key windows and revocations still apply, judged
    at each signature's own time), so a later list that suspends it must not
    make earlier evidence unverifiable.
    """
    return dataclasses.replace(
        trust,
        nodes={
            node_id: dataclasses.replace(node, active=True) for node_id, node in trust.nodes.items()
        },
    )


def covering_head(latest: SignedTreeHead | None, sequence: int) -> SignedTreeHead | None:
    """`latest` if its tree holds entry `sequence`; None when a fresh head must be signed."""
    if latest is None or TreeHead.parse(latest.text).size < sequence:
        return None
    return latest


def verify_evidence(evidence: Evidence, trust: TrustList) -> EvidenceCheck:
    """Run the module's five steps over `evidence`, stopping at the first failure.

    Args:
        trust: the federation's trust list (see `evidence_trust`).
    """
    passed: list[str] = []
    head: TreeHead | None = None
    trust = _listed_as_signers(trust)
    try:
        _check_shape(evidence)
        head = _check_head(evidence, trust)
        passed.append(
            f"head of {head.node_id} at size {head.size}, signed with a key valid at "
            f"{head.issued_at.isoformat()}"
        )
        for proven in evidence.entries:
            passed.append(_check_entry(proven, head, evidence.message_id))
        header = None
        if evidence.envelope is not None:
            header = _check_envelope(evidence.envelope, evidence, trust)
            passed.append(
                f"envelope {header.message_id} signed by {header.sender_node_id} "
                f"at {header.created_at.isoformat()}"
            )
        for earlier in evidence.superseded:
            passed.append(_check_superseded(earlier, evidence, trust))
        for signed in evidence.receipts:
            passed.append(_check_receipt(signed, evidence, header, trust))
    except _Failed as failed:
        return EvidenceCheck(tuple(passed), failed.failure, head)
    return EvidenceCheck(tuple(passed), None, head)


def _check_shape(evidence: Evidence) -> None:
    # Step 1: an empty bundle proves nothing, however well it is signed.
    if not evidence.node_id:
        raise _Failed(Part.BUNDLE, "names no node")
    if not evidence.entries:
        raise _Failed(Part.BUNDLE, "holds no audit entries")
    if not evidence.message_id and (evidence.envelope is not None or evidence.receipts):
        raise _Failed(Part.BUNDLE, "carries an envelope or receipts but names no message")


def _check_head(evidence: Evidence, trust: TrustList) -> TreeHead:
    # Step 2, with now=None: the head is judged at the time it claims.
    try:
        return evidence.head.verify(trust, evidence.node_id, now=None)
    except AuditError as exc:
        raise _Failed(Part.HEAD, str(exc)) from None


def _check_entry(proven: ProvenEntry, head: TreeHead, message_id: str) -> str:
    # Step 3: the leaf is recomputed from the fields, never taken as stored,
    # so an edited field cannot ride on the original leaf hash.
    entry = proven.entry
    name = f"entry {entry.sequence}"
    leaf = entry.expected_leaf_hash()
    if entry.leaf_hash != leaf:
        raise _Failed(Part.ENTRY, f"{name}: its fields do not give its leaf hash")
    try:
        merkle.verify_inclusion(leaf, entry.index, head.size, proven.path, head.root)
    except merkle.ProofError as exc:
        raise _Failed(Part.ENTRY, f"{name}: inclusion proof fails: {exc}") from None
    if message_id and entry.message_id != message_id:
        raise _Failed(
            Part.ENTRY, f"{name}: is about message {entry.message_id!r}, not {message_id}"
        )
    return f"{name} ({entry.action}) is in the head's tree"


def _check_envelope(envelope: Envelope, evidence: Evidence, trust: TrustList) -> Header:
    # Step 4. The receiving node's own checks, replayed at the envelope's own
    # time: the time rules then hold by construction, and what is judged is the
    # structure, the sender, its key at `created_at`, the signature over the
    # header bytes as stored and the payload digest. A recipient is passed only
    # because the check needs one; whose envelope it is, is checked below.
    try:
        header = Header.from_bytes(envelope.header)
    except VerificationError as exc:
        raise _Failed(Part.ENVELOPE, str(exc)) from None
    check = check_envelope(
        envelope,
        trust=trust,
        recipient_node_id=header.recipient_node_ids[0],
        peer_node_id=None,
        now=header.created_at,
        policy=ReceivePolicy(),
    )
    if not check.ok:
        assert check.failure is not None
        detail = f": {check.detail}" if check.detail else ""
        raise _Failed(Part.ENVELOPE, f"{check.failure.value}{detail}")
    if header.message_id != evidence.message_id:
        raise _Failed(Part.ENVELOPE, f"is message {header.message_id}, not {evidence.message_id}")
    if evidence.node_id not in (header.sender_node_id, *header.recipient_node_ids):
        raise _Failed(Part.ENVELOPE, f"was neither sent nor received by {evidence.node_id}")
    return header


def _check_superseded(earlier: Envelope, evidence: Evidence, trust: TrustList) -> str:
    # Step 4, for an earlier signing: the same checks, and the same sealed payload
    # (only the signature and its time may differ, never what was sent).
    if evidence.envelope is None:
        raise _Failed(Part.ENVELOPE, "a superseded envelope without the envelope it led to")
    header = _check_envelope(earlier, evidence, trust)
    current = Header.from_bytes(evidence.envelope.header)
    if earlier.sealed_payload != evidence.envelope.sealed_payload or (
        header.payload_digest != current.payload_digest
    ):
        raise _Failed(Part.ENVELOPE, "a superseded envelope carries another payload")
    return (
        f"superseded envelope signed by {header.sender_node_id} with key "
        f"{header.sender_key_id} at {header.created_at.isoformat()}"
    )


def _check_receipt(
    signed: SignedReceipt, evidence: Evidence, header: Header | None, trust: TrustList
) -> str:
    # Step 5. A receipt is judged at the time it was signed (`now=received_at`:
    # a key revoked later does not undo it).
    try:
        stated = Receipt.from_bytes(signed.body)
    except VerificationError as exc:
        raise _Failed(Part.RECEIPT, str(exc)) from None
    name = f"receipt from {stated.recipient_node_id}"
    if header is not None and stated.recipient_node_id not in header.recipient_node_ids:
        raise _Failed(Part.RECEIPT, f"{name}: not a recipient of the envelope")
    # Without the envelope (purged) there is no digest to hold the receipt to:
    # its signature and message are checked, and the result says so.
    digest = stated.envelope_digest if evidence.envelope is None else evidence.envelope.digest()
    if stated.envelope_digest in {e.digest() for e in evidence.superseded}:
        digest = stated.envelope_digest
    try:
        verify_receipt(
            signed,
            trust=trust,
            recipient_node_id=stated.recipient_node_id,
            message_id=evidence.message_id,
            envelope_digest=digest,
            now=stated.received_at,
        )
    except VerificationError as exc:
        raise _Failed(Part.RECEIPT, f"{name}: {exc}") from None
    verdict = "accepted" if stated.accepted else f"rejected ({stated.rejection_name})"
    if evidence.envelope is None:
        return f"{name} signed, {verdict}; envelope absent, its digest not checked"
    return f"{name} signed over this envelope's digest, {verdict}"
