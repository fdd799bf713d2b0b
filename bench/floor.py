"""
The floor of the stack: what one Twisted reactor spends on a datagram it
relays while doing nothing else, measured on this machine.

Run alone (``.venv/bin/python bench/floor.py``) or from bench/proxy.py,
which multiplies it by the datagrams the gateway handles per call: that
product is the CPU a call costs a single-reactor Python proxy before any
SIP work, so one core's worth of it bounds the calls/s any such proxy can
reach here. Loopback only; bounded by C{datagrams} and a deadline.

A sender process paces C{datagrams} datagrams of an INVITE's size at the
relay (a C{DatagramProtocol} in a reactor of its own, sending each one on
with the socket's C{sendto}, as the gateway does); a sink process drains
them. The relay's user+system CPU from its first datagram to its last,
over the count, is the figure.

Measured twice, because what a datagram costs depends on how they come:
in bursts of 100 (the reactor wakes once for many, as in a proxy that is
saturated and always has a backlog), and one at a time at 4000/s (every
datagram wakes the relay and the sink from their sleep, as sipp's paced
calls do below saturation). Here the second cost four to five times the
first (up to seven times in some runs): the wake-ups, not the copying,
are most of it.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing import Pipe, Process
from multiprocessing.connection import Connection

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sipxmpp.sip.shell.transport import setReceiveBuffer
from sipxmpp.testing.ports import LOOPBACK

PAYLOAD = b"INVITE sip:callee@127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 700 + b"\r\n\r\n"


def _sink(report: Connection) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    report.send(s.getsockname()[1])
    s.settimeout(2)
    try:
        while True:
            s.recv(4096)
    except TimeoutError:
        pass


def _relay(report: Connection, sinkPort: int, datagrams: int, deadline: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Relay(DatagramProtocol):
        count = 0
        first: resource.struct_rusage | None = None
        sendto: Callable[[bytes, tuple[str, int]], object]

        def startProtocol(self) -> None:
            self.sendto = self.transport.socket.sendto  # type: ignore[union-attr]

        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
            self.sendto(data, (LOOPBACK, sinkPort))
            self.count += 1
            if self.count == 1:
                self.first = resource.getrusage(resource.RUSAGE_SELF)
            elif self.count == datagrams:
                last = resource.getrusage(resource.RUSAGE_SELF)
                assert self.first is not None
                report.send((last.ru_utime - self.first.ru_utime
                             + last.ru_stime - self.first.ru_stime) / (datagrams - 1))
                reactor.stop()  # type: ignore[attr-defined]

    port = reactor.listenUDP(0, Relay(), interface=LOOPBACK)  # type: ignore[attr-defined]
    setReceiveBuffer(port.socket, 8 << 20)
    report.send(port.getHost().port)
    reactor.callLater(deadline, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    report.close()


BURSTS = (100_000, 15_000, 100)  # datagrams, per second, per burst
ONE_BY_ONE = (20_000, 4_000, 1)


def relayCost(datagrams: int = BURSTS[0], rate: int = BURSTS[1],
              burst: int = BURSTS[2]) -> float | None:
    """
    CPU seconds per datagram relayed, or L{None} if some were lost (the
    relay fell behind or the machine was too busy: no figure then).
    C{burst} datagrams are sent back to back, then the sender waits for
    the pace C{rate} to catch up.
    """
    sinkEnd, sinkChild = Pipe()
    sink = Process(target=_sink, args=(sinkChild,))
    sink.start()
    sinkPort = sinkEnd.recv()
    relayEnd, relayChild = Pipe()
    deadline = datagrams / rate + 10
    relay = Process(target=_relay, args=(relayChild, sinkPort, datagrams, deadline))
    relay.start()
    target = (LOOPBACK, relayEnd.recv())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = time.perf_counter()
    for i in range(datagrams):
        sender.sendto(PAYLOAD, target)
        if i % burst == 0:  # paced, so that the relay's buffer never overflows
            ahead = started + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    cost = relayEnd.recv() if relayEnd.poll(15) else None
    relay.join(deadline + 5)
    sink.join(5)
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    for datagrams, rate, burst in (BURSTS, ONE_BY_ONE):
        label = f"in bursts of {burst}" if burst > 1 else f"one at a time, {rate}/s"
        cost = relayCost(datagrams, rate, burst)
        if cost is None:
            raise SystemExit(f"bench/floor.py: datagrams were lost ({label}); no figure")
        print(f"twisted UDP relay floor, {label}: {1e6 * cost:.1f} us CPU per datagram "
              f"relayed ({datagrams} datagrams)")


if __name__ == "__main__":
    main()
