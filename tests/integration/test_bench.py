"""`scripts/bench`: a real quick run writes figures beside their ceilings (structure, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.slow

BENCH = Path(__file__).parents[2] / "scripts" / "bench.py"


def _bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *arguments],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_quick_backlog_drain_reports_figure_ceiling_and_ratio(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = _bench("--quick", "--only", "drain", "--json", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "backlog drain" in result.stdout

    document = json.loads(output.read_text())
    (drain,) = document["results"]
    assert (drain["measure"], drain["engine"]) == ("drain", "sqlite")
    assert drain["parameters"]["notices"] == document["settings"]["sqlite"]["drain_notices"]
    (figure,) = drain["figures"]
    assert figure["unit"] == "notices/s"
    assert figure["figure"] > 0
    assert figure["ceiling"] > 0
    assert figure["ratio"] == pytest.approx(figure["figure"] / figure["ceiling"])
    # Both node processes were measured while they ran.
    assert len(drain["peak_memory_mib"]) == 2
    assert all(mib > 10 for mib in drain["peak_memory_mib"].values())


def test_two_processes_of_node_b_drain_on_postgresql_only(tmp_path: Path) -> None:
    on_sqlite = _bench("--only", "drain", "--b-processes", "2")
    assert on_sqlite.returncode == 2
    assert "needs --engine postgres" in on_sqlite.stderr
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not configured (set EXCHANGE_TEST_POSTGRES_URL)")

    output = tmp_path / "bench.json"
    result = _bench(
        "--engine", "postgres", "--postgres-url", POSTGRES_URL, "--quick", "--only", "drain",
        "--b-processes", "2", "--json", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (drain,) = json.loads(output.read_text())["results"]
    assert drain["parameters"]["b_processes"] == 2
    assert drain["figures"][0]["figure"] > 0
    # A, and both processes of B, each measured while it ran.
    assert len(drain["peak_memory_mib"]) == 3
