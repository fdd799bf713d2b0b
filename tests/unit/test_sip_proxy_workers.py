"""
Tests for the proxy in a SIP worker process (C{[sip] workers}): its own
port in Via, Path and the Record-Route entry facing the upstream, the
shared public port in the entry facing the phone, and the other workers'
ports taken for its own.
"""

from __future__ import annotations

import ipaddress

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.proxy import Proxy, ProxySettings
from sipxmpp.sip.wire.message import SIPRequest
from tests.unit.test_sip_proxy import (
    PHONE,
    UPSTREAM,
    ProxyTestCase,
    Recorder,
    answer,
    aorOf,
    invite,
    message,
    register,
)

OWN = 5100
OTHER = 5101


class WorkerProxyTestCase(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        public = {"UDP": Peer("UDP", "127.0.0.1", 5060), "TCP": Peer("TCP", "127.0.0.1", 5060)}
        self.proxy = Proxy(
            self.clock,
            ProxySettings(
                local={t: p._replace(port=OWN) for t, p in public.items()},
                upstream=UPSTREAM,
                trustedNetworks=(ipaddress.ip_network("127.0.0.0/8"),),
                public=public,
                aliases=tuple(p._replace(port=port) for port in (OWN, OTHER)
                              for p in public.values()),
            ),
            lambda data, peer: self.sent.append((data, peer)),
            aorOf,
            Metrics(),
        )
        self.recorder = Recorder()
        self.proxy.addObserver(self.recorder)


class WorkerAddressTests(WorkerProxyTestCase):
    def test_outboundCall(self) -> None:
        """
        A phone's INVITE leaves with the worker's own port in the Via and
        in the Record-Route entry the upstream uses; the phone's entry is
        the public port it sent to.
        """
        self.receive(invite(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.topVia.sentBy, f"127.0.0.1:{OWN}")
        self.assertEqual([r.uriText for r in forwarded.recordRoutes],
                         [f"sip:127.0.0.1:{OWN};lr", "sip:127.0.0.1:5060;lr"])

    def test_registerPath(self) -> None:
        """
        The Path the registrar routes inbound calls by names the worker's
        own port: the calls reach the worker that holds the phone's flow.
        """
        self.receive(register(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.getHeaders("Path"), [f"<sip:127.0.0.1:{OWN};lr>"])

    def test_inboundCall(self) -> None:
        """
        An INVITE from the upstream to a registered phone gets the public
        port in the entry the phone uses, the own port in the other.
        """
        self.registerAlice()
        request = message(f"""
INVITE sip:alice@127.0.0.1:5080 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKin1
Max-Forwards: 69
Route: <sip:127.0.0.1:{OWN};lr>
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>
Call-ID: in1
CSeq: 1 INVITE
Contact: <sip:bob@127.0.0.1:5070>
""")
        self.receive(request, UPSTREAM)
        forwarded = self.takeOne(PHONE)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.topVia.sentBy, f"127.0.0.1:{OWN}")
        self.assertEqual([r.uriText for r in forwarded.recordRoutes],
                         ["sip:127.0.0.1:5060;lr", f"sip:127.0.0.1:{OWN};lr"])

    def test_otherWorkersRoutesArePopped(self) -> None:
        """
        A phone's in-dialog request hashed to this worker carries the route
        set another worker recorded: both entries are ours and popped.
        """
        bye = message(f"""
BYE sip:bob@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKbye1
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:{OTHER};lr>
From: <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: c1
CSeq: 2 BYE
""")
        self.receive(bye, PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.getHeaders("Route"), [])
        self.receive(answer(forwarded.toBytes(), 200), UPSTREAM)
        self.assertEqual(self.recorder.responses[-1][:2], ("BYE", 200))
