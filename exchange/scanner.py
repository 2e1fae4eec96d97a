"""Find obvious personal identifiers in free text (OPSC art. 8: protect the child's identity).

Notice types carry no field for a victim's name, birth date or address; the
free-text fields they do have (summaries, notes, references) must not carry
such identifiers either. `scan` finds what looks like one; `check_free_text`
refuses a text with a finding of a kind its field does not exist for (a
contact point's functional channel may hold an e-mail address or a phone
number, a premises location reference a street address).

The target is the *obvious* identifier typed in good faith: a date of birth
pasted into a summary, a parent's phone number in a note. The scanner is no
defence against an author set on leaking (a number can always be spelt out),
and where a pattern is as likely to be ordinary case prose it lets the text
through: refusing everyday wording teaches users to write around the check.

What is caught (C), what is deliberately let through (L), and why:

FULL_DATE
    C: day, month and year together: 12/03/2012, 12-03-2012, 12.03.2012,
       "12. 03. 2012", month-first 3/12/2012, 2012-03-12, 2012/03/12,
       2012.03.12 (also in a timestamp, 2012-03-12T10:00Z), "12 March 2012",
       "12th of March 2012", "12 Mar. 2012", "12-Mar-2012", "March 12, 2012",
       with month names in English, French, German, Spanish, Italian, Dutch
       and Portuguese ("12. März 2012", "12 de marzo de 2012"). The numbers
       must make a date (month 1-12 and day 1-31, either way round) and the
       year must lie in 1900-2099. A two-digit year counts only right after a
       birth keyword ("born", "DOB", "date of birth", "née", "geb."), as in
       "DOB 12.03.12". Words around the date do not matter otherwise.
       Why: free text never needs a full date. Dates that matter (deadlines,
       travel windows) travel in structured fields, and a full date in a text
       about a child is most likely a date of birth.
    L: a year ("2026"), a month and year ("March 2026"), age ranges ("aged
       6-11"), times ("24/7", "10:30"), fractions and counts ("3/4 of the
       devices"), versions ("1.2.3"; "10.12.14", since a two-digit year
       without a birth keyword reads as a version as often as a date), case
       references ("XA-2026-0042"), and numbers that make no date.

EMAIL
    C: local@domain.tld, with internationalised or punycode domains, and the
       bracketed obfuscations "name [at] domain [dot] com", "name(at)domain.com",
       "name {at} domain (dot) org" (any of [] () {} <>).
    L: the plain-word form "name at domain dot com": it cannot be told apart
       from English ("look at the dot in the corner" would read as
       look@the.in), so it is deliberately not caught. "@handle" and a host
       without a top-level domain ("admin@localhost") are no addresses.

PHONE
    C: digit groups joined by single separators (a space, ".", "-", "/", " - ",
       or parentheses around an area code), optionally led by "+" or "(", with
       nine digits or more: "+44 20 7946 0958", "+1-202-555-0143", "(020) 7946
       0958", "+44 (0)20 7946 0958", "0049 30 123456", "030/12345678",
       "123456789". Nine digits is about the shortest national number with
       its area code; there is no upper bound, so appending numbers cannot
       hide one.
    L: years, counts and short numbers ("unit 7", "3 victims", "1500 files"),
       numbers separated by commas ("2012, 2013"), "24/7", and digits glued to
       letters or to "@" (they belong to a document number or an e-mail
       address, which have rules of their own). Two separators in a row
       (". ", "--") end a run.

ID_NUMBER
    C: passport- and identity-document-like tokens: one to three letters and
       six to nine digits ("X1234567", "AB1234567"); 8-12 letters and digits
       with at least five digits and a letter, no spaces ("L898902C3",
       "C01X00T47"); national-number digit groups 6+4 joined by "-", "+" or
       "A" ("850101-1234", "131052-308T") and 3-2-4 ("123-45-6789"); the UK
       national insurance number ("AB 12 34 56 C"). Letters of any script
       count, so a Cyrillic capital A does not hide a passport number.
    L: case references XX-YYYY-N... (two capitals, a year, up to eight
       digits); hexadecimal digests of more than 20 characters in one case
       (a SHA-256 identifies bytes, not a person); UUIDs; image sizes
       ("1920x1080"); IPv4 addresses (not one of these five kinds: they name
       a connection, not a child); and words with fewer than five digits
       ("H264", "x86_64", "Password123").

STREET_ADDRESS
    C: house number, capitalised name and English street type ("12 Baker
       Street", "221B Baker St", "1600 Pennsylvania Avenue", "350 5th
       Avenue", "5 The Mews"); house number, French street type and name
       ("10 rue de Rivoli", "3 avenue Foch"); Romance or Polish street type,
       name and house number ("Rue de Rivoli 10", "Via Roma 5", "Calle Mayor,
       3", "Rua Augusta 10", "ul. Marszałkowska 10"); German, Dutch and
       Nordic street words, alone or ending a compound, and a house number
       ("Hauptstraße 5", "Hauptstrasse 5", "Hauptstr. 5", "Kirchgasse 12",
       "Berliner Straße 12a", "Prinsengracht 263", "Drottninggatan 4").
    L: names without a number ("Operation Lantern", "main road"),
       "street-level", "5 streets away", a number before lower-case words ("3
       victims on the way", "sent via Telegram 3 times"), "Court" (too common
       in legal text: "12 Crown Court"), and one-word addresses without a
       street word ("Damrak 1"), which read as a name and a count.

Normalisation and offsets. The rules run on a folded copy of the text: each
character, with the combining marks that follow it, is normalised to NFKC
(full-width forms, ligatures, circled and mathematical digits and letters
become plain ones), decimal digits of every script become ASCII digits, dashes
and the minus sign become "-", space separators become " ", a short list of
Cyrillic and Greek letters drawn like Latin ones become Latin, and format
characters (zero-width spaces, soft hyphens, bidi controls) and leftover
combining marks are dropped, so a zero-width space inside a phone number does
not hide it. Each folded character remembers the span of original characters
it came from; a finding runs from the start of its first folded character's
span to the end of its last one's. Offsets are therefore Python slice bounds
into the text passed in (`text[finding.start:finding.end]`), widened to whole
original characters where one folded into several.

Exempt tokens (case references, UUIDs, digests, IPv4 addresses, image sizes)
are blanked in the folded copy before the date, phone, identity-number and
address rules run, so their digits cannot read as anything else. E-mail
addresses are looked for before the blanking.

Cost. Each pattern starts with a character class (so the regex engine skips
positions that cannot start a match in C), anchors itself to the start of a
token with a look-behind, and has bounded or possessive repetition: none can
backtrack catastrophically, and a scan is linear in the text. A rule is not
run at all when the text lacks what every match of it holds (enough digits, a
separator, a month name, a street word). A megabyte of digits, of "a@" or of
"12 " scans in a fraction of a second.

Known false positives, accepted: a year range or a date followed by a count
("2010-2012 1500 files"), numbers grouped by spaces or dots ("123 456 789",
"1.500.000.000") and hyphenated ISBNs read as phone numbers; codes glued to
five digits or more ("ISO27001", "EUR250000", short hex strings such as
abbreviated commit hashes) read as document numbers; digits in URLs are
scanned like any other; a number, capitalised words and a street type in
title case ("In 2026 Oxford Street") or a sentence opening with a Romance
street type ("Via Telegram 3 accounts") read as addresses.

Known false negatives, accepted: spelt-out numbers and dates; dates written
with spaces only ("12 03 2012"), without separators ("20120312"), with mixed
separators, two-digit years without a birth keyword, years outside
1900-2099; "name at domain dot com" and "name @ domain.com"; phone numbers of
fewer than nine digits or with letters for digits; spaced passport numbers
("AB 1234567"); all-lower-case addresses ("12 baker street"), addresses
without a number, Danish "-gade" and Dutch "-kade" (too many English words
end so: "brigade", "blockade"); look-alike letters outside the short list.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress, repeat

from exchange.errors import ValidationError

__all__ = ["Finding", "Identifier", "check_free_text", "scan"]


class Identifier(enum.Enum):
    """A kind of personal identifier; the value completes "holds what looks like ..."."""

    FULL_DATE = "a full calendar date (possibly a date of birth)"
    EMAIL = "an e-mail address"
    PHONE = "a phone number"
    ID_NUMBER = "a passport- or identity-document-like number"
    STREET_ADDRESS = "a street address"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One identifier found in a text.

    Attributes:
        kind: what it looks like.
        start: offset of its first character in the scanned text.
        end: offset just past its last character (`text[start:end]` is the match).
    """

    kind: Identifier
    start: int
    end: int


