"""The trust list: threshold signatures, versions and expiry (as TUF root), and key validity.

The update rules are a table of named histories. Each `Published` entry is one
trust list version as the stewards publish it: which stewards it lists, its
threshold, and who signed it. A node installs the first as its anchor and then
each next one in turn; every version but the last must be accepted, and the
last one's outcome is the case's expectation (None: accepted; otherwise a
fragment of the error, which names the rule broken).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from exchange._encoding import encode
from exchange._proto.exchange.v1 import federation_pb2 as pb
from exchange.errors import TrustListError
from exchange.keys import raw_public
from exchange.trust import (
    KeyInfo,
    SignedTrustList,
    TrustedNode,
    TrustList,
    check_signatures,
    sign_trust_list,
    verify_update,
)

from ._builders import (
    FEDERATION,
    STEWARD_KEYS,
    T0,
    XA,
    XB,
    federation,
    key_info,
    signed_by,
    stewards,
    trust_list,
    x_key,
)

DAY, SECOND = dt.timedelta(days=1), dt.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class Published:
    """One trust list version as published: listed stewards, threshold, signers."""

    stewards: tuple[int, ...]
    threshold: int
    signers: tuple[int, ...]
    version: int | None = None  # by default its place in the history, from 1
    expires_in: dt.timedelta = 90 * DAY
    federation_id: str = FEDERATION

    def signed(self, default_version: int) -> SignedTrustList:
        listed = trust_list(
            (XA.trusted(), XB.trusted()),
            version=self.version or default_version,
            steward_numbers=self.stewards,
            threshold=self.threshold,
            expires_at=T0 + self.expires_in,
            federation_id=self.federation_id,
        )
        return signed_by(listed, *self.signers)


V1 = Published(stewards=(1, 2, 3), threshold=2, signers=(1, 2))

HISTORIES: dict[str, tuple[list[Published], str | None]] = {
    # The anchor: installed out of band, still held to its own threshold.
    "anchor meets its own threshold": ([V1], None),
    "anchor under its own threshold": (
        [Published((1, 2, 3), 2, (1,))],
        "lacks its own stewards' threshold",
    ),
    "anchor unsigned": ([Published((1, 2, 3), 2, ())], "0 of 2"),
    "anchor signed by non-stewards only": ([Published((1, 2, 3), 2, (4, 5))], "threshold"),
    "anchor expired": ([Published((1, 2, 3), 2, (1, 2), expires_in=-SECOND)], "expired"),
    "anchor lists a steward twice": ([Published((1, 1, 2), 2, (1, 2))], "listed twice"),
    # Updates under an unchanged steward set.
    "update signed by another threshold of stewards": ([V1, Published((1, 2, 3), 2, (2, 3))], None),
    "update signed by every steward": ([V1, Published((1, 2, 3), 2, (3, 2, 1))], None),
    "update unsigned": ([V1, Published((1, 2, 3), 2, ())], "current stewards' threshold"),
    "update under threshold": ([V1, Published((1, 2, 3), 2, (3,))], "1 of 2"),
    "non-steward signature ignored": ([V1, Published((1, 2, 3), 2, (1, 4))], "1 of 2"),
    "same key signing twice does not meet a 2-of-3 threshold": (
        [V1, Published((1, 2, 3), 2, (1, 1))],
        "1 of 2",
    ),
    "anchor signed twice by the same key does not meet a 2-of-3 threshold": (
        [Published((1, 2, 3), 2, (2, 2))],
        "1 of 2",
    ),
    "update lists a steward twice": ([V1, Published((1, 1, 2), 2, (1, 2))], "listed twice"),
    # Versions: no rollback, no replay; a jump forward is allowed (DESIGN: "higher").
    "rollback to the same version": (
        [V1, Published((1, 2, 3), 2, (1, 2), version=1)],
        "rollback",
    ),
    "rollback to a lower version": (
        [V1, Published((1, 2, 3), 2, (1, 2), version=5), Published((1, 2, 3), 2, (1, 2), 4)],
        "rollback",
    ),
    "version jump forward": ([V1, Published((1, 2, 3), 2, (1, 2), version=9)], None),
    # Expiry and federation.
    "update expired": ([V1, Published((1, 2, 3), 2, (1, 2), expires_in=-SECOND)], "expired"),
    "update expiring exactly now": (
        [V1, Published((1, 2, 3), 2, (1, 2), expires_in=0 * DAY)],
        "expired",
    ),
    "update for another federation": (
        [V1, Published((1, 2, 3), 2, (1, 2), federation_id="other-federation")],
        "federation",
    ),
    # Rotating the whole steward set: current AND own thresholds.
    "rotation signed by the new stewards only": (
        [V1, Published((3, 4, 5), 2, (4, 5))],
        "current stewards' threshold",
    ),
    "rotation signed by the old stewards only": (
        [V1, Published((3, 4, 5), 2, (1, 2))],
        "own stewards' threshold",
    ),
    "rotation signed by old and new stewards": ([V1, Published((3, 4, 5), 2, (1, 2, 4, 5))], None),
    "rotation with an overlapping steward counting for both": (
        [V1, Published((3, 4, 5), 2, (2, 3, 4))],
        None,
    ),
    "rotated-out stewards lose their power": (
        [V1, Published((3, 4, 5), 2, (1, 2, 4, 5)), Published((3, 4, 5), 2, (1, 2))],
        "current stewards' threshold",
    ),
    # One steward key replaced (S3 by S4): the old threshold vouches for the new set.
    "a steward key replaced, signed by old and new threshold": (
        [V1, Published((1, 2, 4), 2, (1, 2))],
        None,
    ),
    "a steward key replaced, signed by the new key and one old": (
        [V1, Published((1, 2, 4), 2, (1, 4))],
        "current stewards' threshold",
    ),
    "a replaced steward key no longer counts": (
        [V1, Published((1, 2, 4), 2, (1, 2)), Published((1, 2, 4), 2, (1, 3))],
        "current stewards' threshold",
    ),
    "a replacement steward counts from the next version on": (
        [V1, Published((1, 2, 4), 2, (1, 2)), Published((1, 2, 4), 2, (1, 4))],
        None,
    ),
    # Changing the threshold.
    "threshold raised from 1 to 2": (
        [Published((1, 2, 3), 1, (1,)), Published((1, 2, 3), 2, (1, 2))],
        None,
    ),
    "threshold raised from 1 to 2, signed by one steward only": (
        [Published((1, 2, 3), 1, (1,)), Published((1, 2, 3), 2, (1,))],
        "own stewards' threshold",
    ),
    "after raising the threshold to 2, one steward no longer suffices": (
        [
            Published((1, 2, 3), 1, (1,)),
            Published((1, 2, 3), 2, (1, 2)),
            Published((1, 2, 3), 2, (3,)),
        ],
        "current stewards' threshold",
    ),
    "threshold raised, reached": ([V1, Published((1, 2, 3), 3, (1, 2, 3))], None),
    "threshold raised, new threshold not reached": (
        [V1, Published((1, 2, 3), 3, (1, 2))],
        "own stewards' threshold",
    ),
    "threshold lowered, old threshold not reached": (
        [V1, Published((1, 2, 3), 1, (1,))],
        "current stewards' threshold",
    ),
    "threshold zero is malformed": ([V1, Published((1, 2, 3), 0, (1, 2))], "threshold"),
    "threshold above the steward count is malformed": (
        [V1, Published((1, 2, 3), 4, (1, 2, 3))],
        "threshold",
    ),
}


@pytest.mark.parametrize(
    ("history", "expected"),
    list(HISTORIES.values()),
    ids=[name.replace(" ", "-") for name in HISTORIES],
)
def test_update_history(history: list[Published], expected: str | None) -> None:
    held: TrustList | None = None
    for number, published in enumerate(history[:-1], start=1):
        held = verify_update(published.signed(number), held, T0)
    last = history[-1].signed(len(history))
    if expected is None:
        accepted = verify_update(last, held, T0)
        assert accepted == last.trust_list
    else:
        with pytest.raises(TrustListError, match=expected):
            verify_update(last, held, T0)


def test_refusal_names_the_unknown_signers() -> None:
    candidate = Published((1, 2, 3), 2, (1, 4)).signed(2)
    held = verify_update(V1.signed(1), None, T0)
    outsider = signed_by(trust_list(), 4).signatures[0][0]
    with pytest.raises(TrustListError, match=f"bad or unknown: {outsider}"):
        verify_update(candidate, held, T0)


# --- counting signatures: a result object, not a bool ----------------------------------------


def test_check_signatures_reports_signed_unsigned_and_invalid() -> None:
    body = trust_list().to_bytes()
    s1, s2, s4 = (sign_trust_list(body, STEWARD_KEYS[n]) for n in (1, 2, 4))
    signatures = [s1, (s2[0], bytes(64)), s4, s1]
    check = check_signatures(body, signatures, stewards(1, 2, 3), threshold=2)
    ids = {n: sign_trust_list(body, STEWARD_KEYS[n])[0] for n in (1, 2, 3, 4)}
    assert check.signed == {ids[1]}
    assert check.unsigned == {ids[2], ids[3]}
    assert check.invalid == {ids[2], ids[4]}
    assert not check.ok
    assert check.describe().startswith("1 of 2 required steward signatures")


def test_a_bad_copy_does_not_cancel_a_good_signature() -> None:
    body = trust_list().to_bytes()
    key_id, good = sign_trust_list(body, STEWARD_KEYS[1])
    check = check_signatures(body, [(key_id, bytes(64)), (key_id, good)], stewards(1), 1)
    assert check.ok
    assert check.invalid == frozenset()


def test_signature_over_another_version_does_not_count() -> None:
    old_body = trust_list(version=1).to_bytes()
    new_body = trust_list(version=2).to_bytes()
    carried = [sign_trust_list(old_body, STEWARD_KEYS[n]) for n in (1, 2)]
    assert not check_signatures(new_body, carried, stewards(1, 2, 3), 2).ok


def test_signature_without_the_domain_tag_does_not_count() -> None:
    body = trust_list().to_bytes()
    key_id, _ = sign_trust_list(body, STEWARD_KEYS[1])
    untagged = STEWARD_KEYS[1].sign(body)
    assert not check_signatures(body, [(key_id, untagged)], stewards(1), 1).ok
    tagged = STEWARD_KEYS[1].sign(encode("exchange.v1.TrustList", body))
    assert check_signatures(body, [(key_id, tagged)], stewards(1), 1).ok


# --- bytes ---------------------------------------------------------------------------------


def test_trust_list_round_trips_through_its_bytes() -> None:
    listed = federation()
    assert TrustList.from_bytes(listed.to_bytes()) == listed


def test_signed_trust_list_round_trips_through_its_bytes() -> None:
    signed = signed_by(federation(), 1, 2)
    assert SignedTrustList.from_bytes(signed.to_bytes()) == signed


def test_with_signature_replaces_an_earlier_signature_by_the_same_key() -> None:
    signed = signed_by(federation(), 1, 2)
    key_id, signature = signed.signatures[0]
    again = signed.with_signature(key_id, signature)
    assert sorted(again.signatures) == sorted(signed.signatures)
    assert len(again.signatures) == 2


def test_malformed_signed_trust_list_is_refused() -> None:
    with pytest.raises(TrustListError, match="malformed"):
        SignedTrustList.from_bytes(b"\xff\xff")


def _edited(edit: object) -> bytes:
    message = pb.TrustList.FromString(federation().to_bytes())
    edit(message)  # type: ignore[operator]
    return message.SerializeToString()


def _set(path: str, value: object) -> object:
    *parents, name = path.split(".")

    def edit(message: object) -> None:
        for parent in parents:
            message = getattr(message, parent) if not parent.isdigit() else message[int(parent)]  # type: ignore[index]
        setattr(message, name, value)

    return edit


INCONSISTENT = [
    pytest.param(_set("federation_id", ""), "federation_id", id="no-federation-id"),
    pytest.param(_set("version", 0), "version", id="version-zero"),
    pytest.param(lambda m: m.ClearField("expires_at"), "expires_at", id="no-expiry"),
    pytest.param(
        _set("expires_at.seconds", int((T0 - 2 * DAY).timestamp())),
        "expires_at",
        id="expires-before-issued",
    ),
    pytest.param(_set("stewards.0.key_id", "0" * 32), "stewards[0]", id="steward-key-id-forged"),
    pytest.param(_set("nodes.0.node_id", "XA"), "nodes[0].node_id", id="bad-node-id"),
    pytest.param(_set("nodes.1.node_id", XA.node_id), "nodes[1].node_id", id="node-listed-twice"),
    pytest.param(_set("nodes.0.country", "xa"), "nodes[0].country", id="bad-country"),
    pytest.param(_set("nodes.0.status", 0), "nodes[0].status", id="no-status"),
    pytest.param(
        _set("nodes.0.signing_keys.0.key_id", "0" * 32),
        "nodes[0].signing_keys[0].key_id",
        id="key-id-not-of-the-key",
    ),
    pytest.param(
        _set("nodes.0.signing_keys.0.public_key", b"\x01" * 31),
        "nodes[0].signing_keys[0].public_key",
        id="short-public-key",
    ),
    pytest.param(
        _set("nodes.0.signing_keys.0.algorithm", 0),
        "nodes[0].signing_keys[0].algorithm",
        id="no-algorithm",
    ),
    pytest.param(
        lambda m: m.nodes[0].signing_keys[0].ClearField("not_before"),
        "nodes[0].signing_keys[0].not_before",
        id="key-without-not-before",
    ),
    pytest.param(
        lambda m: m.nodes[0].signing_keys[0].CopyFrom(m.nodes[0].sealing_keys[0]),
        "nodes[0].signing_keys",
        id="sealing-key-as-signing-key",
    ),
    pytest.param(
        lambda m: m.nodes[0].ClearField("sealing_keys"),
        "nodes[0].sealing_keys",
        id="no-sealing-key",
    ),
    pytest.param(
        _set("nodes.0.tls_certificate_sha256", b"\x00" * 20),
        "nodes[0].tls_certificate_sha256",
        id="short-certificate-pin",
    ),
    pytest.param(
        _set("expires_at.nanos", 1_500_000_000), "expires_at", id="expiry-out-of-datetime-range"
    ),
    pytest.param(
        _set("nodes.0.signing_keys.0.revoked_at.seconds", 10**12),
        "nodes[0].signing_keys[0].revoked_at",
        id="revocation-out-of-datetime-range",
    ),
    # One entry revoked, a copy not: the key would survive its revocation.
    pytest.param(
        lambda m: m.nodes[0].signing_keys.append(m.nodes[0].signing_keys[0]),
        "nodes[0]: lists a key twice",
        id="key-listed-twice",
    ),
]


@pytest.mark.parametrize(("edit", "field"), INCONSISTENT)
def test_inconsistent_trust_list_is_refused_naming_the_field(edit: object, field: str) -> None:
    with pytest.raises(TrustListError) as raised:
        TrustList.from_bytes(_edited(edit))
    assert field in str(raised.value)


def test_inconsistent_candidate_is_refused_before_its_signatures_count() -> None:
    body = _edited(_set("nodes.0.country", "xa"))
    candidate = SignedTrustList(body, tuple(sign_trust_list(body, STEWARD_KEYS[n]) for n in (1, 2)))
    with pytest.raises(TrustListError, match="inconsistent"):
        verify_update(candidate, None, T0)


# --- key validity ----------------------------------------------------------------------------

NOT_BEFORE, NOT_AFTER, REVOKED_AT = T0 - 10 * DAY, T0 + 10 * DAY, T0 + 5 * DAY
WINDOW = key_info(
    XA.signing.public_key(), not_before=NOT_BEFORE, not_after=NOT_AFTER, revoked_at=REVOKED_AT
)
OPEN_ENDED = key_info(XA.signing.public_key(), not_before=NOT_BEFORE)
TICK = dt.timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("key", "when", "valid"),
    [
        pytest.param(OPEN_ENDED, NOT_BEFORE - TICK, False, id="before-not-before"),
        pytest.param(OPEN_ENDED, NOT_BEFORE, True, id="at-not-before"),
        pytest.param(OPEN_ENDED, T0 + 1000 * DAY, True, id="open-ended"),
        pytest.param(
            dataclasses.replace(WINDOW, revoked_at=None), NOT_AFTER, True, id="at-not-after"
        ),
        pytest.param(
            dataclasses.replace(WINDOW, revoked_at=None),
            NOT_AFTER + TICK,
            False,
            id="after-not-after",
        ),
        pytest.param(WINDOW, REVOKED_AT - TICK, True, id="just-before-revocation"),
        pytest.param(WINDOW, REVOKED_AT, False, id="at-revocation"),
        pytest.param(WINDOW, REVOKED_AT + TICK, False, id="after-revocation"),
    ],
)
def test_key_valid_at(key: KeyInfo, when: dt.datetime, valid: bool) -> None:
    assert key.valid_at(when) is valid


OLD, CURRENT, NEXT = x_key(121), x_key(122), x_key(123)
ROTATING = XA.trusted(
    sealing_keys=[
        key_info(CURRENT.public_key(), not_before=T0 - 10 * DAY),
        key_info(OLD.public_key(), not_before=T0 - 100 * DAY),
        key_info(NEXT.public_key(), not_before=T0 + 10 * DAY),
    ]
)


@pytest.mark.parametrize(
    ("node", "when", "expected"),
    [
        pytest.param(ROTATING, T0, CURRENT, id="newest-valid-not-the-future-one"),
        pytest.param(ROTATING, T0 - 50 * DAY, OLD, id="before-the-current-one"),
        pytest.param(ROTATING, T0 + 10 * DAY, NEXT, id="once-the-next-one-starts"),
        pytest.param(
            dataclasses.replace(
                ROTATING,
                sealing_keys=(
                    key_info(CURRENT.public_key(), not_before=T0 - 10 * DAY, revoked_at=T0),
                    key_info(OLD.public_key(), not_before=T0 - 100 * DAY),
                ),
            ),
            T0,
            OLD,
            id="falls-back-when-the-newest-is-revoked",
        ),
        pytest.param(ROTATING, T0 - 200 * DAY, None, id="none-valid-yet"),
    ],
)
def test_sealing_key_is_the_newest_valid_one(
    node: TrustedNode, when: dt.datetime, expected: x25519.X25519PrivateKey | None
) -> None:
    chosen = node.sealing_key(when)
    if expected is None:
        assert chosen is None
    else:
        assert chosen is not None
        assert chosen.public == raw_public(expected.public_key())


def test_signing_key_requires_the_named_id_and_validity_at_the_time() -> None:
    node = XA.trusted(signing_keys=[key_info(XA.signing.public_key(), revoked_at=T0)])
    assert node.signing_key(XA.signing_key_id, T0 - SECOND) is not None
    assert node.signing_key(XA.signing_key_id, T0) is None
    assert node.signing_key(XB.signing_key_id, T0 - SECOND) is None


def test_suspended_node_is_listed_but_not_active() -> None:
    listed = federation(XA.trusted(active=False), XB.trusted())
    assert listed.node(XA.node_id) is not None
    assert listed.active_node(XA.node_id) is None
    assert listed.active_node(XB.node_id) is not None
    assert TrustList.from_bytes(listed.to_bytes()).active_node(XA.node_id) is None


def test_trust_list_expiry_boundary() -> None:
    listed = trust_list(expires_at=T0)
    assert not listed.expired(T0 - TICK)
    assert listed.expired(T0)


STALENESS = [
    pytest.param(T0 - DAY, T0 + 90 * DAY, T0, None, id="fresh"),
    pytest.param(T0 - 30 * DAY, T0 + 90 * DAY, T0, None, id="exactly-at-the-freshness-limit"),
    pytest.param(T0 - 30 * DAY - TICK, T0 + 90 * DAY, T0, "freshness limit of 30 days", id="older"),
    pytest.param(T0 - DAY, T0, T0, "expired at", id="expired-though-young"),
]


@pytest.mark.parametrize(("issued", "expires", "now", "reason"), STALENESS)
def test_a_list_past_its_expiry_or_freshness_limit_is_stale(
    issued: dt.datetime, expires: dt.datetime, now: dt.datetime, reason: str | None
) -> None:
    listed = trust_list(issued_at=issued, expires_at=expires, version=7)
    stale = listed.staleness(now, 30 * DAY)
    if reason is None:
        assert stale is None
    else:
        assert stale is not None
        assert reason in stale
        assert "version 7" in stale
