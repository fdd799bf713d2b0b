"""
Raw header field values, both ways: encoding a value to write into a field,
and decoding the fields that both the parser and the message accessors read
(the top Via, Call-ID, CSeq, numbers).

L{sipxmpp.sip.wire.parser} decodes them up front; the accessors of
L{sipxmpp.sip.wire.message.SIPMessage} decode them again after a mutation
or L{compact<sipxmpp.sip.wire.message.SIPMessage.compact>}.  Internal to
C{sipxmpp.sip.wire}: nothing here is public.
"""

from __future__ import annotations

import functools

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.grammar import isTokenBytes, splitList
from sipxmpp.sip.wire.headers import CSeq, Via, displayName, parseViaBytes
from sipxmpp.sip.wire.uri import _MEMO_SIZE

__all__: list[str] = []

_MAX_CSEQ = 2**31 - 1
# CSeq(n, m) without the NamedTuple's __new__, a Python function.
_newCSeq = tuple.__new__
_METHODS = {
    method.encode("ascii"): method
    for method in (
        "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS",
        "PRACK", "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE",
    )
}  # fmt: skip


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
    value = raw.strip(b" \t")
    if b"\r" in value:
        value = _clean(value)
    if not value or b" " in value or b"\t" in value:
        raise SIPParseError("bad Call-ID")
    return value.decode("utf-8", "surrogateescape")  # decodeText, without a call


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _cseq(raw: bytes) -> CSeq:
    # Memoised like the Via and name-addr parsers: a dialog's CSeq values
    # repeat in every message of its transactions.
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
    return _newCSeq(CSeq, (int(parts[0]), method))


def _number(raw: bytes, limit: int, key: str) -> int:
    value = _clean(raw)
    if not value.isdigit() or len(value) > 10 or int(value) > limit:
        raise SIPParseError(f"bad {displayName(key)} value")
    return int(value)
