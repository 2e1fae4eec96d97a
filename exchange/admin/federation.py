"""What federation stewards do: create the federation, admit nodes, sign and publish.

The federation directory holds the CA, the stewards' keys (in a real
federation each steward keeps their own key elsewhere and signs in turn), and
every published trust list version. A change is prepared as a draft (version
N+1), signed by stewards one at a time, and published only when it passes the
same verification every node applies (`trust.verify_update`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
import tomllib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange import pki
from exchange.errors import ConfigError, NotFoundError, TrustListError, ValidationError
from exchange.ids import validate_country, validate_node_id
from exchange.keys import load_ed25519, write_private_key
from exchange.layout import FederationLayout
from exchange.trust import (
    ED25519,
    X25519,
    KeyInfo,
    SignedTrustList,
    TrustedNode,
    TrustList,
    sign_trust_list,
    steward_from_key,
    verify_update,
)

__all__ = [
    "FederationSettings",
    "add_node",
    "init_federation",
    "latest_published",
    "publish",
    "revoke_key",
    "sign_draft",
]

_STEWARD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclasses.dataclass(frozen=True)
class FederationSettings:
    """federation.toml"""

    federation_id: str
    threshold: int
    stewards: tuple[str, ...]
    validity_days: int = 90

    def write(self, path: Path) -> None:
        stewards = ", ".join(f'"{name}"' for name in self.stewards)
        path.write_text(
            "# Federation settings (exchange federation init).\n"
            f'federation_id = "{self.federation_id}"\n'
            "# Distinct steward signatures a trust list version needs.\n"
            f"threshold = {self.threshold}\n"
            f"stewards = [{stewards}]\n"
            "# Days a newly published trust list stays valid.\n"
            f"validity_days = {self.validity_days}\n"
        )

    @staticmethod
    def load(path: Path) -> FederationSettings:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: not found (run `exchange federation init`)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        known = {"federation_id", "threshold", "stewards", "validity_days"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]}")
        try:
            return FederationSettings(
                federation_id=str(data["federation_id"]),
                threshold=int(data["threshold"]),
                stewards=tuple(str(s) for s in data["stewards"]),
                validity_days=int(data.get("validity_days", 90)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc} is missing or of the wrong type") from None


def init_federation(
    directory: Path,
    *,
    federation_id: str,
    stewards: int,
    threshold: int,
    validity_days: int,
    passphrase: bytes | None,
    now: dt.datetime,
) -> TrustList:
    """Create the CA, `stewards` steward keys, and trust list version 1 (no nodes yet).

    Version 1 is signed by `threshold` stewards: it is the trust anchor every
    node installs at init.
    """
    layout = FederationLayout(directory)
    if layout.config.exists():
        raise ConfigError(f"{directory} already holds a federation")
    if not 1 <= threshold <= stewards:
        raise ValidationError("threshold", "must be between 1 and the number of stewards")
    if not 1 <= validity_days <= 3650:
        raise ValidationError("validity_days", "must be between 1 and 3650")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the CA key and the stewards' keys
    names = tuple(f"steward-{i}" for i in range(1, stewards + 1))
    ca_key = pki.new_tls_key()
    write_private_key(layout.ca_key, ca_key, passphrase)
    layout.ca_certificate.write_bytes(pki.pem(pki.new_ca(federation_id, ca_key, now)))
    keys = {name: ed25519.Ed25519PrivateKey.generate() for name in names}
    for name, key in keys.items():
        write_private_key(layout.steward_key(name), key, passphrase)
    FederationSettings(federation_id, threshold, names, validity_days).write(layout.config)
    first = TrustList(
        federation_id=federation_id,
        version=1,
        issued_at=now,
        expires_at=now + dt.timedelta(days=validity_days),
        stewards=tuple(steward_from_key(name, keys[name].public_key()) for name in names),
        threshold=threshold,
        nodes={},
    )
    signed = SignedTrustList(first.to_bytes(), ())
    for name in names[:threshold]:
        signed = signed.with_signature(*sign_trust_list(signed.body, keys[name]))
    verify_update(signed, None, now)
    layout.trust_lists.mkdir(parents=True, exist_ok=True)
    layout.trust_list(1).write_bytes(signed.to_bytes())
    return first


def latest_published(directory: Path) -> tuple[int, SignedTrustList]:
    """The highest published trust list version and its signed bytes."""
    layout = FederationLayout(directory)
    versions = sorted(
        int(path.stem[1:]) for path in layout.trust_lists.glob("v*.pb") if path.stem[1:].isdigit()
    )
    if not versions:
        raise ConfigError(f"{directory}: no published trust list (run `exchange federation init`)")
    return versions[-1], SignedTrustList.from_bytes(layout.trust_list(versions[-1]).read_bytes())


def _read_enrolment(path: Path, now: dt.datetime) -> TrustedNode:
    """The trust list entry described by a node's enrolment.json."""
    try:
        data = json.loads(path.read_text())
        node_id = validate_node_id(data["node_id"])
        country = validate_country(data["country"])
        signing = data["signing_key"]
        sealing = data["sealing_key"]
        return TrustedNode(
            node_id=node_id,
            country=country,
            authority_name=str(data.get("authority_name", "")),
            endpoint=str(data["endpoint"]),
            active=True,
            signing_keys=(
                KeyInfo(signing["key_id"], ED25519, base64.b64decode(signing["public_key"]), now),
            ),
            sealing_keys=(
                KeyInfo(sealing["key_id"], X25519, base64.b64decode(sealing["public_key"]), now),
            ),
            tls_certificate_sha256=bytes.fromhex(data["tls_certificate_sha256"]),
        )
    except FileNotFoundError:
        raise ConfigError(f"{path}: enrolment file not found") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid enrolment file ({exc})") from None


