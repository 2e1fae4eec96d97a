"""node.toml: documented defaults, strict keys and types, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.config import (
    AuthorityConfig,
    DeliveryConfig,
    FederationConfig,
    LoggingConfig,
    NodeSection,
    ReceiveConfig,
    StoreConfig,
    TrustConfig,
    load_node_config,
    passphrase_from_env,
)
from exchange.errors import ConfigError

NODE = '[node]\nid = "node-xa"\ncountry = "XA"\n'
FEDERATION = '[federation]\nlisten = "127.0.0.1:7401"\n'
AUTHORITY = '[authority]\nlisten = "127.0.0.1:7501"\n'
MINIMAL = NODE + FEDERATION + AUTHORITY

FULL = """
[node]
id = "xa-police"
country = "XA"
authority_name = "XA National Police"

[federation]
listen = "0.0.0.0:7401"
endpoint = "xa.example:7401"

[authority]
listen = "0.0.0.0:7501"
hosts = ["exchange.xa.example"]

[store]
database_url = "postgresql+psycopg://exchange@db/xa"
sqlite_synchronous = "NORMAL"
readers = 2

[delivery]
initial_backoff_seconds = 0.5
max_backoff_seconds = 60
attempt_timeout_seconds = 2.5
default_ttl_hours = 24
batch_size = 16
lease_seconds = 30
park_seconds = 120

[receive]
max_clock_skew_seconds = 60
max_message_age_days = 7

[trust]
max_age_days = 14
fetch_interval_seconds = 60

[logging]
level = "debug"
format = "json"

[metrics]
listen = "127.0.0.1:9464"
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "node.toml").write_text(text)
    return directory


