"""`exchange audit ...`: check a node's audit log offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exchange.admin.node import open_store
from exchange.audit import first_broken_link
from exchange.cli._output import console, fail, print_json
from exchange.store import audit_log

app = typer.Typer(help="Verify a node's audit log.")


@app.command()
def verify(
    directory: Annotated[Path, typer.Argument(help="The node directory.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Verify the whole hash chain of the node's audit log from its store."""
    store = open_store(directory)
    try:
        entries = store.read(lambda c: list(audit_log.iter_entries(c)))
    finally:
        store.dispose()
    broken = first_broken_link(entries)
    if as_json:
        print_json({"entries": len(entries), "first_bad_sequence": broken})
    if broken is not None:
        fail(f"audit log broken at entry {broken} (of {len(entries)})")
    if not as_json:
        console.print(f"audit log intact: {len(entries)} entries")
