"""The OPRF key file: 0600, sealed under the passphrase when there is one, refused when wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exchange.errors import KeyMaterialError
from exchange.oprf import ServerKey
from exchange.oprf_keys import load_oprf_key, write_oprf_key

KEY = ServerKey.generate()


@pytest.mark.parametrize("passphrase", [None, b"correct horse"], ids=["plain", "sealed"])
def test_a_key_file_round_trips(tmp_path: Path, passphrase: bytes | None) -> None:
    path = tmp_path / "keys" / "oprf.json"
    write_oprf_key(path, KEY, 3, passphrase)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_oprf_key(path, passphrase) == (KEY, 3)


def test_a_sealed_file_does_not_hold_the_scalar(tmp_path: Path) -> None:
    path = tmp_path / "oprf.json"
    write_oprf_key(path, KEY, 1, b"pass")
    assert KEY.to_bytes().hex() not in path.read_text()


@pytest.mark.parametrize(
    ("written", "given", "message"),
    [
        (b"right", b"wrong", "wrong passphrase"),
        (b"right", None, "set EXCHANGE_KEY_PASSPHRASE"),
        (None, b"extra", "not encrypted but a passphrase was given"),
    ],
    ids=["wrong", "missing", "unexpected"],
)
def test_the_wrong_passphrase_is_refused(
    tmp_path: Path, written: bytes | None, given: bytes | None, message: str
) -> None:
    path = tmp_path / "oprf.json"
    write_oprf_key(path, KEY, 1, written)
    with pytest.raises(KeyMaterialError, match=message):
        load_oprf_key(path, given)


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "oprf.json"
    write_oprf_key(path, KEY, 1, None)
    path.chmod(0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_oprf_key(path, None)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"format": "other", "key_version": 1, "scalar": "00"}),
        json.dumps({"format": "exchange-oprf-key/1", "key_version": 1, "scalar": "00" * 32}),
        json.dumps({"format": "exchange-oprf-key/1", "scalar": KEY.to_bytes().hex()}),
    ],
    ids=["garbage", "other-format", "zero-scalar", "no-version"],
)
def test_a_malformed_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "oprf.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="not an OPRF key file"):
        load_oprf_key(path, None)


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "oprf.json"
    write_oprf_key(path, KEY, 1, None)
    with pytest.raises(FileExistsError):
        write_oprf_key(path, ServerKey.generate(), 2, None)
    assert load_oprf_key(path, None) == (KEY, 1)
