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
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.telephony.state import TelephonyStateMachine, UserSnapshot
from sipxmpp.xmpp.savedstatuses import SavedStatus

log = Logger()


@dataclass(frozen=True)
class RestoreSummary:
    """
    What a restore brought back.
    """

    users: int
    bindings: int
    dialogs: int
    savedStatuses: int


def restoreRuntimeState(
    machine: TelephonyStateMachine,
    store: IRuntimeStateStore,
    persister: RuntimeStatePersister,
    clock: IReactorTime,
) -> Deferred[RestoreSummary]:
    """
    Restore C{store}'s saved state into C{machine} and C{persister}; fire
    with a L{RestoreSummary} (or fail with the store's error, in which case
    the persister is still attached and the gateway starts empty).
    """
    persister.attach(machine)
    d = store.loadSavedStatuses()

    def gotStatuses(statuses: list[SavedStatus]) -> Deferred[RestoreSummary]:
        persister.loadSavedStatuses(statuses)

        def gotSnapshots(snapshots: list[UserSnapshot]) -> RestoreSummary:
            bindings = dialogs = 0
            for snapshot in snapshots:
                machine.restore(snapshot)
                restored = machine.snapshot(snapshot.aor)
                bindings += len(restored.bindings)
                dialogs += len(restored.dialogs)
            summary = RestoreSummary(len(snapshots), bindings, dialogs, len(statuses))
            log.info(
                "restored {bindings} binding(s) and {dialogs} dialog(s) of {users} user(s), "
                "{statuses} saved client status(es)",
                bindings=bindings, dialogs=dialogs, users=len(snapshots),
                statuses=len(statuses),
            )
            return summary

        return store.loadSnapshots(clock.seconds()).addCallback(gotSnapshots)

    return d.addCallback(gotStatuses)
