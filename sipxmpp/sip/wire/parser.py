"""
Parsing SIP messages (RFC 3261 §7, §25): bytes to L{SIPRequest} or
L{SIPResponse}, within L{Limits}.

Parsing is lazy and transparent.  L{parseMessage} finds the end of the
header section with C{bytes.find} and splits it into raw fields in one
C-level pass (a single compiled C{re.split}, never a pattern per header;
folded or unusual sections take an exact slower path).  It decodes only
what a proxy must check before it can do anything with a request: the start
line, the framing (Content-Length) and the top Via, From, To, Call-ID, CSeq
and Max-Forwards, each through a one-match fast path for the usual forms
that falls back to the general parser.  Every other value is decoded on
first access, and an accessor that finds it malformed raises the same
L{SIPParseError} the parser does.  What is never decoded stays raw, and
the message re-emits it byte for byte (L{sipxmpp.sip.wire.message}).

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
    L{sipxmpp.sip.wire.message.SIPMessage.maxForwards} is then L{None}
    and L{sipxmpp.sip.wire.message.SIPMessage.decrementMaxForwards}
    treats it as 70 (RFC 3261 §16.6 step 3); a value above 255 is 400;
  - on a datagram, a missing Content-Length means "the rest of the datagram"
    (RFC 3261 §18.3), octets after Content-Length are ignored (§3.1.1.8),
    leading CRLFs are skipped, and a datagram whose header section ends
    with the end of the datagram instead of an empty line is accepted;
  - header lines must end in CRLF: a bare CR or LF in the header section
    is 400;
  - malformed responses are always dropped, never answered.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sipxmpp.sip.wire.errors import DROP, SIPParseError
from sipxmpp.sip.wire.fields import _METHODS, _callID, _clean, _cseq, _firstVia, _number
from sipxmpp.sip.wire.grammar import decodeText, isTokenBytes
from sipxmpp.sip.wire.headers import (
    _SPELLINGS as _HEADER_SPELLINGS,
)
from sipxmpp.sip.wire.headers import displayName, headerKey, parseNameAddrBytes, parseViaBytes
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.uri import SUPPORTED_SCHEMES, uriScheme

__all__ = ["DEFAULT_LIMITS", "Limits", "annotateError", "contentLengthOf", "parseMessage"]


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

_SPELL = _HEADER_SPELLINGS.get
# One C-level pass over the header section: [start-line, name0, value0,
# name1, value1, ...].  A value is everything after the colon, up to the
# next line that starts a field.
_SPLIT_FIELDS = re.compile(rb"\r\n([^\r\n:]*):").split
_CONTROL = bytes(range(32)).replace(b"\t", b"") + b"\x7f"
_URI_PREFIXES = (b"sip:", b"sips:", b"tel:")
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
# Header fields that may appear at most once and that the parser reads.
_SINGLE = ("content-length", "from", "to", "call-id", "cseq", "max-forwards")
# Header shapes (the names of the fields, in order) remembered.
_SHAPES = 1024


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
                response.reason = reason.decode("utf-8", "surrogateescape")  # decodeText
                return response
    else:
        parts = line.split(b" ")
        if len(parts) == 3 and parts[2] == b"SIP/2.0" and parts[1].startswith(_URI_PREFIXES):
            method = _METHODS.get(parts[0])
            if method is not None:
                request = SIPRequest()
                request.method = method
                request._uriText = parts[1].decode("utf-8", "surrogateescape")  # decodeText
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
    # Every key is now a str; not cast(): a Python call on every message.
    return parts, keys  # type: ignore[return-value]


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
    return _contentLengthAt(parts, keys.index("content-length"), limits)


def _contentLengthAt(parts: list[bytes], index: int, limits: Limits) -> int | None:
    # The Content-Length of field index, or None for index -1.
    if index < 0:
        return None
    value = parts[2 * index + 2].strip(b" \t")
    if not value.isdigit():
        value = _clean(value)
    if not value.isdigit() or len(value) > 10:
        raise SIPParseError(f"bad Content-Length {value[:20]!r}")
    length = int(value)
    if length > limits.maxBodySize:
        raise SIPParseError("body too large", 413)
    return length


# What _parse learns from the header names alone: the first single-value
# field that is repeated, the mandatory fields that are missing (error
# texts, or None), and the index of the fields it decodes (-1: absent).
_Shape = tuple[str | None, str | None, int, int, int, int, int, int, int]


@functools.lru_cache(maxsize=_SHAPES)
def _shapeOf(keys: tuple[str, ...]) -> _Shape:
    # Memoised: the messages of one peer share a few shapes, and this is a
    # dozen list scans per message otherwise.
    repeated = None
    if len(set(keys)) != len(keys):
        for key in _SINGLE:
            if keys.count(key) > 1:
                repeated = f"more than one {displayName(key)} header"
                break
    absent = [displayName(k) for k in _MANDATORY if k not in keys]
    missing = "missing " + ", ".join(absent) if absent else None
    at = [keys.index(k) if k in keys else -1
          for k in ("via", "from", "to", "call-id", "cseq", "content-length", "max-forwards")]
    return (repeated, missing, *at)  # type: ignore[return-value]


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
    if count > limits.maxHeaderCount or len(head) > limits.maxHeaderLineLength:
        _checkLimits(head, parts, count, limits)
    message = _parseStartLine(parts[0])
    message._parts = parts
    message._keys = keys

    # The single-value fields read below must appear once (RFC 4475 §3.3.8).
    repeated, missing, via, fromIndex, toIndex, callID, cseqIndex, lengthIndex, hops = _shapeOf(
        tuple(keys))
    if repeated is not None:
        raise SIPParseError(repeated)

    # Framing first: a bad Content-Length makes everything else moot.
    length = _contentLengthAt(parts, lengthIndex, limits)
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
    if missing is not None:
        raise SIPParseError(missing)
    message._cache = {"content-length": length}
    raw = parts[2 * via + 2]
    message._via = parseViaBytes(raw) if b"," not in raw else _firstVia(raw)
    message._from = parseNameAddrBytes(parts[2 * fromIndex + 2])
    message._to = parseNameAddrBytes(parts[2 * toIndex + 2])
    message._callID = _callID(parts[2 * callID + 2])
    cseq = message._cseq = _cseq(parts[2 * cseqIndex + 2])
    if type(message) is SIPRequest:
        if cseq.method != message.method:
            raise SIPParseError("CSeq method does not match the request method")
        message._cache["max-forwards"] = (
            _number(parts[2 * hops + 2], 255, "max-forwards") if hops >= 0 else None
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
        L{sipxmpp.sip.wire.responses.errorResponse} builds that answer; for
        a response, or anything unreadable, C{code} is L{DROP}.
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


# -- error context -----------------------------------------------------------

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
