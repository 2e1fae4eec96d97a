"""Composing an outgoing envelope: seal the notice for its recipients, sign the header.

Used by every path that sends: authority submissions and replies, and the
acknowledgements a node sends on its own (after applying a withdrawal). Pure:
keys, trust list and time are parameters; nothing is stored here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence

from exchange import notices
from exchange._proto.exchange.v1 import notices_pb2
from exchange.clock import Clock
from exchange.envelope import Envelope, Handling, Header, sign_envelope
from exchange.errors import PreconditionError
from exchange.identity import NodeIdentity
from exchange.ids import new_message_id
from exchange.seal import SUITE, SealRecipient, seal
from exchange.trust import TrustList

__all__ = ["Composed", "compose", "reachable", "resign", "resigned_copy", "sealing_recipients"]


@dataclasses.dataclass(frozen=True)
class Composed:
    header: Header
    envelope: Envelope


def sealing_recipients(
    trust: TrustList, recipients: tuple[str, ...], now: dt.datetime
) -> list[SealRecipient]:
    """Each recipient's current sealing key from the trust list.

    Raises:
        PreconditionError: a recipient is not an active node with a valid key.
    """
    sealed_to = []
    for i, node_id in enumerate(recipients):
        node = trust.active_node(node_id)
        key = node.sealing_key(now) if node is not None else None
        if node is None or key is None:
            raise PreconditionError(
                f"recipient_node_ids[{i}]: {node_id} is not an active node with a valid "
                f"sealing key in trust list version {trust.version}"
            )
        sealed_to.append(SealRecipient(node_id, key.key_id, key.x25519()))
    return sealed_to


def reachable(trust: TrustList, recipients: Sequence[str], now: dt.datetime) -> tuple[str, ...]:
    """Those of `recipients` that are active nodes with a valid sealing key."""
    return tuple(
        node_id
        for node_id in recipients
        if (node := trust.active_node(node_id)) is not None and node.sealing_key(now) is not None
    )


def compose(
    *,
    identity: NodeIdentity,
    trust: TrustList,
    clock: Clock,
    recipients: tuple[str, ...],
    notice: notices_pb2.Notice,
    kind: int,
    case_reference: str,
    handling: Handling,
    ttl: dt.timedelta,
    in_reply_to: str = "",
    message_id: str = "",
) -> Composed:
    """Seal `notice` for `recipients` and sign its header, as `identity`'s node.

    Args:
        message_id: chosen beforehand when something else is bound to it (a
            held-back section, a decision); a new one if empty.
    """
    now = clock.now()
    sealed_to = sealing_recipients(trust, recipients, now)
    key_id, signing_key = identity.signer(trust, now)
    message_id = message_id or new_message_id(clock, identity.node_id)
    sealed = seal(
        notices.encode_notice(notice),
        message_id=message_id,
        sender_node_id=identity.node_id,
        recipients=sealed_to,
    )
    header = Header(
        message_id=message_id,
        sender_node_id=identity.node_id,
        sender_key_id=key_id,
        recipient_node_ids=recipients,
        created_at=now,
        expires_at=now + ttl,
        kind=kind,
        case_reference=case_reference,
        in_reply_to=in_reply_to,
        handling=handling,
        payload_digest=hashlib.sha256(sealed).digest(),
        seal_suite=SUITE,
    )
    return Composed(header, sign_envelope(header, sealed, signing_key))


def resign(
    envelope: Envelope, *, identity: NodeIdentity, trust: TrustList, now: dt.datetime
) -> Envelope | None:
    """The envelope signed anew if the key that signed it is no longer accepted at `now`.

    A queued envelope whose key was revoked (or retired) while it waited would
    be refused by every recipient. The new header differs only in the key id and
    `created_at` (the new signature is made now, and the new key may not have
    been valid when the envelope was first made); message id, recipients,
    expiry and the sealed payload stay, so recipients still deduplicate it.

    Returns:
        None if the envelope's signature is still acceptable as it is, or if it
        has expired (nothing to send: the delivery fails).

    Raises:
        PreconditionError: no key of this node is valid now.
    """
    header = Header.from_bytes(envelope.header)
    if header.expires_at <= now:
        return None
    entry = trust.node(identity.node_id)
    if entry is not None and entry.signing_key(header.sender_key_id, header.created_at, now=now):
        return None
    key_id, key = identity.signer(trust, now)
    renewed = dataclasses.replace(header, sender_key_id=key_id, created_at=now)
    return sign_envelope(renewed, envelope.sealed_payload, key)


def resigned_copy(original: Header, offered: Header) -> bool:
    """Whether `offered` is `original` signed anew by `resign` (the same message).

    Only the key id and `created_at` may differ; the payload digest binds the
    sealed content, so nothing a recipient stored or opened changes.
    """
    return (
        dataclasses.replace(
            offered, sender_key_id=original.sender_key_id, created_at=original.created_at
        )
        == original
    )
