"""
Taking a user over from another gateway sharing the store: the claim in
SQLite (L{SQLRuntimeStateStore.claim}), the state machine's publication
listeners (the seam), and the trigger (L{AoRTakeover}) on a L{Clock}.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.store.errors import StoreUnavailable
from sipxmpp.store.opening import Store, StoreSettings, initialiseStore, openStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.store.records import AoRChanges, SessionRecord
from sipxmpp.store.restore import restoreRuntimeState
from sipxmpp.store.takeover import AoRTakeover
from sipxmpp.telephony.events import (
    DialogPhase,
    DialogReport,
    IPublicationListener,
    ITelephonyObserver,
    StateChange,
    TelephonyState,
)
from sipxmpp.telephony.snapshots import BindingSnapshot, DialogSnapshot, UserSnapshot
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.savedstatuses import SavedStatus

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
PSI = "alice@example.test/psi"
GAJIM = "alice@example.test/gajim"
T0 = 1_700_000_000.0


def status(aor: str, resource: str, text: str = "away", at: float = T0) -> SavedStatus:
    return SavedStatus(aor, resource, text, 5, "lunch", at)


class ClaimTests(SynchronousTestCase):
    """
    Two gateways, gw-a and gw-b, on one SQLite store.
    """

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        self.settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        self.track(initialiseStore(self.settings, owner="gw-a"))
        self.a = self.track(openStore(self.settings, owner="gw-a"))
        self.b = self.track(openStore(self.settings, owner="gw-b"))

    def track(self, store: Store) -> Store:
        self.addCleanup(store.close)
        return store

    def gwAWasOnACall(self) -> None:
        """
        gw-a saved Alice's and Bob's clients' statuses, Alice's call and
        session.
        """
        snapshot = UserSnapshot(ALICE, (BindingSnapshot("desk", T0 + 3600),),
                                (DialogSnapshot("call", True, False, T0 + 3600),))
        self.successResultOf(self.a.runtime.write([
            AoRChanges(ALICE, snapshot, (status(ALICE, PSI),),
                       SessionRecord(ALICE, "connected", "", T0)),
            AoRChanges(BOB, None, (status(BOB, "bob@example.test/psi"),), None),
        ], T0))

    def statusesOf(self, store: Store) -> list[SavedStatus]:
        return self.successResultOf(store.runtime.loadSavedStatuses())

    def test_claimMovesRows(self) -> None:
        """
        gw-b claims Alice: her saved status moves to gw-b; gw-a's dialog,
        binding and session of her are gone; Bob stays gw-a's.
        """
        self.gwAWasOnACall()
        claimed = self.successResultOf(self.b.runtime.claim(ALICE))
        self.assertEqual(claimed, [status(ALICE, PSI)])
        self.assertEqual(self.statusesOf(self.b), [status(ALICE, PSI)])
        self.assertEqual(self.statusesOf(self.a), [status(BOB, "bob@example.test/psi")])
        self.assertEqual(self.successResultOf(self.a.runtime.loadSnapshots(T0)), [])
        owners = {(r.owner, r.aor) for r in self.successResultOf(self.a.runtime.report(T0))}
        self.assertEqual(owners, {("gw-a", BOB), ("gw-b", ALICE)})

    def test_idempotent(self) -> None:
        """
        Claiming again finds nothing of another owner and changes nothing.
        """
        self.gwAWasOnACall()
        self.successResultOf(self.b.runtime.claim(ALICE))
        self.assertEqual(self.successResultOf(self.b.runtime.claim(ALICE)), [])
        self.assertEqual(self.statusesOf(self.b), [status(ALICE, PSI)])
        self.assertEqual(self.statusesOf(self.a), [status(BOB, "bob@example.test/psi")])

    def test_nothingToClaim(self) -> None:
        """
        Without another owner's saved status for the AoR nothing is
        claimed, not even the other's dialogs of it.
        """
        snapshot = UserSnapshot(ALICE, (), (DialogSnapshot("call", True, False, T0 + 3600),))
        self.successResultOf(self.a.runtime.write([AoRChanges(ALICE, snapshot)], T0))
        self.assertEqual(self.successResultOf(self.b.runtime.claim(ALICE)), [])
        self.assertEqual(self.successResultOf(self.a.runtime.loadSnapshots(T0)), [snapshot])

    def test_ownStatusWins(self) -> None:
        """
        Where the claiming owner saved a status of the same client itself,
        its own is kept; another client's status is moved.
        """
        self.successResultOf(self.a.runtime.write(
            [AoRChanges(ALICE, None, (status(ALICE, PSI, "xa"), status(ALICE, GAJIM)))], T0))
        mine = status(ALICE, PSI, "chat", T0 - 10)
        self.successResultOf(self.b.runtime.write([AoRChanges(ALICE, None, (mine,))], T0))
        self.assertEqual(self.successResultOf(self.b.runtime.claim(ALICE)),
                         [status(ALICE, GAJIM)])
        self.assertEqual(self.statusesOf(self.b), [status(ALICE, GAJIM), mine])
        self.assertEqual(self.statusesOf(self.a), [])

    def test_claimDropsOthersActivities(self) -> None:
        """
        gw-b claims Alice: gw-a's activity to retract of her is dropped
        (gw-b publishes hers now; gw-a retracting it after its restart
        would undo that), also when gw-a saved no client status of her;
        Bob's stays gw-a's.
        """
        self.successResultOf(self.a.runtime.write(
            [AoRChanges(ALICE, activity=True), AoRChanges(BOB, activity=True)], T0))
        self.assertEqual(self.successResultOf(self.a.runtime.loadPendingActivities()),
                         [ALICE, BOB])
        self.assertEqual(self.successResultOf(self.b.runtime.claim(ALICE)), [])
        self.assertEqual(self.successResultOf(self.a.runtime.loadPendingActivities()), [BOB])
        self.assertEqual(self.successResultOf(self.b.runtime.loadPendingActivities()), [])

    def test_activityWrittenAndCleared(self) -> None:
        self.successResultOf(self.a.runtime.write([AoRChanges(ALICE, activity=True)], T0))
        self.successResultOf(self.a.runtime.write([AoRChanges(ALICE, activity=True)], T0 + 1))
        self.assertEqual(self.successResultOf(self.a.runtime.loadPendingActivities()), [ALICE])
        self.successResultOf(self.a.runtime.write([AoRChanges(ALICE, activity=False)], T0 + 2))
        self.assertEqual(self.successResultOf(self.a.runtime.loadPendingActivities()), [])

    def test_activityRestored(self) -> None:
        """
        A restart brings back who may still show a call in their activity,
        for the publisher to retract.
        """
        self.successResultOf(self.a.runtime.write([AoRChanges(ALICE, activity=True)], T0))
        clock = Clock()
        clock.advance(T0 + 10)
        persister = RuntimeStatePersister(self.a.runtime, clock)
        summary = self.successResultOf(restoreRuntimeState(
            TelephonyStateMachine(clock), self.a.runtime, persister, clock))
        self.assertEqual(summary.activities, 1)
        self.assertEqual(persister.aorsWithPendingActivity(), [ALICE])

    def test_returningInstanceLeavesClaimedAlone(self) -> None:
        """
        gw-a comes back after gw-b claimed Alice: its restore finds only
        Bob's status and no call of Alice.
        """
        self.gwAWasOnACall()
        self.successResultOf(self.b.runtime.claim(ALICE))
        clock = Clock()
        clock.advance(T0 + 10)
        machine = TelephonyStateMachine(clock)
        persister = RuntimeStatePersister(self.a.runtime, clock)
        summary = self.successResultOf(restoreRuntimeState(machine, self.a.runtime, persister,
                                                           clock))
        self.assertEqual((summary.users, summary.dialogs, summary.savedStatuses), (0, 0, 1))
        self.assertEqual(persister.aorsWithSavedStatuses(), [BOB])
        self.assertEqual(machine.stateOf(ALICE), TelephonyState.OFFLINE)


@implementer(IPublicationListener, ITelephonyObserver)
class Order:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def publicationArrived(self, aor: str) -> None:
        self.seen.append(f"publication {aor}")

    def telephonyStateChanged(self, change: StateChange) -> None:
        self.seen.append(f"state {change.aor} {change.state.value}")


class PublicationListenerTests(SynchronousTestCase):
    """
    L{TelephonyStateMachine.addPublicationListener}: the seam.
    """

    def setUp(self) -> None:
        self.machine = TelephonyStateMachine(Clock())
        self.order = Order()
        self.machine.addObserver(self.order)
        self.machine.addPublicationListener(self.order)

    def test_toldBeforeApplied(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 60,
                                    [DialogReport("d", DialogPhase.CONFIRMED)])
        self.assertEqual(self.order.seen, [f"publication {ALICE}", f"state {ALICE} on-the-phone"])

    def test_terminatedOnlyIsTold(self) -> None:
        """
        A publication that only ends a dialog never known here (pua's
        fresh publication after a 412) is told too.
        """
        self.machine.publicationSet(ALICE, "p1", 10,
                                    [DialogReport("d", DialogPhase.TERMINATED)])
        self.assertEqual(self.order.seen[:1], [f"publication {ALICE}"])

    def test_removalNotTold(self) -> None:
        self.machine.publicationSet(ALICE, "p1", 60, [DialogReport("d", DialogPhase.CONFIRMED)])
        del self.order.seen[:]
        self.machine.publicationSet(ALICE, "p1", 0)
        self.assertEqual(self.order.seen, [f"state {ALICE} offline"])

    def test_failingListener(self) -> None:
        @implementer(IPublicationListener)
        class Broken:
            def publicationArrived(self, aor: str) -> None:
                raise RuntimeError("bug")

        machine = TelephonyStateMachine(Clock())
        machine.addPublicationListener(Broken())
        machine.addObserver(self.order)
        with capturedLogs() as events:
            machine.publicationSet(ALICE, "p1", 60, [DialogReport("d", DialogPhase.CONFIRMED)])
        self.assertEqual(self.order.seen, [f"state {ALICE} on-the-phone"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(events)


class FakeClaims:
    """
    The store's C{claim}: answers each with the next of C{answers}
    (statuses, C{"fail"} or C{"hold"}).
    """

    owner = "gw-b"

    def __init__(self) -> None:
        self.claimed: list[str] = []
        self.answers: list[object] = []
        self.held: list[Deferred[list[SavedStatus]]] = []

    def claim(self, aor: str) -> Deferred[list[SavedStatus]]:
        self.claimed.append(aor)
        answer = self.answers.pop(0) if self.answers else []
        if answer == "fail":
            return fail(StoreUnavailable("postgresql://gw@db/sipxmpp: connection refused"))
        if answer == "hold":
            d: Deferred[list[SavedStatus]] = Deferred()
            self.held.append(d)
            return d
        assert isinstance(answer, list)
        return succeed(answer)


class FakeAdopter:
    def __init__(self) -> None:
        self.handled: set[str] = set()
        self.adopted: list[tuple[str, list[SavedStatus]]] = []

    def handles(self, aor: str) -> bool:
        return aor in self.handled

    def adoptSavedStatuses(self, aor: str, statuses: Sequence[SavedStatus]) -> None:
        self.adopted.append((aor, list(statuses)))


class TriggerTests(SynchronousTestCase):
    """
    L{AoRTakeover}: when a publication makes it ask the store.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = FakeClaims()
        self.adopter = FakeAdopter()
        self.takeover = AoRTakeover(self.store, self.adopter, self.clock,  # type: ignore[arg-type]
                                    interval=60)  # fmt: skip

    def test_claimedHandedOver(self) -> None:
        self.store.answers = [[status(ALICE, PSI)]]
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [ALICE])
        self.assertEqual(self.adopter.adopted, [(ALICE, [status(ALICE, PSI)])])
        self.assertEqual(self.takeover.claims, 1)

    def test_nothingClaimed(self) -> None:
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [ALICE])
        self.assertEqual(self.adopter.adopted, [])

    def test_rateLimitedPerAoR(self) -> None:
        """
        At most one check per AoR per interval; other AoRs are not held up.
        """
        self.takeover.publicationArrived(ALICE)
        self.clock.advance(59)
        self.takeover.publicationArrived(ALICE)
        self.takeover.publicationArrived(BOB)
        self.assertEqual(self.store.claimed, [ALICE, BOB])
        self.clock.advance(1)
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [ALICE, BOB, ALICE])

    def test_notForHandled(self) -> None:
        """
        A user the publisher handles here already is not checked.
        """
        self.adopter.handled.add(ALICE)
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [])
        # Nor does that count as a check: once not handled, it is checked.
        self.adopter.handled.clear()
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [ALICE])

    def test_oneClaimAtATime(self) -> None:
        """
        While a claim is under way (a slow store), publications of that
        AoR start no other, whatever the time.
        """
        self.store.answers = ["hold"]
        self.takeover.publicationArrived(ALICE)
        self.clock.advance(120)
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [ALICE])
        self.store.held[0].callback([status(ALICE, PSI)])
        self.assertEqual(self.adopter.adopted, [(ALICE, [status(ALICE, PSI)])])
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.store.claimed, [ALICE, ALICE])

    def test_storeFailure(self) -> None:
        """
        A failed claim is logged; the AoR is checked again after the
        interval.
        """
        self.store.answers = ["fail"]
        with capturedLogs() as events:
            self.takeover.publicationArrived(ALICE)
        self.assertEqual(self.adopter.adopted, [])
        self.assertTrue(any("connection refused" in str(e.get("reason")) for e in events))
        self.clock.advance(60)
        self.store.answers = [[status(ALICE, PSI)]]
        self.takeover.publicationArrived(ALICE)
        self.assertEqual(len(self.adopter.adopted), 1)

    def test_endToEndOnSQLite(self) -> None:
        """
        Through a real machine and store: gw-b's first publication of Alice
        claims gw-a's saved status and hands it over; the next does not
        query again.
        """
        folder = os.path.abspath(self.mktemp())
        settings = StoreSettings(f"sqlite:///{folder}/db.sqlite", f"{folder}/key")
        a = initialiseStore(settings, owner="gw-a")
        self.addCleanup(a.close)
        b = openStore(settings, owner="gw-b")
        self.addCleanup(b.close)
        self.successResultOf(a.runtime.write([AoRChanges(ALICE, None, (status(ALICE, PSI),))],
                                             T0))
        machine = TelephonyStateMachine(self.clock)
        takeover = AoRTakeover(b.runtime, self.adopter, self.clock)
        machine.addPublicationListener(takeover)
        machine.publicationSet(ALICE, "p1", 10, [DialogReport("d", DialogPhase.TERMINATED)])
        self.assertEqual(self.adopter.adopted, [(ALICE, [status(ALICE, PSI)])])
        machine.publicationSet(ALICE, "p2", 10, [DialogReport("d", DialogPhase.TERMINATED)])
        self.assertEqual(takeover.claims, 1)
        self.assertEqual(self.successResultOf(b.runtime.loadSavedStatuses()),
                         [status(ALICE, PSI)])
