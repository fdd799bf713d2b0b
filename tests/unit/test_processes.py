"""
Tests for the SIP worker processes' plumbing, without processes: the
framed channel (L{sipxmpp.processes.channel}) over in-memory transports,
and the supervisor (L{sipxmpp.processes.supervisor}) on a fake reactor
with a fake C{spawnProcess}.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.processes.channel import (
    FrameProtocol,
    Message,
    RemoteTelephony,
    Uplink,
    WorkerMetrics,
    encode,
)
from sipxmpp.processes.routes import RouteSync
from sipxmpp.processes.supervisor import WorkerSupervisor
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.sip.core.registrations import Binding
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine

ALICE = "sip:alice@example.test"


def frames(data: bytes) -> list[Message]:
    """
    Decode what a L{FrameProtocol} wrote.
    """
    received: list[Message] = []
    reader = FrameProtocol(received.append)
    reader.makeConnection(StringTransport())
    reader.dataReceived(data)
    return received


class FrameTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A message sent is the message received, split across reads or not.
        """
        writer = FrameProtocol(lambda m: None)
        transport = StringTransport()
        writer.makeConnection(transport)
        writer.send({"events": [["dialogEarly", ALICE, ["c", "a", "b"], True]]})
        writer.send({"hello": {"index": 1}})
        data = transport.value()
        received: list[Message] = []
        reader = FrameProtocol(received.append)
        reader.makeConnection(StringTransport())
        for i in range(len(data)):
            reader.dataReceived(data[i:i + 1])
        self.assertEqual(received, [{"events": [["dialogEarly", ALICE, ["c", "a", "b"], True]]},
                                    {"hello": {"index": 1}}])

    def test_undecodableDropped(self) -> None:
        """
        A frame that is not JSON is dropped; the next one still counts.
        """
        received: list[Message] = []
        reader = FrameProtocol(received.append)
        reader.makeConnection(StringTransport())
        good = encode({"hello": {}})
        reader.dataReceived(b"\x00\x00\x00\x03abc" + len(good).to_bytes(4, "big") + good)
        self.assertEqual(received, [{"hello": {}}])


class UplinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.uplink = Uplink(self.clock, limit=3)
        self.protocol = FrameProtocol(lambda m: None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_batchPerTurn(self) -> None:
        """
        The events of one reactor turn go in one frame, in order, once
        the turn is over.
        """
        self.uplink.attach(self.protocol)
        remote = RemoteTelephony(self.uplink)
        remote.dialogConfirmed(ALICE, ("c", "a", "b"), None, True)
        remote.dialogAcknowledged(ALICE, ("c", "a", "b"))
        remote.dialogTerminated(ALICE, ("c", "a", "b"))
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0)
        self.assertEqual(frames(self.transport.value()), [{"events": [
            ["dialogConfirmed", ALICE, ["c", "a", "b"], None, True],
            ["dialogAcknowledged", ALICE, ["c", "a", "b"]],
            ["dialogTerminated", ALICE, ["c", "a", "b"]]]}])

    def test_boundedWhileNotConnected(self) -> None:
        """
        Before the channel is up events wait, up to the limit; the rest are
        dropped and counted. The waiting ones go once it is up.
        """
        for n in range(5):
            self.uplink.event("bindingRemoved", ALICE, f"sip:{n}@h")
        self.clock.advance(0)
        self.assertEqual(self.uplink.dropped, 2)
        self.uplink.attach(self.protocol)
        self.clock.advance(0)
        sent = frames(self.transport.value())
        self.assertEqual([e[2] for e in sent[0]["events"]], ["sip:0@h", "sip:1@h", "sip:2@h"])

    def test_pausedHoldsEvents(self) -> None:
        """
        While the transport pauses the uplink (the main process does not
        read), nothing is written; resuming sends what waited.
        """
        self.uplink.attach(self.protocol)
        self.assertIs(self.transport.producer, self.uplink)
        self.uplink.pauseProducing()
        self.uplink.event("bindingRemoved", ALICE, "sip:x@h")
        self.clock.advance(0)
        self.assertEqual(self.transport.value(), b"")
        self.assertFalse(self.uplink.send({"report": {}}))
        self.uplink.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(len(frames(self.transport.value())), 1)

    def test_detachedDrops(self) -> None:
        """
        Once the channel is gone, reports are refused (the caller keeps
        them) and events pile up only to the limit.
        """
        self.uplink.attach(self.protocol)
        self.uplink.stopProducing()
        self.assertFalse(self.uplink.send({"report": {}}))
        for _ in range(4):
            self.uplink.event("bindingRemoved", ALICE, "sip:x@h")
        self.assertEqual(self.uplink.dropped, 1)


