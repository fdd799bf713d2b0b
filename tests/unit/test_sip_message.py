"""
Tests for L{sipxmpp.sip.wire.message}: the accessors a proxy reads,
byte-for-byte transparency, the mutation API, and round trips of generated
requests.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import DROP, SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.grammar import TOKEN_CHARS
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import makeResponse, responseBytes
from sipxmpp.sip.wire.uri import SIPURI
from tests.unit.test_sip_headers import _TOKEN
from tests.unit.test_sip_parser import REGISTER, parseRequest, request, response


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

    def test_elementsOfOneElementFields(self) -> None:
        """
        A field of one element is that element; an unterminated C{<} or
        quoted string is refused whether or not the field holds a comma.
        """
        message = parseMessage(request(b"Record-Route: <sip:a;lr>", b"Record-Route:  sip:b ",
                                       b"Record-Route: <sip:c;lr>, <sip:d;lr>"))  # fmt: skip
        self.assertEqual(message.getHeaderValues("Record-Route"),
                         ["<sip:a;lr>", "sip:b", "<sip:c;lr>", "<sip:d;lr>"])  # fmt: skip
        for bad in (b"<sip:a;lr", b"<sip:a;lr> <sip:b", b'"Bob <sip:b@h>', b"<sip:a>, <sip:b"):
            message = parseMessage(request(b"Record-Route: " + bad))
            self.assertRaises(SIPParseError, message.getHeaderValues, "Record-Route")
            self.assertRaises(SIPParseError, getattr, message, "recordRoutes")

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

    def test_popViaOnTheFirstLine(self) -> None:
        """
        Popping a Via alone on the first line gives the bytes of the message
        without that line, as serializing the fields again would.
        """
        second = b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK9"
        data = response(second)
        first = data[data.index(b"Via:") : data.index(b"\r\n", data.index(b"Via:")) + 2]
        message = parseMessage(data)
        self.assertEqual(message.popVia().branch, "z9hG4bK1")
        self.assertEqual(message.topVia.branch, "z9hG4bK9")
        self.assertEqual(message.toBytes(), data.replace(first, b"", 1))
        message.addHeader("X-Rebuilt", "1")
        message.removeHeader("X-Rebuilt")
        self.assertEqual(message.toBytes(), data.replace(first, b"", 1))

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


# -- properties ----------------------------------------------------------------


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