def scan(text: str) -> list[Finding]:
    """Find the obvious personal identifiers in `text`.

    Args:
        text: any text; it is not changed.

    Returns:
        All findings, ordered by start (then end, then kind). Overlapping
        findings of different kinds are all reported; overlapping findings of
        one kind are merged into one.
    """
    if not text:
        return []
    folded = _fold(text)
    spans: dict[Identifier, list[Span]] = {kind: [] for kind in Identifier}
    digits = _digits(folded.text)
    if digits:  # every rule but the e-mail one needs digits
        masked = _mask(folded.text)
        lowered = masked.lower()
        for rule in _RULES:
            if rule.may_match(lowered, digits):
                for match in rule.pattern.finditer(masked):
                    spans[rule.kind].extend(rule.accept(match))
    if "@" in folded.text or _BRACKETED_AT.search(folded.text):
        # E-mail addresses are not exempt from anything: they are looked for
        # in the text before blanking.
        spans[Identifier.EMAIL].extend(m.span() for m in _EMAIL.finditer(folded.text))
    findings = [
        Finding(kind, *folded.original(start, end))
        for kind, found in spans.items()
        for start, end in _merge(found)
    ]
    findings.sort(key=lambda f: (f.start, f.end, _ORDER[f.kind]))
    return findings


