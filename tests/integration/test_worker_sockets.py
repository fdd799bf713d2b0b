"""
The sockets of SIP workers (C{[sip] workers}), on loopback with the real
reactor: two L{SIPTransports} bind one shared port (C{SO_REUSEPORT}) and a
port each; requests leave from the worker's own port, responses from the
shared one; one source's datagrams reach one worker.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.shell.endpoints import parseListen
from sipxmpp.sip.shell.transport import SIPTransports
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from tests.unit.test_sip_transport import request, response


class WorkerSocketsTests(TestCase):
    def setUp(self) -> None:
        self.shared = freeSIPPort()
        self.own = [freeSIPPort(), freeSIPPort()]
        self.received: list[int] = []
        self.workers = []
        for index, own in enumerate(self.own):
            specs = tuple(parseListen(f"{kind}:{self.shared}:interface={LOOPBACK}")
                          for kind in ("udp", "tcp"))
            ownSpecs = tuple(parseListen(f"{kind}:{own}:interface={LOOPBACK}")
                             for kind in ("udp", "tcp"))
            transports = SIPTransports(reactor, specs, Metrics(), ownSpecs=ownSpecs)
            transports.handler = lambda message, peer, index=index: self.received.append(index)
            transports.startService()
            self.addCleanup(transports.stopService)
            self.workers.append(transports)
        self.phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.phone.bind((LOOPBACK, 0))
        self.phone.settimeout(5)
        self.addCleanup(self.phone.close)

    def test_bound(self) -> None:
        """
        Both workers listen on the shared port and on their own, UDP and
        TCP.
        """
        for transports, own in zip(self.workers, self.own, strict=True):
            ports = sorted((spec.transport, port.getHost().port)  # type: ignore[attr-defined]
                           for spec, port in transports.ports)
            self.assertEqual(ports, sorted([("UDP", self.shared), ("TCP", self.shared),
                                            ("UDP", own), ("TCP", own)]))

    def test_requestsFromOwnPort(self) -> None:
        """
        A request leaves from the worker's own port (its answer comes back
        there, RFC 3581); a response from the shared one (where the phone
        sent its request).
        """
        peer = Peer("UDP", LOOPBACK, self.phone.getsockname()[1])
        for index, transports in enumerate(self.workers):
            transports.send(request(), peer)
            self.assertEqual(self.phone.recvfrom(65535)[1][1], self.own[index])
            transports.send(response(), peer)
            self.assertEqual(self.phone.recvfrom(65535)[1][1], self.shared)

    def test_oneSourceOneWorker(self) -> Deferred[None]:
        """
        Datagrams from one source to the shared port all reach one worker.
        """
        return Deferred.fromCoroutine(self._oneSourceOneWorker())

    async def _oneSourceOneWorker(self) -> None:
        for n in range(5):
            self.phone.sendto(request(callID=f"c{n}"), (LOOPBACK, self.shared))
        waited = 0.0
        while len(self.received) < 5 and waited < 10:
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
        self.assertEqual(len(self.received), 5)
        self.assertEqual(len(set(self.received)), 1, self.received)


