"""
Restart state: L{TelephonyStateMachine} snapshots and restores (pure, on a
L{Clock}), and the whole restore flow through an SQLite store: unexpired
bindings and dialogs come back after a restart, expired ones do not.
"""

from __future__ import annotations

import ipaddress
import os

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.sip.core.proxy import Proxy, ProxySettings
from sipxmpp.sip.core.registrations import Binding
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.store.errors import StoreError
from sipxmpp.store.opening import Store, StoreSettings, initialiseStore, openStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.store.records import REGISTRATION, AoRChanges, RouteRecord
from sipxmpp.store.restore import RestoreSummary, restorePhoneRoutes, restoreRuntimeState
from sipxmpp.store.service import StoreService
from sipxmpp.telephony.events import (
    DialogPhase,
    DialogReport,
    Event,
    ITelephonyObserver,
    StateChange,
    TelephonyState,
)
from sipxmpp.telephony.snapshots import (
    BindingSnapshot,
    DialogSnapshot,
    PublicationSnapshot,
    UserSnapshot,
)
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.savedstatuses import SavedStatus
from tests.unit.test_sip_proxy import answer, aorOf, byeFromUpstream, invite, registerLine

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
CAROL = "sip:carol@example.test"
S = TelephonyState
T0 = 1_700_000_000.0


@implementer(ITelephonyObserver)
class Recorder:
    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def telephonyStateChanged(self, change: StateChange) -> None:
        self.changes.append(change)

    def events(self, aor: str) -> list[Event]:
        return [c.event for c in self.changes if c.aor == aor]


def machineAt(
    seconds: float, watchdog: float = 3600, early: float = 180
) -> tuple[Clock, TelephonyStateMachine, Recorder]:
    clock = Clock()
    clock.advance(seconds)
    machine = TelephonyStateMachine(clock, dialogWatchdog=watchdog, earlyLifetime=early,
                                    bindingGrace=5)
    recorder = Recorder()
    machine.addObserver(recorder)
    return clock, machine, recorder