class WorkerMetricsTests(SynchronousTestCase):
    def test_reportDeltas(self) -> None:
        """
        A report holds the counters' changes since the last one, the
        gauges' values, and each help text once.
        """
        metrics = WorkerMetrics()
        metrics.describe("a_total", "A.")
        metrics.increment("a_total", method="INVITE")
        metrics.increment("a_total", 2, method="INVITE")
        metrics.gauge("g", lambda: 7)
        first = metrics.report(dropped=4)["report"]
        self.assertEqual(first["counters"], [["a_total", {"method": "INVITE"}, 3]])
        self.assertEqual(first["gauges"], {"g": 7.0})
        self.assertEqual(first["help"], {"a_total": "A."})
        self.assertEqual(first["dropped"], 4)
        second = metrics.report(dropped=4)["report"]
        self.assertEqual((second["counters"], second["help"]), ([], {}))

    def test_unsentGoesIntoTheNext(self) -> None:
        metrics = WorkerMetrics()
        metrics.describe("a_total", "A.")
        metrics.increment("a_total")
        metrics.unsent(metrics.report(dropped=0))
        metrics.increment("a_total")
        report = metrics.report(dropped=0)["report"]
        self.assertEqual(report["counters"], [["a_total", {}, 2]])
        self.assertEqual(report["help"], {"a_total": "A."})


class FakeProcess:
    def __init__(self, protocol: ProcessProtocol, args: Sequence[str], pid: int) -> None:
        self.protocol = protocol
        self.args = list(args)
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)

    def end(self, code: int | None = None, signalled: int | None = None) -> None:
        self.protocol.processEnded(Failure(ProcessTerminated(code, signalled)))


