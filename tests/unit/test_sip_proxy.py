"""
Tests for L{sipxmpp.sip.core.proxy.Proxy}: routing, policy and transactions,
sans-IO on a L{Clock}. Messages are bytes; "sending" appends to a list.
"""

from __future__ import annotations

import gc
import ipaddress

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.local import OptionsResponder
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.proxy import IProxyObserver, Leg, Proxy, ProxySettings
from sipxmpp.sip.core.publications import EventStateCompositor
from sipxmpp.sip.core.transaction import T1, TIMER_C, IClientTransactionUser, NullUser
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.uri import SIPURI, URI
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine
from tests.unit.test_sip_dialoginfo import KAMAILIO_EARLY_CALLEE

US_UDP = Peer("UDP", "127.0.0.1", 5060)
US_TCP = Peer("TCP", "127.0.0.1", 5060)
UPSTREAM = Peer("UDP", "127.0.0.1", 5070)
PHONE = Peer("UDP", "127.0.0.1", 5080)
PHONE_TCP = Peer("TCP", "127.0.0.1", 40001)
STRANGER = Peer("UDP", "192.0.2.7", 5060)


def aorOf(uri: URI) -> str | None:
    if isinstance(uri, SIPURI) and uri.user:
        return f"sip:{uri.user}@{uri.host.lower()}"
    return None


def message(text: str, body: str = "") -> SIPRequest | SIPResponse:
    head = text.strip().replace("\n", "\r\n")
    data = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    return parseMessage(data)


def register(branch: str = "r1", contact: str = "<sip:alice@127.0.0.1:5080>",
             transport: str = "UDP", port: int = 5080) -> SIPRequest:
    request = message(f"""
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch};rport
Max-Forwards: 70
From: <sip:alice@example.test>;tag=f1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: {contact}
Expires: 3600
""")
    assert isinstance(request, SIPRequest)
    return request


PUBLISHER = Peer("UDP", "127.0.0.9", 5060)


def publishRequest(body: bytes, via: str = "127.0.0.9:5060") -> SIPRequest:
    """
    A PUBLISH of Bob's dialog state, as Kamailio's pua_dialoginfo sends it.
    """
    head = f"""
PUBLISH sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bKpub1
Max-Forwards: 70
From: <sip:bob@example.test>;tag=pua1
To: <sip:bob@example.test>
Call-ID: pub-1
CSeq: 1 PUBLISH
Event: dialog
Expires: 43201
Content-Type: application/dialog-info+xml
""".strip().replace("\n", "\r\n")
    request = parseMessage(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert isinstance(request, SIPRequest)
    return request


def invite(uri: str = "sip:bob@example.test", branch: str = "i1", extra: str = "",
           via: str = "SIP/2.0/UDP 127.0.0.1:5080", body: str = "") -> SIPRequest:
    request = message(f"""
INVITE {uri} SIP/2.0
Via: {via};branch=z9hG4bK{branch};rport
Max-Forwards: 70
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>
Call-ID: call-1
CSeq: 1 INVITE
Contact: <sip:alice@127.0.0.1:5080>
{extra}""".rstrip(), body)
    assert isinstance(request, SIPRequest)
    return request


def cancelFor(request: SIPRequest) -> SIPRequest:
    """
    The CANCEL a phone sends for C{request} (same branch, §9.1).
    """
    cancel = message(f"""
CANCEL {request.uriText} SIP/2.0
Via: {request.topVia.text}
Max-Forwards: 70
From: {request.getHeader("From")}
To: {request.getHeader("To")}
Call-ID: {request.callID}
CSeq: {request.cseq.number} CANCEL
""")
    assert isinstance(cancel, SIPRequest)
    return cancel


def answer(request: bytes, code: int, reason: str = "OK", toTag: str | None = "b1",
           extra: str = "") -> SIPResponse:
    """
    A response to the request that was sent (its Vias copied).
    """
    sent = parseMessage(request)
    assert isinstance(sent, SIPRequest)
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {via.text}" for via in sent.vias]
    lines += [f"From: {sent.getHeader('From')}"]
    to = sent.getHeader("To") or ""
    lines += [f"To: {to};tag={toTag}" if toTag and ";tag=" not in to else f"To: {to}"]
    lines += [f"Call-ID: {sent.callID}", f"CSeq: {sent.cseq.number} {sent.cseq.method}"]
    if extra:
        lines.append(extra)
    response = message("\n".join(lines))
    assert isinstance(response, SIPResponse)
    return response


@implementer(IProxyObserver)
class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, Leg]] = []
        self.responses: list[tuple[str, int, Leg]] = []

    def requestForwarded(self, request: SIPRequest, leg: Leg) -> None:
        self.requests.append((request.method, leg))

    def responseForwarded(self, request: SIPRequest, response: SIPResponse, leg: Leg) -> None:
        self.responses.append((request.method, response.code, leg))


class ProxyTestCase(SynchronousTestCase):
    registerMode = "path"
    upstream: Peer | None = UPSTREAM

    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[bytes, Peer]] = []
        self.proxy = Proxy(
            self.clock,
            ProxySettings(
                local={"UDP": US_UDP, "TCP": US_TCP},
                upstream=self.upstream,
                trustedNetworks=(ipaddress.ip_network("127.0.0.0/8"),),
                registerMode=self.registerMode,
            ),
            lambda data, peer: self.sent.append((data, peer)),
            aorOf,
            Metrics(),
        )
        self.recorder = Recorder()
        self.proxy.addObserver(self.recorder)

    def receive(self, msg: SIPRequest | SIPResponse, source: Peer) -> None:
        self.proxy.messageReceived(msg, source)

    def take(self) -> list[tuple[SIPRequest | SIPResponse, Peer]]:
        sent, self.sent = self.sent, []
        return [(parseMessage(data), peer) for data, peer in sent]

    def takeOne(self, to: Peer) -> SIPRequest | SIPResponse:
        sent = [(m, p) for m, p in self.take() if not (isinstance(m, SIPResponse) and m.code == 100)]
        self.assertEqual(len(sent), 1, sent)
        msg, peer = sent[0]
        self.assertEqual(peer, to)
        return msg

    def registerAlice(self, contact: str = "<sip:alice@127.0.0.1:5080>",
                      source: Peer = PHONE) -> SIPRequest:
        self.receive(register(contact=contact, transport=source.transport, port=source.port),
                     source)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        granted = forwarded.contacts[0].uriText
        self.receive(answer(forwarded.toBytes(), 200, extra=f"Contact: <{granted}>;expires=3600"),
                     UPSTREAM)
        self.takeOne(source)
        return forwarded


