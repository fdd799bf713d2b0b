"""
Tests for L{sipxmpp.sip.wire.pidfbuild} (PIDF with RPID, written) and the
presence seam of L{sipxmpp.sip.core.presence}: documents round-trip
through the parser of L{sipxmpp.sip.wire.pidf}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.presence import (
    UNAVAILABLE,
    InMemoryPresenceSource,
    ResourcePresence,
    UserPresence,
    activitiesOf,
    combine,
    presenceDocument,
)
from sipxmpp.sip.core.publications import isOnThePhone
from sipxmpp.sip.wire.pidf import parsePresence
from sipxmpp.sip.wire.pidfbuild import buildPresence, xmlText

ALICE = "sip:alice@example.test"


class BuildPresenceTests(SynchronousTestCase):
    def test_open(self) -> None:
        """
        An open tuple, no person when there is nothing to say about one.
        """
        body = buildPresence(ALICE)
        presence = parsePresence(body)
        self.assertEqual(presence.entity, ALICE)
        self.assertTrue(presence.open)
        self.assertEqual(presence.activities, frozenset())
        self.assertEqual(presence.notes, ())
        self.assertNotIn(b"person", body)

    def test_closed(self) -> None:
        presence = parsePresence(buildPresence(ALICE, basic="closed"))
        self.assertFalse(presence.open)
        self.assertEqual([t.basic for t in presence.tuples], ["closed"])

    def test_activitiesAndNote(self) -> None:
        """
        Activities go under the RFC 4479 person, the note both there and in
        the tuple; a contact is written when given.
        """
        body = buildPresence(ALICE, activities=("away", "busy", "away"), note=" Lunch ",
                             contact="sip:alice@192.0.2.1")  # fmt: skip
        presence = parsePresence(body)
        self.assertEqual(presence.activities, frozenset({"away", "busy"}))
        self.assertEqual(presence.notes, ("Lunch",))
        (only,) = presence.tuples
        self.assertEqual((only.id, only.contact, only.notes),
                         ("sipxmpp", "sip:alice@192.0.2.1", ("Lunch",)))  # fmt: skip
        self.assertEqual(body.count(b"<rpid:away/>"), 1)

    def test_escaping(self) -> None:
        """
        Markup, quotes and ampersands in texts are escaped; characters XML
        cannot carry are dropped; non-ASCII is UTF-8.
        """
        note = 'a <b>&amp; "c" \'d\' ]]> \x00\x07\x1b é 🎧 \ud800'
        entity = 'sip:o"brien&co@example.test'
        presence = parsePresence(buildPresence(entity, note=note))
        self.assertEqual(presence.entity, entity)
        self.assertEqual(presence.notes, ('a <b>&amp; "c" \'d\' ]]>  é 🎧',))
        self.assertEqual(xmlText("a\tb\x0bc\ufffe"), "a\tbc")

    def test_refused(self) -> None:
        """
        A basic value, activity or tuple id the builder does not know is a
        caller's bug.
        """
        self.assertRaises(ValueError, buildPresence, ALICE, basic="maybe")
        self.assertRaises(ValueError, buildPresence, ALICE, activities=("dancing",))
        self.assertRaises(ValueError, buildPresence, ALICE, tupleId='x" y')


class UserPresenceTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertRaises(ValueError, UserPresence, "busy")
        self.assertTrue(UserPresence().available)
        self.assertFalse(UNAVAILABLE.available)

    def test_combine(self) -> None:
        """
        The available resource of highest priority decides, the first
        among equals; none available is unavailable.
        """
        away = UserPresence("away", "out")
        dnd = UserPresence("dnd", "On the phone", fromSIP=True)
        chat = UserPresence("chat")
        self.assertEqual(combine([]), UNAVAILABLE)
        self.assertEqual(combine([ResourcePresence(5, UNAVAILABLE)]), UNAVAILABLE)
        self.assertEqual(combine([ResourcePresence(-1, dnd), ResourcePresence(0, away)]), away)
        self.assertEqual(combine([ResourcePresence(-1, dnd), ResourcePresence(9, UNAVAILABLE)]),
                         dnd)  # fmt: skip
        self.assertEqual(combine([ResourcePresence(3, chat), ResourcePresence(3, away)]), chat)

    def test_activities(self) -> None:
        """
        away and xa are RPID away; the gateway's dnd (a call) on-the-phone,
        the user's own dnd busy.
        """
        self.assertEqual(activitiesOf(UserPresence("xa")), ("away",))
        self.assertEqual(activitiesOf(UserPresence("away")), ("away",))
        self.assertEqual(activitiesOf(UserPresence("dnd", fromSIP=True)), ("on-the-phone",))
        self.assertEqual(activitiesOf(UserPresence("dnd")), ("busy",))
        self.assertEqual(activitiesOf(UserPresence("chat")), ())
        self.assertEqual(activitiesOf(UserPresence()), ())

    def test_document(self) -> None:
        """
        The document of a presence: open while available, closed when
        unavailable or unknown; the status text is the note.
        """
        doc = parsePresence(presenceDocument(ALICE, UserPresence("dnd", "Meeting")))
        self.assertEqual((doc.open, doc.activities, doc.notes),
                         (True, frozenset({"busy"}), ("Meeting",)))  # fmt: skip
        self.assertTrue(isOnThePhone(parsePresence(presenceDocument(
            ALICE, UserPresence("dnd", fromSIP=True)))))  # fmt: skip
        for presence in (None, UserPresence("unavailable", "Gone")):
            doc = parsePresence(presenceDocument(ALICE, presence))
            self.assertFalse(doc.open)
            self.assertEqual(doc.activities, frozenset())
        self.assertEqual(parsePresence(presenceDocument(ALICE, UNAVAILABLE)).notes, ())

    def test_inMemory(self) -> None:
        source = InMemoryPresenceSource()
        told: list[str] = []
        source.addListener(told.append)
        self.assertIsNone(source.presenceOf(ALICE))
        source.set(ALICE, UserPresence("away"))
        self.assertEqual(source.presenceOf(ALICE), UserPresence("away"))
        source.set(ALICE, None)
        self.assertIsNone(source.presenceOf(ALICE))
        self.assertEqual(told, [ALICE, ALICE])
