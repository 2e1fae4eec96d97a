"""The multi-country simulation: real node processes on loopback, one per country.

`run_simulation` sets up a federation with the admins' own operations
(`harness.setup`), starts one `exchange serve` process per country
(`harness.processes`), plays the scenario as each country's authority system
(`harness.scenario`), prints what happened, and returns a non-zero exit status
if any expectation failed. The integration tests drive the same setup and
scenario against in-process nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exchange.harness.processes import NodeProcess
from exchange.harness.scenario import Report, Scenario
from exchange.harness.setup import SimNode, build_federation, sample_countries

__all__ = ["ProcessControl", "postgres_schemas", "print_report", "run_simulation"]


class ProcessControl:
    """Crash and restart node processes for the scenario."""

    def __init__(self, processes: dict[str, NodeProcess]) -> None:
        self._processes = processes

    async def crash(self, node_id: str) -> None:
        await asyncio.to_thread(self._processes[node_id].kill)

    async def start(self, node_id: str) -> None:
        await asyncio.to_thread(self._processes[node_id].start)


@contextlib.contextmanager
def postgres_schemas(url: str) -> Iterator[dict[str, str]]:
    """One fresh PostgreSQL schema per node, dropped afterwards; yields node id -> URL."""
    base = make_url(url)
    if base.drivername == "postgresql":
        base = base.set(drivername="postgresql+psycopg")
    engine = create_engine(base)
    created: dict[str, str] = {}
    run = uuid.uuid4().hex[:8]

    class Urls(dict[str, str]):
        def __missing__(self, node_id: str) -> str:
            schema = f"sim_{run}_{node_id.replace('-', '_')}"
            with engine.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            created[node_id] = schema
            value = base.update_query_dict({"options": f"-csearch_path={schema}"})
            self[node_id] = value.render_as_string(hide_password=False)
            return self[node_id]

    try:
        yield Urls()
    finally:
        with engine.begin() as connection:
            for schema in created.values():
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def print_report(report: Report, console: Console) -> None:
    traffic = Table(title="Notices exchanged")
    for column in ("step", "from", "to", "kind", "message id", "outcome"):
        traffic.add_column(column)
    for row in report.traffic:
        traffic.add_row(
            row.step, row.sender, ", ".join(row.recipients), row.kind, row.message_id, row.outcome
        )
    console.print(traffic)
    readable = Table(title="What each recipient could read")
    for column in ("notice", "kind", "recipient", "fields read", "held back"):
        readable.add_column(column)
    for seen in report.readable:
        readable.add_row(
            seen.message_id[-12:],
            seen.kind,
            seen.recipient,
            ", ".join(seen.fields),
            ", ".join(seen.withheld) or "-",
        )
    console.print(readable)
    if report.overdue:
        overdue = Table(title="Overdue requests")
        for column in ("node", "request", "owed"):
            overdue.add_column(column)
        for item in report.overdue:
            overdue.add_row(item.node_id, item.message_id, item.owed)
        console.print(overdue)
    checks = Table(title="Expected outcomes")
    for column in ("step", "expectation", "result"):
        checks.add_column(column)
    for check in report.checks:
        result = "[green]ok[/]" if check.passed else f"[bold red]FAILED[/] {check.detail}"
        checks.add_row(check.step, check.expectation, result)
    console.print(checks)
    failed = sum(not check.passed for check in report.checks)
    console.print(
        f"[bold green]all {len(report.checks)} expectations met[/]"
        if report.passed
        else f"[bold red]{failed} of {len(report.checks)} expectations failed[/]"
    )


def run_simulation(*, countries: int, keep: Path | None, postgres_url: str = "") -> int:
    """Set up, run and check the simulation; returns the process exit status."""
    console = Console()
    root = keep or Path(tempfile.mkdtemp(prefix="exchange-sim-"))
    if keep is not None and keep.exists() and any(keep.iterdir()):
        console.print(f"[red]{keep} is not empty[/]")
        return 2
    processes: dict[str, NodeProcess] = {}
    report = Report()
    try:
        with contextlib.ExitStack() as stack:
            urls = stack.enter_context(postgres_schemas(postgres_url)) if postgres_url else None
            console.print(
                f"setting up {countries} countries in {root} "
                f"({'PostgreSQL' if postgres_url else 'SQLite'} stores)"
            )
            nodes: list[SimNode] = build_federation(
                root,
                sample_countries(countries),
                now=dt.datetime.now(dt.UTC),
                database_url_for=urls.__getitem__ if urls is not None else None,
            )
            for node in nodes:
                processes[node.node_id] = NodeProcess(node)
                processes[node.node_id].start()
            console.print(f"{len(nodes)} nodes serving; playing the scenario")
            report = asyncio.run(Scenario(nodes, ProcessControl(processes)).run())
            for process in processes.values():
                process.stop()
            if not report.passed:
                for process in processes.values():
                    console.print(f"--- {process.node.node_id} log (tail) ---")
                    console.print(process.log_tail(), markup=False, highlight=False)
    finally:
        for process in processes.values():
            process.kill()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print_report(report, console)
    return 0 if report.passed else 1
