"""
SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25.1, RFC 3966), parsed on
demand and never re-serialized: a parsed URI keeps the text it was parsed
from, which is what goes back on the wire.

Other schemes (C{http:}, C{isbn:}, C{urn:}, ...) are legal in header fields
(RFC 4475 §3.3.4) and parse as an L{AbsoluteURI} that only knows its
scheme.  Whether a scheme is acceptable where it appears (a Request-URI, a
REGISTER Contact) is the caller's decision; see L{SUPPORTED_SCHEMES}.
"""

from __future__ import annotations

import functools

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.grammar import isHost, parsePort, unescape

__all__ = [
    "SUPPORTED_SCHEMES",
    "AbsoluteURI",
    "SIPURI",
    "TelURI",
    "URI",
    "parseURI",
    "uriScheme",
]

#: URI schemes this gateway can route in a Request-URI; others get 416.
SUPPORTED_SCHEMES = frozenset(("sip", "sips", "tel"))

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UNRESERVED = _ALNUM + "-_.!~*'()"
_USER_CHARS = _UNRESERVED + "%&=+$,;?/"
_PASSWORD_CHARS = _UNRESERVED + "%&=+$,"
_PARAM_CHARS = _UNRESERVED + "%[]/:&+$"
_HEADER_CHARS = _UNRESERVED + "%[]/?:+$"
_TEL_CHARS = _ALNUM + "%+-.()*#"
_SCHEME_CHARS = _ALNUM + "+-."
# Characters no URI may contain unescaped, whatever its scheme.
_NEVER_IN_URI = " \t\r\n\"<>"


def uriScheme(text: str) -> str:
    """
    Return the lower-cased scheme of a URI.

    @raise SIPParseError: (400) if C{text} does not start with a scheme.
    """
    colon = text.find(":")
    scheme = text[:colon]
    if colon < 1 or not scheme[0].isalpha() or scheme.strip(_SCHEME_CHARS):
        raise SIPParseError(f"no URI scheme in {text[:60]!r}")
    return scheme.lower()


