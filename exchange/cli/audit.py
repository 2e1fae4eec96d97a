"""`exchange audit ...`: check a node's audit log, prove entries, export evidence.

`verify NODE_DIR` replays the whole Merkle log from the store against every
head the node signed. `prove` and `export` write an `AuditEvidence` file (see
proto/exchange/v1/audit.proto) that `verify --bundle` checks offline with
nothing but a published trust list; the checking itself is
`exchange.evidence`, and this module only reads the store and the files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from exchange import _wire
from exchange._proto.exchange.v1 import audit_pb2, envelope_pb2
from exchange.admin.node import ADMIN, open_store
from exchange.audit import AuditRecord, LoggedEntry, check_log
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.cli._output import console, fail, print_json
from exchange.cli._progress import Advance, progress
from exchange.clock import Clock, SystemClock, to_millis
from exchange.config import load_node_config, passphrase_from_env
from exchange.envelope import Envelope
from exchange.errors import AuditError, ConfigError, NotFoundError
from exchange.evidence import (
    Evidence,
    EvidenceCheck,
    ProvenEntry,
    covering_head,
    evidence_trust,
    verify_evidence,
)
from exchange.identity import NodeIdentity
from exchange.layout import NodeLayout
from exchange.receipt import SignedReceipt
from exchange.rpc import convert
from exchange.store import audit_heads, audit_log, inbox, notices, outbox
from exchange.trust import SignedTrustList, TrustList
from exchange.trust_state import current_trust_list, held

app = typer.Typer(help="Verify a node's audit log; prove entries; export evidence bundles.")

NodeDirectory = Annotated[Path, typer.Argument(help="The node directory.")]
Output = Annotated[
    Path, typer.Option("--output", "-o", help="Where to write the evidence file.", dir_okay=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command()
def verify(
    directory: Annotated[
        Path | None, typer.Argument(help="The node directory (to verify its whole log).")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            "--proof",
            help="An evidence or proof file (audit export or prove) to verify.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    trust_list: Annotated[
        Path | None,
        typer.Option(
            help="A published trust list (vN.pb) to verify --bundle with.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    head: Annotated[
        list[Path] | None,
        typer.Option(
            "--head",
            help=(
                "With NODE_DIR: an evidence or proof file kept outside the store; its "
                "signed head is checked too (repeatable)."
            ),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify the node's whole audit log, or one evidence file offline.

    Heads stored beside the log can be removed with it; a head kept elsewhere
    (`--head`, or the heads peers hold and cross-check) is what proves the
    log was not rewritten wholesale.
    """
    if bundle is None:
        if directory is None or trust_list is not None:
            raise typer.BadParameter("give a NODE_DIR, or --bundle FILE with --trust-list FILE")
        _verify_log(directory, [_read(path).head for path in head or []], as_json=as_json)
    else:
        if directory is not None or trust_list is None or head:
            raise typer.BadParameter("--bundle takes --trust-list FILE, and no NODE_DIR or --head")
        _verify_bundle(bundle, trust_list, as_json=as_json)


@app.command()
def prove(
    directory: NodeDirectory,
    sequence: Annotated[int, typer.Option(help="The entry to prove.", min=1)],
    output: Output,
) -> None:
    """Write entry SEQUENCE with its inclusion proof in the newest signed head."""

    def gather(connection: Connection, signer: _Signer) -> Evidence:
        entry = audit_log.entry(connection, sequence)
        if entry is None:
            raise NotFoundError(
                f"no audit entry {sequence} (the log holds {audit_log.size(connection)})"
            )
        signed, head = signer.head_covering(connection, sequence)
        path = audit_log.inclusion_path(connection, sequence, head.size)
        return Evidence(signer.node_id, "", signed, (ProvenEntry(entry, tuple(path)),))

    evidence = _gather(directory, gather)
    _write(output, evidence)
    console.print(f"wrote {output}: entry {sequence} in the head at size {_size(evidence)}")


@app.command()
def export(
    directory: NodeDirectory,
    message_id: Annotated[str, typer.Argument(help="The message to export evidence about.")],
    output: Output,
) -> None:
    """Write the evidence about one message: envelope, receipts, proven entries, head."""

    def gather(connection: Connection, signer: _Signer) -> Evidence:
        entries = audit_log.entries_for_message(connection, message_id)
        if not entries:
            raise NotFoundError(f"no audit entries about message {message_id}")
        signed, head = signer.head_covering(connection, entries[-1].sequence)
        proven = tuple(
            ProvenEntry(e, tuple(audit_log.inclusion_path(connection, e.sequence, head.size)))
            for e in entries
        )
        envelope = notices.load_envelope(connection, message_id)
        if envelope is not None and not envelope.sealed_payload:
            # Purged: the payload is gone, so the stored bytes are no longer
            # what was signed and receipted (audit.proto: empty once purged).
            envelope = None
        return Evidence(
            signer.node_id,
            message_id,
            signed,
            proven,
            envelope,
            tuple(_receipts(connection, message_id, signer.node_id)),
            () if envelope is None else tuple(outbox.superseded_envelopes(connection, message_id)),
        )

    evidence = _gather(directory, gather)
    _write(output, evidence)
    console.print(
        f"wrote {output}: {len(evidence.entries)} entries, "
        f"{'an envelope' if evidence.envelope else 'no envelope (purged)'}, "
        f"{len(evidence.receipts)} receipts, head at size {_size(evidence)}"
    )


