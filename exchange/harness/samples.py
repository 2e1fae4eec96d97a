"""Sample notices of the simulation: plausible, coded, and free of any identity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from exchange import _wire
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import notices_pb2 as npb

__all__ = [
    "assistance_request",
    "assistance_response",
    "case_referral",
    "content_hash_referral",
    "disclosure_request",
    "extradition_notice",
    "handling",
    "seizure_request",
    "seizure_response",
    "travel_alert",
    "victim_support",
]


def handling(retention_days: int = 365) -> epb.HandlingCode:
    return epb.HandlingCode(
        onward_sharing=epb.ONWARD_SHARING_WITHIN_RECEIVING_AUTHORITY,
        evidence_use=epb.EVIDENCE_USE_INTELLIGENCE_ONLY,
        retention_days=retention_days,
    )


def _protection(identified: bool = False) -> npb.ChildProtectionFlags:
    return npb.ChildProtectionFlags(
        identity_protected=True,
        age_uncertain=True,
        victim_identification=npb.VICTIM_IDENTIFICATION_IDENTIFIED
        if identified
        else npb.VICTIM_IDENTIFICATION_NOT_IDENTIFIED,
    )


def case_referral(
    recipients: list[str], case_reference: str, summary: str
) -> apb.SubmitNoticeRequest:
    """OPSC art. 4, 10: material hosted and a suspect present in the recipients' territory."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=recipients,
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            case_referral=npb.CaseReferral(
                offence_categories=[npb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
                participation=npb.OFFENCE_PARTICIPATION_COMMITTED,
                jurisdiction_links=[
                    npb.JURISDICTION_LINK_SUSPECT_PRESENT,
                    npb.JURISDICTION_LINK_MATERIAL_OR_PROCEEDS_IN_TERRITORY,
                ],
                victim_count=2,
                victim_age_bands=[npb.AGE_BAND_6_TO_11, npb.AGE_BAND_UNKNOWN],
                suspect_tokens=[bytes(range(32))],
                urgency=npb.URGENCY_URGENT,
                contact_point=npb.ContactPoint(
                    unit="Child Exploitation Unit", functional_channel="duty desk, 24/7"
                ),
                requested_actions=[
                    npb.REQUESTED_ACTION_OPEN_INVESTIGATION,
                    npb.REQUESTED_ACTION_PRESERVE_EVIDENCE,
                ],
                summary=summary,
            ),
        ),
    )


def assistance_request(
    recipient: str, case_reference: str, now: dt.datetime, summary: str
) -> apb.SubmitNoticeRequest:
    """OPSC art. 6: ask for subscriber identification and data preservation."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=[recipient],
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            assistance_request=npb.AssistanceRequest(
                legal_basis=npb.LEGAL_BASIS_OPSC_ARTICLE_6,
                legal_basis_reference="OPSC art. 6(1)",
                requested_measures=[
                    npb.ASSISTANCE_MEASURE_IDENTIFY_SUBSCRIBER,
                    npb.ASSISTANCE_MEASURE_PRESERVE_DATA,
                ],
                offence_categories=[npb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
                urgency=npb.URGENCY_PRIORITY,
                response_deadline=_wire.timestamp(now + dt.timedelta(days=14)),
                contact_point=npb.ContactPoint(unit="International Cooperation Desk"),
                summary=summary,
            ),
        ),
    )


def assistance_response(in_reply_to: str, case_reference: str, summary: str) -> apb.RespondRequest:
    """OPSC art. 6: both measures executed."""
    return apb.RespondRequest(
        in_reply_to=in_reply_to,
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            assistance_response=npb.AssistanceResponse(
                outcome=npb.ASSISTANCE_OUTCOME_EXECUTED,
                measure_results=[
                    npb.MeasureResult(
                        measure=npb.ASSISTANCE_MEASURE_IDENTIFY_SUBSCRIBER,
                        status=npb.MEASURE_STATUS_EXECUTED,
                    ),
                    npb.MeasureResult(
                        measure=npb.ASSISTANCE_MEASURE_PRESERVE_DATA,
                        status=npb.MEASURE_STATUS_EXECUTED,
                    ),
                ],
                contact_point=npb.ContactPoint(unit="International Cooperation Desk"),
                summary=summary,
            ),
        ),
    )


def _in(now: dt.datetime, **delta: float) -> Timestamp:
    return _wire.timestamp(now + dt.timedelta(**delta))


def extradition_notice(recipient: str, case_reference: str) -> apb.SubmitNoticeRequest:
    """OPSC art. 5(5): not extradited on grounds of nationality; prosecuted at home."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=[recipient],
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            extradition_notice=npb.ExtraditionNotice(
                offence_categories=[npb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
                basis=npb.EXTRADITION_BASIS_OPSC_ARTICLE_5,
                basis_reference="OPSC art. 5(2)",
                status=npb.EXTRADITION_STATUS_NOT_EXTRADITED_SUBMITTED_FOR_DOMESTIC_PROSECUTION,
                refusal_ground=npb.REFUSAL_GROUND_NATIONALITY,
                suspect_tokens=[bytes(range(40, 72))],
                contact_point=npb.ContactPoint(unit="Extradition Desk"),
                summary="Surrender refused on nationality; submitted for domestic prosecution.",
            ),
        ),
    )


