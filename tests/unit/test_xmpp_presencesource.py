"""
Tests for L{sipxmpp.xmpp.presencesource}: the users' XMPP presence and
their watchers' authorisation, on stream stubs and a Clock.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from zope.interface.verify import verifyObject

from sipxmpp.sip.core.presence import IPresenceSource, UserPresence
from sipxmpp.telephony.events import Event, StateChange, TelephonyState
from sipxmpp.xmpp.accounts import Account, MemoryAccountDirectory
from sipxmpp.xmpp.callpresence import RESOURCE_SETTLE
from sipxmpp.xmpp.presencesource import NS_ROSTER, XMPPPresenceSource
from sipxmpp.xmpp.publisher import Publisher, PublisherSettings
from sipxmpp.xmpp.remote import NODE_SET_STATUS
from tests.unit.xmppstreams import (
    NS_COMMANDS,
    FakeSession,
    child,
    commandAnswer,
    itemsAnswer,
    presenceXML,
    rcForm,
)

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
CAROL = "sip:carol@example.test"
PSI = "alice@example.test/psi"
S = TelephonyState


def roster(*items: tuple[str, str]) -> str:
    body = "".join(f"<item jid='{jid}' subscription='{sub}'/>" for jid, sub in items)
    return f"<query xmlns='{NS_ROSTER}'>{body}</query>"


class PresenceSourceTestCase(SynchronousTestCase):
    """
    A publisher on stream stubs and its presence source; no tests.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.accounts = MemoryAccountDirectory([
            Account(ALICE, JID("alice@example.test"), "a"),
            Account(BOB, JID("bob@example.test"), "b"),
            Account(CAROL, JID("carol@example.test"), "c"),
        ])  # fmt: skip
        self.sessions: list[FakeSession] = []
        self.publisher = Publisher(
            self.clock, PublisherSettings(mode="remote-control"), self.accounts, self.makeSession
        )
        self.publisher.startService()
        self.source = XMPPPresenceSource(self.publisher, self.accounts, allow=["sip:ops@x.test"])
        self.told: list[str] = []
        self.source.addListener(self.told.append)
        self.reauthorised: list[str | None] = []
        self.source.addAuthorisationListener(self.reauthorised.append)

    def makeSession(self, jid: JID, password: str, server: str | None = None) -> FakeSession:
        session = FakeSession(self.clock, f"{jid.userhost()}/sipxmpp")
        self.sessions.append(session)
        return session

    def change(self, state: TelephonyState, aor: str = ALICE) -> None:
        self.publisher.telephonyStateChanged(
            StateChange(aor, Event.ONLINE, state, S.ONLINE, self.clock.seconds())
        )

    def login(self, items: str = roster()) -> FakeSession:
        self.change(S.ONLINE)
        [session] = self.sessions
        session.connect()
        [get] = session.iqs()
        query = child(get, "query", NS_ROSTER)
        assert query is not None and get["type"] == "get", get.toXml()
        session.answer(get, items)
        self.clock.advance(RESOURCE_SETTLE)
        session.take()
        return session

    def psiOnline(self, session: FakeSession, show: str | None = None, priority: int = 5) -> None:
        session.receive(presenceXML(PSI, show=show, status="working", priority=priority))
        for iq in session.iqs():
            session.answer(iq, itemsAnswer(PSI, [NODE_SET_STATUS]))



