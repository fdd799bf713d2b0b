"""
Tests for L{sipxmpp.store.persister.RuntimeStatePersister}: coalescing per
AoR, the bound on the write rate, retries, on a L{Clock} with a fake store.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.sip.core.registrations import Binding
from sipxmpp.store.errors import StoreUnavailable
from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.store.records import DIALOG_TARGET, REGISTRATION, AoRChanges, RouteRecord, UserReport
from sipxmpp.telephony.snapshots import UserSnapshot
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.savedstatuses import ISavedStatuses, SavedStatus
from tests.unit.test_telephony_state_counts import installChecker

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"


@implementer(IRuntimeStateStore)
class FakeRuntimeStore:
    """
    Records writes; each write answers with the next of C{answers}
    (C{"ok"}, C{"fail"} or C{"hold"}: a Deferred the test fires).
    """

    owner = "test"

    def __init__(self) -> None:
        self.writes: list[tuple[float, list[AoRChanges]]] = []
        self.routeWrites: list[list[RouteRecord]] = []
        self.answers: list[str] = []
        self.held: list[Deferred[None]] = []

    def write(self, changes: Sequence[AoRChanges], now: float,
              routes: Sequence[RouteRecord] = ()) -> Deferred[None]:
        self.writes.append((now, list(changes)))
        self.routeWrites.append(list(routes))
        answer = self.answers.pop(0) if self.answers else "ok"
        if answer == "fail":
            return fail(StoreUnavailable("postgresql://gw@db/sipxmpp: connection refused"))
        if answer == "hold":
            d: Deferred[None] = Deferred()
            self.held.append(d)
            return d
        return succeed(None)

    def loadSnapshots(self, now: float) -> Deferred[list[UserSnapshot]]:
        return succeed([])

    def loadSavedStatuses(self) -> Deferred[list[SavedStatus]]:
        return succeed([])

    def claim(self, aor: str) -> Deferred[list[SavedStatus]]:
        return succeed([])

    def loadPendingActivities(self) -> Deferred[list[str]]:
        return succeed([])

    def loadRoutes(self, now: float) -> Deferred[list[RouteRecord]]:
        return succeed([])

    def report(self, now: float) -> Deferred[list[UserReport]]:
        return succeed([])


class PersisterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = FakeRuntimeStore()
        self.machine = TelephonyStateMachine(self.clock, dialogWatchdog=3600)
        installChecker(self.machine)
        self.persister = RuntimeStatePersister(
            self.store, self.clock, interval=0.5, retryInterval=1.0, maxRetryInterval=4.0
        )
        self.persister.attach(self.machine)
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def aors(self, index: int) -> list[str]:
        return [change.aor for change in self.store.writes[index][1]]

    def test_interfaces(self) -> None:
        verifyObject(ISavedStatuses, self.persister)
        verifyObject(IRuntimeStateStore, self.store)

    def test_coalescesPerAoR(self) -> None:
        """
        Many changes in one reactor turn cost one write with one entry per
        AoR, holding the latest snapshot.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.bindingUpdated(BOB, "c2", 60)
        self.machine.bindingUpdated(ALICE, "c1", 120)
        self.assertEqual(self.store.writes, [])
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 1)
        self.assertEqual(sorted(self.aors(0)), [ALICE, BOB])
        alice = next(c for c in self.store.writes[0][1] if c.aor == ALICE)
        self.assertEqual(alice.snapshot, self.machine.snapshot(ALICE))
        self.assertEqual(alice.snapshot.bindings[0].expiresAt, 1120)
        self.assertTrue(alice.snapshot.dialogs[0].confirmed)
        self.assertIsNone(alice.statuses)

    def test_oneOfTwoCallsEndsWrittenAtOnce(self) -> None:
        """
        A call that ends while another of the user's goes on is written at
        once too: killed within the interval, the gateway would restore it,
        and no BYE would come again to end it (bench/soak.py's stuck pair).
        A new call does wait for the interval.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d2")
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 1)
        self.clock.advance(0.125)
        self.machine.dialogConfirmed(ALICE, "d3")
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 1)  # within the interval
        self.machine.dialogTerminated(ALICE, "d1")
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 2)
        [alice] = self.store.writes[1][1]
        assert alice.snapshot is not None
        self.assertEqual(sorted(d.dialogId for d in alice.snapshot.dialogs), ["d2", "d3"])

    def test_heldWhileRestoring(self) -> None:
        """
        Held, the persister writes nothing, not even the end of a call or
        at a flush (a stop), so the saved rows stay as they were; released,
        the changes kept meanwhile go in one write.
        """
        self.persister.hold()
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")  # urgent when not held
        self.clock.advance(10)
        self.successResultOf(self.persister.flush())
        self.assertEqual(self.store.writes, [])
        self.persister.release()
        self.clock.advance(0)
        self.assertEqual([self.aors(0)], [[ALICE]])
        self.assertEqual(len(self.store.writes), 1)

    def test_rateBound(self) -> None:
        """
        Writes start at most once per interval; changes in between wait and
        coalesce.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(0)
        self.clock.advance(0.125)
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(0.125)
        self.machine.bindingUpdated(BOB, "c1", 60)
        self.clock.advance(0.125)
        self.assertEqual(len(self.store.writes), 1)
        self.clock.advance(0.125)  # 0.5 s after the first write started
        self.assertEqual(len(self.store.writes), 2)
        self.assertEqual(sorted(self.aors(1)), [ALICE, BOB])
        self.assertEqual([w[0] for w in self.store.writes], [1000, 1000.5])
        self.clock.advance(10)
        self.assertEqual(len(self.store.writes), 2)
        self.clock.advance(60)  # both bindings expired: one more write
        self.assertEqual(len(self.store.writes), 3)
        self.assertEqual(self.store.writes[2][1][0].snapshot, UserSnapshot(ALICE))

    def test_callEndWrittenAtOnce(self) -> None:
        """
        The end of a user's last call does not wait for the interval: a
        gateway killed inside it would restore the call and show the user
        on the phone. Other changes still do; a call's end during a write
        starts the next one as soon as it finishes.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d1")
        self.clock.advance(0)
        self.clock.advance(0.125)
        self.machine.bindingUpdated(BOB, "c2", 60)
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 1)  # within the interval
        self.machine.dialogTerminated(ALICE, "d1")
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 2)
        self.assertEqual(sorted(self.aors(1)), [ALICE, BOB])
        alice = next(c for c in self.store.writes[1][1] if c.aor == ALICE)
        self.assertEqual(alice.snapshot.dialogs, ())
        # The next change waits for the interval again.
        self.machine.bindingUpdated(BOB, "c2", 120)
        self.clock.advance(0.25)
        self.assertEqual(len(self.store.writes), 2)
        # A call ending while a write is in progress: written right after.
        self.machine.dialogEarly(BOB, "d2")
        self.store.answers = ["hold"]
        self.clock.advance(0.25)
        self.assertEqual(len(self.store.writes), 3)
        self.machine.dialogTerminated(BOB, "d2")
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 3)
        self.store.held[0].callback(None)
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 4)
        self.assertEqual(self.aors(3), [BOB])

    def test_oneWriteAtATime(self) -> None:
        """
        While a write is in progress, changes wait for it to finish.
        """
        self.store.answers = ["hold"]
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(0)
        self.machine.bindingUpdated(BOB, "c1", 60)
        self.clock.advance(5)
        self.assertEqual(len(self.store.writes), 1)
        self.store.held[0].callback(None)
        self.clock.advance(0)
        self.assertEqual(len(self.store.writes), 2)
        self.assertEqual(self.aors(1), [BOB])

    def test_retryAfterFailure(self) -> None:
        """
        A failed write is logged without secrets, and its changes are
        written again later, merged with newer ones, with growing delays.
        """
        self.store.answers = ["fail", "fail", "fail", "fail", "ok"]
        self.machine.bindingUpdated(ALICE, "c1", 3600)
        self.clock.advance(0)
        self.machine.bindingUpdated(BOB, "c1", 3600)
        self.assertEqual(len(self.store.writes), 1)
        for delay in (1.0, 2.0, 4.0, 4.0):
            self.clock.advance(delay - 0.01)
            written = len(self.store.writes)
            self.clock.advance(0.01)
            self.assertEqual(len(self.store.writes), written + 1)
        self.assertEqual(sorted(self.aors(4)), [ALICE, BOB])
        errors = [e for e in self.events if "retrying" in e.get("log_format", "")]
        self.assertEqual(len(errors), 4)
        self.assertEqual(errors[0]["reason"],
                         "postgresql://gw@db/sipxmpp: connection refused")
        self.clock.advance(100)
        self.assertEqual(len(self.store.writes), 5)

    def test_savedStatuses(self) -> None:
        """
        Saved statuses are kept in memory for the publisher and written
        coalesced; setting none forgets them.
        """
        first = SavedStatus(ALICE, "alice@example.test/psi", "away", 5, "out", 1000)
        second = SavedStatus(ALICE, "alice@example.test/psi", "online", 5, "back", 1000)
        self.persister.setSavedStatuses(ALICE, [first])
        self.persister.setSavedStatuses(ALICE, [second])
        self.persister.sessionStateChanged(ALICE, "online", "remote-control")
        self.assertEqual(self.persister.savedStatuses(ALICE), (second,))
        self.assertEqual(self.persister.aorsWithSavedStatuses(), [ALICE])
        self.clock.advance(0)
        [change] = self.store.writes[0][1]
        self.assertEqual(change.statuses, (second,))
        self.assertIsNone(change.snapshot)
        assert change.session is not None
        self.assertEqual((change.session.state, change.session.detail),
                         ("online", "remote-control"))
        self.persister.setSavedStatuses(ALICE, [])
        self.assertEqual(self.persister.savedStatuses(ALICE), ())
        self.assertEqual(self.persister.aorsWithSavedStatuses(), [])
        self.clock.advance(1)
        self.assertEqual(self.store.writes[1][1][0].statuses, ())

    def test_activityPending(self) -> None:
        """
        An activity published is written once per call, not per publish;
        its retraction once acknowledged; the AoRs are known in memory.
        """
        self.persister.loadPendingActivities([BOB])
        self.persister.setActivityPending(ALICE, True)
        self.persister.setActivityPending(ALICE, True)
        self.persister.setActivityPending(BOB, True)  # known from the start
        self.assertEqual(self.persister.aorsWithPendingActivity(), [ALICE, BOB])
        self.clock.advance(0)
        [change] = self.store.writes[0][1]
        self.assertEqual((change.aor, change.activity), (ALICE, True))
        self.persister.setActivityPending(ALICE, False)
        self.persister.setActivityPending(BOB, False)
        self.assertEqual(self.persister.aorsWithPendingActivity(), [])
        self.clock.advance(1)
        self.assertEqual({(c.aor, c.activity) for c in self.store.writes[1][1]},
                         {(ALICE, False), (BOB, False)})

    def test_stopFlushes(self) -> None:
        """
        stop writes what is pending at once, even inside the interval, and
        then nothing more is scheduled.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(0)
        self.machine.bindingUpdated(BOB, "c1", 60)
        d = self.persister.stop()
        self.successResultOf(d)
        self.assertEqual(len(self.store.writes), 2)
        self.machine.bindingUpdated(BOB, "c2", 60)
        self.clock.advance(10)
        self.assertEqual(len(self.store.writes), 2)

    def test_flushWaitsForWriteInProgress(self) -> None:
        """
        flush during a write waits for it, then writes the rest.
        """
        self.store.answers = ["hold"]
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.clock.advance(0)
        self.machine.bindingUpdated(BOB, "c1", 60)
        d = self.persister.flush()
        self.assertNoResult(d)
        self.store.held[0].callback(None)
        self.successResultOf(d)
        self.assertEqual(self.aors(1), [BOB])


