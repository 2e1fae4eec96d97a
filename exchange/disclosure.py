"""The disclosure policy: what each notice type may carry, and nothing more (OPSC art. 8).

One `Policy` per notice type declares every field of its body as required,
allowed or refused; a field the policy does not allow is refused, so a field
added to the contract stays unusable until a policy admits it. Free text has a
length limit per field and is scanned for personal identifiers
(`exchange.scanner`); a field admits only the kinds of identifier it exists
for (a contact point's functional channel: an e-mail address or a phone number;
a premises reference: a street address). Cross-field rules (deadlines by
urgency, refusal grounds, hash sizes) are named functions of the policy.

A node checks a notice against its policy before sealing it and again after
opening one from a peer; every refusal is a `ValidationError` naming the field
path, e.g. "notice.case_referral.summary".

Staged disclosure: a notice may name restricted sections only by salted
commitments (`commit_section`); the content follows in a DisclosureGrant, and
the requester's node checks it against the originally signed commitment
(`section_matches`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import re
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

from google.protobuf import message as _message
from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from exchange import _wire
from exchange._encoding import tagged_digest
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.errors import ValidationError
from exchange.ids import validate_message_id, validate_node_id
from exchange.scanner import Identifier, check_free_text

__all__ = [
    "MAX_HASHES",
    "MAX_HASH_BYTES",
    "MAX_RESTRICTED_SECTIONS",
    "POLICIES",
    "Many",
    "Policy",
    "Text",
    "check_notice",
    "check_section",
    "commit_section",
    "field_paths",
    "readable_fields",
    "section_matches",
]

MAX_RESTRICTED_SECTIONS = 8
SECTION_CHARS = 2000
SUMMARY_CHARS = 500
REFERENCE_CHARS = 120
NOTE_CHARS = 200
MAX_VICTIM_COUNT = 10_000
MAX_DEADLINE = dt.timedelta(days=365)
# OPSC art. 8(1)(a), 10: urgent requests are answered in hours, others in days.
URGENT_DEADLINE = dt.timedelta(hours=72)
ORDINARY_DEADLINE = dt.timedelta(hours=24)
MAX_TRAVEL_WINDOW = dt.timedelta(days=90)
# 500,000 SHA-256 hashes (16,000,000 bytes) fit; larger perceptual hashes fit fewer.
# With per-entry framing (at most 8 bytes) a referral stays under MAX_NOTICE_BYTES.
MAX_HASH_BYTES = 16 * 2**20
MAX_HASHES = 500_000
# Item and section ids are labels ("i1", "s2"), never words: a word could carry a name.
_ID = re.compile(r"^[a-z]{1,3}[0-9]{1,4}$")
_LOCODE = re.compile(r"^[A-Z]{2}[A-Z2-9]{3}$")
_COMMITMENT_TAG = "exchange.v1.RestrictedSection"
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_URGENT = frozenset({pb.URGENCY_URGENT, pb.URGENCY_IMMEDIATE_RISK_TO_CHILD})
_CONTACT_CHANNEL = frozenset({Identifier.EMAIL, Identifier.PHONE})


@dataclasses.dataclass(frozen=True)
class Text:
    """A free-text field: its length limit and the identifiers it exists for."""

    chars: int
    required: bool = False
    identifiers: frozenset[Identifier] = frozenset()
    # False for ids and codes given as text (node ids, item ids, UN/LOCODEs):
    # they have formats of their own and are not scanned as prose.
    free: bool = True


@dataclasses.dataclass(frozen=True)
class Many:
    """A repeated field: how many items, and whether each must be distinct."""

    most: int
    least: int = 0
    distinct: bool = True


Check = Callable[[Any, dt.datetime], None]


@dataclasses.dataclass(frozen=True)
class Policy:
    """What one notice type may carry.

    Attributes:
        body: the `Notice.body` field of the type.
        required: field paths (dotted, relative to the body) that must be set.
        allowed: field paths that may be set.
        refused: every other field path of the body, named on purpose.
        texts: the limits of each string field among required and allowed.
        many: the limits of each repeated field among required and allowed.
        sizes: byte length ranges of bytes fields.
        checks: rules across fields.
        restricted_sections: whether the notice may name restricted sections.
    """

    kind: int
    body: str
    required: frozenset[str]
    allowed: frozenset[str]
    refused: frozenset[str]
    texts: Mapping[str, Text] = dataclasses.field(default_factory=dict)
    many: Mapping[str, Many] = dataclasses.field(default_factory=dict)
    sizes: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    restricted_sections: bool = False
    # Whether a recipient may forward it (protocol messages never travel on).
    forwardable: bool = True

    @property
    def name(self) -> str:
        return env_pb.NoticeKind.Name(self.kind).removeprefix("NOTICE_KIND_")  # type: ignore[arg-type]

    def permits(self, path: str) -> bool:
        return path in self.required or path in self.allowed


# --- checking a notice against its policy ---------------------------------------------------------


def check_notice(notice: pb.Notice, *, now: dt.datetime) -> Policy:
    """Check `notice` against the policy of its type; returns that policy.

    Args:
        now: the time deadlines and travel windows are judged against (the
            envelope's creation time when a node checks a peer's notice).

    Raises:
        ValidationError: the first rule broken, its field under "notice.".
    """
    body = notice.WhichOneof("body")
    if body is None:
        raise ValidationError("notice.body", "one notice body is required")
    policy = POLICIES[body]
    content = getattr(notice, body)
    try:
        _no_unknown_fields(notice, "")
        _check_envelope_fields(notice, policy)
        _walk(content, policy, "", body)
        try:
            for check in policy.checks:
                check(content, now)
        except ValidationError as exc:
            raise exc.under(body) from None
    except ValidationError as exc:
        raise exc.under("notice") from None
    return policy


def _no_unknown_fields(message: _message.Message, path: str) -> None:
    """Nothing may ride along that the policy did not see."""
    # One pass in C first: walking 500,000 hash entries in Python takes seconds.
    known = type(message)()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    if known.ByteSize() != message.ByteSize():
        _find_unknown_fields(message, path)


def _find_unknown_fields(message: _message.Message, path: str) -> None:
    if len(unknown_fields.UnknownFieldSet(message)):
        raise ValidationError(path, "carries fields this catalogue does not define")
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        field = f"{path}.{descriptor.name}" if path else descriptor.name
        items = value if descriptor.is_repeated else [value]
        for i, item in enumerate(items):
            _find_unknown_fields(item, f"{field}[{i}]" if descriptor.is_repeated else field)


def _check_envelope_fields(notice: pb.Notice, policy: Policy) -> None:
    """The Notice fields beside the body: protection flags, commitments, origin."""
    # age_uncertain is deliberately never checked against anything: OPSC
    # art. 8(2) says uncertainty as to the victim's age must not prevent action.
    _code(
        notice.protection.victim_identification,
        "protection.victim_identification",
        notice.protection.DESCRIPTOR.fields_by_name["victim_identification"],
    )
    sections = notice.restricted_sections
    if sections and not policy.restricted_sections:
        raise ValidationError("restricted_sections", f"is not allowed in {policy.name} notices")
    if len(sections) > MAX_RESTRICTED_SECTIONS:
        raise ValidationError("restricted_sections", f"at most {MAX_RESTRICTED_SECTIONS} sections")
    seen: set[str] = set()
    for i, commitment in enumerate(sections):
        where = f"restricted_sections[{i}]"
        if not _ID.fullmatch(commitment.section_id) or commitment.section_id in seen:
            raise ValidationError(f"{where}.section_id", "must be a unique short id such as s1")
        seen.add(commitment.section_id)
        _code(commitment.type, f"{where}.type", commitment.DESCRIPTOR.fields_by_name["type"])
        if len(commitment.commitment) != 32:
            raise ValidationError(f"{where}.commitment", "must be 32 bytes")
    if notice.HasField("forwarded_from"):
        if not policy.forwardable:
            raise ValidationError("forwarded_from", f"is not allowed in {policy.name} notices")
        origin = notice.forwarded_from
        validate_node_id(origin.origin_node_id, "forwarded_from.origin_node_id")
        validate_message_id(origin.origin_message_id, "forwarded_from.origin_message_id")


def _present(message: _message.Message, field: Any) -> bool:
    value = getattr(message, field.name)
    if field.is_repeated:
        return len(value) > 0
    if field.message_type is not None or field.has_presence:
        return message.HasField(field.name)
    return bool(value != field.default_value)


def _walk(message: _message.Message, policy: Policy, prefix: str, where: str) -> None:
    for field in message.DESCRIPTOR.fields:
        path = f"{prefix}{field.name}"
        at = f"{where}.{field.name}"
        if not _present(message, field):
            if path in policy.required:
                raise ValidationError(
                    at, "at least one is required" if field.is_repeated else "is required"
                )
            continue
        if not policy.permits(path):
            raise ValidationError(at, f"is not allowed in {policy.name} notices")
        value = getattr(message, field.name)
        if field.is_repeated:
            limits = policy.many[path]
            if len(value) > limits.most:
                raise ValidationError(at, f"at most {limits.most} entries")
            if len(value) < limits.least:
                raise ValidationError(at, f"at least {limits.least} entries")
            if field.message_type is not None and _flat_entries_pass(value, field, policy, path):
                continue
            seen: set[object] = set()
            for i, item in enumerate(value):
                _value(item, field, policy, path, f"{at}[{i}]")
                if limits.distinct:
                    key = (
                        item.SerializeToString(deterministic=True)
                        if field.message_type is not None
                        else item
                    )
                    if key in seen:
                        raise ValidationError(f"{at}[{i}]", "is listed twice")
                    seen.add(key)
        else:
            _value(value, field, policy, path, at)


# Scalar field types whose equal values always encode to equal bytes (not float: -0.0, NaN).
_FLAT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_ENUM,
        FieldDescriptor.TYPE_BYTES,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
    }
)


def _flat_entries_pass(entries: Any, field: Any, policy: Policy, path: str) -> bool:
    """Whether every entry of a repeated message field passes, column by column.

    The rules `_walk` applies entry by entry, on each field of the entries at
    once: 500,000 hash entries in 0.3 s instead of 3 s. Only for entries of
    implicit-presence scalars (no text to scan, no nested message), whose
    encodings are equal exactly when their values are (unknown fields were
    refused before). False sends the caller entry by entry: it names the first
    entry that breaks a rule, so a refusal reads the same either way.
    """
    fields = field.message_type.fields
    if any(f.type not in _FLAT_TYPES or f.is_repeated or f.has_presence for f in fields):
        return False
    # One pass over the entries (each read makes a Python object), then columns.
    rows = list(map(attrgetter(*(f.name for f in fields)), entries))
    if len(fields) == 1:
        rows = [(value,) for value in rows]
    for k, sub in enumerate(fields):
        column = [row[k] for row in rows]
        subpath = f"{path}.{sub.name}"
        if sub.type == FieldDescriptor.TYPE_BYTES:
            sizes = [len(v) for v in column]
            present = [n for n in sizes if n] if 0 in sizes else sizes
        else:
            present = [v for v in column if v != sub.default_value]
        if len(present) < len(column) and subpath in policy.required:
            return False
        if not present:
            continue
        if not policy.permits(subpath):
            return False
        if sub.type == FieldDescriptor.TYPE_ENUM:
            if not set(present).issubset(sub.enum_type.values_by_number):
                return False
        elif sub.type == FieldDescriptor.TYPE_BYTES:
            low, high = policy.sizes[subpath]
            if not low <= min(present) <= max(present) <= high:
                return False
    return not policy.many[path].distinct or len(set(rows)) == len(rows)


def _value(value: Any, field: Any, policy: Policy, path: str, at: str) -> None:
    if field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            _wire.checked_time(value, at)
            return
        _walk(value, policy, f"{path}.", at)
    elif field.enum_type is not None:
        _code(value, at, field)
    elif field.type == FieldDescriptor.TYPE_STRING:
        _text(value, at, policy.texts[path])
    elif field.type == FieldDescriptor.TYPE_BYTES:
        low, high = policy.sizes[path]
        if not low <= len(value) <= high:
            raise ValidationError(at, f"must be {low} to {high} bytes")


def _code(value: int, at: str, field: FieldDescriptor) -> None:
    enum = field.enum_type
    assert enum is not None
    if value == 0:
        raise ValidationError(at, "is required")
    if value not in enum.values_by_number:
        raise ValidationError(at, f"{value} is not a {enum.name} code")


# Unicode category Cc (C0, DEL and the C1 controls such as NEL) but newline and tab:
# a fixed set (Unicode never changes which characters are Cc), matched in C instead
# of asking each character its category.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(value: str, at: str, rule: Text) -> None:
    if rule.required and not value.strip():
        raise ValidationError(at, "is required")
    if len(value) > rule.chars:
        raise ValidationError(at, f"is longer than {rule.chars} characters")
    if _CONTROL.search(value):
        raise ValidationError(at, "contains control characters")
    if rule.free:
        check_free_text(value, at, rule.identifiers)


def readable_fields(notice: pb.Notice) -> list[str]:
    """The body fields a reader of `notice` sees (for reports: what was disclosed)."""
    body = notice.WhichOneof("body")
    if body is None:
        return []
    content = getattr(notice, body)
    return [f.name for f in content.DESCRIPTOR.fields if _present(content, f)]


# --- staged disclosure ---------------------------------------------------------------------------


def commit_section(section: pb.RestrictedSection, salt: bytes) -> bytes:
    """The salted commitment that names `section` in a notice.

    Over the section's fields, not its protobuf bytes: protobuf encoding is not
    canonical, and a peer in another language must compute the same digest.
    The salt (32 random bytes) keeps a short section (a name, a date) from
    being found by hashing guesses.
    """
    if len(salt) != 32:
        raise ValueError("a section salt is 32 bytes")
    return tagged_digest(
        _COMMITMENT_TAG,
        salt,
        section.type.to_bytes(4, "big"),
        section.content.encode(),
    )


# A held-back section: required, on one subject, and short; names are expected in it.
_SECTION_TEXT = Text(SECTION_CHARS, required=True, free=False)


def check_section(section: pb.RestrictedSection, where: str) -> None:
    """Check a section an authority holds back, before the node commits to it."""
    _no_unknown_fields(section, where)
    _code(section.type, f"{where}.type", section.DESCRIPTOR.fields_by_name["type"])
    _text(section.content, f"{where}.content", _SECTION_TEXT)


def section_matches(disclosed: pb.DisclosedSection, commitment: bytes) -> bool:
    """Whether a disclosed section is the one the originator committed to."""
    if len(disclosed.salt) != 32:
        return False
    return hmac.compare_digest(commit_section(disclosed.section, disclosed.salt), commitment)


# --- cross-field rules ---------------------------------------------------------------------------


def _deadline(body: Any, now: dt.datetime) -> None:
    deadline = _wire.optional_time(body, "response_deadline")
    assert deadline is not None  # required by the policy
    if not now < deadline <= now + MAX_DEADLINE:
        raise ValidationError("response_deadline", "must be in the future, within 365 days")
    if body.urgency in _URGENT and deadline > now + URGENT_DEADLINE:
        raise ValidationError("response_deadline", "an urgent request is due within 72 hours")
    if body.urgency not in _URGENT and deadline < now + ORDINARY_DEADLINE:
        raise ValidationError(
            "response_deadline", "a request due within 24 hours must be marked urgent"
        )


def _victims(body: pb.CaseReferral, now: dt.datetime) -> None:
    if body.HasField("victim_count"):
        if body.victim_count > MAX_VICTIM_COUNT:
            raise ValidationError("victim_count", f"must be at most {MAX_VICTIM_COUNT}")
        if len(body.victim_age_bands) > body.victim_count:
            raise ValidationError("victim_age_bands", "more age bands than victims")


def _ground_when(*needing: int) -> Check:
    """refusal_ground is required when the status (or outcome) is one of `needing`, else unset."""

    def check(body: Any, now: dt.datetime) -> None:
        status = next(
            getattr(body, name) for name in ("outcome", "status", "decision") if hasattr(body, name)
        )
        if status in needing and not body.refusal_ground:
            raise ValidationError("refusal_ground", "is required for this outcome")
        if status not in needing and body.refusal_ground:
            raise ValidationError("refusal_ground", "only with an outcome that refuses or defers")

    return check


def _distinct(field: str, key: str) -> Check:
    """Items of the repeated message field `field` are distinct by their `key`."""

    def check(body: Any, now: dt.datetime) -> None:
        seen: set[object] = set()
        for i, item in enumerate(getattr(body, field)):
            value = getattr(item, key)
            if value in seen:
                raise ValidationError(f"{field}[{i}].{key}", "is listed twice")
            seen.add(value)

    return check


def _item_ids(field: str) -> Check:
    def check(body: Any, now: dt.datetime) -> None:
        for i, item in enumerate(getattr(body, field)):
            if not _ID.fullmatch(item.item_id):
                raise ValidationError(f"{field}[{i}].item_id", "must be a short id such as i1")

    return check


def _premises(body: pb.SeizureRequest, now: dt.datetime) -> None:
    # Art. 7(c): closure applies to premises; premises may also be seized or confiscated.
    for i, item in enumerate(body.items):
        closing = item.measure == pb.SEIZURE_MEASURE_CLOSE_PREMISES
        if closing and item.category != pb.SEIZURE_ITEM_CATEGORY_PREMISES:
            raise ValidationError(f"items[{i}].measure", "only premises are closed")


def _travel(body: pb.TravelAlert, now: dt.datetime) -> None:
    start = _wire.optional_time(body, "travel_from")
    end = _wire.optional_time(body, "travel_until")
    assert start is not None
    assert end is not None
    if not start < end <= start + MAX_TRAVEL_WINDOW:
        raise ValidationError("travel_until", "must follow travel_from, within 90 days")
    if end <= now:
        raise ValidationError("travel_until", "the travel window is over")
    for i, port in enumerate(body.ports):
        if not _LOCODE.fullmatch(port.locode):
            raise ValidationError(f"ports[{i}].locode", "must be a UN/LOCODE such as XAAAA")


_HASH_SIZES = {
    pb.HASH_ALGORITHM_SHA256: (32, 32),
    pb.HASH_ALGORITHM_MD5: (16, 16),
    pb.HASH_ALGORITHM_PDQ: (32, 32),
    pb.HASH_ALGORITHM_PHOTODNA: (1, 256),
}
_HASH_ACTIONS = frozenset(
    {
        pb.REQUESTED_ACTION_REMOVE_CONTENT,
        pb.REQUESTED_ACTION_PRESERVE_EVIDENCE,
        pb.REQUESTED_ACTION_IDENTIFY_VICTIM,
        pb.REQUESTED_ACTION_OPEN_INVESTIGATION,
    }
)


def _hashes(body: pb.ContentHashReferral, now: dt.datetime) -> None:
    # The policy already refused an entry listed twice (Many.distinct) and any
    # unknown algorithm; here: the size of each value for its algorithm.
    entries = list(map(attrgetter("algorithm", "value"), body.hashes))
    algorithms = [algorithm for algorithm, _ in entries]
    sizes = [len(value) for _, value in entries]
    # What a recipient can decode bounds one notice: split larger sets of hashes.
    if sum(sizes) > MAX_HASH_BYTES:
        raise ValidationError(
            "hashes", f"more than {MAX_HASH_BYTES // 2**20} MiB of hash values: split the referral"
        )
    # The usual referral is of one algorithm: its sizes are checked in C.
    one = _HASH_SIZES[algorithms[0]] if len(set(algorithms)) == 1 else None
    if one is None or not one[0] <= min(sizes) <= max(sizes) <= one[1]:
        for i, (algorithm, size) in enumerate(zip(algorithms, sizes, strict=True)):
            low, high = _HASH_SIZES[algorithm]
            if not low <= size <= high:
                raise ValidationError(f"hashes[{i}].value", f"must be {low} to {high} bytes")
    for i, action in enumerate(body.requested_actions):
        if action not in _HASH_ACTIONS:
            raise ValidationError(f"requested_actions[{i}]", "is not an action on material")


def _tokens(field: str) -> Check:
    def check(body: Any, now: dt.datetime) -> None:
        for i, token in enumerate(getattr(body, field)):
            if not 16 <= len(token) <= 64:
                raise ValidationError(f"{field}[{i}]", "must be 16 to 64 bytes")

    return check


def _disclosure_scope(body: pb.DisclosureRequest, now: dt.datetime) -> None:
    onward = body.purpose == pb.DISCLOSURE_PURPOSE_ONWARD_SHARING
    if onward and body.section_ids:
        raise ValidationError("section_ids", "a request for onward sharing names no sections")
    if onward and not body.onward_node_ids:
        raise ValidationError("onward_node_ids", "name the nodes to share with")
    if not onward and body.onward_node_ids:
        raise ValidationError("onward_node_ids", "only a request for onward sharing names nodes")
    if not onward and not body.section_ids:
        raise ValidationError("section_ids", "name the restricted sections asked for")
    for i, node_id in enumerate(body.onward_node_ids):
        validate_node_id(node_id, f"onward_node_ids[{i}]")
    for i, section_id in enumerate(body.section_ids):
        if not _ID.fullmatch(section_id):
            raise ValidationError(f"section_ids[{i}]", "is not a section id")


def _grant_scope(body: pb.DisclosureGrant, now: dt.datetime) -> None:
    approved = body.decision == pb.DISCLOSURE_DECISION_APPROVED
    if approved and not (body.sections or body.onward_node_ids):
        raise ValidationError("sections", "an approval grants sections or onward sharing")
    if not approved:
        for field in ("sections", "onward_node_ids"):
            if getattr(body, field):
                raise ValidationError(field, "a refusal grants nothing")
    for i, section in enumerate(body.sections):
        if not _ID.fullmatch(section.section_id):
            raise ValidationError(f"sections[{i}].section_id", "is not a section id")
    for i, node_id in enumerate(body.onward_node_ids):
        validate_node_id(node_id, f"onward_node_ids[{i}]")


# --- the policies -------------------------------------------------------------------------------

_CONTACT_REQUIRED = frozenset({"contact_point", "contact_point.unit"})
_CONTACT_ALLOWED = frozenset({"contact_point.functional_channel"})
_CONTACT_TEXTS = {
    "contact_point.unit": Text(REFERENCE_CHARS, required=True),
    # The one place where an e-mail address or phone number belongs: the unit's own.
    "contact_point.functional_channel": Text(REFERENCE_CHARS, identifiers=_CONTACT_CHANNEL),
}
_SUMMARY = {"summary": Text(SUMMARY_CHARS)}
_OFFENCES = Many(most=6, least=1)


def field_paths(descriptor: Any, prefix: str = "") -> list[str]:
    """Every field path of a message type, dotted; timestamps are leaves."""
    paths = []
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        paths.append(path)
        if field.message_type is not None and field.message_type.full_name != _TIMESTAMP:
            paths.extend(field_paths(field.message_type, f"{path}."))
    return paths


def _policy(
    kind: int,
    body: str,
    *,
    required: set[str],
    allowed: set[str],
    contact: bool = True,
    **rest: Any,
) -> Policy:
    """A policy whose refused fields are every field of the body it does not admit."""
    if contact:
        required |= _CONTACT_REQUIRED
        allowed |= _CONTACT_ALLOWED
        rest["texts"] = {**_CONTACT_TEXTS, **rest.get("texts", {})}
    every = field_paths(pb.Notice.DESCRIPTOR.fields_by_name[body].message_type)
    return Policy(
        kind=kind,
        body=body,
        required=frozenset(required),
        allowed=frozenset(allowed),
        refused=frozenset(every) - required - allowed,
        **rest,
    )


K = env_pb
_POLICIES = [
    # OPSC art. 4, 10.
    _policy(
        K.NOTICE_KIND_CASE_REFERRAL,
        "case_referral",
        required={
            "offence_categories",
            "participation",
            "jurisdiction_links",
            "urgency",
            "requested_actions",
        },
        allowed={"victim_count", "victim_age_bands", "suspect_tokens", "summary"},
        texts=_SUMMARY,
        many={
            "offence_categories": _OFFENCES,
            "jurisdiction_links": Many(most=5, least=1),
            "victim_age_bands": Many(most=MAX_VICTIM_COUNT, distinct=False),
            "suspect_tokens": Many(most=64),
            "requested_actions": Many(most=9, least=1),
        },
        sizes={"suspect_tokens": (16, 64)},
        checks=(_victims,),
        restricted_sections=True,
    ),
    # OPSC art. 6.
    _policy(
        K.NOTICE_KIND_ASSISTANCE_REQUEST,
        "assistance_request",
        required={
            "legal_basis",
            "requested_measures",
            "offence_categories",
            "urgency",
            "response_deadline",
        },
        allowed={"legal_basis_reference", "summary"},
        texts={**_SUMMARY, "legal_basis_reference": Text(REFERENCE_CHARS)},
        many={"requested_measures": Many(most=9, least=1), "offence_categories": _OFFENCES},
        checks=(_deadline,),
        restricted_sections=True,
    ),
    _policy(
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        "assistance_response",
        required={"outcome", "measure_results.measure", "measure_results.status"},
        allowed={"measure_results", "refusal_ground", "summary"},
        texts=_SUMMARY,
        many={"measure_results": Many(most=9)},
        checks=(
            _ground_when(pb.ASSISTANCE_OUTCOME_REFUSED, pb.ASSISTANCE_OUTCOME_POSTPONED),
            _distinct("measure_results", "measure"),
        ),
        restricted_sections=True,
    ),
    _policy(
        K.NOTICE_KIND_ACKNOWLEDGEMENT,
        "acknowledgement",
        required={"status"},
        allowed={"note"},
        texts={"note": Text(NOTE_CHARS)},
        contact=False,
        forwardable=False,
    ),
    # OPSC art. 5.
    _policy(
        K.NOTICE_KIND_EXTRADITION_NOTICE,
        "extradition_notice",
        required={"offence_categories", "basis", "status"},
        allowed={"basis_reference", "refusal_ground", "suspect_tokens", "summary"},
        texts={**_SUMMARY, "basis_reference": Text(REFERENCE_CHARS)},
        many={"offence_categories": _OFFENCES, "suspect_tokens": Many(most=64)},
        sizes={"suspect_tokens": (16, 64)},
        checks=(
            _ground_when(
                pb.EXTRADITION_STATUS_REFUSED,
                pb.EXTRADITION_STATUS_NOT_EXTRADITED_SUBMITTED_FOR_DOMESTIC_PROSECUTION,
            ),
        ),
        restricted_sections=True,
    ),
    # OPSC art. 7.
    _policy(
        K.NOTICE_KIND_SEIZURE_REQUEST,
        "seizure_request",
        required={
            "legal_basis",
            "offence_categories",
            "items",
            "items.item_id",
            "items.category",
            "items.measure",
            "urgency",
            "response_deadline",
        },
        allowed={
            "legal_basis_reference",
            "items.quantity",
            "items.location_reference",
            "summary",
        },
        texts={
            **_SUMMARY,
            "legal_basis_reference": Text(REFERENCE_CHARS),
            "items.item_id": Text(16, required=True, free=False),
            # The one field that may name a street address: premises, where devices are.
            "items.location_reference": Text(
                200, identifiers=frozenset({Identifier.STREET_ADDRESS})
            ),
        },
        many={"offence_categories": _OFFENCES, "items": Many(most=100, least=1)},
        checks=(_deadline, _item_ids("items"), _distinct("items", "item_id"), _premises),
        restricted_sections=True,
    ),
    _policy(
        K.NOTICE_KIND_SEIZURE_RESPONSE,
        "seizure_response",
        required={"status", "item_results.item_id", "item_results.status"},
        allowed={"item_results", "refusal_ground", "summary"},
        texts={**_SUMMARY, "item_results.item_id": Text(16, required=True, free=False)},
        many={"item_results": Many(most=100)},
        checks=(
            _ground_when(pb.EXECUTION_STATUS_NOT_EXECUTED),
            _item_ids("item_results"),
            _distinct("item_results", "item_id"),
        ),
    ),
    # OPSC art. 8, 9, 10(2).
    _policy(
        K.NOTICE_KIND_VICTIM_SUPPORT_COORDINATION,
        "victim_support_coordination",
        required={
            "age_band",
            "needs",
            "best_interests",
            "urgency",
            "repatriation_steps.step",
            "repatriation_steps.status",
        },
        allowed={"repatriation_steps", "summary"},
        texts=_SUMMARY,
        many={"needs": Many(most=9, least=1), "repatriation_steps": Many(most=5)},
        checks=(_distinct("repatriation_steps", "step"),),
        restricted_sections=True,
    ),
    # OPSC art. 10(1).
    _policy(
        K.NOTICE_KIND_TRAVEL_ALERT,
        "travel_alert",
        required={
            "convicted_of",
            "travel_from",
            "travel_until",
            "ports",
            "ports.locode",
            "ports.mode",
            "traveller_tokens",
            "risk",
            "urgency",
        },
        allowed={"summary"},
        texts={**_SUMMARY, "ports.locode": Text(5, required=True, free=False)},
        many={
            "convicted_of": _OFFENCES,
            "ports": Many(most=20, least=1),
            "traveller_tokens": Many(most=64, least=1),
        },
        sizes={"traveller_tokens": (16, 64)},
        checks=(_travel,),
        restricted_sections=True,
    ),
    # OPSC art. 3(1)(c), 7: thousands of hashes in one notice.
    _policy(
        K.NOTICE_KIND_CONTENT_HASH_REFERRAL,
        "content_hash_referral",
        required={
            "hosting_link",
            "hashes",
            "hashes.algorithm",
            "hashes.value",
            "requested_actions",
        },
        allowed={"summary"},
        texts=_SUMMARY,
        many={"hashes": Many(most=MAX_HASHES, least=1), "requested_actions": Many(most=4, least=1)},
        sizes={"hashes.value": (1, 256)},
        checks=(_hashes,),
    ),
    _policy(
        K.NOTICE_KIND_WITHDRAWAL,
        "withdrawal",
        required={"reason"},
        allowed={"note"},
        texts={"note": Text(NOTE_CHARS)},
        contact=False,
        forwardable=False,
    ),
    _policy(
        K.NOTICE_KIND_DISCLOSURE_REQUEST,
        "disclosure_request",
        required={"purpose", "legal_basis"},
        allowed={"legal_basis_reference", "section_ids", "onward_node_ids", "note"},
        texts={
            "legal_basis_reference": Text(REFERENCE_CHARS),
            "section_ids": Text(16, free=False),
            "onward_node_ids": Text(63, free=False),
            "note": Text(NOTE_CHARS),
        },
        many={
            "section_ids": Many(most=MAX_RESTRICTED_SECTIONS),
            "onward_node_ids": Many(most=32),
        },
        checks=(_disclosure_scope,),
        contact=False,
        forwardable=False,
    ),
    _policy(
        K.NOTICE_KIND_DISCLOSURE_GRANT,
        "disclosure_grant",
        required={
            "decision",
            "sections.section_id",
            "sections.section",
            "sections.section.type",
            "sections.section.content",
            "sections.salt",
        },
        allowed={"sections", "onward_node_ids", "refusal_ground"},
        texts={
            "sections.section_id": Text(16, required=True, free=False),
            # The disclosed section is exactly where identifiers belong, once approved.
            "sections.section.content": Text(
                SECTION_CHARS, required=True, identifiers=frozenset(Identifier)
            ),
            "onward_node_ids": Text(63, free=False),
        },
        many={"sections": Many(most=MAX_RESTRICTED_SECTIONS), "onward_node_ids": Many(most=32)},
        sizes={"sections.salt": (32, 32)},
        checks=(
            _ground_when(pb.DISCLOSURE_DECISION_REFUSED),
            _grant_scope,
            _distinct("sections", "section_id"),
        ),
        contact=False,
        forwardable=False,
    ),
]

POLICIES: Mapping[str, Policy] = {policy.body: policy for policy in _POLICIES}
