"""Node configuration: `node.toml`, loaded into frozen dataclasses.

Every section and key has a documented default except the node's identity and
addresses. Unknown sections or keys are refused (a typo must not silently fall
back to a default), and every error names the file, the key and what was
expected. A few settings can be overridden from the environment, for
containers and tests:

    EXCHANGE_DATABASE_URL        store.database_url
    EXCHANGE_FEDERATION_LISTEN   federation.listen
    EXCHANGE_AUTHORITY_LISTEN    authority.listen
    EXCHANGE_LOG_LEVEL           logging.level
    EXCHANGE_METRICS_LISTEN      metrics.listen
    EXCHANGE_KEY_PASSPHRASE      passphrase of the private key files (never in the file)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from exchange.errors import ConfigError, ValidationError
from exchange.ids import validate_country, validate_node_id

__all__ = [
    "AuditConfig",
    "AuthorityConfig",
    "DeliveryConfig",
    "FederationConfig",
    "LoggingConfig",
    "MatchingConfig",
    "MetricsConfig",
    "NodeConfig",
    "NodeSection",
    "ReceiveConfig",
    "RetentionConfig",
    "StoreConfig",
    "TrustConfig",
    "load_node_config",
    "passphrase_from_env",
]

CONFIG_FILE = "node.toml"


@dataclasses.dataclass(frozen=True)
class NodeSection:
    """[node]: who this node is."""

    id: str
    country: str
    authority_name: str = ""


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """[federation]: the mTLS port peers deliver to."""

    listen: str
    # What peers dial (the trust list's endpoint); defaults to `listen`.
    endpoint: str = ""


@dataclasses.dataclass(frozen=True)
class AuthorityConfig:
    """[authority]: the TLS port authority systems call."""

    listen: str
    # Names and addresses in the authority certificate, besides the node id.
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1")


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """[store]: where the node keeps its data."""

    # sqlite:///relative/or/absolute/path.db or postgresql+psycopg://...
    database_url: str = "sqlite:///exchange.db"
    # SQLite only: FULL survives power loss; NORMAL survives a process crash.
    sqlite_synchronous: str = "FULL"
    # How long a write waits for a lock another session holds (SQLite's busy
    # timeout, PostgreSQL's lock_timeout) before the caller is told UNAVAILABLE.
    lock_timeout_seconds: float = 10.0
    # How often a running node checks that its store answers (health).
    probe_interval_seconds: float = 5.0
    # How long an inbox watcher (WatchInbox) waits for a change notification
    # before it reads the store anyway. The node's own writes, and on
    # PostgreSQL its other processes' (LISTEN/NOTIFY), wake it at once; this
    # bounds the delay of an event whose notification was lost (a reconnect)
    # or written by another program (an admin command).
    watch_poll_seconds: float = 1.0
    # Threads that read the store at once, each on a connection of its own. A
    # `serve` process holds at most readers + 2 pooled connections (the readers,
    # the one writer, one for the metrics endpoint and startup) and, on
    # PostgreSQL, one more that listens for its other processes' changes: size
    # the server's max_connections for every process of every node on it.
    readers: int = 4


@dataclasses.dataclass(frozen=True)
class DeliveryConfig:
    """[delivery]: how the outbox worker retries."""

    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 600.0
    attempt_timeout_seconds: float = 10.0
    # Default delivery window of a notice when the submitter gives none.
    default_ttl_hours: int = 168
    batch_size: int = 64
    # A worker that dies mid-delivery leaves its rows to others after this.
    lease_seconds: float = 60.0
    # Rows to a peer known down wait parked (unclaimed, while one row at a time tries
    # the peer) this long before they are parked again: the longest they wait for a
    # peer that is back should the process that parked them die.
    park_seconds: float = 600.0

    def default_ttl(self) -> dt.timedelta:
        return dt.timedelta(hours=self.default_ttl_hours)


@dataclasses.dataclass(frozen=True)
class ReceiveConfig:
    """[receive]: time rules for accepting envelopes from peers."""

    max_clock_skew_seconds: int = 300
    max_message_age_days: int = 31


@dataclasses.dataclass(frozen=True)
class TrustConfig:
    """[trust]: how fresh the held trust list must be, and how often peers are asked."""

    # A list issued longer ago than this is stale even before it expires: the node
    # stops sending and reports NOT_SERVING until it holds a newer one (TUF's
    # freshness against freeze attacks). Stewards republish well within it.
    max_age_days: int = 30
    # How often a running node asks its peers (GetTrustList) for a newer list.
    fetch_interval_seconds: float = 300.0

    def max_age(self) -> dt.timedelta:
        return dt.timedelta(days=self.max_age_days)


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    """[retention]: how often serve purges content whose retention has ended."""

    purge_interval_seconds: float = 3600.0


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """[audit]: how often the node signs its log's head and checks its peers' heads.

    A head is signed once `head_every_entries` entries are unsigned, or once any
    entry has waited `head_interval_seconds`.
    """

    head_every_entries: int = 1000
    head_interval_seconds: float = 10.0
    peer_check_interval_seconds: float = 60.0


@dataclasses.dataclass(frozen=True)
class MatchingConfig:
    """[matching]: hit/no-hit rate limits.

    A peer may have this many identifiers evaluated a minute (and read as many
    buckets); an authority client may ask about this many identifiers a minute.
    """

    peer_evaluations_per_minute: int = 6000
    client_identifiers_per_minute: int = 600


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """[logging]"""

    level: str = "info"
    # json, console, or auto (console on a terminal, JSON otherwise).
    format: str = "auto"


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: the Prometheus endpoint (exchange.metrics).

    Off unless `listen` is set (host:port). Keep it on a loopback or management
    address: the figures are not personal, but volumes per peer are still the
    authority's business.
    """

    listen: str = ""


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """A node's whole configuration; paths are resolved against `directory`."""

    directory: Path
    node: NodeSection
    federation: FederationConfig
    authority: AuthorityConfig
    store: StoreConfig = StoreConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    receive: ReceiveConfig = ReceiveConfig()
    trust: TrustConfig = TrustConfig()
    retention: RetentionConfig = RetentionConfig()
    audit: AuditConfig = AuditConfig()
    matching: MatchingConfig = MatchingConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def endpoint(self) -> str:
        return self.federation.endpoint or self.federation.listen

    def database_url(self) -> str:
        """The store URL, with a relative SQLite path taken from the node directory."""
        url = self.store.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(self.directory / url.removeprefix(prefix))
        return url