# --- verify: the store's whole log ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LogOutcome:
    entries: int
    heads: int
    first_bad_sequence: int | None
    problem: str
    bad_heads: list[str]


def _counted(entries: Iterator[LoggedEntry], advance: Advance) -> Iterator[LoggedEntry]:
    """The entries, telling `advance` every thousand (and the rest when the reader stops)."""
    count = 0
    try:
        for entry in entries:
            count += 1
            yield entry
            if count == 1000:
                advance(count)
                count = 0
    finally:
        advance(count)


def _verify_log(directory: Path, outside: list[SignedTreeHead], *, as_json: bool) -> None:
    node_id = load_node_config(directory).node_id

    def replay(connection: Connection, trust: TrustList) -> _LogOutcome:
        heads: list[TreeHead] = []
        bad_heads: list[str] = []
        for signed in [*audit_heads.own_heads(connection), *outside]:
            # now=None: each head is judged at its own time (evidence, not arrival).
            try:
                heads.append(signed.verify(trust, node_id, now=None))
            except AuditError as exc:
                bad_heads.append(str(exc))
        with progress("verifying the audit log", audit_log.size(connection)) as advance:
            checked = check_log(_counted(audit_log.iter_entries(connection), advance), heads)
        first_bad, problem = checked.first_bad_sequence, checked.problem
        counted = audit_log.size(connection)
        if checked.ok and counted != checked.entries:
            # Rows removed (or added) after the last signed head: no head covers
            # them, but the append counter in the same store still does.
            first_bad = min(counted, checked.entries) + 1
            problem = f"the log counts {counted} entries but holds {checked.entries}"
        return _LogOutcome(checked.entries, checked.heads, first_bad, problem, bad_heads)

    store = open_store(directory)
    try:
        trust = current_trust_list(store)
        if trust is None:
            raise ConfigError(f"{directory}: no trust list installed")
        outcome = store.read(lambda connection: replay(connection, trust))
    finally:
        store.dispose()
    if as_json:
        print_json(dataclasses.asdict(outcome))
    if outcome.bad_heads:
        fail(f"{len(outcome.bad_heads)} signed heads do not verify: {outcome.bad_heads[0]}")
    if outcome.first_bad_sequence is not None:
        fail(f"audit log broken at entry {outcome.first_bad_sequence}: {outcome.problem}")
    if not as_json:
        console.print(
            f"audit log intact: {outcome.entries} entries, "
            f"{outcome.heads} signed heads match the replayed tree"
            + (f" ({len(outside)} kept outside the store)" if outside else "")
        )
        if not outside:
            console.print(
                "note: these heads are stored beside the log; only a head kept elsewhere "
                "(--head, or held by peers) proves it was not rewritten wholesale"
            )


# --- verify --bundle -----------------------------------------------------------------------


def _verify_bundle(path: Path, trust_file: Path, *, as_json: bool) -> None:
    trust = evidence_trust(SignedTrustList.from_bytes(trust_file.read_bytes()))
    evidence = _read(path)
    check = verify_evidence(evidence, trust)
    if as_json:
        print_json(_check_dict(evidence, check))
    elif check.ok:
        about = f"message {evidence.message_id}" if evidence.message_id else "one entry"
        console.print(f"evidence from {evidence.node_id} about {about} verifies:", highlight=False)
    if not as_json:
        for passed in check.passed:
            console.print(f"  ok  {passed}", highlight=False)
        if check.ok and evidence.message_id:
            console.print(
                "note: each entry above is proven in the head; that no entry about the "
                "message was left out of the bundle is not",
                highlight=False,
            )
    if check.failure is not None:
        fail(f"evidence does not verify: {check.failure}")


def _check_dict(evidence: Evidence, check: EvidenceCheck) -> dict[str, Any]:
    failure = check.failure
    return {
        "ok": check.ok,
        "node_id": evidence.node_id,
        "message_id": evidence.message_id,
        "tree_size": None if check.head is None else check.head.size,
        "passed": list(check.passed),
        "failure": None
        if failure is None
        else {"part": failure.part.value, "detail": failure.detail},
    }


# --- prove and export: reading the store, signing a head if none covers ---------------------