def _uriParams(text: str, allowed: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for segment in text.split(";"):
        name, eq, value = segment.partition("=")
        if not name or name.strip(allowed) or (eq and (not value or value.strip(allowed))):
            raise SIPParseError(f"bad URI parameter {segment[:60]!r}")
        key = unescape(name).lower()
        if key not in params:
            params[key] = unescape(value) if eq else None
    return params


class SIPURI:
    """
    A C{sip:} or C{sips:} URI.

    @ivar scheme: C{"sip"} or C{"sips"}.
    @ivar user: the user part with % escapes decoded (RFC 4475 §3.1.1.3),
        or L{None}.  An escaped NUL stays a NUL (RFC 4475 §3.1.1.4).
    @ivar rawUser: the user part as written, or L{None}.
    @ivar password: the password with escapes decoded, or L{None}.
    @ivar host: the host as written (IPv6 references keep their brackets).
    @ivar port: the port, or L{None} when absent.
    @ivar params: URI parameters, names lower-cased, values decoded.
    @ivar headers: URI headers (after C{?}), names lower-cased, values
        decoded, e.g. C{{"route": "<sip:example.com>"}}.
    @ivar text: the URI as written.
    """

    __slots__ = ("scheme", "user", "rawUser", "password", "host", "port", "params", "headers", "text")

    scheme: str
    user: str | None
    rawUser: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: dict[str, str]
    text: str

    @property
    def secure(self) -> bool:
        """
        L{True} for a C{sips:} URI.
        """
        return self.scheme == "sips"

    @property
    def hostPort(self) -> str:
        """
        C{host} or C{host:port} as written.
        """
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"SIPURI({self.text!r})"


class TelURI:
    """
    A C{tel:} URI (RFC 3966).

    @ivar number: the telephone-subscriber part as written.
    @ivar params: parameters, names lower-cased, values decoded.
    """

    __slots__ = ("number", "params", "text")

    scheme = "tel"
    number: str
    params: dict[str, str | None]
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"TelURI({self.text!r})"


class AbsoluteURI:
    """
    A URI of a scheme this layer does not interpret.
    """

    __slots__ = ("scheme", "text")

    scheme: str
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"AbsoluteURI({self.text!r})"


URI = SIPURI | TelURI | AbsoluteURI


def _parseSIP(text: str, scheme: str, rest: str) -> SIPURI:
    uri = SIPURI()
    uri.scheme = scheme
    uri.text = text
    # The user part may hold '?', ';' and ',' (RFC 3261 user-unreserved) but
    # never an unescaped '@', so the first '@' ends it.
    at = rest.find("@")
    if at >= 0:
        userText, colon, password = rest[:at].partition(":")
        if not userText or userText.strip(_USER_CHARS):
            raise SIPParseError(f"bad user part in URI {text[:60]!r}")
        if colon and password.strip(_PASSWORD_CHARS):
            raise SIPParseError(f"bad password in URI {text[:60]!r}")
        uri.rawUser = userText
        uri.user = unescape(userText)
        uri.password = unescape(password) if colon else None
        rest = rest[at + 1 :]
    else:
        uri.rawUser = uri.user = uri.password = None
    rest, question, headerText = rest.partition("?")
    hostPort, semi, paramText = rest.partition(";")
    if hostPort.startswith("["):
        end = hostPort.find("]") + 1
        host, after = hostPort[:end], hostPort[end:]
        if end == 0 or (after and after[0] != ":"):
            raise SIPParseError(f"bad IPv6 reference in URI {text[:60]!r}")
        uri.port = parsePort(after[1:]) if after else None
    else:
        host, colon, portText = hostPort.partition(":")
        uri.port = parsePort(portText) if colon else None
    if not isHost(host):
        raise SIPParseError(f"bad host in URI {text[:60]!r}")
    uri.host = host
    uri.params = _uriParams(paramText, _PARAM_CHARS) if semi else {}
    headers: dict[str, str] = {}
    if question:
        for segment in headerText.split("&"):
            name, eq, value = segment.partition("=")
            if not name or not eq or name.strip(_HEADER_CHARS) or value.strip(_HEADER_CHARS):
                raise SIPParseError(f"bad URI header {segment[:60]!r}")
            key = unescape(name).lower()
            if key not in headers:
                headers[key] = unescape(value)
    uri.headers = headers
    return uri


def _parseTel(text: str, rest: str) -> TelURI:
    uri = TelURI()
    uri.text = text
    number, semi, paramText = rest.partition(";")
    if not number or number.strip(_TEL_CHARS):
        raise SIPParseError(f"bad tel URI {text[:60]!r}")
    uri.number = number
    uri.params = _uriParams(paramText, _PARAM_CHARS) if semi else {}
    return uri


# Small on purpose: a URI that recurs (a contact, our Route, an AoR) is
# used again within seconds and stays, but every call also brings URIs of
# its own (the registrar's Record-Route with its per-call ftag): 4096 of
# those held ~3 MB after a few thousand calls (issue 16, bench/soak.py).
_MEMO_SIZE = 256


@functools.lru_cache(maxsize=_MEMO_SIZE)
def parseURI(text: str) -> URI:
    """
    Parse a URI.

    Memoised: the same few URIs (contacts, Routes, AoRs) recur in every
    call, and a parsed URI is read-only. Errors are not cached.

    @raise SIPParseError: (400) if C{text} is not a URI or is a malformed
        C{sip:}, C{sips:} or C{tel:} URI.
    """
    scheme = uriScheme(text)
    rest = text[len(scheme) + 1 :]
    for bad in _NEVER_IN_URI:
        if bad in rest:
            raise SIPParseError(f"illegal character in URI {text[:60]!r}")
    if scheme == "sip" or scheme == "sips":
        return _parseSIP(text, scheme, rest)
    if scheme == "tel":
        return _parseTel(text, rest)
    if not rest:
        raise SIPParseError(f"empty URI {text[:60]!r}")
    uri = AbsoluteURI()
    uri.scheme = scheme
    uri.text = text
    return uri
