"""`exchange audit` on nodes whose logs were written by real traffic, on both store engines.

Two nodes run on loopback; XA sends XB three referrals and both sign heads;
then the nodes stop and the commands run on their directories as an admin
would: verify the whole log (and find tampering done to the store with SQL),
prove one entry, export the evidence about one message, and verify bundles
offline with nothing but the published trust list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, select, text, update
from typer.testing import CliRunner, Result

from exchange._proto.exchange.v1 import audit_pb2
from exchange.admin.federation import latest_published
from exchange.admin.node import add_client, open_store
from exchange.audit import AuditRecord
from exchange.auditing import AuditLog
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.cli import app
from exchange.clock import to_millis
from exchange.errors import NotFoundError
from exchange.harness import samples
from exchange.harness.setup import SimNode
from exchange.keys import load_ed25519
from exchange.layout import FederationLayout, NodeLayout
from exchange.store import audit_heads, audit_log
from exchange.store.tables import AUDIT_ENTRIES, AUDIT_HEAD, AUDIT_NODES, AUDIT_TREE_HEADS
from tests.conftest import DatabaseFactory
from tests.live import start_federation

NOTICES = 3
RUNNER = CliRunner()


@dataclasses.dataclass(frozen=True)
class Traffic:
    xa: SimNode
    xb: SimNode
    message_ids: list[str]
    trust_list: Path


async def _run_traffic(root: Path, databases: DatabaseFactory) -> Traffic:
    """XA sends XB `NOTICES` referrals, each delivered and receipted; then both nodes stop."""
    federation = await start_federation(root, databases, countries=2)
    try:
        xa = federation.client(0)
        b = federation.sim(1).node_id
        sent = [
            (await xa.submit(samples.case_referral([b], f"XA-2026-{n:04d}", "Audit CLI test.")))
            for n in range(NOTICES)
        ]
        for submitted in sent:
            for _ in range(200):
                status = await xa.delivery_status(submitted.message_id)
                if status.recipients[0].receipt.body:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"{submitted.message_id} was not delivered")
        # Heads over the whole logs, as each node's schedule would sign them.
        for index in range(2):
            await AuditLog(federation.node(index).context).issue_head(force=True)
    finally:
        await federation.close()
    version, _ = latest_published(root / "federation")
    return Traffic(
        federation.sim(0),
        federation.sim(1),
        [s.message_id for s in sent],
        FederationLayout(root / "federation").trust_list(version),
    )


@pytest.fixture
async def traffic(tmp_path: Path, databases: DatabaseFactory) -> Traffic:
    return await _run_traffic(tmp_path, databases)


def audit(*arguments: str | Path) -> Result:
    return RUNNER.invoke(app, ["audit", *map(str, arguments)], env={"COLUMNS": "200"})


def ok(*arguments: str | Path) -> str:
    result = audit(*arguments)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(*arguments: str | Path) -> str:
    """The error an admin sees: printed by the command, or raised to `exchange`'s main."""
    result = audit(*arguments)
    assert result.exit_code == 1, (result.output, result.exception)
    if isinstance(result.exception, SystemExit):
        # Progress lines may come first; the error is a line of its own.
        assert any(line.startswith("error:") for line in result.stderr.splitlines()), result.stderr
        return result.stderr
    return str(result.exception)


def verified(*arguments: str | Path) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(ok(*arguments, "--json"))
    return parsed


def in_store(node: SimNode, change: Callable[[Connection], Any], *, write: bool = True) -> Any:
    store = open_store(node.directory)
    try:
        return store.write(change) if write else store.read(change)
    finally:
        store.dispose()


# --- the whole log, from the store ---------------------------------------------------------


async def test_a_log_written_by_real_traffic_verifies(traffic: Traffic) -> None:
    for node in (traffic.xa, traffic.xb):
        outcome = verified("verify", node.directory)
        assert outcome["first_bad_sequence"] is None, outcome
        assert outcome["bad_heads"] == []
        assert outcome["heads"] >= 1
    # XA: four admin entries (two trust lists, two clients), then each notice
    # submitted and delivered.
    assert verified("verify", traffic.xa.directory)["entries"] == 4 + 2 * NOTICES
    assert "audit log intact: 10 entries" in ok("verify", traffic.xa.directory)


