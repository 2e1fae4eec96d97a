"""The notice catalogue: which body goes with which kind, and which notice answers which.

A notice's content is the `exchange.v1.Notice` message of notices.proto; what
each type may carry is its disclosure policy (`exchange.disclosure`), and
`validate_notice` applies it before a node seals a notice and again after a
node opens one from a peer.

Some kinds exist only in relation to another notice, named by the envelope's
`in_reply_to` (`REPLY_RULES`): a response answers a request of the other
side; a withdrawal takes back the withdrawing node's own notice; a disclosure
grant answers a disclosure request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from exchange import _wire
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.disclosure import POLICIES, check_notice
from exchange.errors import ValidationError, VerificationError, VerificationFailure

__all__ = [
    "BODY_KINDS",
    "MAX_NOTICE_BYTES",
    "REPLY_RULES",
    "REQUEST_KINDS",
    "ReplyRule",
    "decode_notice",
    "encode_notice",
    "kind_name",
    "kind_of",
    "response_deadline",
    "validate_notice",
    "validate_reply",
]

# Body field of `Notice` -> the header kind it travels under.
BODY_KINDS: Mapping[str, int] = {body: policy.kind for body, policy in POLICIES.items()}

_K = env_pb
# The kinds that carry a case; the others are protocol messages about a notice.
SUBSTANTIVE = frozenset(
    {
        _K.NOTICE_KIND_CASE_REFERRAL,
        _K.NOTICE_KIND_ASSISTANCE_REQUEST,
        _K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        _K.NOTICE_KIND_EXTRADITION_NOTICE,
        _K.NOTICE_KIND_SEIZURE_REQUEST,
        _K.NOTICE_KIND_SEIZURE_RESPONSE,
        _K.NOTICE_KIND_VICTIM_SUPPORT_COORDINATION,
        _K.NOTICE_KIND_TRAVEL_ALERT,
        _K.NOTICE_KIND_CONTENT_HASH_REFERRAL,
    }
)

# Requests with a response deadline -> the kind that answers them.
REQUEST_KINDS: Mapping[int, int] = {
    _K.NOTICE_KIND_ASSISTANCE_REQUEST: _K.NOTICE_KIND_ASSISTANCE_RESPONSE,
    _K.NOTICE_KIND_SEIZURE_REQUEST: _K.NOTICE_KIND_SEIZURE_RESPONSE,
}


@dataclasses.dataclass(frozen=True)
class ReplyRule:
    """What a reply-only kind may refer to.

    Attributes:
        answers: the kinds the notice named by in_reply_to may have.
        own: True if that notice must be the replying node's own (a
            withdrawal); False if it must come from the node replied to.
    """

    answers: frozenset[int]
    own: bool = False


REPLY_RULES: Mapping[int, ReplyRule] = {
    _K.NOTICE_KIND_ASSISTANCE_RESPONSE: ReplyRule(frozenset({_K.NOTICE_KIND_ASSISTANCE_REQUEST})),
    _K.NOTICE_KIND_SEIZURE_RESPONSE: ReplyRule(frozenset({_K.NOTICE_KIND_SEIZURE_REQUEST})),
    _K.NOTICE_KIND_ACKNOWLEDGEMENT: ReplyRule(
        frozenset(BODY_KINDS.values()) - {_K.NOTICE_KIND_ACKNOWLEDGEMENT}
    ),
    _K.NOTICE_KIND_WITHDRAWAL: ReplyRule(SUBSTANTIVE, own=True),
    _K.NOTICE_KIND_DISCLOSURE_REQUEST: ReplyRule(SUBSTANTIVE),
    _K.NOTICE_KIND_DISCLOSURE_GRANT: ReplyRule(frozenset({_K.NOTICE_KIND_DISCLOSURE_REQUEST})),
}

# The largest notice: a content hash referral of at most 500,000 hashes and 16 MiB of
# hash values, with at most 8 bytes of framing per entry (under 20 MB in all).
MAX_NOTICE_BYTES = 20 * 1024 * 1024


def kind_name(kind: int) -> str:
    """'NOTICE_KIND_CASE_REFERRAL' -> 'CASE_REFERRAL', for people and logs."""
    return env_pb.NoticeKind.Name(kind).removeprefix("NOTICE_KIND_")  # type: ignore[arg-type]


def kind_of(notice: pb.Notice) -> int:
    """The header kind of `notice`'s body."""
    body = notice.WhichOneof("body")
    if body is None:
        raise ValidationError("notice.body", "one notice body is required")
    return BODY_KINDS[body]


def encode_notice(notice: pb.Notice) -> bytes:
    return notice.SerializeToString()


def decode_notice(data: bytes) -> pb.Notice:
    """Parse opened content; a peer's undecodable content is an invalid notice."""
    if len(data) > MAX_NOTICE_BYTES:
        raise VerificationError(VerificationFailure.INVALID_NOTICE, "too large")
    try:
        return _wire.parse(pb.Notice, data)
    except _wire.MalformedError:
        raise VerificationError(VerificationFailure.INVALID_NOTICE, "undecodable") from None


def validate_reply(kind: int, in_reply_to_kind: int | None) -> None:
    """Check that a reply-only kind refers to a kind it may refer to.

    Args:
        kind: the reply's kind.
        in_reply_to_kind: the kind of the notice referred to, or None if none.
    """
    rule = REPLY_RULES.get(kind)
    if rule is None:
        return
    answers = " or ".join(sorted(kind_name(k) for k in rule.answers))
    if in_reply_to_kind is None:
        raise ValidationError("in_reply_to", f"{kind_name(kind)} must answer a {answers}")
    if in_reply_to_kind not in rule.answers:
        raise ValidationError(
            "in_reply_to",
            f"{kind_name(kind)} answers a {answers}, not a {kind_name(in_reply_to_kind)}",
        )


def validate_notice(notice: pb.Notice, *, now: dt.datetime) -> int:
    """Check `notice` against its type's disclosure policy; returns its kind.

    Raises:
        ValidationError: naming the first offending field under "notice.".
    """
    return check_notice(notice, now=now).kind


def response_deadline(notice: pb.Notice) -> dt.datetime | None:
    """When a request's answer is due; None for kinds that are not requests."""
    body = notice.WhichOneof("body")
    if body is None or BODY_KINDS[body] not in REQUEST_KINDS:
        return None
    return _wire.optional_time(getattr(notice, body), "response_deadline")
