"""`exchange serve` and `exchange simulate`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from exchange.config import load_node_config
from exchange.harness import run_simulation
from exchange.logs import configure_logging
from exchange.node import Node

GRACE_SECONDS = 10.0


def serve(
    directory: Annotated[Path, typer.Argument(help="The node directory.")],
    insecure_loopback: Annotated[
        bool,
        typer.Option(help="Plaintext authority port; refused unless it listens on loopback."),
    ] = False,
) -> None:
    """Run the node: federation port, authority port and delivery, until SIGTERM."""
    config = load_node_config(directory)
    configure_logging(config.logging.level, config.logging.format)
    node = Node.load(directory, insecure_loopback=insecure_loopback)
    asyncio.run(_serve(node))


async def _serve(node: Node) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await node.start()
    await stop.wait()
    await node.stop(GRACE_SECONDS)


def simulate(
    countries: Annotated[int, typer.Option(min=3, max=26, help="Number of countries.")] = 3,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the federation in this (new) directory.")
    ] = None,
    postgres_url: Annotated[
        str, typer.Option(help="Run the nodes on PostgreSQL (one schema each) instead of SQLite.")
    ] = "",
) -> None:
    """Run the multi-country simulation; exits non-zero if any expected outcome fails."""
    raise typer.Exit(run_simulation(countries=countries, keep=keep, postgres_url=postgres_url))
