"""
The one exception type of the SIP message layer.

Every malformed input the parser, the lazy header accessors or the stream
framer meet is reported as L{SIPParseError}; nothing else escapes them.  The
error says what a server should do about it: answer with C{code} (RFC 3261
§8.2.6 and §21) or, when C{code} is L{None}, drop the message silently
(always the case for malformed responses, RFC 3261 §16.7 and §18.1.2).
"""

from __future__ import annotations

__all__ = ["SIPParseError", "DROP"]

#: Marker for L{SIPParseError.code}: drop the message, send nothing.
DROP: None = None


class SIPParseError(ValueError):
    """
    A SIP message, or one of its header fields, is malformed or too large.

    @ivar reason: a short human-readable explanation (ASCII).
    @ivar code: the status code a server should answer a request with (400,
        413, 416, 505, 513, ...), or L{None} when the message must be dropped.
    @ivar isRequest: L{True} when the input looked like a request, L{False}
        for a response, L{None} when not even that could be told.
    @ivar method: the request method if it could be read, else L{None}.
    @ivar context: the raw values of the header fields an error response
        must copy (RFC 3261 §8.2.6.2), in message order, as
        C{(canonicalName, rawValue)} pairs with canonical names among
        C{"via"}, C{"from"}, C{"to"}, C{"call-id"} and C{"cseq"}.  Empty
        unless the input was a request whose header section could be split.
        L{sipxmpp.sip.wire.responses.errorResponse} turns it into bytes.
    """

    reason: str
    code: int | None
    isRequest: bool | None
    method: str | None
    context: tuple[tuple[str, bytes], ...]

    def __init__(
        self,
        reason: str,
        code: int | None = 400,
        *,
        isRequest: bool | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(reason, code)
        self.reason = reason
        self.code = code
        self.isRequest = isRequest
        self.method = method
        self.context = ()

    @property
    def drop(self) -> bool:
        """
        L{True} when the message must be discarded without any answer.
        """
        return self.code is None

    def __str__(self) -> str:
        what = "drop" if self.code is None else str(self.code)
        return f"{self.reason} ({what})"

    def __repr__(self) -> str:
        return f"SIPParseError({self.reason!r}, code={self.code!r})"