_SECTIONS: Mapping[str, type[Any]] = {
    "node": NodeSection,
    "federation": FederationConfig,
    "authority": AuthorityConfig,
    "store": StoreConfig,
    "delivery": DeliveryConfig,
    "receive": ReceiveConfig,
    "trust": TrustConfig,
    "retention": RetentionConfig,
    "audit": AuditConfig,
    "matching": MatchingConfig,
    "logging": LoggingConfig,
    "metrics": MetricsConfig,
}
_ENV_OVERRIDES = {
    "EXCHANGE_DATABASE_URL": ("store", "database_url"),
    "EXCHANGE_FEDERATION_LISTEN": ("federation", "listen"),
    "EXCHANGE_AUTHORITY_LISTEN": ("authority", "listen"),
    "EXCHANGE_LOG_LEVEL": ("logging", "level"),
    "EXCHANGE_METRICS_LISTEN": ("metrics", "listen"),
}

S = TypeVar("S")


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    if typing.get_origin(tp) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, bool):
        # TOML booleans are Python ints too; accept them only where a bool is expected.
        if tp is bool:
            return value
    elif tp is float and isinstance(value, int | float):
        return float(value)
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_expected(tp)}, got {value!r}")


def _section(cls: type[S], table: Any, path: Path, name: str) -> S:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {name}.{unknown[0]} (known: {', '.join(sorted(fields))})"
        )
    values = {}
    for key, field in fields.items():
        if key in table:
            values[key] = _coerce(table[key], hints[key], f"{path}: {name}.{key}")
        elif field.default is dataclasses.MISSING:
            raise ConfigError(f"{path}: {name}.{key} is required ({_expected(hints[key])})")
    return cls(**values)


