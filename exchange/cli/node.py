"""`exchange node ...`: what a node's admins run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from exchange.admin import backup as backups
from exchange.admin import node as admin
from exchange.admin.node_status import node_status
from exchange.cli._output import console, fail, print_json, table
from exchange.cli._progress import progress
from exchange.clients import ROLES
from exchange.clock import SystemClock, from_millis
from exchange.config import passphrase_from_env
from exchange.store import node_state
from exchange.store.engine import Store

app = typer.Typer(help="Create and administer a node.")

Directory = Annotated[Path, typer.Argument(help="The node directory.")]


@app.command()
def init(
    directory: Directory,
    node_id: Annotated[str, typer.Option(help="Lowercase DNS label, e.g. xa-police.")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code, e.g. XA.")],
    endpoint: Annotated[str, typer.Option(help="host:port peers dial (federation port).")],
    federation: Annotated[Path, typer.Option(help="The federation directory (CA, trust list).")],
    authority_listen: Annotated[
        str, typer.Option(help="host:port of the authority port.")
    ] = "127.0.0.1:7443",
    authority_name: Annotated[str, typer.Option(help="e.g. 'XA National Police'.")] = "",
    federation_listen: Annotated[str, typer.Option(help="Listen address; default endpoint.")] = "",
    database_url: Annotated[
        str, typer.Option(help="sqlite:///file (relative to DIR) or postgresql+psycopg://...")
    ] = "sqlite:///exchange.db",
) -> None:
    """Create a node: keys, TLS certificates, node.toml, enrolment file, migrated store."""
    enrolment = admin.init_node(
        directory,
        admin.NodeSpec(
            node_id=node_id,
            country=country,
            endpoint=endpoint,
            authority_listen=authority_listen,
            authority_name=authority_name,
            federation_listen=federation_listen,
            database_url=database_url,
        ),
        federation=federation,
        passphrase=passphrase_from_env(),
        now=SystemClock().now(),
    )
    console.print(f"node {node_id} created; give {enrolment} to the federation stewards")


@app.command()
def migrate(directory: Directory) -> None:
    """Bring the node's database schema to the newest version."""
    with progress("migrating the store", admin.pending_migrations(directory)) as advance:
        before, after = admin.migrate_node(directory, on_revision=lambda: advance(1))
    console.print(f"schema {before or 'empty'} -> {after}")


def _print_backup(summary: backups.BackupSummary, verb: str, as_json: bool) -> None:
    if as_json:
        print_json({**dataclasses.asdict(summary), "path": str(summary.path)})
        return
    console.print(
        f"{verb} {summary.path} ({summary.engine}, {summary.size_bytes:,} bytes): "
        f"audit log of {summary.audit_size} entries, root {summary.audit_root or '-'}, "
        f"schema {summary.schema_revision}"
    )