class SnapshotTests(SynchronousTestCase):
    """
    snapshot, restore and the persistence callback of the state machine.
    """

    def setUp(self) -> None:
        self.clock, self.machine, self.recorder = machineAt(100)
        self.changed: list[str] = []
        self.machine.setPersistenceCallback(self.changed.append)

    def test_snapshot(self) -> None:
        """
        A snapshot gives each binding's registrar expiry (without grace) and
        each dialog's end, as clock times.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.dialogEarly(ALICE, "d1")
        self.machine.dialogConfirmed(ALICE, "d2", sessionExpires=90)
        self.machine.dialogHeld(ALICE, "d2")
        self.assertEqual(
            self.machine.snapshot(ALICE),
            UserSnapshot(
                ALICE,
                (BindingSnapshot("c1", 160),),
                (DialogSnapshot("d1", False, False, 280), DialogSnapshot("d2", True, True, 190)),
            ),
        )
        self.assertEqual(self.machine.snapshot(BOB), UserSnapshot(BOB))
        self.assertTrue(self.machine.snapshot(BOB).isEmpty())
        self.assertEqual(self.machine.snapshots(), [self.machine.snapshot(ALICE)])

    def test_callbackOnEveryChange(self) -> None:
        """
        The persistence callback hears of every change of bindings or
        dialogs, refreshes and expiries included.
        """
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.machine.dialogConfirmed(BOB, "d1")
        self.machine.dialogRefreshed(BOB, "d1", 100)
        self.machine.dialogTerminated(BOB, "d1")
        self.clock.advance(65)
        self.assertEqual(self.changed, [ALICE, ALICE, BOB, BOB, BOB, ALICE])
        self.assertTrue(self.machine.snapshot(ALICE).isEmpty())

    def test_failingCallback(self) -> None:
        """
        A failing persistence callback is logged; state and observers carry
        on.
        """
        def broken(aor: str) -> None:
            raise RuntimeError("disk on fire")

        self.machine.setPersistenceCallback(broken)
        self.machine.bindingUpdated(ALICE, "c1", 60)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.recorder.events(ALICE), [Event.ONLINE])

    def test_restore(self) -> None:
        """
        Unexpired bindings and dialogs come back with their own end times
        and are reported to the observers; expired ones do not.
        """
        snapshot = UserSnapshot(
            ALICE,
            (BindingSnapshot("c1", 260), BindingSnapshot("gone", 100)),
            (DialogSnapshot("d1", True, False, 200), DialogSnapshot("over", True, False, 99)),
        )
        self.machine.restore(snapshot)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(self.recorder.events(ALICE), [Event.ON_THE_PHONE])
        self.assertEqual(
            self.machine.snapshot(ALICE),
            UserSnapshot(ALICE, (BindingSnapshot("c1", 260),),
                         (DialogSnapshot("d1", True, False, 200),)),
        )
        self.assertEqual(self.changed, [ALICE])
        self.clock.advance(100)  # t=200: the dialog ends
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.clock.advance(64)  # t=264: the binding is in its 5 s grace
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restoredDialogCanEnd(self) -> None:
        """
        A restored dialog is ended by the same key, and can be held.
        """
        self.machine.restore(UserSnapshot(ALICE, (), (DialogSnapshot(("cid", "a", "b"), True,
                                                                      False, 1000),)))
        self.machine.dialogHeld(ALICE, ("cid", "a", "b"))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_HOLD)
        self.machine.dialogTerminated(ALICE, ("cid", "a", "b"))
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)

    def test_restoreUnderCurrentLimits(self) -> None:
        """
        A restored dialog ends at its saved time, but never later than the
        current watchdog or early lifetime from now.
        """
        self.machine.restore(UserSnapshot(ALICE, (), (
            DialogSnapshot("long", True, False, 100 + 10 * 3600),
            DialogSnapshot("ring", False, False, 100 + 1000),
        )))
        ends = {d.dialogId: d.expiresAt for d in self.machine.snapshot(ALICE).dialogs}
        self.assertEqual(ends, {"long": 100 + 3600, "ring": 100 + 180})

    def test_liveStateWins(self) -> None:
        """
        What the machine learned since it started beats the snapshot, and a
        dialog that just ended (tombstone) is not resurrected.
        """
        self.machine.bindingUpdated(ALICE, "c1", 600)
        self.machine.dialogConfirmed(ALICE, "d1")
        self.machine.dialogTerminated(ALICE, "d1")
        self.machine.restore(UserSnapshot(
            ALICE, (BindingSnapshot("c1", 120),), (DialogSnapshot("d1", True, False, 500),)
        ))
        self.assertEqual(self.machine.snapshot(ALICE),
                         UserSnapshot(ALICE, (BindingSnapshot("c1", 700),), ()))
        self.assertEqual(self.machine.stateOf(ALICE), S.ONLINE)

    def test_endedWhileRestoring(self) -> None:
        """
        Between beginRestore and endRestore, what ends before its snapshot
        is in (a BYE retransmitted across the restart, a de-registration, a
        publication removed) is left out of the restore; what else the
        snapshots hold comes back.
        """
        publication = ("dialog", "e1")
        self.machine.beginRestore()
        self.assertTrue(self.machine.restoring)
        self.machine.dialogTerminated(ALICE, "d1")
        self.machine.bindingRemoved(ALICE, "c2")
        self.machine.publicationRemoved(BOB, publication)
        self.machine.allBindingsRemoved(CAROL)
        self.assertEqual(self.machine.users(), {})
        alice = UserSnapshot(
            ALICE, (BindingSnapshot("c1", 500), BindingSnapshot("c2", 500)),
            (DialogSnapshot("d1", True, False, 500), DialogSnapshot("d2", True, True, 500)))
        bob = UserSnapshot(BOB, (BindingSnapshot("b1", 500),), publications=(PublicationSnapshot(
            publication, "e1", 500, (DialogReport("call", DialogPhase.CONFIRMED),)),))
        carol = UserSnapshot(CAROL, (BindingSnapshot("k1", 500), BindingSnapshot("k2", 500)))
        for snapshot in (alice, bob, carol):
            self.machine.restore(snapshot)
        self.machine.endRestore()
        self.assertFalse(self.machine.restoring)
        self.assertEqual(self.machine.snapshot(ALICE), UserSnapshot(
            ALICE, (BindingSnapshot("c1", 500),), (DialogSnapshot("d2", True, True, 500),)))
        self.assertEqual(self.machine.snapshot(BOB), UserSnapshot(BOB, (BindingSnapshot("b1", 500),)))
        self.assertEqual(self.machine.users(), {ALICE: S.ON_HOLD, BOB: S.ONLINE})
        # Once the window is closed, a restore (sipxmpp-admin's report)
        # takes everything again: the window was what left those out.
        self.machine.restore(alice)
        self.assertEqual(len(self.machine.snapshot(ALICE).dialogs), 2)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_restoreNothing(self) -> None:
        """
        A snapshot with only expired entries leaves no trace.
        """
        self.machine.restore(UserSnapshot(ALICE, (BindingSnapshot("c1", 50),), ()))
        self.assertEqual(self.machine.users(), {})
        self.assertEqual(self.recorder.changes, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RestartTests(SynchronousTestCase):
    """
    A gateway saves its state through the persister into SQLite, "crashes"
    (nothing flushed at stop), and a new one restores from the store.
    """

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        self.settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        self.store = self.track(initialiseStore(self.settings, owner="gw1"))

    def track(self, store: Store) -> Store:
        self.addCleanup(store.close)
        return store

    def start(
        self, seconds: float, watchdog: float = 3600
    ) -> tuple[Clock, TelephonyStateMachine, Recorder, RuntimeStatePersister, RestoreSummary]:
        clock, machine, recorder = machineAt(seconds, watchdog=watchdog)
        store = self.track(openStore(self.settings, owner="gw1"))
        persister = RuntimeStatePersister(store.runtime, clock, interval=0.5)
        summary = self.successResultOf(
            restoreRuntimeState(machine, store.runtime, persister, clock)
        )
        return clock, machine, recorder, persister, summary

    def test_restart(self) -> None:
        """
        After a restart 200 s later: Alice's long binding and her call are
        back; her short binding, Bob's unanswered call and Carol's
        registration expired meanwhile and are not.
        """
        clock, machine, _, persister, summary = self.start(T0)
        self.assertEqual(summary, RestoreSummary(0, 0, 0, 0))
        machine.bindingUpdated(ALICE, "desk", 3600)
        machine.bindingUpdated(ALICE, "mobile", 60)
        machine.dialogEarly(ALICE, ("call", "a", "b"))
        machine.dialogConfirmed(ALICE, ("call", "a", "b"))
        machine.dialogEarly(BOB, "ringing")
        machine.bindingUpdated(CAROL, "c", 30)
        saved = SavedStatus(ALICE, "alice@example.test/psi", "away", 5, "lunch", T0)
        persister.setSavedStatuses(ALICE, [saved])
        clock.advance(0)  # the persister writes; then the gateway dies

        clock2, machine2, recorder2, persister2, summary2 = self.start(T0 + 200)
        self.assertEqual(summary2, RestoreSummary(1, 1, 1, 1))
        self.assertEqual(machine2.users(), {ALICE: S.ON_THE_PHONE})
        self.assertEqual(machine2.stateOf(BOB), S.OFFLINE)
        self.assertEqual(machine2.stateOf(CAROL), S.OFFLINE)
        self.assertEqual(recorder2.events(ALICE), [Event.ON_THE_PHONE])
        self.assertEqual(
            machine2.snapshot(ALICE),
            UserSnapshot(ALICE, (BindingSnapshot("desk", T0 + 3600),),
                         (DialogSnapshot(("call", "a", "b"), True, False, T0 + 3600),)),
        )
        self.assertEqual(persister2.savedStatuses(ALICE), (saved,))
        self.assertEqual(persister2.aorsWithSavedStatuses(), [ALICE])
        # The call ends normally after the restart, and that is saved too.
        machine2.dialogTerminated(ALICE, ("call", "a", "b"))
        clock2.advance(1)
        _, machine3, _, _, _ = self.start(T0 + 300)
        self.assertEqual(machine3.users(), {ALICE: S.ONLINE})

    def test_publishedCallSurvives(self) -> None:
        """
        A call a PUBLISH reported is on after a restart, and the compositor
        is told the publication by its entity-tag; one without a tag (a
        subscription's) is not saved.
        """
        clock, machine, _, _, _ = self.start(T0)
        machine.publicationSet(BOB, ("dialog", "e0"), 600,
                               [DialogReport(("call", "1"), DialogPhase.CONFIRMED)], tag="e2")
        machine.publicationSet(CAROL, ("subscribe", 1), 600,
                               [DialogReport(("call", "2"), DialogPhase.CONFIRMED)])
        clock.advance(0)

        clock2, machine2, _ = machineAt(T0 + 100)
        store = self.track(openStore(self.settings, owner="gw1"))
        persister2 = RuntimeStatePersister(store.runtime, clock2, interval=0.5)
        told: list[tuple[object, ...]] = []
        summary = self.successResultOf(restoreRuntimeState(
            machine2, store.runtime, persister2, clock2,
            lambda *args: told.append(args) is None))
        self.assertEqual(summary.publications, 1)
        self.assertEqual(told, [(BOB, ("dialog", "e0"), "e2", T0 + 600)])
        self.assertEqual(machine2.users(), {BOB: S.ON_THE_PHONE})

    def test_restartShortensToWatchdog(self) -> None:
        """
        A gateway restarted with a shorter watchdog bounds a restored call
        by it and saves the shorter end, so a second restart cannot extend
        the call again.
        """
        clock, machine, _, _, _ = self.start(T0)
        machine.dialogConfirmed(ALICE, "d1")  # ends at T0 + 3600
        clock.advance(0)
        clock2, machine2, _, _, _ = self.start(T0 + 100, watchdog=600)
        self.assertEqual(machine2.snapshot(ALICE).dialogs[0].expiresAt, T0 + 700)
        clock2.advance(0)
        _, machine3, _, _, _ = self.start(T0 + 500, watchdog=600)
        self.assertEqual(machine3.snapshot(ALICE).dialogs[0].expiresAt, T0 + 700)
        _, machine4, _, _, _ = self.start(T0 + 701, watchdog=600)
        self.assertEqual(machine4.users(), {})


class StoreServiceOrderTests(SynchronousTestCase):
    """
    The store service restores in the reactor turn after it started, so
    sibling services (the publisher) are running when states are reported.
    """

    def test_restoreAfterStart(self) -> None:
        folder = os.path.abspath(self.mktemp())
        settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        store = initialiseStore(settings, owner="gw1")
        self.addCleanup(store.close)
        store.runtime.write([AoRChanges(ALICE, snapshot=UserSnapshot(
            ALICE, (BindingSnapshot("desk", T0 + 600),)))], T0)
        clock, machine, recorder = machineAt(T0)
        persister = RuntimeStatePersister(store.runtime, clock)
        service = StoreService(store, ThreadPool(0, 1), machine, persister, clock)
        service.startService()
        self.addCleanup(service.pool.stop)
        self.assertEqual(recorder.changes, [])
        clock.advance(0)
        self.assertEqual(recorder.events(ALICE), [Event.ONLINE])
        self.assertEqual(self.successResultOf(service.restored), RestoreSummary(1, 1, 0, 0))
        machine.allBindingsRemoved(ALICE)

    def heldStore(self) -> Store:
        folder = os.path.abspath(self.mktemp())
        settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        store = initialiseStore(settings, owner="gw1")
        self.addCleanup(store.close)
        return store

    def startHeld(self, store: Store, now: float) -> tuple[
            Clock, TelephonyStateMachine, Recorder, RuntimeStatePersister, StoreService,
            _HeldSnapshots]:
        """
        A store service started at C{now} on C{store}, whose snapshots
        arrive when the test releases them.
        """
        clock, machine, recorder = machineAt(now)
        persister = RuntimeStatePersister(store.runtime, clock, interval=0.5)
        service = StoreService(store, ThreadPool(0, 1), machine, persister, clock)
        held = _HeldSnapshots(store.runtime)
        service.store = _WithRuntime(store, held)  # type: ignore[assignment]
        service.startService()
        self.addCleanup(service.pool.stop)
        return clock, machine, recorder, persister, service, held

    def test_byeBeforeSnapshotsIn(self) -> None:
        """
        The store service opens the machine's restore window as it starts,
        before any SIP is read: a BYE of a saved call that arrives before
        the snapshots are in ends it, for this run and the next; the
        persister writes nothing until the restore is over.
        """
        call = ("call-17", "a", "b")
        store = self.heldStore()
        store.runtime.write([AoRChanges(ALICE, snapshot=UserSnapshot(
            ALICE, (BindingSnapshot("desk", T0 + 600),),
            (DialogSnapshot(call, True, False, T0 + 3600),)))], T0)
        clock, machine, recorder, persister, service, held = self.startHeld(store, T0 + 5)
        machine.dialogTerminated(ALICE, call)  # the BYE, retransmitted
        machine.bindingUpdated(BOB, "bob-desk", 600)  # a REGISTER
        clock.advance(0)  # the restore starts; the snapshots are read
        clock.advance(5)
        self.assertEqual(persister.writes, 0)
        held.release()
        self.assertEqual(self.successResultOf(service.restored), RestoreSummary(1, 1, 0, 0))
        self.assertEqual(machine.users(), {ALICE: S.ONLINE, BOB: S.ONLINE})
        self.assertEqual(recorder.events(ALICE), [Event.ONLINE])
        clock.advance(1)
        self.assertEqual(persister.writes, 1)
        [alice, bob] = self.successResultOf(store.runtime.loadSnapshots(T0 + 10))
        self.assertEqual((alice.aor, alice.dialogs), (ALICE, ()))
        self.assertEqual((bob.aor, len(bob.bindings)), (BOB, 1))

    def test_failedRestoreClosesWindow(self) -> None:
        """
        A store that cannot be read leaves the gateway with what it saw,
        writing again and no longer in its restore window.
        """
        clock, machine, _, persister, service, held = self.startHeld(self.heldStore(), T0)
        clock.advance(0)
        machine.bindingUpdated(BOB, "bob-desk", 600)
        with capturedLogs() as logs:
            held.fail()
        self.assertIsNone(self.successResultOf(service.restored))
        self.assertIn("cannot restore runtime state", " ".join(str(e) for e in logs))
        self.assertFalse(machine.restoring)
        clock.advance(1)
        self.assertEqual(persister.writes, 1)


class _HeldSnapshots:
    """
    A runtime state store whose snapshots arrive when the test says so.
    """

    def __init__(self, runtime: object) -> None:
        self._runtime = runtime
        self._waiting: list[tuple[Deferred[list[UserSnapshot]], float]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._runtime, name)

    def loadSnapshots(self, now: float) -> Deferred[list[UserSnapshot]]:
        d: Deferred[list[UserSnapshot]] = Deferred()
        self._waiting.append((d, now))
        return d

    def release(self) -> None:
        for d, now in self._waiting:
            self._runtime.loadSnapshots(now).chainDeferred(d)  # type: ignore[attr-defined]

    def fail(self) -> None:
        for d, _ in self._waiting:
            d.errback(StoreError("database is locked"))


class _WithRuntime:
    def __init__(self, store: Store, runtime: _HeldSnapshots) -> None:
        self._store = store
        self.runtime = runtime

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


US = Peer("UDP", "127.0.0.1", 5060)
UPSTREAM = Peer("UDP", "127.0.0.1", 5070)
PHONE = Peer("UDP", "127.0.0.1", 5080)
PHONE_B = Peer("UDP", "127.0.0.1", 5090)


class Gateway:
    """
    The SIP half of one gateway process on a L{Clock}: a proxy whose
    routes are restored from and saved to C{store}, as the store service
    does it at start. Discarding it without a flush is a SIGKILL.
    """

    def __init__(self, store: Store, now: float) -> None:
        self.clock = Clock()
        self.clock.advance(now)
        self.sent: list[tuple[bytes, Peer]] = []
        self.proxy = Proxy(
            self.clock,
            ProxySettings(local={"UDP": US}, upstream=UPSTREAM,
                          trustedNetworks=(ipaddress.ip_network("127.0.0.0/8"),)),
            lambda data, peer: self.sent.append((data, peer)),
            aorOf,
            Metrics(),
        )
        self.persister = RuntimeStatePersister(store.runtime, self.clock)
        self.restored = restorePhoneRoutes(self.proxy.routes, store.runtime, self.persister,
                                           self.clock)

    def take(self) -> list[tuple[SIPRequest | SIPResponse, Peer]]:
        sent, self.sent = self.sent, []
        return [(parseMessage(data), peer) for data, peer in sent
                if not data.startswith(b"SIP/2.0 100 ")]

    def register(self, user: str, phone: Peer, expires: int = 3600) -> None:
        request = registerLine(user, f"reg-{user}", phone)
        self.proxy.messageReceived(request, phone)
        [(forwarded, _)] = self.take()
        contact = forwarded.contacts[0].uriText
        self.proxy.messageReceived(answer(forwarded.toBytes(), 200,
                                          extra=f"Contact: <{contact}>;expires={expires}"),
                                   UPSTREAM)
        self.take()

    def fromUpstream(self, request: SIPRequest) -> tuple[SIPRequest | SIPResponse, Peer]:
        self.proxy.messageReceived(request, UPSTREAM)
        [sent] = self.take()
        return sent


class RoutesAcrossRestartTests(SynchronousTestCase):
    """
    Issue 16 item 1: after a restart, the registrar's requests to the
    phones (a new call, the far end's BYE) reach them without waiting for
    the phones to register again; what expired meanwhile stays gone.
    """

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        self.settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        initialiseStore(self.settings, owner="gw1").close()

    def open(self, owner: str = "gw1") -> Store:
        store = openStore(self.settings, owner=owner)
        self.addCleanup(store.close)
        return store

    def inboundCall(self, gateway: Gateway, user: str, callID: str) -> None:
        """
        A call from the registrar to C{user}'s registered contact, answered
        with a dialog contact of its own (another port: a dialog target).
        """
        request = invite(uri=f"sip:{user}@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                         branch=f"in-{callID}", extra="Route: <sip:127.0.0.1:5060;lr>")
        request.setHeader("Call-ID", callID)
        toPhone, peer = gateway.fromUpstream(request)
        self.assertEqual(peer, PHONE)
        gateway.proxy.messageReceived(answer(
            toPhone.toBytes(), 200, toTag="p1",
            extra=f"Contact: <sip:{user}-call@127.0.0.1:5080;transport=udp;ob>"), PHONE)
        self.assertEqual([p for _, p in gateway.take()], [UPSTREAM])

    def test_routingSurvivesKill(self) -> None:
        """
        A phone registered and in a call; the gateway dies without a
        flush, after its last periodic write. The new gateway forwards a
        new call to the phone's flow and the far end's BYE to the phone's
        dialog contact, where the old one answered 403 before.
        """
        store = self.open()
        first = Gateway(store, T0)
        self.assertEqual(first.restored, 0)
        first.register("alice", PHONE)
        self.inboundCall(first, "alice", "call-1")
        first.clock.advance(0.5)  # the persister's periodic write
        del first  # SIGKILL: nothing else is written

        second = Gateway(self.open(), T0 + 30)
        self.assertEqual(second.restored, 2)
        request = invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                         branch="after", extra="Route: <sip:127.0.0.1:5060;lr>")
        forwarded, peer = second.fromUpstream(request)
        self.assertEqual((forwarded.method, peer), ("INVITE", PHONE))  # type: ignore[union-attr]
        bye, peer = second.fromUpstream(
            byeFromUpstream("sip:alice-call@127.0.0.1:5080;transport=udp;ob", "call-1"))
        self.assertEqual((bye.method, peer), ("BYE", PHONE))  # type: ignore[union-attr]

    def test_withoutRestoreRefused(self) -> None:
        """
        The failure of the issue, for contrast: a gateway that forgot the
        routes answers the registrar's INVITE with 403.
        """
        gateway = Gateway(self.open(), T0)
        request = invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                         extra="Route: <sip:127.0.0.1:5060;lr>")
        response, peer = gateway.fromUpstream(request)
        self.assertEqual((response.code, peer), (403, UPSTREAM))  # type: ignore[union-attr]

    def test_expiredMeanwhileStaysGone(self) -> None:
        """
        A binding that expired while the gateway was down is not restored
        (nor counted); an unexpired one keeps its original expiry.
        """
        store = self.open()
        first = Gateway(store, T0)
        first.register("alice", PHONE, expires=60)
        first.register("bob", PHONE_B, expires=600)
        first.clock.advance(0.5)
        second = Gateway(self.open(), T0 + 120)
        self.assertEqual(second.restored, 1)
        registrations = second.proxy.routes.registrations
        [(_, binding)] = registrations.items()
        self.assertEqual((binding.aor, binding.flow, binding.expiresAt),
                         ("sip:bob@example.test", PHONE_B, T0 + 600))
        request = invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                         extra="Route: <sip:127.0.0.1:5060;lr>")
        response, _ = second.fromUpstream(request)
        self.assertEqual(response.code, 403)  # type: ignore[union-attr]
        second.clock.advance(481)
        self.assertEqual(len(registrations), 0)

    def test_restoredAnonymousCallerKnown(self) -> None:
        """
        A restored binding still names the user of the phone's address
        (item 6 across a restart).
        """
        first = Gateway(self.open(), T0)
        first.register("alice", PHONE)
        first.clock.advance(0.5)
        second = Gateway(self.open(), T0 + 10)
        self.assertEqual(second.proxy.routes.registrations.aorsFrom(PHONE), {ALICE})

    def test_deregistrationSaved(self) -> None:
        """
        A phone that de-registered before the restart is not routed to
        after it; changes after the restore are saved, the restore itself
        is not written back.
        """
        first = Gateway(self.open(), T0)
        first.register("alice", PHONE)
        first.clock.advance(0.5)
        first.proxy.routes.registrations.retain(ALICE, ())
        first.clock.advance(0.5)
        second = Gateway(self.open(), T0 + 10)
        self.assertEqual(second.restored, 0)
        second.register("alice", PHONE)
        self.assertEqual(second.persister.writes, 0)
        second.clock.advance(0)
        self.assertEqual(second.persister.writes, 1)

    def test_otherOwnersRoutesNotRestored(self) -> None:
        """
        Keyed by the C{[store] instance} owner: another gateway's phones
        are not routed to here.
        """
        first = Gateway(self.open(owner="gw1"), T0)
        first.register("alice", PHONE)
        first.clock.advance(0.5)
        other = Gateway(self.open(owner="gw2"), T0 + 10)
        self.assertEqual(other.restored, 0)

    def test_unreadableStoreStartsEmpty(self) -> None:
        """
        A store that cannot be read leaves the routes empty (logged), and
        their changes are still saved once it works again.
        """
        store = self.open()
        store.close()
        with capturedLogs() as logs:
            gateway = Gateway(store, T0)
        self.assertIsNone(gateway.restored)
        self.assertTrue(any("cannot restore the SIP routes" in str(e.get("log_format"))
                            for e in logs))
        self.assertEqual(self.flushLoggedErrors(), [])


class StoreServiceRoutesTests(SynchronousTestCase):
    """
    The store service restores the routes while it starts, before it
    returns (so before the reactor reads any SIP), and saves their changes.
    """

    def test_restoredBeforeStartReturns(self) -> None:
        folder = os.path.abspath(self.mktemp())
        settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        store = initialiseStore(settings, owner="gw1")
        self.addCleanup(store.close)
        key = ("alice", "127.0.0.1", 5080, "")
        binding = Binding(ALICE, "sip:alice@127.0.0.1:5080", PHONE, T0 + 600)
        store.runtime.write([], T0, [RouteRecord(REGISTRATION, key, binding)])
        clock, machine, _ = machineAt(T0)
        persister = RuntimeStatePersister(store.runtime, clock)
        service = StoreService(store, ThreadPool(0, 1), machine, persister, clock)
        routes = PhoneRoutes(clock, {"UDP": US}, "path")
        service.routes = routes
        service.startService()
        self.addCleanup(service.pool.stop)
        self.assertEqual(routes.registrations.items(), [(key, binding)])
        routes.registrations.remove(key)
        clock.advance(0)
        self.assertEqual(store.runtime.loadRoutesBlocking(T0), [])
