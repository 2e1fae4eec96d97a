"""Set up a simulated federation exactly as admins do, with the admin operations."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.layout import NodeLayout

__all__ = [
    "CountrySpec",
    "SimNode",
    "build_federation",
    "country_codes",
    "free_port",
    "sample_countries",
]

# The authority behind each simulated country's node, in turn.
_AUTHORITIES = [
    ("police", "National Police"),
    ("prosecution", "Prosecution Service"),
    ("childprotection", "Child Protection Agency"),
]
# Short retry delays, so the simulation's restarted node is reached in seconds, and
# audit heads signed and cross-checked within the scenario's run.
_SIMULATION_DELIVERY = """
[delivery]
# The simulation retries quickly; production defaults are 1 s growing to 600 s,
# and rows to a peer known down parked 600 s (30 s here: a sender restarted while
# its peer was down reaches it again within the scenario's time).
initial_backoff_seconds = 0.25
max_backoff_seconds = 2.0
park_seconds = 30.0

[audit]
# Production defaults: a head every 10 s, peers' heads checked every 60 s.
head_interval_seconds = 1.0
peer_check_interval_seconds = 2.0
"""


# Below Linux's ephemeral range (32768-60999): a port handed out here is not
# also picked by the kernel for an outgoing connection before the node binds it.
_PORTS = range(20000, 32000)
# "LOW-HIGH" (inclusive), a part of _PORTS: processes that set up federations at
# the same time (the test suite's workers) each take their own part, so that one
# never hands out a port the other has handed out but not yet bound.
PORTS_VARIABLE = "EXCHANGE_HARNESS_PORTS"


_handed_out: set[int] = set()


def harness_ports() -> range:
    """The ports `free_port` hands out: `_PORTS`, or the part PORTS_VARIABLE names."""
    value = os.environ.get(PORTS_VARIABLE, "")
    if not value:
        return _PORTS
    low, sep, high = value.partition("-")
    if not (sep and low.isdigit() and high.isdigit()):
        raise ValueError(f"{PORTS_VARIABLE}={value!r}: expected LOW-HIGH, e.g. 20000-25999")
    ports = range(int(low), int(high) + 1)
    if not ports or ports.start < _PORTS.start or ports.stop > _PORTS.stop:
        raise ValueError(
            f"{PORTS_VARIABLE}={value!r}: expected a range within {_PORTS.start}-{_PORTS.stop - 1}"
        )
    return ports


def free_port() -> int:
    """A TCP port free on loopback right now, outside the ephemeral range.

    Never the same port twice in one process: a port handed out is bound only
    later, when its node starts, and must not be handed out again meanwhile.
    """
    ports = harness_ports()
    for _ in range(100):
        port = random.choice(ports)  # noqa: S311 (not a secret)
        if port in _handed_out:
            continue
        _handed_out.add(port)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port found on loopback")


def country_codes(count: int) -> list[str]:
    """XA, XB, ...: ISO 3166 user-assigned codes, never a real country."""
    if not 1 <= count <= 26:
        raise ValueError("between 1 and 26 countries")
    return [f"X{chr(ord('A') + i)}" for i in range(count)]


@dataclasses.dataclass(frozen=True)
class SimNode:
    """One simulated country's node and the credentials of its authority system."""

    node_id: str
    country: str
    directory: Path
    federation_port: int
    authority_port: int
    case_worker_token: str
    auditor_token: str
    # (federation port, authority port) of each further `serve` process of the node.
    replicas: tuple[tuple[int, int], ...] = ()

    @property
    def authority_address(self) -> str:
        return f"127.0.0.1:{self.authority_port}"

    @property
    def processes(self) -> int:
        """How many `serve` processes the node runs (1 + its replicas)."""
        return 1 + len(self.replicas)

    def ports(self, instance: int) -> tuple[int, int]:
        """(federation port, authority port) of `serve` process `instance` (0: the first)."""
        return (
            (self.federation_port, self.authority_port)
            if instance == 0
            else (self.replicas[instance - 1])
        )

    @property
    def authority_certificate(self) -> bytes:
        return NodeLayout(self.directory).authority_certificate.read_bytes()


