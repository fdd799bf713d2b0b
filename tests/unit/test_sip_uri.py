"""
Tests for L{sipxmpp.sip.wire.uri} and the lexical helpers of
L{sipxmpp.sip.wire.grammar}.
"""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.grammar import (
    isHost,
    isToken,
    parseParams,
    quotedEnd,
    splitList,
    unescape,
    unquote,
)
from sipxmpp.sip.wire.uri import SIPURI, AbsoluteURI, TelURI, parseURI, uriScheme


def sip(text: str) -> SIPURI:
    uri = parseURI(text)
    assert isinstance(uri, SIPURI), uri
    return uri


class SIPURITests(SynchronousTestCase):
    """
    C{sip:} and C{sips:} URIs.
    """

    def test_full(self) -> None:
        uri = sip("sips:alice:secret@Example.COM:5061;transport=TLS;LR;maddr=239.1.1.1?subject=hi&Priority=urgent")
        self.assertEqual(uri.scheme, "sips")
        self.assertTrue(uri.secure)
        self.assertEqual((uri.user, uri.password, uri.host, uri.port), ("alice", "secret", "Example.COM", 5061))
        self.assertEqual(uri.params, {"transport": "TLS", "lr": None, "maddr": "239.1.1.1"})
        self.assertEqual(uri.headers, {"subject": "hi", "priority": "urgent"})
        self.assertEqual(uri.hostPort, "Example.COM:5061")
        self.assertEqual(str(uri), uri.text)

    def test_minimal(self) -> None:
        uri = sip("SIP:example.com")
        self.assertEqual((uri.scheme, uri.user, uri.password, uri.host, uri.port), ("sip", None, None, "example.com", None))
        self.assertFalse(uri.secure)
        self.assertEqual((uri.params, uri.headers), ({}, {}))

    def test_ipv6(self) -> None:
        uri = sip("sip:bob@[2001:db8::10]:5070;transport=udp")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10]", 5070))
        self.assertEqual(sip("sip:[::1]").host, "[::1]")

    def test_escapes(self) -> None:
        uri = sip("sip:sips%3Auser%40example.com@example.net;n%61me=v%61lue%25%34%31?h%65=%3Cx%3E")
        self.assertEqual(uri.user, "sips:user@example.com")
        self.assertEqual(uri.rawUser, "sips%3Auser%40example.com")
        self.assertEqual(uri.params, {"name": "value%41"})
        self.assertEqual(uri.headers, {"he": "<x>"})
        # An escaped NUL is a NUL, not the end of the string.
        self.assertEqual(sip("sip:%00%00@h").user, "\x00\x00")
        # A % that starts no escape is kept literally.
        self.assertEqual(sip("sip:a%ZZb@h").user, "a%ZZb")

    def test_unusualUserAndPassword(self) -> None:
        uri = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com")
        self.assertEqual(uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        self.assertEqual(uri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        self.assertEqual(sip("sip:user;par=u%40example.net@example.com").user, "user;par=u@example.net")
        self.assertEqual(sip("sip:u:@h").password, "")

    def test_invalid(self) -> None:
        for text in (
            "sip:", "sip:@h", "sip:a@", "sip:a b@h", "sip:a@h:", "sip:a@h:0", "sip:a@h:65536",
            "sip:a@h:5o60", "sip:a@[::1", "sip:a@[::1]x", "sip:a@h;", "sip:a@h;=v", "sip:a@h;p=",
            "sip:a@h?", "sip:a@h?x", "sip:a@ho<st", "sip:a\"b@h", "sip:a@h;p=a b", "sip:a@h\r\n",
            "sip:a@h_!", "sip:a@h;p=<x>",
        ):  # fmt: skip
            with self.subTest(text):
                error = self.assertRaises(SIPParseError, parseURI, text)
                self.assertEqual(error.code, 400)


class OtherSchemeTests(SynchronousTestCase):
    """
    C{tel:} and schemes this layer does not interpret.
    """

    def test_tel(self) -> None:
        uri = parseURI("tel:+1-201-555-0123;phone-context=example.com;ext=1%32")
        assert isinstance(uri, TelURI)
        self.assertEqual(uri.scheme, "tel")
        self.assertEqual(uri.number, "+1-201-555-0123")
        self.assertEqual(uri.params, {"phone-context": "example.com", "ext": "12"})
        self.assertEqual(str(uri), "tel:+1-201-555-0123;phone-context=example.com;ext=1%32")
        for bad in ("tel:", "tel:+1 2", "tel:;x=1", "tel:+1;"):
            self.assertRaises(SIPParseError, parseURI, bad)

    def test_absolute(self) -> None:
        for text, scheme in (("http://www.example.com", "http"), ("isbn:2983792873", "isbn"),
                             ("Soap.Beep://192.0.2.103:3002", "soap.beep"), ("urn:service:sos", "urn")):  # fmt: skip
            uri = parseURI(text)
            assert isinstance(uri, AbsoluteURI)
            self.assertEqual((uri.scheme, uri.text, str(uri)), (scheme, text, text))
        for bad in ("x:", "1x:abc", "noscheme", ":abc", "a b:c", "mailto:a b", "h:<x>"):
            self.assertRaises(SIPParseError, parseURI, bad)

    def test_scheme(self) -> None:
        self.assertEqual(uriScheme("SiPs:x"), "sips")
        self.assertEqual(uriScheme("nobodyKnowsThisScheme:totallyopaquecontent"), "nobodyknowsthisscheme")
        self.assertRaises(SIPParseError, uriScheme, "<sip:x>")


class MemoTests(SynchronousTestCase):
    """
    L{parseURI} is memoised, but calls must not keep URIs alive.
    """

    def test_perCallURIsAreNotKept(self) -> None:
        """
        Every call brings URIs seen once (the registrar's Record-Route with
        its per-call C{ftag}); after two thousand of them the memo holds at
        most 256 parsed URIs (about 1 KB each), not one per call.
        """

        def live() -> int:
            return sum(1 for o in gc.get_objects() if type(o) is SIPURI)

        before = live()
        for call in range(2000):
            parseURI(f"sip:192.0.2.7:5060;lr;ftag=soak{call:06d}x9;did=c4b.{call}")
        self.assertLessEqual(live() - before, 256)

    def test_recurringURIIsShared(self) -> None:
        """
        A URI that recurs between per-call ones is parsed once.
        """
        ours = parseURI("sip:192.0.2.1:5060;lr")
        for call in range(1000):
            parseURI(f"sip:192.0.2.7:5060;lr;ftag=memo{call:06d}")
            self.assertIs(parseURI("sip:192.0.2.1:5060;lr"), ours)


class GrammarTests(SynchronousTestCase):
    """
    Tokens, quoted strings, lists, parameters, escapes.
    """

    def test_token(self) -> None:
        self.assertTrue(isToken("!interesting-Method0123456789_*+`.%indeed'~"))
        for bad in ("", "a b", "a,b", "é", "a\x00", '"a"', "a:b"):
            self.assertFalse(isToken(bad), bad)

    def test_host(self) -> None:
        for good in ("example.com", "192.0.2.1", "[2001:db8::1]", "[::ffff:192.0.2.1]", "a_b.example"):
            self.assertTrue(isHost(good), good)
        for bad in ("", "a b", "[::1", "ex!ample", "[g::1]", "a:b"):
            self.assertFalse(isHost(bad), bad)

    def test_quotedString(self) -> None:
        self.assertEqual(quotedEnd('"a\\"b" rest', 0), 6)
        self.assertEqual(quotedEnd('x"\\\\"', 1), 5)
        for bad in ('"abc', '"a\\"', '"\\'):
            self.assertRaises(SIPParseError, quotedEnd, bad, 0)
        self.assertEqual(unquote('"a\\"b\\\\c"'), 'a"b\\c')
        self.assertEqual(unquote("token"), "token")

    def test_splitList(self) -> None:
        value = b' <sip:a@h;x=1,2>, "b, c" <sip:b@h> ,d'
        self.assertEqual([value[s:e].strip() for s, e in splitList(value)],
                         [b"<sip:a@h;x=1,2>", b'"b, c" <sip:b@h>', b"d"])  # fmt: skip
        self.assertEqual(splitList(b""), [(0, 0)])
        self.assertEqual(len(splitList(b",,")), 3)
        for bad in (b'"open, x', b"<open, x"):
            self.assertRaises(SIPParseError, splitList, bad)

    def test_params(self) -> None:
        self.assertEqual(
            parseParams(' ; Tag = a1 ;lr; q=0.5 ;x="a;b=c" ;tag=second'),
            {"tag": "a1", "lr": None, "q": "0.5", "x": '"a;b=c"'},
        )
        self.assertEqual(parseParams(""), {})
        for bad in ("x;a", ";", ";a=", ";=b", ";a b=c", ';a="x', ";a=b c", ";a=<b>", ";a=b\""):
            self.assertRaises(SIPParseError, parseParams, bad)

    def test_unescape(self) -> None:
        self.assertEqual(unescape("%41%42c"), "ABc")
        self.assertEqual(unescape("100%"), "100%")
        self.assertEqual(unescape("%e2%82%ac"), "\u20ac")
        self.assertEqual(unescape("%ff").encode("utf-8", "surrogateescape"), b"\xff")
