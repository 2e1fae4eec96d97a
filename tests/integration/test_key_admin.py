"""Rotating and revoking node keys as admins and stewards do it: files, drafts, refusals."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.errors import NotFoundError, ValidationError
from exchange.identity import NodeIdentity
from exchange.layout import FederationLayout, NodeLayout
from exchange.store import audit_log
from tests.integration.test_cli import refused, run

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def admitted(tmp_path: Path) -> tuple[Path, Path]:
    """A federation (threshold 1) whose published v2 lists node xa-police."""
    federation, node = tmp_path / "federation", tmp_path / "xa"
    federation_admin.init_federation(
        federation,
        federation_id="opsc-test",
        stewards=2,
        threshold=1,
        validity_days=30,
        passphrase=None,
        now=NOW,
    )
    node_admin.init_node(
        node,
        node_admin.NodeSpec("xa-police", "XA", "127.0.0.1:1", "127.0.0.1:2"),
        federation=federation,
        passphrase=None,
        now=NOW,
    )
    federation_admin.add_node(federation, node / "enrolment.json", now=NOW)
    federation_admin.sign_draft(federation, "steward-1", None)
    federation_admin.publish(federation, now=NOW)
    return federation, node


def _enrolled(node: Path, kind: str) -> str:
    key_id: str = json.loads((node / "enrolment.json").read_text())[f"{kind}_key"]["key_id"]
    return key_id


def test_rotating_keeps_the_old_keys_and_offers_the_new_ones(admitted: tuple[Path, Path]) -> None:
    _, node = admitted
    old_signing, old_sealing = _enrolled(node, "signing"), _enrolled(node, "sealing")

    rotated = node_admin.rotate_keys(node, signing=True, sealing=True, passphrase=None)

    layout = NodeLayout(node)
    assert [p.name for p in layout.key_files("signing")] == ["signing.pem", "signing.2.pem"]
    assert [p.name for p in layout.key_files("sealing")] == ["sealing.pem", "sealing.2.pem"]
    assert (node / "keys" / "signing.2.pem").stat().st_mode & 0o777 == 0o600
    identity = NodeIdentity.load(
        "xa-police", layout.key_files("signing"), layout.key_files("sealing"), None
    )
    assert list(identity.signing_keys) == [old_signing, rotated["signing"]]
    assert list(identity.sealing_keys) == [old_sealing, rotated["sealing"]]
    assert _enrolled(node, "signing") == rotated["signing"]
    assert _enrolled(node, "sealing") == rotated["sealing"]
    store = node_admin.open_store(node)
    try:
        last = store.read(lambda c: audit_log.entries_after(c, audit_log.size(c) - 1, 1))
    finally:
        store.dispose()
    assert [(e.actor, e.action) for e in last] == [("admin", "keys.rotated")]
    assert json.loads(last[0].details_json) == {
        "sealing_key_id": rotated["sealing"],
        "signing_key_id": rotated["signing"],
    }


def test_rotating_nothing_is_refused_and_writes_nothing(admitted: tuple[Path, Path]) -> None:
    _, node = admitted
    before = (node / "enrolment.json").read_text()
    with pytest.raises(ValidationError, match="--signing, --sealing, --oprf or several"):
        node_admin.rotate_keys(node, signing=False, sealing=False, passphrase=None)
    assert (node / "enrolment.json").read_text() == before
    assert len(NodeLayout(node).key_files("signing")) == 1


def test_publishing_a_new_key_keeps_the_old_one_for_the_overlap(
    admitted: tuple[Path, Path],
) -> None:
    federation, node = admitted
    old_id = _enrolled(node, "signing")
    new_id = node_admin.rotate_keys(node, signing=True, sealing=False, passphrase=None)["signing"]
    later = NOW + DAY

    draft = federation_admin.add_node(
        federation, node / "enrolment.json", now=later, overlap=3 * DAY
    )

    entry = draft.nodes["xa-police"]
    keys = {key.key_id: key for key in entry.signing_keys}
    assert keys[old_id].not_after == later + 3 * DAY
    assert keys[new_id].not_before == later
    assert keys[new_id].not_after is None
    assert len(entry.sealing_keys) == 1, "the sealing key was not rotated: unchanged"
    assert entry.sealing_keys[0].not_after is None
    # Adding the same enrolment again changes nothing about the keys.
    again = federation_admin.add_node(federation, node / "enrolment.json", now=later + DAY)
    assert again.nodes["xa-police"].signing_keys == entry.signing_keys


def test_revoking_a_key_marks_it_in_the_draft(admitted: tuple[Path, Path]) -> None:
    federation, node = admitted
    key_id = _enrolled(node, "signing")
    draft = federation_admin.revoke_key(
        federation, "xa-police", key_id, at=NOW + DAY, now=NOW + DAY
    )
    (key,) = draft.nodes["xa-police"].signing_keys
    assert key.revoked_at == NOW + DAY
    assert draft.version == 3


@pytest.mark.parametrize(
    ("node_id", "key_id", "message"),
    [
        pytest.param("xz-unknown", "", "node xz-unknown is not in the trust list", id="node"),
        pytest.param("xa-police", "0" * 32, "has no key 00000000", id="key"),
    ],
)
def test_revoking_what_is_not_listed_is_refused_and_leaves_no_draft(
    admitted: tuple[Path, Path], node_id: str, key_id: str, message: str
) -> None:
    federation, _ = admitted
    with pytest.raises(NotFoundError, match=message):
        federation_admin.revoke_key(federation, node_id, key_id, at=NOW, now=NOW)
    assert not FederationLayout(federation).draft.exists()


@pytest.mark.slow
def test_the_commands_refuse_bad_input_naming_it(admitted: tuple[Path, Path]) -> None:
    federation, node = admitted
    key_id = _enrolled(node, "signing")
    assert "at: must be an ISO 8601 time" in refused(
        "federation", "revoke-key", federation, "xa-police", key_id, "--at", "yesterday", "--yes"
    )
    assert "at: must carry a UTC offset" in refused(
        "federation",
        "revoke-key",
        federation,
        "xa-police",
        key_id,
        "--at",
        "2026-03-01T12:00",
        "--yes",
    )
    assert "--signing, --sealing, --oprf or several" in refused("node", "rotate-keys", node)
    assert not FederationLayout(federation).draft.exists()


def test_removing_a_node_suspends_it_in_the_draft_and_keeps_its_keys(
    admitted: tuple[Path, Path],
) -> None:
    federation, _ = admitted
    published = federation_admin.latest_published(federation)[1].trust_list.nodes["xa-police"]
    draft = federation_admin.remove_node(federation, "xa-police", now=NOW + DAY)
    removed = draft.nodes["xa-police"]
    assert removed.active is False
    assert draft.active_node("xa-police") is None
    # What it signed before stays verifiable: its keys are still listed.
    assert removed.signing_keys == published.signing_keys
    assert draft.version == 3


def test_removing_an_unknown_or_suspended_node_is_refused(admitted: tuple[Path, Path]) -> None:
    federation, _ = admitted
    with pytest.raises(NotFoundError, match="xz-unknown is not in the trust list"):
        federation_admin.remove_node(federation, "xz-unknown", now=NOW)
    assert not FederationLayout(federation).draft.exists()
    federation_admin.remove_node(federation, "xa-police", now=NOW)
    with pytest.raises(ValidationError, match="suspended already"):
        federation_admin.remove_node(federation, "xa-police", now=NOW)


@pytest.mark.slow
def test_destructive_federation_commands_ask_first(admitted: tuple[Path, Path]) -> None:
    federation, node = admitted
    key_id = _enrolled(node, "signing")
    for command in (
        ("federation", "remove-node", federation, "xa-police"),
        ("federation", "revoke-key", federation, "xa-police", key_id),
    ):
        declined = subprocess.run(
            [sys.executable, "-m", "exchange", *map(str, command)],
            input="n\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert declined.returncode == 1, declined
        assert "Aborted" in declined.stdout + declined.stderr
        assert not FederationLayout(federation).draft.exists(), "nothing changed when declined"
    removed = run("federation", "remove-node", federation, "xa-police", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "xa-police suspended" in removed.stdout
