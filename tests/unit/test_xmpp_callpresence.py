"""
Tests for L{sipxmpp.xmpp.callpresence}: the state machine alone, fed events
and checked on the actions it returns.
"""

from __future__ import annotations

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.telephony.events import TelephonyState
from sipxmpp.xmpp.callevents import (
    Action,
    CommandsFailed,
    CommandsKnown,
    Event,
    ForgetCommands,
    LearnCommands,
    Log,
    QueryCommands,
    ResourceChanged,
    RestoreAnswered,
    RestoreClientStatus,
    RestoreFailed,
    RestoreInterrupted,
    SavedStatusAdopted,
    SaveStatus,
    SendOwnPresence,
    SessionLost,
    SessionReady,
    SetClientStatus,
    SetStatusAnswered,
    SetStatusFailed,
    SetStatusTimedOut,
    StartTimer,
    TelephonyChanged,
    TimerFired,
)
from sipxmpp.xmpp.callpresence import (
    RESOURCE_SETTLE,
    CallPresence,
    CallTexts,
    Phase,
    ShownOnClient,
    ShownOnOwnResource,
)
from sipxmpp.xmpp.remote import NODE_LEGACY_GAJIM, NODE_SET_STATUS, RemoteStatus
from sipxmpp.xmpp.resources import Caps, ResourceChange, ResourcePresence

S = TelephonyState
OWN = JID("alice@example.test/sipxmpp")
PSI = JID("alice@example.test/psi")
TKABBER = JID("alice@example.test/tkabber")
GAJIM = JID("alice@example.test/gajim")
TEXTS = CallTexts(ringing="My phone is ringing", onThePhone="I am currently on the phone",
                  onHold="I have a call on hold")  # fmt: skip
RINGING, PHONE, HOLD = TEXTS.ringing, TEXTS.onThePhone, TEXTS.onHold
WORKING = RemoteStatus("online", 5, "working")
LUNCH = RemoteStatus("away", 3, "lunch")
RC = frozenset({NODE_SET_STATUS})


class CallPresenceTestsMixin:
    """
    A machine for alice, and the user's clients as the tests make them.
    """

    remoteControl = True

    def setUp(self) -> None:
        self.now = 0.0
        self.machine = CallPresence(OWN, TEXTS, self.remoteControl, idlePriority=-1)
        self.clients: dict[str, ResourcePresence] = {}
        self.logged: list[Log] = []

    def feed(self, event: Event) -> list[Action]:
        """
        Feed C{event} now; return the actions but the log lines (kept in
        C{logged}).
        """
        if isinstance(event, SessionLost):
            self.clients.clear()  # the server sends them again on the next stream
        actions = self.machine.handle(event, self.now)
        self.logged.extend(a for a in actions if isinstance(a, Log))
        return [a for a in actions if not isinstance(a, Log)]

    def client(self, jid: JID, show: str | None = None, status: str | None = "working",
               priority: int = 5) -> ResourcePresence:  # fmt: skip
        """
        Make the presence a client of alice shows.
        """
        return ResourcePresence(jid.resource or "", priority, show, status,
                                Caps("http://psi-plus.com", f"{jid.resource}-ver", "sha-1"))  # fmt: skip

    def shows(self, presence: ResourcePresence) -> list[Action]:
        """
        A client of alice comes online or changes its presence.
        """
        before = self.clients.get(presence.resource)
        self.clients[presence.resource] = presence
        return self.feed(ResourceChanged(ResourceChange(presence.resource, before, presence)))

    def leaves(self, jid: JID) -> list[Action]:
        before = self.clients.pop(jid.resource or "")
        return self.feed(ResourceChanged(ResourceChange(jid.resource or "", before, None)))

    def phase(self) -> Phase:
        return self.machine.phase

    def call(self, state: TelephonyState) -> list[Action]:
        return self.feed(TelephonyChanged(state))

    def login(self) -> None:
        """
        The session comes up and the other resources had time to arrive.
        """
        assert self.feed(SessionReady()) == [SendOwnPresence(None, -1)]
        self.now += RESOURCE_SETTLE

    def onPsi(self) -> ResourcePresence:
        """
        Psi (remote control, priority 5, "working") is set to dnd for a call
        and broadcasts it; return that presence.
        """
        self.login()
        psi = self.client(PSI)
        assert self.shows(psi) == [LearnCommands(PSI, psi)]
        # The answer to LearnCommands is in before the call.
        assert self.feed(CommandsKnown(PSI, RC)) == []
        assert self.call(S.ON_THE_PHONE) == [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)]
        assert self.phase() is Phase.AWAITING_CLIENT
        assert self.feed(SetStatusAnswered(PSI, WORKING)) == [SaveStatus(PSI, WORKING)]
        assert self.phase() is Phase.SHOWN_ON_CLIENT
        dnd = self.client(PSI, "dnd", PHONE)
        assert self.shows(dnd) == []
        return dnd


