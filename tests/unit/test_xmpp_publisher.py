"""
Tests for L{sipxmpp.xmpp.publisher}: the policy, on stream stubs and a Clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.telephony.events import Event, StateChange, TelephonyState
from sipxmpp.xmpp.accounts import Account, MemoryAccountDirectory
from sipxmpp.xmpp.activity import RETRACT_ATTEMPTS
from sipxmpp.xmpp.callpresence import RESOURCE_SETTLE, ShownOnClient, ShownOnOwnResource
from sipxmpp.xmpp.publisher import Publisher, PublisherSettings, UserPublisher
from sipxmpp.xmpp.remote import NODE_LEGACY_GAJIM, NODE_SET_STATUS, RemoteStatus
from sipxmpp.xmpp.savedstatuses import SavedStatus
from tests.unit.xmppstreams import (
    CAPS_NODE,
    NS_COMMANDS,
    NS_DISCO_INFO,
    FakeSession,
    capsInfo,
    capsVer,
    child,
    commandAnswer,
    formValues,
    itemsAnswer,
    presenceXML,
    rcForm,
)

AOR = "sip:alice@example.test"
PSI = "alice@example.test/psi"
GAJIM = "alice@example.test/gajim"
S = TelephonyState


def ownPresence(element: domish.Element) -> tuple[str | None, str | None, int]:
    show = child(element, "show")
    status = child(element, "status")
    priority = child(element, "priority")
    return (
        str(show) if show is not None else None,
        str(status) if status is not None else None,
        int(str(priority)) if priority is not None else 0,
    )


class PublisherTestsMixin:
    settings = PublisherSettings(commandTimeout=10, logoutGrace=300)

    def setUp(self) -> None:
        self.clock = Clock()
        self.accounts = MemoryAccountDirectory(
            [Account(AOR, JID("alice@example.test"), "s3cret")]
        )
        self.sessions: list[FakeSession] = []
        self.publisher = Publisher(self.clock, self.settings, self.accounts, self.makeSession)
        self.publisher.startService()

    def makeSession(self, jid: JID, password: str, server: str | None = None) -> FakeSession:
        session = FakeSession(self.clock, f"{jid.userhost()}/sipxmpp")
        session.password = password  # type: ignore[attr-defined]
        session.server = server  # type: ignore[attr-defined]
        self.sessions.append(session)
        return session

    def change(self, state: TelephonyState, aor: str = AOR, event: Event = Event.ONLINE) -> None:
        self.publisher.telephonyStateChanged(StateChange(aor, event, state, S.ONLINE, self.clock.seconds()))

    def login(self) -> FakeSession:
        """
        Alice comes online on SIP and her session comes up.
        """
        self.change(S.ONLINE)
        [session] = self.sessions
        session.connect()
        [initial] = session.presences()
        assert ownPresence(initial) == (None, None, -1), initial.toXml()
        # Calls right after login wait for the other resources: see
        # test_callAtLoginWaitsForResources.
        self.clock.advance(RESOURCE_SETTLE)
        return session

    def psiOnline(self, session: FakeSession, resource: str = PSI, priority: int = 5,
                  nodes: tuple[str, ...] = (NODE_SET_STATUS,), caps: str = "psi-ver") -> None:  # fmt: skip
        """
        A client of Alice comes online; the gateway asks for its commands.
        """
        session.receive(presenceXML(resource, status="working", priority=priority, caps=caps))
        [disco] = session.iqs()
        assert disco["to"] == resource, disco.toXml()
        session.answer(disco, itemsAnswer(resource, list(nodes)))
        session.answerDiscoInfos()


class PublisherPolicyTests(PublisherTestsMixin, SynchronousTestCase):
    def runCommand(self, session: FakeSession, target: str = PSI, sessionid: str | None = None,
                   form: str | None = None, node: str = NODE_SET_STATUS) -> dict[str, list[str]]:  # fmt: skip
        """
        Answer the execute and the submit like Psi; return the submitted form.
        """
        [execute] = session.iqs()
        self.assertEqual(execute["to"], target)
        session.answer(execute, commandAnswer(node, "executing", sessionid, form or rcForm()))
        [submit] = session.iqs()
        command = child(submit, "command", NS_COMMANDS)
        assert command is not None
        values = formValues(command)
        session.answer(submit, commandAnswer(node, "completed", sessionid))
        return values

    def test_loginOnFirstOnline(self) -> None:
        self.change(S.ONLINE)
        [session] = self.sessions
        self.assertEqual(session.started, 1)
        self.assertEqual(session.jid.full(), "alice@example.test/sipxmpp")
        self.assertEqual(session.password, "s3cret")  # type: ignore[attr-defined]
        self.change(S.ONLINE, event=Event.STILL_ONLINE)
        self.assertEqual(len(self.sessions), 1)

    def test_unprovisionedAndOffline(self) -> None:
        """
        Unprovisioned users and users who are offline get no session.
        """
        self.change(S.ONLINE, aor="sip:nobody@example.test")
        self.change(S.OFFLINE)
        self.assertEqual(self.sessions, [])

    def test_shownOnClient(self) -> None:
        """
        On the phone: the highest-priority client with remote control is set
        to dnd with the text, keeping its priority; after the call its
        values are put back.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE, event=Event.ON_THE_PHONE)
        values = self.runCommand(session)
        self.assertEqual(values["status"], ["dnd"])
        self.assertEqual(values["status-message"], [self.settings.statusText])
        self.assertEqual(values["status-priority"], ["5"])
        self.assertNotIn("sessionid", values)
        self.assertIsInstance(self.publisher.users[AOR].shown, ShownOnClient)
        # The gateway's own resource did not change.
        self.assertEqual(session.presences(), [])
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))

        self.change(S.ONLINE, event=Event.ONLINE)
        restored = self.runCommand(session, form=rcForm("dnd", "5", self.settings.statusText))
        self.assertEqual(restored["status"], ["online"])
        self.assertEqual(restored["status-message"], ["working"])
        self.assertEqual(restored["status-priority"], ["5"])
        self.assertIsNone(self.publisher.users[AOR].shown)

    def test_highestPriorityWithRemoteControl(self) -> None:
        """
        The highest-priority client without remote control is passed over
        for the highest one that has it.
        """
        session = self.login()
        self.psiOnline(session, GAJIM, priority=10, nodes=(), caps="gajim-ver")
        self.psiOnline(session, "alice@example.test/tkabber", priority=1, caps="tk-ver")
        self.psiOnline(session, PSI, priority=5)
        self.change(S.ON_THE_PHONE)
        values = self.runCommand(session, PSI)
        self.assertEqual(values["status-priority"], ["5"])

    def test_legacyGajimNode(self) -> None:
        session = self.login()
        self.psiOnline(session, GAJIM, nodes=(NODE_LEGACY_GAJIM,), caps="old-gajim")
        self.change(S.ON_THE_PHONE)
        form = (
            "<x xmlns='jabber:x:data' type='form'>"
            "<field var='presence-type' type='list-single'><value>online</value></field>"
            "<field var='presence-desc' type='text-multi'/></x>"
        )
        values = self.runCommand(session, GAJIM, "g1", form, NODE_LEGACY_GAJIM)
        self.assertEqual(values, {"presence-type": ["dnd"], "presence-desc": [self.settings.statusText]})

    def test_callDoesNotWaitForDiscovery(self) -> None:
        """
        Psi has not answered for its commands when the call starts: the
        call is on the gateway's resource at once; once Psi answers, the
        call moves to it and the gateway's resource goes back to idle.
        """
        session = self.login()
        session.receive(presenceXML(PSI, status="working", priority=5, caps="psi-ver"))
        [disco] = session.iqs()
        self.change(S.ON_THE_PHONE)
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 6))
        self.clock.advance(5)
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        values = self.runCommand(session)
        self.assertEqual(values["status"], ["dnd"])
        [idle] = session.presences()
        self.assertEqual(ownPresence(idle), (None, None, -1))
        self.assertIsInstance(self.publisher.users[AOR].shown, ShownOnClient)
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        self.change(S.ONLINE)
        restored = self.runCommand(session, form=rcForm("dnd", "5", self.settings.statusText))
        self.assertEqual(restored["status"], ["online"])
        self.assertEqual(session.presences(), [])

    def test_clientNeverAnswersDiscovery(self) -> None:
        session = self.login()
        session.receive(presenceXML(PSI, status="working", priority=5, caps="psi-ver"))
        self.change(S.ON_THE_PHONE)
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 6))
        self.assertTrue(self.publisher.users[AOR].whenIdle().called)
        self.clock.advance(self.settings.commandTimeout)
        self.assertEqual(session.presences(), [])
        self.change(S.ONLINE)
        [idle] = session.presences()
        self.assertEqual(ownPresence(idle), (None, None, -1))

    def test_commandCachedPerCaps(self) -> None:
        """
        A second client with the same caps is not asked again.
        """
        session = self.login()
        self.psiOnline(session, PSI)
        session.receive(presenceXML("alice@example.test/psi2", priority=1, caps="psi-ver"))
        self.assertEqual(session.iqs(), [])

    def test_ownResourceWithoutRemoteControl(self) -> None:
        """
        No client offers remote control: the gateway's resource shows dnd
        above the user's highest priority, then returns to its own.
        """
        session = self.login()
        self.psiOnline(session, GAJIM, priority=10, nodes=(), caps="gajim-ver")
        self.change(S.ON_THE_PHONE)
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 11))
        self.assertEqual(session.iqs(), [])
        self.change(S.ONLINE)
        [idle] = session.presences()
        self.assertEqual(ownPresence(idle), (None, None, -1))

    def test_ownResourceWithoutOtherClients(self) -> None:
        session = self.login()
        self.change(S.ON_THE_PHONE)
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 0))

    def test_ownResourceRaisesPriorityWhenAClientDoes(self) -> None:
        session = self.login()
        self.psiOnline(session, GAJIM, priority=3, nodes=(), caps="gajim-ver")
        self.change(S.ON_THE_PHONE)
        session.presences()
        session.receive(presenceXML(GAJIM, priority=20, caps="gajim-ver"))
        [again] = session.presences()
        self.assertEqual(ownPresence(again), ("dnd", self.settings.statusText, 21))

    def test_fallbackOnError(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        [execute] = session.iqs()
        session.answer(
            execute,
            "<error type='cancel'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            kind="error",
        )
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 6))
        self.assertIsInstance(self.publisher.users[AOR].shown, ShownOnOwnResource)
        self.change(S.ONLINE)
        [idle] = session.presences()
        self.assertEqual(ownPresence(idle), (None, None, -1))
        self.assertEqual(session.iqs(), [])  # nothing to restore on Psi

    def test_fallbackOnTimeout(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        session.iqs()
        self.clock.advance(9)
        self.assertEqual(session.presences(), [])
        self.clock.advance(2)
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 6))

    def test_fallbackOnCancel(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        [execute] = session.iqs()
        session.answer(execute, commandAnswer(NODE_SET_STATUS, "canceled"))
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy)[0], "dnd")

    def test_userChangeWins(self) -> None:
        """
        When the client broadcasts our dnd and later something else, the
        user changed it: it is not restored after the call.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runCommand(session)
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        session.receive(presenceXML(PSI, "away", "back in 5", 5, "psi-ver"))
        self.change(S.ONLINE)
        self.assertEqual(session.iqs(), [])
        self.assertIsNone(self.publisher.users[AOR].shown)

    def test_ourChangeBeforeCompleted(self) -> None:
        """
        The client's broadcast of our change may arrive before its command
        result; a change that was never seen is not taken for the user's.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        [execute] = session.iqs()
        session.answer(execute, commandAnswer(NODE_SET_STATUS, "executing", body=rcForm()))
        [submit] = session.iqs()
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed"))
        self.change(S.ONLINE)
        restored = self.runCommand(session)
        self.assertEqual(restored["status"], ["online"])

    def test_restoredBroadcastIsNotTheUsers(self) -> None:
        """
        The client's broadcast of the restored status, which may come before
        the command's result, is not taken for a change by the user.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runCommand(session)
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        record = self.publisher.users[AOR].shown
        assert isinstance(record, ShownOnClient)
        self.change(S.ONLINE)
        [execute] = session.iqs()
        session.answer(execute, commandAnswer(NODE_SET_STATUS, "executing", body=rcForm("dnd")))
        [submit] = session.iqs()
        session.receive(presenceXML(PSI, None, "working", 5, "psi-ver"))
        self.assertFalse(record.overridden)
        session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed"))
        self.assertIsNone(self.publisher.users[AOR].shown)

    def test_restoreWhenBroadcastNeverSeen(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runCommand(session)
        self.change(S.ONLINE)
        self.assertEqual(self.runCommand(session)["status"], ["online"])

    def test_ringingThenTalkingThenHold(self) -> None:
        """
        Ringing and hold have their own texts; the client's original values
        are kept from the first change and restored at the end.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.RINGING, event=Event.RINGING)
        self.assertEqual(self.runCommand(session)["status-message"], [self.settings.ringingText])
        session.receive(presenceXML(PSI, "dnd", self.settings.ringingText, 5, "psi-ver"))
        self.change(S.ON_THE_PHONE, event=Event.ON_THE_PHONE)
        values = self.runCommand(session, form=rcForm("dnd", "5", self.settings.ringingText))
        self.assertEqual(values["status-message"], [self.settings.statusText])
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        self.change(S.ON_HOLD, event=Event.HELD)
        values = self.runCommand(session, form=rcForm("dnd", "5", self.settings.statusText))
        self.assertEqual(values["status-message"], [self.settings.holdText])
        self.change(S.ONLINE)
        restored = self.runCommand(session)
        self.assertEqual((restored["status"], restored["status-message"]), (["online"], ["working"]))

    def test_ownResourceTexts(self) -> None:
        session = self.login()
        self.change(S.RINGING)
        self.change(S.ON_HOLD)
        texts = [ownPresence(p)[1] for p in session.presences()]
        self.assertEqual(texts, [self.settings.ringingText, self.settings.holdText])

    def test_accountTextsAndMode(self) -> None:
        self.accounts.add(Account(AOR, JID("alice@example.test"), "s3cret", mode="resource",
                                  statusText="Telefoniere"))  # fmt: skip
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.assertEqual(session.iqs(), [])
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", "Telefoniere", 6))

    def test_targetLeavesDuringCall(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runCommand(session)
        session.receive(presenceXML(PSI, kind="unavailable"))
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 0))
        self.change(S.ONLINE)
        self.assertEqual(session.iqs(), [])

    def test_otherUsersNeverControlled(self) -> None:
        """
        A contact's client (another bare JID) is neither asked for its
        commands nor controlled, even if it is the only one.
        """
        session = self.login()
        session.receive(presenceXML("bob@example.test/psi", priority=50, caps="psi-ver"))
        self.assertEqual(session.iqs(), [])
        self.change(S.ON_THE_PHONE)
        self.assertEqual(session.iqs(), [])
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy)[2], 0)

    def test_returnsWhileXMPPDown(self) -> None:
        """
        State changes while the session is not connected send nothing; when
        it connects, the latest state is shown.
        """
        self.change(S.ONLINE)
        [session] = self.sessions
        self.change(S.RINGING)
        self.change(S.ON_THE_PHONE)
        self.assertEqual(session.sent, [])
        session.connect()
        # The initial presence (so that the server sends the user's other
        # resources), then, once they had time to arrive, the call, on our
        # resource since no client offers remote control.
        [initial] = session.presences()
        self.clock.advance(RESOURCE_SETTLE)
        [busy] = session.presences()
        self.assertEqual(ownPresence(initial), (None, None, -1))
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 0))

    def test_callAtLoginWaitsForResources(self) -> None:
        """
        A call that starts as the session logs in waits for the presence of
        the user's other resources, which the server sends right after ours,
        and then uses remote control.
        """
        self.change(S.ONLINE)
        [session] = self.sessions
        self.change(S.ON_THE_PHONE)
        session.connect()
        session.presences()
        self.clock.advance(RESOURCE_SETTLE / 10)
        self.psiOnline(session)
        self.assertEqual(session.iqs(), [])
        self.clock.advance(RESOURCE_SETTLE)
        self.assertEqual(self.runCommand(session)["status"], ["dnd"])
        self.assertEqual(session.presences(), [])

    def test_lostStreamLetGo(self) -> None:
        """
        The user's handler lets its lost stream go (see
        test_xmpp_session's test_lostStreamLetGo), and works on the next.
        """
        session = self.login()
        [handler] = [h for h in session.streamManager if isinstance(h, UserPublisher)]
        self.assertIsNotNone(handler.xmlstream)
        session.disconnect()
        self.assertIsNone(handler.xmlstream)
        session.connect()
        self.assertIs(handler.xmlstream, session.xs)
        self.change(S.ON_THE_PHONE)
        self.clock.advance(RESOURCE_SETTLE)
        busy = session.presences()[-1]
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 0))

    def test_latestStateWinsAfterReconnect(self) -> None:
        session = self.login()
        self.change(S.ON_THE_PHONE)
        session.presences()
        session.disconnect()
        self.change(S.ONLINE)
        session.connect()
        [idle] = session.presences()
        self.assertEqual(ownPresence(idle), (None, None, -1))

    def test_ownResourceShownAgainAfterReconnect(self) -> None:
        session = self.login()
        self.change(S.ON_THE_PHONE)
        session.presences()
        session.disconnect()
        session.connect()
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy)[:2], ("dnd", self.settings.statusText))

    def test_restoreRetriedAfterReconnect(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runCommand(session)
        session.disconnect()
        self.change(S.ONLINE)
        session.connect()
        session.presences()
        self.assertEqual(self.runCommand(session)["status"], ["online"])

    def test_neverRaises(self) -> None:
        """
        A broken session must not make the SIP side fail.
        """
        session = self.login()

        def broken(element: domish.Element) -> bool:
            raise RuntimeError("boom")

        session.send = broken  # type: ignore[method-assign]
        self.change(S.ON_THE_PHONE)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CapsTests(PublisherTestsMixin, SynchronousTestCase):
    """
    Command lists are shared between users only under verified XEP-0115
    caps. Alice's and Bob's Psi advertise the same caps; Alice's has remote
    control off, Bob's has it on.
    """

    BOB_PSI = "bob@example.test/psi"

    def setUp(self) -> None:
        super().setUp()
        self.accounts = MemoryAccountDirectory([
            Account(AOR, JID("alice@example.test"), "s3cret"),
            Account("sip:bob@example.test", JID("bob@example.test"), "s3cret"),
        ])  # fmt: skip
        self.publisher.accounts = self.accounts

    def loginBoth(self) -> tuple[FakeSession, FakeSession]:
        alice = self.login()
        self.change(S.ONLINE, aor="sip:bob@example.test")
        bob = self.sessions[1]
        bob.connect()
        bob.presences()
        self.clock.advance(RESOURCE_SETTLE)
        return alice, bob

    def alicePsiWithoutRC(self, alice: FakeSession, info: str) -> None:
        alice.receive(presenceXML(PSI, status="working", priority=5, caps="psi"))
        [items] = alice.iqs()
        alice.answer(items, itemsAnswer(PSI, []))
        [query] = alice.discoInfos()
        self.assertEqual(child(query, "query", NS_DISCO_INFO)["node"],  # type: ignore[index]
                         f"{CAPS_NODE}#{capsVer('psi')}")  # fmt: skip
        alice.answer(query, info)

    def bobCallOnHisPsi(self, bob: FakeSession) -> None:
        bob.receive(presenceXML(self.BOB_PSI, status="working", priority=5, caps="psi")
                    .replace("alice@example.test/sipxmpp", "bob@example.test/sipxmpp"))  # fmt: skip
        [items] = bob.iqs()  # Bob's Psi is asked itself
        self.assertEqual(items["to"], self.BOB_PSI)
        bob.answer(items, itemsAnswer(self.BOB_PSI, [NODE_SET_STATUS]))
        bob.answerDiscoInfos()
        self.change(S.ON_THE_PHONE, aor="sip:bob@example.test")
        [execute] = bob.iqs()
        self.assertEqual(execute["to"], self.BOB_PSI)
        self.assertIsNotNone(child(execute, "command", NS_COMMANDS))
        self.assertEqual(bob.presences(), [])

    def test_unverifiedAnswerNotShared(self) -> None:
        """
        Alice's Psi answers disco#info with what does not hash to the ver
        it advertises: its empty command list is Alice's Psi's alone, and
        Bob's call goes to his Psi by remote control, not to case a.
        """
        alice, bob = self.loginBoth()
        mismatch = capsInfo("psi").replace(f"<feature var='{NS_COMMANDS}'/>", "")
        self.alicePsiWithoutRC(alice, mismatch)
        self.bobCallOnHisPsi(bob)

    def test_verifiedNegativeAnswerNotTakenForOthers(self) -> None:
        """
        Even when Alice's Psi's caps verify (Psi advertises the same caps
        with remote control on or off), its lack of remote control is not
        taken for Bob's Psi.
        """
        alice, bob = self.loginBoth()
        self.alicePsiWithoutRC(alice, capsInfo("psi"))
        self.bobCallOnHisPsi(bob)

    def test_queryFailsNotShared(self) -> None:
        """
        A disco#info that fails leaves the answer for that client alone:
        a second client with those caps is asked itself.
        """
        alice = self.login()
        alice.receive(presenceXML(PSI, priority=5, caps="psi"))
        [items] = alice.iqs()
        alice.answer(items, itemsAnswer(PSI, [NODE_SET_STATUS]))
        [query] = alice.discoInfos()
        alice.answer(query, "<error type='cancel'><service-unavailable "
                            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                     kind="error")  # fmt: skip
        alice.receive(presenceXML("alice@example.test/psi2", priority=1, caps="psi"))
        [again] = alice.iqs()
        self.assertEqual(again["to"], "alice@example.test/psi2")

    def test_verifiedAnswerShared(self) -> None:
        """
        A verified answer with remote control serves every client with
        those caps, other users' included.
        """
        alice, bob = self.loginBoth()
        self.psiOnline(alice, caps="psi")
        bob.receive(presenceXML(self.BOB_PSI, status="working", priority=5, caps="psi"))
        self.assertEqual(bob.iqs(), [])
        self.assertEqual(bob.discoInfos(), [])

    def test_expires(self) -> None:
        """
        After an hour, a client with those caps is asked again.
        """
        session = self.login()
        self.psiOnline(session, caps="psi")
        self.clock.advance(3600)
        session.receive(presenceXML("alice@example.test/psi2", priority=1, caps="psi"))
        [again] = session.iqs()
        self.assertEqual(again["to"], "alice@example.test/psi2")


class OtherInstanceTests(PublisherTestsMixin, SynchronousTestCase):
    """
    This is gateway instance gw-a (resource C{sipxmpp-gw-a}); gw-b is
    logged in as the same user (it took the user over, or the dispatcher
    moved the user): gw-b's resource is never taken for the user's client.
    """

    def makeSession(self, jid: JID, password: str, server: str | None = None) -> FakeSession:
        session = FakeSession(self.clock, f"{jid.userhost()}/sipxmpp-gw-a")
        self.sessions.append(session)
        return session

    def otherInstanceOnline(self, session: FakeSession) -> None:
        session.receive(presenceXML("alice@example.test/sipxmpp-gw-b", "dnd",
                                    self.settings.statusText, 50))  # fmt: skip
        self.assertEqual(session.iqs(), [])  # not asked for its commands

    def test_clientChosenOverOtherInstance(self) -> None:
        """
        gw-b shows dnd at a higher priority than Psi: Psi is still the
        user's highest-priority client, and the one controlled.
        """
        session = self.login()
        self.otherInstanceOnline(session)
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        [execute] = session.iqs()
        self.assertEqual(execute["to"], PSI)
        self.assertEqual([r.resource for r in self.publisher.users[AOR].tracker.available()],
                         ["psi"])  # fmt: skip

    def test_onlyOtherInstance(self) -> None:
        """
        With no client but gw-b's resource, the call is shown on this
        instance's own resource, at the priority it shows with no client.
        """
        session = self.login()
        self.otherInstanceOnline(session)
        self.change(S.ON_THE_PHONE)
        self.assertEqual(session.iqs(), [])
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy)[:2], ("dnd", self.settings.statusText))
        self.assertIsInstance(self.publisher.users[AOR].shown, ShownOnOwnResource)


