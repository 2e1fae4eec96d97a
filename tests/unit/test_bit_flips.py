"""Every single-bit flip of a captured envelope or receipt is rejected.

One small notice (a few hundred bytes on the wire) is captured once; each test
flips every bit of one part in turn and collects the flips that were not
rejected the right way, so a failure lists every offending bit at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

from exchange.envelope import Envelope, Header
from exchange.errors import VerificationError, VerificationFailure
from exchange.receipt import SignedReceipt, verify_receipt

from ._builders import T0, XB, bit_flips, envelope, federation, receive, signed_receipt

F = VerificationFailure

# Times with sub-second parts, as a node's clock gives them: the Timestamp then
# carries nanos, whose flips can leave the range a datetime can hold.
CAPTURED = envelope(created_at=T0 - dt.timedelta(microseconds=123_456))
CAPTURED_RECEIPT = signed_receipt(CAPTURED, received_at=T0 + dt.timedelta(microseconds=654_321))
TRUST = federation()

# What a tampered header may fail with, here and on live nodes (tests/adversarial): anything
# before or at the signature check, never a verdict that treats the header as authentic
# (NOT_A_RECIPIENT, EXPIRED, ...).
UNAUTHENTIC_HEADER = frozenset(
    {
        F.MALFORMED,
        F.UNSUPPORTED_PROTOCOL,
        F.UNSUPPORTED_SUITE,
        F.UNKNOWN_SENDER,
        F.SENDER_MISMATCH,
        F.UNKNOWN_KEY,
        F.BAD_SIGNATURE,
    }
)
# What a tampered receipt may fail with.
UNAUTHENTIC_RECEIPT = frozenset({F.MALFORMED, F.RECEIPT_MISMATCH, F.UNKNOWN_KEY, F.BAD_SIGNATURE})


def flip_outcomes(
    part: str, allowed: frozenset[VerificationFailure], *, header_is_authentic: bool = False
) -> tuple[Counter[VerificationFailure], dict[int, str]]:
    """Check every flip of `part` of CAPTURED: (failures seen, wrong outcomes by bit).

    `header_is_authentic`: whether the failure comes after the signature check,
    so that the (untouched) header is returned with it.
    """
    seen: Counter[VerificationFailure] = Counter()
    wrong: dict[int, str] = {}
    for bit, flipped in bit_flips(getattr(CAPTURED, part)):
        tampered: Envelope = dataclasses.replace(CAPTURED, **{part: flipped})
        try:
            check = receive(tampered, trust=TRUST)
        except Exception as exc:  # any exception is the bug we look for
            wrong[bit] = f"raised {exc!r}"
            continue
        if check.failure is None:
            wrong[bit] = "accepted"
        elif check.failure not in allowed:
            wrong[bit] = f"refused as {check.failure.name}"
        elif (check.header is not None) != header_is_authentic:
            wrong[bit] = f"{check.failure.name} with header={check.header is not None}"
        else:
            seen[check.failure] += 1
    return seen, wrong


def test_the_captured_envelope_is_small_and_accepted_untouched() -> None:
    assert len(CAPTURED.header) + len(CAPTURED.sealed_payload) < 1024
    assert receive(CAPTURED, trust=TRUST).ok


def test_every_header_bit_flip_is_rejected_as_unauthentic() -> None:
    seen, wrong = flip_outcomes("header", UNAUTHENTIC_HEADER)
    assert wrong == {}
    assert sum(seen.values()) == len(CAPTURED.header) * 8
    # Both the parser and the signature did real work.
    assert seen[F.MALFORMED] > 0
    assert seen[F.BAD_SIGNATURE] > 0


def test_every_sealed_payload_bit_flip_is_a_digest_mismatch() -> None:
    seen, wrong = flip_outcomes(
        "sealed_payload", frozenset({F.PAYLOAD_DIGEST_MISMATCH}), header_is_authentic=True
    )
    assert wrong == {}
    assert seen == Counter({F.PAYLOAD_DIGEST_MISMATCH: len(CAPTURED.sealed_payload) * 8})


def test_every_signature_bit_flip_is_a_bad_signature() -> None:
    seen, wrong = flip_outcomes("signature", frozenset({F.BAD_SIGNATURE}))
    assert wrong == {}
    assert seen == Counter({F.BAD_SIGNATURE: len(CAPTURED.signature) * 8})


def receipt_flip_outcomes(
    part: str,
) -> tuple[Counter[VerificationFailure], dict[int, str]]:
    seen: Counter[VerificationFailure] = Counter()
    wrong: dict[int, str] = {}
    message_id = Header.from_bytes(CAPTURED.header).message_id
    for bit, flipped in bit_flips(getattr(CAPTURED_RECEIPT, part)):
        tampered: SignedReceipt = dataclasses.replace(CAPTURED_RECEIPT, **{part: flipped})
        try:
            verify_receipt(
                tampered,
                trust=TRUST,
                recipient_node_id=XB.node_id,
                message_id=message_id,
                envelope_digest=CAPTURED.digest(),
                now=T0 + dt.timedelta(seconds=1),
            )
        except VerificationError as exc:
            if exc.failure in UNAUTHENTIC_RECEIPT:
                seen[exc.failure] += 1
            else:
                wrong[bit] = f"refused as {exc.failure.name}"
        except Exception as exc:  # any other exception is the bug we look for
            wrong[bit] = f"raised {exc!r}"
        else:
            wrong[bit] = "accepted"
    return seen, wrong


def test_every_receipt_body_bit_flip_is_rejected() -> None:
    seen, wrong = receipt_flip_outcomes("body")
    assert wrong == {}
    assert seen[F.BAD_SIGNATURE] > 0


def test_every_receipt_signature_bit_flip_is_a_bad_signature() -> None:
    seen, wrong = receipt_flip_outcomes("signature")
    assert wrong == {}
    assert seen == Counter({F.BAD_SIGNATURE: len(CAPTURED_RECEIPT.signature) * 8})
