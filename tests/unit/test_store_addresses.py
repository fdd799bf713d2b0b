"""
Tests for L{sipxmpp.store.addresses}: AoR normalisation and bare JIDs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.uri import parseURI
from sipxmpp.store.addresses import (
    InvalidAddress,
    aorOfURI,
    aorOrNone,
    normaliseAoR,
    normaliseBareJID,
    parseBareJID,
)

# JID-like text: mostly the characters the fast path takes, some it leaves
# to stringprep (non-ASCII letters, marks nodeprep or nameprep refuse).
_JID_CHARS = st.sampled_from(
    list("abcXYZ019._+-@ ") + ["..", "-.", ".-", "/", "&", "\u00c9", "\u00df", "\u0130", "\u200b"]
)


class AoRTests(SynchronousTestCase):
    def test_normalForms(self) -> None:
        cases = {
            "SIP:Alice@Example.TEST;transport=tcp": "sip:Alice@example.test",
            "sip:alice@example.test": "sip:alice@example.test",
            "sips:alice@example.test": "sip:alice@example.test",
            " <sip:alice@EXAMPLE.test> ": "sip:alice@example.test",
            "sip:alice@example.test?subject=hi": "sip:alice@example.test",
            "sip:alice@example.test:05060;lr": "sip:alice@example.test:5060",
            "sip:%61lice@example.test": "sip:alice@example.test",
            "sip:a%2fb@example.test": "sip:a%2Fb@example.test",
            "sip:+4930123;phone-context=x@Example.test": "sip:+4930123;phone-context=x@example.test",
            "sip:bob@[2001:DB8::1]": "sip:bob@[2001:db8::1]",
            "sip:bob@192.0.2.1": "sip:bob@192.0.2.1",
            "sip:bob@example.test.": "sip:bob@example.test",
        }
        for text, expected in cases.items():
            self.assertEqual(normaliseAoR(text), expected, text)

    def test_userCaseKept(self) -> None:
        self.assertNotEqual(normaliseAoR("sip:Alice@x.test"), normaliseAoR("sip:alice@x.test"))

    def test_refused(self) -> None:
        cases = {
            "alice@example.test": "scheme is missing (did you mean 'sip:alice@example.test'?)",
            "tel:+4930123": "only sip: and sips: URIs",
            "mailto:a@b.test": "only sip: and sips: URIs",
            "sip:example.test": "user part is missing",
            "sip:@example.test": "user part is empty",
            "sip:alice:pw@example.test": "contains a password",
            "sip:al ice@example.test": "must be escaped",
            "sip:al%zzice@example.test": "two hex digits",
            "sip:alice@exa_mple.test": "not a host name",
            "sip:alice@": "not a host name",
            "sip:alice@example.test:99999": "port must be a number",
            "sip:alice@example.test:": "port must be a number",
            "sip:alice@[::1": "IPv6 host is malformed",
            "": "only sip: and sips:",
        }
        for text, message in cases.items():
            e = self.assertRaises(InvalidAddress, normaliseAoR, text)
            self.assertIn(message, str(e), text)
            self.assertIn("expected a SIP URI like sip:alice@example.com", str(e))

    def test_aorOfURI(self) -> None:
        """
        A parsed URI normalises exactly as its text does.
        """
        cases = [
            "SIP:Alice@Example.TEST;transport=tcp", "sips:alice@example.test",
            "sip:alice@example.test:05060;lr", "sip:%61lice@example.test",
            "sip:a%2fb@example.test", "sip:+4930123;phone-context=x@Example.test",
            "sip:bob@[2001:DB8::1]", "sip:bob@example.test.",
        ]
        for text in cases:
            self.assertEqual(aorOfURI(parseURI(text)), normaliseAoR(text), text)
        for text in ["sip:example.test", "tel:+4930123", "sip:alice:pw@example.test"]:
            self.assertIsNone(aorOfURI(parseURI(text)), text)

    def test_aorOrNone(self) -> None:
        self.assertEqual(aorOrNone("sips:Bob@Example.test;user=phone"), "sip:Bob@example.test")
        self.assertIsNone(aorOrNone("sip:example.test"))
        self.assertIsNone(aorOrNone("tel:+123"))

    def test_passwordNotEchoed(self) -> None:
        """
        The message about a password in the URI is one line and says what
        is wrong; it is the operator's own input, shortened when long.
        """
        e = self.assertRaises(InvalidAddress, normaliseAoR, "sip:alice:" + "x" * 200 + "@h.test")
        self.assertNotIn("x" * 100, str(e))
        self.assertNotIn("\n", str(e))


class JIDTests(SynchronousTestCase):
    def test_bare(self) -> None:
        self.assertEqual(parseBareJID("Alice@Example.TEST").full(), "alice@example.test")

    def test_refused(self) -> None:
        cases = {
            "example.test": "no user part",
            "alice@example.test/res": "has a resource; expected a bare JID like alice@example.test",
            "al ice@example.test": "invalid JID",
            "alice@": "invalid JID",
            "@example.test": "invalid JID",
            "alice@example..test": "an empty label in the domain",
            "": "invalid JID",
        }
        for text, message in cases.items():
            e = self.assertRaises(InvalidAddress, parseBareJID, text)
            self.assertIn(message, str(e), text)

    def test_normaliseBareJID(self) -> None:
        self.assertEqual(normaliseBareJID(" Alice@Example.TEST "), "alice@example.test")
        self.assertEqual(normaliseBareJID("\u00c9lise@example.test"), "\u00e9lise@example.test")
        for text in ("example.test", "alice@example.test/res", "alice@-x.test", ""):
            self.assertRaises(InvalidAddress, normaliseBareJID, text)

    @settings(max_examples=2000, deadline=None)
    @given(st.lists(_JID_CHARS, max_size=12).map("".join))
    def test_normaliseBareJIDAsStringprep(self, text: str) -> None:
        """
        The fast path answers exactly as stringprep does, or refuses
        exactly what it refuses.
        """
        try:
            expected: str | None = parseBareJID(text).userhost()
        except InvalidAddress:
            expected = None
        try:
            got: str | None = normaliseBareJID(text)
        except InvalidAddress:
            got = None
        self.assertEqual(got, expected, repr(text))
