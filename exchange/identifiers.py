"""Typed identifiers for hit/no-hit matching, and the rules that normalize them.

Two authorities must turn the same passport, phone number or wallet into the
same bytes, or a match is missed; and nothing else may turn into those bytes,
or a false hit sends an assistance request about the wrong person. So every
identifier is typed, normalized by the rules below before anything else
happens, and encoded with its type and qualifier (`Identifier.oprf_input`),
so a phone number can never match a plate that happens to read the same.

Rules (each refuses what it cannot normalize, naming the field):

- passport (qualifier: issuing country, ISO 3166-1 alpha-2): NFKC, capitals,
  spaces, hyphens and dots dropped; 5 to 20 of A-Z 0-9.
- phone (no qualifier): E.164; spaces, hyphens, dots, brackets and slashes
  dropped, a leading 00 read as +; then + and 8 to 15 digits, the first not 0.
- email (no qualifier): NFKC, trimmed, lower case; one @; the domain in IDNA
  ASCII form; local part 1 to 64 characters, the address at most 254; no
  provider-specific rewriting (dots and +tags are kept).
- wallet (qualifier: network, 2 to 10 of A-Z 0-9, e.g. BTC, ETH): 0x-hex (EVM)
  and bech32 (bc1, tb1, ltc1) addresses in lower case, since their case is only
  a checksum; others (base58) kept as written; 20 to 128 letters and digits.
- file_sha256 (no qualifier): 64 hex digits, either case; stored as 32 bytes.
- perceptual_hash (qualifier: algorithm, 2 to 16 of a-z 0-9 -, e.g. pdq):
  opaque bytes, 4 to 1024, unchanged.
- vehicle_plate (qualifier: registering country): NFKC, capitals, spaces,
  hyphens, dots and middle dots dropped; 2 to 12 of A-Z 0-9.

What the rules deliberately do not do: guess a country for a national phone
number, strip Gmail-style dots, or convert between plate formats; those would
trade missed matches for false ones.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import unicodedata

from exchange._encoding import encode
from exchange.errors import ValidationError
from exchange.ids import validate_country

__all__ = ["Identifier", "IdentifierType", "normalize"]

_TAG = "exchange.v1.Identifier"


class IdentifierType(enum.Enum):
    PASSPORT = "passport"
    PHONE = "phone"
    EMAIL = "email"
    WALLET = "wallet"
    FILE_SHA256 = "file_sha256"
    PERCEPTUAL_HASH = "perceptual_hash"
    VEHICLE_PLATE = "vehicle_plate"


@dataclasses.dataclass(frozen=True)
class Identifier:
    """A normalized identifier: what is matched, never stored in clear."""

    type: IdentifierType
    qualifier: str
    value: bytes

    def oprf_input(self) -> bytes:
        """The bytes the OPRF is evaluated on: type, qualifier and value, unambiguously."""
        return encode(_TAG, self.type.value.encode(), self.qualifier.encode(), self.value)


_DOCUMENT = re.compile(r"[A-Z0-9]{5,20}")
_PLATE = re.compile(r"[A-Z0-9]{2,12}")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_NETWORK = re.compile(r"[A-Z0-9]{2,10}")
_ADDRESS = re.compile(r"(0x)?[A-Za-z0-9]{20,128}")
_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_BECH32 = re.compile(r"(bc1|tb1|ltc1)[0-9a-z]+", re.IGNORECASE)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_ALGORITHM = re.compile(r"[a-z0-9-]{2,16}")
_LOCAL_PART = re.compile(r"[^\s@]{1,64}")
_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _text(value: str | bytes, field: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(field, "must be UTF-8 text") from None
    return unicodedata.normalize("NFKC", value).strip()


def _drop(text: str, characters: str) -> str:
    return text.translate({ord(c): None for c in characters})


def _passport(value: str, field: str) -> bytes:
    number = _drop(value.upper(), " -.")
    if not _DOCUMENT.fullmatch(number):
        raise ValidationError(field, "a passport number is 5 to 20 letters and digits")
    return number.encode()


def _phone(value: str, field: str) -> bytes:
    number = _drop(value, " -.()/\u00a0")
    if number.startswith("00"):
        number = "+" + number[2:]
    if not _E164.fullmatch(number):
        raise ValidationError(
            field, "a phone number must be international (E.164): + and 8 to 15 digits"
        )
    return number.encode()


def _email(value: str, field: str) -> bytes:
    local, at, domain = value.lower().rpartition("@")
    if not at or not _LOCAL_PART.fullmatch(local) or "@" in local:
        raise ValidationError(field, "an e-mail address is local-part@domain")
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationError(field, "the e-mail domain is not a valid domain name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise ValidationError(field, "the e-mail domain is not a valid domain name")
    address = f"{local}@{ascii_domain}"
    if len(address) > 254:
        raise ValidationError(field, "an e-mail address is at most 254 characters")
    return address.encode()


def _wallet(value: str, field: str) -> bytes:
    address = value.replace(" ", "")
    if not _ADDRESS.fullmatch(address):
        raise ValidationError(field, "a wallet address is 20 to 128 letters and digits")
    if _EVM.fullmatch(address) or _BECH32.fullmatch(address):
        # Hex and bech32 are case-insensitive (mixed case is only a checksum); base58 is not.
        address = address.lower()
    return address.encode()


def _sha256(value: str, field: str) -> bytes:
    if not _SHA256_HEX.fullmatch(value):
        raise ValidationError(field, "a SHA-256 file hash is 64 hexadecimal digits")
    return bytes.fromhex(value)


def _plate(value: str, field: str) -> bytes:
    plate = _drop(value.upper(), " -.\u00b7")
    if not _PLATE.fullmatch(plate):
        raise ValidationError(field, "a vehicle plate is 2 to 12 letters and digits")
    return plate.encode()


def _country(qualifier: str, field: str) -> str:
    return validate_country(qualifier.strip().upper(), field)


def normalize(
    kind: IdentifierType, value: str | bytes, qualifier: str = "", *, field: str = "value"
) -> Identifier:
    """The normalized identifier, by the rules of the module docstring.

    Args:
        qualifier: the issuing or registering country, the wallet's network,
            or the perceptual hash's algorithm; empty for the other types.
        field: the request field `value` came from, for error messages; the
            qualifier is named as its sibling "qualifier".

    Raises:
        ValidationError: the value (or qualifier) cannot be normalized.
    """
    qualifier_field = field.rpartition(".")[0] + ".qualifier" if "." in field else "qualifier"
    needs = {
        IdentifierType.PASSPORT: "issuing country",
        IdentifierType.WALLET: "network",
        IdentifierType.PERCEPTUAL_HASH: "algorithm",
        IdentifierType.VEHICLE_PLATE: "registering country",
    }
    if kind not in needs and qualifier:
        raise ValidationError(qualifier_field, f"a {kind.value} takes no qualifier")
    if kind in needs and not qualifier.strip():
        raise ValidationError(qualifier_field, f"the {needs[kind]} is required")
    if kind is IdentifierType.PERCEPTUAL_HASH:
        algorithm = qualifier.strip().lower()
        if not _ALGORITHM.fullmatch(algorithm):
            raise ValidationError(qualifier_field, "an algorithm name is 2 to 16 of a-z 0-9 -")
        data = value if isinstance(value, bytes) else value.encode()
        if not 4 <= len(data) <= 1024:
            raise ValidationError(field, "a perceptual hash is 4 to 1024 bytes")
        return Identifier(kind, algorithm, data)
    text = _text(value, field)
    if kind is IdentifierType.PASSPORT:
        return Identifier(kind, _country(qualifier, qualifier_field), _passport(text, field))
    if kind is IdentifierType.VEHICLE_PLATE:
        return Identifier(kind, _country(qualifier, qualifier_field), _plate(text, field))
    if kind is IdentifierType.WALLET:
        network = qualifier.strip().upper()
        if not _NETWORK.fullmatch(network):
            raise ValidationError(qualifier_field, "a network is 2 to 10 of A-Z 0-9, e.g. BTC")
        return Identifier(kind, network, _wallet(text, field))
    rule = {
        IdentifierType.PHONE: _phone,
        IdentifierType.EMAIL: _email,
        IdentifierType.FILE_SHA256: _sha256,
    }[kind]
    return Identifier(kind, "", rule(text, field))