class ModeResourceTests(PublisherTestsMixin, SynchronousTestCase):
    settings = PublisherSettings(mode="resource")

    def test_alwaysOwnResource(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.assertEqual(session.iqs(), [])
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy), ("dnd", self.settings.statusText, 6))


class ActivityTests(PublisherTestsMixin, SynchronousTestCase):
    settings = PublisherSettings(mode="resource", publishActivity=True)

    def activities(self, session: FakeSession) -> list[domish.Element]:
        found = []
        for iq in session.iqs():
            pubsub = child(iq, "pubsub", "http://jabber.org/protocol/pubsub")
            assert pubsub is not None, iq.toXml()
            publish = child(pubsub, "publish")
            assert publish is not None
            self.assertEqual(publish["node"], "http://jabber.org/protocol/activity")
            item = child(publish, "item")
            assert item is not None
            activity = child(item, "activity", "http://jabber.org/protocol/activity")
            assert activity is not None
            found.append(activity)
            session.answer(iq)
        return found

    def login(self) -> FakeSession:
        """
        Log in; the new session's first publish is the empty activity (what
        the server holds from before is not known).
        """
        session = super().login()
        [retract] = self.activities(session)
        self.assertEqual(list(retract.elements()), [])
        return session

    def test_talking(self) -> None:
        session = self.login()
        self.change(S.ON_THE_PHONE)
        [activity] = self.activities(session)
        talking = child(activity, "talking")
        assert talking is not None
        self.assertIsNotNone(child(talking, "on_the_phone"))
        self.assertEqual(str(child(activity, "text")), self.settings.statusText)
        self.change(S.ON_THE_PHONE, event=Event.STILL_ON_THE_PHONE)
        self.assertEqual(self.activities(session), [])
        self.change(S.ONLINE)
        [retract] = self.activities(session)
        self.assertEqual(list(retract.elements()), [])

    def test_notForRinging(self) -> None:
        session = self.login()
        self.change(S.RINGING)
        self.assertEqual(self.activities(session), [])

    def test_offByDefault(self) -> None:
        self.assertFalse(PublisherSettings().publishActivity)


