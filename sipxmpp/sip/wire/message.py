"""
Sans-IO SIP messages (RFC 3261 §7, §20, §25): read, change and serialize
the requests and responses made by L{sipxmpp.sip.wire.parser.parseMessage}.

A message keeps its header fields as the raw names and values found on the
wire.  The parser decodes only what a proxy checks first; every other value
is decoded on first access, and an accessor that finds it malformed raises
the same L{SIPParseError} the parser does (with code L{DROP} for a
response, which is never answered).

Serialization re-emits every header field the proxy did not touch byte for
byte, in its original order, spelling (compact or long form) and folding;
an unmodified message serializes to exactly the bytes it was parsed from.
Only the mutations a proxy makes rewrite anything: push/pop the top Via
(also when it is one value of a comma-joined line), pop the top Route, add
Record-Route / Path / Route at the top, set or decrement Max-Forwards,
replace Contact, set the Request-URI, add C{received}/C{rport} to the top
Via, and generic add/set/remove of other fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Self, TypeVar, cast

from sipxmpp.sip.wire.errors import DROP, SIPParseError
from sipxmpp.sip.wire.fields import (
    _callID,
    _clean,
    _cseq,
    _encode,
    _firstElement,
    _firstVia,
    _nonBlank,
    _number,
)
from sipxmpp.sip.wire.grammar import decodeText, isTokenBytes, parseParams, splitList
from sipxmpp.sip.wire.headers import (
    CSeq,
    NameAddr,
    SessionExpires,
    Via,
    canonicalName,
    displayName,
    parseNameAddrBytes,
    parseViaBytes,
)
from sipxmpp.sip.wire.uri import URI, parseURI

__all__ = ["SIPMessage", "SIPRequest", "SIPResponse"]

_T = TypeVar("_T")
_UNSET = object()
_HOT_SLOTS = {"via": "_via", "from": "_from", "to": "_to", "call-id": "_callID", "cseq": "_cseq"}


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
        parts = self._parts
        # _fieldValue and decodeText, inlined: _loopHash reads every Route.
        return [_clean(parts[2 * i + 2]).decode("utf-8", "surrogateescape")
                for i, k in enumerate(self._keys) if k == key]

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
        out: list[bytes] = []
        for index, k in enumerate(self._keys):
            if k == key:
                raw = parts[2 * index + 2]
                # One element, no '<' left open: splitList's answer, without its calls.
                if b"," not in raw and b'"' not in raw and raw.rfind(b">") >= raw.rfind(b"<"):
                    out.append(raw)
                else:
                    out.extend(raw[start:end] for start, end in splitList(raw))
        return out

    # -- mutation primitives ---------------------------------------------

    def _changed(self, key: str) -> None:
        self._wire = None
        cache = self._cache
        if cache:
            # The decoded values of key: itself, all of it (*), its top (^).
            cache.pop(key, None)
            cache.pop(key + "*", None)
            cache.pop(key + "^", None)
        slot = _HOT_SLOTS.get(key)
        if slot is not None:
            setattr(self, slot, None)

    def _insertField(self, position: int, key: str, name: bytes, value: bytes) -> None:
        self._keys.insert(position, key)
        self._parts[2 * position + 1 : 2 * position + 1] = [name, b" " + value]

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

    def _addFirst(self, key: str, name: bytes, value: str | bytes) -> None:
        # addHeader(name, value, first=True) for the names this layer
        # spells itself (key and name known good): the proxy's hot path.
        self._insertField(self._insertPosition(key, True), key, name, _encode(value))
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
        keys, parts, wire = self._keys, self._parts, self._wire
        index = keys.index(key)
        value = parts[2 * index + 2]
        spans = splitList(value) if b"," in value else ()
        if len(spans) < 2:
            # The first line (our Via on a response): cut from the bytes kept.
            cut = len(parts[0]) if index == 0 and wire is not None else -1
            end = cut + 3 + len(parts[1]) + len(value)  # CRLF name ":" value
            del keys[index], parts[2 * index + 1 : 2 * index + 3]
            self._changed(key)
            if cut >= 0 and wire is not None:
                self._wire = wire[:cut] + wire[end:]
            return
        # Keep the name as spelled and the rest of the line as written.
        parts[2 * index + 2] = b" " + value[spans[1][0] :].lstrip(b" \t\r\n")
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
        self._addFirst("via", b"Via", value)

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
        cache = self._cache
        if "route^" in cache:
            # Not cast(): a function call, and the proxy asks for each Route.
            return cache["route^"]  # type: ignore[return-value]
        try:
            route = cache["route^"] = self._firstAddress("route", "Route")
        except SIPParseError as error:  # as _decoded does, without its calls
            if not self.isRequest:
                error.code = DROP
            raise
        return route

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
        self._addFirst("route", b"Route", value)

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
        self._addFirst("record-route", b"Record-Route", value)

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
        self._addFirst("path", b"Path", value)

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
        cache = self._cache
        if "max-forwards" in cache:  # as in topRoute
            return cache["max-forwards"]  # type: ignore[return-value]
        return self._scalar("max-forwards", 255)

    def setMaxForwards(self, value: int) -> None:
        """
        Set Max-Forwards, in place when present, else right after the Vias.
        """
        if not 0 <= value <= 255:
            raise ValueError(f"Max-Forwards out of range: {value}")
        keys = self._keys
        if keys.count("max-forwards") == 1:
            # setHeader's work for the usual single field, in place.
            self._parts[2 * keys.index("max-forwards") + 2] = b" %d" % value
            self._changed("max-forwards")
            self._cache["max-forwards"] = value
        elif "max-forwards" in keys:
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
        cache = self._cache
        if "uri" in cache:  # as in topRoute
            return cache["uri"]  # type: ignore[return-value]
        uri = cache["uri"] = parseURI(self._uriText)  # a request's error stays 400
        return uri

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
