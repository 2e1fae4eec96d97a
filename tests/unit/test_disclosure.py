"""The disclosure policy (OPSC art. 8): one named case per rule, for the notice types
that test_notices.py does not cover, and the guards that keep the policies complete.

Each table row is (case id, a mutation of a valid notice, the field path the
ValidationError must name, a fragment of its reason). A mutation returns the
notice to validate: most edit it in place, some re-parse it from bytes with
something appended, as a peer's opened content would arrive.

Sections:
    the nine types, valid and broken field by field (every required field, then
    each type's codes, counts, sizes, texts and cross-field rules);
    free text and the identifiers each field exists for;
    restricted sections, forwarded notices and fields a policy does not admit;
    staged disclosure (`commit_section`, `section_matches`);
    completeness of the policies and of the catalogue's kind tables;
    `response_deadline` and `readable_fields`;
    bulk content hash referrals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import struct
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from exchange import disclosure
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.disclosure import (
    MAX_RESTRICTED_SECTIONS,
    POLICIES,
    check_section,
    commit_section,
    field_paths,
    readable_fields,
    section_matches,
)
from exchange.errors import ValidationError
from exchange.notices import (
    BODY_KINDS,
    REPLY_RULES,
    decode_notice,
    encode_notice,
    kind_name,
    kind_of,
    response_deadline,
    validate_notice,
    validate_reply,
)
from tests.unit._mutations import (
    UNKNOWN,
    Mutation,
    RefusalCase,
    appending,
    appending_in_body,
    clearing,
    combined,
    field_at,
    message_field,
    refusal_case,
    replacing,
    setting,
    table_cases,
)

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
TOKEN = bytes(range(32))
SALT = bytes(range(100, 132))
OTHER_SALT = bytes(range(200, 232))
# A restricted section is where a child's identity goes: every kind of identifier at once.
IDENTITY = (
    "Mira Example, born 12/03/2018, passport X1234567, "
    "+44 20 7946 0958, 12 Baker Street, mira@example.org"
)
MESSAGE_ID = "01890a5d-ac96-7abc-8def-0123456789ab"  # a UUIDv7

K = env_pb
# --- valid notices, one per type ---------------------------------------------------------------


def protection(
    identification: int = pb.VICTIM_IDENTIFICATION_NOT_IDENTIFIED,
) -> pb.ChildProtectionFlags:
    return pb.ChildProtectionFlags(
        identity_protected=True,
        victim_identification=identification,  # type: ignore[arg-type]
    )


def contact() -> pb.ContactPoint:
    return pb.ContactPoint(
        unit="National Child Exploitation Unit", functional_channel="duty@ncu.xa.example"
    )


def at(delta: dt.timedelta) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(NOW + delta)
    return value


def extradition_notice() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        extradition_notice=pb.ExtraditionNotice(
            offence_categories=[
                pb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL,
                pb.OFFENCE_CATEGORY_CHILD_PROSTITUTION,
            ],
            basis=pb.EXTRADITION_BASIS_BILATERAL_TREATY,
            basis_reference="Extradition treaty XA-XB art. 2",
            status=pb.EXTRADITION_STATUS_PROVISIONAL_ARREST,
            suspect_tokens=[TOKEN],
            contact_point=contact(),
            summary="Person sought arrested on a provisional warrant; surrender hearing set.",
        ),
    )


def seizure_request() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        seizure_request=pb.SeizureRequest(
            legal_basis=pb.LEGAL_BASIS_OPSC_ARTICLE_6,
            legal_basis_reference="OPSC art. 7(b)",
            offence_categories=[pb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
            items=[
                pb.SeizureItem(
                    item_id="i1",
                    category=pb.SEIZURE_ITEM_CATEGORY_DEVICES,
                    measure=pb.SEIZURE_MEASURE_SEIZE,
                    quantity=3,
                    location_reference="12 Baker Street",
                ),
                pb.SeizureItem(
                    item_id="i2",
                    category=pb.SEIZURE_ITEM_CATEGORY_PREMISES,
                    measure=pb.SEIZURE_MEASURE_CLOSE_PREMISES,
                    location_reference="12 Baker Street",
                ),
            ],
            urgency=pb.URGENCY_URGENT,
            response_deadline=at(dt.timedelta(hours=48)),
            contact_point=contact(),
            summary="Devices used to distribute material; premises used for abuse.",
        ),
    )


def seizure_response() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        seizure_response=pb.SeizureResponse(
            status=pb.EXECUTION_STATUS_PARTIALLY_EXECUTED,
            item_results=[
                pb.SeizureItemResult(item_id="i1", status=pb.EXECUTION_STATUS_EXECUTED),
                pb.SeizureItemResult(item_id="i2", status=pb.EXECUTION_STATUS_PENDING),
            ],
            contact_point=contact(),
            summary="Devices seized; closure order pending before the court.",
        ),
    )


def victim_support_coordination() -> pb.Notice:
    return pb.Notice(
        protection=protection(pb.VICTIM_IDENTIFICATION_IDENTIFIED),
        victim_support_coordination=pb.VictimSupportCoordination(
            age_band=pb.AGE_BAND_12_TO_14,
            needs=[
                pb.VICTIM_NEED_PSYCHOLOGICAL_SUPPORT,
                pb.VICTIM_NEED_SAFE_ACCOMMODATION,
                pb.VICTIM_NEED_FAMILY_TRACING,
            ],
            best_interests=pb.BEST_INTERESTS_STATUS_RETURN_RECOMMENDED,
            repatriation_steps=[
                pb.RepatriationStep(
                    step=pb.REPATRIATION_STEP_TYPE_FAMILY_ASSESSMENT, status=pb.STEP_STATUS_DONE
                ),
                pb.RepatriationStep(
                    step=pb.REPATRIATION_STEP_TYPE_ESCORT, status=pb.STEP_STATUS_PLANNED
                ),
            ],
            urgency=pb.URGENCY_PRIORITY,
            contact_point=contact(),
            summary="Return recommended after family assessment; escort being arranged.",
        ),
    )


def travel_alert() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        travel_alert=pb.TravelAlert(
            convicted_of=[pb.OFFENCE_CATEGORY_CHILD_PROSTITUTION],
            travel_from=at(dt.timedelta(days=1)),
            travel_until=at(dt.timedelta(days=8)),
            ports=[
                pb.Port(locode="XCAAA", mode=pb.TRAVEL_MODE_AIR),
                pb.Port(locode="XCBBB", mode=pb.TRAVEL_MODE_SEA),
            ],
            traveller_tokens=[TOKEN],
            risk=pb.RISK_LEVEL_HIGH,
            urgency=pb.URGENCY_URGENT,
            contact_point=contact(),
            summary="Convicted offender booked on a flight next week.",
        ),
    )


def content_hash_referral() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        content_hash_referral=pb.ContentHashReferral(
            hosting_link=pb.HOSTING_LINK_HOSTED_IN_TERRITORY,
            hashes=[
                pb.ContentHash(algorithm=pb.HASH_ALGORITHM_SHA256, value=bytes(range(32))),
                pb.ContentHash(algorithm=pb.HASH_ALGORITHM_MD5, value=bytes(range(16))),
                pb.ContentHash(algorithm=pb.HASH_ALGORITHM_PDQ, value=bytes(range(32, 64))),
                pb.ContentHash(algorithm=pb.HASH_ALGORITHM_PHOTODNA, value=bytes(144)),
            ],
            requested_actions=[
                pb.REQUESTED_ACTION_REMOVE_CONTENT,
                pb.REQUESTED_ACTION_PRESERVE_EVIDENCE,
            ],
            contact_point=contact(),
            summary="Identified material on a hosting service in your territory.",
        ),
    )


def withdrawal() -> pb.Notice:
    return pb.Notice(
        protection=protection(pb.VICTIM_IDENTIFICATION_UNKNOWN),
        withdrawal=pb.Withdrawal(
            reason=pb.WITHDRAWAL_REASON_SENT_IN_ERROR,
            note="Sent to the wrong unit; please disregard.",
        ),
    )


def disclosure_request() -> pb.Notice:
    return pb.Notice(
        protection=protection(pb.VICTIM_IDENTIFICATION_UNKNOWN),
        disclosure_request=pb.DisclosureRequest(
            purpose=pb.DISCLOSURE_PURPOSE_SAFEGUARD_VICTIM,
            legal_basis=pb.LEGAL_BASIS_OPSC_ARTICLE_6,
            legal_basis_reference="OPSC art. 8(1)",
            section_ids=["s1", "s2"],
            note="Needed to arrange the child's safe accommodation.",
        ),
    )


def restricted_section() -> pb.RestrictedSection:
    return pb.RestrictedSection(type=pb.SECTION_TYPE_VICTIM_IDENTITY, content=IDENTITY)


def disclosure_grant() -> pb.Notice:
    return pb.Notice(
        protection=protection(pb.VICTIM_IDENTIFICATION_UNKNOWN),
        disclosure_grant=pb.DisclosureGrant(
            decision=pb.DISCLOSURE_DECISION_APPROVED,
            sections=[
                pb.DisclosedSection(section_id="s1", section=restricted_section(), salt=SALT)
            ],
        ),
    )


VALID: dict[str, tuple[Callable[[], pb.Notice], int]] = {
    "extradition_notice": (extradition_notice, K.NOTICE_KIND_EXTRADITION_NOTICE),
    "seizure_request": (seizure_request, K.NOTICE_KIND_SEIZURE_REQUEST),
    "seizure_response": (seizure_response, K.NOTICE_KIND_SEIZURE_RESPONSE),
    "victim_support_coordination": (
        victim_support_coordination,
        K.NOTICE_KIND_VICTIM_SUPPORT_COORDINATION,
    ),
    "travel_alert": (travel_alert, K.NOTICE_KIND_TRAVEL_ALERT),
    "content_hash_referral": (content_hash_referral, K.NOTICE_KIND_CONTENT_HASH_REFERRAL),
    "withdrawal": (withdrawal, K.NOTICE_KIND_WITHDRAWAL),
    "disclosure_request": (disclosure_request, K.NOTICE_KIND_DISCLOSURE_REQUEST),
    "disclosure_grant": (disclosure_grant, K.NOTICE_KIND_DISCLOSURE_GRANT),
}


# --- mutations ---------------------------------------------------------------------------------


def timing(dotted: str, delta: dt.timedelta) -> Mutation:
    """Set the timestamp at `dotted` to NOW + `delta`."""

    def mutate(notice: pb.Notice) -> pb.Notice:
        message, name = field_at(notice, dotted)
        getattr(message, name).FromDatetime(NOW + delta)
        return notice

    return mutate


def case(case_id: str, mutation: Mutation, field: str, reason: str) -> Any:
    return pytest.param(mutation, field, reason, id=case_id)


def refusal(notice: pb.Notice) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate_notice(notice, now=NOW)
    return caught.value


def run(body: str, mutation: Mutation) -> ValidationError:
    return refusal(mutation(VALID[body][0]()))


def accepted(body: str, mutation: Mutation) -> None:
    make, kind = VALID[body]
    assert validate_notice(mutation(make()), now=NOW) == kind


def distinct_tokens(count: int) -> list[bytes]:
    return [bytes([n]) * 32 for n in range(count)]


# --- every valid notice passes -----------------------------------------------------------------


@pytest.mark.parametrize("body", list(VALID))
def test_a_valid_notice_of_each_type_passes_and_names_its_kind(body):
    make, kind = VALID[body]
    notice = make()

    assert validate_notice(notice, now=NOW) == kind
    assert kind_of(notice) == kind
    assert validate_notice(decode_notice(encode_notice(notice)), now=NOW) == kind


@pytest.mark.parametrize("body", list(VALID))
def test_an_unknown_field_inside_the_body_is_refused(body):
    error = run(body, appending_in_body(body, UNKNOWN))

    assert (error.field, error.reason) == (
        f"notice.{body}",
        "carries fields this catalogue does not define",
    )


# --- every required field ----------------------------------------------------------------------


def missing(body: str, path: str) -> Any:
    """A required field of `body` left unset; `path` indexes into repeated messages."""
    return pytest.param(body, path, id=f"{body.replace('_', '-')}-without-{path}")


REQUIRED = [
    missing("extradition_notice", "offence_categories"),
    missing("extradition_notice", "basis"),
    missing("extradition_notice", "status"),
    missing("extradition_notice", "contact_point"),
    missing("extradition_notice", "contact_point.unit"),
    missing("seizure_request", "legal_basis"),
    missing("seizure_request", "offence_categories"),
    missing("seizure_request", "items"),
    missing("seizure_request", "items[0].item_id"),
    missing("seizure_request", "items[1].category"),
    missing("seizure_request", "items[0].measure"),
    missing("seizure_request", "urgency"),
    missing("seizure_request", "response_deadline"),
    missing("seizure_request", "contact_point"),
    missing("seizure_request", "contact_point.unit"),
    missing("seizure_response", "status"),
    missing("seizure_response", "item_results[1].item_id"),
    missing("seizure_response", "item_results[0].status"),
    missing("seizure_response", "contact_point"),
    missing("seizure_response", "contact_point.unit"),
    missing("victim_support_coordination", "age_band"),
    missing("victim_support_coordination", "needs"),
    missing("victim_support_coordination", "best_interests"),
    missing("victim_support_coordination", "urgency"),
    missing("victim_support_coordination", "repatriation_steps[0].step"),
    missing("victim_support_coordination", "repatriation_steps[1].status"),
    missing("victim_support_coordination", "contact_point"),
    missing("victim_support_coordination", "contact_point.unit"),
    missing("travel_alert", "convicted_of"),
    missing("travel_alert", "travel_from"),
    missing("travel_alert", "travel_until"),
    missing("travel_alert", "ports"),
    missing("travel_alert", "ports[0].locode"),
    missing("travel_alert", "ports[1].mode"),
    missing("travel_alert", "traveller_tokens"),
    missing("travel_alert", "risk"),
    missing("travel_alert", "urgency"),
    missing("travel_alert", "contact_point"),
    missing("travel_alert", "contact_point.unit"),
    missing("content_hash_referral", "hosting_link"),
    missing("content_hash_referral", "hashes"),
    missing("content_hash_referral", "hashes[2].algorithm"),
    missing("content_hash_referral", "hashes[0].value"),
    missing("content_hash_referral", "requested_actions"),
    missing("content_hash_referral", "contact_point"),
    missing("content_hash_referral", "contact_point.unit"),
    missing("withdrawal", "reason"),
    missing("disclosure_request", "purpose"),
    missing("disclosure_request", "legal_basis"),
    missing("disclosure_grant", "decision"),
    missing("disclosure_grant", "sections[0].section_id"),
    missing("disclosure_grant", "sections[0].section"),
    missing("disclosure_grant", "sections[0].section.type"),
    missing("disclosure_grant", "sections[0].section.content"),
    missing("disclosure_grant", "sections[0].salt"),
]


@pytest.mark.parametrize(("body", "path"), REQUIRED)
def test_a_missing_required_field_is_named(body, path):
    error = run(body, clearing(f"{body}.{path}"))

    assert error.field == f"notice.{body}.{path}"
    assert error.reason in {"is required", "at least one is required"}


def test_the_required_table_names_every_required_field_of_the_nine_types():
    # A field made required in a policy needs its row above.
    listed = {(p.values[0], re.sub(r"\[\d+\]", "", p.values[1])) for p in REQUIRED}
    expected = {(body, path) for body in VALID for path in POLICIES[body].required}

    assert listed == expected


# --- ExtraditionNotice (OPSC art. 5) -----------------------------------------------------------

E = "notice.extradition_notice"


def extradition(status: int, ground: int = 0) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.extradition_notice.status = status  # type: ignore[assignment]
        notice.extradition_notice.refusal_ground = ground  # type: ignore[assignment]
        return notice

    return mutate


EXTRADITION = [
    case(
        "offence-unspecified",
        replacing("extradition_notice.offence_categories", [pb.OFFENCE_CATEGORY_UNSPECIFIED]),
        f"{E}.offence_categories[0]",
        "is required",
    ),
    case(
        "offence-unknown-code",
        replacing("extradition_notice.offence_categories", [99]),
        f"{E}.offence_categories[0]",
        "99 is not a OffenceCategory code",
    ),
    case(
        "offence-twice",
        replacing(
            "extradition_notice.offence_categories",
            [pb.OFFENCE_CATEGORY_SALE_ORGAN_TRANSFER, pb.OFFENCE_CATEGORY_SALE_ORGAN_TRANSFER],
        ),
        f"{E}.offence_categories[1]",
        "is listed twice",
    ),
    case(
        "more-than-six-offences",
        replacing("extradition_notice.offence_categories", [1, 2, 3, 4, 5, 6, 1]),
        f"{E}.offence_categories",
        "at most 6 entries",
    ),
    case(
        "basis-unknown-code",
        setting("extradition_notice.basis", 99),
        f"{E}.basis",
        "99 is not a ExtraditionBasis code",
    ),
    case(
        "basis-reference-over-120",
        setting("extradition_notice.basis_reference", "r" * 121),
        f"{E}.basis_reference",
        "is longer than 120 characters",
    ),
    case(
        "basis-reference-control-character",
        setting("extradition_notice.basis_reference", "art. 2\x1b[0m"),
        f"{E}.basis_reference",
        "contains control characters",
    ),
    case(
        "status-unknown-code",
        setting("extradition_notice.status", 99),
        f"{E}.status",
        "99 is not a ExtraditionStatus code",
    ),
    # OPSC art. 5(5): a refusal, or a decision not to extradite, says why.
    case(
        "refused-without-ground",
        extradition(pb.EXTRADITION_STATUS_REFUSED),
        f"{E}.refusal_ground",
        "is required for this outcome",
    ),
    case(
        "not-extradited-without-ground",
        extradition(pb.EXTRADITION_STATUS_NOT_EXTRADITED_SUBMITTED_FOR_DOMESTIC_PROSECUTION),
        f"{E}.refusal_ground",
        "is required for this outcome",
    ),
    case(
        "refused-with-unknown-ground",
        extradition(pb.EXTRADITION_STATUS_REFUSED, 99),
        f"{E}.refusal_ground",
        "99 is not a RefusalGround code",
    ),
    case(
        "surrendered-with-a-ground",
        extradition(pb.EXTRADITION_STATUS_SURRENDERED, pb.REFUSAL_GROUND_NATIONALITY),
        f"{E}.refusal_ground",
        "only with an outcome that refuses or defers",
    ),
    case(
        "request-planned-with-a-ground",
        extradition(pb.EXTRADITION_STATUS_REQUEST_PLANNED, pb.REFUSAL_GROUND_NO_LEGAL_BASIS),
        f"{E}.refusal_ground",
        "only with an outcome that refuses or defers",
    ),
    case(
        "suspect-tokens-over-64",
        replacing("extradition_notice.suspect_tokens", distinct_tokens(65)),
        f"{E}.suspect_tokens",
        "at most 64 entries",
    ),
    case(
        "suspect-token-shorter-than-16-bytes",
        replacing("extradition_notice.suspect_tokens", [TOKEN, bytes(15)]),
        f"{E}.suspect_tokens[1]",
        "must be 16 to 64 bytes",
    ),
    case(
        "suspect-token-longer-than-64-bytes",
        replacing("extradition_notice.suspect_tokens", [bytes(65)]),
        f"{E}.suspect_tokens[0]",
        "must be 16 to 64 bytes",
    ),
    case(
        "suspect-token-twice",
        replacing("extradition_notice.suspect_tokens", [TOKEN, TOKEN]),
        f"{E}.suspect_tokens[1]",
        "is listed twice",
    ),
    case(
        "summary-over-500",
        setting("extradition_notice.summary", "s" * 501),
        f"{E}.summary",
        "is longer than 500 characters",
    ),
    case(
        "summary-control-character",
        setting("extradition_notice.summary", "arrested\x85today"),
        f"{E}.summary",
        "contains control characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), EXTRADITION)
def test_extradition_notice_rules_refuse(mutation, field, reason):
    error = run("extradition_notice", mutation)

    assert error.field == field
    assert reason in error.reason


EXTRADITION_ACCEPTED = [
    pytest.param(
        extradition(pb.EXTRADITION_STATUS_REFUSED, pb.REFUSAL_GROUND_DUAL_CRIMINALITY_NOT_MET),
        id="refused-with-ground",
    ),
    pytest.param(
        extradition(
            pb.EXTRADITION_STATUS_NOT_EXTRADITED_SUBMITTED_FOR_DOMESTIC_PROSECUTION,
            pb.REFUSAL_GROUND_NATIONALITY,
        ),
        id="not-extradited-on-nationality-prosecuted-at-home",
    ),
    pytest.param(extradition(pb.EXTRADITION_STATUS_SURRENDERED), id="surrendered-without-ground"),
    pytest.param(
        replacing("extradition_notice.offence_categories", [1, 2, 3, 4, 5, 6]), id="six-offences"
    ),
    pytest.param(
        replacing("extradition_notice.suspect_tokens", [bytes(16), bytes([1]) * 64]),
        id="tokens-of-16-and-64-bytes",
    ),
    pytest.param(
        replacing("extradition_notice.suspect_tokens", distinct_tokens(64)), id="64-tokens"
    ),
    pytest.param(clearing("extradition_notice.suspect_tokens"), id="no-suspect-tokens"),
    pytest.param(clearing("extradition_notice.basis_reference"), id="no-basis-reference"),
    pytest.param(setting("extradition_notice.summary", "s" * 500), id="summary-of-500"),
    pytest.param(clearing("extradition_notice.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", EXTRADITION_ACCEPTED)
def test_extradition_notice_accepts(mutation):
    accepted("extradition_notice", mutation)


# --- SeizureRequest (OPSC art. 7) --------------------------------------------------------------

S = "notice.seizure_request"


def seizure_deadline(delta: dt.timedelta, urgency: int = pb.URGENCY_URGENT) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.seizure_request.urgency = urgency  # type: ignore[assignment]
        notice.seizure_request.response_deadline.FromDatetime(NOW + delta)
        return notice

    return mutate


def seizure_items(count: int) -> list[pb.SeizureItem]:
    return [
        pb.SeizureItem(
            item_id=f"i{n}",
            category=pb.SEIZURE_ITEM_CATEGORY_ACCOUNTS,
            measure=pb.SEIZURE_MEASURE_FREEZE,
        )
        for n in range(1, count + 1)
    ]


def item(category: int, measure: int) -> Mutation:
    return replacing(
        "seizure_request.items",
        [pb.SeizureItem(item_id="i1", category=category, measure=measure)],  # type: ignore[arg-type]
    )


HOURS = dt.timedelta(hours=1)

SEIZURE_REQUEST = [
    case(
        "legal-basis-unknown-code",
        setting("seizure_request.legal_basis", 99),
        f"{S}.legal_basis",
        "99 is not a LegalBasis code",
    ),
    case(
        "legal-basis-reference-over-120",
        setting("seizure_request.legal_basis_reference", "r" * 121),
        f"{S}.legal_basis_reference",
        "is longer than 120 characters",
    ),
    case(
        "offence-unknown-code",
        replacing("seizure_request.offence_categories", [99]),
        f"{S}.offence_categories[0]",
        "99 is not a OffenceCategory code",
    ),
    case(
        "offence-twice",
        replacing("seizure_request.offence_categories", [6, 6]),
        f"{S}.offence_categories[1]",
        "is listed twice",
    ),
    case(
        "more-than-100-items",
        replacing("seizure_request.items", seizure_items(101)),
        f"{S}.items",
        "at most 100 entries",
    ),
    case(
        "item-category-unknown-code",
        setting("seizure_request.items[0].category", 99),
        f"{S}.items[0].category",
        "99 is not a SeizureItemCategory code",
    ),
    case(
        "item-measure-unknown-code",
        setting("seizure_request.items[1].measure", 99),
        f"{S}.items[1].measure",
        "99 is not a SeizureMeasure code",
    ),
    case(
        "item-id-blank",
        setting("seizure_request.items[0].item_id", "  "),
        f"{S}.items[0].item_id",
        "is required",
    ),
    case(
        "item-id-in-capitals",
        setting("seizure_request.items[0].item_id", "I1"),
        f"{S}.items[0].item_id",
        "must be a short id such as i1",
    ),
    case(
        "item-id-with-a-space",
        setting("seizure_request.items[1].item_id", "i 2"),
        f"{S}.items[1].item_id",
        "must be a short id such as i1",
    ),
    case(
        "item-id-starting-with-a-hyphen",
        setting("seizure_request.items[0].item_id", "-i1"),
        f"{S}.items[0].item_id",
        "must be a short id such as i1",
    ),
    case(
        # A word could carry a name or a place: ids are labels.
        "item-id-a-word",
        setting("seizure_request.items[0].item_id", "kitchen"),
        f"{S}.items[0].item_id",
        "must be a short id such as i1",
    ),
    case(
        "item-id-hyphenated-words",
        setting("seizure_request.items[0].item_id", "premises-kitchen"),
        f"{S}.items[0].item_id",
        "must be a short id such as i1",
    ),
    case(
        "item-id-over-16",
        setting("seizure_request.items[0].item_id", "i" * 17),
        f"{S}.items[0].item_id",
        "is longer than 16 characters",
    ),
    case(
        "item-id-control-character",
        setting("seizure_request.items[0].item_id", "i1\x00"),
        f"{S}.items[0].item_id",
        "contains control characters",
    ),
    case(
        "item-id-twice",
        setting("seizure_request.items[1].item_id", "i1"),
        f"{S}.items[1].item_id",
        "is listed twice",
    ),
    # OPSC art. 7(c): only premises are closed (premises may also be seized).
    case(
        "devices-closed-as-premises",
        item(pb.SEIZURE_ITEM_CATEGORY_DEVICES, pb.SEIZURE_MEASURE_CLOSE_PREMISES),
        f"{S}.items[0].measure",
        "only premises are closed",
    ),
    case(
        "proceeds-closed-as-premises",
        item(pb.SEIZURE_ITEM_CATEGORY_PROCEEDS, pb.SEIZURE_MEASURE_CLOSE_PREMISES),
        f"{S}.items[0].measure",
        "only premises are closed",
    ),
    case(
        "location-reference-over-200",
        setting("seizure_request.items[0].location_reference", "l" * 201),
        f"{S}.items[0].location_reference",
        "is longer than 200 characters",
    ),
    case(
        "location-reference-control-character",
        setting("seizure_request.items[0].location_reference", "12 Baker Street\r"),
        f"{S}.items[0].location_reference",
        "contains control characters",
    ),
    case(
        "unknown-field-in-an-item",
        appending_in_body("seizure_request", message_field(4, UNKNOWN)),
        f"{S}.items[2]",
        "carries fields this catalogue does not define",
    ),
    case(
        "urgency-unknown-code",
        setting("seizure_request.urgency", 99),
        f"{S}.urgency",
        "99 is not a Urgency code",
    ),
    # Deadlines: in the future, within 365 days; urgent in hours, ordinary in days.
    case(
        "deadline-in-the-past",
        seizure_deadline(-dt.timedelta(seconds=1)),
        f"{S}.response_deadline",
        "must be in the future, within 365 days",
    ),
    case(
        "deadline-now",
        seizure_deadline(dt.timedelta(0)),
        f"{S}.response_deadline",
        "must be in the future, within 365 days",
    ),
    case(
        "deadline-over-365-days",
        seizure_deadline(dt.timedelta(days=365, seconds=1), pb.URGENCY_ROUTINE),
        f"{S}.response_deadline",
        "must be in the future, within 365 days",
    ),
    case(
        "urgent-deadline-beyond-72-hours",
        seizure_deadline(dt.timedelta(hours=72, seconds=1)),
        f"{S}.response_deadline",
        "an urgent request is due within 72 hours",
    ),
    case(
        "child-at-immediate-risk-deadline-beyond-72-hours",
        seizure_deadline(dt.timedelta(days=4), pb.URGENCY_IMMEDIATE_RISK_TO_CHILD),
        f"{S}.response_deadline",
        "an urgent request is due within 72 hours",
    ),
    case(
        "routine-deadline-within-a-day",
        seizure_deadline(dt.timedelta(hours=24) - dt.timedelta(seconds=1), pb.URGENCY_ROUTINE),
        f"{S}.response_deadline",
        "a request due within 24 hours must be marked urgent",
    ),
    case(
        "priority-deadline-within-a-day",
        seizure_deadline(HOURS, pb.URGENCY_PRIORITY),
        f"{S}.response_deadline",
        "a request due within 24 hours must be marked urgent",
    ),
    case(
        "deadline-not-a-valid-timestamp",
        setting("seizure_request.response_deadline.seconds", 10**13),
        f"{S}.response_deadline",
        "is not a valid timestamp",
    ),
    case(
        "summary-over-500",
        setting("seizure_request.summary", "s" * 501),
        f"{S}.summary",
        "is longer than 500 characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), SEIZURE_REQUEST)
def test_seizure_request_rules_refuse(mutation, field, reason):
    error = run("seizure_request", mutation)

    assert error.field == field
    assert reason in error.reason


SEIZURE_REQUEST_ACCEPTED = [
    pytest.param(seizure_deadline(dt.timedelta(hours=72)), id="urgent-deadline-72-hours"),
    pytest.param(
        seizure_deadline(dt.timedelta(milliseconds=1), pb.URGENCY_IMMEDIATE_RISK_TO_CHILD),
        id="child-at-immediate-risk-deadline-just-ahead",
    ),
    pytest.param(
        seizure_deadline(dt.timedelta(hours=24), pb.URGENCY_ROUTINE),
        id="routine-deadline-one-day-ahead",
    ),
    pytest.param(
        seizure_deadline(dt.timedelta(days=365), pb.URGENCY_PRIORITY),
        id="priority-deadline-exactly-365-days",
    ),
    pytest.param(replacing("seizure_request.items", seizure_items(100)), id="100-items"),
    pytest.param(setting("seizure_request.items[0].item_id", "abc1234"), id="item-id-longest"),
    pytest.param(
        item(pb.SEIZURE_ITEM_CATEGORY_PROCEEDS, pb.SEIZURE_MEASURE_CONFISCATE),
        id="proceeds-confiscated",
    ),
    pytest.param(
        item(pb.SEIZURE_ITEM_CATEGORY_ONLINE_CONTENT, pb.SEIZURE_MEASURE_SEIZE),
        id="online-content-seized",
    ),
    pytest.param(clearing("seizure_request.items[0].quantity"), id="quantity-not-countable"),
    pytest.param(
        clearing("seizure_request.items[1].location_reference"), id="no-location-reference"
    ),
    pytest.param(
        setting("seizure_request.items[0].location_reference", "l" * 200),
        id="location-reference-of-200",
    ),
    pytest.param(clearing("seizure_request.legal_basis_reference"), id="no-reference"),
    pytest.param(clearing("seizure_request.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", SEIZURE_REQUEST_ACCEPTED)
def test_seizure_request_accepts(mutation):
    accepted("seizure_request", mutation)


# --- SeizureResponse (OPSC art. 7) -------------------------------------------------------------

T = "notice.seizure_response"


def execution(status: int, ground: int = 0) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.seizure_response.status = status  # type: ignore[assignment]
        notice.seizure_response.refusal_ground = ground  # type: ignore[assignment]
        return notice

    return mutate


def item_results(count: int) -> list[pb.SeizureItemResult]:
    return [
        pb.SeizureItemResult(item_id=f"i{n}", status=pb.EXECUTION_STATUS_EXECUTED)
        for n in range(1, count + 1)
    ]


SEIZURE_RESPONSE = [
    case(
        "status-unknown-code",
        setting("seizure_response.status", 99),
        f"{T}.status",
        "99 is not a ExecutionStatus code",
    ),
    case(
        "not-executed-without-ground",
        execution(pb.EXECUTION_STATUS_NOT_EXECUTED),
        f"{T}.refusal_ground",
        "is required for this outcome",
    ),
    case(
        "not-executed-with-unknown-ground",
        execution(pb.EXECUTION_STATUS_NOT_EXECUTED, 99),
        f"{T}.refusal_ground",
        "99 is not a RefusalGround code",
    ),
    case(
        "executed-with-a-ground",
        execution(pb.EXECUTION_STATUS_EXECUTED, pb.REFUSAL_GROUND_NO_LEGAL_BASIS),
        f"{T}.refusal_ground",
        "only with an outcome that refuses or defers",
    ),
    case(
        "partially-executed-with-a-ground",
        execution(pb.EXECUTION_STATUS_PARTIALLY_EXECUTED, pb.REFUSAL_GROUND_ESSENTIAL_INTERESTS),
        f"{T}.refusal_ground",
        "only with an outcome that refuses or defers",
    ),
    case(
        "pending-with-a-ground",
        execution(pb.EXECUTION_STATUS_PENDING, pb.REFUSAL_GROUND_ONGOING_DOMESTIC_PROCEEDINGS),
        f"{T}.refusal_ground",
        "only with an outcome that refuses or defers",
    ),
    case(
        "more-than-100-results",
        replacing("seizure_response.item_results", item_results(101)),
        f"{T}.item_results",
        "at most 100 entries",
    ),
    case(
        "result-item-id-in-capitals",
        setting("seizure_response.item_results[0].item_id", "I1"),
        f"{T}.item_results[0].item_id",
        "must be a short id such as i1",
    ),
    case(
        "result-item-id-over-16",
        setting("seizure_response.item_results[1].item_id", "i" * 17),
        f"{T}.item_results[1].item_id",
        "is longer than 16 characters",
    ),
    case(
        "result-for-the-same-item-twice",
        setting("seizure_response.item_results[1].item_id", "i1"),
        f"{T}.item_results[1].item_id",
        "is listed twice",
    ),
    case(
        "result-status-unknown-code",
        setting("seizure_response.item_results[0].status", 99),
        f"{T}.item_results[0].status",
        "99 is not a ExecutionStatus code",
    ),
    case(
        "summary-over-500",
        setting("seizure_response.summary", "s" * 501),
        f"{T}.summary",
        "is longer than 500 characters",
    ),
    case(
        "summary-control-character",
        setting("seizure_response.summary", "seized\x07"),
        f"{T}.summary",
        "contains control characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), SEIZURE_RESPONSE)
def test_seizure_response_rules_refuse(mutation, field, reason):
    error = run("seizure_response", mutation)

    assert error.field == field
    assert reason in error.reason


SEIZURE_RESPONSE_ACCEPTED = [
    pytest.param(
        execution(pb.EXECUTION_STATUS_NOT_EXECUTED, pb.REFUSAL_GROUND_DUAL_CRIMINALITY_NOT_MET),
        id="not-executed-with-ground",
    ),
    pytest.param(execution(pb.EXECUTION_STATUS_EXECUTED), id="executed-without-ground"),
    pytest.param(clearing("seizure_response.item_results"), id="no-item-results"),
    pytest.param(
        replacing("seizure_response.item_results", item_results(100)), id="100-item-results"
    ),
    pytest.param(clearing("seizure_response.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", SEIZURE_RESPONSE_ACCEPTED)
def test_seizure_response_accepts(mutation):
    accepted("seizure_response", mutation)


# --- VictimSupportCoordination (OPSC art. 8, 9, 10(2)) -----------------------------------------

V = "notice.victim_support_coordination"
ALL_STEPS = [
    pb.RepatriationStep(step=step, status=pb.STEP_STATUS_PLANNED)  # type: ignore[arg-type]
    for step in range(1, 6)
]

VICTIM_SUPPORT = [
    case(
        "age-band-unknown-code",
        setting("victim_support_coordination.age_band", 99),
        f"{V}.age_band",
        "99 is not a AgeBand code",
    ),
    case(
        "need-unspecified",
        replacing("victim_support_coordination.needs", [pb.VICTIM_NEED_UNSPECIFIED]),
        f"{V}.needs[0]",
        "is required",
    ),
    case(
        "need-unknown-code",
        replacing("victim_support_coordination.needs", [pb.VICTIM_NEED_LEGAL_AID, 99]),
        f"{V}.needs[1]",
        "99 is not a VictimNeed code",
    ),
    case(
        "need-twice",
        replacing(
            "victim_support_coordination.needs",
            [pb.VICTIM_NEED_MEDICAL_CARE, pb.VICTIM_NEED_MEDICAL_CARE],
        ),
        f"{V}.needs[1]",
        "is listed twice",
    ),
    case(
        "more-than-nine-needs",
        replacing("victim_support_coordination.needs", [*range(1, 10), 1]),
        f"{V}.needs",
        "at most 9 entries",
    ),
    case(
        "best-interests-unknown-code",
        setting("victim_support_coordination.best_interests", 99),
        f"{V}.best_interests",
        "99 is not a BestInterestsStatus code",
    ),
    case(
        "step-unknown-code",
        setting("victim_support_coordination.repatriation_steps[0].step", 99),
        f"{V}.repatriation_steps[0].step",
        "99 is not a RepatriationStepType code",
    ),
    case(
        "step-status-unknown-code",
        setting("victim_support_coordination.repatriation_steps[1].status", 99),
        f"{V}.repatriation_steps[1].status",
        "99 is not a StepStatus code",
    ),
    case(
        "step-twice",
        setting(
            "victim_support_coordination.repatriation_steps[1].step",
            pb.REPATRIATION_STEP_TYPE_FAMILY_ASSESSMENT,
        ),
        f"{V}.repatriation_steps[1].step",
        "is listed twice",
    ),
    case(
        "more-than-five-steps",
        replacing("victim_support_coordination.repatriation_steps", [*ALL_STEPS, ALL_STEPS[0]]),
        f"{V}.repatriation_steps",
        "at most 5 entries",
    ),
    case(
        "urgency-unknown-code",
        setting("victim_support_coordination.urgency", 99),
        f"{V}.urgency",
        "99 is not a Urgency code",
    ),
    case(
        "summary-over-500",
        setting("victim_support_coordination.summary", "s" * 501),
        f"{V}.summary",
        "is longer than 500 characters",
    ),
    case(
        "summary-control-character",
        setting("victim_support_coordination.summary", "escort\x9barranged"),
        f"{V}.summary",
        "contains control characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), VICTIM_SUPPORT)
def test_victim_support_coordination_rules_refuse(mutation, field, reason):
    error = run("victim_support_coordination", mutation)

    assert error.field == field
    assert reason in error.reason


VICTIM_SUPPORT_ACCEPTED = [
    # OPSC art. 8(2): an uncertain age never blocks support.
    pytest.param(
        setting("victim_support_coordination.age_band", pb.AGE_BAND_UNKNOWN), id="age-unknown"
    ),
    pytest.param(
        replacing("victim_support_coordination.needs", list(range(1, 10))), id="all-nine-needs"
    ),
    pytest.param(
        replacing("victim_support_coordination.repatriation_steps", ALL_STEPS),
        id="all-five-steps",
    ),
    pytest.param(clearing("victim_support_coordination.repatriation_steps"), id="no-steps"),
    pytest.param(clearing("victim_support_coordination.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", VICTIM_SUPPORT_ACCEPTED)
def test_victim_support_coordination_accepts(mutation):
    accepted("victim_support_coordination", mutation)


# --- TravelAlert (OPSC art. 10(1)) -------------------------------------------------------------

L = "notice.travel_alert"
DAYS = dt.timedelta(days=1)


def window(start: dt.timedelta, end: dt.timedelta) -> Mutation:
    return combined(
        timing("travel_alert.travel_from", start), timing("travel_alert.travel_until", end)
    )


def ports(count: int) -> list[pb.Port]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [pb.Port(locode=f"XC{letters[n]}AA", mode=pb.TRAVEL_MODE_LAND) for n in range(count)]


TRAVEL_ALERT = [
    case(
        "conviction-unknown-code",
        replacing("travel_alert.convicted_of", [99]),
        f"{L}.convicted_of[0]",
        "99 is not a OffenceCategory code",
    ),
    case(
        "conviction-twice",
        replacing("travel_alert.convicted_of", [5, 5]),
        f"{L}.convicted_of[1]",
        "is listed twice",
    ),
    # The window: from < until <= from + 90 days, and not yet over.
    case(
        "window-of-no-time",
        window(DAYS, DAYS),
        f"{L}.travel_until",
        "must follow travel_from, within 90 days",
    ),
    case(
        "window-ending-before-it-starts",
        window(2 * DAYS, DAYS),
        f"{L}.travel_until",
        "must follow travel_from, within 90 days",
    ),
    case(
        "window-longer-than-90-days",
        window(DAYS, 91 * DAYS + dt.timedelta(seconds=1)),
        f"{L}.travel_until",
        "must follow travel_from, within 90 days",
    ),
    case(
        "window-over-now",
        window(-2 * DAYS, dt.timedelta(0)),
        f"{L}.travel_until",
        "the travel window is over",
    ),
    case(
        "window-over-yesterday",
        window(-3 * DAYS, -DAYS),
        f"{L}.travel_until",
        "the travel window is over",
    ),
    case(
        "travel-from-not-a-valid-timestamp",
        setting("travel_alert.travel_from.seconds", 10**13),
        f"{L}.travel_from",
        "is not a valid timestamp",
    ),
    case(
        "travel-until-not-a-valid-timestamp",
        setting("travel_alert.travel_until.nanos", -1),
        f"{L}.travel_until",
        "is not a valid timestamp",
    ),
    case(
        "more-than-20-ports",
        replacing("travel_alert.ports", ports(21)),
        f"{L}.ports",
        "at most 20 entries",
    ),
    # UN/LOCODE: a country code and three letters or digits 2-9.
    case(
        "locode-in-lower-case",
        setting("travel_alert.ports[0].locode", "xcaaa"),
        f"{L}.ports[0].locode",
        "must be a UN/LOCODE such as XAAAA",
    ),
    case(
        "locode-with-digit-one",
        setting("travel_alert.ports[1].locode", "XCAA1"),
        f"{L}.ports[1].locode",
        "must be a UN/LOCODE such as XAAAA",
    ),
    case(
        "locode-with-digit-zero",
        setting("travel_alert.ports[0].locode", "XCA0A"),
        f"{L}.ports[0].locode",
        "must be a UN/LOCODE such as XAAAA",
    ),
    case(
        "locode-with-digit-in-country",
        setting("travel_alert.ports[0].locode", "X2AAA"),
        f"{L}.ports[0].locode",
        "must be a UN/LOCODE such as XAAAA",
    ),
    case(
        "locode-of-four",
        setting("travel_alert.ports[0].locode", "XCAA"),
        f"{L}.ports[0].locode",
        "must be a UN/LOCODE such as XAAAA",
    ),
    case(
        "locode-with-a-space",
        setting("travel_alert.ports[0].locode", "XC AA"),
        f"{L}.ports[0].locode",
        "must be a UN/LOCODE such as XAAAA",
    ),
    case(
        "locode-of-six",
        setting("travel_alert.ports[0].locode", "XCAAAA"),
        f"{L}.ports[0].locode",
        "is longer than 5 characters",
    ),
    case(
        "port-mode-unknown-code",
        setting("travel_alert.ports[0].mode", 99),
        f"{L}.ports[0].mode",
        "99 is not a TravelMode code",
    ),
    case(
        "traveller-tokens-over-64",
        replacing("travel_alert.traveller_tokens", distinct_tokens(65)),
        f"{L}.traveller_tokens",
        "at most 64 entries",
    ),
    case(
        "traveller-token-shorter-than-16-bytes",
        replacing("travel_alert.traveller_tokens", [bytes(15)]),
        f"{L}.traveller_tokens[0]",
        "must be 16 to 64 bytes",
    ),
    case(
        "traveller-token-longer-than-64-bytes",
        replacing("travel_alert.traveller_tokens", [TOKEN, bytes(65)]),
        f"{L}.traveller_tokens[1]",
        "must be 16 to 64 bytes",
    ),
    case(
        "traveller-token-twice",
        replacing("travel_alert.traveller_tokens", [TOKEN, TOKEN]),
        f"{L}.traveller_tokens[1]",
        "is listed twice",
    ),
    case("risk-unknown-code", setting("travel_alert.risk", 99), f"{L}.risk", "RiskLevel code"),
    case(
        "urgency-unknown-code",
        setting("travel_alert.urgency", 99),
        f"{L}.urgency",
        "99 is not a Urgency code",
    ),
    case(
        "summary-over-500",
        setting("travel_alert.summary", "s" * 501),
        f"{L}.summary",
        "is longer than 500 characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), TRAVEL_ALERT)
def test_travel_alert_rules_refuse(mutation, field, reason):
    error = run("travel_alert", mutation)

    assert error.field == field
    assert reason in error.reason


def test_the_same_port_listed_twice_is_refused():
    twice = [pb.Port(locode="XCAAA", mode=pb.TRAVEL_MODE_AIR)] * 2
    error = run("travel_alert", replacing("travel_alert.ports", twice))

    assert (error.field, error.reason) == (f"{L}.ports[1]", "is listed twice")


TRAVEL_ALERT_ACCEPTED = [
    pytest.param(window(DAYS, 91 * DAYS), id="window-of-exactly-90-days"),
    pytest.param(window(-DAYS, dt.timedelta(seconds=1)), id="window-begun-not-over"),
    pytest.param(setting("travel_alert.ports[0].locode", "XA2B9"), id="locode-with-digits-2-to-9"),
    pytest.param(replacing("travel_alert.ports", ports(20)), id="20-ports"),
    pytest.param(
        setting("travel_alert.ports[1].locode", "XCAAA"), id="one-locode-by-air-and-by-sea"
    ),
    pytest.param(
        replacing("travel_alert.traveller_tokens", distinct_tokens(64)), id="64-traveller-tokens"
    ),
    pytest.param(clearing("travel_alert.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", TRAVEL_ALERT_ACCEPTED)
def test_travel_alert_accepts(mutation):
    accepted("travel_alert", mutation)


# --- ContentHashReferral (OPSC art. 3(1)(c), 7) ------------------------------------------------

H = "notice.content_hash_referral"


def hashed(algorithm: int, value: bytes) -> Mutation:
    return replacing(
        "content_hash_referral.hashes",
        [pb.ContentHash(algorithm=algorithm, value=value)],  # type: ignore[arg-type]
    )


CONTENT_HASH = [
    case(
        "hosting-link-unknown-code",
        setting("content_hash_referral.hosting_link", 99),
        f"{H}.hosting_link",
        "99 is not a HostingLink code",
    ),
    case(
        "algorithm-unknown-code",
        setting("content_hash_referral.hashes[1].algorithm", 99),
        f"{H}.hashes[1].algorithm",
        "99 is not a HashAlgorithm code",
    ),
    # Sizes per algorithm: SHA-256 and PDQ 32 bytes, MD5 16, PhotoDNA 1 to 256.
    case(
        "sha256-of-31-bytes",
        hashed(pb.HASH_ALGORITHM_SHA256, bytes(31)),
        f"{H}.hashes[0].value",
        "must be 32 to 32 bytes",
    ),
    case(
        "sha256-of-33-bytes",
        hashed(pb.HASH_ALGORITHM_SHA256, bytes(33)),
        f"{H}.hashes[0].value",
        "must be 32 to 32 bytes",
    ),
    case(
        "md5-of-32-bytes",
        hashed(pb.HASH_ALGORITHM_MD5, bytes(32)),
        f"{H}.hashes[0].value",
        "must be 16 to 16 bytes",
    ),
    case(
        "pdq-of-16-bytes",
        hashed(pb.HASH_ALGORITHM_PDQ, bytes(16)),
        f"{H}.hashes[0].value",
        "must be 32 to 32 bytes",
    ),
    case(
        "photodna-of-257-bytes",
        hashed(pb.HASH_ALGORITHM_PHOTODNA, bytes(257)),
        f"{H}.hashes[0].value",
        "must be 1 to 256 bytes",
    ),
    case(
        "hash-twice",
        combined(
            setting("content_hash_referral.hashes[2].algorithm", pb.HASH_ALGORITHM_SHA256),
            setting("content_hash_referral.hashes[2].value", bytes(range(32))),
        ),
        f"{H}.hashes[2]",
        "is listed twice",
    ),
    case(
        "unknown-field-in-a-hash",
        appending_in_body("content_hash_referral", message_field(2, UNKNOWN)),
        f"{H}.hashes[4]",
        "carries fields this catalogue does not define",
    ),
    # Requested actions: only actions on material.
    case(
        "information-only",
        replacing(
            "content_hash_referral.requested_actions", [pb.REQUESTED_ACTION_INFORMATION_ONLY]
        ),
        f"{H}.requested_actions[0]",
        "is not an action on material",
    ),
    case(
        "locate-suspect",
        replacing(
            "content_hash_referral.requested_actions",
            [pb.REQUESTED_ACTION_REMOVE_CONTENT, pb.REQUESTED_ACTION_LOCATE_SUSPECT],
        ),
        f"{H}.requested_actions[1]",
        "is not an action on material",
    ),
    case(
        "consider-prosecution",
        replacing(
            "content_hash_referral.requested_actions", [pb.REQUESTED_ACTION_CONSIDER_PROSECUTION]
        ),
        f"{H}.requested_actions[0]",
        "is not an action on material",
    ),
    case(
        "safeguard-victim",
        replacing(
            "content_hash_referral.requested_actions", [pb.REQUESTED_ACTION_SAFEGUARD_VICTIM]
        ),
        f"{H}.requested_actions[0]",
        "is not an action on material",
    ),
    case(
        "action-unknown-code",
        replacing("content_hash_referral.requested_actions", [99]),
        f"{H}.requested_actions[0]",
        "99 is not a RequestedAction code",
    ),
    case(
        "action-twice",
        replacing("content_hash_referral.requested_actions", [8, 8]),
        f"{H}.requested_actions[1]",
        "is listed twice",
    ),
    case(
        "more-than-four-actions",
        replacing("content_hash_referral.requested_actions", [8, 6, 9, 2, 1]),
        f"{H}.requested_actions",
        "at most 4 entries",
    ),
    case(
        "summary-over-500",
        setting("content_hash_referral.summary", "s" * 501),
        f"{H}.summary",
        "is longer than 500 characters",
    ),
    case(
        "summary-control-character",
        setting("content_hash_referral.summary", "hosted\x7f"),
        f"{H}.summary",
        "contains control characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), CONTENT_HASH)
def test_content_hash_referral_rules_refuse(mutation, field, reason):
    error = run("content_hash_referral", mutation)

    assert error.field == field
    assert reason in error.reason


CONTENT_HASH_ACCEPTED = [
    pytest.param(hashed(pb.HASH_ALGORITHM_PHOTODNA, bytes(1)), id="photodna-of-1-byte"),
    pytest.param(hashed(pb.HASH_ALGORITHM_PHOTODNA, bytes(256)), id="photodna-of-256-bytes"),
    pytest.param(
        setting("content_hash_referral.hashes[2].value", bytes(range(32))),
        id="one-value-under-two-algorithms",
    ),
    pytest.param(
        replacing("content_hash_referral.requested_actions", [8, 6, 9, 2]),
        id="all-four-actions-on-material",
    ),
    pytest.param(clearing("content_hash_referral.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", CONTENT_HASH_ACCEPTED)
def test_content_hash_referral_accepts(mutation):
    accepted("content_hash_referral", mutation)


def hashes_of(algorithm: int, size: int, count: int) -> pb.Notice:
    notice = content_hash_referral()
    hashes = notice.content_hash_referral.hashes
    del hashes[:]
    hashes.extend(
        pb.ContentHash(algorithm=algorithm, value=n.to_bytes(size, "big"))  # type: ignore[arg-type]
        for n in range(count)
    )
    return notice


def sha256_hashes(count: int) -> pb.Notice:
    return hashes_of(pb.HASH_ALGORITHM_SHA256, 32, count)


@pytest.fixture(scope="module")
def bulk() -> pb.Notice:
    """The largest referral of SHA-256 hashes a node accepts (copied by each test)."""
    return sha256_hashes(disclosure.MAX_HASHES)


def test_a_referral_of_500000_sha256_hashes_passes(bulk: pb.Notice) -> None:
    assert disclosure.MAX_HASHES == 500_000
    assert validate_notice(bulk, now=NOW) == K.NOTICE_KIND_CONTENT_HASH_REFERRAL


def test_a_referral_of_500001_hashes_is_refused() -> None:
    error = refusal(sha256_hashes(500_001))

    assert (error.field, error.reason) == (f"{H}.hashes", "at most 500000 entries")


def _entry(index: int, **fields: Any) -> Callable[[pb.Notice], None]:
    def change(notice: pb.Notice) -> None:
        entry = notice.content_hash_referral.hashes[index]
        entry.Clear()
        entry.MergeFrom(pb.ContentHash(**fields))

    return change


# One bad entry deep among 500,000: the whole list is checked column by column in
# one pass, and the refusal still names the first entry that breaks a rule.
BAD_ENTRY_AMONG_500000 = [
    pytest.param(
        _entry(499_999, algorithm=pb.HASH_ALGORITHM_SHA256, value=(7).to_bytes(32, "big")),
        f"{H}.hashes[499999]",
        "is listed twice",
        id="last-repeats-the-eighth",
    ),
    pytest.param(
        _entry(300_000, algorithm=99, value=bytes(32)),
        f"{H}.hashes[300000].algorithm",
        "99 is not a HashAlgorithm code",
        id="unknown-algorithm",
    ),
    pytest.param(
        _entry(250_000, value=bytes(32)),
        f"{H}.hashes[250000].algorithm",
        "is required",
        id="no-algorithm",
    ),
    pytest.param(
        _entry(123_456, algorithm=pb.HASH_ALGORITHM_SHA256),
        f"{H}.hashes[123456].value",
        "is required",
        id="no-value",
    ),
    pytest.param(
        _entry(400_000, algorithm=pb.HASH_ALGORITHM_SHA256, value=bytes(257)),
        f"{H}.hashes[400000].value",
        "must be 1 to 256 bytes",
        id="value-over-any-algorithm",
    ),
    pytest.param(
        _entry(499_998, algorithm=pb.HASH_ALGORITHM_MD5, value=bytes(32)),
        f"{H}.hashes[499998].value",
        "must be 16 to 16 bytes",
        id="md5-of-32-among-sha256",
    ),
]


@pytest.mark.parametrize(("change", "field", "reason"), BAD_ENTRY_AMONG_500000)
def test_one_bad_entry_among_500000_is_named(
    bulk: pb.Notice, change: Callable[[pb.Notice], None], field: str, reason: str
) -> None:
    notice = pb.Notice()
    notice.CopyFrom(bulk)
    change(notice)

    error = refusal(notice)

    assert (error.field, error.reason) == (field, reason)


def test_500000_hashes_of_mixed_algorithms_pass() -> None:
    notice = sha256_hashes(400_000)
    notice.content_hash_referral.hashes.extend(
        pb.ContentHash(algorithm=pb.HASH_ALGORITHM_MD5, value=n.to_bytes(16, "big"))
        for n in range(100_000)
    )

    assert validate_notice(notice, now=NOW) == K.NOTICE_KIND_CONTENT_HASH_REFERRAL


def test_hash_values_over_16_mib_are_refused() -> None:
    # 500,000 PhotoDNA values of 34 bytes: 17,000,000 bytes, over 16 MiB.
    error = refusal(hashes_of(pb.HASH_ALGORITHM_PHOTODNA, 34, 500_000))

    assert (error.field, error.reason) == (
        f"{H}.hashes",
        "more than 16 MiB of hash values: split the referral",
    )


def test_the_largest_referral_a_policy_accepts_fits_the_largest_notice_a_recipient_decodes():
    # 500,000 PhotoDNA values of 33 bytes: 16,500,000 bytes of values, the most
    # entries with the most bytes each that the policy accepts.
    notice = hashes_of(pb.HASH_ALGORITHM_PHOTODNA, 33, 500_000)
    notice.content_hash_referral.summary = "s" * 500
    validate_notice(notice, now=NOW)

    assert len(decode_notice(encode_notice(notice)).content_hash_referral.hashes) == 500_000


# --- Withdrawal --------------------------------------------------------------------------------

W = "notice.withdrawal"

WITHDRAWAL = [
    case(
        "reason-unknown-code",
        setting("withdrawal.reason", 99),
        f"{W}.reason",
        "99 is not a WithdrawalReason code",
    ),
    case(
        "note-over-200",
        setting("withdrawal.note", "n" * 201),
        f"{W}.note",
        "is longer than 200 characters",
    ),
    case(
        "note-control-character",
        setting("withdrawal.note", "wrong unit\x1b"),
        f"{W}.note",
        "contains control characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), WITHDRAWAL)
def test_withdrawal_rules_refuse(mutation, field, reason):
    error = run("withdrawal", mutation)

    assert error.field == field
    assert reason in error.reason


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(setting("withdrawal.note", "n" * 200), id="note-of-200"),
        pytest.param(clearing("withdrawal.note"), id="no-note"),
        pytest.param(
            setting("withdrawal.reason", pb.WITHDRAWAL_REASON_SUPERSEDED), id="superseded"
        ),
    ],
)
def test_withdrawal_accepts(mutation):
    accepted("withdrawal", mutation)


# --- DisclosureRequest -------------------------------------------------------------------------

D = "notice.disclosure_request"


def onward(*node_ids: str) -> Mutation:
    """Ask for consent to share onward with `node_ids`, naming no sections."""
    return combined(
        setting("disclosure_request.purpose", pb.DISCLOSURE_PURPOSE_ONWARD_SHARING),
        clearing("disclosure_request.section_ids"),
        replacing("disclosure_request.onward_node_ids", list(node_ids)),
    )


def node_ids(count: int) -> list[str]:
    return [f"node-{chr(ord('a') + n // 26)}{chr(ord('a') + n % 26)}" for n in range(count)]


def section_ids(count: int) -> list[str]:
    return [f"s{n}" for n in range(1, count + 1)]


DISCLOSURE_REQUEST = [
    case(
        "purpose-unknown-code",
        setting("disclosure_request.purpose", 99),
        f"{D}.purpose",
        "99 is not a DisclosurePurpose code",
    ),
    case(
        "legal-basis-unknown-code",
        setting("disclosure_request.legal_basis", 99),
        f"{D}.legal_basis",
        "99 is not a LegalBasis code",
    ),
    case(
        "legal-basis-reference-over-120",
        setting("disclosure_request.legal_basis_reference", "r" * 121),
        f"{D}.legal_basis_reference",
        "is longer than 120 characters",
    ),
    # Scope: onward sharing names nodes and no sections; every other purpose names sections.
    case(
        "safeguarding-naming-no-sections",
        clearing("disclosure_request.section_ids"),
        f"{D}.section_ids",
        "name the restricted sections asked for",
    ),
    case(
        "prosecution-naming-onward-nodes",
        combined(
            setting("disclosure_request.purpose", pb.DISCLOSURE_PURPOSE_PROSECUTION),
            replacing("disclosure_request.onward_node_ids", ["xc-node"]),
        ),
        f"{D}.onward_node_ids",
        "only a request for onward sharing names nodes",
    ),
    case(
        "onward-sharing-naming-no-nodes",
        onward(),
        f"{D}.onward_node_ids",
        "name the nodes to share with",
    ),
    case(
        "onward-sharing-naming-sections",
        combined(onward("xc-node"), replacing("disclosure_request.section_ids", ["s1"])),
        f"{D}.section_ids",
        "a request for onward sharing names no sections",
    ),
    case(
        "section-id-in-capitals",
        replacing("disclosure_request.section_ids", ["s1", "S2"]),
        f"{D}.section_ids[1]",
        "is not a section id",
    ),
    case(
        "section-id-a-word",
        replacing("disclosure_request.section_ids", ["victim-identity"]),
        f"{D}.section_ids[0]",
        "is not a section id",
    ),
    case(
        "section-id-with-a-space",
        replacing("disclosure_request.section_ids", ["s 1"]),
        f"{D}.section_ids[0]",
        "is not a section id",
    ),
    case(
        "section-id-over-16",
        replacing("disclosure_request.section_ids", ["s" * 17]),
        f"{D}.section_ids[0]",
        "is longer than 16 characters",
    ),
    case(
        "section-id-twice",
        replacing("disclosure_request.section_ids", ["s1", "s1"]),
        f"{D}.section_ids[1]",
        "is listed twice",
    ),
    case(
        "more-than-eight-sections",
        replacing("disclosure_request.section_ids", section_ids(9)),
        f"{D}.section_ids",
        "at most 8 entries",
    ),
    case(
        "onward-node-id-in-capitals",
        onward("xc-node", "XD-NODE"),
        f"{D}.onward_node_ids[1]",
        "must be 3 to 63 characters",
    ),
    case(
        "onward-node-id-over-63",
        onward("x" * 64),
        f"{D}.onward_node_ids[0]",
        "is longer than 63 characters",
    ),
    case(
        "onward-node-twice",
        onward("xc-node", "xc-node"),
        f"{D}.onward_node_ids[1]",
        "is listed twice",
    ),
    case(
        "more-than-32-onward-nodes",
        onward(*node_ids(33)),
        f"{D}.onward_node_ids",
        "at most 32 entries",
    ),
    case(
        "note-over-200",
        setting("disclosure_request.note", "n" * 201),
        f"{D}.note",
        "is longer than 200 characters",
    ),
    case(
        "note-control-character",
        setting("disclosure_request.note", "needed\x00"),
        f"{D}.note",
        "contains control characters",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), DISCLOSURE_REQUEST)
def test_disclosure_request_rules_refuse(mutation, field, reason):
    error = run("disclosure_request", mutation)

    assert error.field == field
    assert reason in error.reason


DISCLOSURE_REQUEST_ACCEPTED = [
    *(
        pytest.param(
            setting("disclosure_request.purpose", purpose),
            id=f"{pb.DisclosurePurpose.Name(purpose).lower()}-naming-sections",
        )
        for purpose in (
            pb.DISCLOSURE_PURPOSE_SAFEGUARD_VICTIM,
            pb.DISCLOSURE_PURPOSE_IDENTIFY_SUSPECT,
            pb.DISCLOSURE_PURPOSE_PROSECUTION,
            pb.DISCLOSURE_PURPOSE_VICTIM_SUPPORT,
        )
    ),
    pytest.param(onward("xc-node"), id="onward-sharing-with-one-node"),
    pytest.param(onward(*node_ids(32)), id="onward-sharing-with-32-nodes"),
    pytest.param(replacing("disclosure_request.section_ids", section_ids(8)), id="eight-sections"),
    pytest.param(replacing("disclosure_request.section_ids", ["abc1234"]), id="section-id-longest"),
    pytest.param(clearing("disclosure_request.legal_basis_reference"), id="no-reference"),
    pytest.param(clearing("disclosure_request.note"), id="no-note"),
]


@pytest.mark.parametrize("mutation", DISCLOSURE_REQUEST_ACCEPTED)
def test_disclosure_request_accepts(mutation):
    accepted("disclosure_request", mutation)


# --- DisclosureGrant ---------------------------------------------------------------------------

G = "notice.disclosure_grant"


def refused(ground: int = pb.REFUSAL_GROUND_CHILD_BEST_INTERESTS) -> Mutation:
    """A refusal with `ground`, granting nothing."""
    return combined(
        setting("disclosure_grant.decision", pb.DISCLOSURE_DECISION_REFUSED),
        setting("disclosure_grant.refusal_ground", ground),
        clearing("disclosure_grant.sections"),
    )


def granted_onward(*node_ids: str) -> Mutation:
    return combined(
        clearing("disclosure_grant.sections"),
        replacing("disclosure_grant.onward_node_ids", list(node_ids)),
    )


def disclosed(count: int) -> list[pb.DisclosedSection]:
    return [
        pb.DisclosedSection(section_id=f"s{n}", section=restricted_section(), salt=SALT)
        for n in range(1, count + 1)
    ]


DISCLOSURE_GRANT = [
    case(
        "decision-unknown-code",
        setting("disclosure_grant.decision", 99),
        f"{G}.decision",
        "99 is not a DisclosureDecision code",
    ),
    # Scope: an approval grants something; a refusal grants nothing and says why.
    case(
        "approval-granting-nothing",
        clearing("disclosure_grant.sections"),
        f"{G}.sections",
        "an approval grants sections or onward sharing",
    ),
    case(
        "refusal-granting-sections",
        combined(
            setting("disclosure_grant.decision", pb.DISCLOSURE_DECISION_REFUSED),
            setting("disclosure_grant.refusal_ground", pb.REFUSAL_GROUND_NOT_NECESSARY_FOR_PURPOSE),
        ),
        f"{G}.sections",
        "a refusal grants nothing",
    ),
    case(
        "refusal-granting-onward-sharing",
        combined(refused(), replacing("disclosure_grant.onward_node_ids", ["xc-node"])),
        f"{G}.onward_node_ids",
        "a refusal grants nothing",
    ),
    case(
        "refusal-without-ground",
        refused(pb.REFUSAL_GROUND_UNSPECIFIED),
        f"{G}.refusal_ground",
        "is required for this outcome",
    ),
    case(
        "refusal-with-unknown-ground",
        refused(99),
        f"{G}.refusal_ground",
        "99 is not a RefusalGround code",
    ),
    case(
        "approval-with-a-ground",
        setting("disclosure_grant.refusal_ground", pb.REFUSAL_GROUND_CHILD_BEST_INTERESTS),
        f"{G}.refusal_ground",
        "only with an outcome that refuses or defers",
    ),
    case(
        "section-id-blank",
        setting("disclosure_grant.sections[0].section_id", " "),
        f"{G}.sections[0].section_id",
        "is required",
    ),
    case(
        "section-id-over-16",
        setting("disclosure_grant.sections[0].section_id", "s" * 17),
        f"{G}.sections[0].section_id",
        "is longer than 16 characters",
    ),
    case(
        "section-twice",
        replacing("disclosure_grant.sections", [*disclosed(1), *disclosed(1)]),
        f"{G}.sections[1]",
        "is listed twice",
    ),
    case(
        "more-than-eight-sections",
        replacing("disclosure_grant.sections", disclosed(9)),
        f"{G}.sections",
        "at most 8 entries",
    ),
    case(
        "section-type-unknown-code",
        setting("disclosure_grant.sections[0].section.type", 99),
        f"{G}.sections[0].section.type",
        "99 is not a SectionType code",
    ),
    case(
        "section-content-blank",
        setting("disclosure_grant.sections[0].section.content", "\n\t "),
        f"{G}.sections[0].section.content",
        "is required",
    ),
    case(
        "section-content-over-2000",
        setting("disclosure_grant.sections[0].section.content", "c" * 2001),
        f"{G}.sections[0].section.content",
        "is longer than 2000 characters",
    ),
    case(
        "section-content-control-character",
        setting("disclosure_grant.sections[0].section.content", "Mira\x00Example"),
        f"{G}.sections[0].section.content",
        "contains control characters",
    ),
    case(
        "salt-of-31-bytes",
        setting("disclosure_grant.sections[0].salt", bytes(31)),
        f"{G}.sections[0].salt",
        "must be 32 to 32 bytes",
    ),
    case(
        "salt-of-33-bytes",
        setting("disclosure_grant.sections[0].salt", bytes(33)),
        f"{G}.sections[0].salt",
        "must be 32 to 32 bytes",
    ),
    case(
        "unknown-field-in-a-section",
        appending_in_body("disclosure_grant", message_field(2, UNKNOWN)),
        f"{G}.sections[1]",
        "carries fields this catalogue does not define",
    ),
    case(
        "onward-node-id-invalid",
        granted_onward("xc_node"),
        f"{G}.onward_node_ids[0]",
        "must be 3 to 63 characters",
    ),
    case(
        "onward-node-twice",
        granted_onward("xc-node", "xc-node"),
        f"{G}.onward_node_ids[1]",
        "is listed twice",
    ),
    case(
        "more-than-32-onward-nodes",
        granted_onward(*node_ids(33)),
        f"{G}.onward_node_ids",
        "at most 32 entries",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), DISCLOSURE_GRANT)
def test_disclosure_grant_rules_refuse(mutation, field, reason):
    error = run("disclosure_grant", mutation)

    assert error.field == field
    assert reason in error.reason


DISCLOSURE_GRANT_ACCEPTED = [
    pytest.param(refused(), id="refusal-with-ground-granting-nothing"),
    pytest.param(granted_onward("xc-node"), id="approval-of-onward-sharing"),
    pytest.param(granted_onward(*node_ids(32)), id="approval-of-onward-sharing-with-32-nodes"),
    pytest.param(replacing("disclosure_grant.sections", disclosed(8)), id="eight-sections"),
    pytest.param(
        setting("disclosure_grant.sections[0].section.content", "c" * 2000),
        id="content-of-2000",
    ),
    pytest.param(
        setting("disclosure_grant.sections[0].section.content", "Mira Example\n\tage 12"),
        id="content-over-lines",
    ),
]


@pytest.mark.parametrize("mutation", DISCLOSURE_GRANT_ACCEPTED)
def test_disclosure_grant_accepts(mutation):
    accepted("disclosure_grant", mutation)


# --- free text and the identifiers each field exists for (OPSC art. 8) -------------------------

EMAIL = "duty@ncu.xa.example"
PHONE = "+44 20 7946 0958"
STREET = "12 Baker Street"
BIRTH_DATE = "born 12 March 2018"
PASSPORT = "ref AB1234567"


def text(body: str, path: str, value: str, case_id: str) -> Any:
    return pytest.param(body, path, value, id=case_id)


TEXT_ACCEPTED = [
    # The contact point's functional channel exists for the unit's own mailbox or phone.
    text("travel_alert", "contact_point.functional_channel", EMAIL, "channel-holds-an-e-mail"),
    text("seizure_request", "contact_point.functional_channel", PHONE, "channel-holds-a-phone"),
    text(
        "extradition_notice",
        "contact_point.functional_channel",
        f"{PHONE} or {EMAIL}",
        "channel-holds-a-phone-and-an-e-mail",
    ),
    # A seizure item's location reference exists for premises: a street address.
    text("seizure_request", "items[0].location_reference", STREET, "location-holds-an-address"),
    text(
        "seizure_request",
        "items[1].location_reference",
        "Hauptstraße 5",
        "location-holds-a-german-address",
    ),
    text(
        "seizure_request",
        "items[1].location_reference",
        "Seized at 10 rue de Rivoli",
        "location-holds-a-french-address",
    ),
    # A disclosed section exists for exactly what the notice held back.
    text(
        "disclosure_grant",
        "sections[0].section.content",
        IDENTITY,
        "section-holds-a-name-birth-date-passport-phone-address-and-e-mail",
    ),
    text("disclosure_grant", "sections[0].section.content", "DOB 12.03.18", "section-holds-a-dob"),
]


@pytest.mark.parametrize(("body", "path", "value"), TEXT_ACCEPTED)
def test_a_field_admits_the_identifiers_it_exists_for(body, path, value):
    accepted(body, setting(f"{body}.{path}", value))


TEXT_REFUSED = [
    text("extradition_notice", "summary", EMAIL, "summary-holds-an-e-mail"),
    text("seizure_response", "summary", f"Call {PHONE}", "summary-holds-a-phone"),
    text("seizure_request", "summary", f"Premises at {STREET}", "summary-holds-an-address"),
    text("victim_support_coordination", "summary", f"Child {BIRTH_DATE}", "summary-holds-a-dob"),
    text("travel_alert", "summary", PASSPORT, "summary-holds-a-passport-number"),
    text("content_hash_referral", "summary", f"Report to {EMAIL}", "hash-summary-holds-an-e-mail"),
    text("travel_alert", "contact_point.functional_channel", STREET, "channel-holds-an-address"),
    text("travel_alert", "contact_point.unit", EMAIL, "unit-holds-an-e-mail"),
    text(
        "seizure_request",
        "items[0].location_reference",
        f"{STREET}, tenant {PHONE}",
        "location-holds-a-phone",
    ),
    text("seizure_request", "items[0].location_reference", EMAIL, "location-holds-an-e-mail"),
    text("seizure_request", "legal_basis_reference", PASSPORT, "reference-holds-a-passport"),
    text("extradition_notice", "basis_reference", BIRTH_DATE, "basis-reference-holds-a-dob"),
    text("withdrawal", "note", f"Mother's phone {PHONE}", "withdrawal-note-holds-a-phone"),
    text("disclosure_request", "note", f"Answer to {EMAIL}", "request-note-holds-an-e-mail"),
]


@pytest.mark.parametrize(("body", "path", "value"), TEXT_REFUSED)
def test_a_field_refuses_identifiers_it_does_not_exist_for(body, path, value):
    error = run(body, setting(f"{body}.{path}", value))

    assert error.field == f"notice.{body}.{path}"
    assert error.reason.endswith("personal identifiers are refused here")
    # Errors end up in logs and replies to peers: they never echo the text.
    assert value not in str(error)


# --- restricted sections, forwarded notices, fields a policy does not admit --------------------


def commitment(section_id: str = "s1") -> pb.SectionCommitment:
    """The commitment naming `restricted_section()` under `section_id`, salted with SALT."""
    return pb.SectionCommitment(
        section_id=section_id,
        type=pb.SECTION_TYPE_VICTIM_IDENTITY,
        commitment=commit_section(restricted_section(), SALT),
    )


def with_sections(*sections: pb.SectionCommitment) -> Mutation:
    return replacing("restricted_sections", list(sections))


RESTRICTED_SECTIONS_ADMITTED = {
    "extradition_notice": True,
    "seizure_request": True,
    "seizure_response": False,
    "victim_support_coordination": True,
    "travel_alert": True,
    "content_hash_referral": False,
    "withdrawal": False,
    "disclosure_request": False,
    "disclosure_grant": False,
}


@pytest.mark.parametrize(
    "body", [body for body, admitted in RESTRICTED_SECTIONS_ADMITTED.items() if admitted]
)
def test_restricted_sections_are_accepted_where_the_policy_admits_them(body):
    accepted(body, with_sections(commitment()))


@pytest.mark.parametrize(
    "body", [body for body, admitted in RESTRICTED_SECTIONS_ADMITTED.items() if not admitted]
)
def test_restricted_sections_are_not_allowed_where_the_policy_refuses_them(body):
    error = run(body, with_sections(commitment()))

    assert (error.field, error.reason) == (
        "notice.restricted_sections",
        f"is not allowed in {kind_name(VALID[body][1])} notices",
    )


def test_restricted_sections_are_not_allowed_in_an_acknowledgement():
    notice = pb.Notice(
        protection=protection(pb.VICTIM_IDENTIFICATION_UNKNOWN),
        acknowledgement=pb.Acknowledgement(status=pb.ACKNOWLEDGEMENT_STATUS_RECEIVED),
        restricted_sections=[commitment()],
    )
    error = refusal(notice)

    assert (error.field, error.reason) == (
        "notice.restricted_sections",
        "is not allowed in ACKNOWLEDGEMENT notices",
    )


def test_the_sections_table_matches_the_policies():
    assert {body: POLICIES[body].restricted_sections for body in VALID} == (
        RESTRICTED_SECTIONS_ADMITTED
    )


def resetting(dotted: str, value: Any) -> Mutation:
    return combined(with_sections(commitment("s1"), commitment("s2")), setting(dotted, value))


RESTRICTED_SECTIONS = [
    case(
        "more-than-eight-sections",
        with_sections(*(commitment(f"s{n}") for n in range(1, MAX_RESTRICTED_SECTIONS + 2))),
        "notice.restricted_sections",
        "at most 8 sections",
    ),
    case(
        "section-id-twice",
        with_sections(commitment("s1"), commitment("s1")),
        "notice.restricted_sections[1].section_id",
        "must be a unique short id such as s1",
    ),
    case(
        "section-id-empty",
        resetting("restricted_sections[0].section_id", ""),
        "notice.restricted_sections[0].section_id",
        "must be a unique short id such as s1",
    ),
    case(
        "section-id-in-capitals",
        resetting("restricted_sections[1].section_id", "S2"),
        "notice.restricted_sections[1].section_id",
        "must be a unique short id such as s1",
    ),
    case(
        "section-id-a-word",
        resetting("restricted_sections[0].section_id", "victim"),
        "notice.restricted_sections[0].section_id",
        "must be a unique short id such as s1",
    ),
    case(
        "section-id-starting-with-a-hyphen",
        resetting("restricted_sections[0].section_id", "-s1"),
        "notice.restricted_sections[0].section_id",
        "must be a unique short id such as s1",
    ),
    case(
        "section-id-over-16",
        resetting("restricted_sections[0].section_id", "s" * 17),
        "notice.restricted_sections[0].section_id",
        "must be a unique short id such as s1",
    ),
    case(
        "type-missing",
        resetting("restricted_sections[1].type", pb.SECTION_TYPE_UNSPECIFIED),
        "notice.restricted_sections[1].type",
        "is required",
    ),
    case(
        "type-unknown-code",
        resetting("restricted_sections[0].type", 99),
        "notice.restricted_sections[0].type",
        "99 is not a SectionType code",
    ),
    case(
        "commitment-missing",
        resetting("restricted_sections[0].commitment", b""),
        "notice.restricted_sections[0].commitment",
        "must be 32 bytes",
    ),
    case(
        "commitment-of-31-bytes",
        resetting("restricted_sections[0].commitment", bytes(31)),
        "notice.restricted_sections[0].commitment",
        "must be 32 bytes",
    ),
    case(
        "commitment-of-33-bytes",
        resetting("restricted_sections[1].commitment", bytes(33)),
        "notice.restricted_sections[1].commitment",
        "must be 32 bytes",
    ),
    case(
        "unknown-field-in-a-commitment",
        combined(with_sections(commitment()), appending(message_field(2, UNKNOWN))),
        "notice.restricted_sections[1]",
        "carries fields this catalogue does not define",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), RESTRICTED_SECTIONS)
def test_restricted_section_rules_refuse(mutation, field, reason):
    error = run("victim_support_coordination", mutation)

    assert error.field == field
    assert reason in error.reason


def test_eight_sections_of_any_label_ids_are_accepted():
    ids = ["s1", "s2", "a1", "b22", "xyz9999", "i1", "v3", "s8"]

    accepted("victim_support_coordination", with_sections(*(commitment(i) for i in ids)))


def forwarded(origin_node_id: str, origin_message_id: str) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.forwarded_from.origin_node_id = origin_node_id
        notice.forwarded_from.origin_message_id = origin_message_id
        return notice

    return mutate


FORWARDED_FROM = [
    case(
        "origin-empty",
        forwarded("", ""),
        "notice.forwarded_from.origin_node_id",
        "must be 3 to 63 characters",
    ),
    case(
        "origin-node-in-capitals",
        forwarded("XA-NODE", MESSAGE_ID),
        "notice.forwarded_from.origin_node_id",
        "must be 3 to 63 characters",
    ),
    case(
        "origin-message-not-a-uuid",
        forwarded("xa-node", "message-1"),
        "notice.forwarded_from.origin_message_id",
        "must be a UUID",
    ),
    case(
        "origin-message-a-uuid4",
        forwarded("xa-node", "1b4e28ba-2fa1-41d2-883f-0016d3cca427"),
        "notice.forwarded_from.origin_message_id",
        "must be a UUIDv7",
    ),
    case(
        "origin-message-in-capitals",
        forwarded("xa-node", MESSAGE_ID.upper()),
        "notice.forwarded_from.origin_message_id",
        "must be a UUIDv7",
    ),
]


@pytest.mark.parametrize(("mutation", "field", "reason"), FORWARDED_FROM)
def test_forwarded_from_rules_refuse(mutation, field, reason):
    error = run("travel_alert", mutation)

    assert error.field == field
    assert reason in error.reason


def test_a_notice_forwarded_with_a_valid_origin_is_accepted():
    accepted("travel_alert", forwarded("xa-node", MESSAGE_ID))


NOT_ADMITTED = [
    pytest.param("extradition_notice", "summary", "summary", id="extradition-summary"),
    pytest.param(
        "seizure_request",
        "items.location_reference",
        "items[0].location_reference",
        id="seizure-item-location",
    ),
    pytest.param(
        "disclosure_grant", "sections.section.content", "sections[0].section.content", id="grant"
    ),
]


@pytest.mark.parametrize(("body", "path", "at"), NOT_ADMITTED)
def test_a_field_the_policy_does_not_admit_is_refused(monkeypatch, body, path, at):
    # Every field of today's catalogue is admitted somewhere; a field added to the
    # contract (or taken out of a policy) stays unusable until a policy admits it.
    policy = POLICIES[body]
    narrower = dataclasses.replace(
        policy,
        required=policy.required - {path},
        allowed=policy.allowed - {path},
        refused=policy.refused | {path},
    )
    monkeypatch.setitem(disclosure.POLICIES, body, narrower)  # type: ignore[arg-type]
    error = run(body, lambda n: n)

    assert (error.field, error.reason) == (
        f"notice.{body}.{at}",
        f"is not allowed in {policy.name} notices",
    )


# --- staged disclosure -------------------------------------------------------------------------


def test_a_commitment_is_sha256_over_the_tagged_salt_type_and_content():
    # notices.proto: SHA-256 over the encoding of ("exchange.v1.RestrictedSection", salt,
    # u32be(type), utf8(content)); a peer in any language must compute the same.
    section = pb.RestrictedSection(type=pb.SECTION_TYPE_SUSPECT_IDENTITY, content="Max")
    encoded = b"OPSC-EXCHANGE/1" + b"".join(
        struct.pack(">Q", len(part)) + part
        for part in (b"exchange.v1.RestrictedSection", SALT, b"\x00\x00\x00\x02", b"Max")
    )

    assert commit_section(section, SALT) == hashlib.sha256(encoded).digest()
    assert commit_section(section, SALT).hex() == (
        "3b0186de43bcca17d6b46a5dd1745d7d897cbee67a40223d7462225e3eed401d"
    )


def test_a_commitment_does_not_depend_on_protobuf_encoding():
    # Unknown fields change a section's bytes, never what it commits to.
    plain = pb.RestrictedSection(type=pb.SECTION_TYPE_SUSPECT_IDENTITY, content="Max")
    padded = pb.RestrictedSection.FromString(plain.SerializeToString() + b"\x18\x01")

    assert padded.SerializeToString() != plain.SerializeToString()
    assert commit_section(padded, SALT) == commit_section(plain, SALT)


HELD_BACK = [
    case("blank", pb.RestrictedSection(type=1, content=" \n "), "s.content", "is required"),
    case("too-long", pb.RestrictedSection(type=1, content="x" * 2001), "s.content", "2000"),
    case("control", pb.RestrictedSection(type=1, content="a\x1bb"), "s.content", "control"),
    case("no-type", pb.RestrictedSection(content="Jane Roe"), "s.type", "is required"),
    case("unknown-type", pb.RestrictedSection(type=99, content="x"), "s.type", "SectionType"),
    case(
        "unknown-field",
        pb.RestrictedSection.FromString(
            pb.RestrictedSection(type=1, content="x").SerializeToString() + UNKNOWN
        ),
        "s",
        "carries fields",
    ),
]


@pytest.mark.parametrize(("section", "field", "reason"), HELD_BACK)
def test_a_section_to_hold_back_is_checked_before_the_node_commits_to_it(section, field, reason):
    with pytest.raises(ValidationError) as refused:
        check_section(section, "s")

    assert refused.value.field == field
    assert reason in refused.value.reason


def test_a_section_to_hold_back_may_name_the_child():
    # Held back precisely because it identifies: the scanner does not apply.
    check_section(
        pb.RestrictedSection(type=pb.SECTION_TYPE_VICTIM_IDENTITY, content=VICTIM_DETAILS), "s"
    )


VICTIM_DETAILS = "Jane Roe, born 12/03/2013, 4 Elm Street, +44 20 7946 0958, jane@example.org"


def test_a_commitment_is_deterministic_for_a_section_and_salt():
    first = commit_section(restricted_section(), SALT)

    assert commit_section(restricted_section(), SALT) == first
    assert len(first) == 32


COMMITMENT_CHANGES = [
    pytest.param(restricted_section(), OTHER_SALT, id="another-salt"),
    pytest.param(
        pb.RestrictedSection(type=pb.SECTION_TYPE_VICTIM_IDENTITY, content=IDENTITY + "."),
        SALT,
        id="another-content",
    ),
    pytest.param(
        pb.RestrictedSection(type=pb.SECTION_TYPE_WITNESS_DETAILS, content=IDENTITY),
        SALT,
        id="another-type",
    ),
]


@pytest.mark.parametrize(("section", "salt"), COMMITMENT_CHANGES)
def test_a_commitment_changes_with_the_salt_or_the_section(section, salt):
    assert commit_section(section, salt) != commit_section(restricted_section(), SALT)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_salt_that_is_not_32_bytes_is_refused(size):
    with pytest.raises(ValueError, match="a section salt is 32 bytes"):
        commit_section(restricted_section(), bytes(size))


COMMITTED = commit_section(restricted_section(), SALT)

MATCHES = [
    pytest.param(restricted_section(), SALT, COMMITTED, True, id="the-section-committed-to"),
    pytest.param(
        pb.RestrictedSection(type=pb.SECTION_TYPE_VICTIM_IDENTITY, content="Another Child"),
        SALT,
        COMMITTED,
        False,
        id="changed-content",
    ),
    pytest.param(
        pb.RestrictedSection(type=pb.SECTION_TYPE_LOCATION_DETAILS, content=IDENTITY),
        SALT,
        COMMITTED,
        False,
        id="changed-type",
    ),
    pytest.param(restricted_section(), OTHER_SALT, COMMITTED, False, id="changed-salt"),
    pytest.param(restricted_section(), SALT[:31], COMMITTED, False, id="short-salt"),
    pytest.param(restricted_section(), SALT + b"\x00", COMMITTED, False, id="long-salt"),
    pytest.param(restricted_section(), b"", COMMITTED, False, id="no-salt"),
    pytest.param(restricted_section(), SALT, COMMITTED[:31], False, id="short-commitment"),
    pytest.param(restricted_section(), SALT, bytes(32), False, id="another-commitment"),
]


@pytest.mark.parametrize(("section", "salt", "committed", "matches"), MATCHES)
def test_section_matches(section, salt, committed, matches):
    shown = pb.DisclosedSection(section_id="s1", section=section, salt=salt)

    assert section_matches(shown, committed) is matches


def test_a_held_back_section_is_disclosed_and_matched_against_the_signed_commitment():
    # The originator commits to the victim's identity in a support notice ...
    notice = victim_support_coordination()
    notice.restricted_sections.append(commitment("s1"))
    assert validate_notice(notice, now=NOW) == K.NOTICE_KIND_VICTIM_SUPPORT_COORDINATION

    # ... and later grants it: the grant passes its policy, identifiers and all,
    grant = disclosure_grant()
    assert validate_notice(grant, now=NOW) == K.NOTICE_KIND_DISCLOSURE_GRANT

    # ... and the requester's node finds it to be the section committed to.
    shown = decode_notice(encode_notice(grant)).disclosure_grant.sections[0]
    assert section_matches(shown, notice.restricted_sections[0].commitment)


# --- completeness of the policies and of the catalogue -----------------------------------------


def _field(descriptor: Any, path: str) -> FieldDescriptor:
    for name in path.split("."):
        field = descriptor.fields_by_name[name]
        descriptor = field.message_type
    return field


def _body(policy: disclosure.Policy) -> Any:
    return pb.Notice.DESCRIPTOR.fields_by_name[policy.body].message_type


EVERY_POLICY = [pytest.param(policy, id=body) for body, policy in POLICIES.items()]


@pytest.mark.parametrize("policy", EVERY_POLICY)
def test_a_policy_classifies_every_field_of_its_body_exactly_once(policy):
    every = set(field_paths(_body(policy)))

    assert not policy.required & policy.allowed
    assert not policy.required & policy.refused
    assert not policy.allowed & policy.refused
    assert policy.required | policy.allowed | policy.refused == every


@pytest.mark.parametrize("policy", EVERY_POLICY)
def test_every_admitted_field_has_its_limits(policy):
    admitted = policy.required | policy.allowed
    fields = {path: _field(_body(policy), path) for path in admitted}

    texts = {p for p, f in fields.items() if f.type == FieldDescriptor.TYPE_STRING}
    repeated = {p for p, f in fields.items() if f.is_repeated}
    sized = {p for p, f in fields.items() if f.type == FieldDescriptor.TYPE_BYTES}
    assert texts <= set(policy.texts), "a string field without a Text rule"
    assert repeated <= set(policy.many), "a repeated field without a Many rule"
    assert sized <= set(policy.sizes), "a bytes field without a size"
    # ... and no rule names a field the policy does not admit.
    assert set(policy.texts) | set(policy.many) | set(policy.sizes) <= admitted


@pytest.mark.parametrize("policy", EVERY_POLICY)
def test_an_admitted_nested_field_has_an_admitted_parent(policy):
    admitted = policy.required | policy.allowed

    for path in admitted:
        parent = path.rpartition(".")[0]
        assert not parent or parent in admitted, path


@pytest.mark.parametrize("policy", EVERY_POLICY)
def test_a_text_rule_that_requires_a_value_belongs_to_a_required_field(policy):
    for path, rule in policy.texts.items():
        assert not rule.required or path in policy.required, path


@pytest.mark.parametrize("policy", EVERY_POLICY)
def test_a_count_rule_is_coherent(policy):
    for path, limits in policy.many.items():
        assert 0 <= limits.least <= limits.most, path
        assert limits.least == 0 or path in policy.required, path


def test_body_kinds_cover_every_body_and_every_kind():
    bodies = {f.name for f in pb.Notice.DESCRIPTOR.oneofs_by_name["body"].fields}
    kinds = set(env_pb.NoticeKind.values()) - {env_pb.NOTICE_KIND_UNSPECIFIED}

    assert set(BODY_KINDS) == bodies == set(POLICIES)
    assert sorted(BODY_KINDS.values()) == sorted(kinds)
    for body, kind in BODY_KINDS.items():
        assert kind_name(kind) == body.upper()
        assert POLICIES[body].body == body


def test_every_notice_field_beside_the_body_is_checked():
    # The policy checks protection, restricted_sections and forwarded_from itself;
    # a new Notice-level field would bypass every policy.
    beside = {f.name for f in pb.Notice.DESCRIPTOR.fields if f.containing_oneof is None}

    assert beside == {"protection", "restricted_sections", "forwarded_from"}
    # ... and so would a new field inside one of them.
    assert {
        message.DESCRIPTOR.name: [f.name for f in message.DESCRIPTOR.fields]
        for message in (pb.ChildProtectionFlags, pb.SectionCommitment, pb.ForwardedFrom)
    } == {
        "ChildProtectionFlags": ["identity_protected", "age_uncertain", "victim_identification"],
        "SectionCommitment": ["section_id", "type", "commitment"],
        "ForwardedFrom": ["origin_node_id", "origin_message_id"],
    }


# --- which notice answers which ----------------------------------------------------------------

SUBSTANTIVE = [
    K.NOTICE_KIND_CASE_REFERRAL,
    K.NOTICE_KIND_ASSISTANCE_REQUEST,
    K.NOTICE_KIND_ASSISTANCE_RESPONSE,
    K.NOTICE_KIND_EXTRADITION_NOTICE,
    K.NOTICE_KIND_SEIZURE_REQUEST,
    K.NOTICE_KIND_SEIZURE_RESPONSE,
    K.NOTICE_KIND_VICTIM_SUPPORT_COORDINATION,
    K.NOTICE_KIND_TRAVEL_ALERT,
    K.NOTICE_KIND_CONTENT_HASH_REFERRAL,
]

RULES = [
    pytest.param(
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        {K.NOTICE_KIND_ASSISTANCE_REQUEST},
        False,
        id="assistance-response-answers-an-assistance-request",
    ),
    pytest.param(
        K.NOTICE_KIND_SEIZURE_RESPONSE,
        {K.NOTICE_KIND_SEIZURE_REQUEST},
        False,
        id="seizure-response-answers-a-seizure-request",
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_GRANT,
        {K.NOTICE_KIND_DISCLOSURE_REQUEST},
        False,
        id="grant-answers-a-disclosure-request",
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_REQUEST,
        set(SUBSTANTIVE),
        False,
        id="disclosure-request-asks-about-a-substantive-notice-of-the-other-side",
    ),
    pytest.param(
        K.NOTICE_KIND_WITHDRAWAL,
        set(SUBSTANTIVE),
        True,
        id="withdrawal-takes-back-the-senders-own-substantive-notice",
    ),
    pytest.param(
        K.NOTICE_KIND_ACKNOWLEDGEMENT,
        set(BODY_KINDS.values()) - {K.NOTICE_KIND_ACKNOWLEDGEMENT},
        False,
        id="acknowledgement-of-anything-but-an-acknowledgement",
    ),
]


@pytest.mark.parametrize(("kind", "answers", "own"), RULES)
def test_reply_rules(kind, answers, own):
    rule = REPLY_RULES[kind]

    assert (set(rule.answers), rule.own) == (answers, own)


def test_every_reply_only_kind_has_its_rule():
    assert set(REPLY_RULES) == {p.values[0] for p in RULES}


REPLIES_ALLOWED = [
    pytest.param(
        K.NOTICE_KIND_SEIZURE_RESPONSE, K.NOTICE_KIND_SEIZURE_REQUEST, id="seizure-response"
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_GRANT, K.NOTICE_KIND_DISCLOSURE_REQUEST, id="grant-of-a-request"
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_REQUEST,
        K.NOTICE_KIND_VICTIM_SUPPORT_COORDINATION,
        id="disclosure-request-about-victim-support",
    ),
    pytest.param(
        K.NOTICE_KIND_ACKNOWLEDGEMENT, K.NOTICE_KIND_WITHDRAWAL, id="withdrawal-acknowledged"
    ),
    pytest.param(
        K.NOTICE_KIND_ACKNOWLEDGEMENT, K.NOTICE_KIND_DISCLOSURE_GRANT, id="grant-acknowledged"
    ),
    pytest.param(K.NOTICE_KIND_TRAVEL_ALERT, None, id="travel-alert-answers-nothing"),
    pytest.param(K.NOTICE_KIND_EXTRADITION_NOTICE, None, id="extradition-notice-answers-nothing"),
    pytest.param(
        K.NOTICE_KIND_SEIZURE_REQUEST,
        K.NOTICE_KIND_CASE_REFERRAL,
        id="seizure-request-on-a-referral",
    ),
    *(
        pytest.param(
            K.NOTICE_KIND_WITHDRAWAL, kind, id=f"withdrawal-of-a-{kind_name(kind).lower()}"
        )
        for kind in SUBSTANTIVE
    ),
]


@pytest.mark.parametrize(("kind", "answered"), REPLIES_ALLOWED)
def test_validate_reply_allows(kind, answered):
    validate_reply(kind, answered)


REPLIES_REFUSED = [
    pytest.param(
        K.NOTICE_KIND_SEIZURE_RESPONSE,
        None,
        "SEIZURE_RESPONSE must answer a SEIZURE_REQUEST",
        id="seizure-response-alone",
    ),
    pytest.param(
        K.NOTICE_KIND_SEIZURE_RESPONSE,
        K.NOTICE_KIND_ASSISTANCE_REQUEST,
        "not a ASSISTANCE_REQUEST",
        id="seizure-response-to-an-assistance-request",
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_GRANT,
        None,
        "must answer a DISCLOSURE_REQUEST",
        id="grant-alone",
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_GRANT,
        K.NOTICE_KIND_CASE_REFERRAL,
        "not a CASE_REFERRAL",
        id="grant-of-a-referral",
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_REQUEST, None, "must answer", id="disclosure-request-alone"
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_REQUEST,
        K.NOTICE_KIND_DISCLOSURE_GRANT,
        "not a DISCLOSURE_GRANT",
        id="disclosure-request-about-a-grant",
    ),
    pytest.param(
        K.NOTICE_KIND_DISCLOSURE_REQUEST,
        K.NOTICE_KIND_ACKNOWLEDGEMENT,
        "not a ACKNOWLEDGEMENT",
        id="disclosure-request-about-an-acknowledgement",
    ),
    pytest.param(K.NOTICE_KIND_WITHDRAWAL, None, "must answer", id="withdrawal-alone"),
    pytest.param(
        K.NOTICE_KIND_WITHDRAWAL,
        K.NOTICE_KIND_WITHDRAWAL,
        "not a WITHDRAWAL",
        id="withdrawal-of-a-withdrawal",
    ),
    pytest.param(
        K.NOTICE_KIND_WITHDRAWAL,
        K.NOTICE_KIND_ACKNOWLEDGEMENT,
        "not a ACKNOWLEDGEMENT",
        id="withdrawal-of-an-acknowledgement",
    ),
    pytest.param(
        K.NOTICE_KIND_WITHDRAWAL,
        K.NOTICE_KIND_DISCLOSURE_REQUEST,
        "not a DISCLOSURE_REQUEST",
        id="withdrawal-of-a-disclosure-request",
    ),
]


@pytest.mark.parametrize(("kind", "answered", "reason"), REPLIES_REFUSED)
def test_validate_reply_refuses(kind, answered, reason):
    with pytest.raises(ValidationError) as caught:
        validate_reply(kind, answered)

    assert caught.value.field == "in_reply_to"
    assert reason in caught.value.reason


# --- response deadlines and readable fields ----------------------------------------------------


def assistance_request() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        assistance_request=pb.AssistanceRequest(
            legal_basis=pb.LEGAL_BASIS_OPSC_ARTICLE_6,
            requested_measures=[pb.ASSISTANCE_MEASURE_PRESERVE_DATA],
            offence_categories=[pb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
            urgency=pb.URGENCY_ROUTINE,
            response_deadline=at(dt.timedelta(days=14)),
            contact_point=contact(),
        ),
    )


DEADLINES = [
    pytest.param(assistance_request, NOW + dt.timedelta(days=14), id="assistance-request"),
    pytest.param(seizure_request, NOW + dt.timedelta(hours=48), id="seizure-request"),
    *(
        pytest.param(make, None, id=body.replace("_", "-"))
        for body, (make, _kind) in VALID.items()
        if body != "seizure_request"
    ),
    pytest.param(pb.Notice, None, id="no-body"),
]


@pytest.mark.parametrize(("make", "due"), DEADLINES)
def test_response_deadline(make, due):
    assert response_deadline(make()) == due


READABLE = [
    pytest.param(
        seizure_request(),
        [
            "legal_basis",
            "legal_basis_reference",
            "offence_categories",
            "items",
            "urgency",
            "response_deadline",
            "contact_point",
            "summary",
        ],
        id="a-full-seizure-request",
    ),
    pytest.param(
        clearing("extradition_notice.summary")(
            clearing("extradition_notice.suspect_tokens")(extradition_notice())
        ),
        ["offence_categories", "basis", "basis_reference", "status", "contact_point"],
        id="an-extradition-notice-without-tokens-or-summary",
    ),
    pytest.param(
        clearing("withdrawal.note")(withdrawal()), ["reason"], id="a-withdrawal-without-a-note"
    ),
    pytest.param(
        refused()(disclosure_grant()), ["decision", "refusal_ground"], id="a-refused-grant"
    ),
    pytest.param(pb.Notice(), [], id="no-body"),
]


@pytest.mark.parametrize(("notice", "fields"), READABLE)
def test_readable_fields_lists_the_set_body_fields(notice, fields):
    assert readable_fields(notice) == fields


# --- every refusal above, as data (for tests/integration/test_policy_in_service.py) ------------
# NOT_ADMITTED is not among them: its notices are valid and refused only under a policy
# narrowed by monkeypatch, which no notice can carry.


def refusal_cases() -> list[RefusalCase]:
    """Every notice this file expects refused, built afresh and named by its test's node id."""
    return [
        *_table_refusals(),
        *_path_refusals(),
        *_section_refusals(),
        *_unknown_field_refusals(),
        *_single_refusals(),
    ]


