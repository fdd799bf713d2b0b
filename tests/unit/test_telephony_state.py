"""
Tests for L{sipxmpp.telephony.state.TelephonyStateMachine}, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.telephony.events import (
    DialogPhase,
    DialogReport,
    Event,
    ITelephonyObserver,
    StateChange,
    TelephonyState,
)
from sipxmpp.telephony.state import TOMBSTONE_LIFETIME, TelephonyStateMachine
from tests.unit.test_telephony_state_counts import installChecker

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
S = TelephonyState


@implementer(ITelephonyObserver)
class Recorder:
    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def telephonyStateChanged(self, change: StateChange) -> None:
        self.changes.append(change)

    def events(self, aor: str = ALICE) -> list[Event]:
        return [c.event for c in self.changes if c.aor == aor]


class StateMachineTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.machine = TelephonyStateMachine(
            self.clock, dialogWatchdog=3600, earlyLifetime=180, bindingGrace=5
        )
        # Every step of every test also checks the dialog counts.
        installChecker(self.machine)
        self.recorder = Recorder()
        self.machine.addObserver(self.recorder)

    def events(self, aor: str = ALICE) -> list[Event]:
        return self.recorder.events(aor)


class AckTests(StateMachineTestCase):
    """
    A call the proxy saw answered is set up by its ACK; without one within
    ackTimeout (64*T1) it ends: no BYE would ever come for it.
    """

    def test_noAckEnds(self) -> None:
        self.machine.bindingUpdated(ALICE, "c1", 3600)
        self.machine.dialogConfirmed(ALICE, "d1", awaitAck=True)
        self.clock.advance(31.9)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        with capturedLogs() as logs:
            self.clock.advance(0.1)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])
        self.assertIn("got no ACK within 32 s", " ".join(e["log_format"].format(**e)
                                                          for e in logs))
        # Its ACK, late (a retransmitted 200's), cannot bring it back.
        self.machine.dialogAcknowledged(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d1", awaitAck=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_ackSetsUp(self) -> None:
        """
        ACKed, the call lives its full lifetime, and its saved end moves
        (without telling the observers anything new).
        """
        changed: list[str] = []
        self.machine.setPersistenceCallback(changed.append)
        self.machine.dialogConfirmed(ALICE, "d1", sessionExpires=600, awaitAck=True)
        self.assertEqual(self.machine.snapshot(ALICE).dialogs[0].expiresAt, 32)
        self.clock.advance(1)
        self.machine.dialogAcknowledged(ALICE, "d1")
        self.assertEqual(self.machine.snapshot(ALICE).dialogs[0].expiresAt, 601)
        self.assertEqual(changed, [ALICE, ALICE])
        self.machine.dialogAcknowledged(ALICE, "d1")  # the ACK again: nothing
        self.assertEqual(changed, [ALICE, ALICE])
        self.clock.advance(599)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(self.events(), [Event.ON_THE_PHONE, Event.OFFLINE])

    def test_retransmitted2xxKeepsTheWait(self) -> None:
        """
        A 2xx again while the ACK is awaited does not extend the wait; the
        lifetime it names is the one the call gets once ACKed.
        """
        self.machine.dialogConfirmed(ALICE, "d1", awaitAck=True)
        self.clock.advance(20)
        self.machine.dialogConfirmed(ALICE, "d1", sessionExpires=300, awaitAck=True)
        self.assertEqual(self.machine.snapshot(ALICE).dialogs[0].expiresAt, 32)
        self.machine.dialogAcknowledged(ALICE, "d1")
        self.assertEqual(self.machine.snapshot(ALICE).dialogs[0].expiresAt, 320)

    def test_ackBeforeItsAnswer(self) -> None:
        """
        SIP workers' events can cross: an ACK reported before its 2xx sets
        the call up when the 2xx comes, within ackTimeout.
        """
        self.machine.dialogAcknowledged(ALICE, "d1")
        self.assertEqual(self.machine.users(), {})
        self.machine.dialogConfirmed(ALICE, "d1", awaitAck=True)
        self.clock.advance(3599)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        # Forgotten after ackTimeout if no 2xx comes.
        self.machine.dialogAcknowledged(BOB, "d2")
        self.clock.advance(32)
        self.machine.dialogConfirmed(BOB, "d2", awaitAck=True)
        self.clock.advance(32)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_notAwaited(self) -> None:
        """
        Without awaitAck (what else confirms a dialog) nothing changes.
        """
        self.machine.dialogConfirmed(ALICE, "d1")
        self.clock.advance(3599)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)


class BindingTests(StateMachineTestCase):
    """
    Registration makes a user online; expiry or de-registration offline.
    """

    def test_registerRefreshExpire(self) -> None:
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.clock.advance(50)
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(64)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.clock.advance(1)  # 60 s after the refresh plus 5 s grace
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.STILL_ONLINE, Event.OFFLINE])
        self.assertEqual([c.at for c in self.recorder.changes], [0, 50, 115])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deregister(self) -> None:
        self.machine.bindingUpdated(ALICE, "c1", 3600)
        self.machine.bindingUpdated(ALICE, "c1", 0)
        self.assertEqual(self.events(), [Event.ONLINE, Event.OFFLINE])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.machine.users(), {})

    def test_removeUnknownIsHarmless(self) -> None:
        self.machine.bindingRemoved(ALICE, "c1")
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.bindingRemoved(ALICE, "c2")
        self.machine.allBindingsRemoved(BOB)
        self.assertEqual(self.events(), [Event.ONLINE])

    def test_twoDevicesAndStar(self) -> None:
        self.machine.bindingUpdated(ALICE, "desk", 60)
        self.machine.bindingUpdated(ALICE, "mobile", 600)
        self.assertEqual(self.events(), [Event.ONLINE])
        self.clock.advance(66)  # desk expired, mobile still there
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.machine.allBindingsRemoved(ALICE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.OFFLINE])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reRegisterRacingExpiry(self) -> None:
        """
        A refresh whose 200 OK is seen just after the old expiry (within the
        grace) does not flap the user offline and back.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(60.5)
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.assertEqual(self.events(), [Event.ONLINE, Event.STILL_ONLINE])

    def test_usersListsOnlyPresent(self) -> None:
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.bindingUpdated(BOB, "c2", 60)
        self.machine.bindingRemoved(BOB, "c2")
        self.assertEqual(self.machine.users(), {ALICE: S.ONLINE})


