"""`exchange client` as a case-management script uses it, against node processes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.harness.processes import NodeProcess
from exchange.harness.setup import SimNode, build_federation, sample_countries

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "nodes" / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[SimNode]]:
    nodes = build_federation(tmp_path, sample_countries(3), now=dt.datetime.now(dt.UTC))
    processes = [NodeProcess(node) for node in nodes]
    try:
        for process in processes:
            process.start()
        yield nodes
    finally:
        for process in processes:
            process.stop()


def client(node: SimNode, *arguments: str | Path) -> dict[str, Any]:
    """Run `exchange client ... --json` as `node`'s case worker; the parsed output."""
    result = run_client(node, *arguments)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def run_client(node: SimNode, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "EXCHANGE_ADDRESS": node.authority_address,
        "EXCHANGE_TOKEN": node.case_worker_token,
        "EXCHANGE_CA_FILE": str(node.directory / "tls" / "authority.pem"),
    }
    return subprocess.run(
        [sys.executable, "-m", "exchange", "client", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environ,
    )


def test_submit_watch_get_acknowledge_and_status_from_the_shell(running: list[SimNode]) -> None:
    xa, xb, _ = running
    submitted = client(xa, "submit", EXAMPLES / "case-referral.json", "--json")
    message_id = submitted["message_id"]
    assert submitted["recipient_node_ids"] == ["xb-prosecution", "xc-childprotection"]
    # The example carries a client_request_id: submitting it again is the same notice.
    assert (
        client(xa, "submit", EXAMPLES / "case-referral.json", "--json")["message_id"] == message_id
    )
    event = client(xb, "watch", "--count", "1")
    assert event["message_id"] == message_id
    assert event["type"] == "INBOX_EVENT_TYPE_NOTICE_RECEIVED"
    opened = client(xb, "get", str(message_id))
    assert opened["notice"]["case_referral"]["urgency"] == "URGENCY_URGENT"
    ack = client(xb, "ack", str(message_id), "--status", "accepted_for_action", "--json")
    assert ack["recipient_node_ids"] == ["xa-police"]
    inbox = client(xb, "inbox", "--json")
    assert inbox["notices"][0]["state"] == "INBOX_STATE_ACKNOWLEDGED"
    refused = run_client(
        xb, "forward", str(message_id), "--to", "xc-childprotection", "--case", "XB-2026-9"
    )
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr
    assert client(xb, "overdue", "--json") == {}
    withdrawn = client(xa, "withdraw", str(message_id), "--reason", "sent_in_error", "--json")
    assert withdrawn["recipient_node_ids"] == ["xb-prosecution", "xc-childprotection"]
    status = client(xa, "status", str(message_id), "--json")
    assert status["withdrawn_by"] == withdrawn["message_id"]
    recipients = status["recipients"]
    assert {r["recipient_node_id"] for r in recipients} == {"xb-prosecution", "xc-childprotection"}


def test_register_and_query_identifiers_from_the_shell(running: list[SimNode]) -> None:
    xa, xb, xc = running
    # The examples: XB registers a passport written "X1234567" and a phone for its case;
    # XA asks about the passport written "x-123-4567", and about an unknown e-mail.
    registered = client(xb, "register", EXAMPLES / "register-identifiers.json")
    assert registered == {"registered": 2}
    answers = client(xa, "query", EXAMPLES / "query.json")["answers"]
    outcomes = {(a["peer_node_id"], a.get("identifier_index", 0)): a["outcome"] for a in answers}
    assert outcomes == {
        (xb.node_id, 0): "QUERY_OUTCOME_HIT",
        (xb.node_id, 1): "QUERY_OUTCOME_NO_HIT",
        (xc.node_id, 0): "QUERY_OUTCOME_NO_HIT",
        (xc.node_id, 1): "QUERY_OUTCOME_NO_HIT",
    }
    (hit,) = [a for a in answers if a["outcome"] == "QUERY_OUTCOME_HIT"]
    assert hit["hits"] == [
        {"case_reference": "XB-2026-0042", "contact_point": "XB Prosecution Service, OPSC desk"}
    ]


def test_registering_a_file_of_any_size_in_batches_with_progress(
    running: list[SimNode], tmp_path: Path
) -> None:
    xb = running[1]
    count = 25_000  # three calls: 10,000 + 10,000 + 5,000
    phones = [
        {
            "type": "IDENTIFIER_TYPE_PHONE",
            "value": base64.b64encode(f"+999 {n:09}".encode()).decode(),
        }
        for n in range(count)
    ]
    request = tmp_path / "many.json"
    request.write_text(
        json.dumps(
            {"caseReference": "XB-2026-0077", "contactPoint": "XB OPSC desk", "identifiers": phones}
        )
    )
    first = run_client(xb, "register", request)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"registered": count}
    # Not a terminal: plain progress lines on stderr, the last one complete.
    assert first.stderr.splitlines()[-1].startswith(
        "registering identifiers: 25,000/25,000 (100%) done"
    )
    # Idempotent: the same file again registers nothing new.
    assert client(xb, "register", request) == {"already_registered": count}
