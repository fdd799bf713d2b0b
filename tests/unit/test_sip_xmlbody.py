"""
Tests for L{sipxmpp.sip.wire.xmlbody}: the hardened parser refuses what
C{defusedxml} refuses and builds the same tree as C{defusedxml.ElementTree}.
"""

from __future__ import annotations

import glob
import os
from xml.etree.ElementTree import tostring

from defusedxml.ElementTree import fromstring as defusedFromstring
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.xmlbody import XMLBodyError, parseXML

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "kamailio-pua")

PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:alice@example.test">
  <tuple id="t1"><status><basic>open</basic></status></tuple>
  <dm:person id="p1" xml:lang="en"><rpid:activities><rpid:on-the-phone/></rpid:activities>
    <dm:note>caf\xc3\xa9 &amp; &#x263A;</dm:note></dm:person>
</presence>
"""


class TreeTests(SynchronousTestCase):
    def test_sameTreeAsDefusedxml(self) -> None:
        """
        Every PUBLISH body recorded from Kamailio, and a PIDF document with
        prefixes, a namespaced attribute and character references, parse
        into the tree defusedxml builds.
        """
        bodies = [PIDF]
        for path in sorted(glob.glob(os.path.join(DATA, "*", "publish-*.sip"))):
            with open(path, "rb") as f:
                body = f.read().split(b"\r\n\r\n", 1)[1]
            if body:  # a refresh has none
                bodies.append(body)
        self.assertGreater(len(bodies), 10)
        for body in bodies:
            self.assertEqual(tostring(parseXML(body, "x")), tostring(defusedFromstring(body)))

    def test_namespacedAttribute(self) -> None:
        root = parseXML(PIDF, "pidf")
        person = root.find("{urn:ietf:params:xml:ns:pidf:data-model}person")
        assert person is not None
        self.assertEqual(person.get("{http://www.w3.org/XML/1998/namespace}lang"), "en")


class RefusalTests(SynchronousTestCase):
    def assertRefused(self, body: bytes, reason: str) -> None:
        error = self.assertRaises(XMLBodyError, parseXML, body, "doc")
        self.assertIn(reason, error.reason)
        self.assertEqual(error.code, 400)

    def test_dtd(self) -> None:
        self.assertRefused(b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
                           "a DTD is not allowed")  # fmt: skip

    def test_dtdInUTF16(self) -> None:
        """
        A DTD is refused whatever the encoding hides it in.
        """
        body = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
        self.assertRefused(body.encode("utf-16"), "a DTD is not allowed")

    def test_undeclaredEntity(self) -> None:
        self.assertRefused(b"<a>&x;</a>", "malformed XML (undefined entity")

    def test_unboundPrefix(self) -> None:
        self.assertRefused(b"<p:a/>", "malformed XML (unbound prefix")

    def test_unknownEncoding(self) -> None:
        self.assertRefused(b'<?xml version="1.0" encoding="no-such"?><a/>', "doc:")

    def test_empty(self) -> None:
        self.assertRefused(b"", "malformed XML")