def check_free_text(text: str, field: str, allowed: frozenset[Identifier] = frozenset()) -> None:
    """Refuse `text` if it holds a personal identifier of a kind `field` is not for.

    The reason names the kind and the character span, never the matched text:
    error messages end up in logs and in replies to peers, and must not echo
    personal data (OPSC art. 8).

    Args:
        text: the free text of the field.
        field: the field's dotted path, for the error.
        allowed: kinds the field exists to carry (e.g. EMAIL and PHONE for a
            contact point's functional channel).

    Raises:
        ValidationError: for the first finding whose kind is not allowed, e.g.
            "holds what looks like an e-mail address (characters 12-31);
            personal identifiers are refused here". The characters are the
            finding's slice bounds in `text`.
    """
    for finding in scan(text):
        if finding.kind not in allowed:
            raise ValidationError(
                field,
                f"holds what looks like {finding.kind.value} "
                f"(characters {finding.start}-{finding.end}); "
                "personal identifiers are refused here",
            )


Span = tuple[int, int]
_ORDER = {kind: i for i, kind in enumerate(Identifier)}


def _merge(spans: list[Span]) -> Iterator[Span]:
    """Overlapping spans of one kind, joined."""
    current: Span | None = None
    for start, end in sorted(spans):
        if current is not None and start < current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current


def _is_word(ch: str) -> bool:
    r"""What `\w` matches: a letter or digit of any script, or "_"."""
    return ch.isalnum() or ch == "_"


# --- folding -----------------------------------------------------------------------------------

# Letters of other scripts drawn like Latin ones: a small hand-picked subset of
# the Unicode confusables (UTS #39), enough that "Street" spelt with a Cyrillic
# "e" is still a street; plus a dot and slashes that NFKC leaves alone.
_CONFUSABLES = dict(
    [
        # Cyrillic capitals
        *zip(
            "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0423"
            "\u0406\u0408\u0405",
            "ABEKMHOPCTXYIJS",
            strict=True,
        ),
        # Cyrillic small letters
        *zip(
            "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u04bb"
            "\u04cf\u051b\u051d",
            "aeopcyxijsdhlqw",
            strict=True,
        ),
        # Greek
        *zip(
            "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4"
            "\u03a5\u03a7\u03bf\u03bd",
            "ABEZHIKMNOPTYXov",
            strict=True,
        ),
        # Turkish dotted capital I and dotless small i (case-insensitive rules
        # would match them, lower-casing would not)
        *zip("\u0130\u0131", "Ii", strict=True),
        # ideographic full stop, fraction and division slashes
        *zip("\u3002\u2044\u2215", ".//", strict=True),
    ]
)