class ShownOnClientTests(CallPresenceTestsMixin, SynchronousTestCase):
    def test_shownAndRestored(self) -> None:
        """
        The call is shown on Psi by remote control; after it, Psi's saved
        status is put back and nothing is left saved.
        """
        self.onPsi()
        record = self.machine.shown
        assert isinstance(record, ShownOnClient)
        self.assertTrue(record.seenOurs)
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])
        self.assertIs(self.machine.phase, Phase.RESTORING)
        # Psi broadcasts the restored status before its answer: ours.
        self.assertEqual(self.shows(self.client(PSI)), [])
        self.assertFalse(record.overridden)
        self.assertEqual(self.feed(RestoreAnswered(PSI)), [SaveStatus(None, None)])
        self.assertIs(self.machine.phase, Phase.IDLE)
        self.assertIsNone(self.machine.shown)

    def test_highestPriorityWithRemoteControl(self) -> None:
        """
        Clients are asked highest priority first; one without remote control
        or without a command list is passed over.
        """
        self.login()
        gajim = self.client(GAJIM, priority=10)
        psi = self.client(PSI, priority=5)
        tkabber = self.client(TKABBER, priority=1)
        for presence in (tkabber, psi, gajim):
            self.shows(presence)
        self.feed(CommandsKnown(GAJIM, frozenset()))
        self.feed(CommandsFailed(PSI, "timed out"))
        self.feed(CommandsKnown(TKABBER, frozenset({NODE_LEGACY_GAJIM})))
        self.assertEqual(self.call(S.ON_THE_PHONE),
                         [SetClientStatus(TKABBER, NODE_LEGACY_GAJIM, PHONE,
                                          RemoteStatus("online", 1, "working"))])  # fmt: skip

    def test_userChangeWins(self) -> None:
        """
        Psi broadcast our dnd, then something else: the user changed it, so
        it is not restored, and nothing stays saved.
        """
        self.onPsi()
        self.assertEqual(self.shows(self.client(PSI, "away", "back in 5")), [])
        record = self.machine.shown
        assert isinstance(record, ShownOnClient)
        self.assertTrue(record.overridden)
        self.assertEqual(self.call(S.ONLINE), [SaveStatus(None, None)])
        self.assertIsNone(self.machine.shown)

    def test_otherStatusBeforeOursIsNotTheUsers(self) -> None:
        """
        A presence from before our change shows up (not yet our dnd): that
        is not the user changing it.
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.feed(CommandsKnown(PSI, RC))
        self.call(S.ON_THE_PHONE)
        self.shows(self.client(PSI, "away", "old news"))
        self.feed(SetStatusAnswered(PSI, WORKING))
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])

    def test_ringingThenOnThePhoneThenOnHold(self) -> None:
        """
        Each state has its text; the status saved from the first change is
        the one restored.
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.feed(CommandsKnown(PSI, RC))
        self.assertEqual(self.call(S.RINGING),
                         [SetClientStatus(PSI, NODE_SET_STATUS, RINGING, WORKING)])  # fmt: skip
        self.assertEqual(self.feed(SetStatusAnswered(PSI, WORKING)), [SaveStatus(PSI, WORKING)])
        self.shows(self.client(PSI, "dnd", RINGING))
        self.assertEqual(self.call(S.ON_THE_PHONE), [
            SetClientStatus(PSI, NODE_SET_STATUS, PHONE, RemoteStatus("dnd", 5, RINGING))
        ])
        self.assertEqual(self.feed(SetStatusAnswered(PSI, RemoteStatus("dnd", 5, RINGING))), [])
        self.shows(self.client(PSI, "dnd", PHONE))
        self.assertEqual(self.call(S.ON_HOLD), [
            SetClientStatus(PSI, NODE_SET_STATUS, HOLD, RemoteStatus("dnd", 5, PHONE))
        ])
        self.assertEqual(self.feed(SetStatusAnswered(PSI, RemoteStatus("dnd", 5, PHONE))), [])
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])

    def test_textChangeRefused(self) -> None:
        """
        A refused text change leaves the client shown with its saved status
        kept: it is still restored after the call.
        """
        self.onPsi()
        self.call(S.ON_HOLD)
        self.assertEqual(self.feed(SetStatusFailed(PSI, "forbidden")), [])
        self.assertIs(self.machine.phase, Phase.SHOWN_ON_CLIENT)
        self.assertEqual([line.level for line in self.logged[-1:]], [LogLevel.warn])
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])

    def test_newCallWhileRestoring(self) -> None:
        """
        A call that starts while the restore is out waits for its answer,
        then is shown again on the client it just restored.
        """
        self.onPsi()
        self.call(S.ONLINE)
        self.assertEqual(self.call(S.RINGING), [])
        psi = self.client(PSI)
        self.assertEqual(self.shows(psi), [])
        self.assertEqual(self.feed(RestoreAnswered(PSI)), [
            SaveStatus(None, None), SetClientStatus(PSI, NODE_SET_STATUS, RINGING, WORKING)
        ])
        self.assertEqual(self.feed(SetStatusAnswered(PSI, WORKING)), [SaveStatus(PSI, WORKING)])

    def test_callOverWhileChoosing(self) -> None:
        """
        (Adapted: the call no longer waits for Psi's answer; it is shown on
        our resource meanwhile, and the late answer moves nothing.)
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 6)])
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1)])
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)), [])
        self.assertIs(self.machine.phase, Phase.IDLE)


class FallbackTests(CallPresenceTestsMixin, SynchronousTestCase):
    """
    The call is shown on our own resource when no client can show it.
    """

    def test_noClient(self) -> None:
        self.login()
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 0)])
        self.assertIs(self.machine.phase, Phase.SHOWN_ON_OWN_RESOURCE)
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1)])
        self.assertIs(self.machine.phase, Phase.IDLE)

    def test_noClientWithRemoteControl(self) -> None:
        """
        Above the highest priority of the user's clients.
        """
        self.login()
        gajim = self.client(GAJIM, priority=10)
        self.shows(gajim)
        self.feed(CommandsKnown(GAJIM, frozenset()))
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 11)])

    def refusedBy(self, answer: Event) -> None:
        self.login()
        self.shows(self.client(PSI))
        self.feed(CommandsKnown(PSI, RC))
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.feed(answer), [SendOwnPresence(PHONE, 6)])
        self.assertIsInstance(self.machine.shown, ShownOnOwnResource)
        self.assertEqual([line.level for line in self.logged[-2:-1]], [LogLevel.warn])
        # Nothing changed on Psi: nothing to restore, nothing saved.
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1)])

    def test_refused(self) -> None:
        self.refusedBy(SetStatusFailed(PSI, "psi answered with error forbidden"))

    def test_timedOut(self) -> None:
        self.refusedBy(SetStatusTimedOut(PSI, "no answer within 10 s"))

    def test_ownTexts(self) -> None:
        self.login()
        self.assertEqual(self.call(S.RINGING), [SendOwnPresence(RINGING, 0)])
        self.assertEqual(self.call(S.ON_HOLD), [SendOwnPresence(HOLD, 0)])
        self.assertEqual(self.call(S.ON_HOLD), [])

    def test_raisesPriorityWhenAClientDoes(self) -> None:
        self.login()
        gajim = self.client(GAJIM, priority=3)
        self.shows(gajim)
        self.feed(CommandsKnown(GAJIM, frozenset()))
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.shows(self.client(GAJIM, priority=20)), [SendOwnPresence(PHONE, 21)])
        self.assertEqual(self.shows(self.client(GAJIM, priority=2)), [])

    def test_shownAgainAfterReconnect(self) -> None:
        self.login()
        self.shows(self.client(GAJIM, priority=3))
        self.feed(CommandsKnown(GAJIM, frozenset()))
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.feed(SessionLost()), [])
        self.call(S.ON_HOLD)
        self.assertEqual(self.feed(SessionReady()), [SendOwnPresence(HOLD, 4)])

    def test_overWhileDisconnected(self) -> None:
        self.login()
        self.call(S.ON_THE_PHONE)
        self.feed(SessionLost())
        self.assertEqual(self.call(S.ONLINE), [])
        self.assertEqual(self.feed(SessionReady()), [SendOwnPresence(None, -1)])
        self.assertIsNone(self.machine.shown)


class ModeResourceTests(CallPresenceTestsMixin, SynchronousTestCase):
    remoteControl = False

    def test_alwaysOwnResource(self) -> None:
        """
        No client is asked, not even right after login.
        """
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.feed(SessionReady()),
                         [SendOwnPresence(None, -1), SendOwnPresence(PHONE, 0)])  # fmt: skip
        psi = self.client(PSI)
        self.assertEqual(self.shows(psi), [LearnCommands(PSI, psi), SendOwnPresence(PHONE, 6)])
        self.assertEqual(self.call(S.RINGING), [SendOwnPresence(RINGING, 6)])


class SettleTests(CallPresenceTestsMixin, SynchronousTestCase):
    def test_callAtLoginWaitsForResources(self) -> None:
        """
        A call as the session comes up waits for the other resources, then
        uses the client with remote control that came meanwhile.
        """
        self.call(S.ON_THE_PHONE)
        self.now = 100.0
        self.assertEqual(self.feed(SessionReady()),
                         [SendOwnPresence(None, -1), StartTimer(RESOURCE_SETTLE)])  # fmt: skip
        self.assertIs(self.machine.phase, Phase.SETTLING)
        self.now += RESOURCE_SETTLE / 10
        psi = self.client(PSI)
        self.assertEqual(self.shows(psi), [LearnCommands(PSI, psi)])
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)), [])
        self.now += RESOURCE_SETTLE
        self.assertEqual(self.feed(TimerFired()),
                         [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)])  # fmt: skip

    def test_timerAHairEarly(self) -> None:
        """
        The timer firing is the end of the settling, whatever the clock.
        """
        self.call(S.ON_THE_PHONE)
        self.feed(SessionReady())
        self.now += RESOURCE_SETTLE * 0.999
        self.assertEqual(self.feed(TimerFired()), [SendOwnPresence(PHONE, 0)])

    def test_staleTimerIgnored(self) -> None:
        self.login()
        self.assertEqual(self.feed(TimerFired()), [])
        self.assertIs(self.machine.phase, Phase.IDLE)


class ClientAwayTests(CallPresenceTestsMixin, SynchronousTestCase):
    def test_leavesDuringCallReturnsAtOurDnd(self) -> None:
        """
        Psi leaves during the call: the call moves to our resource and Psi's
        saved status is kept; Psi comes back at our dnd and gets its status
        back once the call is over.
        """
        dnd = self.onPsi()
        record = self.machine.shown
        self.assertEqual(self.leaves(PSI), [ForgetCommands(PSI, dnd), SendOwnPresence(PHONE, 0)])
        self.assertIs(self.machine.away, record)
        self.assertEqual(self.shows(dnd), [LearnCommands(PSI, dnd), SendOwnPresence(PHONE, 6)])
        self.assertIsNone(self.machine.away)
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1), QueryCommands(PSI, dnd)])
        self.assertIs(self.machine.phase, Phase.ADOPTING)
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)),
                         [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])  # fmt: skip
        self.assertEqual(self.feed(RestoreAnswered(PSI)), [SaveStatus(None, None)])

    def test_leavesDuringCallReturnsChanged(self) -> None:
        self.onPsi()
        self.leaves(PSI)
        back = self.client(PSI, "away", "gone fishing")
        self.assertEqual(self.shows(back), [LearnCommands(PSI, back), SaveStatus(None, None),
                                            SendOwnPresence(PHONE, 6)])  # fmt: skip
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1)])

    def test_leavesAfterUserChange(self) -> None:
        """
        Nothing of ours is left on a client the user changed.
        """
        self.onPsi()
        away = self.client(PSI, "away", "brb")
        self.shows(away)
        self.assertEqual(self.leaves(PSI), [ForgetCommands(PSI, away), SaveStatus(None, None),
                                            SendOwnPresence(PHONE, 0)])  # fmt: skip
        self.assertIsNone(self.machine.away)

    def test_chosenAgainKeepsItsSavedStatus(self) -> None:
        """
        The restore bounced but Psi never said it left, so it is chosen for
        the next call: what it showed before our dnd is what comes back.
        """
        self.onPsi()
        self.call(S.ONLINE)
        self.feed(RestoreFailed(PSI, "bounced", "service-unavailable"))
        self.assertIsNotNone(self.machine.away)
        self.assertEqual(self.call(S.RINGING), [
            SetClientStatus(PSI, NODE_SET_STATUS, RINGING, RemoteStatus("dnd", 5, PHONE))
        ])
        self.assertIsNone(self.machine.away)
        self.assertEqual(self.feed(SetStatusAnswered(PSI, RemoteStatus("dnd", 5, PHONE))), [])
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])

    def test_restoreUnreachableWaitsForReturn(self) -> None:
        """
        The restore bounces with recipient-unavailable (Psi is not back yet
        after the XMPP server restarted): its saved status is kept and put
        back when it returns still at our dnd.
        """
        dnd = self.onPsi()
        self.call(S.ONLINE)
        record = self.machine.shown
        self.assertEqual(
            self.feed(RestoreFailed(PSI, "answered with error", "recipient-unavailable")), []
        )
        self.assertIs(self.machine.away, record)
        self.assertIsNone(self.machine.shown)
        self.assertIs(self.machine.phase, Phase.IDLE)
        self.assertEqual(self.leaves(PSI), [ForgetCommands(PSI, dnd)])
        self.assertEqual(self.shows(dnd), [LearnCommands(PSI, dnd), QueryCommands(PSI, dnd)])
        self.assertEqual(self.feed(CommandsFailed(PSI, "no answer")),
                         [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])  # fmt: skip
        self.assertEqual(self.feed(RestoreAnswered(PSI)), [SaveStatus(None, None)])

    def test_restoreRefusedGivesUp(self) -> None:
        self.onPsi()
        self.call(S.ONLINE)
        self.assertEqual(self.feed(RestoreFailed(PSI, "forbidden", "forbidden")),
                         [SaveStatus(None, None)])  # fmt: skip
        self.assertIsNone(self.machine.away)

    def test_leavesBeforeItsAnswer(self) -> None:
        """
        Psi's unavailable presence overtakes its answer: once the answer is
        in, Psi is away at our dnd with its saved status kept.
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.feed(CommandsKnown(PSI, RC))
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.leaves(PSI), [ForgetCommands(PSI, psi), SaveStatus(None, None)])
        self.assertEqual(self.feed(SetStatusAnswered(PSI, WORKING)),
                         [SaveStatus(PSI, WORKING), SendOwnPresence(PHONE, 0)])  # fmt: skip
        away = self.machine.away
        assert away is not None
        self.assertEqual(away.saved, WORKING)


