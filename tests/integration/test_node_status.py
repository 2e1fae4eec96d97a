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


async def test_a_backlog_drain_is_followed_to_the_end(federation: Federation) -> None:
    xa, xc = federation.sim(0), federation.sim(2)
    await federation.crash(xc.node_id)
    for i in range(3):
        await federation.client(0).submit(
            samples.case_referral([xc.node_id], f"XA-2026-098{i}", "Backlog.")
        )

    def follow(timeout: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "exchange", "node", "wait-drained", str(xa.directory),
             "--timeout", timeout, "--interval", "0.2"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    stuck = await asyncio.to_thread(follow, "1")
    assert stuck.returncode == 1
    assert "3 notices still waiting after 1 s" in stuck.stderr
    assert "notices delivered of the backlog: 0/3 (0%) stopped" in stuck.stderr

    # The follower has looked (its first line names the backlog) before XC comes back.
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "node", "wait-drained", str(xa.directory),
        "--timeout", "60", "--interval", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert follower.stderr is not None
    first = (await follower.stderr.readline()).decode()
    assert first.startswith("notices delivered of the backlog: 0/3 (0%)")
    await federation.start(xc.node_id)
    out, rest = await asyncio.wait_for(follower.communicate(), 120)
    assert follower.returncode is not None
    drained = subprocess.CompletedProcess(
        [], follower.returncode, out.decode(), first + rest.decode()
    )
    assert drained.returncode == 0, drained.stderr
    assert "the outbox is drained" in drained.stdout
    assert drained.stderr.splitlines()[-1].startswith(
        "notices delivered of the backlog: 3/3 (100%) done"
    )