def seizure_request(
    recipient: str, case_reference: str, now: dt.datetime, premises: str
) -> apb.SubmitNoticeRequest:
    """OPSC art. 7: seize devices and close premises in the recipient's territory."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=[recipient],
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            seizure_request=npb.SeizureRequest(
                legal_basis=npb.LEGAL_BASIS_OPSC_ARTICLE_6,
                offence_categories=[npb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
                items=[
                    npb.SeizureItem(
                        item_id="i1",
                        category=npb.SEIZURE_ITEM_CATEGORY_DEVICES,
                        measure=npb.SEIZURE_MEASURE_SEIZE,
                        quantity=3,
                        location_reference=premises,
                    ),
                    npb.SeizureItem(
                        item_id="i2",
                        category=npb.SEIZURE_ITEM_CATEGORY_PREMISES,
                        measure=npb.SEIZURE_MEASURE_CLOSE_PREMISES,
                        location_reference=premises,
                    ),
                ],
                urgency=npb.URGENCY_URGENT,
                response_deadline=_in(now, hours=48),
                contact_point=npb.ContactPoint(unit="Asset Recovery Office"),
                summary="Devices used to distribute material; premises used for abuse.",
            ),
        ),
    )


def seizure_response(in_reply_to: str, case_reference: str) -> apb.RespondRequest:
    return apb.RespondRequest(
        in_reply_to=in_reply_to,
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            seizure_response=npb.SeizureResponse(
                status=npb.EXECUTION_STATUS_PARTIALLY_EXECUTED,
                item_results=[
                    npb.SeizureItemResult(item_id="i1", status=npb.EXECUTION_STATUS_EXECUTED),
                    npb.SeizureItemResult(item_id="i2", status=npb.EXECUTION_STATUS_PENDING),
                ],
                contact_point=npb.ContactPoint(unit="Asset Recovery Office"),
                summary="Devices seized; closure order pending before the court.",
            ),
        ),
    )


def victim_support(
    recipient: str, case_reference: str, victim_identity: str
) -> apb.SubmitNoticeRequest:
    """OPSC art. 8, 9, 10(2): repatriation, with the victim's identity held back."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=[recipient],
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(identified=True),
            victim_support_coordination=npb.VictimSupportCoordination(
                age_band=npb.AGE_BAND_12_TO_14,
                needs=[
                    npb.VICTIM_NEED_PSYCHOLOGICAL_SUPPORT,
                    npb.VICTIM_NEED_SAFE_ACCOMMODATION,
                    npb.VICTIM_NEED_FAMILY_TRACING,
                ],
                best_interests=npb.BEST_INTERESTS_STATUS_RETURN_RECOMMENDED,
                repatriation_steps=[
                    npb.RepatriationStep(
                        step=npb.REPATRIATION_STEP_TYPE_FAMILY_ASSESSMENT,
                        status=npb.STEP_STATUS_DONE,
                    ),
                    npb.RepatriationStep(
                        step=npb.REPATRIATION_STEP_TYPE_ESCORT, status=npb.STEP_STATUS_PLANNED
                    ),
                ],
                urgency=npb.URGENCY_PRIORITY,
                contact_point=npb.ContactPoint(unit="Child Protection Services"),
                summary="Return recommended after family assessment; escort being arranged.",
            ),
        ),
        restricted_sections=[
            npb.RestrictedSection(type=npb.SECTION_TYPE_VICTIM_IDENTITY, content=victim_identity)
        ],
    )


def travel_alert(recipient: str, case_reference: str, now: dt.datetime) -> apb.SubmitNoticeRequest:
    """OPSC art. 10(1): a convicted offender expected at the recipient's ports."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=[recipient],
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            travel_alert=npb.TravelAlert(
                convicted_of=[npb.OFFENCE_CATEGORY_CHILD_PROSTITUTION],
                travel_from=_in(now, days=1),
                travel_until=_in(now, days=8),
                ports=[npb.Port(locode="XCAAA", mode=npb.TRAVEL_MODE_AIR)],
                traveller_tokens=[bytes(range(80, 112))],
                risk=npb.RISK_LEVEL_HIGH,
                urgency=npb.URGENCY_URGENT,
                contact_point=npb.ContactPoint(unit="Sex Offender Management Unit"),
                summary="Convicted offender booked on a flight next week.",
            ),
        ),
    )


def content_hash_referral(
    recipient: str, case_reference: str, hashes: list[bytes]
) -> apb.SubmitNoticeRequest:
    """OPSC art. 3(1)(c), 7: material hosted in the recipient's territory, in bulk."""
    return apb.SubmitNoticeRequest(
        recipient_node_ids=[recipient],
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            content_hash_referral=npb.ContentHashReferral(
                hosting_link=npb.HOSTING_LINK_HOSTED_IN_TERRITORY,
                hashes=[
                    npb.ContentHash(algorithm=npb.HASH_ALGORITHM_SHA256, value=value)
                    for value in hashes
                ],
                requested_actions=[
                    npb.REQUESTED_ACTION_REMOVE_CONTENT,
                    npb.REQUESTED_ACTION_PRESERVE_EVIDENCE,
                ],
                contact_point=npb.ContactPoint(unit="Hotline Liaison"),
                summary="Identified material on a hosting service in your territory.",
            ),
        ),
    )


def disclosure_request(
    in_reply_to: str,
    case_reference: str,
    *,
    sections: Sequence[str] = (),
    onward: Sequence[str] = (),
) -> apb.RespondRequest:
    """Ask for restricted sections (to safeguard the victim), or for onward-sharing consent."""
    purpose = (
        npb.DISCLOSURE_PURPOSE_ONWARD_SHARING if onward else npb.DISCLOSURE_PURPOSE_SAFEGUARD_VICTIM
    )
    return apb.RespondRequest(
        in_reply_to=in_reply_to,
        case_reference=case_reference,
        handling=handling(),
        time_to_live=Duration(seconds=3600),
        notice=npb.Notice(
            protection=_protection(),
            disclosure_request=npb.DisclosureRequest(
                purpose=purpose,
                legal_basis=npb.LEGAL_BASIS_OPSC_ARTICLE_6,
                section_ids=sections,
                onward_node_ids=onward,
            ),
        ),
    )