class AdoptTests(CallPresenceTestsMixin, SynchronousTestCase):
    """
    After a restart, a client set to dnd before it is taken over.
    """

    def restart(self, psi: ResourcePresence | None) -> list[Action]:
        """
        The store says Psi was set to dnd from LUNCH; the session comes up,
        Psi shows C{psi} (or is not online), the settle timer fires.
        """
        self.assertEqual(self.feed(SavedStatusAdopted(PSI, LUNCH)), [])
        self.assertEqual(self.feed(SessionReady()),
                         [SendOwnPresence(None, -1), StartTimer(RESOURCE_SETTLE)])  # fmt: skip
        if psi is not None:
            self.shows(psi)
        self.now += RESOURCE_SETTLE
        return self.feed(TimerFired())

    def test_stillDnd(self) -> None:
        dnd = self.client(PSI, "dnd", PHONE, priority=3)
        self.assertEqual(self.restart(dnd), [QueryCommands(PSI, dnd)])
        self.assertIs(self.machine.phase, Phase.ADOPTING)
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)),
                         [RestoreClientStatus(PSI, NODE_SET_STATUS, LUNCH)])  # fmt: skip
        self.assertEqual(self.feed(RestoreAnswered(PSI)), [SaveStatus(None, None)])

    def test_stillDndStillOnTheCall(self) -> None:
        """
        The call is still going on: Psi keeps our dnd until it is over.
        """
        self.call(S.ON_THE_PHONE)
        dnd = self.client(PSI, "dnd", PHONE, priority=3)
        self.restart(dnd)
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)), [])
        record = self.machine.shown
        assert isinstance(record, ShownOnClient)
        self.assertEqual((record.saved, record.seenOurs), (LUNCH, True))
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, LUNCH)])

    def test_changed(self) -> None:
        self.assertEqual(self.restart(self.client(PSI, None, "back", priority=3)),
                         [SaveStatus(None, None)])  # fmt: skip
        self.assertIsNone(self.machine.shown)
        self.assertIsNone(self.machine.away)

    def test_offlineComesBackAtAnyDnd(self) -> None:
        """
        Psi is not online: the text we set is not known, so any dnd it comes
        back with is taken for ours.
        """
        self.assertEqual(self.restart(None), [])
        away = self.machine.away
        assert away is not None
        self.assertTrue(away.anyDnd)
        dnd = self.client(PSI, "dnd", "some text from before", priority=3)
        self.assertEqual(self.shows(dnd), [LearnCommands(PSI, dnd), QueryCommands(PSI, dnd)])
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)),
                         [RestoreClientStatus(PSI, NODE_SET_STATUS, LUNCH)])  # fmt: skip

    def test_waitsForTheCallOnOwnResource(self) -> None:
        """
        A call shown on our resource is over before the client is taken over.
        """
        self.login()
        self.call(S.ON_THE_PHONE)
        dnd = self.client(PSI, "dnd", PHONE, priority=3)
        self.shows(dnd)
        self.assertEqual(self.feed(SavedStatusAdopted(PSI, LUNCH)), [])
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1), QueryCommands(PSI, dnd)])


