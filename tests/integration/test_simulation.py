"""`exchange simulate`: real node processes, a node killed and restarted, a verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import exchange.harness
from exchange.harness.scenario import Check, Report, Scenario

pytestmark = pytest.mark.slow


def test_simulation_of_four_countries_meets_every_expectation(tmp_path: Path) -> None:
    keep = tmp_path / "sim"
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "simulate", "--countries", "4", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "expectations met" in result.stdout
    # Four nodes really served, and the killed one was started twice.
    logs = sorted(keep.glob("*/serve.log"))
    assert len(logs) == 4
    starts = {log.parent.name: log.read_text().count('"node.started"') for log in logs}
    assert starts == {"xa-police": 1, "xb-prosecution": 1, "xc-childprotection": 2, "xd-police": 1}


def test_simulation_exits_non_zero_when_an_expectation_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(self: Scenario) -> Report:
        await self.close()
        return Report(checks=[Check("1", "something that did not happen", passed=False)])

    monkeypatch.setattr(Scenario, "run", failing)
    assert exchange.harness.run_simulation(countries=3, keep=tmp_path / "sim") == 1
