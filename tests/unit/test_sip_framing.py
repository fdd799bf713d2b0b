"""
Tests for L{sipxmpp.sip.wire.framing}: Content-Length framing of SIP on
stream transports.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.message import SIPResponse
from sipxmpp.sip.wire.parser import Limits, parseMessage
from sipxmpp.sip.wire.responses import errorResponse
from tests.unit.test_sip_parser import REGISTER, request, response


class StreamFramerTests(SynchronousTestCase):
    """
    Content-Length framing on TCP and TLS.
    """

    def test_everySplitPoint(self) -> None:
        stream = REGISTER + request(body=b"hello") + response()
        for split in range(len(stream) + 1):
            framer = StreamFramer()
            out = framer.feed(stream[:split]) + framer.feed(stream[split:])
            self.assertEqual(out, [REGISTER, request(body=b"hello"), response()], split)
            self.assertEqual(framer.buffered, 0)

    def test_keepAlives(self) -> None:
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n\r\n\r\n"), [])
        self.assertEqual(framer.feed(b"\r"), [])
        self.assertEqual(framer.feed(b"\n" + REGISTER + b"\r\n\r\n"), [REGISTER])
        self.assertEqual(framer.keepAlives, 3)
        self.assertEqual(framer.buffered, 0)

    def test_partialMessageWaits(self) -> None:
        framer = StreamFramer()
        self.assertEqual(framer.feed(REGISTER[:-1]), [])
        self.assertEqual(framer.buffered, len(REGISTER) - 1)
        self.assertEqual(framer.feed(REGISTER[-1:]), [REGISTER])

    def test_framingErrors(self) -> None:
        for data, code in (
            (request().replace(b"Content-Length: 0\r\n", b""), 400),
            (request().replace(b"Content-Length: 0", b"Content-Length: -5"), 400),
            (request().replace(b"Content-Length: 0", b"Content-Length: five"), 400),
            (request(b"l: 0"), 400),
            (request().replace(b"Content-Length: 0", b"Content-Length: 99999999"), 413),
        ):
            error = self.assertRaises(SIPParseError, StreamFramer().feed, data)
            self.assertEqual(error.code, code, data)
            reply = parseMessage(errorResponse(error, toTag="z") or b"")
            assert isinstance(reply, SIPResponse)
            self.assertEqual((reply.code, reply.callID), (code, "c1@192.0.2.1"))

    def test_headerSectionTooLarge(self) -> None:
        framer = StreamFramer(Limits(maxMessageSize=300))
        framer.feed(b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n")
        error = self.assertRaises(SIPParseError, framer.feed, b"X-Pad: " + b"a" * 300)
        self.assertEqual(error.code, 513)
        self.assertEqual([key for key, _ in error.context], ["via"])
        large = request(body=b"x" * 200)
        error = self.assertRaises(SIPParseError, StreamFramer(Limits(maxMessageSize=len(large) - 1)).feed, large)
        self.assertEqual(error.code, 513)

    def test_responseFramingErrorIsDrop(self) -> None:
        error = self.assertRaises(SIPParseError, StreamFramer().feed, response().replace(b"Content-Length: 0", b"Content-Length: x"))
        self.assertIsNone(error.code)

    def test_messagesBeforeAnErrorAreKept(self) -> None:
        framer = StreamFramer()
        bad = request().replace(b"Content-Length: 0", b"Content-Length: x")
        self.assertEqual(framer.feed(REGISTER + bad), [REGISTER])
        pending = framer.pendingError
        assert pending is not None
        self.assertIs(self.assertRaises(SIPParseError, framer.feed, b""), pending)

    def test_framedMessageStillValidated(self) -> None:
        bad = request().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        framer = StreamFramer()
        (raw,) = framer.feed(bad + REGISTER[:10])
        self.assertEqual(self.assertRaises(SIPParseError, parseMessage, raw, datagram=False).code, 400)
        self.assertEqual(framer.feed(REGISTER[10:]), [REGISTER])