PHONE = Peer("UDP", "192.0.2.1", 5080)
KEY = ("alice", "192.0.2.1", 5080, "")


class RoutePersistenceTests(SynchronousTestCase):
    """
    The proxy's routes to the phones are written as they change: coalesced
    per route, each as it is when the write starts, retried after a
    failure; nothing on the SIP path waits.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = FakeRuntimeStore()
        self.routes = PhoneRoutes(self.clock, {"UDP": Peer("UDP", "127.0.0.1", 5060)}, "path")
        self.persister = RuntimeStatePersister(
            self.store, self.clock, interval=0.5, retryInterval=1.0, maxRetryInterval=4.0
        )
        self.persister.attachRoutes(self.routes)

    def binding(self, expires: float = 3600.0) -> Binding:
        return Binding(ALICE, "sip:alice@192.0.2.1:5080", PHONE, self.clock.seconds() + expires)

    def test_coalescedLatest(self) -> None:
        """
        Changes of one route between two writes cost one row, the latest;
        the two kinds are told apart.
        """
        self.routes.registrations.update(KEY, self.binding(60))
        self.routes.registrations.update(KEY, self.binding(120))
        self.routes.dialogTargets.update(KEY, self.binding(14400))
        self.assertEqual(self.store.writes, [])
        self.clock.advance(0)
        self.assertEqual(self.store.routeWrites, [[
            RouteRecord(DIALOG_TARGET, KEY, self.binding(14400)),
            RouteRecord(REGISTRATION, KEY, self.binding(120)),
        ]])
        self.assertEqual(self.store.writes[0][1], [])

    def test_removedWrittenAsGone(self) -> None:
        """
        A binding the registrar no longer lists, or a de-registration, is
        written as gone; one that merely expires is not written (the store
        prunes it).
        """
        self.routes.registrations.update(KEY, self.binding(60))
        self.clock.advance(0)
        self.routes.registrations.retain(ALICE, ())
        self.clock.advance(0.5)
        self.assertEqual(self.store.routeWrites[-1], [RouteRecord(REGISTRATION, KEY, None)])
        self.routes.registrations.update(KEY, self.binding(60))
        self.clock.advance(0.5)
        self.routes.registrations.remove(KEY)
        self.clock.advance(0.5)
        self.assertEqual(self.store.routeWrites[-1], [RouteRecord(REGISTRATION, KEY, None)])
        writes = len(self.store.writes)
        self.routes.registrations.update(KEY, self.binding(1))
        self.clock.advance(0.5)
        self.clock.advance(3600)
        self.routes.registrations.purge()
        self.assertEqual(len(self.store.writes), writes + 1)

    def test_rateBoundAndRetried(self) -> None:
        """
        Route changes wait for the rate bound like the rest; after a failed
        write they are written again, as they are then.
        """
        self.store.answers = ["ok", "fail"]
        self.routes.registrations.update(KEY, self.binding())
        self.clock.advance(0)
        self.routes.dialogTargets.update(KEY, self.binding())
        self.clock.advance(0.25)
        self.assertEqual(len(self.store.writes), 1)
        self.clock.advance(0.25)
        self.assertEqual(len(self.store.writes), 2)  # failed
        latest = self.binding(10)
        self.routes.dialogTargets.update(KEY, latest)
        self.clock.advance(1.0)
        self.assertEqual(self.store.routeWrites[-1], [RouteRecord(DIALOG_TARGET, KEY, latest)])

    def test_flushWritesRoutes(self) -> None:
        """
        At stop, pending route changes are written at once.
        """
        self.routes.registrations.update(KEY, self.binding())
        self.successResultOf(self.persister.stop())
        self.assertEqual(self.store.routeWrites, [[RouteRecord(REGISTRATION, KEY, self.binding())]])

    def test_writeWithoutRoutesKeepsTwoArguments(self) -> None:
        """
        A write with no route changes passes no routes (older stores).
        """
        persister = RuntimeStatePersister(self.store, self.clock)
        persister.sessionStateChanged(ALICE, "online")
        self.clock.advance(0)
        self.assertEqual(self.store.routeWrites, [[]])
