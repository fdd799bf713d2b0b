"""
Taking users over from another gateway sharing the store.

Several gateways share one store behind a dispatcher that sends each
user's publications to one of them. When one dies, its users'
publications go to another; the clients the dead one set to dnd would stay
dnd, their saved statuses being under the dead one's name. L{AoRTakeover}
listens to the publications this gateway accepts
(L{IPublicationListener}, told by the state machine for PUBLISH and for
the NOTIFYs of SUBSCRIBE mode) and, for a user the publisher does not
handle already, asks the store in its own thread to claim the user
(L{IRuntimeStateStore.claim}: rows belong to whoever claimed them last).
Whatever statuses it claimed go to the publisher, which logs the user in
and puts the client's status back once no call is left.

The SIP path never waits: the listener only starts the claim. Each AoR is
checked at most once per C{interval} seconds (and never while a claim of
it is under way), so a publisher's refreshes cost no queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sipxmpp.store.errors import StoreError
from sipxmpp.store.interfaces import IRuntimeStateStore
from sipxmpp.telephony.events import IPublicationListener
from sipxmpp.xmpp.savedstatuses import SavedStatus

# Seconds between two checks of one AoR.
CLAIM_INTERVAL = 60.0
# Past this many remembered checks, those older than the interval go.
_PRUNE_ABOVE = 1024


class Adopter(Protocol):
    """
    What a takeover hands the claimed statuses to: the XMPP publisher.
    """

    def handles(self, aor: str) -> bool:
        """
        Whether C{aor} is logged in here already (or being logged in).
        """

    def adoptSavedStatuses(self, aor: str, statuses: Sequence[SavedStatus]) -> None:
        """
        Keep C{statuses}, log the user in and put them back once no call is
        left.
        """


@implementer(IPublicationListener)
class AoRTakeover:
    """
    Claims, in C{store}, the users whose publications reach this gateway
    and hands what it claimed to C{adopter}.

    @ivar claims: how many claims moved statuses (for tests and operators).
    """

    log = Logger()

    def __init__(self, store: IRuntimeStateStore, adopter: Adopter, clock: IReactorTime,
                 interval: float = CLAIM_INTERVAL) -> None:  # fmt: skip
        self._store = store
        self._adopter = adopter
        self._clock = clock
        self.interval = interval
        self._checked: dict[str, float] = {}
        self._claiming: set[str] = set()
        self.claims = 0

    def publicationArrived(self, aor: str) -> None:
        try:
            self._arrived(aor)
        except Exception:
            self.log.failure("takeover: checking {aor} failed", aor=aor)

    def _arrived(self, aor: str) -> None:
        if aor in self._claiming or self._adopter.handles(aor):
            return
        now = self._clock.seconds()
        last = self._checked.get(aor)
        if last is not None and now - last < self.interval:
            return
        if len(self._checked) >= _PRUNE_ABOVE:
            self._checked = {a: t for a, t in self._checked.items()
                             if now - t < self.interval}  # fmt: skip
        self._checked[aor] = now
        self._claiming.add(aor)
        d = self._store.claim(aor)
        d.addCallbacks(lambda statuses: self._claimed(aor, statuses),
                       lambda failure: self._failed(aor, failure))  # fmt: skip
        d.addBoth(lambda _: self._claiming.discard(aor))

    def _claimed(self, aor: str, statuses: list[SavedStatus]) -> None:
        if not statuses:
            return
        self.claims += 1
        self.log.info("{aor}: took over {count} saved client status(es) from another gateway",
                      aor=aor, count=len(statuses))  # fmt: skip
        self._adopter.adoptSavedStatuses(aor, statuses)

    def _failed(self, aor: str, failure: Failure) -> None:
        reason = failure.getErrorMessage() if failure.check(StoreError) else repr(failure.value)
        self.log.error("{aor}: cannot check whether to take it over ({reason}); trying again "
                       "at a publication after {interval:g} s", aor=aor, reason=reason,
                       interval=self.interval)  # fmt: skip