def pin_heads(node: SimNode, *sizes: int) -> None:
    """Replace the node's heads with heads at `sizes`, signed with its key.

    The node's own schedule signs at sizes that depend on timing; fixed sizes
    make each tampering case's first bad entry exact.
    """
    key = load_ed25519(NodeLayout(node.directory).signing_key, None)
    now = dt.datetime.now(dt.UTC)

    def pin(connection: Connection) -> None:
        connection.execute(delete(AUDIT_TREE_HEADS))
        for size in sizes:
            head = TreeHead(node.node_id, size, audit_log.root(connection, size), now)
            audit_heads.insert_own(connection, SignedTreeHead.sign(head, key), size, to_millis(now))

    in_store(node, pin)


def edit(sequence: int, **values: Any) -> Callable[[Connection], None]:
    def apply(connection: Connection) -> None:
        connection.execute(
            update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == sequence).values(**values)
        )

    return apply


def edit_and_rehash(sequence: int, actor: str) -> Callable[[Connection], None]:
    """An editor who also recomputes the stored leaf hash, as a careful forger would."""

    def apply(connection: Connection) -> None:
        entry = audit_log.entry(connection, sequence)
        assert entry is not None
        forged = dataclasses.replace(entry, actor=actor)
        edit(sequence, actor=actor, leaf_hash=forged.expected_leaf_hash())(connection)

    return apply


def remove(where: str) -> Callable[[Connection], None]:
    return lambda connection: connection.execute(text(f"DELETE FROM audit_entries WHERE {where}"))


def swap(first: int, second: int) -> Callable[[Connection], None]:
    """Swap two rows' contents, each keeping its sequence number (its place)."""

    def apply(connection: Connection) -> None:
        rows = {
            row.sequence: {k: v for k, v in row._mapping.items() if k != "sequence"}
            for row in connection.execute(
                select(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence.in_([first, second]))
            )
        }
        edit(first, **rows[second])(connection)
        edit(second, **rows[first])(connection)

    return apply


# XA's log has 10 entries; heads are pinned at sizes 4 and 8.
TAMPERING = [
    pytest.param(edit(6, actor="intruder"), 6, id="field-edited"),
    pytest.param(edit(3, leaf_hash=bytes(32)), 3, id="leaf-hash-edited"),
    pytest.param(edit(9, details="{}"), 9, id="field-edited-after-the-last-head"),
    # Rehashed edits pass the leaf check; the first head over them does not.
    pytest.param(edit_and_rehash(6, "intruder"), 5, id="field-edited-and-rehashed"),
    pytest.param(edit_and_rehash(2, "intruder"), 1, id="edited-and-rehashed-under-the-first-head"),
    pytest.param(remove("sequence = 6"), 6, id="row-deleted"),
    pytest.param(remove("sequence = 1"), 1, id="first-row-deleted"),
    pytest.param(swap(2, 3), 2, id="rows-swapped"),
    pytest.param(remove("sequence > 6"), 7, id="truncated-under-a-head"),
    # No head covers entry 10: the store's own append counter still does.
    pytest.param(remove("sequence > 9"), 10, id="truncated-after-the-last-head"),
]


@pytest.mark.parametrize(("tamper", "first_bad"), TAMPERING)
async def test_verify_names_the_first_bad_entry_of_a_tampered_store(
    traffic: Traffic, tamper: Callable[[Connection], None], first_bad: int
) -> None:
    node = traffic.xa
    pin_heads(node, 4, 8)
    assert verified("verify", node.directory)["heads"] == 2
    in_store(node, tamper)
    outcome = audit("verify", node.directory, "--json")
    assert outcome.exit_code == 1
    assert f'"first_bad_sequence": {first_bad},' in outcome.stdout
    assert f"audit log broken at entry {first_bad}:" in refused("verify", node.directory)


async def test_a_head_kept_outside_the_store_catches_a_wholesale_rewrite(
    traffic: Traffic, tmp_path: Path
) -> None:
    node = traffic.xa
    kept = tmp_path / "kept.pb"
    ok("prove", node.directory, "--sequence", "1", "-o", kept)
    assert "kept outside the store" in ok("verify", node.directory, "--head", kept)

    def rewrite(connection: Connection) -> None:
        # Entries, subtrees and stored heads all replaced: consistent in itself.
        size = audit_log.size(connection)
        for table in (AUDIT_ENTRIES, AUDIT_NODES, AUDIT_TREE_HEADS):
            connection.execute(delete(table))
        connection.execute(update(AUDIT_HEAD).values(sequence=0, frontier=b""))
        forged = AuditRecord(occurred_at=dt.datetime.now(dt.UTC), actor="admin", action="x")
        audit_log.append(connection, [forged] * size)

    in_store(node, rewrite)

    alone = ok("verify", node.directory)
    assert "audit log intact" in alone
    assert "only a head kept elsewhere" in alone
    assert "audit log broken at entry 1:" in refused("verify", node.directory, "--head", kept)


