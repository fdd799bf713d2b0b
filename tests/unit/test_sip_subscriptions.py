"""
Tests for L{sipxmpp.sip.core.subscriptions}: SUBSCRIBE mode (RFC 6665,
RFC 4235 dialog event package) feeding the telephony state, sans-IO on a
L{Clock} with a fake C{send}.
"""

from __future__ import annotations

from itertools import count

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.subscriptions import (
    TAG_PREFIX,
    DialogSubscriptions,
    SubscriptionState,
    parseSubscriptionState,
)
from sipxmpp.sip.core.transaction import IClientTransactionUser
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine
from tests.unit.test_sip_proxy import PHONE, UPSTREAM, ProxyTestCase, answer, message
from tests.unit.test_telephony_state import Recorder
from tests.unit.test_telephony_state_counts import installChecker

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
S = TelephonyState
SERVER = Peer("UDP", "127.0.0.1", 5070)
CONTACT = "sip:sipxmpp@127.0.0.1:5060"
FROM = "sip:sipxmpp@127.0.0.1"
DIALOG_INFO = "application/dialog-info+xml"
_numbers = count(1)


def dialogInfo(version: int, state: str = "full", *dialogs: tuple[str, str]) -> bytes:
    """
    A dialog-info document: C{dialogs} are (id, state) pairs.
    """
    inner = "".join(
        f'<dialog id="{d}" call-id="{d}" direction="recipient"><state>{s}</state></dialog>'
        for d, s in dialogs
    )
    return (
        f'<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{version}" state="{state}" entity="{ALICE}">{inner}</dialog-info>'
    ).encode()


class Sent:
    def __init__(self, data: bytes, target: Peer, user: IClientTransactionUser) -> None:
        self.data = data
        self.target = target
        self.user = user
        via = f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-t{next(_numbers)}"
        line, rest = data.split(b"\r\n", 1)
        request = parseMessage(line + b"\r\n" + via.encode() + b"\r\n" + rest)
        assert isinstance(request, SIPRequest)
        self.request = request

    def respond(self, code: int, *headers: tuple[str, str], toTag: str | None = "srv1") -> None:
        response = makeResponse(self.request, code, None, toTag=toTag, headers=headers)
        assert isinstance(response, SIPResponse)
        self.user.transactionResponse(object(), response)


class SubscriptionsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.machine = TelephonyStateMachine(self.clock, earlyLifetime=180)
        installChecker(self.machine)
        self.recorder = Recorder()
        self.machine.addObserver(self.recorder)
        self.sent: list[Sent] = []
        self.metrics = Metrics()
        self.jitter = 0.0
        self.subs = self.make()

    def make(self, **kwargs: object) -> DialogSubscriptions:
        return DialogSubscriptions(
            self.clock, self.machine, self.send, SERVER, "sip:127.0.0.1:5070", CONTACT, FROM,
            expires=600, jitter=lambda: self.jitter, metrics=self.metrics,
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    def send(self, data: bytes, target: Peer, user: IClientTransactionUser) -> None:
        self.sent.append(Sent(data, target, user))

    def established(self, aor: str = ALICE, granted: int = 600) -> Sent:
        """
        Subscribe for C{aor} and answer 202 with a Record-Route.
        """
        self.subs.aorsChanged([aor], [])
        self.subs.start()
        sent = self.sent[-1]
        sent.respond(
            202, ("Expires", str(granted)), ("Contact", "<sip:127.0.0.1:5070>"),
            ("Record-Route", "<sip:127.0.0.1:5070;lr;r=1>, <sip:10.0.0.1;lr;r=2>"),
        )  # fmt: skip
        return sent

    def notify(
        self,
        sent: Sent,
        body: bytes = b"",
        state: str = "active;expires=600",
        *,
        cseq: int | None = None,
        event: str = "dialog",
        contentType: str = DIALOG_INFO,
        fromTag: str = "srv1",
        toTag: str | None = None,
        callID: str | None = None,
    ) -> SIPRequest:
        number = next(_numbers)
        lines = [
            f"NOTIFY {CONTACT} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-n{number}",
            "Max-Forwards: 70",
            f"From: <{ALICE}>;tag={fromTag}",
            f"To: <{FROM}>;tag={toTag or sent.request.fromTag}",
            f"Call-ID: {callID or sent.request.callID}",
            f"CSeq: {cseq if cseq is not None else number} NOTIFY",
            f"Event: {event}",
            f"Subscription-State: {state}",
            "Contact: <sip:127.0.0.1:5070>",
        ]
        if body:
            lines.append(f"Content-Type: {contentType}")
        lines.append(f"Content-Length: {len(body)}")
        request = parseMessage(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(request, SIPRequest)
        return request

    def answer(self, request: SIPRequest) -> int:
        self.assertTrue(self.subs.accepts(request, SERVER, False))
        return self.subs.answer(request, SERVER).code


class SubscribeTests(SubscriptionsTestCase):
    def test_initialSubscribe(self) -> None:
        """
        Nothing goes out before start; then one SUBSCRIBE per AoR, to the
        server, with no Via (the proxy adds it), our tag, Event dialog.
        """
        self.subs.aorsChanged([ALICE], [])
        self.assertEqual(self.sent, [])
        self.subs.start()
        [sent] = self.sent
        self.assertEqual(sent.target, SERVER)
        self.assertNotIn(b"Via:", sent.data)
        request = sent.request
        self.assertEqual((request.method, request.uriText), ("SUBSCRIBE", ALICE))
        self.assertTrue((request.fromTag or "").startswith(TAG_PREFIX))
        self.assertIsNone(request.toTag)
        self.assertEqual(request.getHeader("event"), "dialog")
        self.assertEqual(request.getHeader("accept"), DIALOG_INFO)
        self.assertEqual(request.getHeader("contact"), f"<{CONTACT}>")
        self.assertEqual((request.expires, request.cseq.number), (600, 1))
        self.assertEqual(self.subs.aors, frozenset({ALICE}))

    def test_refreshInDialog(self) -> None:
        """
        The 2xx gives the remote tag, the route set (Record-Route reversed)
        and the target; the refresh goes at 0.8 of the Expires granted.
        """
        first = self.established(granted=100)
        self.assertEqual(self.subs.active, 1)
        self.clock.advance(79.9)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.1)
        refresh = self.sent[-1].request
        self.assertEqual(refresh.uriText, "sip:127.0.0.1:5070")
        self.assertEqual(refresh.callID, first.request.callID)
        self.assertEqual((refresh.fromTag, refresh.toTag), (first.request.fromTag, "srv1"))
        self.assertEqual(refresh.cseq.number, 2)
        self.assertEqual([r.uriText for r in refresh.routes],
                         ["sip:10.0.0.1;lr;r=2", "sip:127.0.0.1:5070;lr;r=1"])  # fmt: skip
        self.sent[-1].respond(200, ("Expires", "50"))
        self.clock.advance(39.9)
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.1)
        self.assertEqual(self.sent[-1].request.cseq.number, 3)

    def test_pacedInFlight(self) -> None:
        """
        At most maxInFlight initial SUBSCRIBEs wait for an answer.
        """
        self.subs = self.make(maxInFlight=2)
        self.subs.start()
        self.subs.aorsChanged([f"sip:u{n}@example.test" for n in range(5)], [])
        self.assertEqual(len(self.sent), 2)
        self.sent[0].respond(202, ("Expires", "600"))
        self.clock.advance(0)
        self.assertEqual(len(self.sent), 3)
        self.sent[1].user.transactionTimedOut(object(), 408)
        self.clock.advance(0)
        self.assertEqual(len(self.sent), 4)

    def test_pacedPerSecond(self) -> None:
        """
        At most perSecond initial SUBSCRIBEs go out in any second.
        """
        self.subs = self.make(perSecond=2)
        self.subs.start()
        self.subs.aorsChanged([f"sip:u{n}@example.test" for n in range(5)], [])
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.9)
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sent), 4)
        self.clock.advance(1)
        self.assertEqual(len(self.sent), 5)
        self.clock.advance(10)
        self.assertEqual(len(self.sent), 5)

    def test_minExpires(self) -> None:
        """
        423 is retried at once with the Min-Expires asked.
        """
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        self.sent[0].respond(423, ("Min-Expires", "1800"), toTag=None)
        self.assertEqual(len(self.sent), 2)
        retry = self.sent[1].request
        self.assertEqual((retry.expires, retry.cseq.number), (1800, 2))
        self.assertEqual(retry.callID, self.sent[0].request.callID)
        self.assertIsNone(retry.toTag)
        self.sent[1].respond(200, ("Expires", "1800"))
        self.assertEqual(self.subs.active, 1)

    def test_minExpiresNotHigher(self) -> None:
        """
        A 423 whose Min-Expires is not above what was asked is a failure.
        """
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        self.sent[0].respond(423, ("Min-Expires", "600"), toTag=None)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(2)
        self.assertEqual(len(self.sent), 2)

    def test_backoff(self) -> None:
        """
        Failures back off exponentially from backoffBase up to backoffCap,
        scaled by 0.5 + jitter / 2; each retry is a new dialog.
        """
        self.subs = self.make(backoffBase=2, backoffCap=10)
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        delays = []
        for _ in range(5):
            before = len(self.sent)
            self.sent[-1].user.transactionTimedOut(object(), 408)
            waited = 0.0
            while len(self.sent) == before:
                self.clock.advance(0.5)
                waited += 0.5
            delays.append(waited)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 5.0, 5.0])
        self.assertEqual(len({s.request.callID for s in self.sent}), 6)
        self.jitter = 0.999
        self.sent[-1].respond(503, ("Retry-After", "30"))
        self.clock.advance(29.5)
        self.assertEqual(len(self.sent), 6)
        self.clock.advance(0.5)
        self.assertEqual(len(self.sent), 7)

    def test_refreshFailsResubscribe(self) -> None:
        """
        481 to a refresh: subscribe afresh after the backoff; the old
        subscription's state stays until the new one's full state.
        """
        sent = self.established()
        self.assertEqual(
            self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed")))), 200
        )
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(480)
        self.sent[-1].respond(481)
        self.assertEqual(self.subs.active, 0)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        fresh = self.sent[-1]
        self.assertIsNone(fresh.request.toTag)
        self.assertNotEqual(fresh.request.callID, sent.request.callID)
        # The old dialog's NOTIFY: ours, but gone.
        self.assertEqual(self.answer(self.notify(sent, dialogInfo(5))), 481)
        fresh.respond(200, ("Expires", "600"), toTag="srv2")
        self.assertEqual(self.answer(self.notify(fresh, dialogInfo(0), fromTag="srv2")), 200)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)

    def test_staleStateExpires(self) -> None:
        """
        A subscription that is neither refreshed nor answered: its state
        lives as long as the subscription, then ends.
        """
        sent = self.established(granted=100)
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed")),
                                "active;expires=100"))  # fmt: skip
        self.clock.advance(99)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)

    def test_stop(self) -> None:
        """
        stop unsubscribes (Expires 0, in the dialog) and removes the state;
        the final NOTIFY is answered 200, later ones 481.
        """
        sent = self.established()
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed"))))
        self.subs.stop()
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        unsubscribe = self.sent[-1].request
        self.assertEqual((unsubscribe.expires, unsubscribe.toTag), (0, "srv1"))
        self.sent[-1].respond(200, ("Expires", "0"))
        final = self.notify(sent, state="terminated;reason=timeout")
        self.assertEqual(self.answer(final), 200)
        self.assertEqual(self.answer(self.notify(sent, state="terminated")), 481)
        self.clock.advance(3600)
        self.assertEqual(len(self.sent), 2)

    def test_aorRemoved(self) -> None:
        """
        An AoR no longer provisioned is unsubscribed and its state removed.
        """
        sent = self.established()
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "early"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.subs.aorsChanged([], [ALICE])
        self.assertEqual(self.sent[-1].request.expires, 0)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(self.subs.aors, frozenset())

    def test_stopBeforeAnswer(self) -> None:
        """
        A subscription not yet answered is only forgotten.
        """
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        self.subs.stop()
        self.sent[0].respond(202, ("Expires", "600"))
        self.assertEqual((len(self.sent), self.subs.active), (1, 0))

    def test_grantedExpires(self) -> None:
        """
        A 2xx without Expires grants what was asked; one with Expires 0
        ends the subscription, and another follows after the backoff.
        """
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        self.sent[0].respond(200)
        self.clock.advance(479)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.sent), 2)
        self.sent[1].respond(200, ("Expires", "0"))
        self.assertEqual(self.subs.active, 0)
        self.clock.advance(1)
        self.assertIsNone(self.sent[-1].request.toTag)
        self.assertEqual(len(self.sent), 3)

    def test_sendFails(self) -> None:
        """
        A send that raises is logged and retried after the backoff.
        """
        calls: list[bytes] = []

        def broken(data: bytes, target: Peer, user: IClientTransactionUser) -> None:
            calls.append(data)
            raise OSError("no route")

        self.subs = DialogSubscriptions(
            self.clock, self.machine, broken, SERVER, "", CONTACT, FROM, jitter=lambda: 0.0
        )
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(1)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_addedTwiceRemovedUnknown(self) -> None:
        self.subs.start()
        self.subs.aorsChanged([ALICE], ["sip:nobody@example.test"])
        self.subs.aorsChanged([ALICE], [])
        self.assertEqual(len(self.sent), 1)
        self.assertIsNotNone(self.subs.subscription(ALICE))
        self.assertIsNone(self.subs.subscription(BOB))


