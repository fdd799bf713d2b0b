"""
Tests for L{sipxmpp.sip.wire.parser}: start lines, header names, folding
and lists, datagram framing, validation and limits.

L{request}, L{response}, L{parseRequest} and L{REGISTER} build the messages
the other SIP wire format tests use too.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.headers import COMPACT_FORMS
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import DEFAULT_LIMITS, Limits, parseMessage
from sipxmpp.sip.wire.uri import SIPURI

REGISTER = (
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Bob <sip:bob@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.55:5060>;expires=3600\r\n"
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def request(*headers: bytes, method: bytes = b"OPTIONS", uri: bytes = b"sip:bob@example.com",
            body: bytes = b"", mandatory: bool = True) -> bytes:  # fmt: skip
    """
    A request with the mandatory headers (unless told not to), C{headers},
    and a correct Content-Length.
    """
    lines = [method + b" " + uri + b" SIP/2.0"]
    if mandatory:
        lines += [
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            b"From: <sip:alice@example.com>;tag=a1",
            b"To: <sip:bob@example.com>",
            b"Call-ID: c1@192.0.2.1",
            b"CSeq: 1 " + method,
            b"Max-Forwards: 70",
        ]
    lines += headers
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def response(*headers: bytes, status: bytes = b"200 OK") -> bytes:
    lines = [
        b"SIP/2.0 " + status,
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
        b"From: <sip:alice@example.com>;tag=a1",
        b"To: <sip:bob@example.com>;tag=b1",
        b"Call-ID: c1@192.0.2.1",
        b"CSeq: 1 INVITE",
        *headers,
        b"Content-Length: 0",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parseRequest(data: bytes, **kwargs: object) -> SIPRequest:
    message = parseMessage(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(message, SIPRequest)
    return message


class StartLineTests(SynchronousTestCase):
    """
    Request-Line and Status-Line.
    """

    def test_request(self) -> None:
        message = parseRequest(REGISTER)
        self.assertTrue(message.isRequest)
        self.assertEqual(message.method, "REGISTER")
        self.assertEqual(message.uriText, "sip:registrar.example.com")
        uri = message.uri
        assert isinstance(uri, SIPURI)
        self.assertEqual(uri.host, "registrar.example.com")

    def test_response(self) -> None:
        message = parseMessage(response(status=b"486 Busy Here"))
        assert isinstance(message, SIPResponse)
        self.assertFalse(message.isRequest)
        self.assertEqual((message.code, message.reason), (486, "Busy Here"))

    def test_emptyAndUTF8Reason(self) -> None:
        for status, reason in ((b"100 ", ""), (b"180", ""), (b"200 d\xc3\xa9j\xc3\xa0 vu", "déjà vu")):
            message = parseMessage(response(status=status))
            assert isinstance(message, SIPResponse)
            self.assertEqual(message.reason, reason)

    def test_badStatusCodesDropped(self) -> None:
        for status in (b"99 Low", b"700 High", b"2000 Long", b"20 Short", b"0x1 Hex", b"abc X", b"099 Z"):
            error = self.assertRaises(SIPParseError, parseMessage, response(status=status))
            self.assertTrue(error.drop, status)
            self.assertIs(error.isRequest, False)

    def test_shortStatusCodes(self) -> None:
        """
        Regression (atheris): a status code shorter than three digits at the
        end of the line used to raise IndexError instead of being dropped.
        """
        for line in (b"SIP/2.0 1", b"SIP/2.0 12", b"SIP/2.0 ", b"SIP/2.0 1234", b"SIP/2.0 200x"):
            data = line + response()[response().index(b"\r\n") :]
            error = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertIsNone(error.code, line)
        crash = (
            b"SIP/2.0 1\r\nContent-Length: 0\r\n\r\n\r\nINVITE siom SIP/2.aoe\r\n"
            b"Call-ID: noreason.ajd7sn71insdf99223ndf\r\nCSeq: 35 INVITE\r\n"
        )
        self.assertIsNone(self.assertRaises(SIPParseError, parseMessage, crash).code)
        (framed,) = StreamFramer().feed(crash)
        self.assertIsNone(self.assertRaises(SIPParseError, parseMessage, framed, datagram=False).code)

    def test_controlCharacterInReasonDropped(self) -> None:
        error = self.assertRaises(SIPParseError, parseMessage, response(status=b"200 O\x00K"))
        self.assertIsNone(error.code)

    def test_responseVersion(self) -> None:
        self.assertEqual(parseMessage(response().replace(b"SIP/2.0 200", b"sip/2.0 200")).toBytes()[:7], b"sip/2.0")
        error = self.assertRaises(SIPParseError, parseMessage, response().replace(b"SIP/2.0 200", b"SIP/3.0 200"))
        self.assertTrue(error.drop)

    def test_methodMustBeToken(self) -> None:
        for method in (b"INV\xc3\xa9TE", b"IN(VITE", b"IN\x00VITE"):
            data = request(method=method).replace(b"CSeq: 1 " + method, b"CSeq: 1 INVITE")
            error = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertEqual(error.code, 400, method)

    def test_unknownMethodAccepted(self) -> None:
        self.assertEqual(parseRequest(request(method=b"FOO.BAR-1")).method, "FOO.BAR-1")

    def test_version505Or400(self) -> None:
        for version, code in ((b"SIP/2.1", 505), (b"SIP/1.0", 505), (b"HTTP/1.1", 400), (b"SIP/x", 400)):
            data = request().replace(b" SIP/2.0\r\n", b" " + version + b"\r\n", 1)
            error = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertEqual(error.code, code, version)

    def test_lowerCaseVersionAccepted(self) -> None:
        data = request().replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1)
        self.assertEqual(parseRequest(data).toBytes(), data)

    def test_extraSpacesLiberal(self) -> None:
        for line in (b"OPTIONS  sip:bob@example.com SIP/2.0", b"OPTIONS sip:bob@example.com SIP/2.0  "):
            data = line + request()[request().index(b"\r\n") :]
            message = parseRequest(data)
            self.assertEqual(message.uriText, "sip:bob@example.com")
            self.assertEqual(message.toBytes(), data)

    def test_requestURIChecks(self) -> None:
        cases = {
            b"<sip:bob@example.com>": 400,
            b"sip:bob@example.com; lr": 400,
            b"http://example.com/": 416,
            b"urn:service:sos": 416,
            b"bob@example.com": 400,
            b"SIPS:bob@example.com": None,
            b"tel:+1-201-555-0123": None,
        }
        for uri, code in cases.items():
            data = request(uri=uri)
            if code is None:
                self.assertEqual(parseRequest(data).uriText, uri.decode())
            else:
                error = self.assertRaises(SIPParseError, parseMessage, data)
                self.assertEqual(error.code, code, uri)

    def test_malformedRequestURIOnAccess(self) -> None:
        message = parseRequest(request(uri=b"sip:bob@exa mple.com".replace(b" ", b"%")))
        error = self.assertRaises(SIPParseError, getattr, message, "uri")
        self.assertEqual(error.code, 400)

    def test_leadingCRLFsSkipped(self) -> None:
        message = parseMessage(b"\r\n\r\n" + REGISTER)
        self.assertEqual(message.toBytes(), REGISTER)


class HeaderNameTests(SynchronousTestCase):
    """
    Header names: case, compact forms, spacing, unknown names.
    """

    def test_caseInsensitive(self) -> None:
        data = request(b"X-Thing: 1").replace(b"Call-ID:", b"cALL-iD:").replace(b"Via:", b"VIA:")
        message = parseMessage(data)
        self.assertEqual(message.callID, "c1@192.0.2.1")
        self.assertEqual(message.topVia.branch, "z9hG4bK1")
        self.assertEqual(message.getHeader("x-THING"), "1")
        self.assertTrue(message.hasHeader("CALL-ID"))
        self.assertEqual(message.toBytes(), data)

    def test_everyCompactForm(self) -> None:
        """
        All compact forms map to their long names, in either case.
        """
        self.assertEqual(sorted(COMPACT_FORMS), sorted("imelcfsktvourbxyajd"))
        for short, long in COMPACT_FORMS.items():
            if long in ("content-length", "from", "to", "call-id", "content-type", "session-expires"):
                continue  # exercised below with valid values
            for spelled in (short, short.upper()):
                data = request(spelled.encode() + b": value-" + short.encode())
                message = parseMessage(data)
                self.assertEqual(message.getHeaders(long)[-1], "value-" + short)
                self.assertEqual(message.getHeaders(short)[-1], "value-" + short)
                self.assertEqual(message.toBytes(), data)
        data = (
            b"INVITE sip:b@example.com SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bKc\r\n"
            b"f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>\r\ni: cid\r\n"
            b"CSeq: 2 INVITE\r\nc: text/plain\r\nx: 90;refresher=uas\r\nk: timer\r\n"
            b"m: <sip:a@192.0.2.1>\r\nl: 2\r\n\r\nhi"
        )
        message = parseMessage(data)
        self.assertEqual(
            (message.topVia.transport, message.fromTag, message.callID, message.contentType),
            ("TCP", "1", "cid", "text/plain"),
        )
        self.assertEqual(message.sessionExpires, (90, "uas"))
        self.assertEqual(message.supported, ["timer"])
        self.assertEqual(message.contentLength, 2)
        self.assertEqual(message.body, b"hi")
        self.assertEqual(message.toBytes(), data)

    def test_whitespaceBeforeColon(self) -> None:
        data = request().replace(b"Call-ID:", b"Call-ID \t :")
        message = parseMessage(data)
        self.assertEqual(message.callID, "c1@192.0.2.1")
        self.assertEqual(message.toBytes(), data)

    def test_badHeaderNames(self) -> None:
        for line in (b"Bad Name: x", b": x", b"No-Colon", b"X(y): 1", b"\xc3\xa9: 1"):
            error = self.assertRaises(SIPParseError, parseMessage, request(line))
            self.assertEqual(error.code, 400, line)

    def test_unknownHeaderKept(self) -> None:
        data = request(b"X-Odd-Header!%:  spaced  value ")
        message = parseMessage(data)
        self.assertEqual(message.getHeader("x-odd-header!%"), "spaced  value")
        self.assertEqual(message.getHeaders("X-ODD-HEADER!%"), ["spaced  value"])
        self.assertIsNone(message.getHeader("absent"))
        self.assertEqual(message.toBytes(), data)


class FoldingAndListTests(SynchronousTestCase):
    """
    Line folding and comma-separated multi-value headers.
    """

    def test_foldedValues(self) -> None:
        data = request(b"Subject: one\r\n two\r\n\tthree", b"Route:\r\n <sip:p1.example.com;lr>")
        data = data.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1\r\n  OPTIONS")
        message = parseMessage(data)
        self.assertEqual(message.getHeader("subject"), "one two\tthree")
        self.assertEqual(message.cseq, (1, "OPTIONS"))
        self.assertEqual([r.uriText for r in message.routes], ["sip:p1.example.com;lr"])
        self.assertEqual(message.toBytes(), data)

    def test_foldedLineWithColon(self) -> None:
        data = request(b"Contact: <sip:a@h1>,\r\n <sip:b@h2>")
        message = parseMessage(data)
        self.assertEqual([c.uriText for c in message.contacts], ["sip:a@h1", "sip:b@h2"])
        self.assertEqual(message.toBytes(), data)

    def test_continuationBeforeFirstHeader(self) -> None:
        data = b"OPTIONS sip:b@example.com SIP/2.0\r\n folded: x\r\n" + request()[request().index(b"\r\n") + 2 :]
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(error.code, 400)

    def test_bareCRorLF(self) -> None:
        for bad in (b"X-A: a\nX-B: b", b"X-A: a\rb", b"X-A: a\n b"):
            error = self.assertRaises(SIPParseError, parseMessage, request(bad))
            self.assertIn("bare CR or LF", error.reason)

    def test_commaListsRespectQuotesAndBrackets(self) -> None:
        data = request(
            b'Contact: "Doe, John" <sip:j@h1;x=a,b>;expires=10, <sip:k@h2>;q=0.5,sip:l@h3',
            b'Route: <sip:r1@h;lr>, "a,b" <sip:r2@h;lr>',
        )
        message = parseMessage(data)
        contacts = message.contacts
        self.assertEqual([c.displayName for c in contacts], ["Doe, John", None, None])
        self.assertEqual([c.uriText for c in contacts], ["sip:j@h1;x=a,b", "sip:k@h2", "sip:l@h3"])
        self.assertEqual([c.expires for c in contacts], [10, None, None])
        self.assertEqual(contacts[1].q, 0.5)
        self.assertEqual(len(message.routes), 2)
        self.assertEqual(
            message.getHeaderValues("contact")[0], '"Doe, John" <sip:j@h1;x=a,b>;expires=10'
        )

    def test_viaListOnOneLineAndSeveral(self) -> None:
        data = request().replace(
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            b"Via: SIP/2.0/UDP a;branch=z9hG4bKa , SIP/2.0/TCP b:5070;branch=z9hG4bKb\r\nv: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKc",
        )
        message = parseMessage(data)
        self.assertEqual([v.host for v in message.vias], ["a", "b", "[2001:db8::1]"])
        self.assertEqual(message.topVia.branch, "z9hG4bKa")
        self.assertEqual(message.vias[1].port, 5070)

    def test_emptyListElements(self) -> None:
        for line in (b"Contact: <sip:a@h>,,<sip:b@h>", b"Route: , <sip:a@h>", b"Path: <sip:a@h>,"):
            message = parseMessage(request(line))
            name = line.split(b":")[0].decode()
            accessor = {"Contact": "contacts", "Route": "routes", "Path": "paths"}[name]
            error = self.assertRaises(SIPParseError, getattr, message, accessor)
            self.assertEqual(error.code, 400)
        # Option tags are lenient about empty elements.
        self.assertEqual(parseMessage(request(b"Require: ,a,,b,")).require, ["a", "b"])

    def test_unterminatedInList(self) -> None:
        for line in (b'Contact: "open <sip:a@h>', b"Contact: <sip:a@h"):
            message = parseMessage(request(line))
            self.assertRaises(SIPParseError, getattr, message, "contacts")


class DatagramFramingTests(SynchronousTestCase):
    """
    Bodies in datagrams (RFC 3261 §18.3).
    """

    def test_binaryBodyCountsBytes(self) -> None:
        body = "h\xe9llo\x00\r\n\xff".encode("utf-8", "surrogateescape")
        data = request(b"Content-Type: application/octet-stream", body=body)
        message = parseMessage(data)
        self.assertEqual(message.body, body)
        self.assertEqual(message.contentLength, len(body))
        self.assertEqual(message.toBytes(), data)

    def test_trailingOctetsIgnored(self) -> None:
        data = request(body=b"abc")
        message = parseMessage(data + b"GARBAGE\r\n\r\n")
        self.assertEqual(message.body, b"abc")
        self.assertEqual(message.toBytes(), data)

    def test_contentLengthLargerThanDatagram(self) -> None:
        data = request(body=b"abc").replace(b"Content-Length: 3", b"Content-Length: 4")
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(error.code, 400)

    def test_missingContentLengthIsRestOfDatagram(self) -> None:
        data = request(body=b"v=0\r\n").replace(b"Content-Length: 5\r\n", b"")
        message = parseMessage(data)
        self.assertEqual(message.body, b"v=0\r\n")
        self.assertIsNone(message.contentLength)
        self.assertEqual(message.toBytes(), data)
        # ... but not on a stream.
        error = self.assertRaises(SIPParseError, parseMessage, data, datagram=False)
        self.assertEqual(error.code, 400)

    def test_badContentLength(self) -> None:
        for value in (b"-1", b"1.0", b"ten", b"0x10", b"1 1", b"", b"\xd9\xa1"):
            data = request().replace(b"Content-Length: 0", b"Content-Length: " + value)
            error = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertEqual(error.code, 400, value)
        error = self.assertRaises(SIPParseError, parseMessage, request(b"l: 0"))
        self.assertIn("more than one Content-Length", error.reason)

    def test_streamMessageExactLength(self) -> None:
        data = request(body=b"abc")
        self.assertEqual(parseMessage(data, datagram=False).body, b"abc")
        error = self.assertRaises(SIPParseError, parseMessage, data + b"x", datagram=False)
        self.assertEqual(error.code, 400)

    def test_noEmptyLine(self) -> None:
        data = request()[:-2]  # ends right after "Content-Length: 0\r\n"
        message = parseMessage(data)
        self.assertEqual(message.toBytes(), data + b"\r\n")
        self.assertRaises(SIPParseError, parseMessage, data[:-2])
        self.assertRaises(SIPParseError, parseMessage, data, datagram=False)


class ValidationTests(SynchronousTestCase):
    """
    What a proxy must reject.
    """

    def test_mandatoryHeaders(self) -> None:
        for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
            lines = request().split(b"\r\n")
            data = b"\r\n".join(line for line in lines if not line.startswith(name + b":"))
            error = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertEqual(error.code, 400)
            self.assertIn(name.decode(), error.reason)

    def test_responseMissingHeadersDropped(self) -> None:
        data = response().replace(b"Call-ID: c1@192.0.2.1\r\n", b"")
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertIsNone(error.code)
        self.assertIs(error.isRequest, False)

    def test_cseq(self) -> None:
        cases = {
            b"CSeq: 2147483647 OPTIONS": None,
            b"CSeq: 2147483648 OPTIONS": 400,
            b"CSeq: 1 INVITE": 400,
            b"CSeq: 1 options": 400,
            b"CSeq: OPTIONS": 400,
            b"CSeq: -1 OPTIONS": 400,
            b"CSeq: 1 OPTIONS extra": 400,
            b"CSeq: 00001 OPTIONS": None,
        }
        for line, code in cases.items():
            data = request().replace(b"CSeq: 1 OPTIONS", line)
            if code is None:
                self.assertEqual(parseMessage(data).cseq.method, "OPTIONS")
            else:
                self.assertEqual(self.assertRaises(SIPParseError, parseMessage, data).code, code, line)

    def test_singleValueHeadersOnce(self) -> None:
        for line in (b"From: <sip:x@h>;tag=2", b"To: <sip:y@h>", b"Call-ID: other", b"CSeq: 1 OPTIONS",
                     b"Max-Forwards: 5", b"l: 0", b"i: other", b"f: <sip:x@h>;tag=3"):  # fmt: skip
            error = self.assertRaises(SIPParseError, parseMessage, request(line))
            self.assertIn("more than one", error.reason)
            self.assertEqual(error.code, 400)
        # Repeating a list header is fine.
        self.assertEqual(len(parseMessage(request(b"Via: SIP/2.0/UDP h2;branch=z9hG4bK2")).vias), 2)

    def test_sameShapeOwnValues(self) -> None:
        """
        Messages whose fields have the same names in the same order (the
        parser remembers where it found what in such a shape) each read
        their own values, and each repeat of a bad shape is refused again.
        """
        for user in (b"bob", b"carol"):
            data = request(b"Via: SIP/2.0/UDP h2;branch=z9hG4bK2").replace(b"Call-ID: ", b"Call-ID: " + user)
            message = parseMessage(data)
            self.assertTrue(message.callID.startswith(user.decode()))
            self.assertEqual(len(message.vias), 2)
        for _ in range(2):
            error = self.assertRaises(SIPParseError, parseMessage, request(b"i: other"))
            self.assertIn("more than one Call-ID", error.reason)
            error = self.assertRaises(SIPParseError, parseMessage, request(mandatory=False))
            self.assertIn("missing", error.reason)

    def test_displayNames(self) -> None:
        for to, ok in (
            (b'To: "unbalanced <sip:b@h>', False),
            (b"To: Bad, Name <sip:b@h>", False),
            (b'To: "ok, name" <sip:b@h>', True),
            (b"To: Tok.en-~ Name <sip:b@h>", True),
        ):
            data = request().replace(b"To: <sip:bob@example.com>", to)
            if ok:
                self.assertEqual(parseMessage(data).toAddr.uriText, "sip:b@h")
            else:
                self.assertEqual(self.assertRaises(SIPParseError, parseMessage, data).code, 400, to)

    def test_unreadableIsDropped(self) -> None:
        """
        Input that is not even a start line is dropped, neither request nor
        response; the one exception type is a L{ValueError}.
        """
        for data in (b"\x00\xff garbage", b"", b"\r\n", b"HELLO\r\n\r\n", b"<sip:x> y z\r\n\r\n"):
            error = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertIsInstance(error, ValueError)
            self.assertEqual((error.code, error.isRequest, error.drop), (None, None, True), data)
            self.assertIn("(drop)", str(error))


class LimitsTests(SynchronousTestCase):
    """
    Configurable limits.
    """

    def test_defaults(self) -> None:
        self.assertEqual(
            (DEFAULT_LIMITS.maxMessageSize, DEFAULT_LIMITS.maxHeaderCount,
             DEFAULT_LIMITS.maxHeaderLineLength, DEFAULT_LIMITS.maxBodySize),
            (65535, 256, 8192, 65535),
        )  # fmt: skip

    def test_messageTooLarge(self) -> None:
        data = request(body=b"x" * 200)
        error = self.assertRaises(SIPParseError, parseMessage, data, Limits(maxMessageSize=len(data) - 1))
        self.assertEqual(error.code, 513)
        self.assertEqual(parseMessage(data, Limits(maxMessageSize=len(data))).body, b"x" * 200)

    def test_bodyTooLarge(self) -> None:
        data = request(body=b"x" * 200)
        error = self.assertRaises(SIPParseError, parseMessage, data, Limits(maxBodySize=199))
        self.assertEqual(error.code, 413)

    def test_headerCount(self) -> None:
        data = request(*[b"X-A: %d" % i for i in range(10)])
        count = 7 + 10
        self.assertEqual(self.assertRaises(SIPParseError, parseMessage, data, Limits(maxHeaderCount=count - 1)).code, 513)
        parseMessage(data, Limits(maxHeaderCount=count))

    def test_headerLineLength(self) -> None:
        data = request(b"X-Long: " + b"a" * 300)
        error = self.assertRaises(SIPParseError, parseMessage, data, Limits(maxHeaderLineLength=300))
        self.assertEqual(error.code, 513)
        parseMessage(data, Limits(maxHeaderLineLength=309))

    def test_responsesOverLimitsDropped(self) -> None:
        error = self.assertRaises(SIPParseError, parseMessage, response(), Limits(maxMessageSize=10))
        self.assertIsNone(error.code)
