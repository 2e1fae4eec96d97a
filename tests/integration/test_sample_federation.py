"""scripts/setup_federation.py: the sample federation in one command; config only is committed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.config import load_node_config
from exchange.node import Node

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _setup(nodes: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "setup_federation.py"),
            "--nodes",
            str(nodes),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_setup_federation_creates_every_node_ready_to_serve(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    shutil.copy(ROOT / "nodes" / "sample-federation.toml", nodes)
    result = _setup(nodes)
    assert result.returncode == 0, result.stderr
    ids = ["xa-police", "xb-prosecution", "xc-childprotection"]
    for node_id in ids:
        config = load_node_config(nodes / node_id)
        assert config.node_id == node_id
        tokens = nodes / node_id / "client-tokens.json"
        assert tokens.stat().st_mode & 0o777 == 0o600
        assert json.loads(tokens.read_text())["case_worker"].startswith("exn_")
        node = Node.load(nodes / node_id)
        assert sorted(node.context.trust.nodes) == ids
        node.context.store.close()
    # A second run refuses to overwrite; --force replaces.
    assert _setup(nodes).returncode == 1
    assert _setup(nodes, "--force").returncode == 0
    assert (nodes / "sample-federation.toml").exists()


def test_only_configuration_of_the_sample_federation_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "nodes"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "nodes/sample-federation.toml" in tracked
    assert not [path for path in tracked if path.endswith((".pem", ".key", ".db", ".pb"))]
    ignored = subprocess.run(
        ["git", "check-ignore", "nodes/xa-police/keys/signing.pem", "nodes/xa-police/exchange.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(ignored) == 2