@app.command()
def backup(
    directory: Directory,
    to: Annotated[Path, typer.Option("--to", help="The backup file to write (must not exist).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Write a consistent backup of the node's store (not its keys) while it runs."""
    _print_backup(backups.backup(directory, to), "backed up to", as_json)


@app.command()
def restore(
    directory: Directory,
    source: Annotated[Path, typer.Option("--from", help="A file written by `node backup`.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replace the node's store with a backup. Stop the node first."""
    if not yes:
        typer.confirm(
            "Replace the node's store with the backup? Everything after the backup is lost, "
            "and peers holding a newer audit head will report the log rewound.",
            abort=True,
        )
    restored = backups.restore(directory, source, now=SystemClock().now())
    _print_backup(restored, "restored from", as_json)


@app.command()
def status(
    directory: Directory,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One look at a node: health, peers reachable, outbox by peer, trust list, audit head."""
    now = SystemClock().now()
    report = node_status(directory, now=now, passphrase=passphrase_from_env())
    if as_json:
        print_json(dataclasses.asdict(report) | {"pending": report.pending})
        return
    healthy = report.health == "SERVING" and not report.problems
    colour = "green" if healthy else "red"
    console.print(f"[bold]{report.node_id}[/]: [{colour}]{report.health}[/]")
    for problem in report.problems:
        console.print(f"  [red]problem:[/] {problem}", highlight=False)
    if report.trust_list_version is not None:
        console.print(
            f"  trust list v{report.trust_list_version}, "
            f"expires {report.trust_list_expires_at:%Y-%m-%d %H:%M} UTC"
        )
    head = "no signed head yet"
    if report.audit_head_at is not None:
        age = (now - report.audit_head_at).total_seconds()
        head = f"newest signed head at {report.audit_head_size:,}, {age:.0f} s ago"
    console.print(f"  audit log: {report.audit_entries:,} entries, {head}")
    console.print(
        f"  overdue requests: {report.overdue_by_us} owed by us, {report.overdue_to_us} to us"
    )
    table(
        f"peers ({report.pending:,} notices waiting)",
        ["peer", "endpoint", "reachable", "waiting", "oldest waiting since"],
        [
            (
                p.node_id,
                p.endpoint,
                "yes" if p.reachable else f"no: {p.error}",
                f"{p.pending:,}",
                f"{p.oldest_pending_at:%Y-%m-%d %H:%M:%S}" if p.oldest_pending_at else "",
            )
            for p in report.peers
        ],
    )


@app.command("wait-drained")
def wait_drained(
    directory: Directory,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (0: wait as long as it takes).")
    ] = 0.0,
    interval: Annotated[float, typer.Option(help="Seconds between looks at the outbox.")] = 1.0,
) -> None:
    """Follow a backlog drain (after an outage, say) until no notice waits, with progress.

    Reads the node's store while the node delivers; exits 1 if notices still wait
    when --timeout ends.
    """
    store = admin.open_store(directory)
    try:
        waiting = _waiting(store)
        began = time.monotonic()
        with progress("notices delivered of the backlog", waiting) as advance:
            while waiting:
                if timeout and time.monotonic() - began > timeout:
                    break
                time.sleep(interval)
                now_waiting = _waiting(store)
                # New submissions may join the backlog; only what left it is progress.
                advance(max(waiting - now_waiting, 0))
                waiting = now_waiting
    finally:
        store.dispose()
    if waiting:
        fail(f"{waiting:,} notices still waiting after {timeout:g} s")
    console.print("the outbox is drained")


def _waiting(store: Store) -> int:
    return sum(b.pending for b in store.read(node_state.outbox_backlog))


@app.command("update-trust")
def update_trust(
    directory: Directory,
    trust_list: Annotated[Path, typer.Argument(help="A published trust list (vN.pb).")],
) -> None:
    """Install a newer trust list after verifying its signatures and version."""
    accepted = admin.update_trust(directory, trust_list, now=SystemClock().now())
    console.print(f"trust list v{accepted.version} installed ({len(accepted.nodes)} nodes)")


@app.command("rotate-keys")
def rotate_keys(
    directory: Directory,
    signing: Annotated[bool, typer.Option("--signing", help="A new signing key.")] = False,
    sealing: Annotated[bool, typer.Option("--sealing", help="A new sealing key.")] = False,
    oprf: Annotated[
        bool,
        typer.Option(
            "--oprf",
            help="A new hit/no-hit (OPRF) key: the running node re-indexes to it, then switches.",
        ),
    ] = False,
) -> None:
    """Generate new keys beside the old ones and offer them in enrolment.json.

    The node keeps using its old keys until the stewards publish a trust list
    with the new ones (`exchange federation add-node FED DIR/enrolment.json`).
    """
    rotated = admin.rotate_keys(
        directory, signing=signing, sealing=sealing, oprf=oprf, passphrase=passphrase_from_env()
    )
    for kind, key_id in rotated.items():
        console.print(f"new {kind} key {key_id}")
    if signing or sealing:
        console.print(f"give {directory / 'enrolment.json'} to the federation stewards")


@app.command("add-client")
def add_client(
    directory: Directory,
    name: Annotated[str, typer.Argument(help="Name of the authority system.")],
    role: Annotated[
        list[str], typer.Option(help=f"One of {', '.join(sorted(ROLES))}; repeatable.")
    ],
) -> None:
    """Create an authority client and print its token (shown only once)."""
    token = admin.add_client(directory, name, role, now=SystemClock().now())
    console.print(f"client {name!r} ({', '.join(sorted(role))}); token (store it now):")
    print(token)


@app.command("revoke-client")
def revoke_client(
    directory: Directory,
    name: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revoke an authority client's token."""
    if not yes:
        typer.confirm(f"Revoke client {name!r}? Its token stops working at once.", abort=True)
    admin.revoke_client(directory, name, now=SystemClock().now())
    console.print(f"client {name!r} revoked")


@app.command()
def purge(
    directory: Directory,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Delete the content of notices whose retention has ended (tombstones remain)."""
    if not yes:
        typer.confirm("Purge the content of every notice past its retention?", abort=True)
    with progress("purging notices past their retention") as advance:
        purged = admin.purge(directory, now=SystemClock().now(), on_progress=advance)
    if as_json:
        print_json({"purged": purged})
    else:
        console.print(f"{purged} notice(s) purged")


@app.command("list-clients")
def list_clients(
    directory: Directory,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the authority clients."""
    rows: list[dict[str, Any]] = [
        {
            "name": c.name,
            "roles": sorted(c.roles),
            "created_at": from_millis(c.created_at).isoformat(),
            "revoked_at": from_millis(c.revoked_at).isoformat() if c.revoked_at else None,
        }
        for c in admin.list_clients(directory)
    ]
    if as_json:
        print_json(rows)
        return
    table(
        "authority clients",
        ["name", "roles", "created", "revoked"],
        [(r["name"], ",".join(r["roles"]), r["created_at"], r["revoked_at"] or "") for r in rows],
    )
