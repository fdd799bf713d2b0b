"""
Tests for L{sipxmpp.xmpp.caps}: XEP-0115 verification strings, with the
examples of XEP-0115 sections 5.2 and 5.3.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish
from twisted.words.xish.domish import elementStream

from sipxmpp.xmpp.caps import CapsInvalid, computeVer, verificationString, verifies

FEATURES = (
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
)

SIMPLE = (
    "<query xmlns='http://jabber.org/protocol/disco#info'"
    " node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>"
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>" + FEATURES + "</query>"
)

# In another order than the sorted one, to show the sorting.
COMPLEX = (
    "<query xmlns='http://jabber.org/protocol/disco#info'"
    " node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>"
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>"
    + FEATURES
    + "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field>"
    "<field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field>"
    "<field var='software_version'><value>0.11</value></field>"
    "</x></query>"
)


def parse(xml: str) -> domish.Element:
    found: list[domish.Element] = []
    stream = elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse("<r xmlns='jabber:client'>" + xml)
    return found[0]


class VerificationStringTests(SynchronousTestCase):
    def test_simple(self) -> None:
        """
        XEP-0115 5.2: one identity, four features.
        """
        query = parse(SIMPLE)
        self.assertEqual(
            verificationString(query),
            b"client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
            b"http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
            b"http://jabber.org/protocol/muc<",
        )
        self.assertEqual(computeVer(query, "sha-1"), "QgayPKawpkPSDYmwT/WM94uAlu0=")
        self.assertTrue(verifies(query, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0="))

    def test_complex(self) -> None:
        """
        XEP-0115 5.3: identities with xml:lang (sorted, UTF-8), and an
        extended service discovery form.
        """
        query = parse(COMPLEX)
        self.assertEqual(
            verificationString(query),
            "client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
            "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
            "http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<"
            "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<"
            "software_version<0.11<".encode(),
        )
        self.assertEqual(computeVer(query, "sha-1"), "q07IKJEyjvHSyhy//CH0CxmKi8w=")

    def test_mismatch(self) -> None:
        query = parse(SIMPLE.replace("<feature var='http://jabber.org/protocol/muc'/>", ""))
        self.assertFalse(verifies(query, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0="))

    def test_unsupportedHash(self) -> None:
        query = parse(SIMPLE)
        self.assertRaises(CapsInvalid, computeVer, query, "md2")
        self.assertFalse(verifies(query, "md2", "QgayPKawpkPSDYmwT/WM94uAlu0="))

    def test_otherHash(self) -> None:
        query = parse(SIMPLE)
        ver = computeVer(query, "sha-256")
        self.assertTrue(verifies(query, "sha-256", ver))
        self.assertNotEqual(ver, computeVer(query, "sha-1"))

    def test_duplicateIdentity(self) -> None:
        """
        XEP-0115 5.4: two equal identities make the answer unusable.
        """
        identity = "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
        query = parse(SIMPLE.replace(identity, identity * 2))
        self.assertRaises(CapsInvalid, verificationString, query)
        self.assertFalse(verifies(query, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0="))

    def test_duplicateFeature(self) -> None:
        feature = "<feature var='http://jabber.org/protocol/muc'/>"
        query = parse(SIMPLE.replace(feature, feature * 2))
        self.assertRaises(CapsInvalid, verificationString, query)

    def test_duplicateForm(self) -> None:
        start = COMPLEX.index("<x ")
        form = COMPLEX[start : COMPLEX.index("</query>")]
        query = parse(COMPLEX.replace(form, form * 2))
        self.assertRaises(CapsInvalid, verificationString, query)

    def test_formTypeWithDifferentValues(self) -> None:
        query = parse(COMPLEX.replace(
            "<value>urn:xmpp:dataforms:softwareinfo</value>",
            "<value>urn:xmpp:dataforms:softwareinfo</value><value>other</value>",
        ))  # fmt: skip
        self.assertRaises(CapsInvalid, verificationString, query)

    def test_formWithoutHiddenFormTypeIgnored(self) -> None:
        """
        A form whose FORM_TYPE is not hidden is left out, the rest counts.
        """
        query = parse(COMPLEX.replace("var='FORM_TYPE' type='hidden'", "var='FORM_TYPE'"))
        self.assertTrue(verificationString(query).endswith(b"http://jabber.org/protocol/muc<"))
