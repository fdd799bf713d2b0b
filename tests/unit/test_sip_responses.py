"""
Tests for L{sipxmpp.sip.wire.responses}: the responses to requests that
failed to parse, and the ones built from a parsed request.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.message import SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import errorResponse, makeResponse
from tests.unit.test_sip_parser import parseRequest, request, response


class ErrorResponseTests(SynchronousTestCase):
    """
    Responses to requests that failed to parse (RFC 3261 §8.2.6).
    """

    def test_copiesWhatIsNeeded(self) -> None:
        data = request(
            b"Via: SIP/2.0/TCP second;branch=z9hG4bK2, SIP/2.0/UDP third;branch=z9hG4bK3", method=b"INVITE"
        ).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual((error.code, error.isRequest, error.method), (400, True, "INVITE"))
        out = errorResponse(error, toTag="t1")
        assert out is not None
        reply = parseMessage(out)
        assert isinstance(reply, SIPResponse)
        self.assertEqual((reply.code, reply.reason), (400, "Bad Request"))
        self.assertEqual([v.branch for v in reply.vias], ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"])
        self.assertEqual((reply.fromTag, reply.toTag, reply.callID), ("a1", "t1", "c1@192.0.2.1"))
        self.assertEqual(reply.cseq, (1, "BYE"))
        self.assertEqual(reply.body, b"")
        self.assertEqual(reply.contentLength, 0)

    def test_defaultTagIsStable(self) -> None:
        data = request(uri=b"mailto:bob@example.com")
        first = errorResponse(self.assertRaises(SIPParseError, parseMessage, data))
        second = errorResponse(self.assertRaises(SIPParseError, parseMessage, data))
        self.assertEqual(first, second)
        assert first is not None
        self.assertEqual(parseMessage(first).code, 416)  # type: ignore[union-attr]
        other = errorResponse(self.assertRaises(SIPParseError, parseMessage, data.replace(b"c1@", b"c2@")))
        self.assertNotEqual(parseMessage(first).toTag, parseMessage(other or b"").toTag)

    def test_existingToTagKept(self) -> None:
        data = request(uri=b"mailto:b@h").replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")
        out = errorResponse(self.assertRaises(SIPParseError, parseMessage, data), toTag="new")
        self.assertEqual(parseMessage(out or b"").toTag, "x")

    def test_nothingToSend(self) -> None:
        ack = request(method=b"ACK", uri=b"mailto:b@h")
        self.assertIsNone(errorResponse(self.assertRaises(SIPParseError, parseMessage, ack)))
        noVia = request(uri=b"mailto:b@h").replace(b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n", b"")
        error = self.assertRaises(SIPParseError, parseMessage, noVia)
        self.assertEqual(error.code, 416)
        self.assertIsNone(errorResponse(error))
        self.assertIsNone(errorResponse(self.assertRaises(SIPParseError, parseMessage, response(status=b"9 X"))))
        self.assertIsNone(errorResponse(self.assertRaises(SIPParseError, parseMessage, b"")))

    def test_bareLineBreaksNeverEchoed(self) -> None:
        data = request(b"X-A: 1").replace(b"Call-ID: c1@192.0.2.1", b"Call-ID: c1\nInjected: yes")
        error = self.assertRaises(SIPParseError, parseMessage, data)
        out = errorResponse(error) or b""
        self.assertTrue(out.startswith(b"SIP/2.0 400 Bad Request\r\nVia: "))
        self.assertNotIn(b"Injected", out)
        self.assertNotIn(b"Call-ID", out)

    def test_foldedContextUnfolded(self) -> None:
        data = request(uri=b"mailto:b@h").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1\r\n OPTIONS")
        out = errorResponse(self.assertRaises(SIPParseError, parseMessage, data)) or b""
        self.assertIn(b"\r\nCSeq: 1 OPTIONS\r\n", out)


class MakeResponseTests(SynchronousTestCase):
    """
    Responses a proxy builds itself (100, 483, 420, ...).
    """

    def test_trying(self) -> None:
        request_ = parseRequest(request(method=b"INVITE"))
        request_.setTopViaReceived("203.0.113.1")
        trying = makeResponse(request_, 100)
        self.assertEqual((trying.code, trying.reason, trying.toTag), (100, "Trying", None))
        self.assertEqual(trying.topVia.received, "203.0.113.1")
        self.assertEqual((trying.callID, trying.cseq, trying.fromTag), ("c1@192.0.2.1", (1, "INVITE"), "a1"))

    def test_errorWithTagAndHeaders(self) -> None:
        request_ = parseRequest(request(b"Proxy-Require: foo"))
        reply = makeResponse(request_, 420, toTag="p1", headers=[("Unsupported", "foo")])
        self.assertEqual((reply.code, reply.reason, reply.toTag), (420, "Bad Extension", "p1"))
        self.assertEqual(reply.getHeader("unsupported"), "foo")
        tagged = makeResponse(request_, 483)
        self.assertIsNotNone(tagged.toTag)
        self.assertEqual(makeResponse(request_, 483).toTag, tagged.toTag)

    def test_body(self) -> None:
        reply = makeResponse(parseRequest(request()), 200, "Fine", body=b"xyz", contentType="text/plain")
        self.assertEqual((reply.reason, reply.body, reply.contentType), ("Fine", b"xyz", "text/plain"))
        self.assertRaises(ValueError, makeResponse, parseRequest(request()), 99)
