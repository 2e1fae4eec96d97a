"""The notice catalogue's rules: one named case per rule, for every notice type.

Each table row is (case id, a mutation of a valid notice, the field path the
ValidationError must name). A mutation returns the notice to validate: most edit
it in place, some re-parse it from bytes with something appended, as a peer's
opened content would arrive.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.errors import ValidationError, VerificationError, VerificationFailure
from exchange.notices import (
    MAX_NOTICE_BYTES,
    decode_notice,
    encode_notice,
    kind_name,
    kind_of,
    validate_notice,
    validate_reply,
)
from tests.unit._mutations import (
    UNKNOWN,
    Mutation,
    RefusalCase,
    appending,
    clearing,
    in_body,
    message_field,
    refusal_case,
    replacing,
    setting,
    table_cases,
    varint_field,
)

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
TOKEN = bytes(range(32))

# --- valid notices, one per type ---------------------------------------------------------------


def protection() -> pb.ChildProtectionFlags:
    return pb.ChildProtectionFlags(
        identity_protected=True,
        victim_identification=pb.VICTIM_IDENTIFICATION_NOT_IDENTIFIED,
    )


def contact() -> pb.ContactPoint:
    return pb.ContactPoint(
        unit="National Child Exploitation Unit", functional_channel="duty@ncu.xa.example"
    )


def case_referral() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        case_referral=pb.CaseReferral(
            offence_categories=[pb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
            participation=pb.OFFENCE_PARTICIPATION_COMMITTED,
            jurisdiction_links=[
                pb.JURISDICTION_LINK_SUSPECT_NATIONAL_OR_RESIDENT,
                pb.JURISDICTION_LINK_MATERIAL_OR_PROCEEDS_IN_TERRITORY,
            ],
            victim_count=2,
            victim_age_bands=[pb.AGE_BAND_6_TO_11, pb.AGE_BAND_12_TO_14],
            suspect_tokens=[TOKEN],
            urgency=pb.URGENCY_PRIORITY,
            contact_point=contact(),
            requested_actions=[pb.REQUESTED_ACTION_OPEN_INVESTIGATION],
            summary="Material traced to a server hosted in the recipient's territory.",
        ),
    )


def assistance_request() -> pb.Notice:
    notice = pb.Notice(
        protection=protection(),
        assistance_request=pb.AssistanceRequest(
            legal_basis=pb.LEGAL_BASIS_OPSC_ARTICLE_6,
            legal_basis_reference="OPSC art. 6(1)",
            requested_measures=[
                pb.ASSISTANCE_MEASURE_PRESERVE_DATA,
                pb.ASSISTANCE_MEASURE_IDENTIFY_SUBSCRIBER,
            ],
            offence_categories=[pb.OFFENCE_CATEGORY_CHILD_PROSTITUTION],
            urgency=pb.URGENCY_PRIORITY,
            contact_point=contact(),
            summary="Preserve subscriber data for the account named in the referral.",
        ),
    )
    notice.assistance_request.response_deadline.FromDatetime(NOW + dt.timedelta(days=14))
    return notice


def assistance_response() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        assistance_response=pb.AssistanceResponse(
            outcome=pb.ASSISTANCE_OUTCOME_PARTIALLY_EXECUTED,
            measure_results=[
                pb.MeasureResult(
                    measure=pb.ASSISTANCE_MEASURE_PRESERVE_DATA,
                    status=pb.MEASURE_STATUS_EXECUTED,
                ),
                pb.MeasureResult(
                    measure=pb.ASSISTANCE_MEASURE_IDENTIFY_SUBSCRIBER,
                    status=pb.MEASURE_STATUS_PENDING,
                ),
            ],
            contact_point=contact(),
            summary="Data preserved; subscriber identification pending.",
        ),
    )


def acknowledgement() -> pb.Notice:
    return pb.Notice(
        protection=protection(),
        acknowledgement=pb.Acknowledgement(
            status=pb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION, note="Assigned to a unit."
        ),
    )


VALID = {
    "case_referral": (case_referral, env_pb.NOTICE_KIND_CASE_REFERRAL),
    "assistance_request": (assistance_request, env_pb.NOTICE_KIND_ASSISTANCE_REQUEST),
    "assistance_response": (assistance_response, env_pb.NOTICE_KIND_ASSISTANCE_RESPONSE),
    "acknowledgement": (acknowledgement, env_pb.NOTICE_KIND_ACKNOWLEDGEMENT),
}


# --- mutations ---------------------------------------------------------------------------------


def case(case_id: str, mutation: Mutation, field: str) -> Any:
    return pytest.param(mutation, field, id=case_id)


def run(body: str, mutation: Mutation) -> ValidationError:
    notice = mutation(VALID[body][0]())
    with pytest.raises(ValidationError) as caught:
        validate_notice(notice, now=NOW)
    return caught.value


def test_every_valid_notice_passes_and_names_its_kind():
    for body, (make, kind) in VALID.items():
        notice = make()
        assert validate_notice(notice, now=NOW) == kind, body
        assert kind_of(notice) == kind
        assert validate_notice(decode_notice(encode_notice(notice)), now=NOW) == kind


# --- rules common to every type ----------------------------------------------------------------

COMMON = [
    case("no-body", lambda n: pb.Notice(protection=n.protection), "notice.body"),
    case("nothing-at-all", lambda n: pb.Notice(), "notice.body"),
    case(
        "victim-identification-missing",
        clearing("protection.victim_identification"),
        "notice.protection.victim_identification",
    ),
    case("protection-missing", clearing("protection"), "notice.protection.victim_identification"),
    case(
        "victim-identification-unknown-code",
        setting("protection.victim_identification", 99),
        "notice.protection.victim_identification",
    ),
    case(
        "victim-identification-unknown-code-on-the-wire",
        appending(message_field(1, varint_field(3, 99))),
        "notice.protection.victim_identification",
    ),
    case("unknown-field-on-the-notice", appending(UNKNOWN), "notice"),
    case(
        "unknown-field-in-the-protection-flags",
        appending(message_field(1, UNKNOWN)),
        "notice.protection",
    ),
    case(
        # A known field with the wrong wire type is kept as an unknown field.
        "known-number-wrong-wire-type",
        appending(varint_field(1, 1)),
        "notice",
    ),
]


@pytest.mark.parametrize("body", list(VALID))
@pytest.mark.parametrize(("mutation", "field"), COMMON)
def test_common_rules_refuse(body, mutation, field):
    assert run(body, mutation).field == field


@pytest.mark.parametrize("body", list(VALID))
def test_an_unknown_field_inside_the_body_is_refused(body):
    error = run(body, appending(in_body(body, UNKNOWN)))

    assert error.field == f"notice.{body}"
    assert error.reason == "carries fields this catalogue does not define"


@pytest.mark.parametrize("body", list(VALID))
@pytest.mark.parametrize(
    "identification",
    [
        pb.VICTIM_IDENTIFICATION_IDENTIFIED,
        pb.VICTIM_IDENTIFICATION_NOT_IDENTIFIED,
        pb.VICTIM_IDENTIFICATION_UNKNOWN,
    ],
)
def test_age_uncertainty_never_blocks_a_notice(body, identification):
    # OPSC art. 8(2): uncertainty as to the victim's age does not prevent action.
    make, kind = VALID[body]
    notice = make()
    notice.protection.age_uncertain = True
    notice.protection.identity_protected = False
    notice.protection.victim_identification = identification

    assert validate_notice(notice, now=NOW) == kind


def test_an_age_uncertain_referral_with_only_unknown_age_bands_is_accepted():
    notice = case_referral()
    notice.protection.age_uncertain = True
    del notice.case_referral.victim_age_bands[:]
    notice.case_referral.victim_age_bands.extend([pb.AGE_BAND_UNKNOWN, pb.AGE_BAND_UNKNOWN])

    assert validate_notice(notice, now=NOW) == env_pb.NOTICE_KIND_CASE_REFERRAL


# --- CaseReferral (OPSC art. 4, 10) ------------------------------------------------------------

R = "notice.case_referral"

CASE_REFERRAL = [
    case(
        "offences-missing", clearing("case_referral.offence_categories"), f"{R}.offence_categories"
    ),
    case(
        "offence-unspecified",
        replacing("case_referral.offence_categories", [pb.OFFENCE_CATEGORY_UNSPECIFIED]),
        f"{R}.offence_categories[0]",
    ),
    case(
        "offence-unknown-code",
        replacing("case_referral.offence_categories", [pb.OFFENCE_CATEGORY_SALE_FORCED_LABOUR, 99]),
        f"{R}.offence_categories[1]",
    ),
    case(
        "offence-unknown-code-on-the-wire",
        appending(in_body("case_referral", varint_field(1, 99))),
        f"{R}.offence_categories[1]",
    ),
    case(
        "offence-twice",
        replacing(
            "case_referral.offence_categories",
            [pb.OFFENCE_CATEGORY_CHILD_PROSTITUTION, pb.OFFENCE_CATEGORY_CHILD_PROSTITUTION],
        ),
        f"{R}.offence_categories[1]",
    ),
    case("participation-missing", clearing("case_referral.participation"), f"{R}.participation"),
    case("participation-unknown", setting("case_referral.participation", 99), f"{R}.participation"),
    case("links-missing", clearing("case_referral.jurisdiction_links"), f"{R}.jurisdiction_links"),
    case(
        "link-unknown-code",
        replacing("case_referral.jurisdiction_links", [99]),
        f"{R}.jurisdiction_links[0]",
    ),
    case(
        "link-twice",
        replacing(
            "case_referral.jurisdiction_links",
            [
                pb.JURISDICTION_LINK_VICTIM_NATIONAL,
                pb.JURISDICTION_LINK_SUSPECT_PRESENT,
                pb.JURISDICTION_LINK_VICTIM_NATIONAL,
            ],
        ),
        f"{R}.jurisdiction_links[2]",
    ),
    case(
        "victim-count-over-10000",
        setting("case_referral.victim_count", 10_001),
        f"{R}.victim_count",
    ),
    case(
        "more-age-bands-than-victims",
        setting("case_referral.victim_count", 1),
        f"{R}.victim_age_bands",
    ),
    case(
        "age-bands-when-no-victims",
        setting("case_referral.victim_count", 0),
        f"{R}.victim_age_bands",
    ),
    case(
        "age-bands-over-10000-with-no-count",
        lambda n: replacing("case_referral.victim_age_bands", [pb.AGE_BAND_UNKNOWN] * 10_001)(
            clearing("case_referral.victim_count")(n)
        ),
        f"{R}.victim_age_bands",
    ),
    case(
        "age-band-unspecified",
        replacing("case_referral.victim_age_bands", [pb.AGE_BAND_UNDER_6, pb.AGE_BAND_UNSPECIFIED]),
        f"{R}.victim_age_bands[1]",
    ),
    case(
        "age-band-unknown-code",
        replacing("case_referral.victim_age_bands", [99]),
        f"{R}.victim_age_bands[0]",
    ),
    case(
        "suspect-tokens-over-64",
        replacing("case_referral.suspect_tokens", [TOKEN] * 65),
        f"{R}.suspect_tokens",
    ),
    case(
        "suspect-token-shorter-than-16-bytes",
        replacing("case_referral.suspect_tokens", [TOKEN, bytes(15)]),
        f"{R}.suspect_tokens[1]",
    ),
    case(
        "suspect-token-longer-than-64-bytes",
        replacing("case_referral.suspect_tokens", [bytes(65)]),
        f"{R}.suspect_tokens[0]",
    ),
    case("urgency-missing", clearing("case_referral.urgency"), f"{R}.urgency"),
    case("urgency-unknown-code", setting("case_referral.urgency", 99), f"{R}.urgency"),
    case(
        "urgency-unknown-code-on-the-wire",
        appending(in_body("case_referral", varint_field(7, 99))),
        f"{R}.urgency",
    ),
    case("contact-missing", clearing("case_referral.contact_point"), f"{R}.contact_point"),
    case(
        "contact-unit-missing",
        clearing("case_referral.contact_point.unit"),
        f"{R}.contact_point.unit",
    ),
    case(
        "contact-unit-blank",
        setting("case_referral.contact_point.unit", " \t "),
        f"{R}.contact_point.unit",
    ),
    case(
        "contact-unit-over-120",
        setting("case_referral.contact_point.unit", "u" * 121),
        f"{R}.contact_point.unit",
    ),
    case(
        "contact-channel-over-120",
        setting("case_referral.contact_point.functional_channel", "c" * 121),
        f"{R}.contact_point.functional_channel",
    ),
    case(
        "contact-channel-control-character",
        setting("case_referral.contact_point.functional_channel", "duty\x1b[2J"),
        f"{R}.contact_point.functional_channel",
    ),
    case(
        "unknown-field-in-the-contact-point",
        appending(in_body("case_referral", message_field(8, UNKNOWN))),
        f"{R}.contact_point",
    ),
    case(
        "requested-actions-missing",
        clearing("case_referral.requested_actions"),
        f"{R}.requested_actions",
    ),
    case(
        "requested-action-unknown-code",
        replacing("case_referral.requested_actions", [99]),
        f"{R}.requested_actions[0]",
    ),
    case(
        "requested-action-twice",
        replacing(
            "case_referral.requested_actions",
            [pb.REQUESTED_ACTION_LOCATE_SUSPECT, pb.REQUESTED_ACTION_LOCATE_SUSPECT],
        ),
        f"{R}.requested_actions[1]",
    ),
    case("summary-over-500", setting("case_referral.summary", "s" * 501), f"{R}.summary"),
]

CONTROL_CHARACTERS = [
    pytest.param("\x00", id="nul"),
    pytest.param("\r", id="carriage-return"),
    pytest.param("\x07", id="bell"),
    pytest.param("\x1b", id="escape"),
    pytest.param("\x7f", id="delete"),
    pytest.param("\x85", id="c1-next-line"),
    pytest.param("\x9b", id="c1-control-sequence-introducer"),
]


@pytest.mark.parametrize(("mutation", "field"), CASE_REFERRAL)
def test_case_referral_rules_refuse(mutation, field):
    assert run("case_referral", mutation).field == field


@pytest.mark.parametrize("char", CONTROL_CHARACTERS)
def test_free_text_with_a_control_character_is_refused(char):
    error = run("case_referral", setting("case_referral.summary", f"traced{char}to a server"))

    assert (error.field, error.reason) == (f"{R}.summary", "contains control characters")


CASE_REFERRAL_ACCEPTED = [
    pytest.param(setting("case_referral.victim_count", 10_000), id="victim-count-10000"),
    pytest.param(clearing("case_referral.victim_count"), id="victim-count-unknown"),
    pytest.param(setting("case_referral.victim_count", 2), id="one-age-band-per-victim"),
    pytest.param(
        replacing("case_referral.victim_age_bands", [pb.AGE_BAND_15_TO_17] * 2),
        id="two-victims-in-one-age-band",
    ),
    pytest.param(clearing("case_referral.victim_age_bands"), id="no-age-bands"),
    pytest.param(
        replacing(
            "case_referral.suspect_tokens",
            [TOKEN[:16], bytes(64)] + [bytes([n]) * 32 for n in range(1, 63)],
        ),
        id="64-distinct-tokens-of-16-to-64-bytes",
    ),
    pytest.param(clearing("case_referral.suspect_tokens"), id="no-suspect-tokens"),
    pytest.param(clearing("case_referral.summary"), id="no-summary"),
    pytest.param(setting("case_referral.summary", "s" * 500), id="summary-of-500"),
    pytest.param(setting("case_referral.summary", "line one\n\tline two"), id="newline-and-tab"),
    pytest.param(setting("case_referral.summary", "Ünïcödé — 東京"), id="non-ascii-text"),
    pytest.param(
        clearing("case_referral.contact_point.functional_channel"), id="no-functional-channel"
    ),
]


@pytest.mark.parametrize("mutation", CASE_REFERRAL_ACCEPTED)
def test_case_referral_accepts(mutation):
    notice = mutation(case_referral())

    assert validate_notice(notice, now=NOW) == env_pb.NOTICE_KIND_CASE_REFERRAL


# --- AssistanceRequest (OPSC art. 6) -----------------------------------------------------------

Q = "notice.assistance_request"


def urgent_deadline(delta: dt.timedelta) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.assistance_request.urgency = pb.URGENCY_URGENT
        notice.assistance_request.response_deadline.FromDatetime(NOW + delta)
        return notice

    return mutate


def deadline(delta: dt.timedelta) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.assistance_request.response_deadline.FromDatetime(NOW + delta)
        return notice

    return mutate


ASSISTANCE_REQUEST = [
    case("legal-basis-missing", clearing("assistance_request.legal_basis"), f"{Q}.legal_basis"),
    case(
        "legal-basis-unknown-code",
        setting("assistance_request.legal_basis", 99),
        f"{Q}.legal_basis",
    ),
    case(
        "legal-basis-reference-over-120",
        setting("assistance_request.legal_basis_reference", "r" * 121),
        f"{Q}.legal_basis_reference",
    ),
    case(
        "legal-basis-reference-control-character",
        setting("assistance_request.legal_basis_reference", "art. 6\x00"),
        f"{Q}.legal_basis_reference",
    ),
    case(
        "measures-missing",
        clearing("assistance_request.requested_measures"),
        f"{Q}.requested_measures",
    ),
    case(
        "measure-unknown-code",
        replacing("assistance_request.requested_measures", [99]),
        f"{Q}.requested_measures[0]",
    ),
    case(
        "measure-unknown-code-on-the-wire",
        appending(in_body("assistance_request", varint_field(3, 99))),
        f"{Q}.requested_measures[2]",
    ),
    case(
        "measure-twice",
        replacing(
            "assistance_request.requested_measures",
            [pb.ASSISTANCE_MEASURE_OBTAIN_RECORDS, pb.ASSISTANCE_MEASURE_OBTAIN_RECORDS],
        ),
        f"{Q}.requested_measures[1]",
    ),
    case(
        "offences-missing",
        clearing("assistance_request.offence_categories"),
        f"{Q}.offence_categories",
    ),
    case(
        "offence-unknown-code",
        replacing("assistance_request.offence_categories", [99]),
        f"{Q}.offence_categories[0]",
    ),
    case(
        "offence-twice",
        replacing(
            "assistance_request.offence_categories",
            [pb.OFFENCE_CATEGORY_SALE_ORGAN_TRANSFER, pb.OFFENCE_CATEGORY_SALE_ORGAN_TRANSFER],
        ),
        f"{Q}.offence_categories[1]",
    ),
    case("urgency-missing", clearing("assistance_request.urgency"), f"{Q}.urgency"),
    case("urgency-unknown-code", setting("assistance_request.urgency", 99), f"{Q}.urgency"),
    case(
        "deadline-missing",
        clearing("assistance_request.response_deadline"),
        f"{Q}.response_deadline",
    ),
    case("deadline-in-the-past", deadline(-dt.timedelta(seconds=1)), f"{Q}.response_deadline"),
    # Urgent requests are answered in hours, ordinary ones in days.
    case(
        "urgent-deadline-beyond-72-hours",
        urgent_deadline(dt.timedelta(hours=72, seconds=1)),
        f"{Q}.response_deadline",
    ),
    case(
        "ordinary-deadline-within-a-day",
        deadline(dt.timedelta(hours=23)),
        f"{Q}.response_deadline",
    ),
    case("deadline-now", deadline(dt.timedelta(0)), f"{Q}.response_deadline"),
    case(
        "deadline-over-365-days",
        deadline(dt.timedelta(days=365, seconds=1)),
        f"{Q}.response_deadline",
    ),
    case(
        "unknown-field-in-the-deadline",
        appending(in_body("assistance_request", message_field(6, UNKNOWN))),
        f"{Q}.response_deadline",
    ),
    case("contact-missing", clearing("assistance_request.contact_point"), f"{Q}.contact_point"),
    case(
        "contact-unit-missing",
        clearing("assistance_request.contact_point.unit"),
        f"{Q}.contact_point.unit",
    ),
    case("summary-over-500", setting("assistance_request.summary", "s" * 501), f"{Q}.summary"),
    case(
        "summary-control-character",
        setting("assistance_request.summary", "a\rb"),
        f"{Q}.summary",
    ),
]


@pytest.mark.parametrize(("mutation", "field"), ASSISTANCE_REQUEST)
def test_assistance_request_rules_refuse(mutation, field):
    assert run("assistance_request", mutation).field == field


ASSISTANCE_REQUEST_ACCEPTED = [
    pytest.param(deadline(dt.timedelta(hours=24)), id="ordinary-deadline-one-day-ahead"),
    pytest.param(deadline(dt.timedelta(days=365)), id="deadline-exactly-365-days"),
    pytest.param(urgent_deadline(dt.timedelta(milliseconds=1)), id="urgent-deadline-just-ahead"),
    pytest.param(urgent_deadline(dt.timedelta(hours=72)), id="urgent-deadline-72-hours"),
    pytest.param(clearing("assistance_request.legal_basis_reference"), id="no-reference"),
    pytest.param(clearing("assistance_request.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", ASSISTANCE_REQUEST_ACCEPTED)
def test_assistance_request_accepts(mutation):
    notice = mutation(assistance_request())

    assert validate_notice(notice, now=NOW) == env_pb.NOTICE_KIND_ASSISTANCE_REQUEST


# --- AssistanceResponse (OPSC art. 6) ----------------------------------------------------------

P = "notice.assistance_response"


def outcome(value: int, ground: int = 0) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        notice.assistance_response.outcome = value  # type: ignore[assignment]
        notice.assistance_response.refusal_ground = ground  # type: ignore[assignment]
        return notice

    return mutate


ASSISTANCE_RESPONSE = [
    case("outcome-missing", clearing("assistance_response.outcome"), f"{P}.outcome"),
    case("outcome-unknown-code", setting("assistance_response.outcome", 99), f"{P}.outcome"),
    case(
        "outcome-unknown-code-on-the-wire",
        appending(in_body("assistance_response", varint_field(1, 99))),
        f"{P}.outcome",
    ),
    case(
        "measure-result-without-measure",
        clearing("assistance_response.measure_results[1].measure"),
        f"{P}.measure_results[1].measure",
    ),
    case(
        "measure-result-unknown-measure",
        setting("assistance_response.measure_results[0].measure", 99),
        f"{P}.measure_results[0].measure",
    ),
    case(
        "measure-result-without-status",
        clearing("assistance_response.measure_results[0].status"),
        f"{P}.measure_results[0].status",
    ),
    case(
        "measure-result-unknown-status",
        setting("assistance_response.measure_results[1].status", 99),
        f"{P}.measure_results[1].status",
    ),
    case(
        "measure-reported-twice",
        setting(
            "assistance_response.measure_results[1].measure", pb.ASSISTANCE_MEASURE_PRESERVE_DATA
        ),
        f"{P}.measure_results[1].measure",
    ),
    case(
        "unknown-field-in-a-measure-result",
        appending(in_body("assistance_response", message_field(2, UNKNOWN))),
        f"{P}.measure_results[2]",
    ),
    case(
        "refused-without-ground",
        outcome(pb.ASSISTANCE_OUTCOME_REFUSED),
        f"{P}.refusal_ground",
    ),
    case(
        "postponed-without-ground",
        outcome(pb.ASSISTANCE_OUTCOME_POSTPONED),
        f"{P}.refusal_ground",
    ),
    case(
        "refused-with-unknown-ground",
        outcome(pb.ASSISTANCE_OUTCOME_REFUSED, 99),
        f"{P}.refusal_ground",
    ),
    case(
        "executed-with-a-ground",
        outcome(pb.ASSISTANCE_OUTCOME_EXECUTED, pb.REFUSAL_GROUND_NO_LEGAL_BASIS),
        f"{P}.refusal_ground",
    ),
    case(
        "in-progress-with-a-ground",
        outcome(pb.ASSISTANCE_OUTCOME_IN_PROGRESS, pb.REFUSAL_GROUND_ESSENTIAL_INTERESTS),
        f"{P}.refusal_ground",
    ),
    case("contact-missing", clearing("assistance_response.contact_point"), f"{P}.contact_point"),
    case("summary-over-500", setting("assistance_response.summary", "s" * 501), f"{P}.summary"),
    case(
        "summary-control-character",
        setting("assistance_response.summary", "done\x08"),
        f"{P}.summary",
    ),
]


@pytest.mark.parametrize(("mutation", "field"), ASSISTANCE_RESPONSE)
def test_assistance_response_rules_refuse(mutation, field):
    assert run("assistance_response", mutation).field == field


ASSISTANCE_RESPONSE_ACCEPTED = [
    pytest.param(
        outcome(pb.ASSISTANCE_OUTCOME_REFUSED, pb.REFUSAL_GROUND_DUAL_CRIMINALITY_NOT_MET),
        id="refused-with-ground",
    ),
    pytest.param(
        outcome(pb.ASSISTANCE_OUTCOME_POSTPONED, pb.REFUSAL_GROUND_ONGOING_DOMESTIC_PROCEEDINGS),
        id="postponed-with-ground",
    ),
    pytest.param(outcome(pb.ASSISTANCE_OUTCOME_EXECUTED), id="executed-without-ground"),
    pytest.param(clearing("assistance_response.measure_results"), id="no-measure-results"),
    pytest.param(clearing("assistance_response.summary"), id="no-summary"),
]


@pytest.mark.parametrize("mutation", ASSISTANCE_RESPONSE_ACCEPTED)
def test_assistance_response_accepts(mutation):
    notice = mutation(assistance_response())

    assert validate_notice(notice, now=NOW) == env_pb.NOTICE_KIND_ASSISTANCE_RESPONSE


# --- Acknowledgement ---------------------------------------------------------------------------

A = "notice.acknowledgement"

ACKNOWLEDGEMENT = [
    case("status-missing", clearing("acknowledgement.status"), f"{A}.status"),
    case(
        "empty-body",
        lambda n: pb.Notice(protection=n.protection, acknowledgement={}),
        f"{A}.status",
    ),
    case("status-unknown-code", setting("acknowledgement.status", 99), f"{A}.status"),
    case(
        "status-unknown-code-on-the-wire",
        appending(in_body("acknowledgement", varint_field(1, 99))),
        f"{A}.status",
    ),
    case("note-over-200", setting("acknowledgement.note", "n" * 201), f"{A}.note"),
    case("note-control-character", setting("acknowledgement.note", "ok\x00"), f"{A}.note"),
]


@pytest.mark.parametrize(("mutation", "field"), ACKNOWLEDGEMENT)
def test_acknowledgement_rules_refuse(mutation, field):
    assert run("acknowledgement", mutation).field == field


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(setting("acknowledgement.note", "n" * 200), id="note-of-200"),
        pytest.param(clearing("acknowledgement.note"), id="no-note"),
    ],
)
def test_acknowledgement_accepts(mutation):
    notice = mutation(acknowledgement())

    assert validate_notice(notice, now=NOW) == env_pb.NOTICE_KIND_ACKNOWLEDGEMENT


# --- replies -----------------------------------------------------------------------------------

K = env_pb

REPLIES_ALLOWED = [
    pytest.param(K.NOTICE_KIND_CASE_REFERRAL, None, id="referral-answers-nothing"),
    pytest.param(K.NOTICE_KIND_CASE_REFERRAL, K.NOTICE_KIND_CASE_REFERRAL, id="referral-follow-up"),
    pytest.param(K.NOTICE_KIND_ASSISTANCE_REQUEST, None, id="request-answers-nothing"),
    pytest.param(
        K.NOTICE_KIND_ASSISTANCE_REQUEST, K.NOTICE_KIND_CASE_REFERRAL, id="request-on-a-referral"
    ),
    pytest.param(
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        K.NOTICE_KIND_ASSISTANCE_REQUEST,
        id="response-answers-a-request",
    ),
    pytest.param(K.NOTICE_KIND_ACKNOWLEDGEMENT, K.NOTICE_KIND_CASE_REFERRAL, id="ack-a-referral"),
    pytest.param(
        K.NOTICE_KIND_ACKNOWLEDGEMENT, K.NOTICE_KIND_ASSISTANCE_REQUEST, id="ack-a-request"
    ),
    pytest.param(
        K.NOTICE_KIND_ACKNOWLEDGEMENT, K.NOTICE_KIND_ASSISTANCE_RESPONSE, id="ack-a-response"
    ),
]


@pytest.mark.parametrize(("kind", "answered"), REPLIES_ALLOWED)
def test_validate_reply_allows(kind, answered):
    validate_reply(kind, answered)


REPLIES_REFUSED = [
    pytest.param(
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        None,
        "must answer a ASSISTANCE_REQUEST",
        id="response-alone",
    ),
    pytest.param(
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        K.NOTICE_KIND_CASE_REFERRAL,
        "not a CASE_REFERRAL",
        id="response-to-a-referral",
    ),
    pytest.param(
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        K.NOTICE_KIND_ASSISTANCE_RESPONSE,
        "not a ASSISTANCE_RESPONSE",
        id="response-to-a-response",
    ),
    pytest.param(K.NOTICE_KIND_ACKNOWLEDGEMENT, None, "must answer", id="ack-alone"),
    pytest.param(
        K.NOTICE_KIND_ACKNOWLEDGEMENT,
        K.NOTICE_KIND_ACKNOWLEDGEMENT,
        "not a ACKNOWLEDGEMENT",
        id="ack-an-ack",
    ),
]


@pytest.mark.parametrize(("kind", "answered", "reason"), REPLIES_REFUSED)
def test_validate_reply_refuses(kind, answered, reason):
    with pytest.raises(ValidationError) as caught:
        validate_reply(kind, answered)

    assert caught.value.field == "in_reply_to"
    assert reason in caught.value.reason


def test_kind_names_drop_the_prefix():
    assert kind_name(K.NOTICE_KIND_ASSISTANCE_RESPONSE) == "ASSISTANCE_RESPONSE"


# --- decoding ----------------------------------------------------------------------------------

GARBAGE = [
    pytest.param(b"\xff\xff\xff\xff", id="not-protobuf"),
    pytest.param(b"\x08", id="truncated-varint-field"),
    pytest.param(message_field(10, b"")[:-1] + b"\x05ab", id="length-beyond-the-end"),
    pytest.param(in_body("case_referral", message_field(10, b"\xff")), id="invalid-utf8-text"),
    pytest.param(b"\x07", id="invalid-wire-type"),
    pytest.param(b"\x00", id="field-number-zero"),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_decode_notice_refuses_garbage_as_an_invalid_notice(data):
    with pytest.raises(VerificationError) as caught:
        decode_notice(data)

    assert caught.value.failure is VerificationFailure.INVALID_NOTICE
    assert caught.value.detail == "undecodable"


def test_decode_notice_refuses_oversized_content_before_parsing():
    with pytest.raises(VerificationError) as caught:
        decode_notice(b"\x00" * (MAX_NOTICE_BYTES + 1))

    assert caught.value.failure is VerificationFailure.INVALID_NOTICE
    assert caught.value.detail == "too large"


def test_decode_notice_round_trips_every_valid_notice():
    for make, _kind in VALID.values():
        notice = make()
        assert decode_notice(encode_notice(notice)) == notice


# --- every refusal above, as data (for tests/integration/test_policy_in_service.py) ------------


def refusal_cases() -> list[RefusalCase]:
    """Every notice this file expects refused, built afresh and named by its test's node id."""
    return [*_table_refusals(), *_control_character_refusals(), *_unknown_field_refusals()]