class LogoutTests(PublisherTestsMixin, SynchronousTestCase):
    def test_logoutAfterGrace(self) -> None:
        session = self.login()
        self.change(S.OFFLINE, event=Event.OFFLINE)
        self.clock.advance(299)
        self.assertEqual(session.stopped, 0)
        self.clock.advance(1)
        self.assertEqual(session.stopped, 1)
        self.assertNotIn(AOR, self.publisher.users)
        # Online again: a new session.
        self.change(S.ONLINE)
        self.assertEqual(len(self.sessions), 2)

    def test_backBeforeGrace(self) -> None:
        session = self.login()
        self.change(S.OFFLINE)
        self.clock.advance(200)
        self.change(S.ONLINE)
        self.clock.advance(200)
        self.assertEqual(session.stopped, 0)
        self.change(S.OFFLINE)
        self.clock.advance(299)
        self.assertEqual(session.stopped, 0)
        self.clock.advance(1)
        self.assertEqual(session.stopped, 1)

    def test_offlineRestoresFirst(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runCommand_ = PublisherPolicyTests.runCommand
        self.runCommand_(self, session)  # type: ignore[arg-type]
        self.change(S.OFFLINE)
        restored = self.runCommand_(self, session)  # type: ignore[arg-type]
        self.assertEqual(restored["status"], ["online"])

    def test_stopServiceLogsEveryoneOut(self) -> None:
        session = self.login()
        self.successResultOf(self.publisher.stopService())
        self.assertEqual(session.stopped, 1)

    def test_sessionStates(self) -> None:
        self.login()
        self.assertEqual(self.publisher.sessionStates(), {AOR: "connected"})


class MemorySavedStatuses:
    """
    An in-memory L{sipxmpp.store.interfaces.ISavedStatuses}.
    """

    def __init__(self) -> None:
        self.saved: dict[str, tuple[SavedStatus, ...]] = {}
        self.sessions: list[tuple[str, str]] = []
        self.activities: set[str] = set()

    def savedStatuses(self, aor: str) -> tuple[SavedStatus, ...]:
        return self.saved.get(aor, ())

    def aorsWithSavedStatuses(self) -> list[str]:
        return sorted(self.saved)

    def setSavedStatuses(self, aor: str, statuses: Sequence[SavedStatus]) -> None:
        if statuses:
            self.saved[aor] = tuple(statuses)
        else:
            self.saved.pop(aor, None)

    def sessionStateChanged(self, aor: str, state: str, detail: str = "") -> None:
        self.sessions.append((aor, state))

    def setActivityPending(self, aor: str, pending: bool) -> None:
        if pending:
            self.activities.add(aor)
        else:
            self.activities.discard(aor)

    def aorsWithPendingActivity(self) -> list[str]:
        return sorted(self.activities)


class SavedStatusTests(PublisherTestsMixin, SynchronousTestCase):
    """
    What the publisher changed on a client is kept in the store, so that a
    restart can still put it back.
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = MemorySavedStatuses()
        self.publisher = Publisher(self.clock, self.settings, self.accounts, self.makeSession,
                                   savedStatuses=self.store)
        self.publisher.startService()

    def runPsi(self, session: FakeSession, form: str | None = None) -> dict[str, list[str]]:
        return PublisherPolicyTests.runCommand(self, session, form=form)  # type: ignore[arg-type]

    def test_savedDuringCallClearedAfter(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runPsi(session)
        [record] = self.store.savedStatuses(AOR)
        self.assertEqual((record.resource, record.status, record.priority, record.message),
                         (PSI, "online", 5, "working"))
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        self.change(S.ONLINE)
        self.runPsi(session, form=rcForm("dnd", "5", self.settings.statusText))
        self.assertEqual(self.store.saved, {})

    def test_reconcileRestoresAfterRestart(self) -> None:
        """
        After a restart with the user no longer on a call, the gateway logs
        in, finds the client still showing its dnd, puts the saved status
        back, and logs out again after the grace period.
        """
        self.store.saved[AOR] = (SavedStatus(AOR, PSI, "away", 3, "lunch", 0.0),)
        self.publisher.reconcile()
        [session] = self.sessions
        self.assertEqual(session.started, 1)
        session.connect()
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 3, "psi-ver"))
        [disco] = session.iqs()
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        self.clock.advance(RESOURCE_SETTLE)
        restored = self.runPsi(session, form=rcForm("dnd", "3", self.settings.statusText))
        self.assertEqual((restored["status"], restored["status-priority"],
                          restored["status-message"]), (["away"], ["3"], ["lunch"]))
        self.assertEqual(self.store.saved, {})
        self.clock.advance(self.settings.logoutGrace)
        self.assertEqual(session.stopped, 1)

    def test_reconcileDropsWhenUserChangedIt(self) -> None:
        self.store.saved[AOR] = (SavedStatus(AOR, PSI, "away", 3, "lunch", 0.0),)
        self.publisher.reconcile()
        [session] = self.sessions
        session.connect()
        session.receive(presenceXML(PSI, None, "back", 3, "psi-ver"))
        [disco] = session.iqs()
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        self.clock.advance(RESOURCE_SETTLE)
        self.assertEqual(session.iqs(), [])
        self.assertEqual(self.store.saved, {})

    def test_reconcileKeepsDndWhileStillOnCall(self) -> None:
        """
        The restored call is still going on: the client keeps our dnd, and
        gets its saved status when the call ends.
        """
        self.store.saved[AOR] = (SavedStatus(AOR, PSI, "away", 3, "lunch", 0.0),)
        self.change(S.ON_THE_PHONE)  # the store restored the call
        self.publisher.reconcile()
        [session] = self.sessions
        session.connect()
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 3, "psi-ver"))
        [disco] = session.iqs()
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        self.clock.advance(RESOURCE_SETTLE)
        record = self.publisher.users[AOR].shown
        assert isinstance(record, ShownOnClient)
        self.assertEqual(record.saved, RemoteStatus("away", 3, "lunch"))
        self.assertEqual(session.iqs(), [])
        self.change(S.ONLINE)
        restored = self.runPsi(session, form=rcForm("dnd", "3", self.settings.statusText))
        self.assertEqual(restored["status"], ["away"])

    def test_adoptTakenOverRestores(self) -> None:
        """
        A user taken over from another gateway (which saved the client's
        status): the statuses are kept, the user logged in, and the client,
        still at the other gateway's dnd with no call left, gets its status
        back; then the user is logged out after the grace period.
        """
        self.assertFalse(self.publisher.handles(AOR))
        record = SavedStatus(AOR, PSI, "away", 3, "lunch", 0.0)
        self.publisher.adoptSavedStatuses(AOR, [record])
        self.assertTrue(self.publisher.handles(AOR))
        self.assertEqual(self.store.savedStatuses(AOR), (record,))
        [session] = self.sessions
        self.assertEqual(session.started, 1)
        session.connect()
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 3, "psi-ver"))
        [disco] = session.iqs()
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        self.clock.advance(RESOURCE_SETTLE)
        restored = self.runPsi(session, form=rcForm("dnd", "3", self.settings.statusText))
        self.assertEqual((restored["status"], restored["status-message"]), (["away"], ["lunch"]))
        self.assertEqual(self.store.saved, {})
        self.clock.advance(self.settings.logoutGrace)
        self.assertEqual(session.stopped, 1)
        self.assertFalse(self.publisher.handles(AOR))

    def test_adoptWhileLookingUp(self) -> None:
        """
        The publication that triggered the takeover brought the user online
        here: the lookup under way logs in once, and the call's end puts
        the client's status back.
        """
        pending: Deferred[Account | None] = Deferred()
        self.accounts.lookup = lambda aor: pending  # type: ignore[method-assign]
        self.change(S.ON_THE_PHONE)
        self.assertTrue(self.publisher.handles(AOR))
        self.publisher.adoptSavedStatuses(AOR, [SavedStatus(AOR, PSI, "away", 3, "lunch", 0.0)])
        pending.callback(Account(AOR, JID("alice@example.test"), "s3cret"))
        [session] = self.sessions
        session.connect()
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 3, "psi-ver"))
        [disco] = session.iqs()
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        self.clock.advance(RESOURCE_SETTLE)
        self.assertEqual(session.iqs(), [])  # still on the phone: dnd stays
        self.change(S.ONLINE)
        restored = self.runPsi(session, form=rcForm("dnd", "3", self.settings.statusText))
        self.assertEqual(restored["status"], ["away"])

    def test_adoptNothing(self) -> None:
        self.publisher.adoptSavedStatuses(AOR, [])
        self.assertEqual(self.sessions, [])
        self.assertFalse(self.publisher.handles(AOR))

    def callUntilRestoreFails(self) -> FakeSession:
        """
        Psi is set to dnd for a call; when the call ends, the restore
        command bounces: Psi is not online (e.g. not back yet after the XMPP
        server restarted).
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.runPsi(session)
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        self.change(S.ONLINE)
        [execute] = session.iqs()
        session.answer(
            execute,
            "<error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            kind="error",
        )
        self.assertIsNone(self.publisher.users[AOR].shown)
        return session

    def test_clientAwayAtRestoreKeepsSavedStatus(self) -> None:
        """
        The saved status survives while the client is away, and is put back
        when it returns still at our dnd.
        """
        session = self.callUntilRestoreFails()
        [record] = self.store.savedStatuses(AOR)
        self.assertEqual((record.status, record.message), ("online", "working"))
        session.receive(presenceXML(PSI, kind="unavailable"))
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        restored = self.runPsi(session, form=rcForm("dnd", "5", self.settings.statusText))
        self.assertEqual((restored["status"], restored["status-message"]),
                         (["online"], ["working"]))
        self.assertEqual(self.store.saved, {})

    def test_clientBackWithAnotherStatusIsLeftAlone(self) -> None:
        session = self.callUntilRestoreFails()
        session.receive(presenceXML(PSI, kind="unavailable"))
        session.receive(presenceXML(PSI, "away", "gone fishing", 5, "psi-ver"))
        self.assertEqual(session.iqs(), [])
        self.assertEqual(self.store.saved, {})


class AccountChangeTests(PublisherTestsMixin, SynchronousTestCase):
    """
    L{Publisher.accountChanged}: admin changes reach the running sessions.
    """

    def alice(self, password: str = "s3cret", **kw: object) -> Account:
        return Account(AOR, JID("alice@example.test"), password, **kw)  # type: ignore[arg-type]

    def test_disabledLogsOutEnabledLogsIn(self) -> None:
        """
        A disabled (or removed) account's session logs out at once; enabled
        again while the user is still online on SIP, it logs in at once.
        """
        session = self.login()
        self.accounts.remove(AOR)
        self.publisher.accountChanged(AOR, None)
        self.assertEqual(session.stopped, 1)
        self.assertNotIn(AOR, self.publisher.users)
        # SIP goes on; nothing logs in while disabled.
        self.change(S.ONLINE, event=Event.STILL_ONLINE)
        self.assertEqual(len(self.sessions), 1)
        self.accounts.add(self.alice())
        self.publisher.accountChanged(AOR, self.alice())
        self.assertEqual(len(self.sessions), 2)
        self.assertEqual(self.sessions[1].started, 1)
        self.assertIn(AOR, self.publisher.users)

    def test_disabledDuringCallRestoresFirst(self) -> None:
        """
        A client set to dnd for a call gets its status back before the
        disabled account's session logs out.
        """
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        PublisherPolicyTests.runCommand(self, session)  # type: ignore[arg-type]
        self.publisher.accountChanged(AOR, None)
        self.assertEqual(session.stopped, 0)
        restored = PublisherPolicyTests.runCommand(self, session)  # type: ignore[arg-type]
        self.assertEqual(restored["status"], ["online"])
        self.assertEqual(session.stopped, 1)

    def test_enabledWhileOfflineDoesNothing(self) -> None:
        self.publisher.accountChanged(AOR, self.alice())
        self.publisher.accountChanged("sip:bob@example.test", None)
        self.assertEqual(self.sessions, [])

    def test_addedWhileOnlineLogsInAtOnce(self) -> None:
        """
        An AoR found unprovisioned is not looked up again for a while; an
        account added for it logs in at once all the same.
        """
        bob = "sip:bob@example.test"
        self.change(S.ONLINE, aor=bob)
        self.assertEqual(self.sessions, [])
        account = Account(bob, JID("bob@example.test"), "pw")
        self.accounts.add(account)
        self.change(S.ONLINE, aor=bob, event=Event.STILL_ONLINE)
        self.assertEqual(self.sessions, [])
        self.publisher.accountChanged(bob, account)
        [session] = self.sessions
        self.assertEqual(session.jid.userhost(), "bob@example.test")

    def test_newPasswordRestartsAFailedSession(self) -> None:
        """
        A session whose login failed logs in again at once with the new
        password.
        """
        self.change(S.ONLINE)
        [session] = self.sessions
        session.state = "failed: authentication: not-authorized"
        self.publisher.accountChanged(AOR, self.alice("fixed"))
        self.assertEqual(session.stopped, 1)
        [_, again] = self.sessions
        self.assertEqual((again.password, again.started), ("fixed", 1))  # type: ignore[attr-defined]
        self.assertEqual(self.publisher.users[AOR].session, again)

    def test_newPasswordGivenToTheSession(self) -> None:
        """
        A session that can take a new password (L{XMPPSession}) keeps
        running and is given it.
        """
        session = self.login()
        given: list[str] = []
        session.updatePassword = given.append  # type: ignore[attr-defined]
        self.publisher.accountChanged(AOR, self.alice("new"))
        self.assertEqual(given, ["new"])
        self.assertEqual((len(self.sessions), session.stopped), (1, 0))
        self.assertEqual(self.publisher.users[AOR].account.password, "new")

    def test_connectedSessionKeepsRunning(self) -> None:
        """
        Without L{updatePassword}, a connected session keeps its stream; the
        next login (a new session) uses the new password.
        """
        session = self.login()
        self.publisher.accountChanged(AOR, self.alice("new"))
        self.assertEqual((len(self.sessions), session.stopped), (1, 0))

    def test_newServerLogsInAgain(self) -> None:
        """
        The account's own XMPP server (issue 19) goes to the session maker;
        a new one logs the session out and in again there at once, as a
        new JID does, and back to the default the same way.
        """
        session = self.login()
        self.assertIsNone(session.server)  # type: ignore[attr-defined]
        self.publisher.accountChanged(AOR, self.alice(server="tls:xmpp.example.test:5223"))
        self.assertEqual(session.stopped, 1)
        [_, again] = self.sessions
        self.assertEqual((again.server, again.started),  # type: ignore[attr-defined]
                         ("tls:xmpp.example.test:5223", 1))
        again.connect()
        self.publisher.accountChanged(AOR, self.alice())
        [_, _, third] = self.sessions
        self.assertEqual((third.server, third.started), (None, 1))  # type: ignore[attr-defined]

    def test_modeAndTextsAtNextChange(self) -> None:
        session = self.login()
        self.publisher.accountChanged(AOR, self.alice(mode="resource", statusText="Telefoniere"))
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        self.assertEqual(session.iqs(), [])
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy)[:2], ("dnd", "Telefoniere"))

    def test_updateSettings(self) -> None:
        """
        Reloaded texts and mode apply to the next presence change; the
        priority and the gateways' resource keep their running values.
        """
        session = self.login()
        self.publisher.updateSettings(PublisherSettings(
            mode="resource", statusText="Am Telefon", priority=-5, commandTimeout=3,
            gatewayResource="other"))
        self.assertEqual(self.publisher.settings.priority, -1)
        self.assertEqual(self.publisher.settings.gatewayResource, "sipxmpp")
        self.assertEqual(self.publisher.users[AOR].remote.timeout, 3)
        self.change(S.ON_THE_PHONE)
        [busy] = session.presences()
        self.assertEqual(ownPresence(busy)[:2], ("dnd", "Am Telefon"))


