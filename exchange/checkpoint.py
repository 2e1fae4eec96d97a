"""Signed tree heads: a node's signed statement of its audit log's size and root.

The head is a checkpoint in the spirit of the transparency-log checkpoint
format (c2sp.org/tlog-checkpoint): a short UTF-8 text, one value per line,

    opsc-exchange audit <node id>
    <tree size, decimal>
    <root hash, standard base64>
    <issued at, RFC 3339 UTC with milliseconds>

signed by the node's Ed25519 signing key over the tagged encoding of those exact
bytes (as every signature here: `exchange._encoding`). The text is what is
signed, stored and sent; it is parsed strictly, so one head has one encoding.

Whoever holds two heads of one node can check that the smaller tree is a prefix
of the larger (a consistency proof): a node that rewrote its history, or showed
two peers two different logs, is caught with its own signatures as evidence.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange._encoding import encode
from exchange.errors import AuditError
from exchange.keys import ed25519_key_id
from exchange.merkle import HASH_SIZE
from exchange.trust import TrustList

__all__ = ["MAX_TREE_SIZE", "SignedTreeHead", "TreeHead", "origin_of"]

_TAG = "exchange.v1.Checkpoint"
_ORIGIN_PREFIX = "opsc-exchange audit "
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
# Sizes are stored as signed 64-bit integers.
MAX_TREE_SIZE = 2**63 - 1


def origin_of(node_id: str) -> str:
    return _ORIGIN_PREFIX + node_id


def _format_time(when: dt.datetime) -> str:
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclasses.dataclass(frozen=True)
class TreeHead:
    """What a head says: whose log, how many entries, which root, when."""

    node_id: str
    size: int
    root: bytes
    issued_at: dt.datetime

    def to_text(self) -> bytes:
        root = base64.b64encode(self.root).decode()
        lines = [origin_of(self.node_id), str(self.size), root, _format_time(self.issued_at)]
        return ("\n".join(lines) + "\n").encode()

    @staticmethod
    def parse(text: bytes) -> TreeHead:
        """Parse checkpoint text, refusing anything but the one canonical form.

        Raises:
            AuditError: the text is not a well-formed checkpoint.
        """
        try:
            origin, size, root_b64, issued, end = text.decode("utf-8").split("\n")
            root = base64.b64decode(root_b64, validate=True)
        except (UnicodeDecodeError, ValueError, binascii.Error):
            raise AuditError("tree head is not a well-formed checkpoint") from None
        if (
            end
            or not origin.startswith(_ORIGIN_PREFIX)
            or not _SIZE.fullmatch(size)
            or len(root) != HASH_SIZE
            or not _TIME.fullmatch(issued)
        ):
            raise AuditError("tree head is not a well-formed checkpoint")
        try:
            issued_at = dt.datetime.strptime(issued, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            # Shaped like a time but not one (a 30th of February).
            raise AuditError("tree head is not a well-formed checkpoint") from None
        if int(size) > MAX_TREE_SIZE:
            raise AuditError("tree head claims more entries than any log can hold")
        head = TreeHead(
            node_id=origin.removeprefix(_ORIGIN_PREFIX),
            size=int(size),
            root=root,
            issued_at=issued_at.replace(tzinfo=dt.UTC),
        )
        if head.to_text() != text:
            raise AuditError("tree head is not in canonical form")
        return head


def _signing_input(text: bytes) -> bytes:
    return encode(_TAG, text)


@dataclasses.dataclass(frozen=True)
class SignedTreeHead:
    """Checkpoint text and the node's signature over it."""

    text: bytes
    key_id: str
    signature: bytes

    @staticmethod
    def sign(head: TreeHead, key: ed25519.Ed25519PrivateKey) -> SignedTreeHead:
        text = head.to_text()
        return SignedTreeHead(
            text, ed25519_key_id(key.public_key()), key.sign(_signing_input(text))
        )

    def verify(self, trust: TrustList, node_id: str, *, now: dt.datetime | None = None) -> TreeHead:
        """The head, once shown to be `node_id`'s and signed with a key valid when issued.

        Args:
            trust: the trust list that says which keys are the node's.
            node_id: whose head this must be (a head of another log is refused).
            now: when a head arrives live, pass the time: a key revoked by now is
                refused whatever time the head claims. Evidence checked later
                passes None and is judged at the head's own time, so heads
                signed before a revocation stay verifiable.

        Raises:
            AuditError: malformed, another node's, unknown or invalid key,
                or a bad signature.
        """
        head = TreeHead.parse(self.text)
        if head.node_id != node_id:
            raise AuditError(f"tree head is for {head.node_id}, not {node_id}")
        node = trust.node(node_id)
        key = None if node is None else node.signing_key(self.key_id, head.issued_at, now=now)
        if key is None:
            raise AuditError(
                f"tree head of {node_id} is signed with a key the trust list does not "
                "allow at its time"
            )
        try:
            key.ed25519().verify(self.signature, _signing_input(self.text))
        except InvalidSignature:
            raise AuditError(f"tree head of {node_id} has a bad signature") from None
        return head
