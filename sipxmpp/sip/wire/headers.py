"""
Header field names and the structured header values a proxy reads:
name-addr / addr-spec (From, To, Contact, Route, Record-Route, Path), Via
and CSeq (RFC 3261 §20 and §25.1).

Parsed values are read-only snapshots of what was on the wire; they keep
their text (C{.text}) and the message keeps the original bytes, so nothing
here is ever re-serialized.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.grammar import (
    TOKEN_BYTES,
    TOKEN_CHARS,
    isHost,
    parseParams,
    parsePort,
    quotedEnd,
    unquote,
)
from sipxmpp.sip.wire.uri import _MEMO_SIZE, URI, parseURI

__all__ = [
    "COMPACT_FORMS",
    "CSeq",
    "NameAddr",
    "SessionExpires",
    "Via",
    "canonicalName",
    "displayName",
    "headerKey",
    "parseNameAddr",
    "parseNameAddrBytes",
    "parseVia",
    "parseViaBytes",
]

#: Compact header forms (RFC 3261 §7.3.3 and the IANA registry).
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# The usual spelling of the names this layer emits or reads.
_DISPLAY = {
    "accept-contact": "Accept-Contact",
    "allow-events": "Allow-Events",
    "call-id": "Call-ID",
    "contact": "Contact",
    "content-encoding": "Content-Encoding",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "cseq": "CSeq",
    "event": "Event",
    "expires": "Expires",
    "from": "From",
    "identity": "Identity",
    "max-forwards": "Max-Forwards",
    "min-expires": "Min-Expires",
    "path": "Path",
    "proxy-require": "Proxy-Require",
    "record-route": "Record-Route",
    "refer-to": "Refer-To",
    "referred-by": "Referred-By",
    "reject-contact": "Reject-Contact",
    "request-disposition": "Request-Disposition",
    "require": "Require",
    "route": "Route",
    "session-expires": "Session-Expires",
    "subject": "Subject",
    "supported": "Supported",
    "to": "To",
    "via": "Via",
    "www-authenticate": "WWW-Authenticate",
}


def _spellings() -> dict[bytes, str]:
    # Exact spellings seen on the wire, so the parser's hot loop maps a
    # header name with one dict lookup instead of strip/lower/compact.
    table: dict[bytes, str] = {}
    common = (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Authorization", "Date", "Diversion", "Min-SE", "P-Asserted-Identity",
        "P-Preferred-Identity", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
        "RAck", "Reason", "Replaces", "Retry-After", "RSeq", "Server", "SIP-ETag",
        "SIP-If-Match", "Subscription-State", "Timestamp", "Unsupported", "User-Agent",
        "Warning", "X-Asterisk-HangupCause",
    )  # fmt: skip
    for name in (*_DISPLAY.values(), *common):
        key = name.lower()
        for spelling in (name, key, name.upper()):
            table[spelling.encode("ascii")] = key
    table[b"Call-Id"] = "call-id"
    table[b"Cseq"] = "cseq"
    table[b"WWW-Authenticate"] = "www-authenticate"
    for short, key in COMPACT_FORMS.items():
        table[short.encode("ascii")] = key
        table[short.upper().encode("ascii")] = key
    return table


_SPELLINGS = _spellings()


def headerKey(name: bytes) -> str:
    """
    Map a header name as it appears before the colon to its canonical key:
    lower case, long form (C{b"v"} and C{b"VIA "} both give C{"via"}).

    @raise SIPParseError: (400) if the name is not a token.
    """
    key = _SPELLINGS.get(name)
    if key is not None:
        return key
    # Whitespace before the colon is legal (HCOLON = *( SP / HTAB ) ":").
    name = name.rstrip(b" \t")
    if not name or name.translate(None, TOKEN_BYTES):
        raise SIPParseError(f"bad header name {name[:40]!r}")
    text = name.decode("ascii").lower()
    return COMPACT_FORMS.get(text, text)


@functools.lru_cache(maxsize=256)  # a hit costs no Python call
def canonicalName(name: str) -> str:
    """
    The canonical key of a header name given by a caller, in any case or
    compact form.
    """
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def displayName(key: str) -> str:
    """
    The spelling used when this layer adds a header field of key C{key}.
    """
    spelled = _DISPLAY.get(key)
    if spelled is not None:
        return spelled
    return "-".join(part.capitalize() for part in key.split("-"))


# Fast paths for the forms phones actually send.  Each is one fullmatch
# over raw header bytes (surrounding LWS included, so the value needs no
# strip and no decoding first) that accepts a strict subset of what the
# general parsers below accept and yields the same result for it
# (tests/unit/test_sip_headers.py checks this on generated input); any
# other value takes the general path.  The patterns are sequences of
# simple character classes with no ambiguous nesting: matching is linear.
_TOKC = rb"A-Za-z0-9\-.!%*_+`'~"
_TOK = rb"[" + _TOKC + rb"]"
_PVAL = rb"[" + _TOKC + rb"\[\]:]"
_PARAM = rb";" + _TOK + rb"+(?:=" + _PVAL + rb"+)?"
_SCHEME = rb"[A-Za-z][A-Za-z0-9+.\-]*:"


def _paramsCapturing(name: bytes) -> bytes:
    # Simple parameters, capturing all of them and the value of the first
    # one called `name` (in any case); no match when that one has no value.
    other = rb";(?!(?i:" + name + rb")(?![" + _TOKC + rb"]))" + _TOK + rb"+(?:=" + _PVAL + rb"+)?"
    return rb"((?:" + other + rb")*(?:;(?i:" + name + rb")=(" + _PVAL + rb"+)(?:" + _PARAM + rb")*)?)"


_NAME_ADDR_FAST = re.compile(
    rb'[ \t]*(?:"([^"\\\x00-\x1f\x7f]*)" ?|(' + _TOK + rb"+(?: " + _TOK + rb"+)*) ?)?"
    rb"<(" + _SCHEME + rb'[^<>"\s]*)>' + _paramsCapturing(b"tag") + rb"[ \t]*"
    rb"|[ \t]*(" + _SCHEME + rb'[^;?,\s<>"]+)' + _paramsCapturing(b"tag") + rb"[ \t]*"
).fullmatch
_VIA_FAST = re.compile(
    rb"[ \t]*SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:.]+\])"
    rb"(?::([0-9]{1,5}))?" + _paramsCapturing(b"branch") + rb"[ \t]*"
).fullmatch


_RPORT = re.compile(r";rport(?![^=;])", re.IGNORECASE).search


def _simpleParams(text: str) -> dict[str, str | None]:
    # parseParams() for text matched by the fast paths.
    params: dict[str, str | None] = {}
    if text:
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            key = name.lower()
            if key not in params:
                params[key] = value if eq else None
    return params


def _decodeValue(raw: bytes) -> str:
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"")
    return raw.decode("utf-8", "surrogateescape")


class NameAddr:
    """
    One name-addr or addr-spec with its header parameters: a From, To,
    Contact, Route, Record-Route or Path value.

    @ivar displayName: the display name, quotes and quoted-pairs removed, or
        L{None} when there is none.
    @ivar uriText: the URI as written (without angle brackets), or C{"*"}
        for a wildcard Contact.
    @ivar bracketed: L{True} when the URI was enclosed in C{<>}.  Only then
        can URI parameters be told from header parameters (RFC 3261 §20.10).
    @ivar text: the whole value, unfolded and stripped.
    """

    __slots__ = (
        "displayName", "uriText", "bracketed", "text", "tag", "_uri", "_params", "_paramText",
    )  # fmt: skip

    displayName: str | None
    uriText: str
    bracketed: bool
    text: str
    #: The C{tag} parameter, or L{None}.
    tag: str | None
    _uri: URI | None
    _params: dict[str, str | None] | None
    _paramText: str

    def __init__(
        self,
        displayName: str | None,
        uriText: str,
        bracketed: bool,
        params: dict[str, str | None] | None,
        text: str,
        tag: str | None = None,
        paramText: str = "",
    ) -> None:
        self.displayName = displayName
        self.uriText = uriText
        self.bracketed = bracketed
        self.text = text
        self.tag = tag if params is None else params.get("tag")
        self._uri = None
        self._params = params
        self._paramText = paramText

    @property
    def params(self) -> dict[str, str | None]:
        """
        Header parameters: names lower-cased, values as written (a quoted
        value keeps its quotes), L{None} for a parameter without C{=}.
        """
        params = self._params
        if params is None:
            params = self._params = _simpleParams(self._paramText)
        return params

    @property
    def uri(self) -> URI:
        """
        The parsed URI.

        @raise SIPParseError: (400) if it is malformed or this is a wildcard.
        """
        uri = self._uri
        if uri is None:
            if self.uriText == "*":
                raise SIPParseError("wildcard Contact has no URI")
            uri = self._uri = parseURI(self.uriText)
        return uri

    @property
    def isWildcard(self) -> bool:
        """
        L{True} for the C{*} Contact of a REGISTER that removes all bindings.
        """
        return self.uriText == "*"

    @property
    def expires(self) -> int | None:
        """
        The C{expires} parameter of a Contact, or L{None}.

        @raise SIPParseError: (400) if it is not a delta-seconds below 2**32.
        """
        value = self.params.get("expires")
        if value is None:
            return None
        return _deltaSeconds(value, "Contact expires")

    @property
    def q(self) -> float | None:
        """
        The C{q} parameter of a Contact, or L{None}.

        @raise SIPParseError: (400) if it is not a qvalue (0 to 1).
        """
        value = self.params.get("q")
        if value is None:
            return None
        head, _, tail = value.partition(".")
        if head not in ("0", "1") or len(tail) > 3 or (tail and not tail.isdigit()):
            raise SIPParseError(f"bad q value {value[:20]!r}")
        q = float(value)
        if q > 1:
            raise SIPParseError(f"bad q value {value[:20]!r}")
        return q

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"NameAddr({self.text!r})"


def _deltaSeconds(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        raise SIPParseError(f"bad {what} value {text[:20]!r}")
    value = int(text)
    if value > 0xFFFFFFFF:
        raise SIPParseError(f"{what} value out of range")
    return value


def parseNameAddr(text: str, allowWildcard: bool = False) -> NameAddr:
    """
    Parse C{( name-addr / addr-spec ) *( SEMI generic-param )}.

    Liberal choices: whitespace inside C{<...>} around the URI is ignored
    (RFC 4475 §3.1.2.14); no whitespace is required between a display name
    and C{<} (§3.1.1.6).  Strict ones: an unquoted display name must be
    tokens (§3.1.2.15), quotes must balance (§3.1.2.6), and an addr-spec
    must not contain C{?} or C{,} (§3.1.2.13).

    @param text: the unfolded value.
    @raise SIPParseError: (400) if malformed.
    """
    text = text.strip(" \t")
    if not text:
        raise SIPParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        end = quotedEnd(text, 0)
        display = unquote(text[:end])
        rest = text[end:].lstrip(" \t")
        if rest[:1] != "<":
            raise SIPParseError("quoted display name without <URI>")
        lt = 0
    else:
        lt = text.find("<")
        rest = text
        if lt > 0:
            words = text[:lt].split()
            for word in words:
                if word.strip(TOKEN_CHARS):
                    raise SIPParseError(f"bad display name {text[:lt][:60]!r}")
            display = " ".join(words) or None
    if lt >= 0:
        gt = rest.find(">", lt + 1)
        if gt < 0:
            raise SIPParseError("unterminated '<'")
        uriText = rest[lt + 1 : gt].strip(" \t")
        paramText = rest[gt + 1 :]
        bracketed = True
    else:
        if allowWildcard and text == "*":
            return NameAddr(None, "*", False, {}, text)
        # In an addr-spec the first ';' starts the header parameters.
        semi = text.find(";")
        uriText = text[:semi].rstrip(" \t") if semi >= 0 else text
        paramText = text[semi:] if semi >= 0 else ""
        bracketed = False
        for bad in "?, \t>\"":
            if bad in uriText:
                raise SIPParseError(f"addr-spec needs <> around {uriText[:60]!r}")
    colon = uriText.find(":")
    if colon < 1:
        raise SIPParseError(f"no URI in address {text[:60]!r}")
    params = parseParams(paramText) if paramText else {}
    return NameAddr(display, uriText, bracketed, params, text)


class Via:
    """
    One Via value (RFC 3261 §20.42).

    @ivar protocol: the protocol name, upper-cased (always C{"SIP"}).
    @ivar version: the protocol version, e.g. C{"2.0"}.
    @ivar transport: the transport, upper-cased (C{"UDP"}, C{"TCP"}, C{"TLS"},
        C{"SCTP"}, C{"WS"}, or any other token).
    @ivar host: the sent-by host as written (IPv6 with brackets).
    @ivar port: the sent-by port, or L{None}.
    @ivar text: the value, unfolded and stripped.
    """

    __slots__ = (
        "protocol", "version", "transport", "host", "port", "text", "branch", "_params", "_paramText",
    )  # fmt: skip

    protocol: str
    version: str
    transport: str
    host: str
    port: int | None
    text: str
    #: The C{branch} parameter, or L{None}.
    branch: str | None
    _params: dict[str, str | None] | None
    _paramText: str

    @property
    def params(self) -> dict[str, str | None]:
        """
        Parameters: names lower-cased, values as written, L{None} for a
        parameter without C{=}.
        """
        params = self._params
        if params is None:
            params = self._params = _simpleParams(self._paramText)
        return params

    @property
    def hasRFC3261Branch(self) -> bool:
        """
        Does the branch start with the RFC 3261 magic cookie and carry a
        transaction id after it?  (A bare C{z9hG4bK}, RFC 4475 §3.2.1, does
        not.)
        """
        branch = self.branch  # the first branch parameter, as params has it
        return branch is not None and len(branch) > 7 and branch.startswith("z9hG4bK")

    @property
    def received(self) -> str | None:
        """
        The C{received} parameter, or L{None}.
        """
        return self.params.get("received")

    @property
    def hasRport(self) -> bool:
        """
        L{True} when an C{rport} parameter is present, with or without a
        value (RFC 3581).
        """
        params = self._params
        if params is None:
            # The simple parameters the fast path matched: no dict needed.
            return _RPORT(self._paramText) is not None
        return "rport" in params

    @property
    def rport(self) -> int | None:
        """
        The value of the C{rport} parameter, or L{None} when it is absent or
        empty.

        @raise SIPParseError: (400) if it is not a port number.
        """
        value = self.params.get("rport")
        return None if value is None else parsePort(value)

    @property
    def maddr(self) -> str | None:
        """
        The C{maddr} parameter, or L{None}.
        """
        return self.params.get("maddr")

    @property
    def sentBy(self) -> str:
        """
        C{host} or C{host:port}.
        """
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Via({self.text!r})"


def parseVia(text: str) -> Via:
    """
    Parse one Via value.  Whitespace is allowed around the slashes of the
    sent-protocol and around the colon of the sent-by (RFC 4475 §3.1.1.1).

    @param text: the unfolded value.
    @raise SIPParseError: (400) if malformed.
    """
    text = text.strip(" \t")
    semi = text.find(";")
    head = text[:semi] if semi >= 0 else text
    parts = head.split("/", 2)
    if len(parts) != 3:
        raise SIPParseError(f"bad Via sent-protocol {head[:60]!r}")
    rest = parts[2].split(None, 1)
    if len(rest) != 2:
        raise SIPParseError(f"Via without sent-by {head[:60]!r}")
    via = Via()
    via.protocol = parts[0].strip(" \t").upper()
    via.version = parts[1].strip(" \t")
    via.transport = rest[0].upper()
    if via.protocol != "SIP" or via.version.strip(TOKEN_CHARS) or not via.version:
        raise SIPParseError(f"bad Via sent-protocol {head[:60]!r}")
    if via.transport.strip(TOKEN_CHARS):
        raise SIPParseError(f"bad Via transport {rest[0][:30]!r}")
    # sent-by = host [ COLON port ], with LWS allowed around the colon only.
    sentBy = rest[1].strip(" \t")
    if sentBy[:1] == "[":
        end = sentBy.find("]") + 1
        host, after = sentBy[:end], sentBy[end:].lstrip(" \t")
        if end == 0 or (after and after[0] != ":"):
            raise SIPParseError(f"bad Via sent-by {sentBy[:60]!r}")
        via.port = parsePort(after[1:].strip(" \t")) if after else None
    else:
        host, colon, portText = sentBy.partition(":")
        host = host.rstrip(" \t")
        via.port = parsePort(portText.strip(" \t")) if colon else None
    if not isHost(host):
        raise SIPParseError(f"bad Via host {host[:60]!r}")
    via.host = host
    params = via._params = parseParams(text[semi:]) if semi >= 0 else {}
    via._paramText = ""
    via.branch = params.get("branch")
    via.text = text
    return via


# Memoised like parseURI, and as small: the From and To of a call recur
# in each of its messages, our Via in the responses to what we forwarded,
# our Route entries in every in-dialog request; the values are read-only.
@functools.lru_cache(maxsize=_MEMO_SIZE)
def parseNameAddrBytes(raw: bytes, allowWildcard: bool = False) -> NameAddr:
    """
    L{parseNameAddr} for a raw header value: LWS around it and folding are
    allowed, and octets that are not UTF-8 survive as surrogate escapes.
    Memoised: the same bytes give the same (read-only) value.
    """
    fast = _NAME_ADDR_FAST(raw)
    if fast is None:
        return parseNameAddr(_decodeValue(raw), allowWildcard)
    quoted, tokens, uriText, params, tag, specURI, specParams, specTag = fast.groups()
    text = raw.strip(b" \t").decode("utf-8", "surrogateescape")
    if specURI is not None:
        return NameAddr(
            None,
            specURI.decode("utf-8", "surrogateescape"),
            False,
            None,
            text,
            None if specTag is None else specTag.decode("ascii"),
            specParams.decode("ascii"),
        )
    display = quoted if quoted is not None else tokens
    return NameAddr(
        None if display is None else display.decode("utf-8", "surrogateescape"),
        uriText.decode("utf-8", "surrogateescape"),
        True,
        None,
        text,
        None if tag is None else tag.decode("ascii"),
        params.decode("ascii"),
    )


@functools.lru_cache(maxsize=_MEMO_SIZE)
def parseViaBytes(raw: bytes) -> Via:
    """
    L{parseVia} for one raw Via value (LWS around it and folding allowed).
    Memoised like L{parseNameAddrBytes}.
    """
    fast = _VIA_FAST(raw)
    if fast is not None:
        transport, host, port, params, branch = fast.groups()
        if port is None or 0 < int(port) < 65536:
            via = Via()
            via.protocol = "SIP"
            via.version = "2.0"
            via.transport = transport.decode("ascii").upper()
            via.host = host.decode("ascii")
            via.port = None if port is None else int(port)
            via.text = raw.strip(b" \t").decode("ascii")
            via.branch = None if branch is None else branch.decode("ascii")
            via._params = None
            via._paramText = params.decode("ascii")
            return via
    return parseVia(_decodeValue(raw))


class CSeq(NamedTuple):
    """
    A CSeq value.
    """

    number: int
    method: str


class SessionExpires(NamedTuple):
    """
    A Session-Expires value (RFC 4028): the interval and the C{refresher}
    parameter (C{"uac"}, C{"uas"} or L{None}).
    """

    seconds: int
    refresher: str | None


def parseEvent(value: str | None) -> tuple[str | None, str | None]:
    """
    The event package of an Event header value, lower-cased, and its C{id}
    parameter (RFC 6665 §8.2.1): C{"Presence;id=7"} -> C{("presence", "7")};
    other parameters do not change the package. C{(None, None)} for no
    value.
    """
    if value is None:
        return None, None
    package, *params = (part.strip() for part in value.split(";"))
    eventID = None
    for param in params:
        name, _, text = param.partition("=")
        if name.strip().lower() == "id":
            eventID = text.strip()
    return package.lower() or None, eventID