class SupervisorTestCase(SynchronousTestCase):
    """
    A supervisor of two workers on a fake reactor, and fake processes.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.machine = TelephonyStateMachine(self.reactor)
        self.metrics = Metrics()
        self.processes: list[FakeProcess] = []
        self.supervisor = WorkerSupervisor(
            self.reactor, 2, lambda index, path: ["worker", str(index), path],
            self.machine, self.metrics, spawn=self.spawn,
        )
        self.supervisor.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.supervisor.running:
            d = self.supervisor.stopService()
            for process in self.processes:
                if process.protocol is not None:
                    process.end(signalled=signal.SIGTERM)
            self.successResultOf(d)

    def spawn(self, protocol: ProcessProtocol, args: Sequence[str]) -> Any:
        process = FakeProcess(protocol, args, 100 + len(self.processes))
        self.processes.append(process)
        return process

    def connect(self, index: int) -> FrameProtocol:
        """
        Worker C{index} opens its channel and says hello; the protocol
        that writes frames to the supervisor's side is returned.
        """
        factory = self.reactor.unixServers[-1][1]
        server = factory.buildProtocol(None)
        serverTransport = StringTransport()
        server.makeConnection(serverTransport)
        worker = FrameProtocol(lambda m: None)
        workerTransport = StringTransport()
        worker.makeConnection(workerTransport)
        worker.send({"hello": {"index": index, "pid": 100 + index}})
        self._pipes.append((workerTransport, server))
        self.flush()
        return worker

    _pipes: list[tuple[StringTransport, Any]]

    def flush(self) -> None:
        for transport, server in self._pipes:
            data = transport.value()
            transport.clear()
            server.dataReceived(data)


class SupervisorTests(SupervisorTestCase):
    def test_spawnsEach(self) -> None:
        """
        Each worker is started with its index and the channel's path, and
        counts as connected once it said hello.
        """
        self._pipes = []
        self.assertEqual([p.args[:2] for p in self.processes], [["worker", "0"], ["worker", "1"]])
        self.assertEqual(self.processes[0].args[2], self.supervisor.channelPath)
        self.assertEqual(self.metrics.render().count("sipxmpp_workers_connected 0"), 1)
        self.connect(0)
        self.connect(1)
        self.assertTrue(all(w.connected for w in self.supervisor.workers))

    def test_twoPhonesOnTwoWorkers(self) -> None:
        """
        A user's phones on two workers aggregate in the one machine: a call
        on one keeps the user on the phone whatever the other reports.
        """
        self._pipes = []
        zero, one = self.connect(0), self.connect(1)
        zero.send({"events": [["bindingUpdated", ALICE, "sip:a@1", 3600]]})
        one.send({"events": [["bindingUpdated", ALICE, "sip:a@2", 3600],
                             ["dialogConfirmed", ALICE, ["c1", "x", "y"], None]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        zero.send({"events": [["bindingRemoved", ALICE, "sip:a@1"]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        one.send({"events": [["dialogTerminated", ALICE, ["c1", "x", "y"]]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ONLINE)

    def test_ackOnAnotherWorker(self) -> None:
        """
        A call answered through one worker and ACKed through another (each
        sees the flow it reads) is set up, in either order of arrival; one
        never ACKed ends after 64*T1.
        """
        self._pipes = []
        zero, one = self.connect(0), self.connect(1)
        zero.send({"events": [["bindingUpdated", ALICE, "sip:a@1", 3600],
                              ["dialogConfirmed", ALICE, ["c1", "x", "y"], None, True],
                              ["dialogConfirmed", ALICE, ["c2", "x", "z"], None, True]]})
        one.send({"events": [["dialogAcknowledged", ALICE, ["c3", "x", "w"]]]})
        self.flush()
        one.send({"events": [["dialogAcknowledged", ALICE, ["c1", "x", "y"]]]})
        zero.send({"events": [["dialogConfirmed", ALICE, ["c3", "x", "w"], None, True]]})
        self.flush()
        self.reactor.advance(32)
        self.assertEqual(len(self.machine.snapshot(ALICE).dialogs), 2)
        one.send({"events": [["dialogTerminated", ALICE, ["c1", "x", "y"]],
                             ["dialogTerminated", ALICE, ["c3", "x", "w"]]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ONLINE)

    def test_deadWorkersCallsEnd(self) -> None:
        """
        A worker killed mid-call: the ringing calls it reported end (no
        answer will reach it), its answered calls and the other worker's
        stay (their BYEs will be routed); it is started again after the
        backoff.
        """
        self._pipes = []
        zero, one = self.connect(0), self.connect(1)
        bob, carol = "sip:bob@example.test", "sip:carol@example.test"
        zero.send({"events": [["bindingUpdated", ALICE, "sip:a@1", 3600],
                              ["dialogEarly", ALICE, ["c1", "x", ""], False],
                              ["bindingUpdated", carol, "sip:c@1", 3600],
                              ["dialogEarly", carol, ["c3", "x", "y"], False],
                              ["dialogConfirmed", carol, ["c3", "x", "y"], None]]})
        one.send({"events": [["bindingUpdated", bob, "sip:b@1", 3600],
                             ["dialogEarly", bob, ["c2", "x", "y"], False],
                             ["dialogConfirmed", bob, ["c2", "x", "y"], None]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.RINGING)
        self.processes[0].end(signalled=signal.SIGKILL)
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ONLINE)
        self.assertEqual(self.machine.stateOf(carol), TelephonyState.ON_THE_PHONE)
        self.assertEqual(self.machine.stateOf(bob), TelephonyState.ON_THE_PHONE)
        self.assertFalse(self.supervisor.workers[0].connected)
        self.assertEqual(len(self.processes), 2)
        self.reactor.advance(self.supervisor.minDelay)
        self.assertEqual(len(self.processes), 3)
        self.assertEqual(self.processes[2].args[:2], ["worker", "0"])
        self.assertEqual(self.metrics.value("sipxmpp_workers_restarts_total"), 1)

    def test_backoffDoublesWhileYoung(self) -> None:
        """
        A worker that keeps ending young waits twice as long each time, up
        to the cap; one that ran long enough starts again soon.
        """
        self._pipes = []
        delays = []
        for _ in range(8):
            before = len(self.processes)
            self.processes[-1 if self.processes[-1].args[1] == "0" else 0].end(code=1)
            waited = 0.0
            while len(self.processes) == before:
                self.reactor.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        self.reactor.advance(self.supervisor.stableAfter)
        self.processes[-1].end(code=1)
        self.reactor.advance(self.supervisor.minDelay)
        self.assertEqual(self.processes[-1].args[1], "0")
        self.assertEqual(self.supervisor.workers[0].quickDeaths, 0)

    def test_stopSignalsAndWaits(self) -> None:
        """
        Stopping sends SIGTERM and waits for each to end; SIGKILL after the
        timeout; nothing is restarted.
        """
        self._pipes = []
        d = self.supervisor.stopService()
        self.assertEqual([p.signals for p in self.processes], [[signal.SIGTERM]] * 2)
        self.processes[0].end(signalled=signal.SIGTERM)
        self.assertNoResult(d)
        self.reactor.advance(10)
        self.assertEqual(self.processes[1].signals, [signal.SIGTERM, signal.SIGKILL])
        self.processes[1].end(signalled=signal.SIGKILL)
        self.successResultOf(d)
        self.reactor.advance(60)
        self.assertEqual(len(self.processes), 2)

    def test_reportsAddUp(self) -> None:
        """
        Workers' counters add into the gateway's; gauges are summed.
        """
        self._pipes = []
        zero, one = self.connect(0), self.connect(1)
        for worker, transactions in ((zero, 3), (one, 4)):
            worker.send({"report": {"counters": [["sipxmpp_sip_requests_forwarded_total",
                                                  {"method": "INVITE"}, 5]],
                                    "gauges": {"sipxmpp_sip_transactions": transactions},
                                    "help": {}, "dropped": 0}})
        self.flush()
        self.assertEqual(self.metrics.value("sipxmpp_sip_requests_forwarded_total",
                                            method="INVITE"), 10)
        self.assertIn("sipxmpp_sip_transactions 7", self.metrics.render())
        for worker, lag in ((zero, 0.5), (one, 0.25)):
            worker.send({"report": {"counters": [], "help": {}, "dropped": 0,
                                    "gauges": {"sipxmpp_reactor_lag_seconds": lag}}})
        self.flush()
        self.assertEqual(self.supervisor.gauge("sipxmpp_reactor_lag_seconds"), 0.5)
        one.send({"report": {"counters": [], "gauges": {}, "help": {}, "dropped": 6}})
        self.flush()
        self.assertEqual(self.metrics.value("sipxmpp_workers_events_dropped_total"), 6)

    def test_upstreamCheck(self) -> None:
        """
        The upstream check passes while one connected worker's keepalives
        are answered; before any report it fails.
        """
        self._pipes = []
        zero, one = self.connect(0), self.connect(1)
        self.assertFalse(self.supervisor.check("upstream")[0])
        for worker, ok in ((zero, False), (one, True)):
            worker.send({"report": {"counters": [], "gauges": {}, "help": {}, "dropped": 0,
                                    "checks": {"upstream": [ok, f"ok={ok}"]}}})
        self.flush()
        self.assertEqual(self.supervisor.check("upstream"),
                         (True, "worker 0: ok=False; worker 1: ok=True"))
        self.processes[1].end(signalled=signal.SIGKILL)
        self.assertEqual(self.supervisor.check("upstream"), (False, "worker 0: ok=False"))

    def test_unknownEventIgnored(self) -> None:
        self._pipes = []
        zero = self.connect(0)
        zero.send({"events": [["restore", ALICE, {}], ["bindingUpdated", ALICE, "sip:a@1", 60]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ONLINE)


def binding(port: int, expiresAt: float = 3600.0) -> Binding:
    return Binding(ALICE, f"sip:alice@127.0.0.1:{port}", Peer("UDP", "127.0.0.1", port),
                   expiresAt)


class RouteTests(SupervisorTestCase):
    """
    The routes to the phones: each worker's changes reach the main
    process's table (saved by the store) and the other workers; a worker
    that connects gets them all.
    """

    def routes(self, worker: FrameProtocol) -> list[Message]:
        transport = worker.transport
        assert isinstance(transport, StringTransport)
        return [m for m in frames(transport.value()) if "routes" in m]

    def serverTransport(self, index: int) -> StringTransport:
        channel = self.supervisor.workers[index].channel
        assert channel is not None
        transport = channel.transport
        assert isinstance(transport, StringTransport)
        return transport

    def test_changeRelayed(self) -> None:
        self._pipes = []
        uplinkClock = Clock()
        self.connect(0)
        zero = self._pipes[-1]
        self.connect(1)
        # Worker 0's proxy learns a binding: its RouteSync tells the main
        # process, which keeps it and passes it to worker 1 only.
        workerRoutes = PhoneRoutes(uplinkClock, {}, "path")
        uplink = Uplink(uplinkClock)
        writer = FrameProtocol(lambda m: None)
        writer.makeConnection(zero[0])
        uplink.attach(writer)
        RouteSync(workerRoutes, uplink)
        workerRoutes.registrations.update(("alice", "127.0.0.1", 5080, ""), binding(5080))
        uplinkClock.advance(0)
        self.flush()
        kept = self.supervisor.routes.registrations.get(("alice", "127.0.0.1", 5080, ""))
        self.assertEqual(kept, binding(5080))
        self.assertEqual(frames(self.serverTransport(0).value())[1:], [])
        [relayed] = frames(self.serverTransport(1).value())[1:]
        other = PhoneRoutes(Clock(), {}, "path")
        sync = RouteSync(other, Uplink(Clock()))
        sync.received(relayed["routes"])
        self.assertEqual(other.registrations.items(), [(("alice", "127.0.0.1", 5080, ""),
                                                        binding(5080))])

    def test_allRoutesAtConnect(self) -> None:
        """
        A worker that connects (a restarted one) is given every live route,
        and does not send them back as its own changes.
        """
        self._pipes = []
        self.supervisor.routes.registrations.update(("alice", "127.0.0.1", 5080, ""),
                                                    binding(5080))
        self.supervisor.routes.dialogTargets.update(("alice", "127.0.0.1", 5082, ""),
                                                    binding(5082))
        self.supervisor.routes.registrations.update(("old", "127.0.0.1", 5090, ""),
                                                    binding(5090, expiresAt=-1))
        self.connect(0)
        [first] = frames(self.serverTransport(0).value())
        mirror = PhoneRoutes(Clock(), {}, "path")
        uplink = Uplink(Clock())
        RouteSync(mirror, uplink).received(first["routes"])
        self.assertEqual(len(mirror.registrations), 1)
        self.assertEqual(len(mirror.dialogTargets), 1)
        uplink.event("nothing", "else")
        self.assertEqual(uplink.dropped, 0)
        self.assertEqual(len(uplink._events), 1)  # only the line above: nothing echoed

    def test_removalRelayed(self) -> None:
        self._pipes = []
        zero = self.connect(0)
        self.supervisor.routes.registrations.update(("alice", "127.0.0.1", 5080, ""),
                                                    binding(5080))
        zero.send({"events": [["route", "registration", ["alice", "127.0.0.1", 5080, ""],
                               None]]})
        self.flush()
        self.assertEqual(len(self.supervisor.routes.registrations), 0)

    def test_badRouteIgnored(self) -> None:
        self._pipes = []
        zero = self.connect(0)
        zero.send({"events": [["route", "nonsense", ["a"], None],
                              ["bindingUpdated", ALICE, "sip:a@1", 60]]})
        self.flush()
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ONLINE)
