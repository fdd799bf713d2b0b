"""
The store as a twistd service: its thread pool, the restore at start and
the last write at stop.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.store.errors import StoreError
from sipxmpp.store.opening import Store, StoreSettings, openStore
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.store.restore import (
    RestorePublication,
    RestoreSummary,
    adoptPreviousName,
    beginRestore,
    restorePhoneRoutes,
    restoreRuntimeState,
)
from sipxmpp.store.runners import threadPoolRunner
from sipxmpp.telephony.state import TelephonyStateMachine


class StoreService(Service):
    """
    Runs the store's thread pool; once started (in the next reactor turn,
    after its sibling services started) restores the runtime state into
    C{machine}; at stop writes what is pending and closes the store.

    Add it to the gateway's L{MultiService} I{before} the publisher: it
    then starts first (queries queue until the pool runs) and stops last,
    so what the publisher saves while stopping is still written.

    @ivar restored: fires with the L{RestoreSummary} (or L{None} if the
        restore failed, which is logged and leaves the gateway empty).
    @ivar routes: the proxy's routes to the phones, if set before the
        service starts: restored when it starts (blocking, before the
        reactor reads any SIP) and saved as they change.
    @ivar publications: tells the PUBLISH compositor of each publication
        restored (L{restoreRuntimeState}), if set before the restore.
    @ivar adoptPreviousName: at start, first take over the state saved
        under a previous host name (L{adoptPreviousName}; a gateway with
        the default name and a store of its own).
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        pool: ThreadPool,
        machine: TelephonyStateMachine,
        persister: RuntimeStatePersister,
        clock: IReactorTime,
    ) -> None:
        self.store = store
        self.pool = pool
        self.machine = machine
        self.persister = persister
        self.clock = clock
        self.restored: Deferred[RestoreSummary | None] = Deferred()
        self._restoreCall: IDelayedCall | None = None
        self.routes: PhoneRoutes | None = None
        self.publications: RestorePublication | None = None
        self.adoptPreviousName = False

    def startService(self) -> None:
        super().startService()
        if self.adoptPreviousName:
            adoptPreviousName(self.store.runtime)
        # SIP is served from the start, and the snapshots are read after:
        # the machine remembers what ends before they are in, and the
        # persister keeps the changes without writing until then.
        beginRestore(self.machine, self.persister)
        if self.routes is not None:
            # Before SIP is handled: startService runs before the reactor
            # reads from any port, and this blocks until the routes are in.
            restorePhoneRoutes(self.routes, self.store.runtime, self.persister, self.clock)
        self.pool.start()
        # Restore once every sibling service has started (the publisher
        # must be running when the machine reports the restored states).
        self._restoreCall = self.clock.callLater(0, self._restore)

    def _restore(self) -> None:
        self._restoreCall = None
        d = restoreRuntimeState(self.machine, self.store.runtime, self.persister, self.clock,
                                self.publications)  # fmt: skip

        def failed(failure: Failure) -> None:
            reason = (
                failure.getErrorMessage() if failure.check(StoreError) else repr(failure.value)
            )
            self.log.error("cannot restore runtime state ({reason}); starting empty",
                           reason=reason)
            return None

        d.addErrback(failed)
        d.chainDeferred(self.restored)  # type: ignore[arg-type]

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._restoreCall is not None:
            self._restoreCall.cancel()
            self._restoreCall = None
        d = self.persister.stop()

        def close(result: Any) -> Any:
            self.pool.stop()
            self.store.close()
            return result

        return d.addBoth(close)


def makeStoreService(
    settings: StoreSettings,
    reactor: Any,
    machine: TelephonyStateMachine,
    owner: str | None = None,
    interval: float = 0.5,
) -> StoreService:
    """
    Open the store of C{[store]} (blocking: call it while composing the
    services, before the reactor runs) and wrap it in a L{StoreService}
    with its own one-thread pool and a persister writing at most every
    C{interval} seconds.

    @param reactor: provides L{IReactorTime} and L{IReactorFromThreads}.
    @param owner: this gateway's name in the runtime state tables
        (default: the host name, and state saved under an earlier host
        name in an SQLite store is taken over).
    @raise sipxmpp.store.errors.StoreError: with a one-line reason.
    """
    pool = ThreadPool(minthreads=1, maxthreads=1, name="sipxmpp-store")
    fromThreads: IReactorFromThreads = reactor
    store = openStore(settings, threadPoolRunner(fromThreads, pool), owner=owner)
    persister = RuntimeStatePersister(store.runtime, reactor, interval=interval)
    service = StoreService(store, pool, machine, persister, reactor)
    # Only this gateway writes an SQLite store: a state under another name
    # is its own, saved under an earlier host name.
    service.adoptPreviousName = owner is None and store.database.backend.name == "sqlite"
    return service
