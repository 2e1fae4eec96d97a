"""`exchange federation ...`: what the federation's stewards run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from exchange.admin import federation as admin
from exchange.admin.status import NodeTrustStatus, federation_status
from exchange.cli._output import console, print_json, table
from exchange.clock import SystemClock
from exchange.config import passphrase_from_env
from exchange.errors import ValidationError
from exchange.trust import TrustedNode

app = typer.Typer(help="Create the federation, admit nodes, sign and publish trust lists.")

Directory = Annotated[Path, typer.Argument(help="The federation directory.")]


@app.command()
def init(
    directory: Directory,
    federation_id: Annotated[str, typer.Option(help="Name of the federation.")] = "opsc-exchange",
    stewards: Annotated[int, typer.Option(min=1, max=15, help="Number of steward keys.")] = 3,
    threshold: Annotated[int, typer.Option(min=1, help="Steward signatures a version needs.")] = 2,
    validity_days: Annotated[int, typer.Option(min=1, max=3650)] = 90,
) -> None:
    """Create the federation CA, steward keys and trust list version 1."""
    first = admin.init_federation(
        directory,
        federation_id=federation_id,
        stewards=stewards,
        threshold=threshold,
        validity_days=validity_days,
        passphrase=passphrase_from_env(),
        now=SystemClock().now(),
    )
    console.print(
        f"federation {first.federation_id!r}: {stewards} stewards, threshold {threshold}, "
        f"trust list v1 expires {first.expires_at:%Y-%m-%d}"
    )


@app.command("add-node")
def add_node(
    directory: Directory,
    enrolment: Annotated[Path, typer.Argument(help="The node's enrolment.json.")],
    overlap_days: Annotated[
        int, typer.Option(min=0, max=365, help="For a listed node: days its replaced keys stay.")
    ] = 7,
) -> None:
    """Add a node to the draft of the next trust list version, or publish its new keys.

    For a node already listed (after `exchange node rotate-keys`), its new keys
    are added and the keys they replace stay valid for --overlap-days.
    """
    draft = admin.add_node(
        directory, enrolment, now=SystemClock().now(), overlap=dt.timedelta(days=overlap_days)
    )
    console.print(f"draft v{draft.version}: {len(draft.nodes)} nodes; now sign it")


@app.command("revoke-key")
def revoke_key(
    directory: Directory,
    node_id: Annotated[str, typer.Argument(help="The node whose key is revoked.")],
    key_id: Annotated[str, typer.Argument(help="The key id (see `status --json`).")],
    at: Annotated[
        str, typer.Option(help="Revocation time, ISO 8601 with offset; default now.")
    ] = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revoke a node key in the draft: what it signs after --at is refused."""
    if not yes:
        typer.confirm(
            f"Revoke key {key_id} of {node_id}? Once published, whatever it signs after "
            "the revocation time is refused by every node.",
            abort=True,
        )
    now = SystemClock().now()
    try:
        when = dt.datetime.fromisoformat(at) if at else now
    except ValueError:
        raise ValidationError(
            "at", "must be an ISO 8601 time, e.g. 2026-03-01T12:00:00+00:00"
        ) from None
    if when.tzinfo is None:
        raise ValidationError("at", "must carry a UTC offset, e.g. +00:00")
    draft = admin.revoke_key(directory, node_id, key_id, at=when, now=now)
    console.print(
        f"draft v{draft.version}: key {key_id} of {node_id} revoked from {when.isoformat()}; "
        "now sign it"
    )


@app.command("remove-node")
def remove_node(
    directory: Directory,
    node_id: Annotated[str, typer.Argument(help="The node to take out of the federation.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Suspend a node in the draft: no member sends to it or accepts from it once adopted.

    It stays listed so that what it signed before can still be verified.
    """
    if not yes:
        typer.confirm(
            f"Take {node_id} out of the federation? Once published, no node sends it "
            "anything or accepts anything from it.",
            abort=True,
        )
    draft = admin.remove_node(directory, node_id, now=SystemClock().now())
    console.print(f"draft v{draft.version}: {node_id} suspended; now sign it")


@app.command()
def sign(
    directory: Directory,
    steward: Annotated[str, typer.Option(help="The signing steward, e.g. steward-1.")],
) -> None:
    """Add one steward's signature to the draft."""
    signed = admin.sign_draft(directory, steward, passphrase_from_env())
    console.print(f"draft signed by {len(signed.signatures)} steward(s)")


@app.command()
def publish(directory: Directory) -> None:
    """Publish the draft once the stewards' threshold has signed it."""
    path, accepted = admin.publish(directory, now=SystemClock().now())
    console.print(f"published trust list v{accepted.version} ({len(accepted.nodes)} nodes): {path}")


def _keys(node: TrustedNode) -> list[dict[str, Any]]:
    return [
        {
            "key_id": key.key_id,
            "algorithm": key.algorithm,
            "not_before": key.not_before.isoformat(),
            "not_after": key.not_after.isoformat() if key.not_after else None,
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        }
        for key in (*node.signing_keys, *node.sealing_keys)
    ]


@app.command()
def status(
    directory: Directory,
    via: Annotated[
        Path | None,
        typer.Option(
            help="A node directory: ask every node, with its TLS identity, what it holds."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the latest published trust list, and with --via every node's own version."""
    version, signed = admin.latest_published(directory)
    trust = signed.trust_list
    held = {}
    if via is not None:
        _, reports = federation_status(directory, via, passphrase=passphrase_from_env())
        held = {report.node_id: report for report in reports}
    nodes = sorted(trust.nodes.values(), key=lambda n: n.node_id)
    if as_json:
        print_json(
            {
                "version": version,
                "expires_at": trust.expires_at.isoformat(),
                "threshold": trust.threshold,
                "nodes": [
                    {
                        "node_id": n.node_id,
                        "country": n.country,
                        "endpoint": n.endpoint,
                        "status": "active" if n.active else "suspended",
                        "keys": _keys(n),
                        **(_held_json(held[n.node_id]) if n.node_id in held else {}),
                    }
                    for n in nodes
                ],
            }
        )
        return
    columns = ["node", "country", "endpoint", "status"]
    rows: list[tuple[str, ...]] = [
        (n.node_id, n.country, n.endpoint, "active" if n.active else "suspended") for n in nodes
    ]
    if held:
        columns.append("holds")
        rows = [(*row, _held_text(held[n.node_id])) for row, n in zip(rows, nodes, strict=True)]
    table(
        f"trust list v{version} (expires {trust.expires_at:%Y-%m-%d}, threshold {trust.threshold})",
        columns,
        rows,
    )


def _held_json(report: NodeTrustStatus) -> dict[str, Any]:
    if report.version is None:
        return {"reachable": False, "error": report.error}
    assert report.expires_at is not None
    return {
        "reachable": True,
        "held_version": report.version,
        "held_expires_at": report.expires_at.isoformat(),
    }


def _held_text(report: NodeTrustStatus) -> str:
    if report.version is None:
        return f"unreachable ({report.error})"
    return f"v{report.version}"
