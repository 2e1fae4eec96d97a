"""Identifier normalization: named cases of what becomes the same, and what is refused."""

from __future__ import annotations

import pytest

from exchange.errors import ValidationError
from exchange.identifiers import Identifier, IdentifierType, normalize

T = IdentifierType

SAME = {
    # (type, qualifier, written forms that must all normalize alike), expected value
    "passport with spaces and lower case": (
        (T.PASSPORT, "xa", ["x1234567", " X 123 4567 ", "X-123-4567", "X.1234567"]),
        b"X1234567",
    ),
    "passport in full-width characters": (
        (T.PASSPORT, "XA", ["\uff38\uff11\uff12\uff13\uff14\uff15\uff16\uff17"]),
        b"X1234567",
    ),
    "phone written nationally grouped": (
        (T.PHONE, "", ["+44 20 7946 0958", "0044 20 7946 0958", "+44 (20) 7946-0958"]),
        b"+442079460958",
    ),
    "phone with dots and slashes": ((T.PHONE, "", ["+49.30/901820"]), b"+4930901820"),
    "email in mixed case": (
        (T.EMAIL, "", ["Case.Officer@Example.ORG", " case.officer@example.org "]),
        b"case.officer@example.org",
    ),
    "email with an international domain": (
        (T.EMAIL, "", ["info@bücher.example"]),
        b"info@xn--bcher-kva.example",
    ),
    "email keeps dots and plus tags": (
        (T.EMAIL, "", ["a.b+tag@example.org"]),
        b"a.b+tag@example.org",
    ),
    "evm wallet in checksum case": (
        (T.WALLET, "eth", ["0x52908400098527886E0F7030069857D2E4169EE7"]),
        b"0x52908400098527886e0f7030069857d2e4169ee7",
    ),
    "bech32 wallet in capitals": (
        (T.WALLET, "BTC", ["BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ"]),
        b"bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    ),
    "file hash in capitals": (
        (T.FILE_SHA256, "", ["E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"]),
        bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ),
    "plate with spaces and hyphens": (
        (T.VEHICLE_PLATE, "xb", ["ab-123 cd", "AB 123 CD", "AB\u00b7123\u00b7CD"]),
        b"AB123CD",
    ),
}


@pytest.mark.parametrize(
    ("written", "expected"), list(SAME.values()), ids=[k.replace(" ", "-") for k in SAME]
)
def test_written_forms_normalize_alike(
    written: tuple[IdentifierType, str, list[str]], expected: bytes
) -> None:
    kind, qualifier, forms = written
    values = {normalize(kind, form, qualifier).value for form in forms}
    assert values == {expected}


DIFFERENT = {
    "base58 wallet keeps its case": (
        (T.WALLET, "BTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
        (T.WALLET, "BTC", "1bvbmseystwetqtfn5au4m4gfg7xjanvn2"),
    ),
    "same number, another issuing country": (
        (T.PASSPORT, "XA", "X1234567"),
        (T.PASSPORT, "XB", "X1234567"),
    ),
    "same characters, another type": (
        (T.PASSPORT, "XA", "AB123CD"),
        (T.VEHICLE_PLATE, "XA", "AB123CD"),
    ),
    "same wallet text, another network": (
        (T.WALLET, "ETH", "0x52908400098527886E0F7030069857D2E4169EE7"),
        (T.WALLET, "BSC", "0x52908400098527886E0F7030069857D2E4169EE7"),
    ),
}


@pytest.mark.parametrize(
    ("first", "second"), list(DIFFERENT.values()), ids=[k.replace(" ", "-") for k in DIFFERENT]
)
def test_distinct_identifiers_never_meet(
    first: tuple[IdentifierType, str, str], second: tuple[IdentifierType, str, str]
) -> None:
    a = normalize(first[0], first[2], first[1])
    b = normalize(second[0], second[2], second[1])
    assert a.oprf_input() != b.oprf_input()


REFUSED = {
    "passport too short": ((T.PASSPORT, "XA", "X12"), "value", "5 to 20"),
    "passport with punctuation": ((T.PASSPORT, "XA", "X123/4567"), "value", "5 to 20"),
    "passport without country": ((T.PASSPORT, "", "X1234567"), "qualifier", "issuing country"),
    "passport with a bad country": ((T.PASSPORT, "XYZ", "X1234567"), "qualifier", "alpha-2"),
    "phone written nationally": ((T.PHONE, "", "020 7946 0958"), "value", "E.164"),
    "phone too long": ((T.PHONE, "", "+1234567890123456"), "value", "E.164"),
    "phone starting with zero": ((T.PHONE, "", "+0441234567"), "value", "E.164"),
    "phone with a qualifier": ((T.PHONE, "XA", "+442079460958"), "qualifier", "no qualifier"),
    "email without at": ((T.EMAIL, "", "case.officer.example.org"), "value", "local-part@"),
    "email with two ats": ((T.EMAIL, "", "a@b@example.org"), "value", "local-part@"),
    "email without a dot in the domain": ((T.EMAIL, "", "a@localhost"), "value", "domain"),
    "email with a bad label": ((T.EMAIL, "", "a@-bad.example"), "value", "domain"),
    "wallet too short": ((T.WALLET, "BTC", "1BvBMSEY"), "value", "20 to 128"),
    "wallet without network": (
        (T.WALLET, "", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
        "qualifier",
        "network",
    ),
    "file hash too short": ((T.FILE_SHA256, "", "e3b0c442"), "value", "64 hexadecimal"),
    "file hash not hex": ((T.FILE_SHA256, "", "z" * 64), "value", "64 hexadecimal"),
    "plate too long": ((T.VEHICLE_PLATE, "XA", "ABCDEFGHIJKLM"), "value", "2 to 12"),
    "perceptual hash too short": ((T.PERCEPTUAL_HASH, "pdq", b"\x01\x02"), "value", "4 to 1024"),
    "perceptual hash without algorithm": (
        (T.PERCEPTUAL_HASH, "", b"\x01\x02\x03\x04"),
        "qualifier",
        "algorithm",
    ),
}


@pytest.mark.parametrize(
    ("given", "field", "reason"), list(REFUSED.values()), ids=[k.replace(" ", "-") for k in REFUSED]
)
def test_what_cannot_be_normalized_is_refused_naming_the_field(
    given: tuple[IdentifierType, str, str | bytes], field: str, reason: str
) -> None:
    kind, qualifier, value = given
    with pytest.raises(ValidationError) as refused:
        normalize(kind, value, qualifier, field=f"identifiers[3].{'value'}")
    assert refused.value.field == f"identifiers[3].{field}"
    assert reason in refused.value.reason


def test_a_perceptual_hash_is_kept_byte_for_byte() -> None:
    data = bytes(range(256)) * 2
    identifier = normalize(T.PERCEPTUAL_HASH, data, "PDQ")
    assert identifier == Identifier(T.PERCEPTUAL_HASH, "pdq", data)


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ValidationError, match="UTF-8"):
        normalize(T.PASSPORT, b"\xff\xfe", "XA")


def test_the_oprf_input_separates_fields_unambiguously() -> None:
    a = Identifier(T.WALLET, "BT", b"Cxxxxxxxxxxxxxxxxxxxxxx")
    b = Identifier(T.WALLET, "BTC", b"xxxxxxxxxxxxxxxxxxxxxx")
    assert a.oprf_input() != b.oprf_input()
