"""
Sans-IO SIP messages (RFC 3261 §7, §20, §25): parse, read, change and
serialize requests and responses.

Parsing is lazy and transparent.  L{parseMessage} finds the end of the
header section with C{bytes.find} and splits it into raw fields in one
C-level pass (a single compiled C{re.split}, never a pattern per header;
folded or unusual sections take an exact slower path).  It decodes only
what a proxy must check before it can do anything with a request: the start
line, the framing (Content-Length) and the top Via, From, To, Call-ID, CSeq
and Max-Forwards, each through a one-match fast path for the usual forms
that falls back to the general parser.  Every other value is decoded on
first access, and an accessor that finds it malformed raises the same
L{SIPParseError} the parser does.

Serialization re-emits every header field the proxy did not touch byte for
byte, in its original order, spelling (compact or long form) and folding;
an unmodified message serializes to exactly the bytes it was parsed from.
Only the mutations a proxy makes rewrite anything: push/pop the top Via
(also when it is one value of a comma-joined line), pop the top Route, add
Record-Route / Path / Route at the top, set or decrement Max-Forwards,
replace Contact, set the Request-URI, add C{received}/C{rport} to the top
Via, and generic add/set/remove of other fields.

Liberal and strict choices (RFC 4475):
  - extra SP between the elements of the Request-Line and at its end are
    accepted (§3.1.2.9, §3.1.2.10); LWS inside the Request-URI is not
    (§3.1.2.8), nor are C{<>} around it (§3.1.2.7);
  - escaped headers in a Request-URI are parsed and exposed, never acted on
    (§3.1.2.11); a malformed Date is never looked at (§3.1.2.12);
  - whitespace inside C{<...>} around an addr-spec is ignored (§3.1.2.14);
  - an unknown Request-URI scheme is refused with 416 (§3.3.2, §3.3.3);
    unknown schemes elsewhere parse as L{AbsoluteURI} (§3.3.4);
  - a CSeq method that differs from the request method is 400, also for an
    unknown method (§3.1.2.18 allows 400 instead of 501);
  - Max-Forwards may be absent (RFC 2543 peers, §3.4.1):
    L{SIPMessage.maxForwards} is then L{None} and
    L{SIPMessage.decrementMaxForwards} treats it as 70 (RFC 3261 §16.6
    step 3); a value above 255 is 400;
  - on a datagram, a missing Content-Length means "the rest of the datagram"
    (RFC 3261 §18.3), octets after Content-Length are ignored (§3.1.1.8),
    leading CRLFs are skipped, and a datagram whose header section ends
    with the end of the datagram instead of an empty line is accepted;
  - header lines must end in CRLF: a bare CR or LF in the header section
    is 400;
  - malformed responses are always dropped, never answered.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Self, TypeVar, cast

from sipxmpp.sip.wire.errors import DROP, SIPParseError
from sipxmpp.sip.wire.grammar import decodeText, isTokenBytes, parseParams, splitList
from sipxmpp.sip.wire.headers import (
    _SPELLINGS as _HEADER_SPELLINGS,
)
from sipxmpp.sip.wire.headers import (
    CSeq,
    NameAddr,
    SessionExpires,
    Via,
    canonicalName,
    displayName,
    headerKey,
    parseNameAddr,
    parseNameAddrBytes,
    parseViaBytes,
)
from sipxmpp.sip.wire.uri import SUPPORTED_SCHEMES, URI, parseURI, uriScheme

__all__ = [
    "DEFAULT_LIMITS",
    "DROP",
    "REASON_PHRASES",
    "CSeq",
    "Limits",
    "NameAddr",
    "SIPMessage",
    "SIPParseError",
    "SIPRequest",
    "SIPResponse",
    "SessionExpires",
    "Via",
    "annotateError",
    "contentLengthOf",
    "errorResponse",
    "makeResponse",
    "parseMessage",
    "responseBytes",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """
    Size limits applied while parsing and framing.

    @ivar maxMessageSize: the largest whole message, header section and body
        (a request over it gets 513).
    @ivar maxHeaderCount: the most header fields (513 above it).
    @ivar maxHeaderLineLength: the longest header field, folding included
        (513 above it).
    @ivar maxBodySize: the largest Content-Length accepted (413 above it).
    """

    maxMessageSize: int = 65535
    maxHeaderCount: int = 256
    maxHeaderLineLength: int = 8192
    maxBodySize: int = 65535


#: Safe defaults: one UDP datagram's worth of message.
DEFAULT_LIMITS = Limits()

#: Reason phrases of the responses this layer builds.
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    482: "Loop Detected",
    483: "Too Many Hops",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}

_MAX_CSEQ = 2**31 - 1
_T = TypeVar("_T")
_SPELL = _HEADER_SPELLINGS.get
# One C-level pass over the header section: [start-line, name0, value0,
# name1, value1, ...].  A value is everything after the colon, up to the
# next line that starts a field.
_SPLIT_FIELDS = re.compile(rb"\r\n([^\r\n:]*):").split
_CONTROL = bytes(range(32)).replace(b"\t", b"") + b"\x7f"
_METHODS = {
    method.encode("ascii"): method
    for method in (
        "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS",
        "PRACK", "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE",
    )
}  # fmt: skip
_URI_PREFIXES = (b"sip:", b"sips:", b"tel:")
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
# Header fields that may appear at most once and that the parser reads.
_SINGLE = ("content-length", "from", "to", "call-id", "cseq", "max-forwards")
_UNSET = object()
_HOT_SLOTS = {"via": "_via", "from": "_from", "to": "_to", "call-id": "_callID", "cseq": "_cseq"}


def _encode(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    if b"\r" in raw or b"\n" in raw:
        raise ValueError(f"CR or LF in a header value: {raw[:60]!r}")
    return raw


def _clean(value: bytes) -> bytes:
    # A raw field value, unfolded and stripped of surrounding LWS.
    value = value.strip(b" \t")
    if b"\r" in value:
        value = value.replace(b"\r\n", b"").strip(b" \t")
    return value


class SIPMessage:
    """
    A parsed SIP request or response; see L{SIPRequest} and L{SIPResponse}.

    Header fields are kept as the raw name and raw value found on the wire;
    names given to the accessors may be in any case and in compact form.
    Decoded values are cached until a mutation touches their header.
    Parsed values handed out (L{Via}, L{NameAddr}, lists) are snapshots:
    treat them as read-only.
    """

    __slots__ = ("_parts", "_keys", "_body", "_wire", "_cache", "_via", "_from", "_to", "_callID", "_cseq")

    #: L{True} for requests.
    isRequest = False

    # [start-line, name0, value0, name1, value1, ...] as on the wire; _keys
    # holds the canonical name of each field.
    _parts: list[bytes]
    _keys: list[str]
    _body: bytes
    _wire: bytes | None
    _cache: dict[str, object]
    # The values every transaction and dialog lookup reads live in slots.
    _via: Via | None
    _from: NameAddr | None
    _to: NameAddr | None
    _callID: str | None
    _cseq: CSeq | None

    # -- generic header access -------------------------------------------

    def _fieldValue(self, index: int) -> bytes:
        return _clean(self._parts[2 * index + 2])

    def _single(self, key: str) -> int:
        # The index of a header that may appear at most once, or -1.
        keys = self._keys
        count = keys.count(key)
        if not count:
            return -1
        if count > 1:
            raise SIPParseError(f"more than one {displayName(key)} header")
        return keys.index(key)

    def _decoded(self, build: Callable[[], _T]) -> _T:
        # Decode a value on a cache miss.  A response is never answered, so
        # whatever is wrong with one of its headers means "drop".
        try:
            return build()
        except SIPParseError as error:
            if not self.isRequest:
                error.code = DROP
            raise

    def _build(self, key: str, build: Callable[[], _T]) -> _T:
        value = self._cache[key] = self._decoded(build)
        return value

    def headers(self) -> list[tuple[str, str]]:
        """
        Every header field in order, as C{(canonicalName, unfoldedValue)}.
        """
        return [(key, decodeText(self._fieldValue(i))) for i, key in enumerate(self._keys)]

    def hasHeader(self, name: str) -> bool:
        """
        Is there at least one header field called C{name}?
        """
        return canonicalName(name) in self._keys

    def getHeaders(self, name: str) -> list[str]:
        """
        The unfolded values of every field called C{name}, in order, each as
        written (not split on commas).
        """
        key = canonicalName(name)
        return [decodeText(self._fieldValue(i)) for i, k in enumerate(self._keys) if k == key]

    def getHeader(self, name: str) -> str | None:
        """
        The unfolded value of the first field called C{name}, or L{None}.
        """
        key = canonicalName(name)
        keys = self._keys
        if key not in keys:
            return None
        return decodeText(self._fieldValue(keys.index(key)))

    def getHeaderValues(self, name: str) -> list[str]:
        """
        The comma-separated elements of every field called C{name}, in
        order, stripped; empty elements are skipped.

        @raise SIPParseError: for an unterminated quoted string or C{<}.
        """
        return [decodeText(text) for text in map(_clean, self._elementBytes(canonicalName(name))) if text]

    def _elements(self, key: str) -> list[tuple[int, int, int]]:
        # (field index, start, end) of each element; start and end index the
        # raw value of the field.
        out: list[tuple[int, int, int]] = []
        parts = self._parts
        for index, k in enumerate(self._keys):
            if k == key:
                out.extend((index, start, end) for start, end in splitList(parts[2 * index + 2]))
        return out

    def _elementBytes(self, key: str) -> list[bytes]:
        # The raw bytes of each element, LWS and folding included.
        parts = self._parts
        return [parts[2 * i + 2][start:end] for i, start, end in self._elements(key)]

    # -- mutation primitives ---------------------------------------------

    def _changed(self, key: str) -> None:
        self._wire = None
        cache = self._cache
        cache.pop(key, None)
        cache.pop(key + "*", None)
        cache.pop(key + "^", None)
        slot = _HOT_SLOTS.get(key)
        if slot is not None:
            setattr(self, slot, None)

    def _insertField(self, position: int, key: str, name: bytes, value: bytes) -> None:
        self._keys.insert(position, key)
        self._parts[2 * position + 1 : 2 * position + 1] = [name, b" " + value]

    def _deleteField(self, index: int) -> None:
        del self._keys[index]
        del self._parts[2 * index + 1 : 2 * index + 3]

    def _insertPosition(self, key: str, first: bool) -> int:
        keys = self._keys
        if key in keys:
            if first:
                return keys.index(key)
            return len(keys) - keys[::-1].index(key)
        if first and key != "via":
            # A new kind of field goes after the Via block, or at the top.
            if "via" in keys:
                return len(keys) - keys[::-1].index("via")
            return 0
        return 0 if first else len(keys)

    def addHeader(self, name: str, value: str | bytes, *, first: bool = False) -> None:
        """
        Add a header field C{name: value}.

        @param first: put it before the other fields of that name (for list
            headers: make it the top value); otherwise after them.  A field
            of a new name goes at the end, or with C{first} right after the
            Via fields.
        @raise ValueError: if C{value} contains CR or LF or C{name} is not a
            token.
        """
        key = canonicalName(name)
        spelled = name.strip().encode("ascii", "replace")
        if not isTokenBytes(spelled):
            raise ValueError(f"bad header name {name!r}")
        self._insertField(self._insertPosition(key, first), key, spelled, _encode(value))
        self._changed(key)

    def removeHeader(self, name: str) -> int:
        """
        Remove every field called C{name}; return how many there were.
        """
        key = canonicalName(name)
        removed = self._keys.count(key)
        if removed:
            self._dropFields(key, -1)
            self._changed(key)
        return removed

    def _dropFields(self, key: str, keep: int) -> None:
        # Remove every field called key except the one at index keep, in one
        # pass (deleting them one by one would be quadratic).
        parts = self._parts
        newParts = [parts[0]]
        newKeys: list[str] = []
        for index, k in enumerate(self._keys):
            if k != key or index == keep:
                newKeys.append(k)
                newParts += parts[2 * index + 1 : 2 * index + 3]
        self._parts = newParts
        self._keys = newKeys

    def setHeader(self, name: str, value: str | bytes) -> None:
        """
        Replace every field called C{name} by one C{name: value} field where
        the first one was (keeping its spelling of the name), or add it at the
        end.
        """
        key = canonicalName(name)
        keys = self._keys
        if key not in keys:
            self.addHeader(name, value)
            return
        index = keys.index(key)
        self._parts[2 * index + 2] = b" " + _encode(value)
        if keys.count(key) > 1:
            self._dropFields(key, index)
        self._changed(key)

    def _dropTop(self, key: str) -> None:
        # Remove the first element of the first field called key (callers
        # have checked there is one).
        index = self._keys.index(key)
        value = self._parts[2 * index + 2]
        spans = splitList(value) if b"," in value else ()
        if len(spans) < 2:
            self._deleteField(index)
        else:
            # Keep the name as spelled and the rest of the line as written.
            self._parts[2 * index + 2] = b" " + value[spans[1][0] :].lstrip(b" \t\r\n")
        self._changed(key)

    def rawValues(self, name: str) -> list[bytes]:
        """
        The raw values of every field called C{name}, as on the wire
        (folding and surrounding LWS included, not split on commas): for
        cheap byte searches before anything is parsed.
        """
        key = canonicalName(name)
        parts = self._parts
        return [parts[2 * i + 2] for i, k in enumerate(self._keys) if k == key]

    def _replaceTop(self, key: str, element: bytes) -> None:
        index, start, end = self._elements(key)[0]
        value = self._parts[2 * index + 2]
        piece = value[start:end]
        start += len(piece) - len(piece.lstrip(b" \t\r\n"))
        end -= len(piece) - len(piece.rstrip(b" \t\r\n"))
        self._parts[2 * index + 2] = value[:start] + element + value[end:]
        self._changed(key)

    # -- Via ---------------------------------------------------------------

    @property
    def topVia(self) -> Via:
        """
        The top Via value.

        @raise SIPParseError: if there is none or it is malformed.
        """
        via = self._via
        if via is None:
            via = self._via = self._decoded(self._topVia)
        return via

    def _topVia(self) -> Via:
        keys = self._keys
        if "via" not in keys:
            raise SIPParseError("no Via header")
        return _firstVia(self._parts[2 * keys.index("via") + 2])

    @property
    def vias(self) -> list[Via]:
        """
        Every Via value, top first.

        @raise SIPParseError: if one is empty or malformed.
        """
        vias = self._cache.get("via*")
        if vias is None:
            return self._build(
                "via*", lambda: [parseViaBytes(_nonBlank(r, "Via")) for r in self._elementBytes("via")]
            )
        return cast(list[Via], vias)

    def prependVia(self, value: str | bytes) -> None:
        """
        Add C{value} as the new top Via, on a line of its own.
        """
        self.addHeader("Via", value, first=True)

    def popVia(self) -> Via | None:
        """
        Remove the top Via value (only that value when it shares a line
        with others) and return it parsed, or L{None} when there is none.

        @raise SIPParseError: if the removed value is malformed.
        """
        if "via" not in self._keys:
            return None
        via = self.topVia
        self._dropTop("via")
        return via

    def setTopViaReceived(self, received: str | None, rport: int | None = None) -> None:
        """
        Set the C{received} and C{rport} parameters of the top Via (RFC 3261
        §18.2.1, RFC 3581).  An C{rport} value is only set when the Via asked
        for it with an C{rport} parameter.  Other parameters keep their order.

        @raise SIPParseError: if there is no top Via or it is malformed.
        """
        via = self.topVia
        wantRport = rport is not None and via.hasRport
        if received is None and not wantRport:
            return
        semi = via.text.find(";")
        parts = [via.text if semi < 0 else via.text[:semi].rstrip(" \t")]
        for name, value in via.params.items():
            if name == "received" and received is not None:
                continue
            if name == "rport" and wantRport:
                value = str(rport)
            parts.append(name if value is None else f"{name}={value}")
        if received is not None:
            parts.append(f"received={received}")
        self._replaceTop("via", _encode(";".join(parts)))

    # -- route sets ----------------------------------------------------------

    def _addresses(self, key: str, what: str) -> list[NameAddr]:
        cached = self._cache.get(key + "*")
        if cached is None:
            wildcard = key == "contact"
            return self._build(
                key + "*",
                lambda: [
                    parseNameAddrBytes(_nonBlank(raw, what), wildcard)
                    for raw in self._elementBytes(key)
                ],
            )
        return cast(list[NameAddr], cached)

    @property
    def topRoute(self) -> NameAddr | None:
        """
        The top Route value, or L{None} when there is none; only that value
        is parsed.

        @raise SIPParseError: (400) if it is malformed.
        """
        cached = self._cache.get("route^", _UNSET)
        if cached is _UNSET:
            return self._build("route^", lambda: self._firstAddress("route", "Route"))
        return cast("NameAddr | None", cached)

    def _firstAddress(self, key: str, what: str) -> NameAddr | None:
        keys = self._keys
        if key not in keys:
            return None
        raw = _firstElement(self._parts[2 * keys.index(key) + 2], what)
        return parseNameAddrBytes(_nonBlank(raw, what))

    @property
    def routes(self) -> list[NameAddr]:
        """
        The Route values, top first.

        @raise SIPParseError: (400) if one is malformed.
        """
        return self._addresses("route", "Route")

    def popRoute(self) -> NameAddr | None:
        """
        Remove the top Route value and return it, or L{None} if there is none.

        @raise SIPParseError: (400) if the removed value is malformed.
        """
        route = self.topRoute
        if route is not None:
            self._dropTop("route")
        return route

    def prependRoute(self, value: str | bytes) -> None:
        """
        Add C{value} (a name-addr, e.g. C{"<sip:p.example.com;lr>"}) as the new
        top Route.
        """
        self.addHeader("Route", value, first=True)

    @property
    def recordRoutes(self) -> list[NameAddr]:
        """
        The Record-Route values, top first.

        @raise SIPParseError: (400) if one is malformed.
        """
        return self._addresses("record-route", "Record-Route")

    def addRecordRoute(self, value: str | bytes) -> None:
        """
        Add C{value} as the new top Record-Route (RFC 3261 §16.6 step 4).
        """
        self.addHeader("Record-Route", value, first=True)

    @property
    def paths(self) -> list[NameAddr]:
        """
        The Path values (RFC 3327), top first.

        @raise SIPParseError: (400) if one is malformed.
        """
        return self._addresses("path", "Path")

    def addPath(self, value: str | bytes) -> None:
        """
        Add C{value} as the new top Path (RFC 3327 §5.1).
        """
        self.addHeader("Path", value, first=True)

    # -- Contact -------------------------------------------------------------

    @property
    def contacts(self) -> list[NameAddr]:
        """
        The Contact values in order.  A C{*} Contact is a L{NameAddr} with
        C{isWildcard} set.

        @raise SIPParseError: (400) if one is malformed (for instance an
            addr-spec with C{?} outside C{<>}, RFC 4475 §3.1.2.13).
        """
        return self._addresses("contact", "Contact")

    def setContacts(self, values: Iterable[str | bytes]) -> None:
        """
        Replace every Contact field by one field per value, where the first
        Contact was (or at the end).
        """
        encoded = [_encode(value) for value in values]
        keys = self._keys
        position = keys.index("contact") if "contact" in keys else len(keys)
        self.removeHeader("contact")
        self._keys[position:position] = ["contact"] * len(encoded)
        self._parts[2 * position + 1 : 2 * position + 1] = [
            piece for value in encoded for piece in (b"Contact", b" " + value)
        ]
        self._changed("contact")

    # -- dialog and transaction identifiers -------------------------------

    @property
    def fromAddr(self) -> NameAddr:
        """
        The From value.
        """
        address = self._from
        if address is None:
            address = self._from = self._decoded(lambda: parseNameAddrBytes(self._fieldAt("from")))
        return address

    @property
    def toAddr(self) -> NameAddr:
        """
        The To value.
        """
        address = self._to
        if address is None:
            address = self._to = self._decoded(lambda: parseNameAddrBytes(self._fieldAt("to")))
        return address

    @property
    def fromTag(self) -> str | None:
        """
        The From tag, or L{None} (RFC 2543 peers send none).
        """
        address = self._from
        return (address if address is not None else self.fromAddr).tag

    @property
    def toTag(self) -> str | None:
        """
        The To tag, or L{None}.
        """
        address = self._to
        return (address if address is not None else self.toAddr).tag

    @property
    def callID(self) -> str:
        """
        The Call-ID.
        """
        callID = self._callID
        if callID is None:
            callID = self._callID = self._decoded(lambda: _callID(self._fieldAt("call-id")))
        return callID

    def _fieldAt(self, key: str) -> bytes:
        index = self._single(key)
        if index < 0:
            raise SIPParseError(f"no {displayName(key)} header")
        return self._parts[2 * index + 2]

    @property
    def cseq(self) -> CSeq:
        """
        The CSeq number and method.
        """
        cseq = self._cseq
        if cseq is None:
            cseq = self._cseq = self._decoded(lambda: _cseq(self._fieldAt("cseq")))
        return cseq

    # -- scalar headers ------------------------------------------------------

    def _scalar(self, key: str, limit: int) -> int | None:
        cached = self._cache.get(key, _UNSET)
        if cached is _UNSET:
            return self._build(key, lambda: self._parseScalar(key, limit))
        return cast("int | None", cached)

    def _parseScalar(self, key: str, limit: int) -> int | None:
        index = self._single(key)
        if index < 0:
            return None
        return _number(self._parts[2 * index + 2], limit, key)

    @property
    def maxForwards(self) -> int | None:
        """
        The Max-Forwards value (0 to 255), or L{None} when absent.
        """
        return self._scalar("max-forwards", 255)

    def setMaxForwards(self, value: int) -> None:
        """
        Set Max-Forwards, in place when present, else right after the Vias.
        """
        if not 0 <= value <= 255:
            raise ValueError(f"Max-Forwards out of range: {value}")
        if "max-forwards" in self._keys:
            self.setHeader("max-forwards", str(value))
        else:
            self.addHeader("Max-Forwards", str(value), first=True)

    def decrementMaxForwards(self) -> int:
        """
        Decrement Max-Forwards, adding it as 69 when it is absent (RFC 3261
        §16.6 step 3 treats a missing one as 70).  Check L{maxForwards} for 0
        first: that request gets 483 (§16.3).

        @return: the new value.
        @raise ValueError: if Max-Forwards is already 0.
        """
        current = self.maxForwards
        if current is None:
            current = 70
        if current == 0:
            raise ValueError("Max-Forwards is 0; answer 483 instead")
        self.setMaxForwards(current - 1)
        return current - 1

    @property
    def expires(self) -> int | None:
        """
        The Expires value in seconds, or L{None} when absent.

        @raise SIPParseError: (400) for a value that is not delta-seconds
            below 2**32 (RFC 4475 §3.1.2.4).
        """
        return self._scalar("expires", 0xFFFFFFFF)

    @property
    def contentLength(self) -> int | None:
        """
        The Content-Length header value, or L{None} when absent.
        """
        return self._scalar("content-length", 0xFFFFFFFF)

    @property
    def contentType(self) -> str | None:
        """
        The media type of the body, lower-cased and without parameters
        (C{"application/sdp"}), or L{None}.
        """
        cached = self._cache.get("content-type", _UNSET)
        if cached is _UNSET:
            return self._build("content-type", self._contentType)
        return cast("str | None", cached)

    def _contentType(self) -> str | None:
        index = self._single("content-type")
        if index < 0:
            return None
        media = self._fieldValue(index).split(b";", 1)[0].strip(b" \t").lower()
        kind, slash, sub = media.partition(b"/")
        kind, sub = kind.rstrip(b" \t"), sub.lstrip(b" \t")
        if not slash or not isTokenBytes(kind) or not isTokenBytes(sub):
            raise SIPParseError("bad Content-Type")
        return (kind + b"/" + sub).decode("ascii")

    @property
    def sessionExpires(self) -> SessionExpires | None:
        """
        The Session-Expires value (RFC 4028), or L{None}.
        """
        cached = self._cache.get("session-expires", _UNSET)
        if cached is _UNSET:
            return self._build("session-expires", self._sessionExpires)
        return cast("SessionExpires | None", cached)

    def _sessionExpires(self) -> SessionExpires | None:
        index = self._single("session-expires")
        if index < 0:
            return None
        value = decodeText(self._fieldValue(index))
        seconds, semi, rest = value.partition(";")
        seconds = seconds.strip(" \t")
        if not seconds.isdigit() or not seconds.isascii() or len(seconds) > 10:
            raise SIPParseError("bad Session-Expires")
        if int(seconds) > 0xFFFFFFFF:
            raise SIPParseError("Session-Expires out of range")
        params = parseParams(semi + rest) if semi else {}
        refresher = params.get("refresher")
        return SessionExpires(int(seconds), refresher.lower() if refresher else None)

    def _optionTags(self, key: str) -> list[str]:
        cached = self._cache.get(key + "*")
        if cached is None:
            return self._build(key + "*", lambda: self.getHeaderValues(key))
        return cast(list[str], cached)

    @property
    def require(self) -> list[str]:
        """
        The option tags of Require.
        """
        return self._optionTags("require")

    @property
    def proxyRequire(self) -> list[str]:
        """
        The option tags of Proxy-Require (a proxy answers 420 for the ones
        it does not support, RFC 3261 §16.3 step 5).
        """
        return self._optionTags("proxy-require")

    @property
    def supported(self) -> list[str]:
        """
        The option tags of Supported.
        """
        return self._optionTags("supported")

    # -- body and serialization -------------------------------------------

    @property
    def body(self) -> bytes:
        """
        The body (framed by Content-Length; may be binary).
        """
        return self._body

    def setBody(self, body: bytes, contentType: str | None = None) -> None:
        """
        Replace the body and its Content-Length (and Content-Type if given).
        """
        self._body = body
        self._setOrAdd("content-length", "Content-Length", str(len(body)))
        if contentType is not None:
            self._setOrAdd("content-type", "Content-Type", contentType)
        self._wire = None

    def _setOrAdd(self, key: str, name: str, value: str) -> None:
        self.setHeader(key if key in self._keys else name, value)

    def ensureContentLength(self) -> None:
        """
        Add a Content-Length field when there is none.  Call it before
        sending over a stream transport a message that came over UDP without
        one (RFC 3261 §18.3 and §20.14).
        """
        if "content-length" not in self._keys:
            self.addHeader("Content-Length", str(len(self._body)))

    def toBytes(self) -> bytes:
        """
        Serialize.  Untouched header fields are emitted exactly as received.
        """
        wire = self._wire
        if wire is None:
            parts = self._parts
            fields = map(b":".join, zip(parts[1::2], parts[2::2], strict=True))
            wire = self._wire = b"\r\n".join([parts[0], *fields]) + b"\r\n\r\n" + self._body
        return wire

    __bytes__ = toBytes

    def size(self) -> int:
        """
        The length of L{toBytes}, without serializing.
        """
        wire = self._wire
        if wire is not None:
            return len(wire)
        parts = self._parts
        # Each field is "name:value" plus CRLF; then the empty line.
        return sum(map(len, parts)) + 3 * (len(parts) // 2) + 4 + len(self._body)

    def compact(self) -> None:
        """
        Forget the decoded values (they are decoded again when next asked
        for): for a message that is only kept, such as the request of a
        transaction waiting out its timers, which then holds fewer objects
        for the garbage collector to scan.
        """
        self._cache = {}
        self._via = self._from = self._to = self._callID = self._cseq = None

    def copy(self) -> Self:
        """
        An independent copy, to change without affecting this one.
        """
        other = self._blank()
        other._parts = list(self._parts)
        other._keys = list(self._keys)
        other._body = self._body
        other._wire = self._wire
        other._cache = dict(self._cache)
        other._via = self._via
        other._from = self._from
        other._to = self._to
        other._callID = self._callID
        other._cseq = self._cseq
        return other

    def _blank(self) -> Self:
        raise NotImplementedError  # pragma: no cover


def _nonEmpty(text: str, what: str) -> str:
    if not text:
        raise SIPParseError(f"empty {what} value")
    return text


def _nonBlank(raw: bytes, what: str) -> bytes:
    if not raw.strip(b" \t\r\n"):
        raise SIPParseError(f"empty {what} value")
    return raw


def _firstElement(raw: bytes, what: str) -> bytes:
    # The first element of a comma-separated field value.
    if b"," not in raw:
        return raw
    start, end = splitList(raw)[0]
    return _nonBlank(raw[start:end], what)


def _firstVia(raw: bytes) -> Via:
    return parseViaBytes(_firstElement(raw, "Via"))


def _callID(raw: bytes) -> str:
    value = _clean(raw)
    if not value or b" " in value or b"\t" in value:
        raise SIPParseError("bad Call-ID")
    return decodeText(value)


def _cseq(raw: bytes) -> CSeq:
    parts = raw.split()
    if len(parts) != 2 or not parts[0].isdigit():
        raise SIPParseError("bad CSeq")
    method = _METHODS.get(parts[1])
    if method is None:
        if not isTokenBytes(parts[1]):
            raise SIPParseError("bad CSeq method")
        method = parts[1].decode("ascii")
    if len(parts[0]) > 10 or int(parts[0]) > _MAX_CSEQ:
        raise SIPParseError("CSeq number out of range")
    return CSeq(int(parts[0]), method)


def _number(raw: bytes, limit: int, key: str) -> int:
    value = _clean(raw)
    if not value.isdigit() or len(value) > 10 or int(value) > limit:
        raise SIPParseError(f"bad {displayName(key)} value")
    return int(value)


class SIPRequest(SIPMessage):
    """
    A SIP request.

    @ivar method: the method, case preserved (methods are case-sensitive).
    """

    __slots__ = ("method", "_uriText")

    isRequest = True
    method: str
    _uriText: str

    def _blank(self) -> Self:
        other = type(self)()
        other.method = self.method
        other._uriText = self._uriText
        return other

    @property
    def uriText(self) -> str:
        """
        The Request-URI as written.
        """
        return self._uriText

    @property
    def uri(self) -> URI:
        """
        The parsed Request-URI.

        @raise SIPParseError: (400) if it is malformed.
        """
        uri = self._cache.get("uri")
        if uri is None:
            return self._build("uri", lambda: parseURI(self._uriText))
        return cast(URI, uri)

    def setURI(self, uri: str | bytes | URI) -> None:
        """
        Replace the Request-URI (the Request-Line is then rewritten with
        single spaces and C{SIP/2.0}).

        @raise ValueError: if C{uri} is empty or contains whitespace.
        """
        text = uri if isinstance(uri, str | bytes) else uri.text
        raw = _encode(text)
        if b" " in raw or b"\t" in raw or not raw:
            raise ValueError(f"bad Request-URI {raw[:60]!r}")
        self._uriText = decodeText(raw)
        self._parts[0] = self.method.encode("ascii") + b" " + raw + b" SIP/2.0"
        self._wire = None
        self._cache.pop("uri", None)

    def __repr__(self) -> str:
        return f"<SIPRequest {self.method} {self._uriText}>"


class SIPResponse(SIPMessage):
    """
    A SIP response.

    @ivar code: the status code (100 to 699).
    @ivar reason: the reason phrase (UTF-8, possibly empty).
    """

    __slots__ = ("code", "reason")

    code: int
    reason: str

    def _blank(self) -> Self:
        other = type(self)()
        other.code = self.code
        other.reason = self.reason
        return other

    def __repr__(self) -> str:
        return f"<SIPResponse {self.code} {self.reason}>"


# -- parsing ----------------------------------------------------------------


def _parseStartLine(line: bytes) -> SIPRequest | SIPResponse:
    # The common forms first, then the general (liberal) parser.
    if line[:8] == b"SIP/2.0 ":
        code = line[8:11]
        if len(code) == 3 and code.isdigit() and code[0] != 0x30 and line[11:12] in (b"", b" "):
            reason = line[12:]
            if reason.translate(None, _CONTROL) == reason and int(code) < 700:
                response = SIPResponse()
                response.code = int(code)
                response.reason = decodeText(reason)
                return response
    else:
        parts = line.split(b" ")
        if len(parts) == 3 and parts[2] == b"SIP/2.0" and parts[1].startswith(_URI_PREFIXES):
            method = _METHODS.get(parts[0])
            if method is not None:
                request = SIPRequest()
                request.method = method
                request._uriText = decodeText(parts[1])
                return request
    return _parseStartLineSlow(line)


def _parseStartLineSlow(line: bytes) -> SIPRequest | SIPResponse:
    if line[:4].upper() == b"SIP/":
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[0].upper() != b"SIP/2.0":
            raise SIPParseError("bad Status-Line", DROP)
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or code[:1] == b"0":
            raise SIPParseError("bad status code", DROP)
        reason = parts[2] if len(parts) == 3 else b""
        if reason.translate(None, _CONTROL) != reason:
            raise SIPParseError("control character in reason phrase", DROP)
        if not 100 <= int(code) <= 699:
            raise SIPParseError("status code out of range", DROP)
        response = SIPResponse()
        response.code = int(code)
        response.reason = decodeText(reason)
        return response
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[1]:
        # Liberal: several SP between the elements, or trailing SP.
        parts = line.split()
        if len(parts) != 3:
            why = "whitespace in Request-URI" if len(parts) > 3 else "bad Request-Line"
            raise SIPParseError(why)
    method, uri, version = parts
    if version.upper() != b"SIP/2.0":
        name, slash, number = version.partition(b"/")
        major, dot, minor = number.partition(b".")
        if name.upper() == b"SIP" and slash and dot and major.isdigit() and minor.isdigit():
            raise SIPParseError(f"unsupported version {version[:20]!r}", 505)
        raise SIPParseError("bad SIP-Version in Request-Line")
    if not isTokenBytes(method):
        raise SIPParseError("bad method")
    if uri[:1] == b"<":
        raise SIPParseError("<> around the Request-URI")
    uriText = decodeText(uri)
    if uriScheme(uriText) not in SUPPORTED_SCHEMES:
        raise SIPParseError(f"unsupported URI scheme in {uriText[:60]!r}", 416)
    request = SIPRequest()
    request.method = method.decode("ascii")
    request._uriText = uriText
    return request


def _splitFieldsSlow(head: bytes) -> tuple[list[bytes], list[str]]:
    # The exact path: folding, unknown or spaced names, and every error.
    lines = head.split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise SIPParseError("bare CR or LF in the header section")
    parts = [lines[0]]
    keys: list[str] = []
    pending: list[bytes] = []  # the pieces of the current value
    for line in lines[1:]:
        if line[:1] == b" " or line[:1] == b"\t":
            if not keys:
                raise SIPParseError("continuation line before the first header")
            pending.append(line)
            continue
        if pending:
            parts.append(b"\r\n".join(pending))
        colon = line.find(b":")
        if colon < 1:
            raise SIPParseError(f"header line without a name and colon: {line[:40]!r}")
        name = line[:colon]
        keys.append(_SPELL(name) or headerKey(name))
        parts.append(name)
        pending = [line[colon + 1 :]]
    if pending:
        parts.append(b"\r\n".join(pending))
    return parts, keys


def _splitFields(head: bytes) -> tuple[list[bytes], list[str]]:
    parts = _SPLIT_FIELDS(head)
    keys = list(map(_SPELL, parts[1::2]))
    count = len(keys)
    # Every CR and LF of the header section was a field separator: no
    # folding, no line without a colon, no bare CR or LF.
    if head.count(b"\n") != count or head.count(b"\r") != count:
        return _splitFieldsSlow(head)
    if not all(keys):  # a name not in the spelling table
        for index, key in enumerate(keys):
            if key is None:
                name = parts[2 * index + 1]
                if name[:1] == b" " or name[:1] == b"\t":
                    return _splitFieldsSlow(head)  # a folded line with a colon
                keys[index] = headerKey(name)
    return parts, cast(list[str], keys)


def _checkLimits(head: bytes, parts: list[bytes], count: int, limits: Limits) -> None:
    if count > limits.maxHeaderCount:
        raise SIPParseError("too many header fields", 513)
    if len(head) > limits.maxHeaderLineLength:
        longest = limits.maxHeaderLineLength
        for index in range(count):
            if len(parts[2 * index + 1]) + len(parts[2 * index + 2]) >= longest:
                raise SIPParseError("header field too long", 513)


def _contentLength(parts: list[bytes], keys: list[str], limits: Limits) -> int | None:
    # Callers have checked that Content-Length appears at most once.
    if "content-length" not in keys:
        return None
    value = parts[2 * keys.index("content-length") + 2].strip(b" \t")
    if not value.isdigit():
        value = _clean(value)
    if not value.isdigit() or len(value) > 10:
        raise SIPParseError(f"bad Content-Length {value[:20]!r}")
    length = int(value)
    if length > limits.maxBodySize:
        raise SIPParseError("body too large", 413)
    return length


def contentLengthOf(head: bytes, limits: Limits = DEFAULT_LIMITS) -> int | None:
    """
    The Content-Length of a message, from its header section alone (start
    line and header fields, without the empty line), or L{None} if it has
    none.  Used by the stream framer.

    @raise SIPParseError: if the header section cannot be split into fields,
        exceeds C{limits}, or has a repeated or malformed Content-Length.
    """
    parts, keys = _splitFields(head)
    _checkLimits(head, parts, len(keys), limits)
    if keys.count("content-length") > 1:
        raise SIPParseError("more than one Content-Length header")
    return _contentLength(parts, keys, limits)


def _parse(data: bytes, start: int, limits: Limits, datagram: bool) -> SIPRequest | SIPResponse:
    size = len(data)
    if size - start > limits.maxMessageSize:
        raise SIPParseError("message too large", 513)
    end = data.find(b"\r\n\r\n", start)
    complete = True
    if end >= 0:
        head = data[start:end]
        bodyStart = end + 4
    elif datagram and data.endswith(b"\r\n") and size - start > 2:
        # Liberal: the datagram ends right after the last header line.
        head = data[start:-2]
        bodyStart = size
        complete = False
    else:
        raise SIPParseError("no empty line after the header section")
    parts, keys = _splitFields(head)
    count = len(keys)
    _checkLimits(head, parts, count, limits)
    message = _parseStartLine(parts[0])
    message._parts = parts
    message._keys = keys

    # The single-value fields read below must appear once (RFC 4475 §3.3.8).
    if len(set(keys)) != count:
        for key in _SINGLE:
            if keys.count(key) > 1:
                raise SIPParseError(f"more than one {displayName(key)} header")

    # Framing first: a bad Content-Length makes everything else moot.
    length = _contentLength(parts, keys, limits)
    if length is None:
        if not datagram:
            raise SIPParseError("no Content-Length on a stream")
        messageEnd = size
    else:
        messageEnd = bodyStart + length
        if messageEnd > size:
            raise SIPParseError("Content-Length larger than the message")
        if not datagram and messageEnd != size:
            raise SIPParseError("octets after the body")
    message._body = data[bodyStart:messageEnd]
    if not complete:
        message._wire = None
    elif start == 0 and messageEnd == size:
        message._wire = data
    else:
        message._wire = data[start:messageEnd]

    # What a proxy must check before it may forward a request (RFC 3261
    # §16.3): decoded now, kept for the accessors.
    try:
        via = keys.index("via")
        fromIndex = keys.index("from")
        toIndex = keys.index("to")
        callID = keys.index("call-id")
        cseqIndex = keys.index("cseq")
    except ValueError:
        missing = [displayName(k) for k in _MANDATORY if k not in keys]
        raise SIPParseError("missing " + ", ".join(missing)) from None
    message._cache = {"content-length": length}
    message._via = _firstVia(parts[2 * via + 2])
    message._from = parseNameAddrBytes(parts[2 * fromIndex + 2])
    message._to = parseNameAddrBytes(parts[2 * toIndex + 2])
    message._callID = _callID(parts[2 * callID + 2])
    cseq = message._cseq = _cseq(parts[2 * cseqIndex + 2])
    if message.isRequest:
        if cseq.method != cast(SIPRequest, message).method:
            raise SIPParseError("CSeq method does not match the request method")
        message._cache["max-forwards"] = (
            _number(parts[2 * keys.index("max-forwards") + 2], 255, "max-forwards")
            if "max-forwards" in keys
            else None
        )
    return message


def parseMessage(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, datagram: bool = True
) -> SIPRequest | SIPResponse:
    """
    Parse one SIP message.

    @param data: a whole UDP datagram (C{datagram=True}), or one message as
        framed by L{sipxmpp.sip.wire.framing.StreamFramer} (C{datagram=False}:
        Content-Length is then mandatory and must match exactly).
    @param limits: size limits.
    @raise SIPParseError: if the message is malformed or too large.  For a
        request, C{code} is the status to answer with and
        L{errorResponse} builds that answer; for a response, or anything
        unreadable, C{code} is L{DROP}.
    """
    start = 0
    if data[:2] == b"\r\n":
        # Skip CRLFs before the start line (RFC 3261 §7.5).
        while data.startswith(b"\r\n", start):
            start += 2
    try:
        return _parse(data, start, limits, datagram)
    except SIPParseError as error:
        annotateError(error, data[start : start + limits.maxMessageSize])
        raise


# -- error responses -----------------------------------------------------------

_CONTEXT_KEYS = frozenset(("via", "from", "to", "call-id", "cseq"))


def annotateError(error: SIPParseError, data: bytes) -> None:
    """
    Fill in C{isRequest}, C{method} and C{context} of C{error} from the raw
    message C{data}, without raising, and turn the error of a malformed
    response into a drop.  Used by the parser and the stream framer.
    """
    lineEnd = data.find(b"\r\n")
    startLine = data if lineEnd < 0 else data[:lineEnd]
    if not startLine.strip():
        error.isRequest = None
        error.code = DROP
        return
    if startLine[:4].upper() == b"SIP/":
        error.isRequest = False
        error.code = DROP
        return
    method, space, _ = startLine.partition(b" ")
    words = startLine.split()
    isMethod = bool(space) and isTokenBytes(method)
    if not isMethod and not (len(words) > 1 and words[-1][:4].upper() == b"SIP/"):
        # Neither "method SP ..." nor "... SIP/x.y": not a request.
        error.isRequest = None
        error.code = DROP
        return
    error.isRequest = True
    error.method = method.decode("ascii") if isMethod else None
    if error.code is None or lineEnd < 0:
        return
    end = data.find(b"\r\n\r\n")
    head = data[lineEnd + 2 : end if end >= 0 else len(data)]
    context: list[tuple[str, bytes]] = []
    for line in head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t").split(b"\r\n"):
        colon = line.find(b":")
        if colon < 1:
            continue
        name = line[:colon]
        key = _SPELL(name)
        if key is None:
            try:
                key = headerKey(name)
            except SIPParseError:
                continue
        if key in _CONTEXT_KEYS:
            value = line[colon + 1 :].strip(b" \t")
            # Never echo a CR or LF into a response we build.
            if b"\r" not in value and b"\n" not in value:
                context.append((key, value))
    error.context = tuple(context)


def _tagFor(*parts: bytes) -> str:
    # Deterministic, so that a retransmitted request gets the same tag.
    return hashlib.blake2s(b"\0".join(parts), digest_size=6).hexdigest()


def _statusLine(code: int, reason: str | None) -> bytes:
    if not 100 <= code <= 699:
        raise ValueError(f"status code out of range: {code}")
    phrase = REASON_PHRASES.get(code, "Unknown") if reason is None else reason
    return b"SIP/2.0 %d " % code + _encode(phrase)


def errorResponse(error: SIPParseError, toTag: str | None = None) -> bytes | None:
    """
    Build the response to a request that failed to parse (RFC 3261 §8.2.6):
    status C{error.code}, the Via values, From, To (with a tag added), Call-ID
    and CSeq copied as received, and C{Content-Length: 0}.

    Headers that could not be read are left out; at least one Via is needed
    to send anything back.

    @param toTag: the To tag to add when the To has none; by default one
        derived from the request, so retransmissions get the same one.
    @return: the response bytes, or L{None} when nothing must be sent: the
        error is a drop, the message was not a request, the request is an
        ACK (never answered), or no Via could be read.
    """
    if error.code is None or error.isRequest is not True or error.method == "ACK":
        return None
    context = error.context
    if not any(key == "via" for key, _ in context):
        return None
    lines = [_statusLine(error.code, None)]
    seen: set[str] = set()
    for key, value in context:
        if key != "via":
            # A duplicated single-value header (RFC 4475 §3.3.8): copy the first.
            if key in seen:
                continue
            seen.add(key)
        if key == "to" and not _hasTag(value):
            value += b";tag=" + (toTag or _tagFor(*(v for _, v in context))).encode("ascii")
        lines.append(displayName(key).encode("ascii") + b": " + value)
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _hasTag(value: bytes) -> bool:
    try:
        return parseNameAddr(decodeText(value)).tag is not None
    except SIPParseError:
        return b";tag=" in value.lower()


def makeResponse(
    request: SIPRequest,
    code: int,
    reason: str | None = None,
    *,
    toTag: str | None = None,
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    contentType: str | None = None,
) -> SIPResponse:
    """
    Build a response to C{request} (RFC 3261 §8.2.6.2): Via fields (as they
    are now, so with any C{received}/C{rport} set), From, To, Call-ID and CSeq
    copied, a To tag added when the To has none (except for 100), then
    C{headers}, Content-Type and Content-Length.

    @param toTag: the tag to add; by default one derived from the request.
    @raise ValueError: for a status code outside 100-699 or a header value
        with CR or LF.
    """
    data = responseBytes(request, code, reason, toTag=toTag, headers=headers, body=body,
                         contentType=contentType)
    return cast(SIPResponse, parseMessage(data, _UNLIMITED))


def responseBytes(
    request: SIPRequest,
    code: int,
    reason: str | None = None,
    *,
    toTag: str | None = None,
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    contentType: str | None = None,
) -> bytes:
    """
    L{makeResponse} as bytes only, for a response that is just sent (100
    Trying): no parse of what was built.
    """
    lines = [_statusLine(code, reason)]
    keys = request._keys
    parts = request._parts
    for index, key in enumerate(keys):
        if key == "via":
            lines.append(parts[2 * index + 1] + b":" + parts[2 * index + 2])
    for key in ("from", "to", "call-id", "cseq"):
        index = keys.index(key)
        raw = parts[2 * index + 1] + b":" + parts[2 * index + 2]
        if key == "to" and code != 100 and request.toTag is None:
            if toTag is None:
                toTag = _tagFor(
                    request.callID.encode("utf-8", "surrogateescape"),
                    (request.fromTag or "").encode("utf-8", "surrogateescape"),
                    (request.topVia.branch or "").encode("utf-8", "surrogateescape"),
                    str(request.cseq.number).encode("ascii"),
                )
            raw = raw + b";tag=" + _encode(toTag)
        lines.append(raw)
    for name, value in headers:
        lines.append(name.encode("ascii") + b": " + _encode(value))
    if body and contentType is not None:
        lines.append(b"Content-Type: " + _encode(contentType))
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# Responses built from a request that passed the limits are not limited again.
_UNLIMITED = Limits(2**62, 2**62, 2**62, 2**62)
