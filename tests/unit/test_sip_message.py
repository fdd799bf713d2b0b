"""
Tests for L{sipxmpp.sip.wire.message}, L{sipxmpp.sip.wire.headers} and
L{sipxmpp.sip.wire.framing}: parsing, transparency, mutation, validation, limits,
error responses and stream framing.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import DROP, SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.grammar import TOKEN_CHARS
from sipxmpp.sip.wire.headers import (
    COMPACT_FORMS,
    NameAddr,
    Via,
    parseNameAddr,
    parseNameAddrBytes,
    parseVia,
    parseViaBytes,
)
from sipxmpp.sip.wire.message import (
    DEFAULT_LIMITS,
    Limits,
    SIPRequest,
    SIPResponse,
    errorResponse,
    makeResponse,
    parseMessage,
    responseBytes,
)
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


class AddressTests(SynchronousTestCase):
    """
    name-addr and addr-spec values.
    """

    def test_forms(self) -> None:
        cases = {
            '"A \\"q\\" B" <sip:a@h>;tag=1': ('A "q" B', "sip:a@h", True, {"tag": "1"}),
            "Tok1 tok2 <sip:a@h;lr>": ("Tok1 tok2", "sip:a@h;lr", True, {}),
            "caller<sip:a@h>": ("caller", "sip:a@h", True, {}),
            "<sip:a@h;transport=tcp>;expires=5;+sip.instance=\"<urn:x>\"": (
                None, "sip:a@h;transport=tcp", True, {"expires": "5", "+sip.instance": '"<urn:x>"'},
            ),
            "sip:a@h;tag=x;User=phone": (None, "sip:a@h", False, {"tag": "x", "user": "phone"}),
            '"" <tel:+123>': ("", "tel:+123", True, {}),
            "< sip:a@h >": (None, "sip:a@h", True, {}),
            '"\xe9t\xe9" <sip:a@h>': ("\xe9t\xe9", "sip:a@h", True, {}),
        }  # fmt: skip
        for text, (display, uri, bracketed, params) in cases.items():
            for parsed in (parseNameAddr(text), parseNameAddrBytes(text.encode())):
                self.assertEqual(
                    (parsed.displayName, parsed.uriText, parsed.bracketed, parsed.params),
                    (display, uri, bracketed, params),
                    text,
                )
                self.assertEqual(parsed.tag, params.get("tag"))

    def test_invalid(self) -> None:
        for text in (
            '"unterminated <sip:a@h>', "Bell, Alex <sip:a@h>", "sip:a@h?x=y", "<sip:a@h",
            '"q" sip:a@h', "<sip:a@h>;;", "<sip:a@h>;=x", "<sip:a@h>;a=", "<nocolon>",
            "<sip:a@h> junk", "", "<sip:a@h>;a=b c",
        ):  # fmt: skip
            self.assertRaises(SIPParseError, parseNameAddr, text)
            self.assertRaises(SIPParseError, parseNameAddrBytes, text.encode())

    def test_wildcardContact(self) -> None:
        message = parseMessage(request(b"Contact: *", b"Expires: 0", method=b"REGISTER"))
        contact = message.contacts[0]
        self.assertTrue(contact.isWildcard)
        self.assertRaises(SIPParseError, getattr, contact, "uri")
        self.assertEqual(message.expires, 0)
        # Not allowed in From.
        self.assertRaises(SIPParseError, parseMessage, request().replace(b"From: <sip:alice@example.com>;tag=a1", b"From: *"))

    def test_contactExpiresAndQ(self) -> None:
        message = parseMessage(request(b"Contact: <sip:a@h>;expires=4294967296;q=2", method=b"REGISTER"))
        contact = message.contacts[0]
        self.assertRaises(SIPParseError, getattr, contact, "expires")
        self.assertRaises(SIPParseError, getattr, contact, "q")
        self.assertEqual(parseNameAddr("<sip:a@h>;expires=0;q=1.000").expires, 0)
        self.assertEqual(parseNameAddr("<sip:a@h>;q=0.1").q, 0.1)

    def test_bytesVersionKeepsInvalidUTF8(self) -> None:
        parsed = parseNameAddrBytes(b'"\xff" <sip:a@h>;tag=t')
        self.assertEqual(parsed.displayName, "\udcff")
        self.assertEqual(parsed.text.encode("utf-8", "surrogateescape"), b'"\xff" <sip:a@h>;tag=t')


class ViaTests(SynchronousTestCase):
    """
    Via values.
    """

    def test_fields(self) -> None:
        for via in (
            parseVia("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport=5061;received=10.0.0.1;maddr=m"),
            parseViaBytes(b" SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport=5061;received=10.0.0.1;maddr=m "),
        ):
            self.assertEqual(
                (via.protocol, via.version, via.transport, via.host, via.port),
                ("SIP", "2.0", "UDP", "192.0.2.1", 5060),
            )
            self.assertEqual((via.branch, via.rport, via.received, via.maddr), ("z9hG4bKx", 5061, "10.0.0.1", "m"))
            self.assertTrue(via.hasRport)
            self.assertTrue(via.hasRFC3261Branch)
            self.assertEqual(via.sentBy, "192.0.2.1:5060")

    def test_spacingAndCase(self) -> None:
        via = parseVia("sip / 2.0 / tcp  host.example.com : 5061 ; BRANCH = z9hG4bKy ; rport")
        self.assertEqual((via.transport, via.host, via.port, via.branch), ("TCP", "host.example.com", 5061, "z9hG4bKy"))
        self.assertTrue(via.hasRport)
        self.assertIsNone(via.rport)

    def test_ipv6(self) -> None:
        via = parseViaBytes(b"SIP/2.0/UDP [2001:db8::1]:5060;received=[2001:db8::2]")
        self.assertEqual((via.host, via.port, via.received), ("[2001:db8::1]", 5060, "[2001:db8::2]"))

    def test_invalid(self) -> None:
        for text in (
            "SIP/2.0 UDP host", "SIP/2.0/UDP", "HTTP/2.0/UDP h", "SIP/2.0/UDP h:0", "SIP/2.0/UDP h:65536",
            "SIP/2.0/UDP h:5x", "SIP/2.0/UDP h;;", "SIP/2.0/UDP h;branch=", "SIP/2.0/UDP ho st",
            "SIP/2.0/UDP [::1", "SIP/2.0/U(DP h", "SIP/2.0/UDP h;rport=x",
        ):  # fmt: skip
            with self.subTest(text):
                try:
                    via = parseVia(text)
                    via.rport  # noqa: B018
                except SIPParseError:
                    pass
                else:
                    self.fail(f"accepted {text!r}")
                self.assertRaises(SIPParseError, lambda t=text: parseViaBytes(t.encode()).rport)

    def test_bareMagicCookie(self) -> None:
        self.assertFalse(parseVia("SIP/2.0/UDP h;branch=z9hG4bK").hasRFC3261Branch)
        self.assertFalse(parseVia("SIP/2.0/UDP h;branch=1234").hasRFC3261Branch)
        self.assertFalse(parseVia("SIP/2.0/UDP h").hasRFC3261Branch)


class AccessorTests(SynchronousTestCase):
    """
    The decoded values a proxy reads.
    """

    def test_register(self) -> None:
        message = parseMessage(REGISTER)
        via = message.topVia
        self.assertEqual((via.host, via.port, via.branch, via.hasRport), ("192.0.2.55", 5060, "z9hG4bKnashds7", True))
        self.assertEqual(message.callID, "843817637684230@998sdasdh09")
        self.assertEqual(message.cseq, (1826, "REGISTER"))
        self.assertEqual(message.cseq.number, 1826)
        self.assertEqual((message.fromTag, message.toTag), ("456248", None))
        self.assertEqual(message.fromAddr.displayName, "Bob")
        self.assertEqual(message.maxForwards, 70)
        self.assertEqual(message.expires, 7200)
        self.assertEqual([c.expires for c in message.contacts], [3600])
        self.assertEqual(message.contentLength, 0)
        self.assertIsNone(message.contentType)
        self.assertIsNone(message.sessionExpires)
        self.assertEqual((message.require, message.proxyRequire, message.supported), ([], [], []))
        self.assertEqual((message.routes, message.recordRoutes, message.paths), ([], [], []))

    def test_routeSets(self) -> None:
        message = parseMessage(
            request(b"Route: <sip:p1;lr>, <sip:p2;lr>", b"Record-Route: <sip:rr;lr>", b"Path: <sip:pa;lr>")
        )
        self.assertEqual([r.uriText for r in message.routes], ["sip:p1;lr", "sip:p2;lr"])
        self.assertEqual([r.uriText for r in message.recordRoutes], ["sip:rr;lr"])
        self.assertEqual([r.uriText for r in message.paths], ["sip:pa;lr"])

    def test_optionTagsAndTypes(self) -> None:
        message = parseMessage(
            request(
                b"Require: 100rel, timer", b"Proxy-Require: sec-agree", b"Supported: path",
                b"k: gruu", b"Content-Type: Application/SDP ; charset=x", b"Session-Expires: 1800",
            )
        )  # fmt: skip
        self.assertEqual(message.require, ["100rel", "timer"])
        self.assertEqual(message.proxyRequire, ["sec-agree"])
        self.assertEqual(message.supported, ["path", "gruu"])
        self.assertEqual(message.contentType, "application/sdp")
        self.assertEqual(message.sessionExpires, (1800, None))

    def test_scalarErrors(self) -> None:
        for line, accessor in (
            (b"Expires: 4294967296", "expires"),
            (b"Expires: -1", "expires"),
            (b"Expires: 1\r\nExpires: 2", "expires"),
            (b"Content-Type: nothing", "contentType"),
            (b"Session-Expires: soon", "sessionExpires"),
            (b"Session-Expires: 99999999999", "sessionExpires"),
        ):
            message = parseMessage(request(line))
            error = self.assertRaises(SIPParseError, getattr, message, accessor)
            self.assertEqual(error.code, 400, line)

    def test_responseAccessorErrorsAreDrops(self) -> None:
        message = parseMessage(response(b"Contact: <sip:a@h", b"Expires: x"))
        self.assertIsNone(self.assertRaises(SIPParseError, getattr, message, "contacts").code)
        self.assertIsNone(self.assertRaises(SIPParseError, getattr, message, "expires").code)

    def test_maxForwardsAbsentOrBad(self) -> None:
        data = request().replace(b"Max-Forwards: 70\r\n", b"")
        self.assertIsNone(parseMessage(data).maxForwards)
        for value in (b"256", b"-1", b"seventy", b"1 2"):
            error = self.assertRaises(
                SIPParseError, parseMessage, request().replace(b"Max-Forwards: 70", b"Max-Forwards: " + value)
            )
            self.assertEqual(error.code, 400, value)
        self.assertEqual(parseMessage(request().replace(b": 70", b": 0068")).maxForwards, 68)

    def test_callIDWithSpaceRejected(self) -> None:
        error = self.assertRaises(SIPParseError, parseMessage, request().replace(b"Call-ID: c1", b"Call-ID: c 1"))
        self.assertEqual(error.code, 400)


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


class TransparencyTests(SynchronousTestCase):
    """
    Untouched headers are re-emitted byte for byte.
    """

    MESSAGE = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa ,\r\n SIP/2.0/TCP b.example.com;branch=z9hG4bKb\r\n"
        b"VIA  :  SIP/2.0/UDP c.example.com;branch=z9hG4bKc\r\n"
        b"MaX-fOrWaRdS: 0010\r\n"
        b"X-Weird :   spaces   kept  \r\n"
        b"route: <sip:r1.example.com;lr>,<sip:r2.example.com;lr>\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\n"
        b"t: Bob\r\n <sip:bob@example.com>\r\n"
        b"i: abc\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"l: 3\r\n"
        b"\r\n"
        b"a\x00b"
    )

    def lines(self, data: bytes) -> list[bytes]:
        return data[: data.index(b"\r\n\r\n")].split(b"\r\n")

    def test_roundTrip(self) -> None:
        message = parseMessage(self.MESSAGE)
        self.assertIs(message.toBytes(), self.MESSAGE)
        self.assertEqual(bytes(message), self.MESSAGE)

    def test_popViaFromCommaJoinedLine(self) -> None:
        message = parseMessage(self.MESSAGE)
        popped = message.popVia()
        assert popped is not None
        self.assertEqual(popped.host, "a.example.com")
        out = message.toBytes()
        self.assertIn(b"\r\nv: SIP/2.0/TCP b.example.com;branch=z9hG4bKb\r\n", out)
        self.assertEqual(message.topVia.host, "b.example.com")
        # Every other line is untouched.
        before, after = self.lines(self.MESSAGE), self.lines(out)
        self.assertEqual([x for x in before if not x.startswith(b"v:") and not x.startswith(b" SIP")],
                         [x for x in after if not x.startswith(b"v:")])  # fmt: skip
        message.popVia()
        message.popVia()
        self.assertIsNone(message.popVia())
        self.assertNotIn(b"SIP/2.0/", message.toBytes().split(b"\r\n", 1)[1])
        self.assertRaises(SIPParseError, getattr, message, "topVia")

    def test_pushPopRestoresBytes(self) -> None:
        message = parseMessage(self.MESSAGE)
        message.prependVia("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
        out = message.toBytes()
        self.assertIn(b"i: abc\r\n", out)
        self.assertEqual(self.lines(out)[1], b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
        self.assertEqual(message.topVia.branch, "z9hG4bKp")
        self.assertEqual(len(message.vias), 4)
        message.popVia()
        self.assertEqual(message.toBytes(), self.MESSAGE)

    def test_proxyMutationsOnly(self) -> None:
        message = parseRequest(self.MESSAGE)
        message.prependVia(b"SIP/2.0/UDP p.example.com;branch=z9hG4bKp")
        self.assertEqual(message.decrementMaxForwards(), 9)
        route = message.popRoute()
        assert route is not None
        self.assertEqual(route.uriText, "sip:r1.example.com;lr")
        message.addRecordRoute("<sip:p.example.com;lr>")
        message.setURI("sip:bob@192.0.2.2")
        out = message.toBytes()
        self.assertEqual(
            self.lines(out),
            [
                b"INVITE sip:bob@192.0.2.2 SIP/2.0",
                b"Via: SIP/2.0/UDP p.example.com;branch=z9hG4bKp",
                b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa ,",
                b" SIP/2.0/TCP b.example.com;branch=z9hG4bKb",
                b"VIA  :  SIP/2.0/UDP c.example.com;branch=z9hG4bKc",
                b"Record-Route: <sip:p.example.com;lr>",
                b"MaX-fOrWaRdS: 9",
                b"X-Weird :   spaces   kept  ",
                b"route: <sip:r2.example.com;lr>",
                b"f: <sip:alice@example.com>;tag=1",
                b"t: Bob",
                b" <sip:bob@example.com>",
                b"i: abc",
                b"CSeq: 7 INVITE",
                b"m: <sip:alice@192.0.2.1>",
                b"l: 3",
            ],
        )
        self.assertTrue(out.endswith(b"\r\n\r\na\x00b"))
        again = parseRequest(out)
        self.assertEqual((again.maxForwards, len(again.routes), again.uriText), (9, 1, "sip:bob@192.0.2.2"))


class MutationTests(SynchronousTestCase):
    """
    The mutation API a proxy uses.
    """

    def test_maxForwards(self) -> None:
        message = parseMessage(request().replace(b"Max-Forwards: 70\r\n", b""))
        self.assertEqual(message.decrementMaxForwards(), 69)
        self.assertIn(b"\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nMax-Forwards: 69\r\n", message.toBytes())
        message.setMaxForwards(0)
        self.assertEqual(message.maxForwards, 0)
        self.assertRaises(ValueError, message.decrementMaxForwards)
        self.assertRaises(ValueError, message.setMaxForwards, 256)
        self.assertEqual(parseMessage(message.toBytes()).maxForwards, 0)

    def test_recordRouteAndPathPositions(self) -> None:
        message = parseMessage(request(b"Record-Route: <sip:old;lr>", method=b"INVITE"))
        message.addRecordRoute("<sip:new;lr>")
        self.assertEqual([r.uriText for r in message.recordRoutes], ["sip:new;lr", "sip:old;lr"])
        message.addPath("<sip:edge;lr>")
        lines = message.toBytes().split(b"\r\n")
        self.assertEqual(lines[2], b"Path: <sip:edge;lr>")  # right after the Via
        self.assertEqual([p.uriText for p in parseMessage(message.toBytes()).paths], ["sip:edge;lr"])

    def test_popRouteFromFoldedList(self) -> None:
        message = parseMessage(request(b"Route: <sip:a;lr>,\r\n  <sip:b;lr>", b"Route: <sip:c;lr>"))
        self.assertEqual([message.popRoute().uriText for _ in range(3)], ["sip:a;lr", "sip:b;lr", "sip:c;lr"])  # type: ignore[union-attr]
        self.assertIsNone(message.popRoute())
        self.assertEqual(message.routes, [])
        self.assertNotIn(b"Route", message.toBytes())

    def test_topRouteParsesOnlyTheTop(self) -> None:
        # A malformed second Route does not stop reading or popping the top.
        message = parseMessage(request(b"Route: <sip:a;lr>", b"Route: <sip:b;lr"))
        self.assertRaises(SIPParseError, getattr, message, "routes")
        top = message.topRoute
        assert top is not None
        self.assertEqual(top.uriText, "sip:a;lr")
        self.assertIs(message.popRoute(), top)
        self.assertRaises(SIPParseError, getattr, message, "topRoute")
        self.assertIsNone(parseMessage(request()).topRoute)
        empty = parseMessage(request(b"Route: ,<sip:a;lr>"))
        self.assertRaises(SIPParseError, getattr, empty, "topRoute")
        self.assertRaises(SIPParseError, empty.popRoute)

    def test_topRouteFollowsMutations(self) -> None:
        message = parseMessage(request(b"Route: <sip:a;lr>"))
        self.assertEqual(message.topRoute.uriText, "sip:a;lr")  # type: ignore[union-attr]
        message.prependRoute("<sip:z;lr>")
        self.assertEqual(message.topRoute.uriText, "sip:z;lr")  # type: ignore[union-attr]
        message.popRoute()
        message.popRoute()
        self.assertIsNone(message.topRoute)

    def test_popViaReturnsTheTop(self) -> None:
        message = parseMessage(request(b"Via: SIP/2.0/TCP b.example.com;branch=z9hG4bKb"))
        top = message.topVia
        popped = message.popVia()
        self.assertIs(popped, top)
        assert popped is not None
        self.assertEqual((popped.host, popped.branch), ("192.0.2.1", "z9hG4bK1"))
        self.assertEqual(message.topVia.host, "b.example.com")

    def test_rawValues(self) -> None:
        message = parseMessage(request(b"v: SIP/2.0/UDP b;branch=z9hG4bKb ,\r\n c;branch=z9hG4bKc"))
        self.assertEqual(message.rawValues("Via"), [
            b" SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            b" SIP/2.0/UDP b;branch=z9hG4bKb ,\r\n c;branch=z9hG4bKc",
        ])
        self.assertEqual(message.rawValues("route"), [])

    def test_size(self) -> None:
        message = parseMessage(request(b"Route: <sip:a;lr>", body=b"x\x00y"))
        self.assertEqual(message.size(), len(message.toBytes()))
        message.prependVia("SIP/2.0/UDP p;branch=z9hG4bKp")
        message.popRoute()
        message.setBody(b"longer body")
        size = message.size()
        self.assertEqual(size, len(message.toBytes()))
        self.assertNotEqual(size, len(request(b"Route: <sip:a;lr>", body=b"x\x00y")))

    def test_responseBytesIsWhatMakeResponseParses(self) -> None:
        invite = parseRequest(request(method=b"INVITE"))
        for code in (100, 180, 486):
            data = responseBytes(invite, code, headers=[("Contact", "<sip:b@192.0.2.2>")])
            self.assertEqual(data, makeResponse(invite, code, headers=[
                ("Contact", "<sip:b@192.0.2.2>")]).toBytes())
            parsed = parseMessage(data)
            assert isinstance(parsed, SIPResponse)
            self.assertEqual((parsed.code, parsed.callID), (code, "c1@192.0.2.1"))
            self.assertEqual(parsed.toTag is None, code == 100)

    def test_setContacts(self) -> None:
        message = parseMessage(request(b"Contact: <sip:a@h1>", b"X-Between: 1", b"m: <sip:b@h2>"))
        message.setContacts(["<sip:gw@192.0.2.9>;expires=30", b"<sip:gw2@192.0.2.9>"])
        self.assertEqual([c.uriText for c in message.contacts], ["sip:gw@192.0.2.9", "sip:gw2@192.0.2.9"])
        lines = message.toBytes().split(b"\r\n")
        start = lines.index(b"Contact: <sip:gw@192.0.2.9>;expires=30")
        self.assertEqual(lines[start + 1 : start + 3], [b"Contact: <sip:gw2@192.0.2.9>", b"X-Between: 1"])
        message.setContacts([])
        self.assertEqual(message.contacts, [])

    def test_setTopViaReceived(self) -> None:
        message = parseMessage(REGISTER)
        message.setTopViaReceived("203.0.113.5", 40000)
        via = message.topVia
        self.assertEqual((via.received, via.rport, via.branch), ("203.0.113.5", 40000, "z9hG4bKnashds7"))
        self.assertIn(b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bKnashds7;rport=40000;received=203.0.113.5\r\n",
                      message.toBytes())  # fmt: skip
        # Without rport in the Via, only received is added; a second call replaces it.
        message = parseMessage(request())
        message.setTopViaReceived("203.0.113.6", 40001)
        message.setTopViaReceived("203.0.113.7", 40001)
        self.assertEqual(message.topVia.text, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=203.0.113.7")

    def test_setTopViaReceivedInCommaJoinedLine(self) -> None:
        data = request().replace(b"branch=z9hG4bK1", b"branch=z9hG4bK1 , SIP/2.0/TCP h2;branch=z9hG4bK2")
        message = parseMessage(data)
        message.setTopViaReceived("198.51.100.1")
        self.assertIn(b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=198.51.100.1 , SIP/2.0/TCP h2;branch=z9hG4bK2\r\n",
                      message.toBytes())  # fmt: skip

    def test_requestURI(self) -> None:
        message = parseRequest(request())
        message.setURI("sip:bob@192.0.2.44:5070;transport=tcp")
        uri = message.uri
        assert isinstance(uri, SIPURI)
        self.assertEqual((uri.host, uri.port, uri.params), ("192.0.2.44", 5070, {"transport": "tcp"}))
        self.assertTrue(message.toBytes().startswith(b"OPTIONS sip:bob@192.0.2.44:5070;transport=tcp SIP/2.0\r\n"))
        self.assertRaises(ValueError, message.setURI, "sip:a b")
        self.assertRaises(ValueError, message.setURI, "")

    def test_body(self) -> None:
        message = parseMessage(request().replace(b"Content-Length: 0", b"l: 0"))
        message.setBody(b"v=0\r\n", "application/sdp")
        out = message.toBytes()
        self.assertIn(b"\r\nl: 5\r\n", out)
        self.assertIn(b"\r\nContent-Type: application/sdp\r\n", out)
        again = parseMessage(out)
        self.assertEqual((again.body, again.contentType), (b"v=0\r\n", "application/sdp"))

    def test_ensureContentLength(self) -> None:
        data = request(body=b"abc").replace(b"Content-Length: 3\r\n", b"")
        message = parseMessage(data)
        message.ensureContentLength()
        self.assertEqual(parseMessage(message.toBytes(), datagram=False).body, b"abc")
        before = message.toBytes()
        message.ensureContentLength()
        self.assertEqual(message.toBytes(), before)

    def test_genericHeaders(self) -> None:
        message = parseMessage(request(b"X-A: 1", b"X-B: 2", b"X-A: 3"))
        message.addHeader("X-A", "4")
        message.addHeader("X-A", "0", first=True)
        self.assertEqual(message.getHeaders("x-a"), ["0", "1", "3", "4"])
        message.setHeader("x-a", "only")
        self.assertEqual(message.getHeaders("X-A"), ["only"])
        self.assertIn(b"\r\nX-A: only\r\nX-B: 2\r\n", message.toBytes())
        self.assertEqual(message.removeHeader("X-A"), 1)
        self.assertEqual(message.removeHeader("X-A"), 0)
        message.setHeader("X-New", "n")
        self.assertTrue(message.toBytes().endswith(b"\r\nX-New: n\r\n\r\n"))
        self.assertEqual(message.headers()[-1], ("x-new", "n"))

    def test_headerInjectionRefused(self) -> None:
        message = parseMessage(request())
        for call in (
            lambda: message.addHeader("X-A", "a\r\nVia: evil"),
            lambda: message.setHeader("X-A", b"a\nb"),
            lambda: message.prependVia("SIP/2.0/UDP h\r\n"),
            lambda: message.setContacts(["<sip:a@h>\r"]),
            lambda: message.addHeader("Bad Name", "x"),
        ):
            self.assertRaises(ValueError, call)
        self.assertEqual(message.toBytes(), request())

    def test_cachesFollowMutations(self) -> None:
        message = parseMessage(request(b"Contact: <sip:a@h>"))
        self.assertEqual(message.callID, "c1@192.0.2.1")
        self.assertEqual(len(message.contacts), 1)
        message.setHeader("Call-ID", "new-id")
        message.setHeader("From", "<sip:x@h>;tag=zz")
        message.setHeader("CSeq", "9 OPTIONS")
        message.addHeader("m", "<sip:b@h>")
        self.assertEqual((message.callID, message.fromTag, message.cseq.number), ("new-id", "zz", 9))
        self.assertEqual(len(message.contacts), 2)
        message.setHeader("Expires", "5")
        self.assertEqual(message.expires, 5)

    def test_copyIsIndependent(self) -> None:
        original = parseRequest(request(b"Route: <sip:r;lr>"))
        copy = original.copy()
        copy.popVia()
        copy.popRoute()
        copy.setURI("sip:other@example.com")
        copy.setHeader("X", "y")
        self.assertEqual(original.toBytes(), request(b"Route: <sip:r;lr>"))
        self.assertEqual(len(original.routes), 1)
        self.assertEqual(original.topVia.branch, "z9hG4bK1")
        self.assertEqual(original.uriText, "sip:bob@example.com")
        self.assertIsInstance(copy, SIPRequest)
        self.assertEqual(parseMessage(response()).copy().toBytes(), response())


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


# -- properties ----------------------------------------------------------------

_TOKEN = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=6)
_HOST = st.sampled_from(["h.example.com", "192.0.2.7", "[2001:db8::1]", "x"])


@st.composite
def _param(draw: st.DrawFn) -> str:
    name = draw(st.one_of(_TOKEN, st.sampled_from(["tag", "TAG", "Tag", "branch", "Branch", "lr", "rport"])))
    value = draw(
        st.one_of(
            st.none(), _TOKEN, st.sampled_from(['"quoted;v,al"', '"a\\"b"', "[2001:db8::2]", "a:b", ""])
        )
    )
    space = draw(st.sampled_from(["", "", " "]))
    return ";" + space + name + ("" if value is None else space + "=" + space + value)


@st.composite
def nameAddrs(draw: st.DrawFn) -> str:
    """
    name-addr / addr-spec texts, mostly valid, in fast-path and other forms.
    """
    uri = draw(st.sampled_from(["sip:a@h.example.com", "sips:b@[2001:db8::1]:5061;lr", "tel:+1-2",
                                "http://x/y", "sip:u%20s@h;t=1?h=v", "sip:\xe9@h", "s:x"]))  # fmt: skip
    display = draw(
        st.one_of(
            st.none(), st.lists(_TOKEN, min_size=1, max_size=3).map(" ".join),
            st.text(max_size=6).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
            st.sampled_from(['"unterminated', "bad, name", '"x"']),
        )
    )  # fmt: skip
    params = "".join(draw(st.lists(_param(), max_size=3)))
    inner = draw(st.sampled_from(["", " "]))
    if display is None and draw(st.booleans()) and "?" not in uri and ";" not in uri:
        text = uri + params
    else:
        gap = draw(st.sampled_from(["", " ", "  "]))
        text = (display or "") + gap + "<" + inner + uri + inner + ">" + params
    around = draw(st.sampled_from(["", " ", "\t "]))
    return around + text + around


@st.composite
def vias(draw: st.DrawFn) -> str:
    transport = draw(st.sampled_from(["UDP", "tcp", "TLS", "X-1"]))
    host = draw(_HOST)
    port = draw(st.sampled_from(["", ":5060", ":1", ":65535", ":0", ":70000"]))
    slash = draw(st.sampled_from(["/", "/", " / "]))
    params = "".join(draw(st.lists(_param(), max_size=4)))
    return "SIP" + slash + "2.0" + slash + transport + " " + host + port + params


def _same(a: NameAddr | Via | Exception, b: NameAddr | Via | Exception) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b)
    fields = ("displayName", "uriText", "bracketed", "params", "tag", "text") if isinstance(a, NameAddr) else (
        "protocol", "version", "transport", "host", "port", "params", "branch", "text")  # fmt: skip
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _outcome(call: object, arg: object) -> NameAddr | Via | Exception:
    try:
        return call(arg)  # type: ignore[operator, no-any-return]
    except SIPParseError as error:
        return error


class FastPathTests(SynchronousTestCase):
    """
    The regular-expression fast paths agree with the general parsers.
    """

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(nameAddrs())
    def test_nameAddr(self, text: str) -> None:
        slow = _outcome(parseNameAddr, text)
        fast = _outcome(parseNameAddrBytes, text.encode("utf-8"))
        self.assertTrue(_same(slow, fast), (text, slow, fast))

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(vias())
    def test_via(self, text: str) -> None:
        slow = _outcome(parseVia, text)
        fast = _outcome(parseViaBytes, text.encode("utf-8"))
        self.assertTrue(_same(slow, fast), (text, slow, fast))

    def test_fastPathTaken(self) -> None:
        """
        The common forms do go through the fast path (their params are built
        lazily), and uncommon ones through the general parser.
        """
        self.assertIsNone(parseNameAddrBytes(b'"A" <sip:a@h>;tag=1')._params)
        self.assertIsNotNone(parseNameAddrBytes(b'"A" <sip:a@h>;tag="1"')._params)
        self.assertIsNone(parseViaBytes(b"SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport")._params)
        self.assertIsNotNone(parseViaBytes(b"SIP/2.0/UDP h ;branch=z9hG4bK1")._params)


@st.composite
def validRequests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """
    Valid requests in varied spelling, order and folding, with what they
    should decode to.
    """
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "X-Y.z"]))
    branch = "z9hG4bK" + draw(_TOKEN)
    tag = draw(_TOKEN)
    callID = draw(st.text(alphabet=TOKEN_CHARS + "@:/?", min_size=1, max_size=20))
    number = draw(st.integers(0, 2**31 - 1))
    body = draw(st.binary(max_size=30))

    def name(long: str, short: str | None = None) -> str:
        choices = [long, long.upper(), long.lower()] + ([short] if short else [])
        return draw(st.sampled_from(choices)) + draw(st.sampled_from([":", ":", " :"]))

    def fold(value: str) -> str:
        if " " in value and draw(st.booleans()):
            at = value.index(" ")
            return value[:at] + "\r\n" + value[at:]
        return value

    fields = [
        name("From", "f") + fold(" <sip:a@example.com> ;tag=" + tag),
        name("To", "t") + fold(" Bob <sip:b@example.com>"),
        name("Call-ID", "i") + " " + callID,
        name("CSeq") + fold(f" {number} {method}"),
        name("Max-Forwards") + " 70",
        name("Content-Length", "l") + f" {len(body)}",
    ]
    fields += draw(st.lists(st.tuples(_TOKEN, st.text(alphabet="abc ,;=<>\"'", max_size=10)).map(
        lambda pair: "X-" + pair[0] + ": " + pair[1]), max_size=4))  # fmt: skip
    fields = draw(st.permutations(fields))
    via = name("Via", "v") + fold(" SIP/2.0/UDP 192.0.2.1:5060;branch=" + branch)
    position = draw(st.integers(0, len(fields)))
    fields.insert(position, via)
    head = method + " sip:x@example.com SIP/2.0\r\n" + "\r\n".join(fields)
    data = head.encode() + b"\r\n\r\n" + body
    return data, {"branch": branch, "tag": tag, "callID": callID, "cseq": (number, method), "body": body}


class RoundTripPropertyTests(SynchronousTestCase):
    """
    Valid messages parse to what they say and serialize to their own bytes.
    """

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(validRequests())
    def test_roundTrip(self, case: tuple[bytes, dict[str, object]]) -> None:
        data, expected = case
        message = parseMessage(data)
        self.assertEqual(message.toBytes(), data)
        self.assertEqual(
            {"branch": message.topVia.branch, "tag": message.fromTag, "callID": message.callID,
             "cseq": tuple(message.cseq), "body": message.body},
            expected,
        )  # fmt: skip
        framer = StreamFramer()
        self.assertEqual(framer.feed(data[:7]) + framer.feed(data[7:]), [data])
        copy = message.copy()
        copy.prependVia("SIP/2.0/UDP p;branch=z9hG4bKp")
        copy.decrementMaxForwards()
        again = parseMessage(copy.toBytes())
        self.assertEqual((again.maxForwards, again.vias[1].branch), (69, expected["branch"]))
        self.assertEqual(DROP, None)