class SessionLostTests(CallPresenceTestsMixin, SynchronousTestCase):
    def test_midCommand(self) -> None:
        """
        The stream goes away while Psi's answer is out: nothing is shown
        meanwhile, the late failure is stale, and the call is placed again
        once the next session has settled.
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.feed(CommandsKnown(PSI, RC))
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.feed(SessionLost()), [])
        self.assertIs(self.machine.phase, Phase.IDLE)
        self.assertIsNone(self.machine.shown)
        self.assertEqual(self.feed(SetStatusFailed(PSI, "connection lost")), [])
        self.now += 5
        self.assertEqual(self.feed(SessionReady()),
                         [SendOwnPresence(None, -1), StartTimer(RESOURCE_SETTLE)])  # fmt: skip
        self.shows(psi)
        self.feed(CommandsKnown(PSI, RC))
        self.now += RESOURCE_SETTLE
        self.assertEqual(self.feed(TimerFired()),
                         [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)])  # fmt: skip

    def test_whileChoosing(self) -> None:
        """
        (Adapted: while Psi is asked, the call is on our resource, and stays
        there on the next session; Psi's stale answer moves nothing.)
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.feed(SessionLost()), [])
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)), [])
        self.assertIsInstance(self.machine.shown, ShownOnOwnResource)

    def test_midRestore(self) -> None:
        """
        The restore is tried again on the next session, without settling.
        """
        self.onPsi()
        self.call(S.ONLINE)
        self.assertEqual(self.feed(SessionLost()), [])
        self.assertIs(self.machine.phase, Phase.SHOWN_ON_CLIENT)
        self.assertEqual(self.feed(RestoreInterrupted(PSI, "connection lost")), [])
        self.assertEqual(self.feed(SessionReady()), [
            SendOwnPresence(None, -1), RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)
        ])

    def test_restoreInterruptedWaitsForNextSession(self) -> None:
        """
        A restore that got no answer is not retried on the same stream.
        """
        self.onPsi()
        self.call(S.ONLINE)
        self.assertEqual(self.feed(RestoreInterrupted(PSI, "not connected")), [])
        self.assertEqual(self.call(S.OFFLINE), [])
        self.feed(SessionLost())
        self.assertEqual(self.feed(SessionReady()), [
            SendOwnPresence(None, -1), RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)
        ])

    def test_midAdopt(self) -> None:
        """
        Taking a client over is looked at again on the next session.
        """
        dnd = self.client(PSI, "dnd", PHONE, priority=3)
        self.feed(SavedStatusAdopted(PSI, LUNCH))
        self.feed(SessionReady())
        self.shows(dnd)
        self.now += RESOURCE_SETTLE
        self.assertEqual(self.feed(TimerFired()), [QueryCommands(PSI, dnd)])
        self.assertEqual(self.feed(SessionLost()), [])
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)), [])
        self.assertEqual(self.feed(SessionReady()),
                         [SendOwnPresence(None, -1), StartTimer(RESOURCE_SETTLE)])  # fmt: skip
        self.shows(dnd)
        self.now += RESOURCE_SETTLE
        self.assertEqual(self.feed(TimerFired()), [QueryCommands(PSI, dnd)])