def load_node_config(directory: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Load `directory/node.toml`, apply environment overrides, and check it.

    Raises:
        ConfigError: naming the file, the key and what was expected.
    """
    environ = os.environ if environ is None else environ
    path = directory / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run `exchange node init` first)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}] (known: {', '.join(_SECTIONS)})")
    for variable, (section, key) in _ENV_OVERRIDES.items():
        if environ.get(variable):
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            table[key] = environ[variable]
    for required in ("node", "federation", "authority"):
        if required not in data:
            raise ConfigError(f"{path}: section [{required}] is required")
    sections = {
        name: _section(cls, data[name], path, name)
        for name, cls in _SECTIONS.items()
        if name in data
    }
    config = NodeConfig(directory=directory.resolve(), **sections)
    try:
        validate_node_id(config.node.id, "node.id")
        validate_country(config.node.country, "node.country")
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if config.logging.format not in ("auto", "json", "console"):
        raise ConfigError(f"{path}: logging.format: expected auto, json or console")
    _check_store(config.store, path)
    _check_delivery(config.delivery, path)
    _check_trust(config.trust, path)
    if config.metrics.listen and not _is_host_port(config.metrics.listen):
        raise ConfigError(f"{path}: metrics.listen: expected host:port, or empty for off")
    if config.retention.purge_interval_seconds < 1:
        raise ConfigError(f"{path}: retention.purge_interval_seconds: expected at least 1")
    return config


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) < 65536)


def _check_store(store: StoreConfig, path: Path) -> None:
    if not 1 <= store.readers <= 64:
        raise ConfigError(f"{path}: store.readers: expected 1 to 64")
    if store.sqlite_synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError(f"{path}: store.sqlite_synchronous: expected FULL, NORMAL or EXTRA")
    if not 0 < store.probe_interval_seconds <= 300:
        raise ConfigError(f"{path}: store.probe_interval_seconds: expected above 0, at most 300")
    if not 0 < store.lock_timeout_seconds <= 600:
        raise ConfigError(f"{path}: store.lock_timeout_seconds: expected above 0, at most 600")
    if not 0 < store.watch_poll_seconds <= 3600:
        raise ConfigError(f"{path}: store.watch_poll_seconds: expected above 0, at most 3600")


def _check_delivery(delivery: DeliveryConfig, path: Path) -> None:
    """Values that load but could not work together."""
    problems = {
        "initial_backoff_seconds": delivery.initial_backoff_seconds <= 0,
        "max_backoff_seconds": delivery.max_backoff_seconds < delivery.initial_backoff_seconds,
        "attempt_timeout_seconds": delivery.attempt_timeout_seconds <= 0,
        # A notice may travel 30 days at most (the submit limit and peers' maximum age).
        "default_ttl_hours": not 1 <= delivery.default_ttl_hours <= 30 * 24,
        "batch_size": delivery.batch_size < 1,
        # A lease shorter than an attempt would let a second worker send while the first waits.
        "lease_seconds": delivery.lease_seconds <= delivery.attempt_timeout_seconds,
        # A park shorter than the peer's backoff would be rewritten at each try of it.
        "park_seconds": delivery.park_seconds < delivery.max_backoff_seconds,
    }
    expected = {
        "initial_backoff_seconds": "a number above 0",
        "max_backoff_seconds": "at least initial_backoff_seconds",
        "attempt_timeout_seconds": "a number above 0",
        "default_ttl_hours": "between 1 and 720",
        "batch_size": "at least 1",
        "lease_seconds": "more than attempt_timeout_seconds",
        "park_seconds": "at least max_backoff_seconds",
    }
    for key, wrong in problems.items():
        if wrong:
            raise ConfigError(f"{path}: delivery.{key}: expected {expected[key]}")


def _check_trust(trust: TrustConfig, path: Path) -> None:
    if not 1 <= trust.max_age_days <= 3650:
        raise ConfigError(f"{path}: trust.max_age_days: expected between 1 and 3650")
    if trust.fetch_interval_seconds < 1:
        raise ConfigError(f"{path}: trust.fetch_interval_seconds: expected at least 1")


def passphrase_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key passphrase from EXCHANGE_KEY_PASSPHRASE, if set."""
    environ = os.environ if environ is None else environ
    value = environ.get("EXCHANGE_KEY_PASSPHRASE", "")
    return value.encode() if value else None
