"""The federation trust list: who the members are and which keys speak for them.

A trust list is versioned, expires, and is signed by a threshold of stewards.
The rules follow the TUF specification's handling of root metadata
(theupdateframework.io/specification, section 5.3 "Update the root role"):

1. The first list a node holds is its trust anchor, installed out of band by
   an admin; it must be signed by the threshold of its own stewards.
2. A newer list is valid only if signed by the threshold of the *current*
   list's stewards and by the threshold of its *own* stewards (5.3.4, 5.3.5),
   so neither a single compromised key nor a new steward set alone can take
   over the federation.
3. Each key counts once however many signatures carry its id.
4. The version must be higher than the one held (5.3.5: no rollback), and the
   list must not be expired (5.3.10).

Verification returns a `SignatureCheck` (which stewards signed, which did not,
which signatures were bad); `verify_update` raises one `TrustListError` naming
the rule that failed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from exchange import _wire
from exchange._encoding import encode
from exchange._proto.exchange.v1 import federation_pb2 as pb
from exchange.errors import TrustListError, ValidationError
from exchange.ids import validate_country, validate_node_id
from exchange.keys import ed25519_key_id, raw_public, x25519_key_id

__all__ = [
    "KeyInfo",
    "SignatureCheck",
    "SignedTrustList",
    "Steward",
    "TrustList",
    "TrustedNode",
    "check_signatures",
    "sign_trust_list",
    "signing_input",
    "steward_from_key",
    "verify_update",
]

_TAG = "exchange.v1.TrustList"
ED25519 = "ed25519"
X25519 = "x25519"
_ALGORITHMS = {pb.KEY_ALGORITHM_ED25519: ED25519, pb.KEY_ALGORITHM_X25519: X25519}


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """A node's public key and the window in which it may be used."""

    key_id: str
    algorithm: str
    public: bytes
    not_before: dt.datetime
    not_after: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    def valid_at(self, when: dt.datetime) -> bool:
        """Whether something made at `when` with this key is acceptable."""
        if when < self.not_before:
            return False
        if self.not_after is not None and when > self.not_after:
            return False
        return self.revoked_at is None or when < self.revoked_at

    def ed25519(self) -> ed25519.Ed25519PublicKey:
        assert self.algorithm == ED25519
        return ed25519.Ed25519PublicKey.from_public_bytes(self.public)

    def x25519(self) -> x25519.X25519PublicKey:
        assert self.algorithm == X25519
        return x25519.X25519PublicKey.from_public_bytes(self.public)


@dataclasses.dataclass(frozen=True)
class TrustedNode:
    """One member node as the trust list describes it."""

    node_id: str
    country: str
    authority_name: str
    endpoint: str
    active: bool
    signing_keys: tuple[KeyInfo, ...]
    sealing_keys: tuple[KeyInfo, ...]
    tls_certificate_sha256: bytes

    def signing_key(
        self, key_id: str, at: dt.datetime, *, now: dt.datetime | None = None
    ) -> KeyInfo | None:
        """The signing key `key_id` if something made with it at `at` is acceptable.

        Args:
            at: when the signer says it signed.
            now: when the signature is being checked on arrival. A revoked key
                is refused once `now` is past its revocation, whatever `at`
                claims: whoever holds a stolen key also chooses `at`, and could
                otherwise backdate. Evidence checked later (audit records) passes
                no `now` and is judged by `at` alone.
        """
        for key in self.signing_keys:
            if key.key_id != key_id or not key.valid_at(at):
                continue
            if now is not None and key.revoked_at is not None and now >= key.revoked_at:
                return None
            return key
        return None

    def current_signing_key(self, now: dt.datetime, held: Collection[str]) -> KeyInfo | None:
        """The signing key to sign with at `now`: the newest valid one among `held` key ids.

        During a rotation's overlap both keys are valid and the new one wins; a
        revoked or retired key is never chosen, so a backlog is re-signed with
        its successor.
        """
        valid = [
            key
            for key in self.signing_keys
            if key.key_id in held and self.signing_key(key.key_id, now, now=now) is not None
        ]
        return max(valid, key=lambda key: key.not_before, default=None)

    def sealing_key(self, at: dt.datetime) -> KeyInfo | None:
        """The newest sealing key valid at `at`: the one senders seal to."""
        valid = [key for key in self.sealing_keys if key.valid_at(at)]
        return max(valid, key=lambda key: key.not_before, default=None)


