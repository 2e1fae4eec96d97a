"""`exchange node status`: what an operator sees of a running node, and of a stopped one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exchange.harness import samples
from tests.live import Federation

pytestmark = pytest.mark.slow


async def status(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run the command as an admin would, while the nodes keep serving in this process."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exchange", "node", "status", str(directory), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


async def as_json(directory: Path) -> dict[str, Any]:
    result = await status(directory, "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def test_a_running_node_with_a_peer_down_and_a_notice_waiting(
    federation: Federation,
) -> None:
    xa, xb, xc = (federation.sim(i) for i in range(3))
    await federation.crash(xc.node_id)
    await federation.client(0).submit(samples.case_referral([xc.node_id], "XA-2026-0990", "Wait."))

    report = await as_json(xa.directory)
    assert report["node_id"] == xa.node_id
    assert report["health"] == "SERVING"
    assert report["problems"] == []
    assert report["trust_list_version"] == federation.node(0).context.trust.version
    assert report["audit_entries"] >= 1
    assert report["pending"] == 1
    peers = {peer["node_id"]: peer for peer in report["peers"]}
    assert set(peers) == {xb.node_id, xc.node_id}
    assert peers[xb.node_id]["reachable"] is True
    assert peers[xb.node_id]["pending"] == 0
    assert peers[xc.node_id]["reachable"] is False
    assert "UNAVAILABLE" in peers[xc.node_id]["error"]
    assert peers[xc.node_id]["pending"] == 1
    assert peers[xc.node_id]["oldest_pending_at"] is not None

    screen = await status(xa.directory)
    assert screen.returncode == 0, screen.stderr
    assert f"{xa.node_id}: SERVING" in screen.stdout
    assert "1 notices waiting" in screen.stdout


async def test_a_stopped_node_is_reported_as_not_answering(federation: Federation) -> None:
    xa = federation.sim(0)
    await federation.crash(xa.node_id)
    report = await as_json(xa.directory)
    assert report["health"].startswith("not answering")
    # The store still tells the rest.
    assert report["audit_entries"] >= 1