@dataclasses.dataclass(frozen=True)
class _Signer:
    node_id: str
    identity: NodeIdentity
    clock: Clock

    def head_covering(
        self, connection: Connection, sequence: int
    ) -> tuple[SignedTreeHead, TreeHead]:
        """The newest own head if it holds `sequence`, else a fresh head, stored.

        Runs in the caller's write transaction after `audit_log.lock`: no entry
        is appended between reading the size and root and storing the head, so
        the head never claims entries that are not committed.
        """
        signed = covering_head(audit_heads.latest_own(connection), sequence)
        if signed is None:
            now = self.clock.now()
            size = audit_log.size(connection)
            head = TreeHead(self.node_id, size, audit_log.root(connection, size), now)
            trust = held(connection)
            if trust is None:
                raise ConfigError("this node holds no trust list: no key can sign a head")
            # The newest key the held list accepts now, as the running node would sign with.
            _, key = self.identity.signer(trust, now)
            signed = SignedTreeHead.sign(head, key)
            audit_heads.insert_own(connection, signed, size, to_millis(now))
        return signed, TreeHead.parse(signed.text)


def _gather(directory: Path, gather: Callable[[Connection, _Signer], Evidence]) -> Evidence:
    """Run `gather` in one write transaction holding the audit lock."""
    config = load_node_config(directory)
    layout = NodeLayout(config.directory)
    identity = NodeIdentity.load(
        config.node_id,
        layout.key_files("signing"),
        layout.key_files("sealing"),
        passphrase_from_env(),
    )
    signer = _Signer(config.node_id, identity, SystemClock())

    def locked(connection: Connection) -> Evidence:
        audit_log.lock(connection)
        evidence = gather(connection, signer)
        # Handing evidence out is a disclosure too: on the record, after the head it uses.
        audit_log.append(
            connection,
            [
                AuditRecord(
                    occurred_at=signer.clock.now(),
                    actor=ADMIN,
                    action="audit.exported",
                    message_id=evidence.message_id,
                    details={
                        "entries": ",".join(str(p.entry.sequence) for p in evidence.entries)[:500],
                        "tree_size": str(TreeHead.parse(evidence.head.text).size),
                    },
                )
            ],
        )
        return evidence

    store = open_store(directory)
    try:
        try:
            return store.write(locked)
        except IntegrityError:
            # The running node signed a head at this very size meanwhile: use it.
            return store.write(locked)
    finally:
        store.dispose()


def _receipts(connection: Connection, message_id: str, node_id: str) -> list[SignedReceipt]:
    """Every receipt for `message_id`: the recipients' (sent) or this node's own (received)."""
    found = [d.receipt for d in outbox.delivery_status(connection, message_id) if d.receipt]
    own = inbox.own_receipt(connection, message_id, node_id)
    return found if own is None else [*found, own]


def _size(evidence: Evidence) -> int:
    return TreeHead.parse(evidence.head.text).size


# --- the evidence file ---------------------------------------------------------------------


def _write(path: Path, evidence: Evidence) -> None:
    message = audit_pb2.AuditEvidence(
        node_id=evidence.node_id,
        message_id=evidence.message_id,
        head=convert.tree_head(evidence.head),
        entries=[
            audit_pb2.ProvenEntry(entry=convert.audit_entry(p.entry), inclusion_path=p.path)
            for p in evidence.entries
        ],
        envelope=b"" if evidence.envelope is None else _bytes(evidence.envelope.to_proto()),
        receipts=[_bytes(r.to_proto()) for r in evidence.receipts],
        superseded_envelopes=[_bytes(e.to_proto()) for e in evidence.superseded],
    )
    # Headers name case references: readable by the exporting user only.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(message.SerializeToString())


def _bytes(message: envelope_pb2.SignedEnvelope | envelope_pb2.SignedReceipt) -> bytes:
    return message.SerializeToString()


def _read(path: Path) -> Evidence:
    """Parse an evidence file; only its structure is checked here.

    Raises:
        AuditError: the file is not an `AuditEvidence`, or a part does not decode.
    """
    try:
        message = _wire.parse(audit_pb2.AuditEvidence, path.read_bytes())
        entries = tuple(
            ProvenEntry(convert.logged_entry(p.entry), tuple(p.inclusion_path))
            for p in message.entries
        )
        envelope = (
            Envelope.from_proto(_wire.parse(envelope_pb2.SignedEnvelope, message.envelope))
            if message.envelope
            else None
        )
        receipts = tuple(
            SignedReceipt.from_proto(_wire.parse(envelope_pb2.SignedReceipt, data))
            for data in message.receipts
        )
        superseded = tuple(
            Envelope.from_proto(_wire.parse(envelope_pb2.SignedEnvelope, data))
            for data in message.superseded_envelopes
        )
    except _wire.MalformedError as exc:
        raise AuditError(f"{path}: not an evidence file ({exc})") from None
    except (ValueError, OverflowError):
        # An entry time no datetime can hold.
        raise AuditError(f"{path}: an entry's time is out of range") from None
    return Evidence(
        message.node_id,
        message.message_id,
        convert.signed_tree_head(message.head),
        entries,
        envelope,
        receipts,
        superseded,
    )