class PresenceSourceTests(PresenceSourceTestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPresenceSource, self.source))

    def test_noSession(self) -> None:
        """
        Without a session nothing is known; once the stream is up the
        gateway's own resource shows plain available.
        """
        self.assertIsNone(self.source.presenceOf(ALICE))
        self.change(S.ONLINE)
        self.assertIsNone(self.source.presenceOf(ALICE))
        self.sessions[0].connect()
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence())
        self.assertIn(ALICE, self.told)

    def test_clientDecides(self) -> None:
        """
        The user's client (priority above the gateway's) decides; every
        change is told, and the session's end makes it unknown.
        """
        session = self.login()
        del self.told[:]
        self.psiOnline(session, show="away")
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence("away", "working"))
        self.assertEqual(self.told, [ALICE])
        session.receive(presenceXML(PSI, show="dnd", status="meeting", priority=5))
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence("dnd", "meeting"))
        session.receive(presenceXML(PSI, kind="unavailable"))
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence())
        session.disconnect()
        self.assertIsNone(self.source.presenceOf(ALICE))
        self.publisher.logout(ALICE)
        self.assertIsNone(self.source.presenceOf(ALICE))
        self.assertEqual(self.told[-1], ALICE)

    def test_unchangedNotTold(self) -> None:
        """
        A change that leaves the combined presence as it was is not told.
        """
        session = self.login()
        self.psiOnline(session)
        del self.told[:]
        session.receive(presenceXML("alice@example.test/phone", priority=-5))
        self.assertEqual(self.told, [])

    def test_ownDndIsFromSIP(self) -> None:
        """
        A call shown on the gateway's own resource decides, as from SIP.
        """
        self.publisher.settings = PublisherSettings(mode="resource")
        self.login()
        self.change(S.ON_THE_PHONE)
        presence = self.source.presenceOf(ALICE)
        assert presence is not None
        self.assertEqual((presence.show, presence.fromSIP), ("dnd", True))

    def test_remoteControlledDndIsFromSIP(self) -> None:
        """
        A client the gateway set to dnd by remote control decides, as from
        SIP; the same client at dnd by the user's hand is not.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        [execute] = session.iqs()
        session.answer(execute, commandAnswer(NODE_SET_STATUS, "executing", "s1", rcForm()))
        [submit] = session.iqs()
        assert child(submit, "command", NS_COMMANDS) is not None
        session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed", "s1"))
        text = PublisherSettings().statusText
        session.receive(presenceXML(PSI, show="dnd", status=text, priority=5))
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence("dnd", text, True))
        # The user changes it: the user's own dnd.
        session.receive(presenceXML(PSI, show="dnd", status="mine", priority=5))
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence("dnd", "mine", False))

    def test_authorise(self) -> None:
        """
        Watchers whose JID has a subscription to the user ('both' or
        'from') are active, others rejected; the allow-list always active;
        while the user's roster is not known, pending.
        """
        self.source.aorsChanged({ALICE, BOB, CAROL}, set())
        self.assertEqual(self.source.authorise(BOB, ALICE), "pending")
        self.login(roster(("bob@example.test", "both"), ("carol@example.test", "to")))
        self.assertIn(ALICE, self.reauthorised)
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
        self.assertEqual(self.source.authorise(CAROL, ALICE), "rejected")
        self.assertEqual(self.source.authorise("sip:nobody@example.test", ALICE), "rejected")
        self.assertEqual(self.source.authorise("sip:ops@x.test", ALICE), "active")

    def test_rosterPush(self) -> None:
        """
        Roster pushes from the user's server are answered and applied;
        others are ignored.
        """
        self.source.aorsChanged({ALICE, BOB, CAROL}, set())
        session = self.login(roster(("bob@example.test", "both")))
        del self.reauthorised[:]
        session.receive(
            f"<iq type='set' id='p1'><query xmlns='{NS_ROSTER}'>"
            "<item jid='carol@example.test' subscription='from'/>"
            "<item jid='bob@example.test' subscription='remove'/></query></iq>"
        )
        [result] = session.iqs()
        self.assertEqual((result["type"], result["id"]), ("result", "p1"))
        self.assertEqual(self.reauthorised, [ALICE])
        self.assertEqual(self.source.authorise(CAROL, ALICE), "active")
        self.assertEqual(self.source.authorise(BOB, ALICE), "rejected")
        session.receive(
            f"<iq type='set' id='p2' from='mallory@evil.test'><query xmlns='{NS_ROSTER}'>"
            "<item jid='bob@example.test' subscription='both'/></query></iq>"
        )
        self.assertEqual(self.source.authorise(BOB, ALICE), "rejected")

    def test_watcherRemoved(self) -> None:
        """
        A watcher no longer provisioned is rejected.
        """
        self.source.aorsChanged({ALICE, BOB}, set())
        self.login(roster(("bob@example.test", "both")))
        self.accounts.remove(BOB)
        self.source.aorsChanged(set(), {BOB})
        self.assertIn(None, self.reauthorised)
        self.assertEqual(self.source.authorise(BOB, ALICE), "rejected")

    def test_rosterKeptAfterSession(self) -> None:
        """
        The last known roster still authorises after the stream went and
        after the user was logged out; the next session's roster replaces it.
        """
        self.source.aorsChanged({ALICE, BOB, CAROL}, set())
        session = self.login(roster(("bob@example.test", "both")))
        session.disconnect()
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
        self.publisher.logout(ALICE)
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
        self.assertEqual(self.source.authorise(CAROL, ALICE), "rejected")
        self.sessions.clear()
        self.login(roster(("carol@example.test", "from")))
        self.assertEqual(self.source.authorise(BOB, ALICE), "rejected")
        self.assertEqual(self.source.authorise(CAROL, ALICE), "active")


class AllowListAndOptOutTests(PresenceSourceTestCase):
    """
    The operator's allow-list by domain, and a user's opt-out.
    """

    def setUp(self) -> None:
        super().setUp()
        self.source.allow = frozenset({"sip:ops@x.test", "partner.test"})

    def test_allowedDomain(self) -> None:
        """
        Every AoR of an allowed domain is active (any port), its
        subdomains are not.
        """
        self.source.aorsChanged({ALICE}, set())
        self.login()
        self.assertEqual(self.source.authorise("sip:anyone@partner.test", ALICE), "active")
        self.assertEqual(self.source.authorise("sip:anyone@partner.test:5070", ALICE), "active")
        self.assertEqual(self.source.authorise("sip:anyone@sub.partner.test", ALICE),
                         "rejected")  # fmt: skip

    def test_optedOutAtLookup(self) -> None:
        """
        An account provisioned opted out: every watcher rejected, the
        allow-list too, and no presence (nothing to publish).
        """
        self.accounts.add(Account(ALICE, JID("alice@example.test"), "a", backpublish=False))
        self.source.aorsChanged({ALICE, BOB}, set())
        self.login(roster(("bob@example.test", "both")))
        self.assertEqual(self.source.authorise(BOB, ALICE), "rejected")
        self.assertEqual(self.source.authorise("sip:ops@x.test", ALICE), "rejected")
        self.assertIsNone(self.source.presenceOf(ALICE))
        self.assertEqual(self.source.authorise(ALICE, BOB), "pending")

    def test_optOutLive(self) -> None:
        """
        An admin change opts the user out and back in: the listeners are
        told at once, the presence goes and comes back.
        """
        self.source.aorsChanged({ALICE, BOB}, set())
        self.login(roster(("bob@example.test", "both")))
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
        del self.told[:], self.reauthorised[:]
        self.source.accountChanged(ALICE, Account(ALICE, JID("alice@example.test"), "a",
                                                  backpublish=False))  # fmt: skip
        self.assertEqual((self.told, self.reauthorised), ([ALICE], [ALICE]))
        self.assertEqual(self.source.authorise(BOB, ALICE), "rejected")
        self.assertIsNone(self.source.presenceOf(ALICE))
        # Another change of the account (not of the opt-out) tells nobody.
        self.source.accountChanged(ALICE, Account(ALICE, JID("alice@example.test"), "new",
                                                  backpublish=False))  # fmt: skip
        self.assertEqual(self.told, [ALICE])
        self.source.accountChanged(ALICE, Account(ALICE, JID("alice@example.test"), "a"))
        self.assertEqual(self.told, [ALICE, ALICE])
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
        self.assertEqual(self.source.presenceOf(ALICE), UserPresence())

    def test_optOutForgottenWithTheAccount(self) -> None:
        """
        An account removed and provisioned again takes its new setting.
        """
        self.source.accountChanged(ALICE, Account(ALICE, JID("alice@example.test"), "a",
                                                  backpublish=False))  # fmt: skip
        self.source.aorsChanged(set(), {ALICE})
        self.source.aorsChanged({ALICE, BOB}, set())
        self.login(roster(("bob@example.test", "both")))
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")


class SlowDirectory:
    """
    An account directory whose lookups the test answers.
    """

    def __init__(self, accounts: MemoryAccountDirectory) -> None:
        self.accounts = accounts
        self.asked: list[tuple[str, Deferred[Account | None]]] = []

    def lookup(self, aor: str) -> Deferred[Account | None]:
        d: Deferred[Account | None] = Deferred()
        self.asked.append((aor, d))
        return d

    def answer(self) -> None:
        asked, self.asked = self.asked, []
        for aor, d in asked:
            d.callback(self.accounts._accounts.get(aor))


class UnknownWatcherTests(PresenceSourceTestCase):
    """
    A watcher not (yet) among the provisioned AoRs is looked up: pending
    until the answer, not rejected for good.
    """

    def setUp(self) -> None:
        super().setUp()
        self.slow = SlowDirectory(self.accounts)
        self.source.accounts = self.slow  # type: ignore[assignment]

    def test_provisionedSinceLastRead(self) -> None:
        """
        bob, provisioned since the AoRs were read, is pending while looked
        up (once, however often he asks), then active.
        """
        self.login(roster(("bob@example.test", "both")))
        del self.reauthorised[:]
        self.assertEqual(self.source.authorise(BOB, ALICE), "pending")
        self.assertEqual(self.source.authorise(BOB, ALICE), "pending")
        self.assertEqual([aor for aor, _ in self.slow.asked], [BOB])
        self.slow.answer()
        self.assertEqual(self.reauthorised, [None])
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
        self.assertEqual(self.slow.asked, [])

    def test_notProvisioned(self) -> None:
        """
        A watcher found not provisioned is rejected, and not looked up again
        until the provisioned AoRs grow.
        """
        self.login(roster(("nobody@example.test", "both")))
        nobody = "sip:nobody@example.test"
        self.assertEqual(self.source.authorise(nobody, ALICE), "pending")
        self.slow.answer()
        self.assertEqual(self.source.authorise(nobody, ALICE), "rejected")
        self.assertEqual(self.slow.asked, [])
        self.source.aorsChanged({nobody}, set())
        self.slow.asked.clear()  # the lookup of the AoR added
        self.assertEqual(self.source.authorise(nobody, ALICE), "pending")
        self.assertEqual([aor for aor, _ in self.slow.asked], [nobody])

    def test_lookupFails(self) -> None:
        """
        A store that fails leaves the watcher pending; the next question
        asks again.
        """
        self.login(roster(("bob@example.test", "both")))
        self.assertEqual(self.source.authorise(BOB, ALICE), "pending")
        [(_, d)] = self.slow.asked
        self.slow.asked.clear()
        d.errback(RuntimeError("database is locked"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)
        self.assertEqual(self.source.authorise(BOB, ALICE), "pending")
        self.slow.answer()
        self.assertEqual(self.source.authorise(BOB, ALICE), "active")