@functools.lru_cache(maxsize=4096)
def _fold_cluster(cluster: str) -> str:
    """A character and its combining marks, folded as the module docstring says."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", cluster):
        category = unicodedata.category(ch)
        if category == "Nd":
            out.append(str(unicodedata.decimal(ch)))
        elif category[0] == "M" or category == "Cf":
            continue
        elif category == "Zs":
            out.append(" ")
        elif category in ("Zl", "Zp"):
            out.append("\n")
        elif category == "Pd" or ch == "\u2212":
            out.append("-")
        else:
            out.append(_CONFUSABLES.get(ch, ch))
    return "".join(out)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


_TABLE_LIMIT = 1 << 16  # code points remembered at most, so memory stays bounded


class _Table(dict[int, str]):
    """A `str.translate` table, filled on first use of each code point."""

    def __init__(self, entry: Callable[[str], str]) -> None:
        super().__init__()
        self._entry = entry

    def __missing__(self, codepoint: int) -> str:
        if len(self) >= _TABLE_LIMIT:
            self.clear()
        value = self[codepoint] = self._entry(chr(codepoint))
        return value


def _character_class(ch: str) -> str:
    # "r": folds to one character, offsets stay put; "x": folds to none or to
    # several; "m": a combining mark, folded with the character before it.
    if _is_mark(ch):
        return "m"
    return "r" if len(_fold_cluster(ch)) == 1 else "x"


_CLASS_TABLE = _Table(_character_class)  # r: regular, x: irregular, m: combining mark
_PIECE_TABLE = _Table(_fold_cluster)  # every character folded by itself


@dataclasses.dataclass(frozen=True)
class _Folded:
    """Folded text and, per folded character, the original span it came from."""

    text: str
    starts: array[int] | None = None  # None: offsets are the same in both texts
    ends: array[int] | None = None

    def original(self, start: int, end: int) -> Span:
        """The original span of the folded span [start, end), end > start."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def _fold(text: str) -> _Folded:
    # ASCII is its own NFKC form and holds no format characters, and no dashes
    # or spaces but "-" and " ": nothing to fold.
    if text.isascii():
        return _Folded(text)
    classes = text.translate(_CLASS_TABLE)
    if "m" not in classes:
        if "x" not in classes:
            return _Folded(text.translate(_PIECE_TABLE))  # one for one: the same offsets
        # Every character is a cluster of its own.
        pieces = list(map(_PIECE_TABLE.__getitem__, map(ord, text)))
        lengths = list(map(len, pieces))
        if max(lengths) <= 1:  # characters dropped (zero-width ones), none expanded
            starts = array("q", compress(range(len(text)), lengths))
        else:
            starts = array("q", chain.from_iterable(map(repeat, range(len(text)), lengths)))
        return _Folded("".join(pieces), starts, array("q", map((1).__add__, starts)))
    # Clusters: a cluster starts at every character but a combining mark (and at
    # a mark that opens the text). Each is folded by itself; its folded
    # characters all map back to its whole span. No Python loop per character.
    heads = list(compress(range(len(text)), map("m".__ne__, classes)))
    if not heads or heads[0] != 0:
        heads.insert(0, 0)
    tails = [*heads[1:], len(text)]
    pieces = list(map(_fold_cluster, map(text.__getitem__, map(slice, heads, tails))))
    lengths = list(map(len, pieces))
    starts = array("q", chain.from_iterable(map(repeat, heads, lengths)))
    ends = array("q", chain.from_iterable(map(repeat, tails, lengths)))
    return _Folded("".join(pieces), starts, ends)


# --- exempt tokens -----------------------------------------------------------------------------
#
# Every pattern in this module starts with a character class and tests the
# character before it with a look-behind placed after it: the regex engine then
# skips the positions that cannot start a match in its fast C loop. Repetitions
# that need no second try are possessive (`*+`) or atomic (`(?>...)`).

_BLANK = "\x00"  # neither a word character, a space nor a separator of any rule

_CASE_REFERENCE = re.compile(r"[A-Z](?<![\w-][A-Z])[A-Z]-(?:19|20)[0-9]{2}-[0-9]{1,8}(?![\w-])")
_HEX_TOKEN = re.compile(
    r"""[0-9a-fA-F](?<!\w[0-9a-fA-F])
        (?=[0-9a-fA-F]{7}|[0-9]{0,4}[.xX])  # a quick test before the branches
        (?:(?P<uuid>(?<!-.)[0-9a-fA-F]{7}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![\w-]))
          |(?P<digest>[0-9a-fA-F]{20,}+(?!\w))
          |(?P<ipv4>(?<=[0-9])(?<!\..)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9]))
          |(?P<size>(?<=[0-9])[0-9]{1,4}[xX][0-9]{2,5}(?!\w))
        )""",
    re.VERBOSE,
)