@dataclasses.dataclass(frozen=True)
class CountrySpec:
    """One simulated country's node, as the harness or nodes/sample-federation.toml describe it."""

    country: str
    node_id: str
    authority_name: str
    federation_port: int
    authority_port: int
    # The port peers dial, when it is not the one the node listens on (a proxy's).
    endpoint_port: int | None = None
    # (federation port, authority port) of each further `serve` process of the
    # node (PostgreSQL only); peers then spread their calls over every process.
    replicas: tuple[tuple[int, int], ...] = ()

    @property
    def endpoint(self) -> str:
        """The gRPC target peers dial: one address, or every process's for round_robin.

        Several processes are named as `ipv4:127.0.0.1:P1,127.0.0.1:P2`, a gRPC
        target of several addresses: a peer's channel connects to each and
        spreads its calls over them (`rpc.peers` balances round_robin), as it
        would over the A records of one DNS name in a real deployment.
        """
        if not self.replicas:
            return f"127.0.0.1:{self.endpoint_port or self.federation_port}"
        ports = [self.federation_port, *(federation for federation, _ in self.replicas)]
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)

    def with_replicas(self, count: int) -> CountrySpec:
        """This country with `count` further `serve` processes, on free ports."""
        return dataclasses.replace(
            self, replicas=tuple((free_port(), free_port()) for _ in range(count))
        )


def sample_countries(count: int) -> list[CountrySpec]:
    """`count` countries XA, XB, ... on free loopback ports, authorities in turn."""
    specs = []
    for i, country in enumerate(country_codes(count)):
        suffix, name = _AUTHORITIES[i % len(_AUTHORITIES)]
        specs.append(
            CountrySpec(
                country=country,
                node_id=f"{country.lower()}-{suffix}",
                authority_name=f"{country} {name}",
                federation_port=free_port(),
                authority_port=free_port(),
            )
        )
    return specs


def _add_to_table(config: Path, table: str, settings: str) -> None:
    """Put `settings` (TOML keys) at the top of `table` in the file `config`."""
    header = f"\n[{table}]\n"
    text = config.read_text()
    if header not in text:
        raise ValueError(f"{config} has no [{table}] table")
    config.write_text(text.replace(header, header + settings, 1))


def build_federation(
    root: Path,
    countries: Sequence[CountrySpec],
    *,
    now: dt.datetime,
    database_url_for: Callable[[str], str] | None = None,
    federation_id: str = "opsc-simulation",
    stewards: int = 3,
    threshold: int = 2,
    delivery_overrides: str = _SIMULATION_DELIVERY,
    store_settings: str = "",
) -> list[SimNode]:
    """Create a federation of one node per country under `root`, ready to serve.

    The same steps as the README's admin guide: federation init, node init,
    add-node for each enrolment, steward signatures up to the threshold,
    publish, update-trust on every node, and authority clients.

    Args:
        database_url_for: node id -> database URL; default SQLite in the node directory.
        delivery_overrides: TOML appended to each node.toml.
        store_settings: TOML keys added to each node.toml's [store] table.
    """
    federation_dir = root / "federation"
    federation_admin.init_federation(
        federation_dir,
        federation_id=federation_id,
        stewards=stewards,
        threshold=threshold,
        validity_days=30,
        passphrase=None,
        now=now,
    )
    for spec in countries:
        directory = root / spec.node_id
        enrolment = node_admin.init_node(
            directory,
            node_admin.NodeSpec(
                node_id=spec.node_id,
                country=spec.country,
                endpoint=spec.endpoint,
                federation_listen=f"127.0.0.1:{spec.federation_port}",
                authority_listen=f"127.0.0.1:{spec.authority_port}",
                authority_name=spec.authority_name,
                database_url=database_url_for(spec.node_id)
                if database_url_for
                else "sqlite:///exchange.db",
            ),
            federation=federation_dir,
            passphrase=None,
            now=now,
        )
        config = NodeLayout(directory).config
        if store_settings:
            _add_to_table(config, "store", store_settings)
        if delivery_overrides:
            with config.open("a") as appended:
                appended.write(delivery_overrides)
        federation_admin.add_node(federation_dir, enrolment, now=now)
    for steward in range(1, threshold + 1):
        federation_admin.sign_draft(federation_dir, f"steward-{steward}", None)
    published, _ = federation_admin.publish(federation_dir, now=now)
    nodes = []
    for spec in countries:
        directory = root / spec.node_id
        node_admin.update_trust(directory, published, now=now)
        nodes.append(
            SimNode(
                node_id=spec.node_id,
                country=spec.country,
                directory=directory,
                federation_port=spec.federation_port,
                authority_port=spec.authority_port,
                case_worker_token=node_admin.add_client(
                    directory, "case-management", ["submitter", "reader"], now=now
                ),
                auditor_token=node_admin.add_client(directory, "auditor", ["auditor"], now=now),
                replicas=spec.replicas,
            )
        )
    return nodes