class DiscoveryTests(CallPresenceTestsMixin, SynchronousTestCase):
    """
    A call never waits for the clients' command lists: it is shown on our
    resource at once and moved to a client once one is known to offer
    remote control.
    """

    def test_shownAtOnceThenMovedAndRestored(self) -> None:
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 6)])
        self.assertIs(self.phase(), Phase.SHOWN_ON_OWN_RESOURCE)
        self.assertFalse(self.machine.busy)
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)),
                         [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)])  # fmt: skip
        self.assertIs(self.phase(), Phase.AWAITING_CLIENT)
        # Psi took it: our resource goes back to its idle priority.
        self.assertEqual(self.feed(SetStatusAnswered(PSI, WORKING)),
                         [SaveStatus(PSI, WORKING), SendOwnPresence(None, -1)])  # fmt: skip
        self.assertIs(self.phase(), Phase.SHOWN_ON_CLIENT)
        self.assertEqual(self.shows(self.client(PSI, "dnd", PHONE)), [])
        self.assertEqual(self.call(S.ONLINE), [RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING)])
        self.assertEqual(self.feed(RestoreAnswered(PSI)), [SaveStatus(None, None)])
        self.assertIsNone(self.machine.shown)
        self.assertIs(self.phase(), Phase.IDLE)

    def test_neverAnswers(self) -> None:
        """
        The client's command list times out: the call stays on our
        resource, and goes back to idle after.
        """
        self.login()
        self.shows(self.client(PSI))
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 6)])
        self.now += 10
        self.assertEqual(self.feed(CommandsFailed(PSI, "no answer within 10 s")), [])
        self.assertIsInstance(self.machine.shown, ShownOnOwnResource)
        self.assertEqual(self.call(S.ON_HOLD), [SendOwnPresence(HOLD, 6)])
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1)])
        self.assertIsNone(self.machine.shown)

    def test_higherPriorityStillAsked(self) -> None:
        """
        Psi is known to offer remote control, Gajim (higher priority) is
        still being asked: shown on our resource, then on Psi once Gajim
        turns out to offer none.
        """
        self.login()
        self.shows(self.client(GAJIM, priority=10))
        self.shows(self.client(PSI, priority=5))
        self.feed(CommandsKnown(PSI, RC))
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 11)])
        self.assertEqual(self.feed(CommandsKnown(GAJIM, frozenset())),
                         [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)])  # fmt: skip

    def test_movedToTheHigherOne(self) -> None:
        self.login()
        gajim = self.client(GAJIM, priority=10)
        self.shows(gajim)
        self.shows(self.client(PSI, priority=5))
        self.feed(CommandsKnown(PSI, RC))
        self.call(S.ON_THE_PHONE)
        self.assertEqual(self.feed(CommandsKnown(GAJIM, RC)), [
            SetClientStatus(GAJIM, NODE_SET_STATUS, PHONE, RemoteStatus("online", 10, "working"))
        ])

    def test_textChangesMeanwhile(self) -> None:
        self.login()
        self.shows(self.client(PSI))
        self.assertEqual(self.call(S.RINGING), [SendOwnPresence(RINGING, 6)])
        self.assertEqual(self.call(S.ON_THE_PHONE), [SendOwnPresence(PHONE, 6)])
        self.assertEqual(self.feed(CommandsKnown(PSI, RC)),
                         [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)])  # fmt: skip

    def test_movedClientRefuses(self) -> None:
        """
        The client refuses: the call simply stays on our resource (nothing
        sent again), and is not offered to it again during this call.
        """
        self.login()
        self.shows(self.client(PSI))
        self.call(S.ON_THE_PHONE)
        self.feed(CommandsKnown(PSI, RC))
        self.assertEqual(self.feed(SetStatusFailed(PSI, "forbidden")), [])
        self.assertIs(self.phase(), Phase.SHOWN_ON_OWN_RESOURCE)
        self.assertEqual(self.shows(self.client(PSI, priority=6)), [SendOwnPresence(PHONE, 7)])
        self.assertEqual(self.call(S.ONLINE), [SendOwnPresence(None, -1)])

    def test_callEndsWhileMoving(self) -> None:
        """
        The call ends while the client is being set: once it answered, our
        resource steps back and the client is restored.
        """
        self.login()
        self.shows(self.client(PSI))
        self.call(S.ON_THE_PHONE)
        self.feed(CommandsKnown(PSI, RC))
        self.assertEqual(self.call(S.ONLINE), [])
        self.assertEqual(self.feed(SetStatusAnswered(PSI, WORKING)), [
            SaveStatus(PSI, WORKING), SendOwnPresence(None, -1),
            RestoreClientStatus(PSI, NODE_SET_STATUS, WORKING),
        ])  # fmt: skip

    def test_callEndsAndMoveRefused(self) -> None:
        self.login()
        self.shows(self.client(PSI))
        self.call(S.ON_THE_PHONE)
        self.feed(CommandsKnown(PSI, RC))
        self.call(S.ONLINE)
        self.assertEqual(self.feed(SetStatusTimedOut(PSI, "no answer")),
                         [SendOwnPresence(None, -1)])  # fmt: skip
        self.assertIsNone(self.machine.shown)

    def test_sessionLostWhileMoving(self) -> None:
        """
        The stream goes while the client is being set: the call is placed
        again on the next session (Psi known by then: on Psi).
        """
        self.login()
        psi = self.client(PSI)
        self.shows(psi)
        self.call(S.ON_THE_PHONE)
        self.feed(CommandsKnown(PSI, RC))
        self.feed(SessionLost())
        self.assertEqual(self.feed(SessionReady()),
                         [SendOwnPresence(None, -1), StartTimer(RESOURCE_SETTLE)])  # fmt: skip
        self.shows(psi)
        self.feed(CommandsKnown(PSI, RC))
        self.now += RESOURCE_SETTLE
        self.assertEqual(self.feed(TimerFired()),
                         [SetClientStatus(PSI, NODE_SET_STATUS, PHONE, WORKING)])  # fmt: skip
