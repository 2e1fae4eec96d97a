"""Authority clients: bearer tokens and roles.

A token is `exn_<client id>_<secret>`; the node stores only SHA-256 of the
secret (256 random bits need no slow hash), compares in constant time, and
shows the token once, when the client is created. Roles decide which calls a
client may make (authority.proto lists them); `admin` may make every call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable

from exchange.errors import AuthenticationError, PermissionDeniedError, ValidationError
from exchange.store.registry import ClientRecord

__all__ = ["PERMISSIONS", "ROLES", "Principal", "authenticate", "new_client", "parse_token"]

ROLES = frozenset({"submitter", "reader", "auditor", "admin"})

# Authority RPC -> the role that may call it.
PERMISSIONS = {
    "SubmitNotice": "submitter",
    "Respond": "submitter",
    "Acknowledge": "submitter",
    "Withdraw": "submitter",
    "DecideDisclosure": "submitter",
    "Forward": "submitter",
    "GetDeliveryStatus": "submitter",
    "ListInbox": "reader",
    "GetNotice": "reader",
    "WatchInbox": "reader",
    "ListOverdueRequests": "reader",
    "RegisterIdentifiers": "submitter",
    "Query": "reader",
    "ListAuditEntries": "auditor",
    "GetAuditHead": "auditor",
    "GetInclusionProof": "auditor",
    "GetConsistencyProof": "auditor",
}

_TOKEN = re.compile(r"^exn_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated authority client."""

    client_id: str
    name: str
    roles: frozenset[str]

    @property
    def actor(self) -> str:
        """How the audit log names this client."""
        return f"client:{self.name}"

    def require(self, method: str) -> None:
        """Raise PermissionDeniedError unless one of the roles allows `method`."""
        needed = PERMISSIONS.get(method)
        if "admin" in self.roles or (needed is not None and needed in self.roles):
            return
        raise PermissionDeniedError(
            f"client {self.name!r} lacks the {needed or 'admin'} role needed for {method}"
        )


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_client(name: str, roles: Iterable[str], now_ms: int) -> tuple[ClientRecord, str]:
    """A new client record and its token (shown once, never stored).

    Raises:
        ValidationError: bad name or unknown role.
    """
    if not _NAME.fullmatch(name):
        raise ValidationError("name", "must be 1 to 64 characters of a-z, 0-9 and '._-'")
    role_set = frozenset(roles)
    if not role_set or not role_set <= ROLES:
        raise ValidationError("role", f"must be one or more of {', '.join(sorted(ROLES))}")
    client_id = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    record = ClientRecord(
        client_id=client_id,
        name=name,
        roles=role_set,
        secret_hash=_hash(secret),
        created_at=now_ms,
        revoked_at=None,
    )
    return record, f"exn_{client_id}_{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """(client id, secret) of a well-formed token."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise AuthenticationError("malformed token")
    return match.group(1), match.group(2)


def authenticate(token: str, lookup: Callable[[str], ClientRecord | None]) -> Principal:
    """The principal a token belongs to.

    Raises:
        AuthenticationError: malformed, unknown, wrong or revoked token; the
            message does not say which.
    """
    client_id, secret = parse_token(token)
    record = lookup(client_id)
    # Compare even when the client is unknown, so timing does not tell.
    expected = record.secret_hash if record is not None else bytes(32)
    if not hmac.compare_digest(expected, _hash(secret)) or record is None:
        raise AuthenticationError("invalid token")
    if record.revoked_at is not None:
        raise AuthenticationError("invalid token")
    return Principal(client_id=record.client_id, name=record.name, roles=record.roles)
