"""The README's API table, checked against the contract and the code that enforces it.

Vendors integrate from the README's table; the proto comments are the reference. The
table must name every RPC of the Authority service and no other, with the role the
server actually requires, and every RPC must carry its own comment in the proto.
"""

from __future__ import annotations

import re
from pathlib import Path

from exchange._proto.exchange.v1 import authority_pb2
from exchange.clients import PERMISSIONS

ROOT = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\| `(?P<rpc>\w+)` \| (?P<role>\w+) \| (?P<what>.+) \|$")


def _readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The API (for authority systems)", 1)[1].split("\n## ", 1)[0]
    rows = [m for line in section.splitlines() if (m := _ROW.match(line))]
    assert rows, "the README's API section has no table of RPCs"
    roles = {m["rpc"]: m["role"] for m in rows}
    assert len(roles) == len(rows), "an RPC is listed twice"
    assert all(m["what"].strip() for m in rows), "an RPC is listed without a description"
    return roles


def _service_methods() -> list[str]:
    service = authority_pb2.DESCRIPTOR.services_by_name["Authority"]
    return [method.name for method in service.methods]


def test_the_readme_lists_every_authority_rpc_with_the_role_the_server_requires() -> None:
    documented = _readme_table()
    assert sorted(documented) == sorted(_service_methods())
    assert documented == PERMISSIONS


def test_every_authority_rpc_is_documented_in_the_proto() -> None:
    lines = (ROOT / "proto/exchange/v1/authority.proto").read_text().splitlines()
    undocumented = []
    for name in _service_methods():
        (index,) = [i for i, line in enumerate(lines) if line.strip().startswith(f"rpc {name}(")]
        if not lines[index - 1].strip().startswith("//"):
            undocumented.append(name)
    assert undocumented == []
