"""Set up the sample federation in nodes/ in one command.

Reads nodes/sample-federation.toml and runs the admins' own steps (federation
init, node init, add-node, steward signatures, publish, update-trust, authority
clients) through `exchange.harness.setup.build_federation`. Afterwards:

    exchange serve nodes/xa-police            # one terminal per node
    exchange client --address 127.0.0.1:7501 --ca-file nodes/xa-police/tls/authority.pem \\
        --token "$(jq -r .case_worker nodes/xa-police/client-tokens.json)" inbox

Usage:
    python scripts/setup_federation.py [--force] [--nodes DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tomllib
from pathlib import Path

from exchange.harness.setup import CountrySpec, build_federation

NODES = Path(__file__).resolve().parent.parent / "nodes"
SAMPLE = "sample-federation.toml"
KEEP = {"README.md", SAMPLE, "examples"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--force", action="store_true", help="replace an existing sample federation"
    )
    parser.add_argument("--nodes", type=Path, default=NODES, help=f"the folder holding {SAMPLE}")
    arguments = parser.parse_args()
    nodes_dir: Path = arguments.nodes
    generated = [path for path in nodes_dir.iterdir() if path.name not in KEEP]
    if generated and not arguments.force:
        print(f"{nodes_dir} already holds a federation; use --force to replace it", file=sys.stderr)
        return 1
    for path in generated:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    sample = tomllib.loads((nodes_dir / SAMPLE).read_text())
    countries = [CountrySpec(**entry) for entry in sample["country"]]
    nodes = build_federation(
        nodes_dir,
        countries,
        now=dt.datetime.now(dt.UTC),
        federation_id=sample["federation_id"],
        stewards=sample["stewards"],
        threshold=sample["threshold"],
        delivery_overrides="",
    )
    for node in nodes:
        tokens = node.directory / "client-tokens.json"
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"case_worker": node.case_worker_token, "auditor": node.auditor_token}, out)
        print(
            f"{node.node_id:20} federation 127.0.0.1:{node.federation_port}  "
            f"authority 127.0.0.1:{node.authority_port}  tokens {tokens}"
        )
    print("start each node with: exchange serve nodes/<node id>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
