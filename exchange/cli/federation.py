"""`exchange federation ...`: what the federation's stewards run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exchange.admin import federation as admin
from exchange.cli._output import console, print_json, table
from exchange.clock import SystemClock
from exchange.config import passphrase_from_env

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
) -> None:
    """Add a node (from its enrolment file) to the draft of the next trust list version."""
    draft = admin.add_node(directory, enrolment, now=SystemClock().now())
    console.print(f"draft v{draft.version}: {len(draft.nodes)} nodes; now sign it")


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


@app.command()
def status(
    directory: Directory,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the latest published trust list."""
    version, signed = admin.latest_published(directory)
    trust = signed.trust_list
    rows = [
        (n.node_id, n.country, n.endpoint, "active" if n.active else "suspended")
        for n in trust.nodes.values()
    ]
    if as_json:
        print_json(
            {
                "version": version,
                "expires_at": trust.expires_at.isoformat(),
                "threshold": trust.threshold,
                "nodes": [
                    dict(zip(("node_id", "country", "endpoint", "status"), r, strict=True))
                    for r in rows
                ],
            }
        )
        return
    table(
        f"trust list v{version} (expires {trust.expires_at:%Y-%m-%d}, threshold {trust.threshold})",
        ["node", "country", "endpoint", "status"],
        rows,
    )
