"""
Tests for L{sipxmpp.sip.wire.headers}: name-addr and Via values, and the
fast paths for the usual forms against the general parsers.
"""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.grammar import TOKEN_CHARS
from sipxmpp.sip.wire.headers import (
    NameAddr,
    Via,
    parseNameAddr,
    parseNameAddrBytes,
    parseVia,
    parseViaBytes,
)
from sipxmpp.sip.wire.parser import parseMessage
from tests.unit.test_sip_parser import request


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


class MemoTests(SynchronousTestCase):
    """
    L{parseNameAddrBytes} and L{parseViaBytes} are memoised, like
    L{sipxmpp.sip.wire.uri.parseURI}, and as small.
    """

    def test_recurringValueIsShared(self) -> None:
        """
        A value that recurs between per-call ones (the From of a call in
        each of its messages, our own Via in its responses) is parsed once.
        """
        caller = parseNameAddrBytes(b" <sip:caller@example.test>;tag=a1")
        ours = parseViaBytes(b" SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours;rport")
        for call in range(1000):
            parseNameAddrBytes(b" <sip:c%d@example.test>;tag=x" % call)
            parseViaBytes(b" SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK%d" % call)
            self.assertIs(parseNameAddrBytes(b" <sip:caller@example.test>;tag=a1"), caller)
            self.assertIs(parseViaBytes(b" SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours;rport"),
                          ours)  # fmt: skip

    def test_perCallValuesAreNotKept(self) -> None:
        """
        After two thousand values seen once, each memo holds at most 256.
        """

        def live(kind: type) -> int:
            return sum(1 for o in gc.get_objects() if type(o) is kind)

        before = live(NameAddr), live(Via)
        for call in range(2000):
            parseNameAddrBytes(b"<sip:callee@example.test>;tag=kept%06d" % call)
            parseViaBytes(b"SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKkept%06d" % call)
        self.assertLessEqual(live(NameAddr) - before[0], 256)
        self.assertLessEqual(live(Via) - before[1], 256)

    def test_errorsAreNotKept(self) -> None:
        """
        A malformed value raises each time it is parsed.
        """
        for _ in range(2):
            self.assertRaises(SIPParseError, parseNameAddrBytes, b"<sip:a@h")
            self.assertRaises(SIPParseError, parseViaBytes, b"SIP/2.0/UDP")


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