class RegisterTests(ProxyTestCase):
    def test_pathAndVia(self) -> None:
        self.receive(register(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual([p.uriText for p in forwarded.paths], ["sip:127.0.0.1:5060;lr"])
        vias = forwarded.vias
        self.assertEqual(len(vias), 2)
        self.assertEqual(vias[0].sentBy, "127.0.0.1:5060")
        self.assertTrue(vias[0].hasRFC3261Branch)
        self.assertEqual(vias[1].params.get("rport"), "5080")
        self.assertEqual(forwarded.maxForwards, 69)
        self.assertEqual(forwarded.getHeader("Contact"), "<sip:alice@127.0.0.1:5080>")

    def test_responseRoutedBackAndBindingKept(self) -> None:
        self.receive(register(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 200,
                            extra="Contact: <sip:alice@127.0.0.1:5080>;expires=60"), UPSTREAM)
        back = self.takeOne(PHONE)
        assert isinstance(back, SIPResponse)
        self.assertEqual(back.code, 200)
        self.assertEqual(len(back.vias), 1)
        self.assertEqual(back.topVia.branch, "z9hG4bKr1")
        [binding] = list(self.proxy.registrations)
        self.assertEqual((binding.aor, binding.flow), ("sip:alice@example.test", PHONE))
        self.assertEqual(self.recorder.responses[-1][:2], ("REGISTER", 200))
        self.clock.advance(61)
        self.assertEqual(list(self.proxy.registrations), [])

    def test_contactWithoutExpiresIsBound(self) -> None:
        """
        A registrar that lists the contact without an expires parameter or
        an Expires header granted the default 3600 s (RFC 3261 §10.2.1.1):
        the proxy keeps routing to the phone, as the observer keeps it
        registered.
        """
        self.receive(register(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 200,
                            extra="Contact: <sip:alice@127.0.0.1:5080>"), UPSTREAM)  # fmt: skip
        self.take()
        [binding] = list(self.proxy.registrations)
        self.assertEqual(binding.expiresAt, self.clock.seconds() + 3600)

    def test_deregister(self) -> None:
        self.registerAlice()
        self.receive(register(branch="r2"), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 200), UPSTREAM)  # no contacts left
        self.take()
        self.assertEqual(list(self.proxy.registrations), [])

    def test_retransmissionAbsorbed(self) -> None:
        self.receive(register(), PHONE)
        self.receive(register(), PHONE)
        self.assertEqual(len(self.take()), 1)


class StaleBindingTests(ProxyTestCase):
    """
    The registrar's 2xx lists every binding of the AoR: the proxy keeps
    exactly those, as the observer does.
    """

    INSTANCE = ';+sip.instance="<urn:uuid:aaaaaaaa-0000-4000-8000-00000000000a>"'

    def registerTCP(self, port: int, listed: list[int]) -> None:
        source = Peer("TCP", "127.0.0.1", port)
        contact = f"<sip:alice@127.0.0.1:{port};transport=tcp>{self.INSTANCE}"
        self.receive(register(branch=f"r{port}", contact=contact, transport="TCP", port=port),
                     source)
        forwarded = self.takeOne(UPSTREAM)
        contacts = ", ".join(f"<sip:alice@127.0.0.1:{p};transport=tcp>;expires=3600"
                             f"{self.INSTANCE}" for p in listed)
        self.receive(answer(forwarded.toBytes(), 200, extra=f"Contact: {contacts}"), UPSTREAM)
        self.takeOne(source)

    def test_reconnectedPhoneReplacesItsBinding(self) -> None:
        """
        A TCP phone reconnects from a new port and registers again; the
        registrar replaces its binding by +sip.instance and lists only the
        new one: the old ones go.
        """
        self.registerTCP(40001, [40001])
        self.registerTCP(40002, [40002])
        self.registerTCP(40003, [40003])
        self.assertEqual([b.flow.port for b in self.proxy.registrations], [40003])
        self.assertEqual(
            self.proxy.metrics.value("sipxmpp_sip_bindings_replaced_total"), 2)

    def test_replacedBindingLogged(self) -> None:
        with capturedLogs() as logs:
            self.registerTCP(40001, [40001])
            self.registerTCP(40002, [40002])
        [line] = [e for e in logs if "replaced" in str(e.get("log_format"))]
        self.assertEqual((line["aor"], line["flow"]),
                         ("sip:alice@example.test", Peer("TCP", "127.0.0.1", 40001)))

    def test_otherDevicesKept(self) -> None:
        self.registerTCP(40001, [40001])
        self.registerTCP(40002, [40001, 40002])
        self.assertEqual(sorted(b.flow.port for b in self.proxy.registrations),
                         [40001, 40002])
        self.assertEqual(
            self.proxy.metrics.value("sipxmpp_sip_bindings_replaced_total"), 0)


class ContactModeTests(ProxyTestCase):
    registerMode = "contact"

    def test_contactRewrittenAndRestored(self) -> None:
        self.receive(register(contact="<sip:alice@127.0.0.1:5080;ob>;expires=600"), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.paths, [])
        [contact] = forwarded.contacts
        self.assertTrue(contact.uriText.startswith("sip:sx"), contact.text)
        self.assertTrue(contact.uriText.endswith("@127.0.0.1:5060"), contact.text)
        self.assertEqual(contact.params.get("expires"), "600")
        self.receive(answer(forwarded.toBytes(), 200,
                            extra=f"Contact: <{contact.uriText}>;expires=600"), UPSTREAM)
        back = self.takeOne(PHONE)
        assert isinstance(back, SIPResponse)
        self.assertEqual(back.contacts[0].uriText, "sip:alice@127.0.0.1:5080;ob")
        # The registrar routes a call to the rewritten contact: it reaches
        # the phone with its own contact as Request-URI.
        self.receive(invite(uri=contact.uriText, via="SIP/2.0/UDP 127.0.0.1:5070"), UPSTREAM)
        call = self.takeOne(PHONE)
        assert isinstance(call, SIPRequest)
        self.assertEqual(call.uriText, "sip:alice@127.0.0.1:5080;ob")


class NoUpstreamTests(ProxyTestCase):
    """
    Without an upstream (a gateway that only takes PUBLISH) nothing is
    forwarded: a phone's request is refused, and a request from anywhere
    else is not mistaken for the upstream's.
    """

    upstream = None

    def test_phoneRequestRefused(self) -> None:
        for request in (invite(), register()):
            self.receive(request, PHONE)
            response = self.takeOne(PHONE)
            assert isinstance(response, SIPResponse)
            self.assertEqual((response.code, response.reason),
                             (403, "Forbidden (no upstream: this gateway forwards nothing)"))
        self.assertEqual(self.proxy.activeTransactions, 2)  # server transactions only
        self.assertEqual(list(self.proxy.registrations), [])


class PublishTests(ProxyTestCase):
    """
    PUBLISH from an allowed publisher is answered by the compositor through
    a server transaction of its own; a phone's PUBLISH is forwarded.
    """

    def setUp(self) -> None:
        super().setUp()
        self.machine = TelephonyStateMachine(self.clock)
        self.compositor = EventStateCompositor(
            self.clock, self.machine, aorOf, lambda aor: aor == "sip:bob@example.test",
            ["127.0.0.9/32"], minExpires=5, maxExpires=3600,
        )
        self.proxy.addLocalHandler(self.compositor)

    def test_answeredHere(self) -> None:
        request = publishRequest(body=KAMAILIO_EARLY_CALLEE)
        self.receive(request, PUBLISHER)
        answer = self.takeOne(PUBLISHER)
        assert isinstance(answer, SIPResponse)
        self.assertEqual((answer.code, answer.getHeader("Expires")), (200, "3600"))
        self.assertIsNotNone(answer.getHeader("SIP-ETag"))
        self.assertEqual(self.machine.stateOf("sip:bob@example.test"), TelephonyState.RINGING)
        self.assertEqual(self.recorder.requests, [])  # nothing forwarded or observed

    def test_retransmissionGetsTheSameAnswer(self) -> None:
        """
        A retransmitted PUBLISH is absorbed by its server transaction: the
        same 200 and entity-tag again, not a second publication.
        """
        request = publishRequest(body=KAMAILIO_EARLY_CALLEE)
        self.receive(request, PUBLISHER)
        first = self.takeOne(PUBLISHER)
        self.receive(publishRequest(body=KAMAILIO_EARLY_CALLEE), PUBLISHER)
        again = self.takeOne(PUBLISHER)
        assert isinstance(first, SIPResponse) and isinstance(again, SIPResponse)
        self.assertEqual(again.getHeader("SIP-ETag"), first.getHeader("SIP-ETag"))
        self.assertEqual(len(self.compositor), 1)

    def test_phonePublishForwarded(self) -> None:
        self.receive(publishRequest(body=KAMAILIO_EARLY_CALLEE, via="127.0.0.1:5080"), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.method, "PUBLISH")
        self.assertEqual(len(self.compositor), 0)


class NoUpstreamPublishTests(PublishTests):
    """
    Without an upstream every PUBLISH is ours: one from a source that is
    not an allowed publisher is refused by the compositor.
    """

    upstream = None

    def test_phonePublishForwarded(self) -> None:
        self.receive(publishRequest(body=KAMAILIO_EARLY_CALLEE, via="127.0.0.1:5080"), PHONE)
        answer = self.takeOne(PHONE)
        assert isinstance(answer, SIPResponse)
        self.assertEqual(answer.code, 403)
        self.assertEqual(len(self.compositor), 0)


def options(uri: str) -> SIPRequest:
    request = message(f"""
OPTIONS {uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKping1
Max-Forwards: 70
From: <sip:probe@127.0.0.1>;tag=p1
To: <{uri}>
Call-ID: ping-1
CSeq: 1 OPTIONS
""")
    assert isinstance(request, SIPRequest)
    return request


class OptionsTests(ProxyTestCase):
    """
    An OPTIONS to the gateway's own address (a keepalive probe) is answered
    here; an OPTIONS to a user or another host is forwarded as before.
    """

    def setUp(self) -> None:
        super().setUp()
        self.proxy.addLocalHandler(OptionsResponder(self.proxy.settings.local.values(),
                                                    ["PUBLISH"]))  # fmt: skip

    def test_toUsAnswered(self) -> None:
        self.receive(options("sip:127.0.0.1:5060"), UPSTREAM)
        answer = self.takeOne(UPSTREAM)
        assert isinstance(answer, SIPResponse)
        self.assertEqual((answer.code, answer.getHeader("Allow")), (200, "OPTIONS, PUBLISH"))
        self.assertEqual(self.recorder.requests, [])

    def test_toOthersForwarded(self) -> None:
        for n, uri in enumerate(["sip:bob@example.test", "sip:example.test",
                                 "sip:127.0.0.1:5070"]):  # fmt: skip
            request = options(uri)
            request.setHeader("Call-ID", f"ping-{n}")
            request.popVia()
            request.prependVia(f"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKfwd{n}")
            self.receive(request, PHONE)
            forwarded = self.takeOne(UPSTREAM)
            assert isinstance(forwarded, SIPRequest)
            self.assertEqual(forwarded.uriText, uri)


@implementer(IClientTransactionUser)
class OwnUser(NullUser):
    def __init__(self) -> None:
        self.events: list[object] = []

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        self.events.append(response.code)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self.events.append(("timeout", code))

    def transactionTerminated(self, transaction: object) -> None:
        self.events.append("terminated")


class OwnRequestTests(ProxyTestCase):
    """
    L{Proxy.sendRequest}: a request of the gateway's own, in a client
    transaction whose responses reach the sender, not the forwarding path.
    """

    def subscribe(self) -> bytes:
        return (b"SUBSCRIBE sip:bob@example.test SIP/2.0\r\nMax-Forwards: 70\r\n"
                b"From: <sip:gateway@example.test>;tag=g1\r\nTo: <sip:bob@example.test>\r\n"
                b"Call-ID: own-1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\nExpires: 600\r\n"
                b"Content-Length: 0\r\n\r\n")

    def test_responseReachesSender(self) -> None:
        user = OwnUser()
        self.proxy.sendRequest(self.subscribe(), UPSTREAM, user)
        sent = self.takeOne(UPSTREAM)
        assert isinstance(sent, SIPRequest)
        self.assertEqual(sent.topVia.sentBy, "127.0.0.1:5060")
        self.assertTrue(sent.topVia.hasRFC3261Branch)
        self.receive(answer(sent.toBytes(), 200), UPSTREAM)
        self.assertEqual(user.events, [200])
        self.assertEqual(self.take(), [])  # not forwarded anywhere
        self.assertEqual(self.recorder.responses, [])
        self.clock.advance(64 * T1)
        self.assertEqual(user.events, [200, "terminated"])
        self.assertEqual(self.proxy.activeTransactions, 0)

    def test_timeout(self) -> None:
        user = OwnUser()
        self.proxy.sendRequest(self.subscribe(), UPSTREAM, user)
        self.clock.advance(64 * T1 + 1)
        self.assertEqual(user.events, [("timeout", 408), "terminated"])


class CallTests(ProxyTestCase):
    def test_outboundCall(self) -> None:
        self.receive(invite(), PHONE)
        sent = self.take()
        self.assertEqual([(getattr(m, "code", None), p) for m, p in sent],
                         [(100, PHONE), (None, UPSTREAM)])
        forwarded = sent[1][0]
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual([r.uriText for r in forwarded.recordRoutes], ["sip:127.0.0.1:5060;lr"])
        self.assertEqual(self.recorder.requests, [("INVITE", Leg(True, "sip:alice@example.test"))])
        data = forwarded.toBytes()
        self.receive(answer(data, 180, "Ringing"), UPSTREAM)
        self.receive(answer(data, 200), UPSTREAM)
        self.assertEqual([m.code for m, _ in self.take()], [180, 200])  # type: ignore[union-attr]
        self.assertEqual([code for _, code, _ in self.recorder.responses], [180, 200])

    def test_endedTransactionsLeaveNoCycles(self) -> None:
        # Once a request's transactions have ended, reference counting frees
        # them with their _Forward: nothing waits for the cyclic collector.
        gc.collect()
        flags = gc.get_debug()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        self.addCleanup(gc.enable)
        self.addCleanup(gc.set_debug, flags)
        self.addCleanup(gc.garbage.clear)
        for code in (200, 486):
            self.receive(invite(branch=f"c{code}"), PHONE)
            data = self.takeOne(UPSTREAM).toBytes()
            self.receive(answer(data, 180, "Ringing"), UPSTREAM)
            self.receive(answer(data, code, "OK" if code == 200 else "Busy Here"), UPSTREAM)
            self.take()
        self.receive(register(branch="r9"), PHONE)
        self.receive(answer(self.takeOne(UPSTREAM).toBytes(), 200,
                            extra="Contact: <sip:alice@127.0.0.1:5080>;expires=60"), UPSTREAM)
        self.clock.advance(64 * T1)
        self.clock.advance(64 * T1)
        self.assertEqual(self.proxy.activeTransactions, 0)
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
        self.assertFalse(kinds & {"_Forward", "ServerTransaction", "ClientTransaction"}, kinds)

    def test_overloadRefusesNewCallsOnly(self) -> None:
        # A call up before the overload goes on; a new INVITE gets 503 with
        # Retry-After from a server transaction, which absorbs its ACK.
        self.receive(invite(), PHONE)
        data = self.takeOne(UPSTREAM).toBytes()
        self.receive(answer(data, 200), UPSTREAM)
        self.take()
        overloaded = [True]
        self.proxy.isOverloaded = lambda: overloaded[0]
        self.receive(invite(branch="new"), PHONE)
        sent = self.take()
        self.assertEqual([(getattr(m, "code", None), p) for m, p in sent],
                         [(100, PHONE), (503, PHONE)])
        refusal = sent[1][0]
        assert isinstance(refusal, SIPResponse)
        self.assertEqual(refusal.getHeader("Retry-After"), "5")
        self.assertEqual(self.proxy.metrics.value("sipxmpp_sip_refused_total",
                                                  reason="overload"), 1)
        ack = message(f"""
ACK sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKnew;rport
Max-Forwards: 70
From: "Alice" <sip:alice@example.test>;tag=a1
To: {refusal.getHeader("To")}
Call-ID: call-1
CSeq: 1 ACK
""")
        self.receive(ack, PHONE)
        self.assertEqual(self.take(), [])
        # In-dialog requests of the call that is up still go through.
        reinvite = invite(branch="re", extra="Route: <sip:127.0.0.1:5060;lr>")
        reinvite.setHeader("To", "<sip:bob@example.test>;tag=b1")
        self.receive(parseMessage(reinvite.toBytes()), PHONE)
        self.assertEqual([p for _, p in self.take()], [PHONE, UPSTREAM])
        overloaded[0] = False
        self.receive(invite(branch="later"), PHONE)
        self.assertEqual([p for _, p in self.take()], [PHONE, UPSTREAM])

    def test_inboundCallToRegisteredPhone(self) -> None:
        self.registerAlice()
        request = invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                         extra="Route: <sip:127.0.0.1:5060;lr>")
        self.receive(request, UPSTREAM)
        forwarded = self.takeOne(PHONE)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.routes, [])
        self.assertEqual(len(forwarded.recordRoutes), 1)
        self.assertEqual(self.recorder.requests[-1],
                         ("INVITE", Leg(False, "sip:alice@example.test")))

    def test_inboundToUnknownContactRefused(self) -> None:
        self.receive(invite(uri="sip:mallory@198.51.100.9", via="SIP/2.0/UDP 127.0.0.1:5070"),
                     UPSTREAM)
        response = self.takeOne(UPSTREAM)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 403)

    def test_untrustedSourceRefused(self) -> None:
        self.receive(invite(via="SIP/2.0/UDP 192.0.2.7:5060"), STRANGER)
        response = self.takeOne(STRANGER)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 403)
        self.assertEqual(self.recorder.requests, [])

    def test_policyResponses(self) -> None:
        for extra, uri, code in [
            ("Max-Forwards: 0", "sip:bob@example.test", 483),
            ("Proxy-Require: foo", "sip:bob@example.test", 420),
        ]:
            request = invite(uri=uri, branch=f"p{code}")
            if extra.startswith("Max-Forwards"):
                request.setMaxForwards(0)
            elif extra:
                request.addHeader("Proxy-Require", "foo")
            self.receive(request, PHONE)
            response = self.takeOne(PHONE)
            assert isinstance(response, SIPResponse)
            self.assertEqual(response.code, code)

    def test_loopDetected(self) -> None:
        self.receive(invite(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        # The same request comes back to us unchanged: a loop, not a spiral.
        self.receive(forwarded, Peer("UDP", "127.0.0.1", 5070))
        response = self.takeOne(UPSTREAM)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 482)

    def test_loopDetectedWhateverTheViaSpelling(self) -> None:
        # Our Via comes back joined with the next hop's on one line and with
        # its parameter name in capitals: still a loop.
        self.receive(invite(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        ours = forwarded.getHeaders("Via")[0]
        data = forwarded.toBytes().replace(f"Via: {ours}\r\n".encode(), b"", 1)
        data = data.replace(b"Via: ", f"Via: {ours.replace('branch=', 'BRANCH=')} , ".encode(), 1)
        looped = parseMessage(data)
        self.assertEqual(len(looped.vias), 2)
        self.receive(looped, Peer("UDP", "127.0.0.1", 5070))
        response = self.takeOne(UPSTREAM)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 482)

    def test_spiralIsNoLoop(self) -> None:
        # Back from the upstream with a new Request-URI: a spiral, forwarded.
        self.receive(register(), PHONE)
        self.receive(answer(self.takeOne(UPSTREAM).toBytes(), 200,
                            extra="Contact: <sip:alice@127.0.0.1:5080>;expires=3600"), UPSTREAM)
        self.take()
        self.receive(invite(), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        forwarded.setURI("sip:alice@127.0.0.1:5080")
        forwarded.prependVia("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKk1")
        self.receive(parseMessage(forwarded.toBytes()), UPSTREAM)
        sent = self.take()
        self.assertEqual([(getattr(m, "method", None), p) for m, p in sent if p == PHONE],
                         [("INVITE", PHONE)])

    def test_inviteRetransmission(self) -> None:
        self.receive(invite(), PHONE)
        self.take()
        self.receive(invite(), PHONE)
        sent = self.take()
        self.assertEqual([(getattr(m, "code", None), p) for m, p in sent], [(100, PHONE)])

    def test_cancel(self) -> None:
        self.receive(invite(), PHONE)
        forwarded = self.take()[1][0]
        self.receive(answer(forwarded.toBytes(), 180, "Ringing"), UPSTREAM)
        self.take()
        cancel = cancelFor(invite())
        self.receive(cancel, PHONE)
        sent = self.take()
        self.assertEqual(sent[0][1], PHONE)
        self.assertEqual(sent[0][0].code, 200)  # type: ignore[union-attr]
        upstreamCancel = sent[1][0]
        assert isinstance(upstreamCancel, SIPRequest)
        self.assertEqual((upstreamCancel.method, sent[1][1]), ("CANCEL", UPSTREAM))
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(upstreamCancel.topVia.branch, forwarded.topVia.branch)
        self.receive(answer(upstreamCancel.toBytes(), 200), UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 487, "Request Terminated"), UPSTREAM)
        sent = self.take()
        summary = {(m.method if isinstance(m, SIPRequest) else str(m.code), p) for m, p in sent}
        self.assertEqual(summary, {("487", PHONE), ("ACK", UPSTREAM)})
        self.assertEqual(len(sent), 2)

    def test_cancelRetransmissionAbsorbed(self) -> None:
        """
        A retransmitted CANCEL (same branch) is absorbed by the CANCEL's
        server transaction: the same 200 again, no second CANCEL upstream,
        and the give-up timer still counts from the first.
        """
        self.receive(invite(), PHONE)
        forwarded = self.take()[1][0]
        self.receive(answer(forwarded.toBytes(), 180, "Ringing"), UPSTREAM)
        self.take()
        self.receive(cancelFor(invite()), PHONE)
        first = self.take()
        self.assertEqual([p for _, p in first], [PHONE, UPSTREAM])
        self.clock.pump([0.5] * 20)
        upstreamCancels = len([p for _, p in self.take() if p == UPSTREAM])
        self.receive(cancelFor(invite()), PHONE)
        again = self.take()
        self.assertEqual([(m.code, p) for m, p in again], [(200, PHONE)])  # type: ignore[union-attr]
        self.assertEqual(again[0][0].toBytes(), first[0][0].toBytes())
        self.clock.pump([0.5] * 43 + [0.499])
        sent = self.take()
        self.assertEqual([m for m, p in sent if p == PHONE], [])
        # Only the first CANCEL's retransmissions (Timer E, up to T2).
        upstreamCancels += len([p for _, p in sent if p == UPSTREAM])
        self.assertEqual(upstreamCancels, 10)
        self.clock.advance(0.002)
        self.assertEqual([m.code for m, p in self.take() if p == PHONE],  # type: ignore[union-attr]
                         [408])

    def test_cancelBeforeProvisionalWaits(self) -> None:
        self.receive(invite(), PHONE)
        forwarded = self.take()[1][0]
        cancel = cancelFor(invite())
        self.receive(cancel, PHONE)
        self.assertEqual([p for _, p in self.take()], [PHONE])  # only the 200 to CANCEL
        self.receive(answer(forwarded.toBytes(), 100, "Trying", toTag=None), UPSTREAM)
        self.assertEqual([(m.method, p) for m, p in self.take()],  # type: ignore[union-attr]
                         [("CANCEL", UPSTREAM)])

    def test_unknownCancel(self) -> None:
        cancel = cancelFor(invite())
        self.receive(cancel, PHONE)
        self.assertEqual(self.takeOne(PHONE).code, 481)  # type: ignore[union-attr]

    def test_upstreamSilentTimesOut(self) -> None:
        self.receive(invite(), PHONE)
        self.take()
        self.clock.advance(64 * T1)
        responses = [m for m, p in self.take() if isinstance(m, SIPResponse) and p == PHONE]
        self.assertEqual([r.code for r in responses], [408])
        self.assertEqual(self.recorder.responses[-1][1], 408)

    def test_timerCCancelsRingingCall(self) -> None:
        self.receive(invite(), PHONE)
        forwarded = self.take()[1][0]
        self.receive(answer(forwarded.toBytes(), 180, "Ringing"), UPSTREAM)
        self.take()
        self.clock.advance(TIMER_C)
        self.assertEqual([(getattr(m, "method", None), p) for m, p in self.take()],
                         [("CANCEL", UPSTREAM)])
        self.clock.advance(64 * T1)
        codes = [m.code for m, p in self.take() if isinstance(m, SIPResponse)]
        self.assertEqual(codes, [408])
        # The INVITE branch that never got a final answer is gone (§9.1),
        # not kept for good; its CANCEL's transaction ends on its own.
        self.assertNotIn((forwarded.topVia.branch, "INVITE"), self.proxy._clients)
        self.clock.advance(64 * T1)
        self.assertEqual(self.proxy._clients, {})
        self.assertEqual(self.proxy.activeTransactions, 0)

    def test_deliveryFailedAnswers503(self) -> None:
        self.receive(invite(), PHONE)
        self.take()
        self.proxy.deliveryFailed(UPSTREAM)
        self.assertEqual([m.code for m, _ in self.take()], [503])  # type: ignore[union-attr]

    def test_ackFor2xxForwardedStatelessly(self) -> None:
        ack = message("""
ACK sip:bob@127.0.0.1:5090 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKack1
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>
From: <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 1 ACK
""")
        self.receive(ack, PHONE)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.method, "ACK")
        self.assertEqual(forwarded.routes, [])
        self.assertEqual(len(forwarded.vias), 2)

    def test_ackFor2xxWithTheInvitesBranch(self) -> None:
        """
        A phone whose ACK for a 2xx keeps the INVITE's branch (the server
        transaction is in Accepted, RFC 6026): the ACK is still the 2xx's
        and goes on to the upstream, not absorbed like a non-2xx's.
        """
        self.receive(invite(), PHONE)
        forwarded = [m for m, _ in self.take() if isinstance(m, SIPRequest)][0]
        self.receive(answer(forwarded.toBytes(), 200), UPSTREAM)
        self.take()
        ack = message("""
ACK sip:bob@127.0.0.1:5090 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKi1;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 1 ACK
""")
        self.receive(ack, PHONE)
        sent = self.takeOne(UPSTREAM)
        self.assertEqual(getattr(sent, "method", None), "ACK")

    def test_foreignResponseDropped(self) -> None:
        response = message("""
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.255:5060;branch=z9hG4bKx
From: <sip:a@example.test>;tag=1
To: <sip:b@example.test>;tag=2
Call-ID: c
CSeq: 1 INVITE
""")
        self.receive(response, UPSTREAM)
        self.assertEqual(self.sent, [])
        self.assertEqual(
            self.proxy.metrics.value("sipxmpp_sip_responses_dropped_total", reason="not-ours"), 1)

    def test_bigRequestGoesOverTCP(self) -> None:
        self.receive(invite(body="v=0\r\n" + "a=x-padding:" + "x" * 1400 + "\r\n"), PHONE)
        forwarded = [(m, p) for m, p in self.take() if isinstance(m, SIPRequest)]
        self.assertEqual(forwarded[0][1], Peer("TCP", "127.0.0.1", 5070))
        self.assertEqual(forwarded[0][0].topVia.transport, "TCP")

    def test_bigRequestToUDPPhoneStaysUDP(self) -> None:
        """
        Only the upstream is assumed to take TCP: a big request for a phone
        that registered over UDP is sent to it over UDP.
        """
        self.registerAlice()
        self.receive(invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                            extra="Route: <sip:127.0.0.1:5060;lr>",
                            body="v=0\r\n" + "a=x-padding:" + "x" * 1400 + "\r\n"), UPSTREAM)
        forwarded = self.takeOne(PHONE)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.topVia.transport, "UDP")

    def test_doubleRecordRouteAcrossTransports(self) -> None:
        self.receive(invite(via="SIP/2.0/TCP 127.0.0.1:40001"), PHONE_TCP)
        forwarded = [m for m, p in self.take() if isinstance(m, SIPRequest)][0]
        self.assertEqual([r.uriText for r in forwarded.recordRoutes],
                         ["sip:127.0.0.1:5060;lr", "sip:127.0.0.1:5060;transport=tcp;lr"])