@dataclasses.dataclass(frozen=True)
class Steward:
    key_id: str
    name: str
    public: bytes

    def verifier(self) -> ed25519.Ed25519PublicKey:
        return ed25519.Ed25519PublicKey.from_public_bytes(self.public)


@dataclasses.dataclass(frozen=True)
class TrustList:
    """The parsed content of one trust list version."""

    federation_id: str
    version: int
    issued_at: dt.datetime
    expires_at: dt.datetime
    stewards: tuple[Steward, ...]
    threshold: int
    nodes: Mapping[str, TrustedNode]

    def node(self, node_id: str) -> TrustedNode | None:
        return self.nodes.get(node_id)

    def active_node(self, node_id: str) -> TrustedNode | None:
        node = self.nodes.get(node_id)
        return node if node is not None and node.active else None

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at

    def staleness(self, now: dt.datetime, max_age: dt.timedelta) -> str | None:
        """Why this list may no longer be used to send at `now`; None while it is fresh.

        Expiry is the stewards' limit; `max_age` is the node's own freshness
        limit (TUF's defence against freeze attacks: a node cut off from newer
        lists must notice, even while an old list has not yet expired).
        """
        if self.expired(now):
            return (
                f"trust list version {self.version} expired at {self.expires_at.isoformat()}; "
                "install a newer one"
            )
        if now - self.issued_at > max_age:
            return (
                f"trust list version {self.version} was issued at {self.issued_at.isoformat()}, "
                f"more than the freshness limit of {max_age.days} days ago; install a newer one"
            )
        return None

    def to_bytes(self) -> bytes:
        """The serialized `TrustList` that stewards sign."""
        return _to_proto(self).SerializeToString()

    @staticmethod
    def from_bytes(body: bytes) -> TrustList:
        """Parse and check the structure of a serialized `TrustList`.

        Raises:
            TrustListError: malformed bytes or an inconsistent list.
        """
        try:
            return _from_proto(_wire.parse(pb.TrustList, body))
        except _wire.MalformedError as exc:
            raise TrustListError("trust list is malformed") from exc
        except ValidationError as exc:
            raise TrustListError(f"trust list is inconsistent: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class SignedTrustList:
    """The exact bytes of a trust list and the stewards' signatures over them."""

    body: bytes
    signatures: tuple[tuple[str, bytes], ...]

    @property
    def trust_list(self) -> TrustList:
        return TrustList.from_bytes(self.body)

    def to_bytes(self) -> bytes:
        return self.to_proto().SerializeToString()

    def to_proto(self) -> pb.SignedTrustList:
        return pb.SignedTrustList(
            body=self.body,
            signatures=[
                pb.TrustListSignature(key_id=key_id, signature=signature)
                for key_id, signature in self.signatures
            ],
        )

    @staticmethod
    def from_proto(message: pb.SignedTrustList) -> SignedTrustList:
        return SignedTrustList(
            body=message.body,
            signatures=tuple((s.key_id, s.signature) for s in message.signatures),
        )

    @staticmethod
    def from_bytes(data: bytes) -> SignedTrustList:
        try:
            return SignedTrustList.from_proto(_wire.parse(pb.SignedTrustList, data))
        except _wire.MalformedError as exc:
            raise TrustListError("signed trust list is malformed") from exc

    def with_signature(self, key_id: str, signature: bytes) -> SignedTrustList:
        """This list with one more signature (replacing an earlier one by the same key)."""
        kept = tuple((k, s) for k, s in self.signatures if k != key_id)
        return SignedTrustList(self.body, (*kept, (key_id, signature)))


@dataclasses.dataclass(frozen=True)
class SignatureCheck:
    """Which stewards validly signed a trust list body.

    Attributes:
        threshold: how many distinct stewards must sign.
        signed: stewards whose signature verified (each counted once).
        unsigned: stewards with no valid signature.
        invalid: key ids whose signature failed, or that are not stewards.
    """

    threshold: int
    signed: frozenset[str]
    unsigned: frozenset[str]
    invalid: frozenset[str]

    @property
    def ok(self) -> bool:
        return len(self.signed) >= self.threshold

    def describe(self) -> str:
        return f"{len(self.signed)} of {self.threshold} required steward signatures" + (
            f"; bad or unknown: {', '.join(sorted(self.invalid))}" if self.invalid else ""
        )


def signing_input(body: bytes) -> bytes:
    """The exact bytes a steward signs for `body`."""
    return encode(_TAG, body)


def sign_trust_list(body: bytes, key: ed25519.Ed25519PrivateKey) -> tuple[str, bytes]:
    """One steward's signature over `body`: (key id, signature)."""
    return ed25519_key_id(key.public_key()), key.sign(signing_input(body))


def check_signatures(
    body: bytes,
    signatures: Iterable[tuple[str, bytes]],
    stewards: Iterable[Steward],
    threshold: int,
) -> SignatureCheck:
    """Count the distinct stewards whose signature over `body` verifies."""
    by_id = {steward.key_id: steward for steward in stewards}
    message = signing_input(body)
    signed: set[str] = set()
    invalid: set[str] = set()
    for key_id, signature in signatures:
        steward = by_id.get(key_id)
        if steward is None:
            invalid.add(key_id)
            continue
        try:
            steward.verifier().verify(signature, message)
        except InvalidSignature:
            invalid.add(key_id)
        else:
            signed.add(key_id)
    return SignatureCheck(
        threshold=threshold,
        signed=frozenset(signed),
        unsigned=frozenset(by_id) - signed,
        invalid=frozenset(invalid - signed),
    )


def verify_update(
    candidate: SignedTrustList, current: TrustList | None, now: dt.datetime
) -> TrustList:
    """Verify `candidate` as the successor of `current` (or as the trust anchor).

    Args:
        candidate: the list offered.
        current: the newest list this node holds, or None to install an anchor.
        now: the time to check expiry against.

    Returns:
        The verified list.

    Raises:
        TrustListError: naming the rule the candidate breaks.
    """
    new = candidate.trust_list
    if current is not None:
        if new.federation_id != current.federation_id:
            raise TrustListError(
                f"trust list is for federation {new.federation_id!r}, not {current.federation_id!r}"
            )
        if new.version <= current.version:
            raise TrustListError(
                f"trust list version {new.version} is not newer than the held "
                f"version {current.version} (rollback refused)"
            )
        by_current = check_signatures(
            candidate.body, candidate.signatures, current.stewards, current.threshold
        )
        if not by_current.ok:
            raise TrustListError(
                f"trust list version {new.version} lacks the current stewards' threshold: "
                + by_current.describe()
            )
    by_own = check_signatures(candidate.body, candidate.signatures, new.stewards, new.threshold)
    if not by_own.ok:
        raise TrustListError(
            f"trust list version {new.version} lacks its own stewards' threshold: "
            + by_own.describe()
        )
    if new.expired(now):
        raise TrustListError(
            f"trust list version {new.version} expired at {new.expires_at.isoformat()}"
        )
    return new


# --- protobuf <-> domain -------------------------------------------------------------------


def _key_from_proto(message: pb.NodeKey, field: str) -> KeyInfo:
    algorithm = _ALGORITHMS.get(message.algorithm)
    if algorithm is None:
        raise ValidationError(f"{field}.algorithm", "unknown key algorithm")
    try:
        expected_id = (
            ed25519_key_id(ed25519.Ed25519PublicKey.from_public_bytes(message.public_key))
            if algorithm == ED25519
            else x25519_key_id(x25519.X25519PublicKey.from_public_bytes(message.public_key))
        )
    except ValueError:
        raise ValidationError(f"{field}.public_key", "must be a 32-byte public key") from None
    if message.key_id != expected_id:
        raise ValidationError(f"{field}.key_id", "does not match the public key")
    not_before = _wire.optional_time(message, "not_before", f"{field}.not_before")
    if not_before is None:
        raise ValidationError(f"{field}.not_before", "is required")
    return KeyInfo(
        key_id=message.key_id,
        algorithm=algorithm,
        public=message.public_key,
        not_before=not_before,
        not_after=_wire.optional_time(message, "not_after", f"{field}.not_after"),
        revoked_at=_wire.optional_time(message, "revoked_at", f"{field}.revoked_at"),
    )


def _node_from_proto(message: pb.NodeEntry, field: str) -> TrustedNode:
    validate_node_id(message.node_id, f"{field}.node_id")
    validate_country(message.country, f"{field}.country")
    if message.status == pb.NODE_STATUS_UNSPECIFIED:
        raise ValidationError(f"{field}.status", "is required")
    signing = tuple(
        _key_from_proto(k, f"{field}.signing_keys[{i}]") for i, k in enumerate(message.signing_keys)
    )
    sealing = tuple(
        _key_from_proto(k, f"{field}.sealing_keys[{i}]") for i, k in enumerate(message.sealing_keys)
    )
    if any(k.algorithm != ED25519 for k in signing) or not signing:
        raise ValidationError(f"{field}.signing_keys", "must be one or more Ed25519 keys")
    if any(k.algorithm != X25519 for k in sealing) or not sealing:
        raise ValidationError(f"{field}.sealing_keys", "must be one or more X25519 keys")
    key_ids = [k.key_id for k in (*signing, *sealing)]
    if len(set(key_ids)) != len(key_ids):
        # A key listed twice could stay usable through one entry after the other is revoked.
        raise ValidationError(f"{field}", "lists a key twice")
    if len(message.tls_certificate_sha256) != 32:
        raise ValidationError(f"{field}.tls_certificate_sha256", "must be 32 bytes")
    return TrustedNode(
        node_id=message.node_id,
        country=message.country,
        authority_name=message.authority_name,
        endpoint=message.endpoint,
        active=message.status == pb.NODE_STATUS_ACTIVE,
        signing_keys=signing,
        sealing_keys=sealing,
        tls_certificate_sha256=message.tls_certificate_sha256,
    )


def _from_proto(message: pb.TrustList) -> TrustList:
    if not message.federation_id:
        raise ValidationError("federation_id", "is required")
    if message.version < 1:
        raise ValidationError("version", "must be 1 or more")
    issued_at = _wire.optional_time(message, "issued_at")
    expires_at = _wire.optional_time(message, "expires_at")
    if issued_at is None or expires_at is None or expires_at <= issued_at:
        raise ValidationError("expires_at", "issued_at and a later expires_at are required")
    stewards = []
    for i, entry in enumerate(message.stewards):
        try:
            key_id = ed25519_key_id(ed25519.Ed25519PublicKey.from_public_bytes(entry.public_key))
        except ValueError:
            key_id = None
        if entry.key_id != key_id:
            raise ValidationError(f"stewards[{i}]", "key id does not match a 32-byte Ed25519 key")
        stewards.append(Steward(entry.key_id, entry.name, entry.public_key))
    # Each key counts once: a steward listed twice would count twice.
    if len({s.key_id for s in stewards}) != len(stewards):
        raise ValidationError("stewards", "a steward key is listed twice")
    if not 1 <= message.threshold <= len(stewards):
        raise ValidationError("threshold", "must be between 1 and the number of stewards")
    nodes: dict[str, TrustedNode] = {}
    for i, node_entry in enumerate(message.nodes):
        node = _node_from_proto(node_entry, f"nodes[{i}]")
        if node.node_id in nodes:
            raise ValidationError(f"nodes[{i}].node_id", "is listed twice")
        nodes[node.node_id] = node
    return TrustList(
        federation_id=message.federation_id,
        version=message.version,
        issued_at=issued_at,
        expires_at=expires_at,
        stewards=tuple(stewards),
        threshold=message.threshold,
        nodes=nodes,
    )


def _key_to_proto(key: KeyInfo) -> pb.NodeKey:
    message = pb.NodeKey(
        key_id=key.key_id,
        algorithm=pb.KEY_ALGORITHM_ED25519 if key.algorithm == ED25519 else pb.KEY_ALGORITHM_X25519,
        public_key=key.public,
        not_before=_wire.timestamp(key.not_before),
    )
    if key.not_after is not None:
        message.not_after.CopyFrom(_wire.timestamp(key.not_after))
    if key.revoked_at is not None:
        message.revoked_at.CopyFrom(_wire.timestamp(key.revoked_at))
    return message


def _to_proto(trust_list: TrustList) -> pb.TrustList:
    return pb.TrustList(
        federation_id=trust_list.federation_id,
        version=trust_list.version,
        issued_at=_wire.timestamp(trust_list.issued_at),
        expires_at=_wire.timestamp(trust_list.expires_at),
        stewards=[
            pb.StewardKey(key_id=s.key_id, name=s.name, public_key=s.public)
            for s in trust_list.stewards
        ],
        threshold=trust_list.threshold,
        nodes=[
            pb.NodeEntry(
                node_id=node.node_id,
                country=node.country,
                authority_name=node.authority_name,
                endpoint=node.endpoint,
                status=pb.NODE_STATUS_ACTIVE if node.active else pb.NODE_STATUS_SUSPENDED,
                signing_keys=[_key_to_proto(k) for k in node.signing_keys],
                sealing_keys=[_key_to_proto(k) for k in node.sealing_keys],
                tls_certificate_sha256=node.tls_certificate_sha256,
            )
            for node in sorted(trust_list.nodes.values(), key=lambda n: n.node_id)
        ],
    )


def steward_from_key(name: str, key: ed25519.Ed25519PublicKey) -> Steward:
    """The trust list entry for a steward's public key."""
    return Steward(key_id=ed25519_key_id(key), name=name, public=raw_public(key))