async def test_a_forged_head_in_the_store_is_named(traffic: Traffic) -> None:
    node = traffic.xa

    def forge(connection: Connection) -> None:
        connection.execute(update(AUDIT_TREE_HEADS).values(signature=bytes(64)))

    in_store(node, forge)
    assert "do not verify: tree head of xa-police has a bad signature" in refused(
        "verify", node.directory
    )


# --- prove ---------------------------------------------------------------------------------


def own_heads(node: SimNode) -> list[int]:
    return [
        TreeHead.parse(signed.text).size
        for signed in in_store(node, audit_heads.own_heads, write=False)
    ]


async def test_a_proof_of_one_entry_verifies_offline(traffic: Traffic, tmp_path: Path) -> None:
    node, proof = traffic.xa, tmp_path / "entry-3.pb"
    heads = own_heads(node)
    assert "entry 3 in the head at size 10" in ok(
        "prove", node.directory, "--sequence", "3", "-o", proof
    )
    assert own_heads(node) == heads, "the newest head covers entry 3: no new head"
    outcome = verified("verify", "--proof", proof, "--trust-list", traffic.trust_list)
    assert outcome["ok"]
    assert outcome["message_id"] == ""
    assert outcome["passed"][-1] == "entry 3 (client.added) is in the head's tree"


async def test_an_entry_no_head_covers_gets_a_fresh_head(traffic: Traffic, tmp_path: Path) -> None:
    node = traffic.xa
    add_client(node.directory, "late-system", ["reader"], now=dt.datetime.now(dt.UTC))
    assert max(own_heads(node)) == 10
    ok("prove", node.directory, "--sequence", "11", "-o", tmp_path / "first.pb")
    assert max(own_heads(node)) == 11
    ok("prove", node.directory, "--sequence", "11", "-o", tmp_path / "again.pb")
    assert own_heads(node).count(11) == 1, "the fresh head is reused"
    for proof in ("first.pb", "again.pb"):
        assert verified("verify", "--proof", tmp_path / proof, "--trust-list", traffic.trust_list)[
            "ok"
        ]
    # The fresh head is one of the node's heads like any other.
    assert verified("verify", node.directory)["first_bad_sequence"] is None


async def test_a_proof_of_an_entry_not_in_the_log_is_refused(
    traffic: Traffic, tmp_path: Path
) -> None:
    result = audit("prove", traffic.xa.directory, "--sequence", "99", "-o", tmp_path / "p.pb")
    assert result.exit_code == 1
    assert isinstance(result.exception, NotFoundError)
    assert str(result.exception) == "no audit entry 99 (the log holds 10)"
    assert not (tmp_path / "p.pb").exists()


# --- export and verify --bundle ------------------------------------------------------------


def export(
    traffic: Traffic, node: SimNode, path: Path, message: int = 0
) -> audit_pb2.AuditEvidence:
    assert "head at size" in ok("export", node.directory, traffic.message_ids[message], "-o", path)
    bundle = audit_pb2.AuditEvidence()
    bundle.ParseFromString(path.read_bytes())
    return bundle


async def test_sender_and_recipient_evidence_verify_offline(
    traffic: Traffic, tmp_path: Path
) -> None:
    message_id = traffic.message_ids[0]
    sent = export(traffic, traffic.xa, tmp_path / "xa.pb")
    received = export(traffic, traffic.xb, tmp_path / "xb.pb")
    assert [e.entry.action for e in sent.entries] == ["notice.submitted", "notice.delivered"]
    assert [e.entry.action for e in received.entries] == ["notice.received"]
    # The envelope as sent is the envelope as received, and one receipt speaks for it.
    assert sent.envelope == received.envelope != b""
    assert list(sent.receipts) == list(received.receipts)
    assert len(sent.receipts) == 1
    assert (tmp_path / "xa.pb").stat().st_mode & 0o777 == 0o600
    for path, node in ((tmp_path / "xa.pb", traffic.xa), (tmp_path / "xb.pb", traffic.xb)):
        outcome = verified("verify", "--bundle", path, "--trust-list", traffic.trust_list)
        assert outcome["ok"], outcome["failure"]
        assert (outcome["node_id"], outcome["message_id"]) == (node.node_id, message_id)
        assert outcome["passed"][-2].startswith(f"envelope {message_id} signed by xa-police")
        assert outcome["passed"][-1] == (
            "receipt from xb-prosecution signed over this envelope's digest, accepted"
        )
    printed = ok("verify", "--bundle", tmp_path / "xa.pb", "--trust-list", traffic.trust_list)
    assert f"evidence from xa-police about message {message_id} verifies" in printed
    # Handing out evidence is itself on the record, after the head the bundle uses.
    last = in_store(traffic.xa, lambda c: audit_log.entries_after(c, 0, 10_000)[-1], write=False)
    assert (last.actor, last.action, last.message_id) == ("admin", "audit.exported", message_id)
    assert last.sequence > max(e.entry.sequence for e in sent.entries)