PHONE_B = Peer("UDP", "127.0.0.1", 5082)
GRUU_A = "sip:alice@example.test;gr=urn:uuid:aaaaaaaa-0000-4000-8000-00000000000a"
GRUU_B = "sip:alice@example.test;gr=urn:uuid:bbbbbbbb-0000-4000-8000-00000000000b"


def byeFromUpstream(uri: str, callID: str) -> SIPRequest:
    """
    The far end's BYE, as the registrar loose-routes it to us: the
    Request-URI is the phone's dialog contact (here its GRUU).
    """
    request = message(f"""
BYE {uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye-{callID}
Max-Forwards: 69
Route: <sip:127.0.0.1:5060;lr>
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>;tag=a1
Call-ID: {callID}
CSeq: 2 BYE
""")
    assert isinstance(request, SIPRequest)
    return request


class GRUUTests(ProxyTestCase):
    """
    RFC 5627: two devices of one user each use their pub-gruu as Contact;
    the GRUUs differ only in C{gr}, and each is a route of its own.
    """

    def call(self, gruu: str, source: Peer, callID: str) -> None:
        request = invite(via=f"SIP/2.0/UDP 127.0.0.1:{source.port}", branch=callID)
        request.setContacts([f"<{gruu}>;+sip.instance=\"<urn:uuid:x>\""])
        request = parseMessage(request.toBytes().replace(b"call-1", callID.encode()))
        self.receive(request, source)
        self.take()

    def test_byeToEachDeviceGoesToIt(self) -> None:
        self.call(GRUU_A, PHONE, "call-a")
        self.call(GRUU_B, PHONE_B, "call-b")
        self.receive(byeFromUpstream(GRUU_A, "call-a"), UPSTREAM)
        forwarded = self.takeOne(PHONE)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.uriText, GRUU_A)
        self.receive(byeFromUpstream(GRUU_B, "call-b"), UPSTREAM)
        forwarded = self.takeOne(PHONE_B)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.uriText, GRUU_B)

    def test_requestURIOfPathModeNeverRewritten(self) -> None:
        """
        In Path mode the Request-URI is the phone's own: it is never
        replaced by what the table holds (another spelling of it, or
        another device's contact).
        """
        self.call(GRUU_A, PHONE, "call-a")
        spelled = GRUU_A.replace(";gr=", ";transport=udp;gr=")
        self.receive(byeFromUpstream(spelled, "call-a"), UPSTREAM)
        forwarded = self.takeOne(PHONE)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.uriText, spelled)

    def test_unknownGRUURefused(self) -> None:
        self.call(GRUU_A, PHONE, "call-a")
        self.receive(byeFromUpstream(GRUU_B, "call-b"), UPSTREAM)
        response = self.takeOne(UPSTREAM)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 403)