class NotifyTests(SubscriptionsTestCase):
    def test_fullAndPartial(self) -> None:
        """
        Full state sets the publication; a partial in sequence changes it;
        a version not newer is ignored.
        """
        sent = self.established()
        self.assertEqual(self.answer(self.notify(sent, dialogInfo(0))), 200)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.answer(self.notify(sent, dialogInfo(1, "partial", ("d1", "early"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.answer(self.notify(sent, dialogInfo(2, "partial", ("d2", "confirmed"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        # Old news, in a full state that would end both: ignored.
        self.assertEqual(self.answer(self.notify(sent, dialogInfo(2))), 200)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.answer(self.notify(sent, dialogInfo(3, "partial", ("d2", "terminated"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)
        self.answer(self.notify(sent, dialogInfo(4)))
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(len(self.sent), 1)

    def test_partialBeforeFull(self) -> None:
        """
        A partial state before any full one is not applied; a refresh asks
        for the full state.
        """
        sent = self.established()
        self.assertEqual(
            self.answer(self.notify(sent, dialogInfo(3, "partial", ("d1", "confirmed")))), 200
        )
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        refresh = self.sent[-1].request
        self.assertEqual((refresh.cseq.number, refresh.toTag), (2, "srv1"))
        self.sent[-1].respond(200, ("Expires", "600"))
        self.answer(self.notify(sent, dialogInfo(4, "full", ("d1", "confirmed"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_partialGap(self) -> None:
        """
        A partial state that skips a version asks for full state.
        """
        sent = self.established()
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed"))))
        self.answer(self.notify(sent, dialogInfo(2, "partial", ("d1", "terminated"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(len(self.sent), 2)
        # Another while the refresh is out: no second refresh.
        self.answer(self.notify(sent, dialogInfo(3, "partial", ("d1", "terminated"))))
        self.assertEqual(len(self.sent), 2)
        # Versions start over with the full state.
        self.answer(self.notify(sent, dialogInfo(1, "full")))
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)

    def test_notifyBeforeTwoHundred(self) -> None:
        """
        A NOTIFY may come before the 2xx (RFC 6665 §4.1.2.4): it makes the
        dialog; the 2xx after it changes nothing.
        """
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        sent = self.sent[0]
        request = self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed")))
        self.assertEqual(self.answer(request), 200)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(self.subs.active, 1)
        sent.respond(202, ("Expires", "600"))
        self.clock.advance(480)
        refresh = self.sent[-1].request
        self.assertEqual((refresh.toTag, refresh.uriText), ("srv1", "sip:127.0.0.1:5070"))

    def test_pendingThenActive(self) -> None:
        sent = self.established()
        self.assertEqual(self.answer(self.notify(sent, state="pending;expires=600")), 200)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "early"))))
        self.assertEqual(self.machine.stateOf(ALICE), S.RINGING)

    def test_terminated(self) -> None:
        """
        Subscription-State terminated ends the publication at once, and a
        new subscription follows after the backoff.
        """
        sent = self.established()
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed"))))
        request = self.notify(sent, state="terminated;reason=deactivated")
        self.assertEqual(self.answer(request), 200)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.clock.advance(0.9)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sent), 2)
        self.assertNotEqual(self.sent[-1].request.callID, sent.request.callID)

    def test_activeExpiresZero(self) -> None:
        """
        An active NOTIFY with expires=0 ends the subscription like
        terminated, but the state it said lives on until replaced.
        """
        sent = self.established()
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed"))))
        self.assertEqual(self.answer(self.notify(sent, state="active;expires=0")), 200)
        self.assertEqual(self.subs.active, 0)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.clock.advance(1)
        fresh = self.sent[-1]
        fresh.respond(202, ("Expires", "600"), toTag="srv2")
        self.answer(self.notify(fresh, dialogInfo(0), fromTag="srv2"))
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)

    def test_terminatedRetryAfter(self) -> None:
        sent = self.established()
        self.answer(self.notify(sent, state="terminated;reason=probation;retry-after=60"))
        self.clock.advance(59)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.sent), 2)

    def test_emptyBodyRefreshes(self) -> None:
        """
        A NOTIFY without a body extends what the subscription said.
        """
        sent = self.established(granted=100)
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed")),
                                "active;expires=100"))  # fmt: skip
        self.clock.advance(90)
        self.assertEqual(self.answer(self.notify(sent, state="active;expires=100")), 200)
        self.clock.advance(90)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)

    def test_malformedBody(self) -> None:
        """
        A body that does not parse: 400, and the state stays.
        """
        sent = self.established()
        self.answer(self.notify(sent, dialogInfo(0, "full", ("d1", "confirmed"))))
        self.assertEqual(self.answer(self.notify(sent, b"<dialog-info")), 400)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(self.answer(self.notify(sent, dialogInfo(1), "bogus;expires=x")), 400)
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.assertEqual(self.metrics.render().count('sipxmpp_sip_notify_total{code="400"} 2'), 1)

    def test_wrongTypeOrEvent(self) -> None:
        sent = self.established()
        self.assertEqual(self.answer(self.notify(sent, b"x", contentType="text/plain")), 415)
        self.assertEqual(self.answer(self.notify(sent, event="presence")), 489)
        request = self.notify(sent)
        request.removeHeader("subscription-state")
        self.assertEqual(self.answer(request), 400)

    def test_cseqOutOfOrder(self) -> None:
        sent = self.established()
        self.assertEqual(self.answer(self.notify(sent, dialogInfo(0), cseq=10)), 200)
        self.assertEqual(self.answer(self.notify(sent, dialogInfo(1), cseq=9)), 500)

    def test_notOurs(self) -> None:
        """
        A NOTIFY of someone else's dialog is not taken (the proxy forwards
        it); one with our tag prefix but no live dialog is answered 481.
        """
        sent = self.established()
        other = self.notify(sent, toTag="phone-tag")
        self.assertFalse(self.subs.accepts(other, SERVER, True))
        untagged = self.notify(sent)
        untagged.setHeader("to", f"<{FROM}>")
        self.assertFalse(self.subs.accepts(untagged, SERVER, True))
        gone = self.notify(sent, toTag=TAG_PREFIX + "old", callID="old@sipxmpp")
        self.assertTrue(self.subs.accepts(gone, SERVER, True))
        self.assertEqual(self.subs.answer(gone, SERVER).code, 481)

    def test_twoUsers(self) -> None:
        """
        Each AoR has its own subscription and state.
        """
        self.subs.aorsChanged([ALICE, BOB], [])
        self.subs.start()
        alice, bob = self.sent
        self.assertEqual((alice.request.uriText, bob.request.uriText), (ALICE, BOB))
        self.answer(self.notify(bob, dialogInfo(0, "full", ("d1", "confirmed"))))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)


class SubscriptionStateTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parseSubscriptionState("active;expires=600"),
                         SubscriptionState("active", 600))  # fmt: skip
        self.assertEqual(
            parseSubscriptionState('Terminated; reason=Probation ;retry-after="30"'),
            SubscriptionState("terminated", None, "probation", 30),
        )
        self.assertRaises(SIPParseError, parseSubscriptionState, "")
        self.assertRaises(SIPParseError, parseSubscriptionState, "active;expires=-1")

    def test_badParameters(self) -> None:
        self.assertRaises(ValueError, DialogSubscriptions, Clock(),
                          TelephonyStateMachine(Clock()), lambda *a: None, SERVER, "", "", "",
                          expires=0)  # fmt: skip


class ThroughProxyTests(ProxyTestCase):
    """
    The subscriptions on a real L{Proxy}: SUBSCRIBEs through
    L{Proxy.sendRequest}, NOTIFYs taken as a local handler.
    """

    def setUp(self) -> None:
        super().setUp()
        self.machine = TelephonyStateMachine(self.clock, earlyLifetime=180)
        self.subs = DialogSubscriptions(
            self.clock, self.machine, self.proxy.sendRequest, UPSTREAM, "sip:127.0.0.1:5070",
            CONTACT, FROM, expires=600,
        )  # fmt: skip
        self.proxy.addLocalHandler(self.subs)

    def notify(self, subscribe: SIPRequest, toTag: str, branch: str, version: int,
               uri: str = CONTACT) -> SIPRequest:  # fmt: skip
        body = dialogInfo(version, "full", ("d1", "confirmed")).decode()
        request = message(
            f"""
NOTIFY {uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{branch}
Max-Forwards: 70
From: <{ALICE}>;tag=srv1
To: <{FROM}>;tag={toTag}
Call-ID: {subscribe.callID}
CSeq: {version + 1} NOTIFY
Event: dialog
Subscription-State: active;expires=600
Content-Type: {DIALOG_INFO}""",
            body,
        )
        assert isinstance(request, SIPRequest)
        return request

    def test_subscribeAndNotify(self) -> None:
        """
        The SUBSCRIBE goes to the server with our Via; its 202 reaches the
        subscriptions; the NOTIFY is answered by the gateway (once, also
        to a retransmission) and feeds the state.
        """
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        subscribe = self.takeOne(UPSTREAM)
        assert isinstance(subscribe, SIPRequest)
        self.assertEqual(subscribe.topVia.sentBy, "127.0.0.1:5060")
        self.receive(answer(subscribe.toBytes(), 202, "Accepted", "srv1", "Expires: 600"),
                     UPSTREAM)  # fmt: skip
        self.assertEqual(self.subs.active, 1)
        notify = self.notify(subscribe, subscribe.fromTag or "", "n1", 1)
        self.receive(notify, UPSTREAM)
        response = self.takeOne(UPSTREAM)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        self.receive(self.notify(subscribe, subscribe.fromTag or "", "n1", 1), UPSTREAM)
        again = self.takeOne(UPSTREAM)
        assert isinstance(again, SIPResponse)
        self.assertEqual(again.code, 200)
        self.assertEqual(self.recorder.requests, [])

    def test_othersNotifyForwarded(self) -> None:
        """
        A NOTIFY from the upstream for a phone's subscription is not ours:
        the proxy forwards it to the phone as before.
        """
        self.registerAlice()
        self.subs.aorsChanged([ALICE], [])
        self.subs.start()
        subscribe = self.takeOne(UPSTREAM)
        assert isinstance(subscribe, SIPRequest)
        notify = self.notify(subscribe, "phone-tag", "n2", 1, "sip:alice@127.0.0.1:5080")
        assert isinstance(notify, SIPRequest)
        self.receive(notify, UPSTREAM)
        forwarded = self.takeOne(PHONE)
        assert isinstance(forwarded, SIPRequest)
        self.assertEqual(forwarded.method, "NOTIFY")
        self.assertEqual(self.machine.stateOf(ALICE), TelephonyState.OFFLINE)
