"""
The main process's side of the SIP workers (C{[sip] workers} above 1).

L{WorkerSupervisor} spawns one process per worker (L{sipxmpp.processes.worker}),
listens on a UNIX socket for their channels (L{sipxmpp.processes.channel}),
applies their telephony events to the one L{TelephonyStateMachine} (so a
user with two phones on two workers aggregates as in one process), adds
their counters and gauges to the gateway's metrics, and restarts a worker
that ends, after a backoff that doubles while it keeps ending young.

The routes to the phones go through it too (L{sipxmpp.processes.routes}):
it keeps them all (C{routes}, which the store saves and restores) and
gives each change to the other workers, and all of them to a worker that
connects.

A worker that dies takes its transactions with it: the calls still
ringing that it reported will hear of no answer, and the supervisor ends
them (the user is not left ringing until the early dialogs' lifetime).
Answered calls go on: their in-dialog requests reach the worker started
again, or another, which has the routes to the phones.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipxmpp.processes.channel import FrameProtocol, Message
from sipxmpp.processes.routes import Route, apply, everyRoute
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine

_DIALOG_EVENTS = frozenset({"dialogEarly", "dialogConfirmed", "dialogAcknowledged",
                            "dialogRefreshed", "dialogHeld", "dialogActive", "dialogTerminated"})
_EVENTS = _DIALOG_EVENTS | {"bindingUpdated", "bindingRemoved", "route"}
#: Gauges whose gateway-wide value is the highest worker's, not the sum.
HIGHEST_GAUGES = frozenset({"sipxmpp_reactor_lag_seconds", "sipxmpp_sip_receive_backlog_ratio"})
#: Seconds between two sweeps of the calls remembered per worker.
SWEEP_INTERVAL = 60.0
#: Seconds a worker waits after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT = 10.0

Spawn = Callable[[ProcessProtocol, Sequence[str]], Any]


@dataclass
class Worker:
    """
    One worker process as the supervisor sees it.

    @ivar quickDeaths: how many times in a row it ended younger than
        C{stableAfter}: the backoff doubles with each.
    """

    index: int
    process: Any = None
    pid: int | None = None
    channel: FrameProtocol | None = None
    startedAt: float = 0.0
    quickDeaths: int = 0
    restarts: int = 0
    dropped: int = 0
    gauges: dict[str, float] = field(default_factory=dict)
    #: Check name -> (passed, detail), as last reported.
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    restart: IDelayedCall | None = None
    ended: Deferred[None] | None = None

    @property
    def connected(self) -> bool:
        return self.process is not None and self.channel is not None


class WorkerSupervisor(Service):
    """
    Spawns, watches and restarts C{count} SIP workers.

    @param command: the argument list that starts worker C{index} with the
        channel at C{path}: C{command(index, path)}.
    @param spawn: C{spawn(processProtocol, args)} starts a process (the
        reactor's C{spawnProcess} by default; a fake in tests).
    """

    log = Logger()

    def __init__(self, reactor: Any, count: int, command: Callable[[int, str], Sequence[str]],
                 machine: TelephonyStateMachine, metrics: IMetrics, spawn: Spawn | None = None,
                 minDelay: float = 0.5, maxDelay: float = 30.0,
                 stableAfter: float = 10.0) -> None:
        self._reactor = reactor
        self._command = command
        self.machine = machine
        self.metrics = metrics
        self._spawn = spawn or self._spawnProcess
        self.minDelay = minDelay
        self.maxDelay = maxDelay
        self.stableAfter = stableAfter
        self.workers = [Worker(i) for i in range(count)]
        #: Every worker's routes to the phones.
        self.routes = PhoneRoutes(reactor, {}, "path")
        # The calls still ringing each worker reported, to end when it
        # dies: (aor, dialog) -> worker index.
        self._calls: dict[tuple[str, Any], int] = {}
        self._directory: str | None = None
        self._listening: Any = None
        self._sweep: IDelayedCall | None = None
        self._gaugeNames: set[str] = set()
        metrics.gauge("sipxmpp_workers_connected", lambda: sum(w.connected for w in self.workers),
                      "SIP worker processes running and connected to the main process.")
        metrics.describe("sipxmpp_workers_restarts_total",
                         "SIP worker processes that ended and were started again.")
        metrics.describe("sipxmpp_workers_events_dropped_total",
                         "Telephony events workers dropped: the main process did not read.")

    @property
    def channelPath(self) -> str:
        assert self._directory is not None
        return os.path.join(self._directory, "channel")

    # --- life cycle ---

    def startService(self) -> None:
        super().startService()
        self._directory = tempfile.mkdtemp(prefix="sipxmpp-workers-")
        self._listening = self._reactor.listenUNIX(self.channelPath, _ChannelFactory(self),
                                                   mode=0o600)
        for worker in self.workers:
            self._start(worker)
        self._sweep = self._reactor.callLater(SWEEP_INTERVAL, self._sweepCalls)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        waiting = []
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            if worker.process is not None:
                worker.ended = Deferred()
                waiting.append(worker.ended)
                self._signal(worker, signal.SIGTERM)
                kill = self._reactor.callLater(STOP_TIMEOUT, self._signal, worker,
                                               signal.SIGKILL)
                worker.ended.addBoth(_cancel, kill)

        def cleanUp(_: object) -> None:
            if self._listening is not None:
                self._listening.stopListening()
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)

        return gatherResults(waiting).addBoth(cleanUp)

    def _signal(self, worker: Worker, number: int) -> None:
        if worker.process is not None:
            try:
                worker.process.signalProcess(number)
            except Exception:  # already gone: processEnded follows
                pass

    def _spawnProcess(self, protocol: ProcessProtocol, args: Sequence[str]) -> Any:
        return self._reactor.spawnProcess(protocol, args[0], list(args), env=os.environ,
                                          childFDs={0: "w", 1: "r", 2: "r"})

    def _start(self, worker: Worker) -> None:
        worker.restart = None
        worker.startedAt = self._reactor.seconds()
        worker.process = self._spawn(_WorkerProcess(self, worker),
                                     self._command(worker.index, self.channelPath))
        worker.pid = getattr(worker.process, "pid", None)
        self.log.info("SIP worker {index} started (pid {pid})", index=worker.index,
                      pid=worker.pid)

    def workerEnded(self, worker: Worker, reason: Failure) -> None:
        """
        The process of C{worker} ended: end the calls it held, and start it
        again unless the gateway is stopping.
        """
        worker.process = None
        worker.channel = None
        worker.gauges = {}
        worker.checks = {}
        lost = [call for call, index in self._calls.items() if index == worker.index]
        for aor, dialog in lost:
            del self._calls[aor, dialog]
            self.machine.dialogTerminated(aor, dialog)
        if worker.ended is not None:
            ended, worker.ended = worker.ended, None
            ended.callback(None)
        if not self.running:
            return
        young = self._reactor.seconds() - worker.startedAt < self.stableAfter
        worker.quickDeaths = worker.quickDeaths + 1 if young else 0
        delay = min(self.maxDelay, self.minDelay * 2 ** max(0, worker.quickDeaths - 1))
        worker.restarts += 1
        self.metrics.increment("sipxmpp_workers_restarts_total")
        self.log.warn(
            "SIP worker {index} (pid {pid}) ended ({reason}); {calls} ringing call(s) it held "
            "ended; starting it again in {delay:g} s",
            index=worker.index, pid=worker.pid, reason=reason.getErrorMessage(),
            calls=len(lost), delay=delay,
        )
        worker.restart = self._reactor.callLater(delay, self._start, worker)

    # --- the channel ---

    def channelOpened(self, protocol: FrameProtocol, hello: Message) -> Worker | None:
        """
        A worker said hello on C{protocol}; the L{Worker} it is, if known.
        """
        index = hello.get("index")
        if not isinstance(index, int) or not 0 <= index < len(self.workers):
            self.log.warn("worker channel from an unknown worker {hello!r}; closed",
                          hello=hello)
            return None
        worker = self.workers[index]
        worker.channel = protocol
        routes = everyRoute(self.routes)
        protocol.send({"routes": routes})
        self.log.info("SIP worker {index} (pid {pid}) connected; given {routes} route(s) to "
                      "the phones", index=index, pid=hello.get("pid"), routes=len(routes))
        return worker

    def channelClosed(self, worker: Worker, protocol: FrameProtocol) -> None:
        if worker.channel is protocol:
            worker.channel = None

    def messageReceived(self, worker: Worker, message: Message) -> None:
        """
        Events or a report from C{worker}.
        """
        events = message.get("events")
        if isinstance(events, list):
            self._apply(worker, events)
        report = message.get("report")
        if isinstance(report, dict):
            self._report(worker, report)

    def _apply(self, worker: Worker, events: list[Any]) -> None:
        routes: list[Route] = []
        for event in events:
            if not isinstance(event, list) or len(event) < 3 or event[0] not in _EVENTS:
                self.log.warn("unknown event {event!r} from SIP worker {index}",
                              event=event, index=worker.index)
                continue
            name, aor, *args = event
            if name == "route":
                self._route(worker, event[1:], routes)
                continue
            if name in _DIALOG_EVENTS:
                args[0] = dialog = tuple(args[0])  # JSON made the dialog key a list
                if name == "dialogEarly":
                    self._calls[aor, dialog] = worker.index
                elif name in ("dialogConfirmed", "dialogTerminated"):
                    self._calls.pop((aor, dialog), None)
            try:
                getattr(self.machine, name)(aor, *args)
            except Exception:
                self.log.failure("applying {event!r} from SIP worker {index} failed",
                                 event=event, index=worker.index)
        if routes:
            for other in self.workers:
                if other is not worker and other.channel is not None:
                    other.channel.send({"routes": routes})

    def _route(self, worker: Worker, route: Route, relay: list[Route]) -> None:
        try:
            apply(self.routes, route)
        except ValueError:
            self.log.warn("bad route {route!r} from SIP worker {index}", route=route,
                          index=worker.index)
            return
        relay.append(route)

    def _report(self, worker: Worker, report: dict[str, Any]) -> None:
        for name, text in (report.get("help") or {}).items():
            self.metrics.describe(name, text)
        for name, labels, delta in report.get("counters") or ():
            self.metrics.increment(name, delta, **labels)
        dropped = int(report.get("dropped") or 0)
        if dropped > worker.dropped:
            self.metrics.increment("sipxmpp_workers_events_dropped_total",
                                   dropped - worker.dropped)
        worker.dropped = dropped
        worker.gauges = {str(k): float(v) for k, v in (report.get("gauges") or {}).items()}
        worker.checks = {str(name): (bool(ok), str(detail))
                         for name, (ok, detail) in (report.get("checks") or {}).items()}
        for name in worker.gauges.keys() - self._gaugeNames:
            self._gaugeNames.add(name)
            self.metrics.gauge(name, partial(self.gauge, name))

    def gauge(self, name: str) -> float:
        """
        Gauge C{name} over the workers, as they last reported it: summed
        (bindings, transactions, connections), or the highest for a
        measure of how far behind one is (L{HIGHEST_GAUGES}).
        """
        values = [w.gauges.get(name, 0.0) for w in self.workers]
        return max(values) if name in HIGHEST_GAUGES else sum(values)

    def check(self, name: str) -> tuple[bool, str]:
        """
        Check C{name} as the connected workers last reported it: passed
        when one of them passes it (the upstream answers one worker's
        keepalives), with each one's detail.
        """
        reports = [(w.index, w.checks[name]) for w in self.workers
                   if w.connected and name in w.checks]
        if not reports:
            return False, "no worker has reported it yet"
        return (any(ok for _, (ok, _) in reports),
                "; ".join(f"worker {index}: {detail}" for index, (_, detail) in reports))

    def _sweepCalls(self) -> None:
        # A call can end without its worker telling (the state machine's
        # watchdog): forget those of users with no call up.
        idle = (TelephonyState.OFFLINE, TelephonyState.ONLINE)
        for call in [c for c in self._calls if self.machine.stateOf(c[0]) in idle]:
            del self._calls[call]
        self._sweep = self._reactor.callLater(SWEEP_INTERVAL, self._sweepCalls)

    def status(self) -> list[dict[str, object]]:
        """
        Each worker for C{/status}.
        """
        return [{"index": w.index, "pid": w.pid, "connected": w.connected,
                 "restarts": w.restarts, "transactions": w.gauges.get("sipxmpp_sip_transactions"),
                 "bindings": w.gauges.get("sipxmpp_sip_bindings")} for w in self.workers]


def _cancel(result: object, call: IDelayedCall) -> object:
    if call.active():
        call.cancel()
    return result


class _WorkerProcess(ProcessProtocol):
    """
    One worker's process: its output goes to the gateway's log, line by
    line; its end to the supervisor.
    """

    def __init__(self, supervisor: WorkerSupervisor, worker: Worker) -> None:
        self._supervisor = supervisor
        self._worker = worker
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        if lines[-1]:
            self._partial[childFD] = lines[-1]
        for line in lines[:-1]:
            if line.strip():
                self._supervisor.log.info("worker {index}: {line}", index=self._worker.index,
                                          line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self._supervisor.workerEnded(self._worker, reason)


class _Channel(FrameProtocol):
    def __init__(self, supervisor: WorkerSupervisor) -> None:
        super().__init__(self._first)
        self._supervisor = supervisor
        self._worker: Worker | None = None

    def _first(self, message: Message) -> None:
        hello = message.get("hello")
        worker = self._supervisor.channelOpened(self, hello) if isinstance(hello, dict) else None
        if worker is None:
            assert self.transport is not None
            self.transport.loseConnection()
            return
        self._worker = worker
        self.received = lambda message: self._supervisor.messageReceived(worker, message)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._worker is not None:
            self._supervisor.channelClosed(self._worker, self)


class _ChannelFactory(Factory):
    noisy = False

    def __init__(self, supervisor: WorkerSupervisor) -> None:
        self._supervisor = supervisor

    def buildProtocol(self, addr: Any) -> _Channel:
        return _Channel(self._supervisor)