def _is_exempt(match: re.Match[str]) -> bool:
    token = match.group()
    if match.lastgroup == "digest":
        # More than 20 hex digits of one case, letters and digits mixed. A run
        # of decimal digits alone is a number, not a digest: it stays visible.
        return (
            token in (token.lower(), token.upper())
            and any(c.isalpha() for c in token)
            and any(c.isdigit() for c in token)
        )
    if match.lastgroup == "ipv4":
        return all(int(octet) <= 255 for octet in token.split("."))
    return True


def _mask(text: str) -> str:
    """`text` with exempt tokens blanked, character for character."""
    spans = [m.span() for m in _CASE_REFERENCE.finditer(text)]
    spans += [m.span() for m in _HEX_TOKEN.finditer(text) if _is_exempt(m)]
    if not spans:
        return text
    parts: list[str] = []
    done = 0
    for a, b in _merge(spans):
        parts.extend((text[done:a], _BLANK * (b - a)))
        done = b
    parts.append(text[done:])
    return "".join(parts)


# --- rules -------------------------------------------------------------------------------------


def _whole(match: re.Match[str]) -> Iterator[Span]:
    yield match.span()


@dataclasses.dataclass(frozen=True)
class _Rule:
    """One pattern of one kind, and a cheap test of whether it can match at all.

    Attributes:
        kind: what a match of `pattern` looks like.
        pattern: run over the folded text with exempt tokens blanked.
        accept: the spans a match stands for (none if a check in Python fails).
        needs: substrings of the lower-cased text, one of which every match
            holds; if none is there the pattern is not run (empty: no test).
        digits: the fewest digits a text holding a match has.
    """

    kind: Identifier
    pattern: re.Pattern[str]
    accept: Callable[[re.Match[str]], Iterable[Span]] = _whole
    needs: tuple[str, ...] = ()
    digits: int = 1

    def may_match(self, lowered: str, digits: int) -> bool:
        """False if a text (lower-cased, holding `digits` digits) cannot hold a match."""
        return digits >= self.digits and (
            not self.needs or any(needed in lowered for needed in self.needs)
        )


def _digits(text: str) -> int:
    return sum(map(text.count, "0123456789"))


def _words(*lines: str) -> tuple[str, ...]:
    return tuple(word for line in lines for word in line.split())


# FULL_DATE ------------------------------------------------------------------------------------

_MONTHS = frozenset(
    _words(
        # English, full and short
        "january february march april may june july august september october november",
        "december jan feb mar apr jun jul aug sep sept oct nov dec",
        # French
        "janvier février fevrier mars avril mai juin juillet août aout septembre octobre",
        "novembre décembre decembre",
        # German
        "januar jänner februar märz maerz april mai juni juli august september oktober",
        "november dezember",
        # Spanish
        "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre",
        "noviembre diciembre",
        # Italian
        "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre",
        "novembre dicembre",
        # Dutch
        "januari februari maart april mei juni juli augustus september oktober november",
        "december",
        # Portuguese
        "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro",
        "dezembro",
    )
)

_BIRTH_KEYWORD = re.compile(
    r"""(?i:\b(?:born(?:\s{1,3}on)?|d\.?o\.?b\.?|date\s{1,3}of\s{1,3}birth
               |birth\s{0,3}date|née?|geb\.|geboren(?:\s{1,3}am)?))
        \s{0,3}[:-]?\s{0,3}\Z""",
    re.VERBOSE,
)
_KEYWORD_REACH = 40  # longer than any keyword with its spaces and colon


def _is_day_month(a: int, b: int) -> bool:
    """True if (a, b) is (day, month) or (month, day)."""
    return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)


def _numeric_date(match: re.Match[str]) -> Iterator[Span]:
    start = match.start()
    if not _is_day_month(int(match["a"]), int(match["b"])):
        return
    if len(match["year"]) == 4 or _BIRTH_KEYWORD.search(
        match.string, max(0, start - _KEYWORD_REACH), start
    ):
        yield match.span()


def _iso_date(match: re.Match[str]) -> Iterator[Span]:
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    if 1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31:
        yield match.span()


