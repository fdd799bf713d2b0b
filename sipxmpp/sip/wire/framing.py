"""
Content-Length framing of SIP over stream transports (TCP, TLS; RFC 3261
§18.3), sans-IO.

A L{StreamFramer} is fed whatever chunks the connection delivers and hands
back complete messages as bytes, each to be parsed with
C{parseMessage(message, datagram=False)}.  CRLFs between messages are
skipped (RFC 3261 §7.5) and CRLFCRLF keep-alive pings are counted (RFC 5626
§3.5.1: answer each with one CRLF).

Any L{SIPParseError} raised by L{StreamFramer.feed} means the byte stream
can no longer be split into messages (missing, repeated, negative or
non-numeric Content-Length, or a header section or body over the limits):
send C{errorResponse(error)} if it is not L{None}, then close the
connection.  Messages completed before the bad one in the same chunk are
not lost: that call returns them, and the error is kept in
L{StreamFramer.pendingError} and raised by the next call.
"""

from __future__ import annotations

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.parser import DEFAULT_LIMITS, Limits, annotateError, contentLengthOf

__all__ = ["StreamFramer"]


class StreamFramer:
    """
    Split a byte stream into SIP messages by Content-Length.

    @ivar keepAlives: how many CRLFCRLF pings were seen between messages.
    @ivar scannedBytes: how many octets the search for the end of header
        sections has examined in all; each octet is examined a bounded number
        of times however the stream is chunked (tests use this to check that
        framing is linear).
    """

    __slots__ = (
        "_limits", "_buffer", "_scanFrom", "_messageEnd", "_crlfs", "keepAlives", "scannedBytes",
        "pendingError",
    )  # fmt: skip

    #: A framing error found after messages that were returned: the next
    #: call to L{feed} raises it.  Check it to close the connection at once.
    pendingError: SIPParseError | None

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()
        # Where to resume looking for CRLFCRLF in the current header section.
        self._scanFrom = 0
        # The length of the current message once its header section is known.
        self._messageEnd = -1
        # CRLFs seen in a row between messages.
        self._crlfs = 0
        self.keepAlives = 0
        self.scannedBytes = 0
        self.pendingError = None

    @property
    def buffered(self) -> int:
        """
        How many octets are held waiting for the rest of a message.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add C{data} from the stream.

        @return: the messages completed by it, in order (often none).
        @raise SIPParseError: if the stream cannot be framed any more.
        """
        if self.pendingError is not None:
            raise self.pendingError
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        try:
            self._frame(buffer, messages)
        except SIPParseError as error:
            if not messages:
                raise
            self.pendingError = error
        return messages

    def _frame(self, buffer: bytearray, messages: list[bytes]) -> None:
        limits = self._limits
        while buffer:
            if self._messageEnd < 0:
                if self._scanFrom == 0 and not self._skipCRLFs(buffer):
                    break
                start = self._scanFrom
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    self.scannedBytes += len(buffer) - start
                    if len(buffer) > limits.maxMessageSize:
                        error = SIPParseError("header section too large", 513)
                        annotateError(error, bytes(buffer[: limits.maxMessageSize]))
                        raise error
                    # The terminator may straddle this chunk and the next.
                    self._scanFrom = max(0, len(buffer) - 3)
                    break
                self.scannedBytes += end + 4 - start
                head = bytes(buffer[:end])
                try:
                    length = contentLengthOf(head, limits)
                    if length is None:
                        raise SIPParseError("no Content-Length on a stream")
                    if end + 4 + length > limits.maxMessageSize:
                        raise SIPParseError("message too large", 513)
                except SIPParseError as error:
                    annotateError(error, head + b"\r\n\r\n")
                    raise
                self._messageEnd = end + 4 + length
            if len(buffer) < self._messageEnd:
                break
            messages.append(bytes(buffer[: self._messageEnd]))
            del buffer[: self._messageEnd]
            self._messageEnd = -1
            self._scanFrom = 0

    def _skipCRLFs(self, buffer: bytearray) -> bool:
        # Drop CRLFs before a start line; False when the buffer is used up.
        skip = 0
        length = len(buffer)
        while skip + 1 < length and buffer[skip] == 13 and buffer[skip + 1] == 10:
            skip += 2
            self._crlfs += 1
            if self._crlfs == 2:
                self.keepAlives += 1
                self._crlfs = 0
        if skip:
            del buffer[:skip]
        if not buffer or buffer == b"\r":
            return False
        self._crlfs = 0
        return True
