"""
Tests for L{sipxmpp.sip.core.presenceagent}: SIP watchers subscribe to a
user's presence (RFC 3856, RFC 6665 notifier), sans-IO on a L{Clock} with
a fake C{send}, and once through the real proxy.
"""

from __future__ import annotations

import ipaddress
from itertools import count

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.presence import InMemoryPresenceSource, UserPresence
from sipxmpp.sip.core.presenceagent import TAG_PREFIX, PresenceAgent
from sipxmpp.sip.core.subscriptions import SubscriptionState, parseSubscriptionState
from sipxmpp.sip.core.transaction import IClientTransactionUser
from sipxmpp.sip.wire.headers import parseEvent
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.pidf import Presence, parsePresence
from sipxmpp.sip.wire.responses import makeResponse
from tests.unit.test_sip_proxy import PHONE, UPSTREAM, ProxyTestCase, aorOf, message

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
CAROL = "sip:carol@example.test"
CONTACT = "sip:sipxmpp@127.0.0.1:5060"
STRANGER = Peer("UDP", "192.0.2.7", 5060)
_branches = count(1)


def subscribe(uri: str = ALICE, event: str = "presence", expires: int | None = 600,
              cseq: int = 1, toTag: str | None = None, callID: str = "w1",
              extra: str = "", fromURI: str = BOB) -> SIPRequest:  # fmt: skip
    lines = [
        f"SUBSCRIBE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKs{next(_branches)}",
        "Max-Forwards: 70",
        f"From: \"Bob\" <{fromURI}>;tag=bobtag",
        f"To: <{uri}>" + (f";tag={toTag}" if toTag else ""),
        f"Call-ID: {callID}",
        f"CSeq: {cseq} SUBSCRIBE",
        "Contact: <sip:bob@127.0.0.1:5080;transport=udp>",
        f"Event: {event}",
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    request = message("\n".join(lines))
    assert isinstance(request, SIPRequest)
    return request


class Sent:
    def __init__(self, data: bytes, target: Peer, user: IClientTransactionUser) -> None:
        self.target = target
        self.user = user
        via = f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n{next(_branches)}"
        line, rest = data.split(b"\r\n", 1)
        request = parseMessage(line + b"\r\n" + via.encode() + b"\r\n" + rest)
        assert isinstance(request, SIPRequest)
        self.request = request

    @property
    def state(self) -> SubscriptionState:
        return parseSubscriptionState(self.request.getHeader("subscription-state") or "")

    @property
    def presence(self) -> Presence:
        self.assertBody()
        return parsePresence(self.request.body)

    def assertBody(self) -> None:
        assert self.request.contentType == "application/pidf+xml", self.request.contentType

    def respond(self, code: int = 200) -> None:
        response = makeResponse(self.request, code, None)
        assert isinstance(response, SIPResponse)
        self.user.transactionResponse(object(), response)


class AgentTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.source = InMemoryPresenceSource()
        self.sent: list[Sent] = []
        self.decisions: dict[str, str] = {BOB: "active"}
        self.metrics = Metrics()
        self.agent = PresenceAgent(
            self.clock, self.source,
            lambda data, target, user: self.sent.append(Sent(data, target, user)),
            aorOf, lambda aor: aor in (ALICE, CAROL),
            lambda watcher, user: self.decisions.get(watcher, "rejected"),  # type: ignore[arg-type,return-value]
            CONTACT, watchers=(ipaddress.ip_network("127.0.0.0/8"),),
            minExpires=60, maxExpires=3600, defaultExpires=1800, metrics=self.metrics,
        )  # fmt: skip

    def answer(self, request: SIPRequest, source: Peer = PHONE) -> SIPResponse:
        response = self.agent.answer(request, source)
        self.clock.advance(0)
        return response

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent

    def takeOne(self) -> Sent:
        sent = self.take()
        self.assertEqual(len(sent), 1, [s.request for s in sent])
        return sent[0]

    def subscribed(self, **kwargs: object) -> tuple[SIPResponse, Sent]:
        response = self.answer(subscribe(**kwargs))  # type: ignore[arg-type]
        return response, self.takeOne()


class AcceptsTests(AgentTestCase):
    def test_forwarding(self) -> None:
        """
        With an upstream, only presence for provisioned users and our own
        dialogs are taken; other events and users go upstream.
        """
        self.assertTrue(self.agent.accepts(subscribe(), PHONE, True))
        self.assertFalse(self.agent.accepts(subscribe(event="message-summary"), PHONE, True))
        self.assertFalse(self.agent.accepts(subscribe(uri="sip:dave@example.test"), PHONE, True))
        self.assertTrue(self.agent.accepts(subscribe(toTag=f"{TAG_PREFIX}x"), PHONE, True))
        self.assertFalse(self.agent.accepts(subscribe(toTag="theirs"), PHONE, True))

    def test_notForwarding(self) -> None:
        """
        Without an upstream every SUBSCRIBE is ours (to refuse).
        """
        self.assertTrue(self.agent.accepts(subscribe(event="dialog"), PHONE, False))

    def test_eventPackage(self) -> None:
        self.assertEqual(parseEvent("Presence ; id=7"), ("presence", "7"))
        self.assertEqual(parseEvent("dialog"), ("dialog", None))
        self.assertEqual(parseEvent(None), (None, None))


class RefusalTests(AgentTestCase):
    def assertRefused(self, request: SIPRequest, code: int, source: Peer = PHONE,
                      header: tuple[str, str] | None = None) -> None:  # fmt: skip
        response = self.answer(request, source)
        self.assertEqual(response.code, code, response.reason)
        if header is not None:
            self.assertEqual(response.getHeader(header[0]), header[1])
        self.assertEqual(self.sent, [])
        self.assertEqual(len(self.agent), 0)

    def test_badEvent(self) -> None:
        self.assertRefused(subscribe(event="dialog"), 489, header=("Allow-Events", "presence"))
        self.assertRefused(subscribe(event=""), 489)

    def test_unknownUser(self) -> None:
        self.assertRefused(subscribe(uri="sip:dave@example.test"), 404)
        self.assertRefused(subscribe(uri="sip:example.test"), 404)

    def test_tooBrief(self) -> None:
        self.assertRefused(subscribe(expires=59), 423, header=("Min-Expires", "60"))

    def test_malformed(self) -> None:
        """
        A missing From tag or Contact, an unreadable Expires or CSeq: 400.
        """
        request = subscribe()
        request.setHeader("From", f"<{BOB}>")
        self.assertRefused(request, 400)
        request = subscribe()
        request.removeHeader("Contact")
        self.assertRefused(request, 400)
        self.assertRefused(subscribe(extra="Expires: soon", expires=None), 400)

    def test_notAcceptable(self) -> None:
        self.assertRefused(subscribe(extra="Accept: application/xpidf+xml"), 406,
                           header=("Accept", "application/pidf+xml"))  # fmt: skip

    def test_rejected(self) -> None:
        """
        A watcher C{authorise} rejects gets 403; so does a source outside
        the watcher networks.
        """
        self.assertRefused(subscribe(fromURI=CAROL), 403)
        self.assertRefused(subscribe(), 403, source=STRANGER)

    def test_noDialog(self) -> None:
        self.assertRefused(subscribe(toTag=f"{TAG_PREFIX}gone", cseq=2), 481)

    def test_counted(self) -> None:
        self.answer(subscribe(event="dialog"))
        self.assertEqual(self.metrics.value("sipxmpp_sip_presence_subscribe_total", code="489"),
                         1)  # fmt: skip


class SubscriptionTests(AgentTestCase):
    def test_active(self) -> None:
        """
        200 with our tag, Contact, Expires and the Record-Route set; then a
        NOTIFY active with the user's presence, in the dialog.
        """
        self.source.set(ALICE, UserPresence("away", "Lunch"))
        request = subscribe(extra="Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>")
        response = self.answer(request)
        self.assertEqual((response.code, response.getHeader("expires")), (200, "600"))
        tag = response.toTag
        assert tag is not None
        self.assertTrue(tag.startswith(TAG_PREFIX))
        self.assertEqual(response.contacts[0].uriText, CONTACT)
        self.assertEqual([r.uriText for r in response.recordRoutes],
                         ["sip:10.0.0.1;lr", "sip:10.0.0.2;lr"])  # fmt: skip
        notify = self.takeOne()
        sent = notify.request
        self.assertEqual(notify.target, PHONE)
        self.assertEqual(sent.method, "NOTIFY")
        self.assertEqual(sent.uriText, "sip:bob@127.0.0.1:5080;transport=udp")
        self.assertEqual([r.uriText for r in sent.routes], ["sip:10.0.0.1;lr", "sip:10.0.0.2;lr"])
        self.assertEqual((sent.fromTag, sent.toTag, sent.callID), (tag, "bobtag", "w1"))
        self.assertEqual(sent.fromAddr.uriText, ALICE)
        self.assertEqual(sent.toAddr.displayName, "Bob")
        self.assertEqual(sent.getHeader("event"), "presence")
        self.assertEqual(notify.state, SubscriptionState("active", 600))
        self.assertEqual(sent.contacts[0].uriText, CONTACT)
        presence = notify.presence
        self.assertEqual((presence.entity, presence.open, presence.activities, presence.notes),
                         (ALICE, True, frozenset({"away"}), ("Lunch",)))  # fmt: skip
        self.assertEqual(len(self.agent), 1)

    def test_expiresBounds(self) -> None:
        """
        Expires above the maximum is lowered; absent is the default.
        """
        response, _ = self.subscribed(expires=99999)
        self.assertEqual(response.getHeader("expires"), "3600")
        response, _ = self.subscribed(expires=None, callID="w2")
        self.assertEqual(response.getHeader("expires"), "1800")

    def test_unknownPresence(self) -> None:
        """
        A user the source knows nothing of (no session) is closed.
        """
        _, notify = self.subscribed()
        self.assertFalse(notify.presence.open)

    def test_eventID(self) -> None:
        _, notify = self.subscribed(event="presence;id=42")
        self.assertEqual(notify.request.getHeader("event"), "presence;id=42")

    def test_pending(self) -> None:
        """
        A pending watcher gets 202 and a NOTIFY pending without a body;
        changes are not shown to it; once authorised, it is notified.
        """
        self.decisions[BOB] = "pending"
        response, notify = self.subscribed()
        self.assertEqual(response.code, 202)
        self.assertEqual(notify.state.state, "pending")
        self.assertEqual(notify.request.body, b"")
        self.assertIsNone(notify.request.contentType)
        notify.respond()
        self.source.set(ALICE, UserPresence("away"))
        self.assertEqual(self.sent, [])
        self.decisions[BOB] = "active"
        self.agent.reauthorise(ALICE)
        notify = self.takeOne()
        self.assertEqual(notify.state.state, "active")
        self.assertEqual(notify.presence.activities, frozenset({"away"}))

    def test_reauthoriseRejects(self) -> None:
        _, notify = self.subscribed()
        notify.respond()
        self.decisions[BOB] = "rejected"
        self.agent.reauthorise()
        notify = self.takeOne()
        self.assertEqual(notify.state, SubscriptionState("terminated", reason="rejected"))
        self.assertEqual(len(self.agent), 0)
        self.agent.reauthorise()
        self.assertEqual(self.sent, [])

    def test_changes(self) -> None:
        """
        Each change the source tells of is a NOTIFY with a higher CSeq; a
        document that did not change is not sent again.
        """
        _, first = self.subscribed()
        first.respond()
        self.source.set(ALICE, UserPresence("dnd", "On the phone", fromSIP=True))
        second = self.takeOne()
        self.assertEqual(second.presence.activities, frozenset({"on-the-phone"}))
        self.assertGreater(second.request.cseq.number, first.request.cseq.number)
        self.clock.advance(100)
        self.assertEqual(second.state, SubscriptionState("active", 600))
        second.respond()
        self.source.set(ALICE, UserPresence("dnd", "On the phone", fromSIP=True))
        self.assertEqual(self.sent, [])
        self.source.set(BOB, UserPresence("away"))
        self.assertEqual(self.sent, [])
        self.source.set(ALICE, None)
        third = self.takeOne()
        self.assertFalse(third.presence.open)
        self.assertEqual(third.state, SubscriptionState("active", 500))

    def test_oneInFlight(self) -> None:
        """
        While a NOTIFY is unanswered, changes wait; only the latest goes.
        """
        _, first = self.subscribed()
        self.source.set(ALICE, UserPresence("away"))
        self.source.set(ALICE, UserPresence("xa", "Gone home"))
        self.assertEqual(self.sent, [])
        first.respond()
        latest = self.takeOne()
        self.assertEqual(latest.presence.notes, ("Gone home",))
        latest.respond()
        self.assertEqual(self.sent, [])

    def test_refresh(self) -> None:
        """
        A refresh in the dialog gets 200 with the new Expires, a NOTIFY,
        and moves the expiry.
        """
        response, notify = self.subscribed()
        notify.respond()
        tag = response.toTag
        self.clock.advance(500)
        refreshed = self.answer(subscribe(toTag=tag, cseq=2, expires=300))
        self.assertEqual((refreshed.code, refreshed.getHeader("expires"), refreshed.toTag),
                         (200, "300", tag))  # fmt: skip
        notify = self.takeOne()
        self.assertEqual(notify.state, SubscriptionState("active", 300))
        notify.respond()
        self.clock.advance(299)
        self.assertEqual(self.sent, [])
        self.clock.advance(1)
        self.assertEqual(self.takeOne().state,
                         SubscriptionState("terminated", reason="timeout"))  # fmt: skip

    def test_refreshOutOfOrder(self) -> None:
        response, notify = self.subscribed(cseq=5)
        refreshed = self.answer(subscribe(toTag=response.toTag, cseq=5))
        self.assertEqual(refreshed.code, 500)
        refreshed = self.answer(subscribe(toTag=response.toTag, cseq=6, expires=10))
        self.assertEqual(refreshed.code, 423)
        refreshed = self.answer(subscribe(toTag=response.toTag, cseq=7, event="dialog"))
        self.assertEqual(refreshed.code, 489)

    def test_expiry(self) -> None:
        """
        A subscription not refreshed ends with NOTIFY terminated;reason=timeout
        (with the last state), and its refresh then gets 481.
        """
        self.source.set(ALICE, UserPresence())
        response, notify = self.subscribed()
        notify.respond()
        self.clock.advance(600)
        final = self.takeOne()
        self.assertEqual(final.state, SubscriptionState("terminated", reason="timeout"))
        self.assertTrue(final.presence.open)
        final.respond(481)
        self.assertEqual(len(self.agent), 0)
        self.assertEqual(self.answer(subscribe(toTag=response.toTag, cseq=2)).code, 481)

    def test_unsubscribe(self) -> None:
        response, notify = self.subscribed()
        notify.respond()
        gone = self.answer(subscribe(toTag=response.toTag, cseq=2, expires=0))
        self.assertEqual((gone.code, gone.getHeader("expires")), (200, "0"))
        final = self.takeOne()
        self.assertEqual(final.state, SubscriptionState("terminated", reason="timeout"))
        self.assertEqual(len(self.agent), 0)
        self.clock.advance(3600)
        self.assertEqual(self.sent, [])

    def test_fetch(self) -> None:
        """
        Expires 0 on an initial SUBSCRIBE: the state once, no dialog kept.
        """
        self.source.set(ALICE, UserPresence("away"))
        response, notify = self.subscribed(expires=0)
        self.assertEqual(response.code, 200)
        self.assertEqual(notify.state.state, "terminated")
        self.assertEqual(notify.presence.activities, frozenset({"away"}))
        self.assertEqual(len(self.agent), 0)

    def test_notifyFails(self) -> None:
        """
        A NOTIFY answered 481 (or timing out) ends the subscription.
        """
        _, notify = self.subscribed()
        notify.respond(481)
        self.assertEqual(len(self.agent), 0)
        self.source.set(ALICE, UserPresence("away"))
        self.assertEqual(self.sent, [])
        _, notify = self.subscribed(callID="w2")
        notify.user.transactionTimedOut(object(), 408)
        self.assertEqual(len(self.agent), 0)

    def test_removedAndStop(self) -> None:
        """
        A user no longer provisioned: noresource; at stop: deactivated.
        """
        _, a = self.subscribed()
        _, c = self.subscribed(uri=CAROL, callID="w2")
        a.respond()
        c.respond()
        self.agent.aorsChanged([], [ALICE])
        self.assertEqual(self.takeOne().state.reason, "noresource")
        self.assertEqual([d.aor for d in self.agent.watchersOf(CAROL)], [CAROL])
        self.agent.stop()
        self.assertEqual(self.takeOne().state.reason, "deactivated")
        self.assertEqual(len(self.agent), 0)

    def test_sendFails(self) -> None:
        """
        A NOTIFY that cannot be sent at all ends the subscription.
        """

        def broken(data: bytes, target: Peer, user: IClientTransactionUser) -> None:
            raise OSError("no route")

        self.agent._send = broken
        self.answer(subscribe())
        self.assertEqual(len(self.agent), 0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_bounds(self) -> None:
        self.assertRaises(ValueError, PresenceAgent, self.clock, self.source,
                          lambda *a: None, aorOf, bool, lambda w, u: "active",
                          CONTACT, minExpires=100, defaultExpires=50)  # fmt: skip


class ThroughProxyTests(ProxyTestCase):
    """
    The agent as the proxy's SUBSCRIBE handler: the answer in a server
    transaction, the NOTIFY in a client transaction of the proxy's own.
    """

    def test_subscribe(self) -> None:
        source = InMemoryPresenceSource()
        source.set(ALICE, UserPresence("away", "Lunch"))
        agent = PresenceAgent(self.clock, source, self.proxy.sendRequest, aorOf,
                              lambda aor: aor == ALICE, lambda w, u: "active",
                              CONTACT)  # fmt: skip
        self.proxy.addLocalHandler(agent)
        self.receive(subscribe(event="message-summary"), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.assertEqual(forwarded.getHeader("event"), "message-summary")
        self.receive(subscribe(), PHONE)
        self.clock.advance(0)
        sent = [m for m, p in self.take() if p == PHONE]
        self.assertEqual([getattr(m, "code", None) or getattr(m, "method", None)
                          for m in sent], [200, "NOTIFY"])  # fmt: skip
        notify = sent[1]
        assert isinstance(notify, SIPRequest)
        self.assertEqual(notify.topVia.branch and notify.topVia.branch[:12], "z9hG4bK-own-")
        self.assertEqual(parsePresence(notify.body).notes, ("Lunch",))
