"""
The channel between a SIP worker process and the main process: one JSON
object per frame (a 32-bit length prefix), over a UNIX socket.

From worker to main::

   {"hello": {"index": 0, "pid": 1234}}        once, first
   {"events": [["dialogEarly", aor, key, true], ...]}
                                                the telephony events of one
                                                reactor turn, in order
   {"report": {"counters": [[name, {labels}, delta], ...],
               "gauges": {name: value}, "help": {name: text},
               "dropped": n}}                   every second

SIP never waits on the main process: the worker's L{Uplink} writes without
expecting an answer, and while the main process does not read (its
socket buffer and Twisted's are full: the transport pauses the uplink, a
push producer), events wait in a bounded list; beyond L{Uplink.limit} they
are dropped and counted. Nothing goes from the main process to a worker:
it stops a worker with SIGTERM.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from sipxmpp.sip.core.metrics import IMetrics

#: Events kept while the main process does not read; more are dropped.
DEFAULT_LIMIT = 100_000

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    """
    One frame's payload.
    """
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


class FrameProtocol(Int32StringReceiver):
    """
    Length-prefixed JSON objects; each decoded one goes to C{received}.
    """

    log = Logger()
    # A batch of events of one busy reactor turn may be large.
    MAX_LENGTH = 64 * 2**20

    def __init__(self, received: Callable[[Message], None]) -> None:
        self.received = received

    def send(self, message: Message) -> None:
        self.sendString(encode(message))

    def stringReceived(self, string: bytes) -> None:
        try:
            message = json.loads(string)
        except ValueError:
            self.log.warn("undecodable frame of {size} bytes on the worker channel; dropped",
                          size=len(string))
            return
        if isinstance(message, dict):
            self.received(message)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.error("frame of {length} bytes on the worker channel; closing it",
                       length=length)
        super().lengthLimitExceeded(length)


@implementer(IPushProducer)
class Uplink:
    """
    A worker's side: batches telephony events per reactor turn and sends
    them, never blocking; bounded while the main process does not read.

    @ivar dropped: events dropped since the start (the main process was
        gone or did not read).
    """

    def __init__(self, clock: IReactorTime, limit: int = DEFAULT_LIMIT) -> None:
        self._clock = clock
        self.limit = limit
        self.dropped = 0
        self._events: list[list[Any]] = []
        self._flushing: Any = None
        self._protocol: FrameProtocol | None = None
        self._paused = False

    def attach(self, protocol: FrameProtocol) -> None:
        """
        The channel is connected: send what waited, and be paused by it.
        """
        self._protocol = protocol
        transport: Any = protocol.transport
        transport.registerProducer(self, True)
        self._schedule()

    def detach(self) -> None:
        """
        The channel is gone: events from now on are dropped.
        """
        self._protocol = None

    def send(self, message: Message) -> bool:
        """
        Send a message now if the channel takes it; C{False} if not.
        """
        if self._protocol is None or self._paused:
            return False
        self._protocol.send(message)
        return True

    def event(self, name: str, *args: Any) -> None:
        """
        Queue one telephony event for the main process.
        """
        if len(self._events) >= self.limit:
            self.dropped += 1
            return
        self._events.append([name, *args])
        self._schedule()

    def _schedule(self) -> None:
        if self._flushing is None and self._events:
            self._flushing = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushing = None
        if self._events and self.send({"events": self._events}):
            self._events = []

    # IPushProducer: the transport's buffer is full, or has drained.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.detach()


class RemoteTelephony:
    """
    The telephony state machine as a worker's observer sees it
    (L{sipxmpp.sip.core.observer.TelephonyEvents}): each call becomes an
    event for the machine in the main process.
    """

    def __init__(self, uplink: Uplink) -> None:
        self._uplink = uplink

    def bindingUpdated(self, aor: str, contact: Hashable, expires: float) -> None:
        self._uplink.event("bindingUpdated", aor, contact, expires)

    def bindingRemoved(self, aor: str, contact: Hashable) -> None:
        self._uplink.event("bindingRemoved", aor, contact)

    def dialogEarly(self, aor: str, dialogId: Hashable, outgoing: bool = False) -> None:
        self._uplink.event("dialogEarly", aor, dialogId, outgoing)

    def dialogConfirmed(self, aor: str, dialogId: Hashable, sessionExpires: float | None = None,
                        awaitAck: bool = False) -> None:
        self._uplink.event("dialogConfirmed", aor, dialogId, sessionExpires, awaitAck)

    def dialogAcknowledged(self, aor: str, dialogId: Hashable) -> None:
        self._uplink.event("dialogAcknowledged", aor, dialogId)

    def dialogRefreshed(self, aor: str, dialogId: Hashable,
                        sessionExpires: float | None = None) -> None:
        self._uplink.event("dialogRefreshed", aor, dialogId, sessionExpires)

    def dialogHeld(self, aor: str, dialogId: Hashable) -> None:
        self._uplink.event("dialogHeld", aor, dialogId)

    def dialogActive(self, aor: str, dialogId: Hashable,
                     sessionExpires: float | None = None) -> None:
        self._uplink.event("dialogActive", aor, dialogId, sessionExpires)

    def dialogTerminated(self, aor: str, dialogId: Hashable) -> None:
        self._uplink.event("dialogTerminated", aor, dialogId)


@implementer(IMetrics)
class WorkerMetrics:
    """
    A worker's L{sipxmpp.sip.core.metrics.IMetrics}: counters are kept as
    what changed since the last L{report}, gauges are sampled for it; the
    main process adds them to its own registry.
    """

    def __init__(self) -> None:
        self._deltas: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._help: dict[str, str] = {}
        self._helpSent: set[str] = set()

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def increment(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self._deltas[key] = self._deltas.get(key, 0) + amount

    def gauge(self, name: str, sample: Callable[[], float], text: str = "") -> None:
        self._gauges[name] = sample
        if text:
            self._help[name] = text

    def report(self, dropped: int) -> Message:
        """
        The counters' changes since the last report, the gauges now, the
        help texts not sent yet; the deltas start again from zero.
        """
        deltas, self._deltas = self._deltas, {}
        newHelp = {n: t for n, t in self._help.items() if n not in self._helpSent}
        self._helpSent.update(newHelp)
        return {"report": {
            "counters": [[name, dict(labels), delta] for (name, labels), delta in deltas.items()],
            "gauges": {name: float(sample()) for name, sample in self._gauges.items()},
            "help": newHelp,
            "dropped": dropped,
        }}

    def unsent(self, report: Message) -> None:
        """
        C{report} could not be sent: its counter changes go into the next.
        """
        for name, labels, delta in report["report"]["counters"]:
            self.increment(name, delta, **labels)
        self._helpSent.difference_update(report["report"]["help"])