def _named_month_date(match: re.Match[str]) -> Iterator[Span]:
    if match["month"].casefold() in _MONTHS and 1 <= int(match["day"]) <= 31:
        yield match.span()


_YEAR = r"(?:19|20)[0-9]{2}"
_NO_MORE_DIGITS = r"(?![0-9]|[./-][0-9])"
_SEPARATORS = ("/", ".", "-")

_DATE_RULES = [
    # 12/03/2012, 12-03-2012, 12.03.2012, 12. 03. 2012, 3/12/2012; DOB 12.03.12,
    # DOB-12.03.2012 (a separator after a word starts a date; after a digit it does not)
    _Rule(
        Identifier.FULL_DATE,
        re.compile(
            r"(?P<a>[0-9](?<![0-9][0-9])(?<![0-9][./-][0-9])[0-9]?)"
            r"(?P<sep>[./-])[ ]?(?P<b>[0-9]{1,2})"
            rf"(?P=sep)[ ]?(?P<year>{_YEAR}|[0-9]{{2}}){_NO_MORE_DIGITS}"
        ),
        _numeric_date,
        needs=_SEPARATORS,
        digits=4,
    ),
    # 2012-03-12, 2012/03/12, 2012.03.12, 2012-03-12T10:00Z
    _Rule(
        Identifier.FULL_DATE,
        re.compile(
            r"(?P<year>[12](?<![0-9][12])(?<![0-9][./-][12])[0-9]{3})(?P<sep>[./-])"
            rf"(?P<month>[0-9]{{1,2}})(?P=sep)(?P<day>[0-9]{{1,2}}){_NO_MORE_DIGITS}"
        ),
        _iso_date,
        needs=_SEPARATORS,
        digits=6,
    ),
    # 12 March 2012, 12th of March 2012, 12-Mar-2012, 12. März 2012, 12 de marzo de 2012
    _Rule(
        Identifier.FULL_DATE,
        re.compile(
            rf"""(?P<day>[0-9](?<![0-9][0-9])[0-9]?)(?=[^\W\d_]|[ .\-/]{{1,4}}[^\W\d_])
                (?i:st|nd|rd|th|er)?\.?
                (?:\s{{1,3}}(?:(?i:of|de)\s{{1,3}})?|[-/.])?
                (?P<month>[^\W\d_]{{3,10}}+)\.?
                (?:,?\s{{1,3}}(?:(?i:de)\s{{1,3}})?|[-/.])
                {_YEAR}(?![0-9])""",
            re.VERBOSE,
        ),
        _named_month_date,
        needs=tuple(_MONTHS),
        digits=5,
    ),
    # March 12, 2012; Mar. 12 2012; March 12th, 2012
    _Rule(
        Identifier.FULL_DATE,
        re.compile(
            rf"""(?P<month>[^\W\d_](?<![^\W\d_]{{2}})[^\W\d_]{{2,9}}+)\.?
                \s{{1,3}}(?P<day>[0-9]{{1,2}})(?i:st|nd|rd|th)?
                (?:,\s{{0,3}}|\s{{1,3}}){_YEAR}(?![0-9])""",
            re.VERBOSE,
        ),
        _named_month_date,
        needs=tuple(_MONTHS),
        digits=5,
    ),
]

# EMAIL ----------------------------------------------------------------------------------------

_OPEN, _CLOSE = r"[\[({<]", r"[\])}>]"
_BRACKETED_AT = re.compile(rf"{_OPEN}\s{{0,2}}(?i:at|@)\s{{0,2}}{_CLOSE}")
_EMAIL = re.compile(
    rf"""[\w.+%-](?<![\w.+%-]{{2}})[\w.+%-]{{0,63}}
        (?:@|\s{{0,3}}{_OPEN}\s{{0,2}}(?i:at|@)\s{{0,2}}{_CLOSE}\s{{0,3}})
        (?:[\w-]{{1,63}}(?:\.|\s{{0,3}}{_OPEN}\s{{0,2}}(?i:dot|\.)\s{{0,2}}{_CLOSE}\s{{0,3}})){{1,8}}
        (?:[^\W\d_]{{2,63}}|(?i:xn--)[\w-]{{1,59}})(?![\w-])""",
    re.VERBOSE,
)

# PHONE ----------------------------------------------------------------------------------------

