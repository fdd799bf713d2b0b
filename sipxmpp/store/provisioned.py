"""
Which AoRs are provisioned, kept in memory for the SIP path.

SIP never waits on the store: a PUBLISH for a user is answered at once, so
the answer to "is this AoR provisioned?" must be in memory. The set of
enabled accounts' AoRs is loaded when the service starts and reloaded every
C{interval} seconds, so an account added, removed, enabled or disabled with
C{sipxmpp-admin} counts within that time.

Listeners (L{ProvisionedAoRs.addListener}) are told the difference after
each load that changed the set: SUBSCRIBE mode subscribes for the AoRs
added and unsubscribes the ones removed.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipxmpp.store.interfaces import IAccountStore


class ProvisionedAoRs(service.Service):
    """
    The enabled accounts' AoRs, reloaded from the store in the background.

    Until the first load has finished nothing counts as provisioned; a
    failed reload keeps the set from the last one that worked.
    """

    log = Logger()

    def __init__(self, accounts: IAccountStore, clock: IReactorTime,
                 interval: float = 5.0) -> None:  # fmt: skip
        self._accounts = accounts
        self._aors: frozenset[str] = frozenset()
        self._loop = LoopingCall(self.reload)
        self._loop.clock = clock
        self.interval = interval
        self._failing = False
        self._listeners: list[Callable[[frozenset[str], frozenset[str]], None]] = []

    def addListener(self, listener: Callable[[frozenset[str], frozenset[str]], None]) -> None:
        """
        Call C{listener(added, removed)} after every load that changes the
        set (the first load adds all); told at once of the AoRs already
        loaded, if any.
        """
        self._listeners.append(listener)
        if self._aors:
            listener(self._aors, frozenset())

    @property
    def aors(self) -> frozenset[str]:
        """
        The provisioned AoRs as last loaded.
        """
        return self._aors

    def __contains__(self, aor: object) -> bool:
        return aor in self._aors

    def __len__(self) -> int:
        return len(self._aors)

    def isProvisioned(self, aor: str) -> bool:
        """
        Is C{aor} (normalised) the AoR of an enabled account?
        """
        return aor in self._aors

    def reload(self) -> Deferred[None]:
        """
        Read the set again; fires once it is in use.
        """
        return self._accounts.enabledAoRs().addCallbacks(self._loaded, self._failed)

    def _loaded(self, aors: frozenset[str]) -> None:
        if self._failing:
            self.log.info("provisioned accounts readable again ({n})", n=len(aors))
            self._failing = False
        previous, self._aors = self._aors, frozenset(aors)
        added, removed = self._aors - previous, previous - self._aors
        if added or removed:
            for listener in list(self._listeners):
                try:
                    listener(added, removed)
                except Exception:
                    self.log.failure("a listener of the provisioned AoRs failed")

    def _failed(self, reason: Failure) -> None:
        if not self._failing:
            self.log.error("cannot read the provisioned accounts, keeping the last {n}: {e}",
                           n=len(self._aors), e=reason.getErrorMessage())  # fmt: skip
        self._failing = True

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
