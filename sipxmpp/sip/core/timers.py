"""
Cheap one-shot timers for the SIP transactions, multiplexed onto one
reactor timer.

Every call through the proxy arms a couple of dozen RFC 3261 timers and
cancels almost all of them. Twisted's L{DelayedCall} costs several
microseconds per C{callLater} + C{cancel} with tens of thousands pending:
its heap orders calls through a Python-level C{__lt__}, and every call,
cancelled or not, is eventually popped through the whole depth of that
heap.

L{TimerQueue} holds at most one L{DelayedCall} on the underlying clock,
armed for its earliest call or bucket, and keeps its own calls in two
places:

    - a heap of C{(when, sequence, call)} tuples, which compare in C, for
      the calls due within the current second;
    - for later calls, one list per whole second ("bucket"), appended to
      in constant time and moved into the heap when that second starts.
      Most long timers (Timer C, 181 s; B, F and H, 32 s) are cancelled
      while still in their bucket and never touch the heap, which stays
      small enough to be cheap to pop from.

Cancelling only marks the call; its entry is dropped when its bucket is
moved or when it is popped from the heap, or earlier by a rebuild when
dead entries outnumber live ones, so memory stays bounded.

Semantics, where they could differ from the reactor's:

    - calls due at the same time run in the order they were scheduled (or
      last moved by C{reset}/C{delay});
    - a call scheduled (or moved) by a callback runs in a later pass even
      if it is already due, as with the reactor, whose C{runUntilCurrent}
      only takes up calls made before it started; so a callback that keeps
      rescheduling itself with no delay cannot starve the reactor;
    - an exception from a callback is logged and the other callbacks still
      run; a C{BaseException} that is not an C{Exception} goes on to the
      reactor (which logs it) and the rest run in the next pass;
    - the underlying call may also go off at the start of a second that
      has a bucket, with nothing due: at most one extra wake a second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from heapq import heapify, heappop, heappush
from itertools import chain, count
from types import MappingProxyType
from typing import Any

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

# Dead entries tolerated before a rebuild may drop them; a rebuild happens
# once they also outnumber the live calls (more than half of all entries).
COMPACT_MINIMUM = 1024

_NO_KW: Mapping[str, object] = MappingProxyType({})

_Entry = tuple[float, int, "TimerCall"]


@implementer(IDelayedCall)
class TimerCall:
    """
    One call scheduled on a L{TimerQueue}.

    @ivar called: whether it has run (or started to).
    @ivar cancelled: whether it was cancelled.
    """

    __slots__ = ("_queue", "_time", "_sequence", "_func", "_args", "_kw", "called", "cancelled")

    def __init__(
        self,
        queue: TimerQueue,
        when: float,
        sequence: int,
        func: Callable[..., object],
        args: tuple[object, ...],
        kw: Mapping[str, object],
    ) -> None:
        self._queue = queue
        self._time = when
        # The sequence number of this call's live entry; any other entry
        # naming this call is dead. -1 once called or cancelled.
        self._sequence = sequence
        self._func: Callable[..., object] | None = func
        self._args = args
        self._kw = kw
        self.called = False
        self.cancelled = False

    def getTime(self) -> float:
        """
        The clock time at which this call runs (or was to run).
        """
        return self._time

    def cancel(self) -> None:
        """
        Unschedule this call.

        @raise AlreadyCancelled: if it was cancelled.
        @raise AlreadyCalled: if it has run.
        """
        if self._sequence < 0:
            self._check()
        self.cancelled = True
        self._sequence = -1
        # Whoever still holds a cancelled call must not keep its callable
        # and arguments (often a transaction and its messages) alive.
        self._func = None
        self._args = ()
        self._kw = _NO_KW
        # The common case of TimerQueue._dropped, inlined: the hot path.
        queue = self._queue
        queue._live -= 1
        queue._dead += 1
        if not queue._firing and (
            queue._live == 0 or queue._dead > queue._compactMinimum and queue._dead > queue._live
        ):
            queue._dropped()

    def delay(self, secondsLater: float) -> None:
        """
        Run this call C{secondsLater} after its current time.

        @raise AlreadyCancelled: if it was cancelled.
        @raise AlreadyCalled: if it has run.
        """
        self._check()
        self._queue._move(self, self._time + secondsLater)

    def reset(self, secondsFromNow: float) -> None:
        """
        Run this call C{secondsFromNow} after the current time.

        @raise AlreadyCancelled: if it was cancelled.
        @raise AlreadyCalled: if it has run.
        """
        self._check()
        self._queue._move(self, self._queue.seconds() + secondsFromNow)

    def active(self) -> bool:
        """
        Whether this call is still to run.
        """
        return self._sequence >= 0

    def _check(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()

    def __repr__(self) -> str:
        if self.cancelled:
            state = "cancelled"
        elif self.called:
            state = "called"
        else:
            state = f"func={self._func!r}"
        return f"<TimerCall at {self._time:.6f} {state}>"


@implementer(IReactorTime)
class TimerQueue:
    """
    L{IReactorTime} on top of another one (the reactor, or a L{Clock} in
    tests), with cheap C{callLater} and C{cancel}: see the module docstring.

    @param clock: tells the time and runs the one underlying timer.
    @param compactMinimum: how many dead entries are tolerated before they
        may be dropped all at once.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, compactMinimum: int = COMPACT_MINIMUM) -> None:
        self._clock = clock
        self._compactMinimum = compactMinimum
        self._heap: list[_Entry] = []
        # Whole second -> entries due in it, for seconds not yet started
        # when the entries were made; and a heap of those seconds.
        self._buckets: dict[int, list[_Entry]] = {}
        self._starts: list[int] = []
        # Orders entries due at the same time; also tells the calls made
        # during a pass from those made before it.
        self._sequence = count()
        # Calls neither called nor cancelled, and entries (in the heap,
        # buckets or _later) whose call was cancelled or moved.
        self._live = 0
        self._dead = 0
        # The underlying call, always active when not None, and the time
        # it was armed for.
        self._armed: IDelayedCall | None = None
        self._armedAt = 0.0
        # While running due calls: nothing re-arms or rebuilds, and due
        # calls made during the pass wait in _later.
        self._firing = False
        self._later: list[_Entry] = []
        # The clock's own method, not the wrapper below: transactions read
        # the time on every timer they start, and a Python frame costs more
        # than the reactor's time.time (or a test Clock's one frame).
        self.seconds = clock.seconds  # type: ignore[method-assign]

    # IReactorTime

    def seconds(self) -> float:
        """
        The underlying clock's time.
        """
        return self._clock.seconds()

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        """
        Call C{callable(*args, **kw)} C{delay} seconds from now.
        """
        assert delay >= 0, f"{delay} is not greater than or equal to 0 seconds"
        now = self._clock.seconds()
        when = now + delay
        sequence = next(self._sequence)
        call = TimerCall(self, when, sequence, callable, args, kw or _NO_KW)
        self._live += 1
        # The common case of _insert, inlined: this is the hot path.
        start = int(when)
        if now < start <= when:
            bucket = self._buckets.get(start)
            if bucket is not None:
                bucket.append((when, sequence, call))
                return call
        self._insert((when, sequence, call), now)
        return call

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        """
        The calls still to run, in no particular order.
        """
        entries = chain(self._heap, self._later, *self._buckets.values())
        return [entry[2] for entry in entries if entry[2]._sequence == entry[1]]

    # Internals

    def _insert(self, entry: _Entry, now: float) -> None:
        when = entry[0]
        start = int(when)
        # A bucket only for a second that has not started (it is moved into
        # the heap when it starts, before any of its entries is due).
        if now < start <= when:
            bucket = self._buckets.get(start)
            if bucket is not None:
                bucket.append(entry)
                return
            self._buckets[start] = [entry]
            heappush(self._starts, start)
            when = start
        else:
            heappush(self._heap, entry)
        if (self._armed is None or when < self._armedAt) and not self._firing:
            self._arm(when)

    def _move(self, call: TimerCall, when: float) -> None:
        # A new entry; the old one is dead because its sequence no longer
        # matches the call's.
        sequence = next(self._sequence)
        call._time = when
        call._sequence = sequence
        self._dead += 1
        self._insert((when, sequence, call), self._clock.seconds())
        if not self._firing:
            self._maybeCompact()

    def _dropped(self) -> None:
        # After a cancellation outside a pass that left nothing live or
        # too many dead entries.
        if self._live == 0:
            self._clear()
        else:
            self._maybeCompact()

    def _clear(self) -> None:
        # Nothing left to run: no underlying timer either (a stopped
        # gateway leaves no pending reactor call behind).
        self._heap.clear()
        self._buckets.clear()
        self._starts.clear()
        self._dead = 0
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None

    def _maybeCompact(self) -> None:
        dead = self._dead
        if dead > self._compactMinimum and dead > self._live:
            self._compact()

    def _compact(self) -> None:
        heap = [entry for entry in self._heap if entry[2]._sequence == entry[1]]
        heapify(heap)
        self._heap = heap
        buckets: dict[int, list[_Entry]] = {}
        for start, bucket in self._buckets.items():
            bucket = [entry for entry in bucket if entry[2]._sequence == entry[1]]
            if bucket:
                buckets[start] = bucket
        self._buckets = buckets
        self._starts = list(buckets)
        heapify(self._starts)
        self._dead = 0
        # The armed time may now be earlier than needed; it goes off and
        # re-arms, as after any cancellation of the earliest call.

    def _arm(self, when: float) -> None:
        if self._armed is not None:
            # Cancel and call again rather than reset: the reactor's reset
            # to an earlier time searches its whole heap.
            self._armed.cancel()
        self._armed = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._fire)
        self._armedAt = when

    def _fire(self) -> None:
        # Due means due by the clock, as for the reactor's own calls. (The
        # underlying call's time, now + (when - now), can round one ulp
        # below when; the pass then finds nothing and re-arms.)
        now = self._clock.seconds()
        self._armed = None
        self._firing = True
        heap = self._heap
        later = self._later
        try:
            starts = self._starts
            while starts and starts[0] <= now:
                for entry in self._buckets.pop(heappop(starts)):
                    if entry[2]._sequence == entry[1]:
                        heappush(heap, entry)
                    else:
                        self._dead -= 1
            end = next(self._sequence)
            while heap and heap[0][0] <= now:
                entry = heappop(heap)
                call = entry[2]
                if call._sequence != entry[1]:
                    self._dead -= 1
                    continue
                if entry[1] > end:
                    later.append(entry)
                    continue
                func = call._func
                args = call._args
                kw = call._kw
                call.called = True
                call._sequence = -1
                # As in cancel: a finished call holds nothing.
                call._func = None
                call._args = ()
                call._kw = _NO_KW
                self._live -= 1
                assert func is not None
                try:
                    func(*args, **kw)
                except Exception:
                    self.log.failure("Unhandled error in timed call {func!r}", func=func)
        finally:
            self._firing = False
            for entry in later:
                heappush(heap, entry)
            later.clear()
            self._settle()

    def _settle(self) -> None:
        # After a pass: drop what is dead at the top, then re-arm for the
        # earliest of the heap and the buckets.
        if self._live == 0:
            self._clear()
            return
        self._maybeCompact()
        heap = self._heap
        while heap and heap[0][2]._sequence != heap[0][1]:
            heappop(heap)
            self._dead -= 1
        if heap and (not self._starts or heap[0][0] < self._starts[0]):
            self._arm(heap[0][0])
        else:
            self._arm(self._starts[0])