_PHONE_DIGITS = 9


def _glued(text: str, end: int) -> bool:
    """True if the digits ending at `end` run on into a word or an e-mail address."""
    after = text[end : end + 2]
    if not after:
        return False
    if after[0] == "@" or _is_word(after[0]):
        return True
    return after[0] in ".-/" and len(after) == 2 and (after[1] == "@" or _is_word(after[1]))


def _phone(match: re.Match[str]) -> Iterator[Span]:
    text = match.string
    start, end = match.span()
    if _glued(text, end):
        # The last group belongs to a word or an address: the number ends before it.
        end = match.start("joiner")
        if end < 0:
            return
    number = text[start:end]
    if _digits(number) < _PHONE_DIGITS:
        return
    if text[end : end + 1] == ")" and number.count("(") > number.count(")"):
        end += 1
    yield start, end


_PHONE_RULE = _Rule(
    Identifier.PHONE,
    re.compile(
        r"""[+(0-9](?<![\w@][+(0-9])
            (?=(?:[ ()+./-]{0,4}[0-9]){8})     # a quick test: nine digits can follow
            (?:(?<=[0-9])|\+?[0-9])[0-9]*+      # the first group, after "+", "(" or "(+"
            (?>(?P<joiner>\)[ -]?|[ ]?\(|[ ]-[ ]|[ ./-])[0-9]++)*+
        """,
        re.VERBOSE,
    ),
    _phone,
    digits=_PHONE_DIGITS,
)


# ID_NUMBER ------------------------------------------------------------------------------------

_PASSPORT = re.compile(r"[^\W\d_]{1,3}[0-9]{6,9}")


def _document_token(match: re.Match[str]) -> Iterator[Span]:
    token = match.group()
    if _PASSPORT.fullmatch(token) or (
        len(token) >= 8 and _digits(token) >= 5 and any(c.isalpha() for c in token)
    ):
        yield match.span()


_ID_END = r"(?![\w@]|[.\-/]\w)"

_ID_RULES = [
    # X1234567, AB1234567 (1-3 letters, 6-9 digits); L898902C3, C01X00T47 (8-12
    # letters and digits, five digits or more): one token of 7-12, checked
    _Rule(
        Identifier.ID_NUMBER,
        re.compile(r"[^\W_](?<![\w@][^\W_])(?=[^\W\d_]{0,10}+[0-9])[^\W_]{6,11}+" + _ID_END),
        _document_token,
        digits=5,
    ),
    # 850101-1234, 850101+1234, 131052-308T, 123-45-6789
    _Rule(
        Identifier.ID_NUMBER,
        re.compile(
            r"[0-9](?<![\w@][0-9])(?<![0-9][.\-/][0-9])"
            r"(?:[0-9]{5}[-+A][0-9]{3}[0-9A-Z]|[0-9]{2}-[0-9]{2}-[0-9]{4})" + _ID_END
        ),
        needs=("-", "+", "a"),
        digits=9,
    ),
    # AB 12 34 56 C: UK national insurance number, capitals only
    _Rule(
        Identifier.ID_NUMBER,
        re.compile(
            r"[A-CEGHJ-PR-TW-Z](?<![\w@][A-Z])[A-CEGHJ-NPR-TW-Z]"
            r" ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]" + _ID_END
        ),
        digits=6,
    ),
]

# STREET_ADDRESS -------------------------------------------------------------------------------

_UPPER = "A-ZÀ-ÖØ-Þ"
_NAME = rf"(?>[{_UPPER}][\w'\u2019.-]{{0,40}}+)"  # a capitalised word of a street name
_ELIDED = rf"(?:d|l|dell|all|sull)['\u2019]{_NAME}"  # d'Orsay, l'Église, dell'Indipendenza
_PARTICLE = r"(?:de|del|della|delle|dei|degli|di|da|das|do|dos|du|des|la|le|les|el|los|las)"
_HOUSE_REST = r"[0-9]{0,4}+[A-Za-z]?+(?:[-/][0-9]{1,5}+[A-Za-z]?+)?+"  # after the first digit
_HOUSE_END = r"(?!\w|[.,][0-9])"

