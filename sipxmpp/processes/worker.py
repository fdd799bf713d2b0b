"""
A SIP worker process: C{python -m sipxmpp.processes.worker --config FILE
--index N --channel PATH [--overrides JSON]}, started by the main process
(L{sipxmpp.processes.supervisor}), never by hand.

It reads the same configuration file as the main process and runs the SIP
shell and proxy core (L{buildSIP} with C{worker=N}) with an overload
monitor of its own, on a reactor of its own. What the observer sees goes
to the main process as telephony events (L{RemoteTelephony}); counters and
gauges every second. Its log lines go to stderr, which the main process
writes to the gateway's log. When the channel to the main process closes,
the worker stops: a main process that is gone must not leave workers
holding the SIP port.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.protocol import ClientFactory
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from sipxmpp.config import ConfigError, loadSettings
from sipxmpp.ops.health import UpstreamProbe
from sipxmpp.processes.channel import (
    FrameProtocol,
    Message,
    RemoteTelephony,
    Uplink,
    WorkerMetrics,
)
from sipxmpp.processes.gctuning import YoungCollector, tuneGarbageCollector
from sipxmpp.processes.routes import RouteSync
from sipxmpp.sip.shell.overload import OverloadMonitor
from sipxmpp.sip.shell.service import buildSIP
from sipxmpp.store.addresses import aorOfURI

#: Seconds between two reports of counters and gauges.
REPORT_INTERVAL = 1.0

log = Logger()


def command(config: str, index: int, channel: str,
            overrides: dict[tuple[str, str], str]) -> list[str]:
    """
    The arguments that start worker C{index}.
    """
    return [sys.executable, "-m", "sipxmpp.processes.worker", "--config", config,
            "--index", str(index), "--channel", channel,
            "--overrides", json.dumps([[s, k, v] for (s, k), v in overrides.items()])]


class _UplinkFactory(ClientFactory):
    noisy = False

    def __init__(self, uplink: Uplink, index: int, reactor: Any, routes: RouteSync) -> None:
        self._uplink = uplink
        self._index = index
        self._reactor = reactor
        self._routes = routes

    def buildProtocol(self, addr: Any) -> FrameProtocol:
        protocol = _UplinkProtocol(self._uplink, self._index, self._reactor, self._routes)
        protocol.factory = self
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        log.error("cannot reach the main process: {reason}", reason=reason.getErrorMessage())
        self._reactor.stop()


class _UplinkProtocol(FrameProtocol):
    def __init__(self, uplink: Uplink, index: int, reactor: Any, routes: RouteSync) -> None:
        super().__init__(self._received)
        self._routes = routes
        self._uplink = uplink
        self._index = index
        self._reactor = reactor

    def _received(self, message: Message) -> None:
        routes = message.get("routes")
        if isinstance(routes, list):
            try:
                self._routes.received(routes)
            except ValueError as e:
                log.warn("bad routes from the main process: {e}", e=str(e))

    def connectionMade(self) -> None:
        self.send({"hello": {"index": self._index, "pid": os.getpid()}})
        self._uplink.attach(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._uplink.detach()
        if self._reactor.running:
            log.warn("the main process closed the channel; stopping")
            self._reactor.stop()


def run(argv: Sequence[str], reactor: Any) -> int:
    """
    Start worker process as C{argv} says and run C{reactor} until it stops.
    """
    parser = argparse.ArgumentParser(prog="sipxmpp.processes.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--overrides", default="[]")
    args = parser.parse_args(argv)
    overrides = {(s, k): v for s, k, v in json.loads(args.overrides)}
    try:
        settings = loadSettings(args.config, overrides)
    except ConfigError as e:
        sys.stderr.write(f"configuration error: {e}\n")
        return 1
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr, timeFormat=""),
        [LogLevelFilterPredicate(LogLevel.levelWithName(settings.log.level))])],
        redirectStandardIO=False)
    metrics = WorkerMetrics()
    uplink = Uplink(reactor)
    sip, proxy = buildSIP(settings.sip, reactor, metrics, RemoteTelephony(uplink), aorOfURI,
                          worker=args.index)
    overload = OverloadMonitor(reactor, settings.sip.overloadLag, settings.sip.overloadBacklog,
                               sip.receiveBacklog, metrics)
    proxy.isOverloaded = overload.isOverloaded
    routes = RouteSync(proxy.routes, uplink)
    # Each worker probes the upstream (OPTIONS keepalives from its own
    # port) and reports the check; the main process's /healthz has it.
    upstream = proxy.settings.upstream
    probe = (UpstreamProbe(reactor, proxy.sendRequest, upstream,
                           proxy.settings.local[upstream.transport])
             if upstream is not None else None)

    def report() -> None:
        message = metrics.report(uplink.dropped)
        if probe is not None:
            result = probe.check()
            message["report"]["checks"] = {"upstream": [result.ok, result.detail]}
        if not uplink.send(message):
            metrics.unsent(message)

    reporting = LoopingCall(report)
    reporting.clock = reactor

    young = YoungCollector(reactor)

    def start() -> None:
        tuneGarbageCollector()
        young.start()
        try:
            sip.startService()
        except Exception:
            # Ends the process; the main process starts it again later.
            log.failure("SIP worker {index} cannot listen", index=args.index)
            failed.append(True)
            reactor.stop()
            return
        overload.startService()
        if probe is not None:
            probe.startService()
        reactor.connectUNIX(args.channel, _UplinkFactory(uplink, args.index, reactor, routes))
        reporting.start(REPORT_INTERVAL, now=False)

    def stop() -> Any:
        if reporting.running:
            reporting.stop()
        if probe is not None and probe.running:
            probe.stopService()
        overload.stopService()
        return sip.stopService()

    failed: list[bool] = []
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 1 if failed else 0


def main() -> None:  # pragma: no cover - the process entry point
    from twisted.internet import reactor

    raise SystemExit(run(sys.argv[1:], reactor))


if __name__ == "__main__":  # pragma: no cover
    main()