def _built(body: str, mutation: Mutation) -> pb.Notice:
    return mutation(VALID[body][0]())


def _table_refusals() -> list[RefusalCase]:
    tables = [
        (test_extradition_notice_rules_refuse, "extradition_notice", EXTRADITION),
        (test_seizure_request_rules_refuse, "seizure_request", SEIZURE_REQUEST),
        (test_seizure_response_rules_refuse, "seizure_response", SEIZURE_RESPONSE),
        (
            test_victim_support_coordination_rules_refuse,
            "victim_support_coordination",
            VICTIM_SUPPORT,
        ),
        (test_travel_alert_rules_refuse, "travel_alert", TRAVEL_ALERT),
        (test_content_hash_referral_rules_refuse, "content_hash_referral", CONTENT_HASH),
        (test_withdrawal_rules_refuse, "withdrawal", WITHDRAWAL),
        (test_disclosure_request_rules_refuse, "disclosure_request", DISCLOSURE_REQUEST),
        (test_disclosure_grant_rules_refuse, "disclosure_grant", DISCLOSURE_GRANT),
        (test_restricted_section_rules_refuse, "victim_support_coordination", RESTRICTED_SECTIONS),
        (test_forwarded_from_rules_refuse, "travel_alert", FORWARDED_FROM),
    ]
    return [
        case
        for test, body, table in tables
        for case in table_cases(test, body, VALID[body][0], table)
    ]