def _table_refusals() -> list[RefusalCase]:
    tables = [
        (test_case_referral_rules_refuse, "case_referral", CASE_REFERRAL),
        (test_assistance_request_rules_refuse, "assistance_request", ASSISTANCE_REQUEST),
        (test_assistance_response_rules_refuse, "assistance_response", ASSISTANCE_RESPONSE),
        (test_acknowledgement_rules_refuse, "acknowledgement", ACKNOWLEDGEMENT),
    ]
    common = [
        case
        for body, (make, _kind) in VALID.items()
        for case in table_cases(test_common_rules_refuse, body, make, COMMON, f"-{body}")
    ]
    return common + [
        case
        for test, body, table in tables
        for case in table_cases(test, body, VALID[body][0], table)
    ]


def _control_character_refusals() -> list[RefusalCase]:
    return [
        refusal_case(
            test_free_text_with_a_control_character_is_refused,
            row.id,
            "case_referral",
            setting("case_referral.summary", f"traced{row.values[0]}to a server")(case_referral()),
            f"{R}.summary",
            "contains control characters",
        )
        for row in CONTROL_CHARACTERS
    ]


def _unknown_field_refusals() -> list[RefusalCase]:
    return [
        refusal_case(
            test_an_unknown_field_inside_the_body_is_refused,
            body,
            body,
            appending(in_body(body, UNKNOWN))(make()),
            f"notice.{body}",
            "carries fields this catalogue does not define",
        )
        for body, (make, _kind) in VALID.items()
    ]