def _draft_base(directory: Path) -> tuple[int, TrustList]:
    """The latest published version, and what the next draft starts from."""
    layout = FederationLayout(directory)
    version, published = latest_published(directory)
    base = (
        SignedTrustList.from_bytes(layout.draft.read_bytes()).trust_list
        if layout.draft.exists()
        else published.trust_list
    )
    return version, base


def _write_draft(
    directory: Path, base: TrustList, version: int, nodes: dict[str, TrustedNode], now: dt.datetime
) -> TrustList:
    """Write the draft of `version` + 1 with `nodes`; its signatures start afresh."""
    layout = FederationLayout(directory)
    settings = FederationSettings.load(layout.config)
    draft = dataclasses.replace(
        base,
        version=version + 1,
        issued_at=now,
        expires_at=now + dt.timedelta(days=settings.validity_days),
        nodes=dict(sorted(nodes.items())),
    )
    # Checks the entries the same way a node will (key ids, sizes, pins, duplicates).
    TrustList.from_bytes(draft.to_bytes())
    layout.draft.write_bytes(SignedTrustList(draft.to_bytes(), ()).to_bytes())
    return draft


def _rotated(
    held: tuple[KeyInfo, ...], new: KeyInfo, overlap_end: dt.datetime
) -> tuple[KeyInfo, ...]:
    """`held` plus `new`; the keys it replaces stay valid until `overlap_end`."""
    if any(key.key_id == new.key_id for key in held):
        return held
    kept = tuple(
        key
        if key.not_after is not None or key.revoked_at is not None
        else dataclasses.replace(key, not_after=overlap_end)
        for key in held
    )
    return (*kept, new)


def add_node(
    directory: Path,
    enrolment: Path,
    *,
    now: dt.datetime,
    overlap: dt.timedelta = dt.timedelta(days=7),
) -> TrustList:
    """Add a node to the draft of the next trust list version, or update it.

    A node already listed keeps its keys: a new key in its enrolment (after
    `exchange node rotate-keys`) is added, valid from `now`, and the keys it
    replaces stay valid until `now + overlap` (rotation with overlap). The
    draft starts from the latest published version; adding to an existing
    draft keeps its other changes but drops its signatures (the body changed).
    """
    version, base = _draft_base(directory)
    node = _read_enrolment(enrolment, now)
    listed = base.nodes.get(node.node_id)
    if listed is not None:
        overlap_end = now + overlap
        node = dataclasses.replace(
            node,
            signing_keys=_rotated(listed.signing_keys, node.signing_keys[0], overlap_end),
            sealing_keys=_rotated(listed.sealing_keys, node.sealing_keys[0], overlap_end),
        )
    return _write_draft(directory, base, version, {**base.nodes, node.node_id: node}, now)