def rewrite(source: Path, target: Path, change: Callable[[audit_pb2.AuditEvidence], None]) -> Path:
    bundle = audit_pb2.AuditEvidence()
    bundle.ParseFromString(source.read_bytes())
    change(bundle)
    target.write_bytes(bundle.SerializeToString())
    return target


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


async def test_a_tampered_bundle_file_is_refused_naming_the_part(
    traffic: Traffic, tmp_path: Path
) -> None:
    good = tmp_path / "good.pb"
    bundle = export(traffic, traffic.xa, good)
    other = export(traffic, traffic.xa, tmp_path / "other.pb", message=1)
    first = bundle.entries[0].entry.sequence

    def edit_actor(b: audit_pb2.AuditEvidence) -> None:
        b.entries[0].entry.actor = "admin"

    def flip_path(b: audit_pb2.AuditEvidence) -> None:
        b.entries[0].inclusion_path[0] = flip_last_byte(b.entries[0].inclusion_path[0])

    def flip_envelope(b: audit_pb2.AuditEvidence) -> None:
        # The serialized SignedEnvelope ends with its signature.
        b.envelope = flip_last_byte(b.envelope)

    def another_receipt(b: audit_pb2.AuditEvidence) -> None:
        b.receipts[0] = other.receipts[0]

    def another_head(b: audit_pb2.AuditEvidence) -> None:
        b.head.CopyFrom(export(traffic, traffic.xb, tmp_path / "xb.pb").head)

    cases = [
        ("entry-edited", edit_actor, "entry", f"entry {first}: its fields do not give"),
        ("path-flipped", flip_path, "entry", f"entry {first}: inclusion proof fails"),
        ("envelope-flipped", flip_envelope, "envelope", "envelope: bad signature"),
        ("receipt-of-another-message", another_receipt, "receipt", "does not match the envelope"),
        ("head-of-another-node", another_head, "head", "is for xb-prosecution, not xa-police"),
    ]
    for name, change, part, expected in cases:
        tampered = rewrite(good, tmp_path / f"{name}.pb", change)
        error = refused("verify", "--bundle", tampered, "--trust-list", traffic.trust_list)
        assert expected in error, (name, error)
        outcome = audit(
            "verify", "--bundle", tampered, "--trust-list", traffic.trust_list, "--json"
        )
        assert outcome.exit_code == 1
        assert json.loads(outcome.stdout)["failure"]["part"] == part, (name, outcome.stdout)


async def test_a_file_that_is_not_evidence_is_refused(traffic: Traffic, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff")
    assert "not an evidence file" in refused(
        "verify", "--bundle", garbage, "--trust-list", traffic.trust_list
    )
    # A trust list is not a bundle, and a bundle is not a trust list.
    bundle = tmp_path / "xa.pb"
    export(traffic, traffic.xa, bundle)
    assert "malformed" in refused("verify", "--bundle", traffic.trust_list, "--trust-list", bundle)


async def test_export_of_an_unknown_message_is_refused(traffic: Traffic, tmp_path: Path) -> None:
    unknown = "01a22193-ba6a-7340-a22f-e02a78122912"
    result = audit("export", traffic.xa.directory, unknown, "-o", tmp_path / "none.pb")
    assert result.exit_code == 1
    assert isinstance(result.exception, NotFoundError)
    assert str(result.exception) == f"no audit entries about message {unknown}"
    assert not (tmp_path / "none.pb").exists()


USAGE = [
    pytest.param(("verify",), id="nothing-to-verify"),
    pytest.param(("verify", "--bundle", "{bundle}"), id="bundle-without-trust-list"),
    pytest.param(
        ("verify", "{node}", "--bundle", "{bundle}", "--trust-list", "{trust}"),
        id="node-and-bundle-at-once",
    ),
]


@pytest.mark.parametrize("arguments", USAGE)
async def test_usage_errors(traffic: Traffic, tmp_path: Path, arguments: tuple[str, ...]) -> None:
    bundle = tmp_path / "xa.pb"
    export(traffic, traffic.xa, bundle)
    filled = [
        a.format(bundle=bundle, node=traffic.xa.directory, trust=traffic.trust_list)
        for a in arguments
    ]
    assert audit(*filled).exit_code == 2
