"""
RFC 4475 torture messages, table-driven.

The 49 messages are read byte-exact from C{$SIPXMPP_RFC4475_DIR}, or else
from C{../shared/rfc4475} next to the repository; they are not copied into
the project.  When the directory is absent the tests skip, except when the
environment has C{CI=true}: then they fail.

L{TABLE} says, for every file of C{MANIFEST.tsv}, what the message layer
does with it:

  - C{PARSE}: it parses, serializes to the identical bytes (up to the end of
    the body, so dblreq's trailing octets are not part of it), every lazy
    accessor can be read, and C{checks} hold;
  - C{REJECT} with a code: L{SIPParseError} with that code, raised by
    C{parseMessage} (C{phase="parse"}) or by the accessor named in
    C{phase} the first time the proxy reads that header;
  - C{DROP}: L{SIPParseError} whose code is L{None} (malformed responses).

C{application} marks the messages whose expected handling belongs to a
layer above this one (483, 420, 415, ...): the checks here assert that the
parser exposes what that layer needs, and the proxy layer's tests can
import L{TABLE} to test the response itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.message import SIPMessage, SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import errorResponse
from sipxmpp.sip.wire.uri import SIPURI, AbsoluteURI
from tests.unit.test_sip_fuzz import ACCESSORS, exerciseMessage

PARSE = "parse"
REJECT = "reject"
DROP = "drop"


def torturePath() -> str:
    """
    Where the RFC 4475 messages are: C{$SIPXMPP_RFC4475_DIR}, or
    C{../shared/rfc4475} relative to the repository root.
    """
    configured = os.environ.get("SIPXMPP_RFC4475_DIR")
    if configured:
        return configured
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.normpath(os.path.join(root, "..", "shared", "rfc4475"))


@dataclass(frozen=True)
class Expect:
    """
    What the message layer does with one torture message.
    """

    outcome: str
    code: int | None = None
    # For REJECT: "parse", or the accessor that raises.
    phase: str = "parse"
    # Words that must appear in the error reason.
    reason: str = ""
    checks: Callable[[SIPMessage], None] | None = None
    # Handling the layers above must do, for their own tests.
    application: str = ""
    liberal: str = ""
    notes: tuple[str, ...] = field(default=())


def _req(message: SIPMessage) -> SIPRequest:
    assert isinstance(message, SIPRequest), message
    return message


def _sip(uri: object) -> SIPURI:
    assert isinstance(uri, SIPURI), uri
    return uri


def _eq(actual: object, expected: object) -> None:
    assert actual == expected, (actual, expected)


def _wsinv(m: SIPMessage) -> None:
    _eq(_req(m).method, "INVITE")
    _eq(_sip(_req(m).uri).params, {"unknownparam": None})
    _eq(m.toTag, "1918181833n")
    _eq(m.fromTag, "98asjd8")
    _eq(m.fromAddr.displayName, 'J Rosenberg \\"')
    _eq(m.maxForwards, 68)
    _eq(m.callID, "wsinv.ndaksdj@192.0.2.1")
    _eq(tuple(m.cseq), (9, "INVITE"))
    _eq([(v.transport, v.host, v.branch) for v in m.vias], [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ])  # fmt: skip
    _eq(m.getHeader("subject"), "")
    _eq(m.getHeader("NewFangledHeader"), "newfangled value continued newfangled value")
    _eq(m.getHeader("UnknownHeaderWithUnusualValue"), ";;,,;;,;")
    _eq(m.routes[0].uri.params, {"lr": None, "unknownwith": "value", "unknown-no-value": None})  # type: ignore[union-attr]
    contact = m.contacts[0]
    _eq(contact.displayName, 'Quoted string ""')
    _eq(contact.params, {"newparam": "newvalue", "secondparam": None, "q": "0.33"})
    _eq(contact.q, 0.33)
    _eq(len(m.body), 150)
    _eq(m.contentType, "application/sdp")


def _intmeth(m: SIPMessage) -> None:
    _eq(_req(m).method, "!interesting-Method0123456789_*+`.%indeed'~")
    _eq(m.cseq.method, _req(m).method)
    uri = _sip(_req(m).uri)
    _eq(uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    _eq(uri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    _eq(uri.host, "example.com")
    _eq(m.toAddr.displayName, "BEL:\x07 NUL:\x00 DEL:\x7f")
    _eq(m.fromAddr.displayName, "token1~` token2'+_ token3*%!.-")
    _eq(m.fromTag, "_token~1'+`*%!-.")
    _eq(m.fromAddr.params["fromparam''~+*_!.-%"], '"работающий"')
    _eq(m.callID, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    _eq(m.topVia.branch, "z9hG4bK-.!%66*_+`'~")
    _eq(m.maxForwards, 255)
    _eq(m.getHeader("extensionHeader-!.%*+_`'~"), "\ufeff大停電")


def _esc01(m: SIPMessage) -> None:
    _eq(_sip(_req(m).uri).user, "sips:user@example.com")
    _eq(_sip(m.toAddr.uri).user, "user")
    _eq(_sip(m.fromAddr.uri).user, "I have spaces")
    contact = _sip(m.contacts[0].uri)
    _eq(contact.user, "caller")
    _eq(contact.params, {"lr": None, "name": "value%41"})
    _eq(m.callID, "esc01.239409asdfakjkn23onasd0-3234")
    _eq(m.contentType, "application/sdp")


def _escnull(m: SIPMessage) -> None:
    users = [_sip(c.uri).user for c in m.contacts]
    _eq(users, ["\x00", "\x00\x00"])
    _eq(_sip(m.toAddr.uri).user, "null-\x00-null")
    _eq(m.contentLength, 0)


def _esc02(m: SIPMessage) -> None:
    _eq(_req(m).method, "RE%47IST%45R")
    _eq(m.toAddr.displayName, "%Z%45")
    _eq(m.topVia.branch, "z9hG4bK209%fzsnel234")
    # C%6Fntact is another header, not Contact.
    _eq([_sip(c.uri).host for c in m.contacts], ["host1.example.com", "host3.example.com"])
    _eq(m.getHeader("C%6Fntact"), "<sip:alias2@host2.example.com>")


def _lwsdisp(m: SIPMessage) -> None:
    _eq(m.fromAddr.displayName, "caller")
    _eq(m.fromAddr.uriText, "sip:caller@example.com")
    _eq(m.fromTag, "323")


def _longreq(m: SIPMessage) -> None:
    _eq(len(m.vias), 34)
    _eq(m.topVia.host, "sip33.example.com")
    _eq(m.vias[-1].received, "192.0.2.5")
    assert m.vias[-1].branch and m.vias[-1].branch.endswith("longbranchvalue")
    assert m.toAddr.displayName and "extremeextreme" in m.toAddr.displayName
    _eq(_sip(m.toAddr.uri).port, 6000)
    assert m.fromTag and m.fromTag.startswith("12982982982982982")
    _eq(len(m.body), 150)


def _dblreq(m: SIPMessage) -> None:
    _eq(_req(m).method, "REGISTER")
    _eq(m.body, b"")
    _eq(m.contacts[0].uriText, "sip:j.user@host.example.com")


def _semiuri(m: SIPMessage) -> None:
    uri = _sip(_req(m).uri)
    _eq(uri.user, "user;par=u@example.net")
    _eq(uri.rawUser, "user;par=u%40example.net")
    _eq(uri.host, "example.com")
    _eq(uri.params, {})
    _eq(len(m.getHeaderValues("Accept")), 6)


def _transports(m: SIPMessage) -> None:
    _eq([v.transport for v in m.vias], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])


def _mpart01(m: SIPMessage) -> None:
    _eq(len(m.body), 553)
    assert b"\x00" in m.body
    _eq(m.contentType, "multipart/mixed")
    _eq(m.topVia.hasRport, True)
    _eq(m.topVia.rport, None)
    _eq(m.topVia.port, 5070)


def _unreason(m: SIPMessage) -> None:
    assert isinstance(m, SIPResponse)
    _eq(m.code, 200)
    _eq(m.reason, "= 2**3 * 5**2 но сто девяносто девять - простое")


def _noreason(m: SIPMessage) -> None:
    assert isinstance(m, SIPResponse)
    _eq((m.code, m.reason), (100, ""))


def _lwsstart(m: SIPMessage) -> None:
    _eq(_req(m).uriText, "sip:user@example.com")


def _trws(m: SIPMessage) -> None:
    _eq(_req(m).uriText, "sip:remote-target@example.com")


def _escruri(m: SIPMessage) -> None:
    _eq(_sip(_req(m).uri).headers, {"route": "<sip:example.com>"})


def _baddate(m: SIPMessage) -> None:
    _eq(m.getHeader("Date"), "Fri, 01 Jan 2010 16:00:00 EST")


def _badaspec(m: SIPMessage) -> None:
    _eq(m.toAddr.uriText, "sip:t.watson@example.org")
    _eq(m.toAddr.displayName, "Watson, Thomas")


def _badbranch(m: SIPMessage) -> None:
    _eq(m.topVia.branch, "z9hG4bK")
    _eq(m.topVia.hasRFC3261Branch, False)


def _unksm2(m: SIPMessage) -> None:
    assert isinstance(m.toAddr.uri, AbsoluteURI)
    _eq(m.toAddr.uri.scheme, "isbn")
    _eq(m.fromAddr.uri.scheme, "http")
    _eq([c.uri.scheme for c in m.contacts], ["name"])


def _bext01(m: SIPMessage) -> None:
    _eq(m.require, ["nothingSupportsThis", "nothingSupportsThisEither"])
    _eq(m.proxyRequire, ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])


def _invut(m: SIPMessage) -> None:
    _eq(m.contentType, "application/unknownformat")
    _eq(len(m.body), 40)


def _regaut01(m: SIPMessage) -> None:
    _eq(m.getHeader("authorization"), "NoOneKnowsThisScheme opaque-data=here")
    _eq(m.contentLength, 0)


def _bcast(m: SIPMessage) -> None:
    _eq([v.host for v in m.vias], ["192.0.2.198", "255.255.255.255"])


def _zeromf(m: SIPMessage) -> None:
    _eq(m.maxForwards, 0)


def _cparam01(m: SIPMessage) -> None:
    contact = m.contacts[0]
    _eq(contact.bracketed, False)
    _eq(contact.params, {"unknownparam": None})
    _eq(_sip(contact.uri).params, {})
    _eq(_sip(contact.uri).user, "+19725552222")


def _cparam02(m: SIPMessage) -> None:
    contact = m.contacts[0]
    _eq(contact.bracketed, True)
    _eq(contact.params, {})
    _eq(_sip(contact.uri).params, {"unknownparam": None})


def _regescrt(m: SIPMessage) -> None:
    contact = m.contacts[0]
    _eq(contact.uriText, "sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    _eq(_sip(contact.uri).headers, {"route": "<sip:sip.example.com>"})


def _sdp01(m: SIPMessage) -> None:
    _eq(m.getHeaderValues("accept"), ["text/nobodyKnowsThis"])
    _eq(m.contentType, "application/sdp")


def _inv2543(m: SIPMessage) -> None:
    _eq(m.maxForwards, None)
    _eq(m.contentLength, None)
    _eq(m.topVia.branch, None)
    _eq(m.fromTag, None)
    # addr-spec form: ;user=phone is a header parameter here (RFC 3261 §20.10).
    _eq(m.toAddr.params, {"user": "phone"})
    _eq(_sip(m.fromAddr.uri).params, {"user": "phone"})
    assert m.body.startswith(b"v=0\r\n") and m.body.endswith(b"RTP/AVP 0\r\n")
    _eq(m.recordRoutes[0].uri.params, {"maddr": "ss1.example.com"})  # type: ignore[union-attr]
    # Forwarded over a stream it needs a Content-Length.
    copy = m.copy()
    copy.ensureContentLength()
    _eq(copy.contentLength, len(m.body))


# Rejected requests whose malformed header is one an error response copies.
COPIES_MALFORMED = {"badinv01.dat", "quotbal.dat", "baddn.dat", "scalar02.dat"}

TABLE: dict[str, Expect] = {
    # 3.1.1 valid
    "wsinv.dat": Expect(PARSE, checks=_wsinv),
    "intmeth.dat": Expect(PARSE, checks=_intmeth, application="endpoint: 501 with Allow (unknown method)"),
    "esc01.dat": Expect(PARSE, checks=_esc01),
    "escnull.dat": Expect(PARSE, checks=_escnull),
    "esc02.dat": Expect(PARSE, checks=_esc02, application="endpoint: 501 (unknown method)"),
    "lwsdisp.dat": Expect(PARSE, checks=_lwsdisp),
    "longreq.dat": Expect(PARSE, checks=_longreq),
    "dblreq.dat": Expect(PARSE, checks=_dblreq, notes=("trailing octets after Content-Length ignored",)),
    "semiuri.dat": Expect(PARSE, checks=_semiuri),
    "transports.dat": Expect(PARSE, checks=_transports),
    "mpart01.dat": Expect(PARSE, checks=_mpart01, notes=("binary body framed by Content-Length",)),
    "unreason.dat": Expect(PARSE, checks=_unreason),
    "noreason.dat": Expect(PARSE, checks=_noreason),
    # 3.1.2 invalid
    "badinv01.dat": Expect(REJECT, 400, reason="parameter"),
    "clerr.dat": Expect(REJECT, 400, reason="Content-Length larger"),
    "ncl.dat": Expect(REJECT, 400, reason="Content-Length"),
    "scalar02.dat": Expect(REJECT, 400, reason="CSeq number out of range"),
    "scalarlg.dat": Expect(DROP),
    "quotbal.dat": Expect(REJECT, 400, reason="unterminated quoted string"),
    "ltgtruri.dat": Expect(REJECT, 400, reason="<> around the Request-URI"),
    "lwsruri.dat": Expect(REJECT, 400, reason="whitespace in Request-URI"),
    "lwsstart.dat": Expect(PARSE, checks=_lwsstart, liberal="extra SP in the Request-Line ignored"),
    "trws.dat": Expect(PARSE, checks=_trws, liberal="trailing SP in the Request-Line ignored"),
    "escruri.dat": Expect(
        PARSE, checks=_escruri, liberal="escaped headers in the Request-URI exposed, never acted on"
    ),
    "baddate.dat": Expect(PARSE, checks=_baddate, liberal="Date is never parsed (RFC 3261 §16.3)"),
    "regbadct.dat": Expect(
        REJECT, 400, phase="contacts", reason="addr-spec needs <>",
        notes=("Contact is decoded when read: a proxy that reads it answers 400",),
    ),  # fmt: skip
    "badaspec.dat": Expect(PARSE, checks=_badaspec, liberal="spaces inside <> ignored"),
    "baddn.dat": Expect(REJECT, 400, reason="display name"),
    "badvers.dat": Expect(REJECT, 505, reason="version"),
    "mismatch01.dat": Expect(REJECT, 400, reason="CSeq method"),
    "mismatch02.dat": Expect(
        REJECT, 400, reason="CSeq method", notes=("400, which RFC 4475 accepts instead of 501",)
    ),
    "bigcode.dat": Expect(DROP),
    # 3.2 transaction layer
    "badbranch.dat": Expect(
        PARSE, checks=_badbranch,
        application="transaction layer: RFC 2543 matching (no RFC 3261 branch) or 400",
    ),  # fmt: skip
    # 3.3 application layer
    "insuf.dat": Expect(REJECT, 400, reason="missing From, To, Call-ID"),
    "unkscm.dat": Expect(REJECT, 416, reason="unsupported URI scheme"),
    "novelsc.dat": Expect(REJECT, 416, reason="unsupported URI scheme"),
    "unksm2.dat": Expect(PARSE, checks=_unksm2, application="registrar: 400 (unknown schemes)"),
    "bext01.dat": Expect(PARSE, checks=_bext01, application="proxy: 420 with Unsupported"),
    "invut.dat": Expect(PARSE, checks=_invut, application="proxy forwards; endpoint: 415"),
    "regaut01.dat": Expect(PARSE, checks=_regaut01, application="registrar: ignore or 401"),
    "multi01.dat": Expect(REJECT, 400, reason="more than one"),
    "mcl01.dat": Expect(REJECT, 400, reason="more than one Content-Length"),
    "bcast.dat": Expect(PARSE, checks=_bcast, application="proxy: drop, never send to broadcast"),
    "zeromf.dat": Expect(PARSE, checks=_zeromf, application="proxy: 483 Too Many Hops"),
    "cparam01.dat": Expect(PARSE, checks=_cparam01),
    "cparam02.dat": Expect(PARSE, checks=_cparam02),
    "regescrt.dat": Expect(PARSE, checks=_regescrt),
    "sdp01.dat": Expect(PARSE, checks=_sdp01, application="endpoint: 406 (400 acceptable)"),
    # 3.4 backward compatibility
    "inv2543.dat": Expect(PARSE, checks=_inv2543, notes=("no Content-Length on a datagram",)),
}


class RFC4475Tests(SynchronousTestCase):
    """
    Every RFC 4475 torture message has the outcome L{TABLE} gives it.
    """

    def setUp(self) -> None:
        self.directory = torturePath()
        if not os.path.isdir(self.directory):
            why = f"RFC 4475 messages not found in {self.directory} (set SIPXMPP_RFC4475_DIR)"
            if os.environ.get("CI", "").lower() == "true":
                self.fail(why)
            self.skipTest(why)

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.directory, name), "rb") as source:
            return source.read()

    def manifest(self) -> list[dict[str, str]]:
        with open(os.path.join(self.directory, "MANIFEST.tsv"), encoding="utf-8") as source:
            lines = source.read().splitlines()
        names = lines[0].split("\t")
        return [dict(zip(names, line.split("\t"), strict=True)) for line in lines[1:] if line]

    def test_tableCoversManifest(self) -> None:
        """
        The table has exactly the 49 files of the manifest, and the files
        are the published bytes (SHA256SUMS).
        """
        files = [row["file"] for row in self.manifest()]
        self.assertEqual(len(files), 49)
        self.assertEqual(sorted(files), sorted(TABLE))
        sums: dict[str, str] = {}
        for line in self.read("SHA256SUMS").decode().splitlines():
            digest, name = line.split(None, 1)
            sums[name.lstrip("*")] = digest
        for name in files:
            self.assertEqual(hashlib.sha256(self.read(name)).hexdigest(), sums[name], name)

    def test_manifestClassesAgree(self) -> None:
        """
        Every message the manifest calls valid parses; every one the table
        rejects at parse time is classed invalid or application.
        """
        for row in self.manifest():
            expect = TABLE[row["file"]]
            if row["class"] == "valid":
                self.assertEqual(expect.outcome, PARSE, row["file"])
            if expect.outcome != PARSE:
                self.assertIn(row["class"], ("invalid", "application"), row["file"])

    def test_messages(self) -> None:
        """
        Each message has its expected outcome.
        """
        for row in self.manifest():
            name = row["file"]
            with self.subTest(name):
                self.checkOne(name, self.read(name), TABLE[name])

    def checkOne(self, name: str, data: bytes, expect: Expect) -> None:
        if expect.outcome == PARSE:
            message = parseMessage(data)
            end = data.find(b"\r\n\r\n") + 4 + len(message.body)
            self.assertEqual(message.toBytes(), data[:end], name)
            if name != "inv2543.dat":
                self.assertEqual(message.contentLength, len(message.body), name)
            assert expect.checks is not None
            expect.checks(message)
            # A valid message has no malformed header behind a lazy accessor.
            for accessor in ACCESSORS:
                getattr(message, accessor)
            if isinstance(message, SIPRequest):
                message.uri  # noqa: B018
            exerciseMessage(message, data)
            return
        if expect.phase == "parse":
            error = self.assertRaises(SIPParseError, parseMessage, data)
        else:
            message = parseMessage(data)
            error = self.assertRaises(SIPParseError, getattr, message, expect.phase)
        self.assertEqual(error.code, expect.code, (name, error))
        self.assertIn(expect.reason, error.reason, name)
        if expect.outcome == DROP:
            self.assertTrue(error.drop)
            self.assertIs(error.isRequest, False)
            self.assertIsNone(errorResponse(error))
        elif expect.phase == "parse":
            self.assertIs(error.isRequest, True)
            self.checkErrorResponse(name, data, error)

    def checkErrorResponse(self, name: str, data: bytes, error: SIPParseError) -> None:
        """
        The error carries what the response needs, and the response copies it.
        """
        response = errorResponse(error, toTag="t0")
        assert response is not None and error.code is not None, name
        self.assertTrue(response.startswith(b"SIP/2.0 %d " % error.code), name)
        self.assertTrue(response.endswith(b"\r\nContent-Length: 0\r\n\r\n"), name)
        names = [key for key, _ in error.context]
        self.assertIn("via", names, name)
        if name == "insuf.dat":
            # No From, To or Call-ID to copy: Via and CSeq still are.
            self.assertEqual(set(names), {"via", "cseq"})
            return
        for key in ("from", "to", "call-id", "cseq"):
            self.assertIn(key, names, name)
        if name in COPIES_MALFORMED:
            # The malformed header is one the response must copy.
            self.assertRaises(SIPParseError, parseMessage, response)
            return
        reply = parseMessage(response)
        assert isinstance(reply, SIPResponse)
        self.assertEqual(reply.code, error.code)
        self.assertIsNotNone(reply.toTag)
        # The first Call-ID is copied (multi01 has two).
        self.assertEqual(reply.callID.encode(), next(v for k, v in error.context if k == "call-id"))

    def test_specificErrorResponses(self) -> None:
        """
        badvers gets a 505 and unkscm a 416 that echo the request; scalar02's
        out-of-range CSeq is echoed as received.
        """
        for name, code in (("badvers.dat", 505), ("unkscm.dat", 416)):
            error = self.assertRaises(SIPParseError, parseMessage, self.read(name))
            reply = parseMessage(errorResponse(error, toTag="x1") or b"")
            assert isinstance(reply, SIPResponse)
            self.assertEqual((reply.code, reply.toTag, reply.cseq.method), (code, "x1", "OPTIONS"))
        error = self.assertRaises(SIPParseError, parseMessage, self.read("scalar02.dat"))
        response = errorResponse(error) or b""
        self.assertIn(b"\r\nCSeq: 36893488147419103232 REGISTER\r\n", response)

    def test_streamFraming(self) -> None:
        """
        Over a stream: valid messages with a Content-Length frame and parse
        one octet at a time; dblreq yields both of its requests; a missing,
        negative or repeated Content-Length breaks the stream; clerr and baddn
        wait for more data.
        """
        for row in self.manifest():
            name = row["file"]
            data = self.read(name)
            expect = TABLE[name]
            framer = StreamFramer()
            with self.subTest(name):
                if name in ("inv2543.dat", "ncl.dat", "mcl01.dat"):
                    error = self.assertRaises(SIPParseError, framer.feed, data)
                    self.assertEqual(error.code, 400)
                    continue
                if name == "dblreq.dat":
                    # Its INVITE is framed too; the 3 octets its Content-Length
                    # leaves over ("C" and a CRLF pair) then break the stream.
                    out = framer.feed(data)
                    self.assertEqual(len(out), 2)
                    self.assertEqual(parseMessage(out[1], datagram=False).cseq.method, "INVITE")
                    error = framer.pendingError
                    assert error is not None
                    self.assertIs(self.assertRaises(SIPParseError, framer.feed, b""), error)
                    continue
                out = []
                for i in range(len(data)):
                    out.extend(framer.feed(data[i : i + 1]))
                if name in ("clerr.dat", "baddn.dat"):
                    # Content-Length beyond the data, or no empty line yet:
                    # a stream waits for more.
                    self.assertEqual(out, [])
                    self.assertEqual(framer.buffered, len(data))
                    continue
                self.assertEqual(out[0], data[: len(out[0])])
                if expect.outcome == PARSE:
                    message = parseMessage(out[0], datagram=False)
                    self.assertEqual(message.toBytes(), out[0])
                elif expect.phase == "parse":
                    error = self.assertRaises(SIPParseError, parseMessage, out[0], datagram=False)
                    self.assertEqual(error.code, expect.code)

    def test_liberalChoicesDocumented(self) -> None:
        """
        Every message RFC 4475 lets an implementation be liberal about has
        its choice recorded in the table.
        """
        for row in self.manifest():
            if "liberal" in row["expected"] and TABLE[row["file"]].outcome == PARSE:
                self.assertTrue(TABLE[row["file"]].liberal, row["file"])
