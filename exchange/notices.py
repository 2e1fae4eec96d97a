"""The notice catalogue: which body goes with which kind, and each type's rules.

A notice's content is the `exchange.v1.Notice` message of notices.proto; its
type defines what it may carry, and anything more is refused (OPSC art. 8:
minimal disclosure). `validate_notice` checks a notice before a node seals it
and again after a node opens one from a peer; it raises `ValidationError` with
the path of the offending field, e.g. "notice.case_referral.urgency".

Rules common to every type:
- exactly one body, whose kind matches the envelope header;
- child-protection flags present; an uncertain age never blocks a notice
  (OPSC art. 8(2));
- every code is one the catalogue defines (no unknown enum numbers);
- no unknown fields anywhere: nothing rides along that the policy did not see;
- free text is optional, short, and bounded per field.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import message as _message
from google.protobuf import unknown_fields

from exchange import _wire
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.errors import ValidationError, VerificationError, VerificationFailure

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

    Codes = _EnumTypeWrapper[Any]

__all__ = [
    "BODY_KINDS",
    "REPLY_RULES",
    "decode_notice",
    "encode_notice",
    "kind_name",
    "kind_of",
    "validate_notice",
    "validate_reply",
]

# Body field of `Notice` -> the header kind it travels under.
BODY_KINDS: Mapping[str, int] = {
    "case_referral": env_pb.NOTICE_KIND_CASE_REFERRAL,
    "assistance_request": env_pb.NOTICE_KIND_ASSISTANCE_REQUEST,
    "assistance_response": env_pb.NOTICE_KIND_ASSISTANCE_RESPONSE,
    "acknowledgement": env_pb.NOTICE_KIND_ACKNOWLEDGEMENT,
}

# Kinds that only exist as replies -> the kinds they may answer.
REPLY_RULES: Mapping[int, frozenset[int]] = {
    env_pb.NOTICE_KIND_ASSISTANCE_RESPONSE: frozenset({env_pb.NOTICE_KIND_ASSISTANCE_REQUEST}),
    env_pb.NOTICE_KIND_ACKNOWLEDGEMENT: frozenset(
        set(BODY_KINDS.values()) - {env_pb.NOTICE_KIND_ACKNOWLEDGEMENT}
    ),
}

MAX_NOTICE_BYTES = 256 * 1024
MAX_VICTIM_COUNT = 10_000
MAX_SUSPECT_TOKENS = 64
SUMMARY_CHARS = 500
REFERENCE_CHARS = 120
NOTE_CHARS = 200
MAX_DEADLINE = dt.timedelta(days=365)


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
    """Check that a reply-only kind answers a kind it may answer.

    Args:
        kind: the reply's kind.
        in_reply_to_kind: the kind of the notice answered, or None if none.
    """
    allowed = REPLY_RULES.get(kind)
    if allowed is None:
        return
    answers = " or ".join(sorted(kind_name(k) for k in allowed))
    if in_reply_to_kind is None:
        raise ValidationError("in_reply_to", f"{kind_name(kind)} must answer a {answers}")
    if in_reply_to_kind not in allowed:
        raise ValidationError(
            "in_reply_to",
            f"{kind_name(kind)} answers a {answers}, not a {kind_name(in_reply_to_kind)}",
        )


def validate_notice(notice: pb.Notice, *, now: dt.datetime) -> int:
    """Check `notice` against its type's rules.

    Returns:
        The notice's kind.

    Raises:
        ValidationError: naming the first offending field under "notice.".
    """
    kind = kind_of(notice)
    body = notice.WhichOneof("body")
    assert body is not None
    try:
        _no_unknown_fields(notice, "")
        _protection(notice.protection)
        _BODY_RULES[body](getattr(notice, body), now)
    except ValidationError as exc:
        raise exc.under("notice") from None
    return kind


# --- building blocks ---------------------------------------------------------------------------


def _no_unknown_fields(message: _message.Message, path: str) -> None:
    if len(unknown_fields.UnknownFieldSet(message)):
        raise ValidationError(path, "carries fields this catalogue does not define")
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        field = f"{path}.{descriptor.name}" if path else descriptor.name
        items = value if descriptor.is_repeated else [value]
        for i, item in enumerate(items):
            _no_unknown_fields(item, f"{field}[{i}]" if descriptor.is_repeated else field)


def _code(value: int, codes: Codes, field: str) -> None:
    if value == 0:
        raise ValidationError(field, "is required")
    if value not in codes.values():
        raise ValidationError(field, f"{value} is not a {codes.DESCRIPTOR.name} code")


def _codes(values: Iterable[int], codes: Codes, field: str, *, required: bool) -> None:
    seen: set[int] = set()
    for i, value in enumerate(values):
        _code(value, codes, f"{field}[{i}]")
        if value in seen:
            raise ValidationError(f"{field}[{i}]", "is listed twice")
        seen.add(value)
    if required and not seen:
        raise ValidationError(field, "at least one is required")


def _text(value: str, field: str, limit: int, *, required: bool = False) -> None:
    if required and not value.strip():
        raise ValidationError(field, "is required")
    if len(value) > limit:
        raise ValidationError(field, f"is longer than {limit} characters")
    # Unicode category Cc: C0 (but newline and tab), DEL and the C1 controls such as NEL.
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in value):
        raise ValidationError(field, "contains control characters")


def _contact(contact: pb.ContactPoint, field: str, *, present: bool) -> None:
    if not present:
        raise ValidationError(field, "is required")
    _text(contact.unit, f"{field}.unit", REFERENCE_CHARS, required=True)
    _text(contact.functional_channel, f"{field}.functional_channel", REFERENCE_CHARS)


def _protection(flags: pb.ChildProtectionFlags) -> None:
    # age_uncertain is deliberately never checked against anything: OPSC
    # art. 8(2) says uncertainty as to the victim's age must not prevent action.
    _code(flags.victim_identification, pb.VictimIdentification, "protection.victim_identification")


# --- one rule set per body ---------------------------------------------------------------------


def _case_referral(body: pb.CaseReferral, now: dt.datetime) -> None:
    _codes(body.offence_categories, pb.OffenceCategory, "offence_categories", required=True)
    _code(body.participation, pb.OffenceParticipation, "participation")
    _codes(body.jurisdiction_links, pb.JurisdictionLink, "jurisdiction_links", required=True)
    if body.HasField("victim_count") and body.victim_count > MAX_VICTIM_COUNT:
        raise ValidationError("victim_count", f"must be at most {MAX_VICTIM_COUNT}")
    for i, band in enumerate(body.victim_age_bands):
        _code(band, pb.AgeBand, f"victim_age_bands[{i}]")
    if body.HasField("victim_count") and len(body.victim_age_bands) > body.victim_count:
        raise ValidationError("victim_age_bands", "more age bands than victims")
    if len(body.victim_age_bands) > MAX_VICTIM_COUNT:
        raise ValidationError("victim_age_bands", f"at most {MAX_VICTIM_COUNT} entries")
    if len(body.suspect_tokens) > MAX_SUSPECT_TOKENS:
        raise ValidationError("suspect_tokens", f"at most {MAX_SUSPECT_TOKENS} tokens")
    for i, token in enumerate(body.suspect_tokens):
        if not 16 <= len(token) <= 64:
            raise ValidationError(f"suspect_tokens[{i}]", "must be 16 to 64 bytes")
    _code(body.urgency, pb.Urgency, "urgency")
    _contact(body.contact_point, "contact_point", present=body.HasField("contact_point"))
    _codes(body.requested_actions, pb.RequestedAction, "requested_actions", required=True)
    _text(body.summary, "summary", SUMMARY_CHARS)


def _assistance_request(body: pb.AssistanceRequest, now: dt.datetime) -> None:
    _code(body.legal_basis, pb.LegalBasis, "legal_basis")
    _text(body.legal_basis_reference, "legal_basis_reference", REFERENCE_CHARS)
    _codes(body.requested_measures, pb.AssistanceMeasure, "requested_measures", required=True)
    _codes(body.offence_categories, pb.OffenceCategory, "offence_categories", required=True)
    _code(body.urgency, pb.Urgency, "urgency")
    deadline = _wire.optional_time(body, "response_deadline")
    if deadline is None:
        raise ValidationError("response_deadline", "is required")
    if not now < deadline <= now + MAX_DEADLINE:
        raise ValidationError("response_deadline", "must be in the future, within 365 days")
    _contact(body.contact_point, "contact_point", present=body.HasField("contact_point"))
    _text(body.summary, "summary", SUMMARY_CHARS)


def _assistance_response(body: pb.AssistanceResponse, now: dt.datetime) -> None:
    _code(body.outcome, pb.AssistanceOutcome, "outcome")
    seen: set[int] = set()
    for i, result in enumerate(body.measure_results):
        _code(result.measure, pb.AssistanceMeasure, f"measure_results[{i}].measure")
        _code(result.status, pb.MeasureStatus, f"measure_results[{i}].status")
        if result.measure in seen:
            raise ValidationError(f"measure_results[{i}].measure", "is listed twice")
        seen.add(result.measure)
    needs_ground = body.outcome in (
        pb.ASSISTANCE_OUTCOME_REFUSED,
        pb.ASSISTANCE_OUTCOME_POSTPONED,
    )
    if needs_ground:
        _code(body.refusal_ground, pb.RefusalGround, "refusal_ground")
    elif body.refusal_ground:
        raise ValidationError("refusal_ground", "only for a refused or postponed request")
    _contact(body.contact_point, "contact_point", present=body.HasField("contact_point"))
    _text(body.summary, "summary", SUMMARY_CHARS)


def _acknowledgement(body: pb.Acknowledgement, now: dt.datetime) -> None:
    _code(body.status, pb.AcknowledgementStatus, "status")
    _text(body.note, "note", NOTE_CHARS)


def _under(
    prefix: str, rule: Callable[[_message.Message, dt.datetime], None]
) -> Callable[[_message.Message, dt.datetime], None]:
    def checked(body: _message.Message, now: dt.datetime) -> None:
        try:
            rule(body, now)
        except ValidationError as exc:
            raise exc.under(prefix) from None

    return checked


_BODY_RULES: Mapping[str, Callable[[_message.Message, dt.datetime], None]] = {
    "case_referral": _under("case_referral", _case_referral),  # type: ignore[arg-type]
    "assistance_request": _under("assistance_request", _assistance_request),  # type: ignore[arg-type]
    "assistance_response": _under("assistance_response", _assistance_response),  # type: ignore[arg-type]
    "acknowledgement": _under("acknowledgement", _acknowledgement),  # type: ignore[arg-type]
}
