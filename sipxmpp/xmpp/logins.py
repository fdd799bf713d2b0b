"""
The gateway's login queue: L{LoginPacer}.

Every session's connect waits its turn here: first come first served, at
most C{concurrency} logins in flight, started at most C{rate} per second.
After a restart of the gateway or of the XMPP server the early users are
online within seconds instead of every user waiting for the whole storm,
and the server's accept queue never overflows.

A server that refuses connections (restarting, down) is I{held}: its
logins stay queued, in order, and only one of them at a time probes it,
at most one per C{probeInterval}. Without the hold every session's
attempt failed in turn and backed off (up to C{reconnectMaxDelay}), so
after a server restart most sessions were still sleeping long after the
server was back, while the queue's places went to attempts bound to fail.
Once a connect succeeds, the queue drains at the full rate, oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import count

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

# Seconds between probes of a held server.
PROBE_INTERVAL = 1.0

_Waiter = tuple[int, Deferred[Callable[[], None]]]


class LoginPacer:
    """
    A first-come-first-served queue of logins: at most C{concurrency} in
    flight, started at most C{rate} per second (0: as fast as places
    free), per server held while it refuses connections.

    L{acquire} returns a L{Deferred} that fires, in order, with a function
    to call once the login is over (logged in, failed or dropped); calling
    it more than once is harmless. Cancelling the L{Deferred} leaves the
    queue. The session tells L{serverDown} and L{serverUp} what its TCP
    connect found.
    """

    def __init__(self, clock: IReactorTime, concurrency: int, rate: float,
                 probeInterval: float = PROBE_INTERVAL) -> None:  # fmt: skip
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.clock = clock
        self.concurrency = concurrency
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.probeInterval = probeInterval
        self.inFlight = 0
        self._order = count()
        self._queues: dict[str, deque[_Waiter]] = {}
        self._nextStart = 0.0
        self._wakeUp: IDelayedCall | None = None
        # A held server -> when its next probe may start; servers whose
        # probe is in flight; when each server was last found up.
        self._held: dict[str, float] = {}
        self._probing: set[str] = set()
        self._upAt: dict[str, float] = {}

    @property
    def waiting(self) -> int:
        """
        Logins in the queue.
        """
        return sum(len(queue) for queue in self._queues.values())

    def held(self, server: str = "") -> bool:
        """
        Whether logins to C{server} wait for a probe to find it up.
        """
        return server in self._held

    def acquire(self, server: str = "") -> Deferred[Callable[[], None]]:
        """
        Queue a login to C{server} (any string naming where it connects).
        """
        queue = self._queues.get(server)
        if queue is None:
            queue = self._queues[server] = deque()

        def cancel(d: Deferred[Callable[[], None]]) -> None:
            queue.remove(entry)

        d: Deferred[Callable[[], None]] = Deferred(cancel)
        entry = (next(self._order), d)
        queue.append(entry)
        self._pump()
        return d

    def serverDown(self, server: str, startedAt: float) -> None:
        """
        A connect to C{server} started at C{startedAt} failed: hold its
        logins, unless a connect succeeded after this one started.
        """
        if startedAt < self._upAt.get(server, float("-inf")):
            return
        if server not in self._held:
            self._held[server] = self.clock.seconds() + self.probeInterval

    def serverUp(self, server: str) -> None:
        """
        A connect to C{server} succeeded: release its logins.
        """
        self._upAt[server] = self.clock.seconds()
        if self._held.pop(server, None) is not None:
            self._pump()

    def _next(self, now: float) -> tuple[str, deque[_Waiter]] | None:
        """
        The server whose login waited longest among those that may start
        one now (held servers only for a probe).
        """
        best: tuple[str, deque[_Waiter]] | None = None
        for server, queue in self._queues.items():
            if not queue:
                continue
            probeAt = self._held.get(server)
            if probeAt is not None and (server in self._probing or now < probeAt):
                continue
            if best is None or queue[0][0] < best[1][0][0]:
                best = (server, queue)
        return best

    def _pump(self) -> None:
        while self.inFlight < self.concurrency and self.waiting:
            now = self.clock.seconds()
            if now < self._nextStart:
                self._schedule(self._nextStart - now)
                return
            chosen = self._next(now)
            if chosen is None:
                # Only held servers' logins wait: wake for the next probe.
                due = [at for server, at in self._held.items()
                       if server not in self._probing and self._queues.get(server)]
                if due:
                    self._schedule(min(due) - now)
                return
            server, queue = chosen
            probe = server in self._held
            if probe:
                self._probing.add(server)
                self._held[server] = now + self.probeInterval
            self._nextStart = max(now, self._nextStart) + self.interval
            self.inFlight += 1
            _, d = queue.popleft()
            d.callback(self._releaser(server if probe else None))

    def _schedule(self, delay: float) -> None:
        if self._wakeUp is None:
            self._wakeUp = self.clock.callLater(delay, self._woken)
        elif self._wakeUp.getTime() > self.clock.seconds() + delay:
            self._wakeUp.reset(delay)

    def _woken(self) -> None:
        self._wakeUp = None
        self._pump()

    def _releaser(self, probed: str | None) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.inFlight -= 1
                if probed is not None:
                    self._probing.discard(probed)
                self._pump()

        return release
