"""The `exchange` command as admins and scripts use it: real processes, exit codes, output."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exchange.harness.setup import free_port
from exchange.store import migrate

pytestmark = pytest.mark.slow


def run(
    *arguments: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def ok(*arguments: str | Path) -> str:
    result = run(*arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(*arguments: str | Path, env: dict[str, str] | None = None) -> str:
    result = run(*arguments, env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    # Progress lines may come first; the error is a line of its own.
    assert any(line.startswith("error:") for line in result.stderr.splitlines()), result.stderr
    return result.stderr


def test_admin_commands_from_federation_to_a_serving_node(tmp_path: Path) -> None:
    federation, node = tmp_path / "federation", tmp_path / "xa-police"
    authority = f"127.0.0.1:{free_port()}"
    ok("federation", "init", federation, "--stewards", "3", "--threshold", "2")
    assert "node_id" in refused(
        "node",
        "init",
        tmp_path / "bad",
        "--node-id",
        "Bad Id",
        "--country",
        "XA",
        "--endpoint",
        "127.0.0.1:1",
        "--federation",
        federation,
    )
    created = ok(
        "node",
        "init",
        node,
        "--node-id",
        "xa-police",
        "--country",
        "XA",
        "--endpoint",
        f"127.0.0.1:{free_port()}",
        "--authority-listen",
        authority,
        "--federation",
        federation,
    )
    assert "enrolment.json" in created
    ok("federation", "add-node", federation, node / "enrolment.json")
    ok("federation", "sign", federation, "--steward", "steward-1")
    assert "threshold" in refused("federation", "publish", federation)
    ok("federation", "sign", federation, "--steward", "steward-3")
    assert "v2" in ok("federation", "publish", federation)
    assert (
        json.loads(ok("federation", "status", federation, "--json"))["nodes"][0]["node_id"]
        == "xa-police"
    )
    v2 = federation / "trust-lists" / "v2.pb"
    ok("node", "update-trust", node, v2)
    assert "rollback" in refused("node", "update-trust", node, v2)
    token = ok(
        "node", "add-client", node, "cms", "--role", "submitter", "--role", "reader"
    ).split()[-1]
    assert token.startswith("exn_")
    clients = json.loads(ok("node", "list-clients", node, "--json"))
    assert [(c["name"], c["roles"]) for c in clients] == [("cms", ["reader", "submitter"])]
    head = migrate.head_revision()
    migrated = run("node", "migrate", node)
    assert migrated.returncode == 0, migrated.stderr
    assert f"{head} -> {head}" in migrated.stdout
    # Long operations report progress on stderr: plain lines when not on a terminal.
    assert migrated.stderr.splitlines()[-1].startswith("migrating the store: 0/0 (100%) done")
    assert "give --token" in refused("client", "--address", authority, "inbox")
    assert "loopback only" in refused(
        "client", "--address", "10.0.0.1:7443", "--token", "x", "--insecure", "inbox"
    )
    assert "not a loopback" in refused(
        "serve", node, "--insecure-loopback", env={"EXCHANGE_AUTHORITY_LISTEN": "0.0.0.0:7999"}
    )

    server = subprocess.Popen(
        [sys.executable, "-m", "exchange", "serve", str(node)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = (
            "client",
            "--address",
            authority,
            "--token",
            token,
            "--ca-file",
            node / "tls" / "authority.pem",
        )
        for _ in range(100):
            listed = run(*client, "inbox", "--json")
            if listed.returncode == 0:
                break
            time.sleep(0.1)
        assert json.loads(listed.stdout) == {}
        assert "NOT_FOUND" in refused(*client, "get", "01a22193-ba6a-7340-a22f-e02a78122912")
        assert "INVALID_ARGUMENT: message_id" in refused(*client, "get", "nonsense")
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "node.stopped" in output

    assert json.loads(ok("node", "purge", node, "--yes", "--json")) == {"purged": 0}
    verifying = run("audit", "verify", node, "--json")
    verified = json.loads(verifying.stdout)
    assert verified["first_bad_sequence"] is None
    entries = verified["entries"]
    assert verifying.stderr.splitlines()[-1].startswith(
        f"verifying the audit log: {entries:,}/{entries:,} (100%) done"
    )
    ok("node", "revoke-client", node, "cms", "--yes")
    with sqlite3.connect(node / "exchange.db") as database:
        database.execute("UPDATE audit_entries SET actor = 'someone else' WHERE sequence = 2")
    broken = refused("audit", "verify", node)
    assert "broken at entry 2" in broken
    assert "verifying the audit log: 2/5 (40%) stopped" in broken