_ENGLISH_TYPES = _words(
    "street st road rd avenue ave lane ln drive dr boulevard blvd way place pl close",
    "crescent terrace square sq gardens grove mews parkway highway hwy alley quay embankment",
)
_FRENCH_TYPES = _words("rue avenue av. boulevard bd place allée allee chemin impasse quai cours")
_TYPES_FIRST = _words(
    "Rue Avenue Av. Avda. Avenida Boulevard Bd. Bd Place Allée Allee Chemin Impasse Quai",  # fr
    "Via Viale Piazza Piazzale Corso Vicolo Largo",  # it
    "Calle C/ c/ Plaza Paseo Camino Carrer Passeig",  # es, ca
    "Rua Travessa Praça",  # pt
    "Strada Ulica ul.",  # ro, pl
)
# German, Dutch, Swedish, Danish and Norwegian street words, alone or ending a compound
_STREET_SUFFIXES = _words(
    "straße strasse gasse weg platz allee damm ufer",
    "straat gracht laan plein singel dijk",
    "gatan gata vägen vagen vej veien vegen torget torg",
)
# the last three letters of each, for a quick test; "str" ends the abbreviation "str."
_SUFFIX_ENDINGS = "|".join(sorted({suffix[-3:] for suffix in _STREET_SUFFIXES} | {"str"}))


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


def _type_first(match: re.Match[str]) -> Iterator[Span]:
    start = match.start()
    if start == 0 or not _is_word(match.string[start - 1]):
        yield match.span()


def _compound(match: re.Match[str]) -> Iterator[Span]:
    word = match["word"].casefold()
    if word.endswith("str") if match["dot"] else word.endswith(_STREET_SUFFIXES):
        yield match.span()


_STREET_RULES = [
    # 12 Baker Street, 221B Baker St, 1600 Pennsylvania Avenue, 350 5th Avenue;
    # 10 rue de Rivoli, 5 bis avenue Foch, 3, place Vendôme
    _Rule(
        Identifier.STREET_ADDRESS,
        re.compile(
            rf"""[0-9](?<![\w.,/-][0-9]){_HOUSE_REST}(?:\s?+(?i:bis|ter)(?!\w))?+,?\s{{1,3}}+
                (?=[^\W\d_]|[0-9]{{1,3}}[a-z])  # a quick test before the branches
                (?:(?:(?:{_NAME}|[0-9]{{1,3}}(?:st|nd|rd|th))\s{{1,3}}){{1,4}}
                   (?i:{_alternatives(_ENGLISH_TYPES)})(?!\w)
                  |(?i:{_alternatives(_FRENCH_TYPES)})
                   \s{{1,3}}(?:{_PARTICLE}\s{{1,3}}){{0,3}}(?:{_NAME}|{_ELIDED}))""",
            re.VERBOSE,
        ),
        needs=tuple(sorted({*_ENGLISH_TYPES, *_FRENCH_TYPES})),
    ),
    # Rue de Rivoli 10, Via Roma 5, Calle Mayor, 3, ul. Marszałkowska 10 (word start checked)
    _Rule(
        Identifier.STREET_ADDRESS,
        re.compile(
            rf"""(?:{_alternatives(_TYPES_FIRST)})
                \s{{0,3}}+(?:(?:{_NAME}|{_ELIDED}|{_PARTICLE}),?\s{{1,3}}+){{1,5}}+
                [0-9]{_HOUSE_REST}{_HOUSE_END}""",
            re.VERBOSE,
        ),
        _type_first,
        needs=tuple(sorted({word.lower() for word in _TYPES_FIRST})),
    ),
    # Hauptstraße 5, Hauptstr. 5, Kirchgasse 12, Prinsengracht 263, Drottninggatan 4.
    # The atomic group takes a whole word once; a look-behind at its last three
    # letters drops most words before the ending is checked in Python.
    _Rule(
        Identifier.STREET_ADDRESS,
        re.compile(
            rf"""(?P<word>[^\W\d_](?<!\w[^\W\d_])(?>[^\W\d_]{{2,60}}+))
                (?<=(?i:{_SUFFIX_ENDINGS}))
                (?P<dot>\.)?\s{{0,3}}[0-9]{_HOUSE_REST}{_HOUSE_END}""",
            re.VERBOSE,
        ),
        _compound,
        needs=(*_STREET_SUFFIXES, "str."),
    ),
]

_RULES = [*_DATE_RULES, _PHONE_RULE, *_ID_RULES, *_STREET_RULES]
