"""
Tests for L{sipxmpp.telephony.state.TelephonyStateMachine}, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.telephony.events import Event, ITelephonyObserver, StateChange, TelephonyState
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