def revoke_key(
    directory: Path, node_id: str, key_id: str, *, at: dt.datetime, now: dt.datetime
) -> TrustList:
    """Revoke one of a node's keys from `at` on, in the draft of the next version.

    Anything signed with it is refused once `at` has passed; what was made
    before `at` (audit records, receipts) stays verifiable by its own time.

    Raises:
        NotFoundError: the node or the key is not in the trust list.
    """
    version, base = _draft_base(directory)
    listed = base.nodes.get(node_id)
    if listed is None:
        raise NotFoundError(f"node {node_id} is not in the trust list")

    def revoked(keys: tuple[KeyInfo, ...]) -> tuple[KeyInfo, ...]:
        return tuple(
            dataclasses.replace(key, revoked_at=at) if key.key_id == key_id else key for key in keys
        )

    if key_id not in {key.key_id for key in (*listed.signing_keys, *listed.sealing_keys)}:
        raise NotFoundError(f"node {node_id} has no key {key_id} in the trust list")
    node = dataclasses.replace(
        listed, signing_keys=revoked(listed.signing_keys), sealing_keys=revoked(listed.sealing_keys)
    )
    return _write_draft(directory, base, version, {**base.nodes, node_id: node}, now)


def remove_node(directory: Path, node_id: str, *, now: dt.datetime) -> TrustList:
    """Take a node out of the federation in the draft of the next version: suspended.

    It stays listed, keys and all, so that what it signed before (receipts,
    audit heads, notices on record) can still be verified; but no member sends
    to it or accepts anything from it once the version is adopted.

    Raises:
        NotFoundError: the node is not in the trust list.
        ValidationError: it is suspended already.
    """
    version, base = _draft_base(directory)
    listed = base.nodes.get(node_id)
    if listed is None:
        raise NotFoundError(f"node {node_id} is not in the trust list")
    if not listed.active:
        raise ValidationError("node_id", f"{node_id} is suspended already")
    suspended = dataclasses.replace(listed, active=False)
    return _write_draft(directory, base, version, {**base.nodes, node_id: suspended}, now)


def sign_draft(directory: Path, steward: str, passphrase: bytes | None) -> SignedTrustList:
    """Add one steward's signature to the draft."""
    layout = FederationLayout(directory)
    if not _STEWARD_NAME.fullmatch(steward):
        raise ValidationError("steward", "is not a steward name")
    if not layout.draft.exists():
        raise ConfigError(f"{directory}: no draft to sign (run `exchange federation add-node`)")
    draft = SignedTrustList.from_bytes(layout.draft.read_bytes())
    key = load_ed25519(layout.steward_key(steward), passphrase)
    signed = draft.with_signature(*sign_trust_list(draft.body, key))
    layout.draft.write_bytes(signed.to_bytes())
    return signed


def publish(directory: Path, *, now: dt.datetime) -> tuple[Path, TrustList]:
    """Publish the draft as the next version, if it passes a node's verification.

    Raises:
        TrustListError: under threshold, or otherwise not acceptable to nodes.
    """
    layout = FederationLayout(directory)
    if not layout.draft.exists():
        raise ConfigError(f"{directory}: no draft to publish")
    draft = SignedTrustList.from_bytes(layout.draft.read_bytes())
    _, current = latest_published(directory)
    try:
        accepted = verify_update(draft, current.trust_list, now)
    except TrustListError as exc:
        raise TrustListError(f"draft not published: {exc}") from None
    path = layout.trust_list(accepted.version)
    path.write_bytes(draft.to_bytes())
    layout.draft.unlink()
    return path, accepted