def _path_refusals() -> list[RefusalCase]:
    """REQUIRED and TEXT_REFUSED, whose rows name a body and a field path."""
    required = [
        refusal_case(
            test_a_missing_required_field_is_named,
            row.id,
            body,
            _built(body, clearing(f"{body}.{path}")),
            f"notice.{body}.{path}",
            "is required",  # in both "is required" and "at least one is required"
        )
        for row in REQUIRED
        for body, path in [row.values]
    ]
    texts = [
        refusal_case(
            test_a_field_refuses_identifiers_it_does_not_exist_for,
            row.id,
            body,
            _built(body, setting(f"{body}.{path}", value)),
            f"notice.{body}.{path}",
            "personal identifiers are refused here",
        )
        for row in TEXT_REFUSED
        for body, path, value in [row.values]
    ]
    return required + texts


def _section_refusals() -> list[RefusalCase]:
    """Restricted sections in the types whose policy refuses them."""
    refused = [
        refusal_case(
            test_restricted_sections_are_not_allowed_where_the_policy_refuses_them,
            body,
            body,
            _built(body, with_sections(commitment())),
            "notice.restricted_sections",
            f"is not allowed in {kind_name(VALID[body][1])} notices",
        )
        for body, admitted in RESTRICTED_SECTIONS_ADMITTED.items()
        if not admitted
    ]
    acknowledgement = pb.Notice(
        protection=protection(pb.VICTIM_IDENTIFICATION_UNKNOWN),
        acknowledgement=pb.Acknowledgement(status=pb.ACKNOWLEDGEMENT_STATUS_RECEIVED),
        restricted_sections=[commitment()],
    )
    return [
        *refused,
        refusal_case(
            test_restricted_sections_are_not_allowed_in_an_acknowledgement,
            "",
            "acknowledgement",
            acknowledgement,
            "notice.restricted_sections",
            "is not allowed in ACKNOWLEDGEMENT notices",
        ),
    ]


