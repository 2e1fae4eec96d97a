"""Authority clients: bearer tokens, authentication that tells nothing, roles."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest

from exchange.clients import (
    PERMISSIONS,
    ROLES,
    Principal,
    authenticate,
    new_client,
    parse_token,
)
from exchange.errors import AuthenticationError, PermissionDeniedError, ValidationError
from exchange.store.registry import ClientRecord

NOW_MS = 1_893_456_000_000
TOKEN_SHAPE = re.compile(r"exn_[0-9a-f]{32}_[A-Za-z0-9_-]{43}")


class Registry:
    """The client table as `authenticate` sees it: a lookup by client id."""

    def __init__(self, *records: ClientRecord) -> None:
        self.records = {record.client_id: record for record in records}
        self.looked_up: list[str] = []

    def __call__(self, client_id: str) -> ClientRecord | None:
        self.looked_up.append(client_id)
        return self.records.get(client_id)


@pytest.fixture
def issued() -> tuple[ClientRecord, str]:
    return new_client("case-system", ["submitter", "reader"], NOW_MS)


# --- tokens ------------------------------------------------------------------------------------


def test_a_new_client_gets_a_token_of_the_documented_shape(issued):
    record, token = issued

    assert TOKEN_SHAPE.fullmatch(token)
    client_id, secret = parse_token(token)
    assert client_id == record.client_id
    assert record.secret_hash == hashlib.sha256(secret.encode()).digest()
    assert secret.encode() not in repr(record).encode(), "the secret itself is never stored"
    assert record == ClientRecord(
        client_id=client_id,
        name="case-system",
        roles=frozenset({"submitter", "reader"}),
        secret_hash=record.secret_hash,
        created_at=NOW_MS,
        revoked_at=None,
    )


def test_every_new_client_gets_its_own_id_and_secret():
    tokens = [new_client(f"system-{n}", ["reader"], NOW_MS)[1] for n in range(20)]

    ids, secrets = zip(*(parse_token(token) for token in tokens), strict=True)
    assert len(set(ids)) == len(set(secrets)) == 20


def test_the_right_token_authenticates_its_client(issued):
    record, token = issued

    principal = authenticate(token, Registry(record))

    assert principal == Principal(
        record.client_id, "case-system", frozenset({"submitter", "reader"})
    )
    assert principal.actor == "client:case-system"


def _with_other_secret(token: str) -> str:
    client_id, secret = parse_token(token)
    other = ("A" if secret[0] != "A" else "B") + secret[1:]
    return f"exn_{client_id}_{other}"


def _with_other_client(token: str) -> str:
    _, secret = parse_token(token)
    return f"exn_{'0' * 32}_{secret}"


REFUSALS = [
    # (case id, the token presented, the registry's record of the issued client)
    pytest.param(_with_other_secret, lambda r: r, id="wrong-secret"),
    pytest.param(_with_other_client, lambda r: r, id="unknown-client-id"),
    pytest.param(lambda t: t, lambda r: dataclasses.replace(r, revoked_at=NOW_MS), id="revoked"),
    pytest.param(
        lambda t: t,
        lambda r: dataclasses.replace(r, revoked_at=NOW_MS, secret_hash=bytes(32)),
        id="revoked-and-wrong-secret",
    ),
]


@pytest.mark.parametrize(("present", "stored"), REFUSALS)
def test_a_bad_token_fails_identically_whatever_is_wrong(issued, present, stored):
    record, token = issued

    with pytest.raises(AuthenticationError) as caught:
        authenticate(present(token), Registry(stored(record)))

    # One message for every cause, so a caller learns nothing about which.
    assert str(caught.value) == "invalid token"


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("Bearer exn_" + "0" * 32 + "_" + "a" * 43, id="with-scheme"),
    pytest.param("exn_" + "0" * 32 + "_" + "a" * 42, id="secret-too-short"),
    pytest.param("exn_" + "0" * 32 + "_" + "a" * 44, id="secret-too-long"),
    pytest.param("exn_" + "0" * 31 + "_" + "a" * 43, id="client-id-too-short"),
    pytest.param("exn_" + "0" * 31 + "G_" + "a" * 43, id="client-id-not-hex"),
    pytest.param("exn_" + "A" * 32 + "_" + "a" * 43, id="client-id-uppercase-hex"),
    pytest.param("exn_" + "0" * 32 + "_" + "a" * 42 + "=", id="secret-with-padding"),
    pytest.param("exn_" + "0" * 32 + "_" + "a" * 42 + "/", id="secret-not-urlsafe"),
    pytest.param("xyz_" + "0" * 32 + "_" + "a" * 43, id="wrong-prefix"),
    pytest.param("exn_" + "0" * 32 + "_" + "a" * 43 + "\n", id="trailing-newline"),
    pytest.param(" exn_" + "0" * 32 + "_" + "a" * 43, id="leading-space"),
]


@pytest.mark.parametrize("token", MALFORMED)
def test_a_malformed_token_is_refused_without_a_lookup(token):
    registry = Registry()

    with pytest.raises(AuthenticationError, match="malformed token"):
        authenticate(token, registry)

    assert registry.looked_up == []


# --- roles -------------------------------------------------------------------------------------

AUTHORITY_METHODS = sorted(PERMISSIONS)


def test_the_roles_are_the_four_documented_ones():
    assert frozenset({"submitter", "reader", "auditor", "admin"}) == ROLES
    assert set(PERMISSIONS.values()) == ROLES - {"admin"}


ROLE_METHODS = [
    pytest.param(
        "submitter",
        {
            "SubmitNotice",
            "Respond",
            "Acknowledge",
            "Withdraw",
            "DecideDisclosure",
            "Forward",
            "GetDeliveryStatus",
            "RegisterIdentifiers",
        },
        id="submitter",
    ),
    pytest.param(
        "reader",
        {"ListInbox", "GetNotice", "WatchInbox", "ListOverdueRequests", "Query"},
        id="reader",
    ),
    pytest.param(
        "auditor",
        {"ListAuditEntries", "GetAuditHead", "GetInclusionProof", "GetConsistencyProof"},
        id="auditor",
    ),
    pytest.param("admin", set(PERMISSIONS), id="admin"),
]


def allowed(principal: Principal, method: str) -> bool:
    try:
        principal.require(method)
    except PermissionDeniedError:
        return False
    return True


@pytest.mark.parametrize(("role", "methods"), ROLE_METHODS)
def test_each_role_allows_exactly_its_methods(role, methods):
    principal = Principal("0" * 32, "case-system", frozenset({role}))

    assert {m for m in AUTHORITY_METHODS if allowed(principal, m)} == methods


def test_roles_add_up():
    principal = Principal("0" * 32, "case-system", frozenset({"reader", "auditor"}))

    assert {m for m in AUTHORITY_METHODS if allowed(principal, m)} == {
        "ListInbox",
        "GetNotice",
        "WatchInbox",
        "ListOverdueRequests",
        "Query",
        "ListAuditEntries",
        "GetAuditHead",
        "GetInclusionProof",
        "GetConsistencyProof",
    }


def test_a_method_outside_the_table_needs_admin():
    everything_but_admin = frozenset(ROLES - {"admin"})

    assert not allowed(Principal("0" * 32, "ops", everything_but_admin), "RotateKeys")
    assert allowed(Principal("0" * 32, "ops", frozenset({"admin"})), "RotateKeys")


def test_a_refusal_names_the_missing_role_but_no_secret():
    principal = Principal("0" * 32, "case-system", frozenset({"reader"}))

    with pytest.raises(PermissionDeniedError) as caught:
        principal.require("SubmitNotice")

    assert str(caught.value) == (
        "client 'case-system' lacks the submitter role needed for SubmitNotice"
    )


def test_no_roles_allow_nothing():
    principal = Principal("0" * 32, "case-system", frozenset())

    assert [m for m in AUTHORITY_METHODS if allowed(principal, m)] == []


# --- new clients -------------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("Case-System", id="capitals"),
    pytest.param("case system", id="space"),
    pytest.param("-case", id="leading-hyphen"),
    pytest.param(".case", id="leading-dot"),
    pytest.param("x" * 65, id="over-64"),
    pytest.param("case/system", id="slash"),
    pytest.param("case,system", id="comma"),
    pytest.param("case-system\n", id="trailing-newline"),
    pytest.param("cäse", id="non-ascii"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_new_client_refuses_bad_names(name):
    with pytest.raises(ValidationError) as caught:
        new_client(name, ["reader"], NOW_MS)

    assert caught.value.field == "name"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a", id="one-char"),
        pytest.param("x" * 64, id="64-chars"),
        pytest.param("xa.case_system-2", id="dots-underscores-hyphens"),
    ],
)
def test_new_client_accepts_good_names(name):
    record, _ = new_client(name, ["reader"], NOW_MS)

    assert record.name == name


BAD_ROLES = [
    pytest.param([], id="no-role"),
    pytest.param(["superuser"], id="unknown-role"),
    pytest.param(["reader", "root"], id="one-unknown-among-known"),
    pytest.param(["Reader"], id="capitalised"),
]


@pytest.mark.parametrize("roles", BAD_ROLES)
def test_new_client_refuses_unknown_roles(roles):
    with pytest.raises(ValidationError) as caught:
        new_client("case-system", roles, NOW_MS)

    assert caught.value.field == "role"


def test_repeated_roles_are_one_role():
    record, _ = new_client("case-system", ["reader", "reader"], NOW_MS)

    assert record.roles == frozenset({"reader"})
