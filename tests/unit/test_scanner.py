"""The free-text scanner: what it catches, what it lets through, and what it never says.

Two tables read as its specification (OPSC art. 8: free text must not carry a
child's identifiers): CAUGHT rows are (case id, text, the kind that must be
found), LET_THROUGH rows are (case id, text in which nothing may be found).
Then offsets, including across Unicode folding; check_free_text with and
without allowed kinds; adversarial inputs that must scan in linear time; and
properties over arbitrary text: scan never raises, findings lie within bounds
and are sorted, and an error message never echoes what was found.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import ValidationError
from exchange.scanner import Finding, Identifier, check_free_text, scan

DATE = Identifier.FULL_DATE
EMAIL = Identifier.EMAIL
PHONE = Identifier.PHONE
ID = Identifier.ID_NUMBER
STREET = Identifier.STREET_ADDRESS

SUMMARY = "notice.case_referral.summary"


def kinds(text: str) -> set[Identifier]:
    return {finding.kind for finding in scan(text)}


def matched(text: str, kind: Identifier) -> list[str]:
    return [text[f.start : f.end] for f in scan(text) if f.kind is kind]


# --- what is caught ----------------------------------------------------------------------------

CAUGHT = [
    # FULL_DATE: day, month and year in the forms people write
    ("date-dmy-slash", "born 12/03/2012", DATE),
    ("date-dmy-dash", "seen on 12-03-2012 at school", DATE),
    ("date-dmy-dot", "12.03.2012", DATE),
    ("date-dmy-dot-spaced", "12. 03. 2012", DATE),
    ("date-us-month-first", "3/12/2012", DATE),
    ("date-iso", "2012-03-12", DATE),
    ("date-iso-slash", "2012/03/12", DATE),
    ("date-iso-in-timestamp", "logged 2012-03-12T10:00Z", DATE),
    ("date-day-month-name", "12 March 2012", DATE),
    ("date-month-name-day", "March 12, 2012", DATE),
    ("date-short-month", "12 Mar 2012", DATE),
    ("date-short-month-dot", "on 12 Mar. 2012", DATE),
    ("date-dashed-short-month", "12-Mar-2012", DATE),
    ("date-ordinal-of", "the 12th of March 2012", DATE),
    ("date-dob-keyword", "DOB: 12/03/2012", DATE),
    ("date-after-hyphenated-word", "DOB-12.03.2013", DATE),
    ("date-after-slashed-word", "dob/12/03/2013", DATE),
    ("date-iso-after-hyphenated-word", "born-2013-03-12", DATE),
    ("date-two-digit-year-after-dob", "date of birth 12.03.12", DATE),
    ("date-two-digit-year-after-born", "born 3/12/12", DATE),
    ("date-german", "am 12. März 2012", DATE),
    ("date-french", "né le 12 mars 2012", DATE),
    ("date-spanish", "12 de marzo de 2012", DATE),
    ("date-last-century", "01.01.1999", DATE),
    ("date-fullwidth-digits", "\uff12\uff10\uff11\uff12-\uff10\uff13-\uff11\uff12", DATE),
    ("date-arabic-indic-digits", "\u0661\u0662/\u0660\u0663/\u0662\u0660\u0661\u0662", DATE),
    ("date-zero-width-space-inside", "12\u200b/03/2012", DATE),
    # EMAIL
    ("email-plain", "write to jane.doe@example.org", EMAIL),
    ("email-plus-tag", "j.doe+case@mail.example.co.uk", EMAIL),
    ("email-bracketed", "jane [at] example [dot] org", EMAIL),
    ("email-parenthesised-at", "jane(at)example.org", EMAIL),
    ("email-mixed-brackets", "jane {at} example (dot) org", EMAIL),
    ("email-fullwidth-at", "jane\uff20example.org", EMAIL),
    ("email-internationalised", "jörg@exämple.de", EMAIL),
    ("email-punycode-tld", "user@example.xn--p1ai", EMAIL),
    ("email-digits-in-local-part", "duty12345@unit.example", EMAIL),
    # PHONE
    ("phone-uk-international", "+44 20 7946 0958", PHONE),
    ("phone-us-international", "+1-202-555-0143", PHONE),
    ("phone-area-code-in-parentheses", "(020) 7946 0958", PHONE),
    ("phone-trunk-zero-in-parentheses", "+44 (0)20 7946 0958", PHONE),
    ("phone-double-zero-prefix", "0049 30 123456", PHONE),
    ("phone-slash-after-area-code", "030/12345678", PHONE),
    ("phone-nine-digit-run", "call 123456789", PHONE),
    ("phone-dotted", "01.23.45.67.89", PHONE),
    ("phone-end-of-sentence", "Call 0207946095.", PHONE),
    ("phone-appended-numbers-cannot-hide-it", "0207946095 2012 2013 2014", PHONE),
    ("phone-zero-width-spaces", "0207\u200b946\u200b0958", PHONE),
    (
        "phone-fullwidth",
        "\uff0b\uff14\uff14 \uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff19",
        PHONE,
    ),
    ("phone-en-dashes", "0207\u2013946\u20130958", PHONE),
    # ID_NUMBER
    ("id-one-letter-seven-digits", "passport X1234567", ID),
    ("id-two-letters-seven-digits", "AB1234567", ID),
    ("id-three-letters-six-digits", "ABC123456", ID),
    ("id-one-letter-six-digits", "A123456", ID),
    ("id-lower-case", "ab1234567", ID),
    ("id-mrz-document-number", "L898902C3", ID),
    ("id-letters-and-digits-mixed", "C01X00T47", ID),
    ("id-swedish-personal-number", "850101-1234", ID),
    ("id-finnish-personal-code", "131052-308T", ID),
    ("id-us-social-security", "123-45-6789", ID),
    ("id-uk-national-insurance", "AB 12 34 56 C", ID),
    ("id-cyrillic-letters", "\u0410\u04121234567", ID),
    ("id-before-full-stop", "document no. AB1234567.", ID),
    # STREET_ADDRESS
    ("street-english", "12 Baker Street", STREET),
    ("street-house-letter-and-abbreviation", "221B Baker St", STREET),
    ("street-avenue", "1600 Pennsylvania Avenue", STREET),
    ("street-road-abbreviation", "lives at 5 Station Rd.", STREET),
    ("street-ordinal-name", "350 5th Avenue", STREET),
    ("street-the-mews", "5 The Mews", STREET),
    ("street-lower-case-type", "12 Baker street", STREET),
    ("street-french-number-first", "10 rue de Rivoli", STREET),
    ("street-french-type-first", "Rue de Rivoli 10", STREET),
    ("street-italian", "Via Roma 5", STREET),
    ("street-spanish-with-comma", "Calle Mayor, 3", STREET),
    ("street-portuguese", "Rua Augusta 10", STREET),
    ("street-polish", "ul. Marszałkowska 10", STREET),
    ("street-german-compound", "Hauptstraße 5", STREET),
    ("street-german-compound-ss", "Hauptstrasse 5", STREET),
    ("street-german-abbreviation", "Hauptstr. 5", STREET),
    ("street-german-gasse", "Kirchgasse 12", STREET),
    ("street-german-two-words", "Berliner Straße 12a", STREET),
    ("street-dutch", "Prinsengracht 263", STREET),
    ("street-swedish", "Drottninggatan 4", STREET),
    ("street-cyrillic-lookalike-letters", "12 Baker Str\u0435\u0435t", STREET),
    ("street-decomposed-accent", "12 Ame\u0301lie Street", STREET),
]


@pytest.mark.parametrize(("text", "kind"), [c[1:] for c in CAUGHT], ids=[c[0] for c in CAUGHT])
def test_caught(text: str, kind: Identifier) -> None:
    assert kind in kinds(text)


# --- what is let through -----------------------------------------------------------------------

LET_THROUGH = [
    # dates: nothing short of day, month and year
    ("year-alone", "in 2026"),
    ("month-and-year", "since March 2026"),
    ("age-range", "3 victims aged 6-11"),
    ("round-the-clock", "available 24/7"),
    ("times-of-day", "between 10:30 and 12:00"),
    ("fraction", "3/4 of the devices"),
    ("case-reference", "case XA-2026-0042"),
    ("case-reference-long-number", "see XB-2025-1234567"),
    ("version", "version 1.2.3"),
    ("version-like-two-digit-year", "build 10.12.14"),
    ("not-a-date", "item 31/31/2012"),
    ("year-range", "the 2012-2014 period, 1500 files"),
    # e-mail: plain English words are not an obfuscated address
    ("plain-words-at-dot", "look at the dot in the corner"),
    ("unbracketed-obfuscation", "jane at example dot com"),
    ("handle", "posted as @duty_desk"),
    ("no-top-level-domain", "admin@localhost"),
    # phone: short numbers, counts and years
    ("short-numbers", "unit 7, 3 victims"),
    ("counts", "12 images, 2 videos, 1500 files"),
    ("years-with-commas", "in 2012, 2013 and 2014"),
    ("eight-digits", "reference 12345678"),
    ("ipv4-address", "uploaded from 203.0.113.45"),
    ("amount", "EUR 1,500,000 seized"),
    ("article-references", "OPSC art. 8(2); Article 34 CRC; RFC 9162"),
    # identity numbers: digests, UUIDs, sizes and words with digits
    ("sha256-digest", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("sha1-digest-with-prefix", "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("upper-case-digest", "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"),
    ("uuid", "object 123e4567-e89b-12d3-a456-426614174000"),
    ("image-size", "images at 1920x1080 and 3840x2160"),
    ("words-with-digits", "H264, ISO 27001, x86_64, Password123, admin2024"),
    # street addresses: names without numbers, numbers without street names
    ("operation-name", "Operation Lantern"),
    ("street-level", "street-level imagery"),
    ("main-road", "near the main road"),
    ("streets-away", "5 streets away"),
    ("on-the-way", "3 victims on the way home"),
    ("via-lower-case", "sent via Telegram 3 times"),
    ("court", "case 12 Crown Court"),
    ("season-and-year", "Spring 2026"),
    # ordinary case prose
    ("summary", "Material traced to a server hosted in the recipient's territory."),
    ("empty", ""),
]


@pytest.mark.parametrize("text", [c[1] for c in LET_THROUGH], ids=[c[0] for c in LET_THROUGH])
def test_let_through(text: str) -> None:
    assert scan(text) == []


def test_the_tables_cover_every_kind() -> None:
    per_kind = {kind: sum(1 for c in CAUGHT if c[2] is kind) for kind in Identifier}
    assert min(per_kind.values()) >= 5
    assert len(CAUGHT) >= 25
    assert len(LET_THROUGH) >= 25
    assert len({c[0] for c in CAUGHT + LET_THROUGH}) == len(CAUGHT) + len(LET_THROUGH)


# --- offsets -----------------------------------------------------------------------------------

# (case id, text, kind, exactly what text[start:end] must be)
SPANS = [
    ("phone-in-a-sentence", "Call +44 20 7946 0958 now", PHONE, "+44 20 7946 0958"),
    ("phone-closing-parenthesis", "tel. (0207946095) only", PHONE, "(0207946095)"),
    ("phone-glued-group-dropped", "0207 946 0958 12abc", PHONE, "0207 946 0958"),
    ("email-in-a-sentence", "Contact: jane.doe@example.org.", EMAIL, "jane.doe@example.org"),
    ("date-without-keyword", "born on 12/03/2012 in", DATE, "12/03/2012"),
    ("date-two-digit-year", "DOB 12.03.12", DATE, "12.03.12"),
    ("date-after-hyphenated-word", "DOB-12.03.2013 noted", DATE, "12.03.2013"),
    ("street-in-a-sentence", "lives at 221B Baker St, London", STREET, "221B Baker St"),
    ("id-in-a-sentence", "passport AB1234567 expired", ID, "AB1234567"),
    # offsets refer to the original text, whatever folding did
    (
        "fullwidth-digits",
        "tel \uff10\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff19\uff15 ok",
        PHONE,
        "\uff10\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff19\uff15",
    ),
    ("zero-width-spaces-inside", "x 0207\u200b946\u200b0958 y", PHONE, "0207\u200b946\u200b0958"),
    ("zero-width-spaces-before", "\u200b\u200b\u200bAB1234567", ID, "AB1234567"),
    ("ligature-before", "\ufb01le 0207946095", PHONE, "0207946095"),
    ("decomposed-accent-inside", "at 12 Ame\u0301lie Street.", STREET, "12 Ame\u0301lie Street"),
    ("leading-combining-mark", "\u0301\u0301 0207946095", PHONE, "0207946095"),
    ("expansion-inside", "call 020\u246a7946095 now", PHONE, "020\u246a7946095"),
]


@pytest.mark.parametrize(
    ("text", "kind", "expected"), [c[1:] for c in SPANS], ids=[c[0] for c in SPANS]
)
def test_offsets_point_into_the_original_text(text: str, kind: Identifier, expected: str) -> None:
    assert matched(text, kind) == [expected]


def test_findings_are_sorted_and_overlapping_kinds_all_reported() -> None:
    text = "DOB 12/03/2012, id 850101-1234, 12 Baker Street"
    findings = scan(text)
    assert [f.kind for f in findings] == [DATE, PHONE, ID, STREET]
    assert findings == sorted(findings, key=lambda f: (f.start, f.end))
    phone, number = findings[1], findings[2]
    assert (phone.start, phone.end) == (number.start, number.end)
    assert text[number.start : number.end] == "850101-1234"


def test_overlapping_findings_of_one_kind_are_merged() -> None:
    # Both the English and the French street rule match "10 Avenue Road".
    assert scan("10 Avenue Road") == [Finding(STREET, 0, 14)]


# --- check_free_text ---------------------------------------------------------------------------


def test_clean_text_passes() -> None:
    check_free_text("Material traced to a server in the recipient's territory.", SUMMARY)


def test_the_reason_names_field_kind_and_span() -> None:
    text = "Contact us: jane.do@example.org"
    with pytest.raises(ValidationError) as caught:
        check_free_text(text, SUMMARY)
    assert caught.value.field == SUMMARY
    assert caught.value.reason == (
        "holds what looks like an e-mail address (characters 12-31); "
        "personal identifiers are refused here"
    )
    assert str(caught.value) == f"{SUMMARY}: {caught.value.reason}"


@pytest.mark.parametrize("text", [c[1] for c in CAUGHT], ids=[c[0] for c in CAUGHT])
def test_the_reason_never_echoes_the_identifier(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_free_text(text, SUMMARY)
    first = scan(text)[0]
    assert first.kind.value in caught.value.reason
    assert text[first.start : first.end] not in str(caught.value)


def test_allowed_kinds_pass() -> None:
    channel = "duty@ncu.xa.example or +44 20 7946 0958"
    check_free_text(channel, "functional_channel", frozenset({EMAIL, PHONE}))
    check_free_text("Rue de Rivoli 10", "premises.location_reference", frozenset({STREET}))


@pytest.mark.parametrize(
    ("text", "allowed", "refused"),
    [
        ("duty@ncu.xa.example", frozenset({PHONE}), EMAIL),
        ("+44 20 7946 0958", frozenset({EMAIL}), PHONE),
        ("duty@ncu.xa.example, passport AB1234567", frozenset({EMAIL, PHONE}), ID),
        ("12 Baker Street, born 12/03/2012", frozenset({STREET}), DATE),
        ("DOB 12/03/2012, 12 Baker Street", frozenset({DATE}), STREET),
    ],
    ids=[
        "email-where-phone",
        "phone-where-email",
        "id-in-channel",
        "date-in-premises",
        "first-refused-not-first-found",
    ],
)
def test_kinds_not_allowed_are_refused(
    text: str, allowed: frozenset[Identifier], refused: Identifier
) -> None:
    with pytest.raises(ValidationError, match=re.escape(refused.value)):
        check_free_text(text, "functional_channel", allowed)


def test_digits_of_an_allowed_email_do_not_read_as_other_kinds() -> None:
    for address in ("duty12345@unit.example", "ab1234567@unit.example", "x@ab1234567.example"):
        assert kinds(address) == {EMAIL}
        check_free_text(address, "functional_channel", frozenset({EMAIL}))


# --- cost: linear in the text, whatever the text -----------------------------------------------

ADVERSARIAL = [
    ("one-long-digit-run", "1" * 1_000_000),
    ("address-fragments", "a@" * 300_000),
    ("short-numbers", "12 " * 300_000),
    ("digits-and-dashes", "1-" * 500_000),
    ("digits-and-dots", "1." * 500_000),
    ("open-parentheses", "1 (" * 330_000),
    ("dotted-words", "a." * 500_000),
    ("bracketed-at", "a [at] " * 150_000),
    ("street-type-words", "Via " * 250_000),
    ("day-month-pairs", "12 Mar " * 150_000),
    ("hex-then-letter", "a" * 1_000_000 + "z"),
    ("digits-then-letter", "1" * 999_999 + "z"),
    ("fullwidth-digits", "\uff11" * 1_000_000),
    ("combining-marks", "e\u0301" * 200_000),
    ("zero-width-spaces", "1\u200b" * 500_000),
]


@pytest.mark.parametrize("text", [c[1] for c in ADVERSARIAL], ids=[c[0] for c in ADVERSARIAL])
def test_adversarial_input_scans_in_linear_time(text: str) -> None:
    # No timing assertion: a quadratic scan would hang here, and pytest's
    # timeout would stop it. Each of these takes well under a second.
    findings = scan(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)


def test_a_megabyte_of_digits_is_one_phone_number() -> None:
    assert scan("1" * 1_000_000) == [Finding(PHONE, 0, 1_000_000)]


# --- properties --------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(exclude_categories=[]), max_size=200)  # surrogates too
IDENTIFIERS = st.sampled_from([c[1] for c in CAUGHT])
FILLER = st.text(st.characters(codec="utf-8"), max_size=20)


@settings(derandomize=True, database=None, max_examples=200)
@given(text=ANY_TEXT)
def test_findings_lie_within_the_text_sorted(text: str) -> None:
    findings = scan(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)
    assert findings == sorted(
        findings, key=lambda f: (f.start, f.end, list(Identifier).index(f.kind))
    )
    for kind in Identifier:
        same = [f for f in findings if f.kind is kind]
        assert all(a.end <= b.start for a, b in itertools.pairwise(same))


@settings(derandomize=True, database=None, max_examples=200)
@given(text=st.builds(lambda a, b, c: a + " " + b + " " + c, FILLER, IDENTIFIERS, FILLER))
def test_an_identifier_in_any_surroundings_is_refused_without_echo(text: str) -> None:
    findings = scan(text)
    assert findings  # an identifier stays one whatever surrounds it
    first = findings[0]
    with pytest.raises(ValidationError) as caught:
        check_free_text(text, SUMMARY)
    assert caught.value.reason.startswith(f"holds what looks like {first.kind.value} ")
    assert text[first.start : first.end] not in str(caught.value)


@settings(derandomize=True, database=None, max_examples=200)
@given(text=ANY_TEXT)
def test_check_free_text_never_echoes_what_it_found(text: str) -> None:
    findings = scan(text)
    if not findings:
        check_free_text(text, SUMMARY)
        return
    with pytest.raises(ValidationError) as caught:
        check_free_text(text, SUMMARY)
    first = findings[0]
    assert text[first.start : first.end] not in caught.value.reason
