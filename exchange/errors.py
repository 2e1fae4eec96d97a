"""The one exception tree of the exchange.

Domain code raises these; the RPC layer turns them into gRPC status codes in
exactly one place (`exchange.rpc._status`), and the CLI into exit messages.
Messages say what was wrong without echoing secrets or content.

    ExchangeError
    ├── ConfigError              a config file, key file or directory is wrong
    ├── KeyMaterialError         a private key cannot be read (passphrase, format)
    ├── TrustListError           a trust list failed verification or is unusable
    ├── VerificationError        an envelope or receipt failed verification
    ├── AuditError               a tree head, proof or evidence bundle does not verify
    ├── ValidationError          a request or notice breaks a rule (names the field)
    ├── PreconditionError        the request is valid but cannot be done now
    ├── NotFoundError            the named object does not exist (for this caller)
    ├── ConflictError            an idempotency key was reused for different content
    ├── AuthenticationError      no or unknown credentials
    ├── PermissionDeniedError    authenticated, but not allowed
    ├── ResourceLimitError       a size or count limit was exceeded
    ├── StoreUnavailableError    the database cannot be reached or is locked; retry
    └── PeerUnreachableError     a peer node did not answer or answered with an error
"""

from __future__ import annotations

import enum

__all__ = [
    "AuditError",
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "ExchangeError",
    "KeyMaterialError",
    "NotFoundError",
    "PeerUnreachableError",
    "PermissionDeniedError",
    "PreconditionError",
    "ResourceLimitError",
    "StoreUnavailableError",
    "TrustListError",
    "ValidationError",
    "VerificationError",
    "VerificationFailure",
]


class ExchangeError(Exception):
    """Root of every error the exchange raises on purpose."""


class ConfigError(ExchangeError):
    """A configuration file, key or directory is missing or wrong."""


class KeyMaterialError(ExchangeError):
    """A private key cannot be loaded (wrong passphrase, bad format, bad mode)."""


class TrustListError(ExchangeError):
    """A trust list is unsigned, under threshold, expired, rolled back or malformed."""


class VerificationFailure(enum.Enum):
    """What exactly failed when verifying an envelope or a receipt.

    The RPC layer maps each failure to a status code; the sender of a failed
    envelope learns the category, never key material or internal state.
    """

    MALFORMED = "malformed"
    UNSUPPORTED_PROTOCOL = "unsupported protocol version"
    UNSUPPORTED_SUITE = "unsupported seal suite"
    UNKNOWN_SENDER = "unknown or inactive sender"
    UNKNOWN_KEY = "unknown, expired or revoked key"
    BAD_SIGNATURE = "bad signature"
    PAYLOAD_DIGEST_MISMATCH = "payload digest mismatch"
    SENDER_MISMATCH = "sender is not the authenticated peer"
    NOT_A_RECIPIENT = "this node is not a recipient"
    EXPIRED = "expired"
    CLOCK_SKEW = "created too far in the future"
    TOO_OLD = "older than the maximum message age"
    UNREADABLE_PAYLOAD = "payload cannot be opened"
    INVALID_NOTICE = "notice does not match its header or rules"
    RECEIPT_MISMATCH = "receipt does not match the envelope"


class VerificationError(ExchangeError):
    """An envelope or receipt failed verification.

    Attributes:
        failure: the check that failed.
    """

    def __init__(self, failure: VerificationFailure, detail: str = "") -> None:
        self.failure = failure
        self.detail = detail
        super().__init__(f"{failure.value}: {detail}" if detail else failure.value)


class AuditError(ExchangeError):
    """A signed tree head, an audit proof or an evidence bundle does not verify.

    The message says which check failed; for a peer's head it is evidence of
    a rewritten or split log.
    """


class ValidationError(ExchangeError):
    """A request or notice breaks a rule.

    Attributes:
        field: dotted path of the offending field, e.g. "notice.case_referral.urgency".
        reason: what was wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def under(self, prefix: str) -> ValidationError:
        """The same error with its field path placed under `prefix`."""
        parts = [part for part in (prefix, self.field) if part]
        return ValidationError(".".join(parts), self.reason)


class PreconditionError(ExchangeError):
    """The request is well formed but the node's state does not allow it."""


class NotFoundError(ExchangeError):
    """The named object does not exist, or is not visible to the caller."""


class ConflictError(ExchangeError):
    """An idempotency key was already used for a different request."""


class AuthenticationError(ExchangeError):
    """The caller presented no credentials, or unknown or revoked ones."""


class PermissionDeniedError(ExchangeError):
    """The caller is authenticated but its role does not allow the call."""


class ResourceLimitError(ExchangeError):
    """A size or count limit was exceeded."""


class StoreUnavailableError(ExchangeError):
    """The store cannot be reached or is busy; nothing was committed."""


class PeerUnreachableError(ExchangeError):
    """A peer node could not be reached, or answered a delivery with an error.

    `refused` says the peer answered (a refusal of that envelope): it is up.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
