"""
Pacing the gateway's own SIP requests (SUBSCRIBE mode, PIDF PUBLISH):
a bounded rate and number unanswered, and a jittered backoff after
failures, so that thousands of users never go out at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

T = TypeVar("T")


def backoffDelay(failures: int, base: float, cap: float, jitter: Callable[[], float]) -> float:
    """
    The delay before attempt C{failures + 1}: C{base} doubling per failure
    up to C{cap}, scaled by C{0.5 + jitter() / 2} so that many users that
    failed together do not retry together.
    """
    delay: float = min(cap, base * 2 ** min(max(failures - 1, 0), 30))
    return delay * (0.5 + jitter() / 2)


class Pacer(Generic[T]):
    """
    Starts queued items at most C{perSecond} a second, and only while
    fewer than C{maxInFlight} of the owner's requests are unanswered.

    @param inFlight: the owner's count of unanswered requests.
    @param start: sends what C{item} needs now; returns whether it sent a
        request (one that counts towards the rate).
    @ivar running: items are started only while it is set (L{resume},
        L{stop}); the queue is kept until then.
    """

    def __init__(self, clock: IReactorTime, maxInFlight: int, perSecond: int,
                 inFlight: Callable[[], int], start: Callable[[T], bool]) -> None:  # fmt: skip
        self._clock = clock
        self.maxInFlight = maxInFlight
        self.perSecond = perSecond
        self._inFlight = inFlight
        self._start = start
        self._queue: deque[T] = deque()
        self._sent: deque[float] = deque()
        self._timer: IDelayedCall | None = None
        self.running = False

    def add(self, item: T) -> None:
        """
        Queue C{item} and start what may be started now.
        """
        self._queue.append(item)
        self.pump()

    def resume(self) -> None:
        """
        Start (or start again) sending the queue.
        """
        self.running = True
        self.pump()

    def stop(self) -> None:
        """
        Stop sending and forget the queue.
        """
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._queue.clear()

    def pump(self) -> None:
        """
        Start queued items as far as the rate and the requests in flight
        allow; come back when the rate allows more.
        """
        self._timer = None
        if not self.running:
            return
        now = self._clock.seconds()
        while self._sent and self._sent[0] <= now - 1.0:
            self._sent.popleft()
        while self._queue and self._inFlight() < self.maxInFlight:
            if len(self._sent) >= self.perSecond:
                self._timer = self._clock.callLater(max(0.0, self._sent[0] + 1.0 - now),
                                                    self.pump)  # fmt: skip
                return
            if self._start(self._queue.popleft()):
                self._sent.append(now)

    def answered(self) -> None:
        """
        One of the owner's requests was answered: pump again soon (not from
        within the answer's own processing).
        """
        if self._timer is None and self._queue and self.running:
            self._timer = self._clock.callLater(0, self.pump)
