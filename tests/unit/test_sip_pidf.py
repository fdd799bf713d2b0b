"""
Tests for L{sipxmpp.sip.wire.pidf}: RFC 3863 PIDF with RFC 4480 RPID, and
hostile or malformed bodies.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.pidf import Presence, PresenceTuple, parsePresence
from sipxmpp.sip.wire.xmlbody import XMLBodyError

# A phone on a call, as RPID clients publish it: the activity under the
# RFC 4479 person.
ON_THE_PHONE = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
          entity="sip:alice@example.test">
  <tuple id="t8d9f2">
    <status><basic>open</basic></status>
    <contact priority="0.8">sip:alice@192.0.2.10:5060</contact>
    <note>Online</note>
  </tuple>
  <dm:person id="p1">
    <rpid:activities><rpid:on-the-phone/></rpid:activities>
    <dm:note>On the phone</dm:note>
  </dm:person>
</presence>
"""

# RFC 4480's style: notes inside the activities, validity times, other
# RPID elements beside them.
AWAY = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
     xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
     xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
     entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status><basic>closed</basic></status>
    <rpid:relationship><rpid:self/></rpid:relationship>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2005-10-27T16:49:29Z</timestamp>
  </tuple>
  <note>I'll be in Tokyo next week</note>
  <dm:person id="p1">
    <rpid:activities from="2005-05-30T12:00:00+05:00" until="2005-05-30T17:00:00+05:00">
      <rpid:note>Far away</rpid:note>
      <rpid:away/>
      <rpid:meal/>
    </rpid:activities>
    <rpid:place-type><rpid:residence/></rpid:place-type>
  </dm:person>
</presence>
"""

# An older publisher: the activity inside the tuple's status.
BUSY_IN_STATUS = b"""<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.test">
  <tuple id="1">
    <status>
      <basic>OPEN</basic>
      <activities xmlns="urn:ietf:params:xml:ns:pidf:rpid"><busy/></activities>
    </status>
  </tuple>
</presence>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE presence [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test">
  <note>&f;</note>
</presence>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test">
  <note>&xxe;</note>
</presence>
"""

# External parameter entity: fetched while the DTD is read, before any
# element, by a parser that resolves them.
XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE presence [<!ENTITY % remote SYSTEM "file:///etc/passwd"> %remote;]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test"/>
"""


class PresenceTests(SynchronousTestCase):
    def test_onThePhone(self) -> None:
        self.assertEqual(parsePresence(ON_THE_PHONE), Presence(
            "sip:alice@example.test",
            (PresenceTuple("t8d9f2", "open", "sip:alice@192.0.2.10:5060", ("Online",)),),
            frozenset({"on-the-phone"}),
            ("On the phone",),
        ))  # fmt: skip
        self.assertTrue(parsePresence(ON_THE_PHONE).open)

    def test_rpidExample(self) -> None:
        """
        Activities are the RPID elements under C{<activities>}, not its
        notes nor other RPID elements.
        """
        presence = parsePresence(AWAY)
        self.assertEqual(presence.activities, frozenset({"away", "meal"}))
        self.assertEqual(presence.notes, ("I'll be in Tokyo next week",))
        (tuple_,) = presence.tuples
        self.assertEqual(tuple_.basic, "closed")
        self.assertEqual(tuple_.notes, ("Don't Disturb Please!", "Ne derangez pas, s'il vous plait"))
        self.assertFalse(presence.open)

    def test_activityInStatus(self) -> None:
        presence = parsePresence(BUSY_IN_STATUS)
        self.assertEqual(presence.activities, frozenset({"busy"}))
        self.assertEqual(presence.tuples, (PresenceTuple("1", "open", None),))

    def test_bareDocument(self) -> None:
        presence = parsePresence(b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="e">'
                                 b'<tuple><status><basic>maybe</basic></status></tuple>'
                                 b"</presence>")  # fmt: skip
        self.assertEqual(presence, Presence("e", (PresenceTuple("", None, None),)))

    def test_otherNamespacesIgnored(self) -> None:
        presence = parsePresence(
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="e">'
            b'<activities xmlns="urn:example:not-rpid"><on-the-phone/></activities>'
            b"</presence>"
        )
        self.assertEqual(presence.activities, frozenset())


class HostileTests(SynchronousTestCase):
    def assertRefused(self, body: bytes, reason: str) -> XMLBodyError:
        error = self.assertRaises(XMLBodyError, parsePresence, body)
        self.assertEqual(error.code, 400)
        self.assertIn(reason, error.reason)
        return error

    def test_billionLaughs(self) -> None:
        error = self.assertRefused(BILLION_LAUGHS, "a DTD is not allowed")
        self.assertNotIn("aaaa", str(error))

    def test_xxe(self) -> None:
        for body in (XXE, XXE_PARAMETER):
            error = self.assertRefused(body, "a DTD is not allowed")
            self.assertNotIn("root:", str(error))

    def test_malformed(self) -> None:
        self.assertRefused(ON_THE_PHONE.replace(b"</tuple>", b""), "malformed XML")
        self.assertRefused(b"\xff\xfe<", "malformed XML")

    def test_notPIDF(self) -> None:
        self.assertRefused(b'<presence entity="e"/>', "root element")
        self.assertRefused(b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>',
                           "root element")  # fmt: skip
        self.assertRefused(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "without entity")