def _unknown_field_refusals() -> list[RefusalCase]:
    return [
        refusal_case(
            test_an_unknown_field_inside_the_body_is_refused,
            body,
            body,
            _built(body, appending_in_body(body, UNKNOWN)),
            f"notice.{body}",
            "carries fields this catalogue does not define",
        )
        for body in VALID
    ]


def _single_refusals() -> list[RefusalCase]:
    twice = [pb.Port(locode="XCAAA", mode=pb.TRAVEL_MODE_AIR)] * 2
    return [
        refusal_case(
            test_the_same_port_listed_twice_is_refused,
            "",
            "travel_alert",
            _built("travel_alert", replacing("travel_alert.ports", twice)),
            f"{L}.ports[1]",
            "is listed twice",
        ),
        refusal_case(
            test_a_referral_of_500001_hashes_is_refused,
            "",
            "content_hash_referral",
            sha256_hashes(500_001),
            f"{H}.hashes",
            "at most 500000 entries",
        ),
        refusal_case(
            test_hash_values_over_16_mib_are_refused,
            "",
            "content_hash_referral",
            hashes_of(pb.HASH_ALGORITHM_PHOTODNA, 34, 500_000),
            f"{H}.hashes",
            "more than 16 MiB of hash values",
        ),
    ]


def test_control_characters_are_exactly_category_cc_but_newline_and_tab() -> None:
    """The pattern that refuses control characters, against every code point's category."""
    refused = [c for c in range(0x110000) if disclosure._CONTROL.search(chr(c))]
    expected = [
        c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc" and chr(c) not in "\n\t"
    ]
    assert refused == expected
