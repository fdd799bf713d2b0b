"""
The responses this layer builds (RFC 3261 §8.2.6): the answer to a request
that failed to parse (L{errorResponse}), and a response to a parsed request
(L{makeResponse}, or L{responseBytes} for one that is only sent).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.fields import _encode
from sipxmpp.sip.wire.grammar import decodeText
from sipxmpp.sip.wire.headers import displayName, parseNameAddr
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import Limits, parseMessage

__all__ = ["REASON_PHRASES", "errorResponse", "makeResponse", "responseBytes"]

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
