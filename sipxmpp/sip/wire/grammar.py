"""
Lexical helpers for the SIP grammar (RFC 3261 §25.1): tokens, quoted
strings, comma-separated lists, semicolon parameters and % escapes.

Every scan here is a single left-to-right pass: plain C-level C{find} and
C{split} in the common case, and one precompiled single-character-class
regular expression (which cannot backtrack) to jump between the few
special characters when quotes or angle brackets are present.  Nothing here
is quadratic in the length of its input.
"""

from __future__ import annotations

import re
from urllib.parse import unquote as _urlUnquote

from sipxmpp.sip.wire.errors import SIPParseError

__all__ = [
    "TOKEN_BYTES",
    "TOKEN_CHARS",
    "decodeText",
    "isToken",
    "isTokenBytes",
    "isHost",
    "parseParams",
    "parsePort",
    "quotedEnd",
    "splitList",
    "splitSemicolons",
    "unescape",
    "unquote",
]

#: RFC 3261 token characters.
TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
TOKEN_CHARS = TOKEN_BYTES.decode("ascii")

_QUOTE_SPECIAL = re.compile(r'["\\]')
_LIST_SPECIAL = re.compile(rb'[,"<]')
_QUOTE_SPECIAL_B = re.compile(rb'["\\]')
_SEMI_SPECIAL = re.compile(r'[;"]')
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")
# Characters that may not appear in an unquoted parameter value.
_BAD_PARAM_VALUE = ' \t"<>'


def decodeText(raw: bytes) -> str:
    """
    Decode header bytes losslessly: UTF-8, with any invalid octet kept as a
    surrogate escape so that C{decodeText(b).encode("utf-8",
    "surrogateescape") == b} always holds.
    """
    return raw.decode("utf-8", "surrogateescape")


def isToken(text: str) -> bool:
    """
    Is C{text} a non-empty RFC 3261 token?
    """
    # strip() removes every token character from both ends: only a string
    # made entirely of token characters becomes empty.
    return bool(text) and not text.strip(TOKEN_CHARS)


def isTokenBytes(raw: bytes) -> bool:
    """
    Is C{raw} a non-empty RFC 3261 token?
    """
    return bool(raw) and not raw.translate(None, TOKEN_BYTES)


def isHost(text: str) -> bool:
    """
    Is C{text} a host name, an IPv4 address or a bracketed IPv6 reference?

    Liberal: underscores are allowed in host names, as deployed DNS has them.
    """
    return _HOST.fullmatch(text) is not None


def parsePort(text: str) -> int:
    """
    Parse a port number (1 to 65535).

    @raise SIPParseError: (400) if C{text} is not one.
    """
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise SIPParseError(f"bad port {text[:20]!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise SIPParseError(f"port out of range {port}")
    return port


def quotedEnd(text: str, start: int) -> int:
    """
    Find the end of the quoted string that opens at C{text[start]}.

    @return: the index just past the closing quote.
    @raise SIPParseError: (400) if the string is not terminated.
    """
    search = _QUOTE_SPECIAL.search
    i = start + 1
    while True:
        match = search(text, i)
        if match is None:
            raise SIPParseError("unterminated quoted string")
        j = match.start()
        if text[j] == '"':
            return j + 1
        # A quoted-pair: the next character is literal, whatever it is.
        i = j + 2


def _quotedEndBytes(raw: bytes, start: int) -> int:
    search = _QUOTE_SPECIAL_B.search
    i = start + 1
    while True:
        match = search(raw, i)
        if match is None:
            raise SIPParseError("unterminated quoted string")
        j = match.start()
        if raw[j] == 0x22:
            return j + 1
        i = j + 2


def unquote(text: str) -> str:
    """
    Remove the quotes and quoted-pair backslashes of a quoted string; return
    any other text unchanged.
    """
    if len(text) < 2 or text[0] != '"':
        return text
    inner = text[1:-1]
    if "\\" in inner:
        return _QUOTED_PAIR.sub(r"\1", inner)
    return inner


def unescape(text: str) -> str:
    """
    Decode RFC 3986 % escapes.  A C{%} that does not start a valid escape is
    kept literally (RFC 4475 §3.1.1.5 is liberal about it); escaped octets
    that are not UTF-8 become surrogate escapes rather than errors.
    """
    if "%" not in text:
        return text
    return _urlUnquote(text, encoding="utf-8", errors="surrogateescape")


def splitList(value: bytes) -> list[tuple[int, int]]:
    """
    Split a header field value on the commas that separate list elements,
    ignoring commas inside quoted strings and inside C{<...>}.

    @return: C{(start, end)} spans into C{value}, one per element, whitespace
        and folding included (callers strip).
    @raise SIPParseError: (400) for an unterminated quoted string or C{<}.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    if b'"' not in value and b"<" not in value:
        find = value.find
        while True:
            j = find(b",", start)
            if j < 0:
                break
            spans.append((start, j))
            start = j + 1
        spans.append((start, len(value)))
        return spans
    search = _LIST_SPECIAL.search
    i = 0
    while True:
        match = search(value, i)
        if match is None:
            break
        j = match.start()
        c = value[j]
        if c == 0x2C:  # ,
            spans.append((start, j))
            start = i = j + 1
        elif c == 0x22:  # "
            i = _quotedEndBytes(value, j)
        else:  # <
            k = value.find(b">", j + 1)
            if k < 0:
                raise SIPParseError("unterminated '<'")
            i = k + 1
    spans.append((start, len(value)))
    return spans


def splitSemicolons(text: str) -> list[str]:
    """
    Split C{text} on semicolons, except inside quoted strings.
    """
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    search = _SEMI_SPECIAL.search
    start = i = 0
    while True:
        match = search(text, i)
        if match is None:
            break
        j = match.start()
        if text[j] == ";":
            parts.append(text[start:j])
            start = i = j + 1
        else:
            i = quotedEnd(text, j)
    parts.append(text[start:])
    return parts


def parseParams(text: str) -> dict[str, str | None]:
    """
    Parse C{*( SEMI generic-param )} as found after a URI, a sent-by or a
    media type.  Anything but whitespace before the first C{;} is an error.

    Names are lower-cased; values are kept as written (a quoted value keeps
    its quotes; use L{unquote}).  A name without C{=} maps to L{None}.  Of a
    repeated parameter the first one wins.

    @raise SIPParseError: (400) for an empty or non-token name, an empty or
        malformed value, or stray text.
    """
    segments = splitSemicolons(text)
    if segments[0].strip(" \t"):
        raise SIPParseError(f"unexpected text {segments[0].strip()[:40]!r}")
    params: dict[str, str | None] = {}
    for segment in segments[1:]:
        name, eq, value = segment.partition("=")
        name = name.strip(" \t")
        if not name or name.strip(TOKEN_CHARS):
            raise SIPParseError(f"bad parameter name {name[:40]!r}")
        key = name.lower()
        if eq:
            value = value.strip(" \t")
            if not value:
                raise SIPParseError(f"empty value for parameter {key[:40]!r}")
            if value[0] == '"':
                if quotedEnd(value, 0) != len(value):
                    raise SIPParseError(f"bad quoted value for parameter {key[:40]!r}")
            else:
                for bad in _BAD_PARAM_VALUE:
                    if bad in value:
                        raise SIPParseError(f"bad value for parameter {key[:40]!r}")
            if key not in params:
                params[key] = value
        elif key not in params:
            params[key] = None
    return params
