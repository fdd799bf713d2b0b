"""
The store as a twistd service: its thread pool, the restore at start and
the last write at stop.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from sipxmpp.presence.state import TelephonyStateMachine
from sipxmpp.store.errors import StoreError
from sipxmpp.store.opening import Store
from sipxmpp.store.persister import RuntimeStatePersister
from sipxmpp.store.restore import RestoreSummary, restoreRuntimeState


class StoreService(Service):
    """
    Runs the store's thread pool; at start restores the runtime state into
    C{machine}, at stop writes what is pending and closes the store.

    @ivar restored: fires with the L{RestoreSummary} (or L{None} if the
        restore failed, which is logged and leaves the gateway empty).
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

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        d = restoreRuntimeState(self.machine, self.store.runtime, self.persister, self.clock)

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
        d = self.persister.stop()

        def close(result: Any) -> Any:
            self.pool.stop()
            self.store.close()
            return result

        return d.addBoth(close)
