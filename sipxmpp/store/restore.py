"""
Bringing a gateway's runtime state back after a restart.

L{restoreRuntimeState} reads what this gateway saved, hands the saved
client statuses to the persister (where the publisher finds them through
L{ISavedStatuses}), attaches the persister to the state machine, and then
restores every AoR's bindings and dialogs into the machine: what expired
while the gateway was down is left out, restored dialogs are bounded again
by the current watchdog, and the machine reports the resulting states to
its observers (so add the publisher as an observer first). Because the
persister is attached before the restore, the restored (possibly
shortened) lifetimes are written back, and a second restart cannot extend
them. SIP is served while the store is read: what ends meanwhile (a BYE
retransmitted across the restart) stays ended, since the machine's
restore window (L{TelephonyStateMachine.beginRestore}, begun by the store
service before any SIP is read) is closed only once every snapshot is in;
until then the persister writes nothing, so it cannot replace a saved
snapshot with what little is known so far.

L{adoptPreviousName} comes first, for a gateway named after its host (the
default) with an SQLite store, which only it uses: if the host name
changed (a new container) and the store holds the state of exactly one
other name and none of this one, that state is renamed to this one and
restored. A shared (PostgreSQL) store is left alone: there the other name
may be a live instance; its users are taken over at their first
publication instead (L{sipxmpp.store.takeover}).

L{restorePhoneRoutes} brings back the proxy's routes to the phones (their
bindings with the flows they came from, and their dialog targets), each
with the time it expires: it blocks, and runs when the store service
starts, before the reactor reads any SIP, so the first request the
registrar routes to a phone after a restart finds its route.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.store.errors import StoreError
from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.store.records import REGISTRATION, RouteRecord
from sipxmpp.store.runtimestate import SQLRuntimeStateStore
from sipxmpp.telephony.snapshots import UserSnapshot
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.savedstatuses import SavedStatus

log = Logger()

#: Tells a publication's source of it after a restart: C{(aor, key, tag,
#: expiresAt)}, returns whether it took it.
RestorePublication = Callable[[str, Hashable, str, float], bool]


@dataclass(frozen=True)
class RestoreSummary:
    """
    What a restore brought back.
    """

    users: int
    bindings: int
    dialogs: int
    savedStatuses: int
    activities: int = 0
    publications: int = 0


def beginRestore(machine: TelephonyStateMachine, persister: RuntimeStatePersister) -> None:
    """
    Open C{machine}'s restore window and attach C{persister} to it, holding
    its writes: from now on changes are kept, and what ends is remembered,
    until L{restoreRuntimeState} has put the saved state back. Call it
    before any event can reach the machine (the store service does, as it
    starts).
    """
    machine.beginRestore()
    persister.attach(machine)
    persister.hold()


def restoreRuntimeState(
    machine: TelephonyStateMachine,
    store: IRuntimeStateStore,
    persister: RuntimeStatePersister,
    clock: IReactorTime,
    publications: RestorePublication | None = None,
) -> Deferred[RestoreSummary]:
    """
    Restore C{store}'s saved state into C{machine} and C{persister} (after
    L{beginRestore}, which it calls if nobody did); fire
    with a L{RestoreSummary} (or fail with the store's error, in which case
    the persister is still attached and the gateway starts empty).

    @param publications: called with C{(aor, key, tag, expiresAt)} for each
        publication restored into C{machine}, so that its source (the
        PUBLISH compositor) knows it by its entity-tag again.
    """
    if not machine.restoring:
        beginRestore(machine, persister)
    d = store.loadSavedStatuses()

    def gotStatuses(statuses: list[SavedStatus]) -> Deferred[RestoreSummary]:
        persister.loadSavedStatuses(statuses)

        def gotActivities(aors: list[str]) -> Deferred[RestoreSummary]:
            persister.loadPendingActivities(aors)
            return store.loadSnapshots(clock.seconds()).addCallback(gotSnapshots, aors)

        def gotSnapshots(snapshots: list[UserSnapshot], aors: list[str]) -> RestoreSummary:
            bindings = dialogs = 0
            published = 0
            for snapshot in snapshots:
                machine.restore(snapshot)
                restored = machine.snapshot(snapshot.aor)
                bindings += len(restored.bindings)
                dialogs += len(restored.dialogs)
                saved = {p.publication for p in snapshot.publications}
                for p in restored.publications:
                    if p.publication in saved and publications is not None:
                        if publications(snapshot.aor, p.publication, p.tag, p.expiresAt):
                            published += 1
            summary = RestoreSummary(len(snapshots), bindings, dialogs, len(statuses), len(aors),
                                     published)  # fmt: skip
            log.info(
                "restored {bindings} binding(s), {dialogs} dialog(s) and {publications} "
                "publication(s) of {users} user(s), {statuses} saved client status(es), "
                "{activities} user activity(-ies) to retract",
                bindings=bindings, dialogs=dialogs, publications=published,
                users=len(snapshots), statuses=len(statuses), activities=len(aors),
            )
            return summary

        return store.loadPendingActivities().addCallback(gotActivities)

    def finished(result: object) -> object:
        # Also after a failure: the gateway then goes on from what it saw.
        machine.endRestore()
        persister.release()
        return result

    return d.addCallback(gotStatuses).addBoth(finished)


def restorePhoneRoutes(
    routes: PhoneRoutes,
    store: SQLRuntimeStateStore,
    persister: RuntimeStatePersister,
    clock: IReactorTime,
) -> int | None:
    """
    Restore the routes C{store} saved into C{routes} (blocking), then have
    C{persister} save their changes from now on. What expired while the
    gateway was down stays gone. Return how many were restored, or L{None}
    if the store could not be read (logged: the phones are reached again
    once they register again).
    """
    try:
        saved = store.loadRoutesBlocking(clock.seconds())
    except StoreError as e:
        log.error("cannot restore the SIP routes to the phones ({reason}); phones are "
                  "reached again once they register again", reason=str(e))
        saved = None
    if saved is not None:
        applyRoutes(routes, saved)
    persister.attachRoutes(routes)
    if saved is None:
        return None
    registered = sum(1 for r in saved if r.kind == REGISTRATION)
    log.info("restored {bindings} SIP binding(s) and {targets} dialog target(s) of the phones",
             bindings=registered, targets=len(saved) - registered)
    return len(saved)


def adoptPreviousName(store: SQLRuntimeStateStore) -> str | None:
    """
    At the start of a gateway with a store of its own (SQLite) and the
    default name (the host name): take the state saved under its previous
    name if the host name changed (a new container), so that the restore
    finds it (blocking, before L{restorePhoneRoutes}). Return that name.
    """
    try:
        previous, owners = store.adoptPreviousNameBlocking()
    except StoreError as e:
        log.error("cannot check the store for state saved under another name ({reason})",
                  reason=str(e))
        return None
    if previous is not None:
        log.warn("the store holds runtime state of {previous!r} and none of {owner!r} (the "
                 "host name): taking it over; set [store] instance to keep one name",
                 previous=previous, owner=store.owner)
    elif store.owner not in owners and owners:
        log.warn("the store holds runtime state of {owners} and none of {owner!r} (the host "
                 "name); not restored: set [store] instance to the name to restore",
                 owners=", ".join(repr(o) for o in owners), owner=store.owner)
    return previous


def applyRoutes(routes: PhoneRoutes, saved: list[RouteRecord]) -> None:
    """
    Put C{saved} routes into C{routes} (without reporting them as changes).
    """
    for record in saved:
        if record.binding is None:
            continue
        table = routes.registrations if record.kind == REGISTRATION else routes.dialogTargets
        table.restore(record.key, record.binding)
