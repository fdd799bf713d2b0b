"""
Saving runtime state as it changes, at a bounded rate.

The state machine calls L{RuntimeStatePersister.aorChanged} after every
change of an AoR's bindings or dialogs; the publisher calls
L{RuntimeStatePersister.setSavedStatuses} and
L{RuntimeStatePersister.sessionStateChanged}; the proxy's routes back to
the phones (L{RuntimeStatePersister.attachRoutes}) report each binding and
dialog target that changes. Changes are coalesced per AoR (and per route): whatever happens to an AoR between two writes costs one row set in the
next write, and writes start at most once per C{interval} seconds, one at a
time -- except the end of any call (a user's dialogs fewer than before),
which starts a write at once (or right after the one in progress): a
gateway killed within the interval would otherwise restore the call, which
nothing would end again, and show the user on the phone until the dialog
watchdog. That holds for a call that ends while another of the user's
goes on as much as for the last one. The snapshot of an AoR is taken when
the write starts, so it is always the latest. A failed write is logged and retried (the changes stay
pending, newer ones merged in) after C{retryInterval}, doubling up to
C{maxRetryInterval}; the SIP path never waits for the database.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.sip.core.registrations import ContactKey, Registrations
from sipxmpp.store.errors import StoreError
from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.store.records import (
    DIALOG_TARGET,
    REGISTRATION,
    AoRChanges,
    RouteRecord,
    SessionRecord,
)
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.savedstatuses import ISavedStatuses, SavedStatus


@dataclass
class _Pending:
    snapshot: bool = False
    statuses: tuple[SavedStatus, ...] | None = None
    session: SessionRecord | None = None
    activity: bool | None = None

    def mergeOlder(self, older: _Pending) -> None:
        # After a failed write: keep what changed since, fill in the rest.
        self.snapshot = self.snapshot or older.snapshot
        if self.statuses is None:
            self.statuses = older.statuses
        if self.session is None:
            self.session = older.session
        if self.activity is None:
            self.activity = older.activity


@implementer(ISavedStatuses)
class RuntimeStatePersister:
    """
    Writes the changes of one gateway's runtime state to C{store}.

    @param interval: minimum seconds between the starts of two writes.
    @param retryInterval: first delay after a failed write.
    @param maxRetryInterval: upper bound of the delay after failures.
    """

    log = Logger()

    def __init__(
        self,
        store: IRuntimeStateStore,
        clock: IReactorTime,
        interval: float = 0.5,
        retryInterval: float = 1.0,
        maxRetryInterval: float = 60.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.interval = interval
        self.retryInterval = retryInterval
        self.maxRetryInterval = maxRetryInterval
        self._machine: TelephonyStateMachine | None = None
        self._pending: dict[str, _Pending] = {}
        self._routeTables: dict[str, Registrations] = {}
        self._pendingRoutes: set[tuple[str, ContactKey]] = set()
        self._statuses: dict[str, tuple[SavedStatus, ...]] = {}
        self._activities: set[str] = set()
        self._timer: IDelayedCall | None = None
        self._writing: Deferred[None] | None = None
        self._lastStart = float("-inf")
        # How many dialogs each AoR in a call had at its last change, and
        # whether a call's end waits to be written.
        self._dialogs: dict[str, int] = {}
        self._urgent = False
        self._failures = 0
        self._retryDelay = 0.0
        self._stopped = False
        # While the saved state is being read back: a write now would
        # replace an AoR's saved rows with what little is known so far.
        self._held = False
        self.writes = 0

    # --- sources of changes ---

    def attach(self, machine: TelephonyStateMachine) -> None:
        """
        Save the bindings and dialogs of C{machine} as they change.
        """
        self._machine = machine
        machine.setPersistenceCallback(self.aorChanged)

    def hold(self) -> None:
        """
        Write nothing until L{release} (changes keep coming and are kept):
        the saved state is being restored.
        """
        self._held = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        """
        Write again: what changed meanwhile goes in the next write.
        """
        self._held = False
        self._schedule()

    def aorChanged(self, aor: str) -> None:
        """
        The bindings or dialogs of C{aor} changed (the state machine's
        persistence callback).
        """
        self._entry(aor).snapshot = True
        if self._machine is not None:
            count = self._machine.dialogCount(aor)
            if count < self._dialogs.get(aor, 0):
                self._urgent = True
            if count:
                self._dialogs[aor] = count
            else:
                self._dialogs.pop(aor, None)
        self._schedule()

    def attachRoutes(self, routes: PhoneRoutes) -> None:
        """
        Save the proxy's bindings and dialog targets as they change (each
        as it is when the write starts; what merely expires is pruned by
        the store).
        """
        for kind, table in ((REGISTRATION, routes.registrations),
                            (DIALOG_TARGET, routes.dialogTargets)):
            self._routeTables[kind] = table
            table.onChange = functools.partial(self.routeChanged, kind)

    def routeChanged(self, kind: str, key: ContactKey) -> None:
        """
        The route of C{kind} under C{key} was added, refreshed or removed.
        """
        self._pendingRoutes.add((kind, key))
        self._schedule()

    def loadSavedStatuses(self, statuses: Sequence[SavedStatus]) -> None:
        """
        Take the saved statuses read from the store at start.
        """
        grouped: dict[str, list[SavedStatus]] = {}
        for status in statuses:
            grouped.setdefault(status.aor, []).append(status)
        self._statuses = {aor: tuple(items) for aor, items in grouped.items()}

    def loadPendingActivities(self, aors: Sequence[str]) -> None:
        """
        Take the AoRs with an activity to retract read from the store at
        start.
        """
        self._activities = set(aors)

    # --- ISavedStatuses ---

    def savedStatuses(self, aor: str) -> tuple[SavedStatus, ...]:
        return self._statuses.get(aor, ())

    def aorsWithSavedStatuses(self) -> list[str]:
        return sorted(self._statuses)

    def setSavedStatuses(self, aor: str, statuses: Sequence[SavedStatus]) -> None:
        value = tuple(statuses)
        if value:
            self._statuses[aor] = value
        else:
            self._statuses.pop(aor, None)
        self._entry(aor).statuses = value
        self._schedule()

    def sessionStateChanged(self, aor: str, state: str, detail: str = "") -> None:
        self._entry(aor).session = SessionRecord(aor, state, detail, self._clock.seconds())
        self._schedule()

    def setActivityPending(self, aor: str, pending: bool) -> None:
        if pending == (aor in self._activities):
            return  # a row per call, not per publish
        if pending:
            self._activities.add(aor)
        else:
            self._activities.discard(aor)
        self._entry(aor).activity = pending
        self._schedule()

    def aorsWithPendingActivity(self) -> list[str]:
        return sorted(self._activities)

    # --- writing ---

    def _entry(self, aor: str) -> _Pending:
        entry = self._pending.get(aor)
        if entry is None:
            entry = self._pending[aor] = _Pending()
        return entry

    def _schedule(self, delay: float | None = None) -> None:
        if self._stopped or self._held or self._writing is not None:
            return
        if not self._pending and not self._pendingRoutes:
            return
        if self._urgent and delay is None and not self._failures:
            delay = 0.0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._timer is not None:
            return
        if delay is None:
            delay = max(0.0, self._lastStart + self.interval - self._clock.seconds())
        self._timer = self._clock.callLater(delay, self._flushFromTimer)

    def _flushFromTimer(self) -> None:
        self._timer = None
        self._write()

    def _changes(self, pending: dict[str, _Pending]) -> list[AoRChanges]:
        changes = []
        for aor, entry in pending.items():
            snapshot = None
            if entry.snapshot and self._machine is not None:
                snapshot = self._machine.snapshot(aor)
            changes.append(AoRChanges(aor, snapshot, entry.statuses, entry.session,
                                      entry.activity))
        return changes

    def _routes(self, keys: set[tuple[str, ContactKey]]) -> list[RouteRecord]:
        return [RouteRecord(kind, key, self._routeTables[kind].get(key))
                for kind, key in sorted(keys)]

    def _write(self) -> Deferred[None]:
        pending, self._pending = self._pending, {}
        routes, self._pendingRoutes = self._pendingRoutes, set()
        self._urgent = False
        now = self._clock.seconds()
        self._lastStart = now
        self.writes += 1
        if routes:
            d = self._store.write(self._changes(pending), now, self._routes(routes))
        else:
            d = self._store.write(self._changes(pending), now)
        self._writing = d

        def written(_: None) -> None:
            self._failures = 0

        def failed(failure: Failure) -> None:
            self._failures += 1
            # Retried after the backoff, urgent or not: the store is failing.
            for aor, older in pending.items():
                self._entry(aor).mergeOlder(older)
            self._pendingRoutes |= routes
            delay = min(
                self.retryInterval * 2 ** (self._failures - 1), self.maxRetryInterval
            )
            reason = (
                failure.getErrorMessage() if failure.check(StoreError) else repr(failure.value)
            )
            self.log.error(
                "saving runtime state of {count} user(s) and {routes} SIP route(s) failed "
                "({reason}); retrying in {delay:.1f} s",
                count=len(pending), routes=len(routes), reason=reason, delay=delay,
            )
            self._retryDelay = delay

        def done(_: None) -> None:
            self._writing = None
            if self._failures:
                self._schedule(self._retryDelay)
            else:
                self._schedule()

        d.addCallbacks(written, failed)
        d.addCallback(done)
        return d

    def flush(self) -> Deferred[None]:
        """
        Write what is pending now (after a write in progress), ignoring the
        rate bound; fire when it is written (or failed, which is logged).
        While held nothing is written: the saved state stays as it was.
        """
        if self._held:
            if self._pending or self._pendingRoutes:
                self.log.info("not writing: the saved state is still being read back, and "
                              "the changes since the start are not written before it is")
            return succeed(None)
        if self._writing is not None:
            waiting: Deferred[None] = Deferred()

            def finished(result: object) -> object:
                waiting.callback(None)
                return result

            self._writing.addBoth(finished)
            return waiting.addCallback(lambda _: self.flush())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending and not self._pendingRoutes:
            return succeed(None)
        return self._write()

    def stop(self) -> Deferred[None]:
        """
        Write what is pending and stop scheduling writes (at shutdown).
        """
        d = self.flush()

        def stopped(_: None) -> None:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        return d.addCallback(stopped)