class ReportTests(ProxyTestCase):
    """
    A 481 from the next hop, a timeout and a replaced binding are counted
    each time and logged at most once a minute per peer (or AoR), with the
    number held back since.
    """

    def lines(self, logs: list[dict[str, object]], word: str) -> list[dict[str, object]]:
        return [e for e in logs if word in str(e.get("log_format"))]

    def test_timeoutsCountedLogRateLimited(self) -> None:
        with capturedLogs() as logs:
            for n in range(3):
                self.receive(invite(branch=f"t{n}"), PHONE)
            self.clock.advance(64 * T1)
            self.clock.advance(60)
            self.receive(invite(branch="t9"), PHONE)
            self.clock.advance(64 * T1)
        self.assertEqual(self.proxy.metrics.value(
            "sipxmpp_sip_transaction_timeouts_total", code="408"), 4)
        self.assertEqual([e["held"] for e in self.lines(logs, "no answer")], [0, 2])

    def test_481Counted(self) -> None:
        bye = message("""
BYE sip:bob@127.0.0.1:5090 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKbye1
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>
From: <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 2 BYE
""")
        assert isinstance(bye, SIPRequest)
        with capturedLogs() as logs:
            self.receive(bye, PHONE)
            forwarded = self.takeOne(UPSTREAM)
            self.receive(answer(forwarded.toBytes(), 481, "Call/Transaction Does Not Exist"),
                         UPSTREAM)
        self.assertEqual(self.takeOne(PHONE).code, 481)  # type: ignore[union-attr]
        self.assertEqual(self.proxy.metrics.value(
            "sipxmpp_sip_answered_481_total", method="BYE"), 1)
        [line] = self.lines(logs, "answered 481")
        self.assertEqual((line["peer"], line["method"]), (UPSTREAM, "BYE"))

    def test_cancelAnswered481Counted(self) -> None:
        self.receive(invite(), PHONE)
        forwarded = self.take()[1][0]
        self.receive(answer(forwarded.toBytes(), 180, "Ringing"), UPSTREAM)
        self.receive(cancelFor(invite()), PHONE)
        cancel = [m for m, p in self.take() if p == UPSTREAM][0]
        self.receive(answer(cancel.toBytes(), 481, "Call/Transaction Does Not Exist"),
                     UPSTREAM)
        self.assertEqual(self.proxy.metrics.value(
            "sipxmpp_sip_answered_481_total", method="CANCEL"), 1)


