"""Faults under running nodes: each case named after the fault it survives (`tests.live`)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DatabaseFactory
from tests.faults.processes import ProcessFederation, start_processes
from tests.live import federation

__all__ = ["federation", "processes"]


@pytest.fixture
def processes(tmp_path: Path, databases: DatabaseFactory) -> Iterator[ProcessFederation]:
    """XA and XB as `exchange serve` processes, set up but not started; killed afterwards."""
    running = start_processes(tmp_path, databases)
    try:
        yield running
    finally:
        running.close()