def refused(directory: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading `text` raises; it always names the file."""
    write(directory, text)
    with pytest.raises(ConfigError) as caught:
        load_node_config(directory, environ={} if environ is None else environ)
    message = str(caught.value)
    assert str(directory / "node.toml") in message
    return message


def test_a_minimal_file_loads_with_the_documented_defaults(tmp_path):
    config = load_node_config(write(tmp_path, MINIMAL), environ={})

    assert config.directory == tmp_path.resolve()
    assert config.node == NodeSection(id="node-xa", country="XA", authority_name="")
    assert config.node_id == "node-xa"
    assert config.federation == FederationConfig(listen="127.0.0.1:7401", endpoint="")
    assert config.endpoint == "127.0.0.1:7401", "peers dial the listen address by default"
    assert config.authority == AuthorityConfig(
        listen="127.0.0.1:7501", hosts=("localhost", "127.0.0.1")
    )
    assert config.store == StoreConfig(
        database_url="sqlite:///exchange.db",
        sqlite_synchronous="FULL",
        lock_timeout_seconds=10.0,
        watch_poll_seconds=1.0,
        readers=4,
    )
    assert config.delivery == DeliveryConfig(
        initial_backoff_seconds=1.0,
        max_backoff_seconds=600.0,
        attempt_timeout_seconds=10.0,
        default_ttl_hours=168,
        batch_size=64,
        lease_seconds=60.0,
        park_seconds=600.0,
    )
    assert config.delivery.default_ttl().total_seconds() == 7 * 24 * 3600
    assert config.receive == ReceiveConfig(max_clock_skew_seconds=300, max_message_age_days=31)
    assert config.logging == LoggingConfig(level="info", format="auto")
    assert config.trust == TrustConfig(max_age_days=30, fetch_interval_seconds=300.0)
    assert config.trust.max_age().days == 30


def test_every_key_can_be_set(tmp_path):
    config = load_node_config(write(tmp_path, FULL), environ={})

    assert config.node.authority_name == "XA National Police"
    assert config.endpoint == "xa.example:7401"
    assert config.authority.hosts == ("exchange.xa.example",)
    assert config.store == StoreConfig("postgresql+psycopg://exchange@db/xa", "NORMAL", readers=2)
    assert config.delivery == DeliveryConfig(0.5, 60.0, 2.5, 24, 16, 30.0, 120.0)
    assert config.receive == ReceiveConfig(60, 7)
    assert config.trust == TrustConfig(14, 60.0)
    assert config.logging == LoggingConfig("debug", "json")
    assert config.metrics.listen == "127.0.0.1:9464"
    # An integer where a number is expected is taken as a float.
    assert isinstance(config.delivery.max_backoff_seconds, float)


def test_the_sample_nodes_load():
    samples = Path(__file__).parents[2] / "nodes"
    for directory in sorted(samples.glob("*/node.toml")):
        assert load_node_config(directory.parent, environ={}).node.id


# --- refusals ----------------------------------------------------------------------------------

STRUCTURE = [
    pytest.param(MINIMAL + "[stroe]\n", "unknown section [stroe]", id="unknown-section"),
    pytest.param(
        MINIMAL + "[delivery]\nbatchsize = 5\n", "unknown key delivery.batchsize", id="unknown-key"
    ),
    pytest.param(
        NODE + '[federation]\nlisten = "a:1"\nendpiont = "b:2"\n' + AUTHORITY,
        "unknown key federation.endpiont",
        id="unknown-key-in-a-required-section",
    ),
    pytest.param("store = 5\n" + MINIMAL, "[store] must be a table", id="section-not-a-table"),
    pytest.param(FEDERATION + AUTHORITY, "section [node] is required", id="node-missing"),
    pytest.param(NODE + AUTHORITY, "section [federation] is required", id="federation-missing"),
    pytest.param(NODE + FEDERATION, "section [authority] is required", id="authority-missing"),
    pytest.param(
        '[node]\ncountry = "XA"\n' + FEDERATION + AUTHORITY,
        "node.id is required (a string)",
        id="node-id-missing",
    ),
    pytest.param(
        '[node]\nid = "node-xa"\n' + FEDERATION + AUTHORITY,
        "node.country is required (a string)",
        id="country-missing",
    ),
    pytest.param(
        NODE + "[federation]\n" + AUTHORITY,
        "federation.listen is required (a string)",
        id="federation-listen-missing",
    ),
    pytest.param(
        NODE + FEDERATION + "[authority]\n",
        "authority.listen is required (a string)",
        id="authority-listen-missing",
    ),
    pytest.param("[node\n", "not valid TOML", id="not-toml"),
]


@pytest.mark.parametrize(("text", "message"), STRUCTURE)
def test_structure_errors_name_the_file_and_the_key(tmp_path, text, message):
    assert message in refused(tmp_path, text)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"node\.toml: not found"):
        load_node_config(tmp_path, environ={})


TYPES = [
    # (section, key, TOML value, what the error says was expected)
    pytest.param("delivery", "batch_size", '"64"', "an integer", id="string-for-an-int"),
    pytest.param("delivery", "batch_size", "true", "an integer", id="bool-for-an-int"),
    pytest.param("delivery", "default_ttl_hours", "1.5", "an integer", id="float-for-an-int"),
    pytest.param("receive", "max_message_age_days", "false", "an integer", id="bool-for-days"),
    pytest.param("delivery", "lease_seconds", '"60"', "a number", id="string-for-a-number"),
    pytest.param("delivery", "initial_backoff_seconds", "true", "a number", id="bool-for-a-number"),
    pytest.param("store", "database_url", "5", "a string", id="int-for-a-string"),
    pytest.param("logging", "level", "[]", "a string", id="list-for-a-string"),
    pytest.param("authority", "hosts", '"localhost"', "a list of strings", id="string-for-list"),
    pytest.param("authority", "hosts", '["localhost", 1]', "a list of strings", id="mixed-list"),
]


@pytest.mark.parametrize(("section", "key", "value", "expected"), TYPES)
def test_wrong_types_are_refused_naming_the_key_and_the_expected_type(
    tmp_path, section, key, value, expected
):
    text = MINIMAL.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n")
    if f"[{section}]" not in text:
        text += f"[{section}]\n{key} = {value}\n"

    message = refused(tmp_path, text)

    assert f"{section}.{key}: expected {expected}, got " in message


VALUES = [
    pytest.param("id", "Node-XA", "node.id", id="node-id-with-capitals"),
    pytest.param("id", "xa", "node.id", id="node-id-too-short"),
    pytest.param("id", "-xa-police", "node.id", id="node-id-leading-hyphen"),
    pytest.param("id", "xa-police-", "node.id", id="node-id-trailing-hyphen"),
    pytest.param("id", "xa_police", "node.id", id="node-id-underscore"),
    pytest.param("id", "x" * 64, "node.id", id="node-id-over-63"),
    pytest.param("country", "xa", "node.country", id="country-lowercase"),
    pytest.param("country", "XAA", "node.country", id="country-three-letters"),
    pytest.param("country", "X1", "node.country", id="country-digit"),
]


@pytest.mark.parametrize(("key", "value", "field"), VALUES)
def test_bad_node_ids_and_countries_are_refused(tmp_path, key, value, field):
    text = MINIMAL.replace(f'{key} = "{"node-xa" if key == "id" else "XA"}"', f'{key} = "{value}"')

    assert f": {field}: must be" in refused(tmp_path, text)


CHOICES = [
    pytest.param('[logging]\nformat = "xml"\n', "logging.format", id="log-format"),
    pytest.param(
        '[store]\nsqlite_synchronous = "OFF"\n', "store.sqlite_synchronous", id="sqlite-sync-off"
    ),
    pytest.param(
        "[store]\nlock_timeout_seconds = 0\n", "store.lock_timeout_seconds", id="no-lock-wait"
    ),
    pytest.param(
        "[store]\nwatch_poll_seconds = 0\n", "store.watch_poll_seconds", id="watch-never-rereads"
    ),
    # Values that load alone but could not work together.
    pytest.param(
        "[delivery]\ndefault_ttl_hours = 1000\n",
        "delivery.default_ttl_hours",
        id="ttl-past-30-days",
    ),
    pytest.param(
        "[delivery]\nlease_seconds = 5.0\nattempt_timeout_seconds = 10.0\n",
        "delivery.lease_seconds",
        id="lease-shorter-than-an-attempt",
    ),
    pytest.param("[delivery]\nbatch_size = 0\n", "delivery.batch_size", id="empty-batches"),
    pytest.param(
        "[delivery]\nmax_backoff_seconds = 600\npark_seconds = 60\n",
        "delivery.park_seconds",
        id="park-shorter-than-the-backoff",
    ),
    pytest.param("[store]\nreaders = 0\n", "store.readers", id="no-readers"),
    pytest.param("[store]\nreaders = 65\n", "store.readers", id="too-many-readers"),
    pytest.param("[trust]\nmax_age_days = 0\n", "trust.max_age_days", id="no-freshness"),
    pytest.param(
        "[trust]\nfetch_interval_seconds = 0.5\n",
        "trust.fetch_interval_seconds",
        id="fetching-too-often",
    ),
    pytest.param(
        "[delivery]\ninitial_backoff_seconds = 0\n",
        "delivery.initial_backoff_seconds",
        id="no-backoff",
    ),
    pytest.param('[metrics]\nlisten = "9464"\n', "metrics.listen", id="metrics-without-host"),
    pytest.param(
        '[metrics]\nlisten = "127.0.0.1:99999"\n', "metrics.listen", id="metrics-port-out-of-range"
    ),
]


@pytest.mark.parametrize(("extra", "key"), CHOICES)
def test_values_outside_their_choices_are_refused(tmp_path, extra, key):
    assert f"{key}: expected" in refused(tmp_path, MINIMAL + extra)


# --- environment overrides ---------------------------------------------------------------------

OVERRIDES = [
    pytest.param(
        "EXCHANGE_DATABASE_URL",
        "postgresql+psycopg://exchange@db/xa",
        lambda c: c.store.database_url,
        id="database-url",
    ),
    pytest.param(
        "EXCHANGE_FEDERATION_LISTEN", "0.0.0.0:9401", lambda c: c.federation.listen, id="fed"
    ),
    pytest.param(
        "EXCHANGE_AUTHORITY_LISTEN", "0.0.0.0:9501", lambda c: c.authority.listen, id="authority"
    ),
    pytest.param("EXCHANGE_LOG_LEVEL", "warning", lambda c: c.logging.level, id="log-level"),
    pytest.param(
        "EXCHANGE_METRICS_LISTEN", "127.0.0.1:9464", lambda c: c.metrics.listen, id="metrics"
    ),
]


@pytest.mark.parametrize(("variable", "value", "read"), OVERRIDES)
def test_environment_overrides_win_over_the_file(tmp_path, variable, value, read):
    write(tmp_path, FULL)

    assert read(load_node_config(tmp_path, environ={variable: value})) == value


@pytest.mark.parametrize(("variable", "value", "read"), OVERRIDES)
def test_an_empty_environment_variable_is_no_override(tmp_path, variable, value, read):
    write(tmp_path, FULL)

    assert read(load_node_config(tmp_path, environ={variable: ""})) != ""


def test_only_the_given_environment_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("EXCHANGE_LOG_LEVEL", "error")
    write(tmp_path, MINIMAL)

    assert load_node_config(tmp_path, environ={}).logging.level == "info"
    assert load_node_config(tmp_path).logging.level == "error", "os.environ by default"


def test_an_override_can_supply_a_section_the_file_lacks(tmp_path):
    write(tmp_path, NODE + AUTHORITY)

    config = load_node_config(tmp_path, environ={"EXCHANGE_FEDERATION_LISTEN": "[::]:7401"})

    assert config.federation.listen == "[::]:7401"


def test_an_override_into_a_section_that_is_not_a_table_is_a_config_error(tmp_path):
    # Regression: this was a TypeError from inside the loader.
    message = refused(
        tmp_path, "store = 5\n" + MINIMAL, environ={"EXCHANGE_DATABASE_URL": "sqlite:///x.db"}
    )

    assert "[store] must be a table" in message


def test_an_unknown_section_is_refused_before_overrides_apply(tmp_path):
    message = refused(
        tmp_path, MINIMAL + "[stroe]\n", environ={"EXCHANGE_DATABASE_URL": "sqlite:///x.db"}
    )

    assert "unknown section [stroe]" in message


def test_the_key_passphrase_comes_only_from_the_environment():
    assert passphrase_from_env({"EXCHANGE_KEY_PASSPHRASE": "correct horse"}) == b"correct horse"
    assert passphrase_from_env({"EXCHANGE_KEY_PASSPHRASE": ""}) is None
    assert passphrase_from_env({}) is None


# --- paths -------------------------------------------------------------------------------------

DATABASE_URLS = [
    # (database_url in node.toml, the URL the store opens; {dir} is the node directory)
    pytest.param("sqlite:///exchange.db", "sqlite:///{dir}/exchange.db", id="default-file"),
    pytest.param("sqlite:///data/node.db", "sqlite:///{dir}/data/node.db", id="relative-path"),
    pytest.param("sqlite:////var/lib/xa.db", "sqlite:////var/lib/xa.db", id="absolute-path"),
    pytest.param(
        "postgresql+psycopg://exchange@db/xa", "postgresql+psycopg://exchange@db/xa", id="pg"
    ),
]


@pytest.mark.parametrize(("url", "opened"), DATABASE_URLS)
def test_a_relative_sqlite_path_is_resolved_against_the_node_directory(tmp_path, url, opened):
    write(tmp_path, MINIMAL + f'[store]\ndatabase_url = "{url}"\n')

    config = load_node_config(tmp_path, environ={})

    assert config.database_url() == opened.format(dir=tmp_path.resolve())


def test_a_relative_node_directory_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path / "xa", MINIMAL)
    monkeypatch.chdir(tmp_path)

    config = load_node_config(Path("xa"), environ={})

    assert config.directory == (tmp_path / "xa").resolve()
    assert config.database_url() == f"sqlite:///{(tmp_path / 'xa').resolve()}/exchange.db"


def test_a_relative_path_from_the_environment_is_resolved_too(tmp_path):
    write(tmp_path, MINIMAL)

    config = load_node_config(tmp_path, environ={"EXCHANGE_DATABASE_URL": "sqlite:///env.db"})

    assert config.database_url() == f"sqlite:///{tmp_path.resolve()}/env.db"