ANONYMOUS = '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=a1'
CAROL = "sip:carol@example.test"


def registerLine(user: str, branch: str, source: Peer = PHONE,
                 contact: str | None = None) -> SIPRequest:
    """
    A REGISTER of C{user} from C{source} (one line of a phone).
    """
    request = message(f"""
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{source.port};branch=z9hG4bK{branch};rport
Max-Forwards: 70
From: <sip:{user}@example.test>;tag=f{branch}
To: <sip:{user}@example.test>
Call-ID: reg-{branch}
CSeq: 1 REGISTER
Contact: {contact or f"<sip:{user}@127.0.0.1:{source.port}>"}
Expires: 3600
""")
    assert isinstance(request, SIPRequest)
    return request


def anonymousInvite(branch: str = "anon1", extra: str = "",
                    via: str = "SIP/2.0/UDP 127.0.0.1:5080") -> SIPRequest:
    """
    A phone's INVITE with the From of RFC 3323 §4.1.1.3.
    """
    request = invite(branch=branch, via=via, extra=extra)
    request.setHeader("From", ANONYMOUS)
    return request


class AnonymousCallerTests(ProxyTestCase):
    """
    A phone's request with an anonymous From (RFC 3323) is of the user
    registered from where it comes; a P-Asserted-Identity from a phone is
    never believed and never forwarded (RFC 3325 §5).
    """

    def registerLine(self, user: str, branch: str, source: Peer = PHONE,
                     contact: str | None = None) -> None:
        self.receive(registerLine(user, branch, source, contact), source)
        forwarded = self.takeOne(UPSTREAM)
        assert isinstance(forwarded, SIPRequest)
        granted = forwarded.contacts[0].uriText
        self.receive(answer(forwarded.toBytes(), 200, extra=f"Contact: <{granted}>;expires=3600"),
                     UPSTREAM)
        self.takeOne(source)

    def forwardedAnonymous(self, source: Peer = PHONE, extra: str = "") -> tuple[SIPRequest, Leg]:
        via = f"SIP/2.0/UDP 127.0.0.1:{source.port}"
        self.calls = getattr(self, "calls", 0) + 1
        self.receive(anonymousInvite(branch=f"anon{self.calls}", via=via, extra=extra), source)
        forwarded = [m for m, p in self.take() if p == UPSTREAM]
        self.assertEqual(len(forwarded), 1)
        request = forwarded[0]
        assert isinstance(request, SIPRequest)
        method, leg = self.recorder.requests[-1]
        self.assertEqual(method, "INVITE")
        return request, leg

    def test_anonymousOfTheRegisteredFlow(self) -> None:
        """
        The anonymous INVITE is of the user registered from its source
        (not of C{anonymous@anonymous.invalid}), and goes upstream with its
        From untouched.
        """
        self.registerAlice()
        request, leg = self.forwardedAnonymous()
        self.assertEqual(leg, Leg(True, "sip:alice@example.test"))
        self.assertEqual(request.getHeader("From"), ANONYMOUS)

    def test_anonymousFromUnknownFlowIsOfNoOne(self) -> None:
        """
        Without a registration from its source, an anonymous request is of
        no user (never of a user named C{anonymous}).
        """
        self.registerAlice(source=Peer("UDP", "127.0.0.1", 5090),
                           contact="<sip:alice@127.0.0.1:5090>")
        _, leg = self.forwardedAnonymous()
        self.assertEqual(leg, Leg(True, None))

    def test_otherAnonymousSpellings(self) -> None:
        """
        User C{anonymous} at any host, or any host under C{.invalid}, is
        anonymous too.
        """
        self.registerAlice()
        for n, sender in enumerate(['"Anonymous" <sip:anonymous@example.test>;tag=x',
                                    "<sip:restricted@anonymous.invalid>;tag=x",
                                    "<sip:Anonymous@localhost>;tag=x"]):
            request = anonymousInvite(branch=f"spell{n}")
            request.setHeader("From", sender)
            self.receive(request, PHONE)
            self.assertEqual(self.recorder.requests[-1],
                             ("INVITE", Leg(True, "sip:alice@example.test")))

    def test_phonesAssertedIdentityIgnoredAndRemoved(self) -> None:
        """
        A P-Asserted-Identity sent by a phone names nobody here, and is not
        forwarded: the upstream might trust the gateway's requests.
        """
        self.registerAlice()
        request, leg = self.forwardedAnonymous(
            extra="P-Asserted-Identity: <sip:bob@example.test>")
        self.assertEqual(leg, Leg(True, "sip:alice@example.test"))
        self.assertFalse(request.hasHeader("P-Asserted-Identity"))
        self.receive(invite(branch="named", extra="P-Asserted-Identity: <sip:bob@example.test>"),
                     PHONE)
        named = [m for m, p in self.take() if p == UPSTREAM][0]
        self.assertFalse(named.hasHeader("P-Asserted-Identity"))
        self.assertEqual(self.recorder.requests[-1],
                         ("INVITE", Leg(True, "sip:alice@example.test")))

    def test_noAssertedIdentityWithoutRegistration(self) -> None:
        """
        Without a registration from its source, a phone's asserted
        identity still names no one.
        """
        _, leg = self.forwardedAnonymous(extra="P-Asserted-Identity: <sip:bob@example.test>")
        self.assertEqual(leg, Leg(True, None))

    def test_twoLinesPreferredIdentity(self) -> None:
        """
        Two AoRs registered from one address: P-Preferred-Identity picks
        one of them; one not registered there, or none, attributes the
        anonymous request to no one.
        """
        self.registerLine("alice", "la")
        self.registerLine("carol", "lc")
        self.assertEqual(self.proxy.routes.registrations.aorsFrom(PHONE),
                         {"sip:alice@example.test", CAROL})
        _, leg = self.forwardedAnonymous(extra=f"P-Preferred-Identity: <{CAROL}>")
        self.assertEqual(leg, Leg(True, CAROL))
        _, leg = self.forwardedAnonymous(extra="P-Preferred-Identity: <sip:bob@example.test>")
        self.assertEqual(leg, Leg(True, None))
        _, leg = self.forwardedAnonymous()
        self.assertEqual(leg, Leg(True, None))
        _, leg = self.forwardedAnonymous(extra="P-Preferred-Identity: <sip:broken")
        self.assertEqual(leg, Leg(True, None))

    def test_udpPhoneListeningOnAnotherPort(self) -> None:
        """
        A UDP phone that registers from one port a contact on another is
        reached at the contact's port, and its requests from the first
        port are still its own.
        """
        sender = Peer("UDP", "127.0.0.1", 5081)
        self.registerLine("alice", "lp", source=sender, contact="<sip:alice@127.0.0.1:5080>")
        [(_, binding)] = self.proxy.routes.registrations.items()
        self.assertEqual((binding.flow, binding.source), (PHONE, sender))
        _, leg = self.forwardedAnonymous(source=sender)
        self.assertEqual(leg, Leg(True, "sip:alice@example.test"))

    def test_expiredRegistrationNamesNoOne(self) -> None:
        """
        Once the registration from the phone's address expired, its
        anonymous requests are of no one.
        """
        self.registerAlice()
        self.clock.advance(3601)
        _, leg = self.forwardedAnonymous()
        self.assertEqual(leg, Leg(True, None))
        self.assertEqual(self.proxy.routes.registrations.aorsFrom(PHONE), set())

    def test_deregisteredLineNamesNoOne(self) -> None:
        """
        A de-registered (or replaced) binding no longer names the user of
        its address.
        """
        self.registerLine("alice", "la")
        self.proxy.routes.registrations.retain("sip:alice@example.test", ())
        self.assertEqual(self.proxy.routes.registrations.aorsFrom(PHONE), set())

    def test_upstreamAssertedIdentityKeptForThePhone(self) -> None:
        """
        The upstream's P-Asserted-Identity reaches the phone (it identifies
        the caller), unless the caller asked for privacy (RFC 3325 §5:
        C{Privacy: id}); the request is the callee's either way.
        """
        self.registerAlice()
        for n, (privacy, kept) in enumerate([("", True), ("Privacy: id", False),
                                             ("Privacy: header;id", False),
                                             ("Privacy: none", True)]):
            extra = "Route: <sip:127.0.0.1:5060;lr>\nP-Asserted-Identity: <sip:bob@example.test>"
            request = invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                             branch=f"up{n}", extra=extra + ("\n" + privacy if privacy else ""))
            request.setHeader("From", ANONYMOUS)
            self.receive(request, UPSTREAM)
            forwarded = self.takeOne(PHONE)
            assert isinstance(forwarded, SIPRequest)
            self.assertEqual(forwarded.hasHeader("P-Asserted-Identity"), kept, privacy)
            self.assertEqual(self.recorder.requests[-1],
                             ("INVITE", Leg(False, "sip:alice@example.test")))
