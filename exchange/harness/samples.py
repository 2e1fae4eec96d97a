"""Sample notices of the simulation: plausible, coded, and free of any identity."""

from __future__ import annotations

import datetime as dt

from google.protobuf.duration_pb2 import Duration

from exchange import _wire
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import notices_pb2 as npb

__all__ = ["assistance_request", "assistance_response", "case_referral", "handling"]


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