class StaleActivityTests(PublisherTestsMixin, SynchronousTestCase):
    """
    A call left in a user's XEP-0108 activity (saved before a restart) is
    retracted even if the user's phone never comes online again: the user
    is logged in just for that, and out once the server acknowledged it.
    """

    settings = PublisherSettings(mode="resource", publishActivity=True)

    def setUp(self) -> None:
        super().setUp()
        self.store = MemorySavedStatuses()
        self.store.activities.add(AOR)
        self.publisher = Publisher(self.clock, self.settings, self.accounts, self.makeSession,
                                   savedStatuses=self.store)
        self.publisher.startService()

    def retract(self, session: FakeSession) -> None:
        [iq] = session.iqs()
        activity = child(child(child(child(iq, "pubsub", "http://jabber.org/protocol/pubsub"),
                                     "publish"), "item"),  # type: ignore[arg-type]
                         "activity", "http://jabber.org/protocol/activity")  # type: ignore[arg-type]
        assert activity is not None, iq.toXml()
        self.assertEqual(list(activity.elements()), [])
        session.answer(iq)

    def test_offlineUserLoggedInToRetract(self) -> None:
        self.publisher.reconcile()
        [session] = self.sessions
        self.assertEqual(session.started, 1)
        session.connect()
        self.retract(session)
        self.assertEqual(self.store.activities, set())
        self.assertEqual(session.stopped, 1)
        self.assertEqual(self.publisher.users, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notLoggedOutByTheGrace(self) -> None:
        """
        A login just to retract is not cut short by C{logoutGrace} (the
        user is offline on SIP all along): it ends with the retraction,
        however long XMPP takes to come up within the timeout.
        """
        self.publisher.settings = PublisherSettings(mode="resource", publishActivity=True,
                                                    logoutGrace=1)  # fmt: skip
        self.publisher.reconcile()
        [session] = self.sessions
        self.clock.advance(30)
        self.assertEqual(session.stopped, 0)
        session.connect()
        self.retract(session)
        self.assertEqual(session.stopped, 1)
        self.assertEqual(self.store.activities, set())

    def test_loggedOutOtherwiseTriesAgain(self) -> None:
        """
        Logged out before it retracted (the account was disabled and
        enabled again): the next attempt starts at once.
        """
        self.publisher.reconcile()
        [session] = self.sessions
        self.publisher.logout(AOR)
        self.assertEqual(session.stopped, 1)
        [again] = self.sessions[1:]
        again.connect()
        self.retract(again)
        self.assertEqual(self.store.activities, set())
        self.assertEqual(again.stopped, 1)

    def test_notProvisionedDropped(self) -> None:
        """
        An AoR no longer provisioned cannot be logged in: its entry is
        dropped, and the next user's retraction goes ahead.
        """
        self.store.activities = {"sip:zoe@example.test", AOR}
        self.publisher.retractions.concurrency = 1
        self.publisher.reconcile()
        [session] = self.sessions
        session.connect()
        self.retract(session)  # alice's; then zoe's turn
        self.assertEqual(self.store.activities, set())
        self.assertEqual(len(self.sessions), 1)
        self.assertFalse(self.publisher.retractions.retracting("sip:zoe@example.test"))

    def test_withPublishingOff(self) -> None:
        """
        C{publish_activity} turned off since: the call is retracted all the
        same, and a call later is not published.
        """
        self.publisher.settings = PublisherSettings(mode="resource")
        self.publisher.reconcile()
        [session] = self.sessions
        session.connect()
        self.change(S.ON_THE_PHONE)  # the phone is back meanwhile
        self.retract(session)
        self.assertEqual(self.store.activities, set())
        self.assertEqual(session.stopped, 0)  # logged in for the call now
        self.assertEqual([iq for iq in session.iqs()], [])

    def test_timeoutLogsOutAndRetries(self) -> None:
        """
        No answer within the timeout: logged out, and in again, at most
        RETRACT_ATTEMPTS times; the AoR stays saved for the next start.
        """
        self.publisher.reconcile()
        for attempt in range(RETRACT_ATTEMPTS):
            self.assertEqual(len(self.sessions), attempt + 1)
            session = self.sessions[-1]
            session.connect()
            self.clock.advance(self.publisher.retractions.timeout)
            self.assertEqual(session.stopped, 1)
        self.assertEqual(len(self.sessions), RETRACT_ATTEMPTS)
        self.assertEqual(self.store.activities, {AOR})
        self.assertEqual(self.publisher.users, {})

    def test_loggedInAnywayRetractsOnItsSession(self) -> None:
        """
        The user's phone is online: the normal session retracts it, and
        the user stays logged in.
        """
        session = self.login()
        self.publisher.reconcile()
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(self.store.activities, set())
        self.assertEqual(session.stopped, 0)

    def login(self) -> FakeSession:
        self.change(S.ONLINE)
        [session] = self.sessions
        session.connect()
        self.retract(session)
        self.clock.advance(RESOURCE_SETTLE)
        return session

    def test_loggedOutWhileXMPPDown(self) -> None:
        """
        The call ended while XMPP was down and the user went offline and was
        logged out before it came back: logged in again to retract.
        """
        session = self.login()
        self.change(S.ON_THE_PHONE)
        [talking] = session.iqs()
        session.answer(talking)
        self.assertEqual(self.store.activities, {AOR})
        session.disconnect()
        self.change(S.OFFLINE)
        self.clock.advance(self.settings.logoutGrace)
        self.assertEqual(session.stopped, 1)
        [again] = self.sessions[1:]
        again.connect()
        self.retract(again)
        self.assertEqual(self.store.activities, set())
        self.assertEqual(again.stopped, 1)