class DialogTests(StateMachineTestCase):
    """
    Calls make a user ringing, on the phone, on hold, and back.
    """

    def setUp(self) -> None:
        super().setUp()
        self.machine.bindingUpdated(ALICE, "c1", 3600)

    def test_answeredCall(self) -> None:
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(
            self.events(), [Event.ONLINE, Event.RINGING, Event.ON_THE_PHONE, Event.ONLINE]
        )
        states = [(c.previous, c.state) for c in self.recorder.changes]
        self.assertEqual(states[2], (S.RINGING, S.ON_THE_PHONE))

    def test_outgoingEarlyIsOnThePhone(self) -> None:
        """
        A caller waiting for an answer is busy on the phone; only the callee
        is ringing.
        """
        self.machine.dialogEarly(ALICE, "d1", outgoing=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogEarly(ALICE, "d2")
        self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE,
                                         Event.STILL_ON_THE_PHONE, Event.RINGING])

    def test_confirmedWithoutEarly(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_180After200(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogEarly(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE])

    def test_200Retransmission(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d1")
        self.assertEqual(
            self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.STILL_ON_THE_PHONE]
        )

    def test_cancelCrossing200(self) -> None:
        """
        The 487 to a CANCEL ended the call; a 200 that crossed the CANCEL
        and the BYE that follows it cannot bring "on the phone" back.
        """
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(self.events(), [Event.ONLINE, Event.RINGING, Event.ONLINE])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_byeRetransmissions(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        for _ in range(3):
            self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])

    def test_tombstoneForgotten(self) -> None:
        """
        A dialog id is ignored only for the tombstone lifetime, then the
        user's record goes away entirely when nothing else is left.
        """
        self.machine.bindingRemoved(ALICE, "c1")
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")
        self.clock.advance(TOMBSTONE_LIFETIME)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.machine._users, {})
        self.machine.dialogConfirmed(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_holdResume(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d1")
        self.machine.dialogResumed(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(
            self.events(),
            [Event.ONLINE, Event.ON_THE_PHONE, Event.HELD, Event.RESUMED, Event.HELD,
             Event.ONLINE],
        )

    def test_holdOfEarlyOrUnknownIgnored(self) -> None:
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d2")
        self.machine.dialogResumed(BOB, "d3")
        self.machine.dialogRefreshed(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.assertEqual(self.events(), [Event.ONLINE, Event.RINGING])

    def test_activeCallBeatsHeldOne(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d2")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.dialogTerminated(ALICE, "d2")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_HOLD)

    def test_parallelCallsOnTwoDevices(self) -> None:
        self.machine.bindingUpdated(ALICE, "c2", 3600)
        self.machine.dialogConfirmed(ALICE, "desk-call")
        self.machine.dialogEarly(ALICE, "mobile-call")
        self.machine.dialogConfirmed(ALICE, "mobile-call")
        self.machine.dialogTerminated(ALICE, "desk-call")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.dialogTerminated(ALICE, "mobile-call")
        self.assertEqual(
            self.events(),
            [Event.ONLINE, Event.ON_THE_PHONE, Event.STILL_ON_THE_PHONE, Event.ONLINE],
        )

    def test_forking(self) -> None:
        """
        Two early dialogs of one forked INVITE: one answers, the other is
        ended by the observer; the user is on the phone throughout.
        """
        self.machine.dialogEarly(ALICE, ("call", "tagA"))
        self.machine.dialogEarly(ALICE, ("call", "tagB"))
        self.machine.dialogConfirmed(ALICE, ("call", "tagB"))
        self.machine.dialogTerminated(ALICE, ("call", "tagA"))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.RINGING, Event.ON_THE_PHONE])

    def test_unansweredExpires(self) -> None:
        self.machine.dialogEarly(ALICE, "d1")
        self.clock.advance(179)
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_watchdog(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1")
        self.clock.advance(3599)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_sessionExpiresAndRefresh(self) -> None:
        self.machine.dialogConfirmed(ALICE, "d1", sessionExpires=90)
        self.clock.advance(80)
        self.machine.dialogRefreshed(ALICE, "d1", sessionExpires=90)
        self.clock.advance(80)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(10)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(
            self.events(),
            [Event.ONLINE, Event.ON_THE_PHONE, Event.STILL_ON_THE_PHONE, Event.ONLINE],
        )

    def test_callWhileUnregistered(self) -> None:
        self.machine.dialogEarly(BOB, "d9")
        self.machine.dialogTerminated(BOB, "d9")
        self.assertEqual(self.events(BOB), [Event.RINGING, Event.OFFLINE])

    def test_offlineWhileOnCallStaysOnCall(self) -> None:
        """
        A binding expiring mid-call does not hide the call.
        """
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.bindingRemoved(ALICE, "c1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(self.events()[-1], Event.OFFLINE)


def early(dialogId: str, outgoing: bool = False) -> DialogReport:
    return DialogReport(dialogId, DialogPhase.EARLY, outgoing)


def confirmed(dialogId: str) -> DialogReport:
    return DialogReport(dialogId, DialogPhase.CONFIRMED)


def held(dialogId: str) -> DialogReport:
    return DialogReport(dialogId, DialogPhase.HELD)


def terminated(dialogId: str) -> DialogReport:
    return DialogReport(dialogId, DialogPhase.TERMINATED)


class PublicationTests(StateMachineTestCase):
    """
    Publications (PUBLISH, NOTIFY) report dialogs that aggregate with the
    observed ones; each publication bounds the life of its dialogs.
    """

    def setUp(self) -> None:
        super().setUp()
        self.machine.bindingUpdated(ALICE, "c1", 3600)

    def test_publishedCall(self) -> None:
        """
        Early, confirmed and terminated reports of one dialog, one per
        modification of a publication (as Kamailio's pua_dialoginfo sends
        them), ring, answer and end the call.
        """
        self.machine.publicationSet(ALICE, "p1", 43201, [early("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.machine.publicationSet(ALICE, "p1", 43201, [confirmed("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationSet(ALICE, "p1", 11, [terminated("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(
            self.events(), [Event.ONLINE, Event.RINGING, Event.ON_THE_PHONE, Event.ONLINE]
        )
        self.clock.advance(11)
        self.assertEqual(self.machine._users[ALICE].publications, {})
        self.assertEqual(self.events()[-1], Event.ONLINE)

    def test_outgoingEarlyIsOnThePhone(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 3600, [early("d1", outgoing=True)])
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_holdAndResume(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p1", 3600, [held("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_HOLD)
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.assertEqual(self.events(),
                         [Event.ONLINE, Event.ON_THE_PHONE, Event.HELD, Event.RESUMED])

    def test_expiryEndsItsDialogs(self) -> None:
        """
        A publisher that dies never leaves the user on the phone: when its
        publication expires, so do the dialogs it reported.
        """
        self.machine.publicationSet(ALICE, "p1", 60, [confirmed("d1")])
        self.clock.advance(59)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])

    def test_expiryForgetsEverything(self) -> None:
        self.machine.bindingRemoved(ALICE, "c1")
        self.machine.publicationSet(ALICE, "p1", 60, [confirmed("d1")], busy=True)
        self.clock.advance(60)
        self.clock.advance(TOMBSTONE_LIFETIME)
        self.assertEqual(self.machine._users, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refreshExtends(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 60, [confirmed("d1")])
        self.clock.advance(50)
        self.machine.publicationRefreshed(ALICE, "p1", 60)
        self.clock.advance(59)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE,
                                         Event.STILL_ON_THE_PHONE, Event.ONLINE])

    def test_removal(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.machine.publicationRemoved(ALICE, "p1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.machine.publicationRemoved(ALICE, "p1")
        self.machine.publicationRefreshed(ALICE, "p1", 60)
        self.machine.publicationRemoved(BOB, "p1")
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])

    def test_zeroExpiresRemoves(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.machine.publicationRefreshed(ALICE, "p1", 0)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.machine.publicationSet(ALICE, "p2", 3600, [confirmed("d2")])
        self.machine.publicationSet(ALICE, "p2", 0, [confirmed("d2")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(self.machine._users[ALICE].publications, {})

    def test_fullStateEndsUnlistedDialogs(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1"), early("d2")])
        self.machine.publicationSet(ALICE, "p1", 3600, [early("d2")])
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.machine.publicationSet(ALICE, "p1", 3600, [])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_partialStateKeepsUnlistedDialogs(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p1", 3600, [early("d2")], partial=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationSet(ALICE, "p1", 3600, [terminated("d1")], partial=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)

    def test_terminatedInAnotherPublication(self) -> None:
        """
        A publisher that lost its entity-tag (a 412 after our restart, say)
        reports the end of a call in a new publication: the call ends, and
        the old publication expiring later changes nothing.
        """
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p2", 11, [terminated("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.clock.advance(3600)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])

    def test_dialogBelongsToLastReporter(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 60, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p2", 3600, [confirmed("d1")])
        self.clock.advance(60)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationSet(ALICE, "p1", 60, [])  # p1 anew, without d1
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationRemoved(ALICE, "p2")
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_confirmedWhileRingingThenTerminated(self) -> None:
        """
        pua_dialoginfo reports "confirmed" on any request inside an early
        dialog (a PRACK): on the phone, as the report says, and the later
        "terminated" of the unanswered call still ends it.
        """
        self.machine.publicationSet(ALICE, "p1", 43201, [early("d1")])
        self.machine.publicationSet(ALICE, "p1", 43201, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p1", 43201, [early("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationSet(ALICE, "p1", 11, [terminated("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_lateConfirmedCannotRevive(self) -> None:
        """
        A "confirmed" that arrives after the "terminated" (reordered, or in
        another publication) is ignored, also for a dialog never seen.
        """
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p1", 11, [terminated("d1")])
        self.machine.publicationSet(ALICE, "p2", 3600, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "p3", 11, [terminated("d2")])
        self.machine.publicationSet(ALICE, "p3", 3600, [confirmed("d2")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.clock.advance(TOMBSTONE_LIFETIME)
        self.machine.publicationSet(ALICE, "p2", 3600, [confirmed("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_earlyElsewhereAfterConfirmedIgnored(self) -> None:
        """
        An "early" for a confirmed dialog in another publication (pua's
        orphaned first publication, or an "early" relayed after the 200)
        neither turns it back into ringing nor takes it over: the call
        outlives that publication, ends with the one that confirmed it,
        and a "terminated" in either still ends it.
        """
        self.machine.publicationSet(BOB, "p1", 3600, [confirmed("d1")])
        self.machine.publicationSet(BOB, "p2", 3600, [early("d1")])
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.clock.advance(self.machine.earlyLifetime + 1)
        self.machine.publicationRemoved(BOB, "p2")
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.machine.publicationRemoved(BOB, "p1")
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)
        self.machine.publicationSet(ALICE, "p1", 3600, [confirmed("d2")])
        self.machine.publicationSet(ALICE, "p2", 3600, [early("d2")])
        self.machine.publicationSet(ALICE, "p2", 11, [terminated("d2")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertNotIn(Event.RINGING, self.events(ALICE) + self.events(BOB))

    def test_earlyLifetimeBoundsPublishedEarly(self) -> None:
        """
        An early dialog ends after the early lifetime even while its
        publication (43201 s from pua_dialoginfo) lives on; answered in
        time, it lives as long as its publication.
        """
        self.machine.bindingUpdated(ALICE, "c1", 86400)
        self.machine.publicationSet(ALICE, "p1", 43201, [early("d1")])
        self.clock.advance(180)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertIn("p1", self.machine._users[ALICE].publications)
        self.machine.publicationSet(ALICE, "p2", 43201, [early("d2")])
        self.clock.advance(100)
        self.machine.publicationSet(ALICE, "p2", 43201, [confirmed("d2")])
        self.clock.advance(43000)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(201)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_busyActivity(self) -> None:
        """
        A publication saying "on the phone" without a dialog (PIDF with RPID
        on-the-phone) shows as on the phone until it says otherwise.
        """
        self.machine.publicationSet(ALICE, "pidf", 3600, busy=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationSet(ALICE, "pidf", 3600, busy=False)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.machine.publicationSet(ALICE, "pidf", 3600, busy=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        # A partial report changes only the dialogs it lists, but says
        # whether the user is busy all the same.
        self.machine.publicationSet(ALICE, "pidf", 3600, busy=False, partial=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(self.events(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE,
                                         Event.ON_THE_PHONE, Event.ONLINE])

    def test_sourcesAggregate(self) -> None:
        """
        The proxy's own observations, a dialog-info publication and a PIDF
        one add up to one state; published and observed dialogs are keyed
        apart even when their ids are equal.
        """
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.publicationSet(ALICE, "dialog", 3600, [confirmed("d1")])
        self.machine.publicationSet(ALICE, "pidf", 3600, busy=True)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationSet(ALICE, "dialog", 11, [terminated("d1")])
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.machine.publicationRemoved(ALICE, "pidf")
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.machine.dialogTerminated(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_observedEndDoesNotEndPublished(self) -> None:
        self.machine.publicationSet(ALICE, "dialog", 3600, [confirmed("d1")])
        self.machine.dialogTerminated(ALICE, "d1")
        self.machine.dialogHeld(ALICE, "d1")
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_notSnapshottedNorPersisted(self) -> None:
        """
        Snapshots leave publications out, and publication changes do not
        ask the store to save one (see the module docstring for why).
        """
        saved: list[str] = []
        self.machine.setPersistenceCallback(saved.append)
        self.machine.dialogConfirmed(ALICE, "observed")
        self.assertEqual(saved, [ALICE])
        self.machine.publicationSet(ALICE, "p1", 60, [early("d1")], busy=True)
        self.machine.publicationSet(ALICE, "p1", 60, [confirmed("d1")])
        self.machine.publicationRefreshed(ALICE, "p1", 60)
        self.clock.advance(60)
        self.assertEqual(saved, [ALICE])
        self.machine.publicationSet(ALICE, "p2", 60, [confirmed("d2")])
        snapshot = self.machine.snapshot(ALICE)
        self.assertEqual([d.dialogId for d in snapshot.dialogs], ["observed"])

    def test_publicationWithoutDialogsKeepsRecord(self) -> None:
        self.machine.bindingRemoved(ALICE, "c1")
        self.machine.publicationSet(ALICE, "pidf", 60)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertIn(ALICE, self.machine._users)
        self.clock.advance(60)
        self.assertEqual(self.machine._users, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SavedPublicationTests(StateMachineTestCase):
    """
    Publications with a tag (an entity-tag) are saved in snapshots and
    restored after a restart; those without (a subscription's) are not.
    """

    def setUp(self) -> None:
        super().setUp()
        self.machine.bindingUpdated(ALICE, "c1", 3600)
        self.saved: list[str] = []
        self.machine.setPersistenceCallback(self.saved.append)

    def restarted(self) -> TelephonyStateMachine:
        clock = Clock()
        clock.advance(self.clock.seconds())
        self.clock = clock
        machine = TelephonyStateMachine(clock, dialogWatchdog=3600, earlyLifetime=180,
                                        bindingGrace=5)  # fmt: skip
        installChecker(machine)
        machine.addObserver(self.recorder)
        for snapshot in self.machine.snapshots():
            machine.restore(snapshot)
        self.machine = machine
        return machine

    def test_snapshotHoldsTaggedPublications(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 600, [confirmed("d1"), early("d2", True)],
                                    tag="e1")  # fmt: skip
        self.machine.publicationSet(ALICE, "p2", 300, busy=True, tag="e2")
        self.machine.publicationSet(ALICE, "sub", 300, [held("d3")])
        self.machine.publicationSet(ALICE, "p3", 300, [terminated("d4")], tag="e3")
        snapshot = self.machine.snapshot(ALICE)
        byKey = {p.publication: p for p in snapshot.publications}
        self.assertEqual(set(byKey), {"p1", "p2"})
        self.assertEqual(byKey["p1"].tag, "e1")
        self.assertEqual(byKey["p1"].expiresAt, 600)
        self.assertEqual(sorted(byKey["p1"].dialogs, key=lambda r: str(r.dialogId)),
                         [confirmed("d1"), early("d2", True)])  # fmt: skip
        self.assertFalse(byKey["p1"].busy)
        self.assertEqual((byKey["p2"].dialogs, byKey["p2"].busy), ((), True))
        self.assertEqual(snapshot.dialogs, ())

    def test_taggedChangesArePersisted(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 600, [early("d1")], tag="e1")
        self.machine.publicationRefreshed(ALICE, "p1", 600, tag="e2")
        self.assertEqual(self.saved, [ALICE, ALICE])
        self.assertEqual(self.machine.snapshot(ALICE).publications[0].tag, "e2")
        self.machine.publicationRemoved(ALICE, "p1")
        self.assertEqual(self.saved, [ALICE] * 3)
        self.assertEqual(self.machine.snapshot(ALICE).publications, ())

    def test_restoredCall(self) -> None:
        """
        A call a publication reported is shown again after a restart, and
        ends when the restored publication says so.
        """
        self.machine.publicationSet(ALICE, "p1", 600, [confirmed("d1")], tag="e1")
        self.clock.advance(100)
        machine = self.restarted()
        self.assertEqual(machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(machine.snapshot(ALICE).publications[0].expiresAt, 600)
        machine.publicationSet(ALICE, "p1", 11, [terminated("d1")], tag="e3")
        self.assertEqual(machine.stateOf(ALICE), S.ONLINE)

    def test_restoredPublicationExpires(self) -> None:
        """
        A restored publication keeps the lifetime it had: nobody stays on
        the phone because the gateway restarted.
        """
        self.machine.publicationSet(ALICE, "p1", 600, [held("d1")], tag="e1")
        self.clock.advance(599)
        machine = self.restarted()
        self.assertEqual(machine.stateOf(ALICE), S.ON_HOLD)
        self.clock.advance(1)
        self.assertEqual(machine.stateOf(ALICE), S.ONLINE)

    def test_expiredNotRestored(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 600, busy=True, tag="e1")
        snapshots = self.machine.snapshots()
        self.clock.advance(600)
        for snapshot in snapshots:
            self.machine.restore(snapshot)
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.assertEqual(self.machine.snapshot(ALICE).publications, ())

    def test_restoreNotifiesNoListener(self) -> None:
        """
        Restoring is not a publication arriving: publication listeners
        (taking a user over from another instance) are not told.
        """
        self.machine.publicationSet(ALICE, "p1", 600, busy=True, tag="e1")
        snapshots = self.machine.snapshots()
        arrived: list[str] = []

        class Listener:
            def publicationArrived(self, aor: str) -> None:
                arrived.append(aor)

        machine = TelephonyStateMachine(self.clock)
        machine.addPublicationListener(Listener())  # type: ignore[arg-type]
        for snapshot in snapshots:
            machine.restore(snapshot)
        self.assertEqual(arrived, [])
        self.assertEqual(machine.stateOf(ALICE), S.ON_THE_PHONE)


class ObserverFailureTests(StateMachineTestCase):
    """
    A failing observer is logged and does not stop the others.
    """

    def test_failingObserver(self) -> None:
        @implementer(ITelephonyObserver)
        class Broken:
            def telephonyStateChanged(self, change: StateChange) -> None:
                raise RuntimeError("boom")

        machine = TelephonyStateMachine(self.clock)
        installChecker(machine)
        machine.addObserver(Broken())
        machine.addObserver(self.recorder)
        machine.bindingUpdated(ALICE, "c1", 60)
        self.assertEqual(self.events(), [Event.ONLINE])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
