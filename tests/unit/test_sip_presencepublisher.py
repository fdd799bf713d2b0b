"""
Tests for L{sipxmpp.sip.core.presencepublisher}: PUBLISH mode of
back-publishing (RFC 3903 PIDF publications at a presence server),
sans-IO on a L{Clock} with a fake C{send}.
"""

from __future__ import annotations

from itertools import count

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.pacing import backoffDelay
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.presence import InMemoryPresenceSource, UserPresence
from sipxmpp.sip.core.presencepublisher import PresencePublisher
from sipxmpp.sip.core.transaction import IClientTransactionUser
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.pidf import Presence, parsePresence
from sipxmpp.sip.wire.responses import makeResponse

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
SERVER = Peer("UDP", "127.0.0.1", 5070)
LUNCH = UserPresence("away", "Lunch")
_numbers = count(1)


class Sent:
    def __init__(self, data: bytes, target: Peer, user: IClientTransactionUser) -> None:
        self.target = target
        self.user = user
        via = f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-p{next(_numbers)}"
        line, rest = data.split(b"\r\n", 1)
        request = parseMessage(line + b"\r\n" + via.encode() + b"\r\n" + rest)
        assert isinstance(request, SIPRequest)
        self.request = request

    @property
    def ifMatch(self) -> str | None:
        return self.request.getHeader("sip-if-match")

    @property
    def presence(self) -> Presence:
        assert self.request.contentType == "application/pidf+xml"
        return parsePresence(self.request.body)

    def respond(self, code: int = 200, *headers: tuple[str, str]) -> None:
        response = makeResponse(self.request, code, None, headers=headers)
        assert isinstance(response, SIPResponse)
        self.user.transactionResponse(object(), response)

    def ok(self, etag: str, expires: int | None = None) -> None:
        granted = self.request.expires if expires is None else expires
        self.respond(200, ("SIP-ETag", etag), ("Expires", str(granted)))


class PublisherTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.source = InMemoryPresenceSource()
        self.sent: list[Sent] = []
        self.metrics = Metrics()
        self.publisher = PresencePublisher(
            self.clock, self.source,
            lambda data, target, user: self.sent.append(Sent(data, target, user)),
            SERVER, expires=600, maxInFlight=2, perSecond=3, jitter=lambda: 1.0,
            metrics=self.metrics,
        )  # fmt: skip
        self.publisher.start()

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent

    def takeOne(self) -> Sent:
        sent = self.take()
        self.assertEqual(len(sent), 1, [s.request for s in sent])
        return sent[0]

    def published(self, presence: UserPresence = LUNCH,
                  etag: str = "e1") -> Sent:  # fmt: skip
        self.source.set(ALICE, presence)
        self.publisher.aorsChanged([ALICE], [])
        first = self.takeOne()
        first.ok(etag)
        return first


class PublishTests(PublisherTestCase):
    def test_initial(self) -> None:
        """
        An initial PUBLISH: the AoR as Request-URI, From and To, Event
        presence, the Expires asked, the document, no SIP-If-Match.
        """
        self.source.set(ALICE, UserPresence("away", "Lunch"))
        self.publisher.aorsChanged([ALICE], [])
        sent = self.takeOne()
        request = sent.request
        self.assertEqual(sent.target, SERVER)
        self.assertEqual((request.method, request.uriText), ("PUBLISH", ALICE))
        self.assertEqual((request.fromAddr.uriText, request.toAddr.uriText), (ALICE, ALICE))
        self.assertIsNotNone(request.fromTag)
        self.assertEqual((request.getHeader("event"), request.expires), ("presence", 600))
        self.assertIsNone(sent.ifMatch)
        self.assertEqual(sent.presence.activities, frozenset({"away"}))
        self.assertEqual(sent.presence.notes, ("Lunch",))

    def test_nothingKnown(self) -> None:
        """
        A user without presence (no session) is not published.
        """
        self.publisher.aorsChanged([ALICE], [])
        self.assertEqual(self.sent, [])
        self.source.set(BOB, UserPresence())
        self.assertEqual(self.sent, [])

    def test_modifyAndRefresh(self) -> None:
        """
        A change is a PUBLISH with SIP-If-Match and the document; the
        refresh, at 0.8 of what was granted, has no body.
        """
        first = self.published()
        self.source.set(ALICE, UserPresence("dnd", "Busy"))
        second = self.takeOne()
        self.assertEqual(second.ifMatch, "e1")
        self.assertEqual(second.presence.activities, frozenset({"busy"}))
        self.assertGreater(second.request.cseq.number, first.request.cseq.number)
        self.assertEqual(second.request.callID, first.request.callID)
        second.ok("e2", expires=100)
        self.clock.advance(79)
        self.assertEqual(self.sent, [])
        self.clock.advance(1)
        refresh = self.takeOne()
        self.assertEqual((refresh.ifMatch, refresh.request.body), ("e2", b""))
        self.assertEqual(refresh.request.expires, 600)
        refresh.ok("e3")
        self.source.set(ALICE, UserPresence())
        self.assertEqual(self.takeOne().ifMatch, "e3")

    def test_unchanged(self) -> None:
        self.published()
        self.source.set(ALICE, UserPresence("away", "Lunch"))
        self.assertEqual(self.sent, [])

    def test_unavailableIsClosed(self) -> None:
        self.published()
        self.source.set(ALICE, UserPresence("unavailable"))
        self.assertFalse(self.takeOne().presence.open)

    def test_oneInFlight(self) -> None:
        """
        Changes while a PUBLISH is unanswered collapse into the latest.
        """
        self.source.set(ALICE, UserPresence("away"))
        self.publisher.aorsChanged([ALICE], [])
        first = self.takeOne()
        self.source.set(ALICE, UserPresence("dnd"))
        self.source.set(ALICE, UserPresence("xa", "Home"))
        self.assertEqual(self.sent, [])
        first.ok("e1")
        latest = self.takeOne()
        self.assertEqual((latest.ifMatch, latest.presence.notes), ("e1", ("Home",)))

    def test_412(self) -> None:
        """
        412 (the server forgot the publication): published afresh at once.
        """
        self.published()
        self.clock.advance(480)
        refresh = self.takeOne()
        refresh.respond(412)
        again = self.takeOne()
        self.assertIsNone(again.ifMatch)
        self.assertEqual(again.presence.activities, frozenset({"away"}))

    def test_423(self) -> None:
        self.source.set(ALICE, UserPresence())
        self.publisher.aorsChanged([ALICE], [])
        self.takeOne().respond(423, ("Min-Expires", "1200"))
        again = self.takeOne()
        self.assertEqual(again.request.expires, 1200)
        self.assertIsNone(again.ifMatch)

    def test_failureBacksOff(self) -> None:
        """
        Another failure or a timeout: again after a backoff that doubles.
        """
        self.source.set(ALICE, UserPresence())
        self.publisher.aorsChanged([ALICE], [])
        self.takeOne().respond(503)
        self.clock.advance(1.9)
        self.assertEqual(self.sent, [])
        self.clock.advance(0.1)
        second = self.takeOne()
        second.user.transactionTimedOut(object(), 408)
        self.source.set(ALICE, UserPresence("away"))
        self.clock.advance(3.9)
        self.assertEqual(self.sent, [])
        self.clock.advance(0.1)
        third = self.takeOne()
        self.assertEqual(third.presence.activities, frozenset({"away"}))
        self.assertEqual(self.metrics.value("sipxmpp_sip_presence_publish_total", code="503"), 1)
        self.assertEqual(backoffDelay(100, 2, 300, lambda: 0.0), 150)

    def test_sendFails(self) -> None:
        def broken(data: bytes, target: Peer, user: IClientTransactionUser) -> None:
            raise OSError("no route")

        self.publisher._send = broken
        self.source.set(ALICE, UserPresence())
        self.publisher.aorsChanged([ALICE], [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertIsNotNone(self.publisher.publication(ALICE).retry)  # type: ignore[union-attr]


class NoLoopTests(PublisherTestCase):
    def test_fromSIPNeverPublished(self) -> None:
        """
        A presence that came from SIP (the gateway's dnd during a call) is
        not published; the user's own last state stays, refreshed; the
        user's next own change is published.
        """
        self.published(LUNCH)
        self.source.set(ALICE, UserPresence("dnd", "On the phone", fromSIP=True))
        self.assertEqual(self.sent, [])
        self.clock.advance(480)
        refresh = self.takeOne()
        self.assertEqual(refresh.request.body, b"")
        refresh.ok("e2")
        self.source.set(ALICE, UserPresence("chat"))
        change = self.takeOne()
        self.assertTrue(change.presence.open)
        self.assertEqual(change.presence.activities, frozenset())

    def test_fromSIPFirst(self) -> None:
        """
        Nothing published yet and the first presence came from SIP:
        nothing is sent at all.
        """
        self.source.set(ALICE, UserPresence("dnd", fromSIP=True))
        self.publisher.aorsChanged([ALICE], [])
        self.clock.advance(3600)
        self.assertEqual(self.sent, [])


class RemoveTests(PublisherTestCase):
    def test_presenceGone(self) -> None:
        """
        The user leaves SIP's view (no presence known): Expires 0 with the
        entity-tag, no body; once they are back, published afresh.
        """
        self.published()
        self.source.set(ALICE, None)
        removal = self.takeOne()
        self.assertEqual((removal.request.expires, removal.ifMatch, removal.request.body),
                         (0, "e1", b""))  # fmt: skip
        removal.respond(200, ("SIP-ETag", "e2"), ("Expires", "0"))
        self.clock.advance(3600)
        self.assertEqual(self.sent, [])
        self.source.set(ALICE, UserPresence())
        self.assertIsNone(self.takeOne().ifMatch)

    def test_unprovisioned(self) -> None:
        self.published()
        self.publisher.aorsChanged([], [ALICE])
        removal = self.takeOne()
        self.assertEqual(removal.request.expires, 0)
        self.assertIsNotNone(self.publisher.publication(ALICE))
        removal.respond(200)
        self.assertIsNone(self.publisher.publication(ALICE))
        self.source.set(ALICE, UserPresence("away"))
        self.assertEqual(self.sent, [])

    def test_stop(self) -> None:
        """
        At stop every publication is removed at once, without pacing.
        """
        self.published()
        for n in range(5):
            aor = f"sip:u{n}@example.test"
            self.source.set(aor, UserPresence())
            self.publisher.aorsChanged([aor], [])
        tags = count()
        for _ in range(10):
            for sent in self.take():
                sent.ok(f"u{next(tags)}")
            self.clock.advance(1)
        self.assertEqual(next(tags), 5)
        self.publisher.stop()
        removals = self.take()
        self.assertEqual(len(removals), 6)
        self.assertTrue(all(r.request.expires == 0 for r in removals))
        for removal in removals:
            removal.respond(500)
        self.clock.advance(3600)
        self.assertEqual(self.sent, [])


class PacingTests(PublisherTestCase):
    def test_paced(self) -> None:
        """
        At most maxInFlight unanswered and perSecond a second.
        """
        aors = [f"sip:u{n}@example.test" for n in range(6)]
        for aor in aors:
            self.source.set(aor, UserPresence())
        self.publisher.aorsChanged(aors, [])
        first = self.take()
        self.assertEqual(len(first), 2)
        first[0].ok("a")
        self.clock.advance(0)
        self.assertEqual(len(self.take()), 1)
        first[1].ok("b")
        self.clock.advance(0)
        self.assertEqual(self.sent, [])
        self.clock.advance(1)
        self.assertEqual(len(self.take()), 1)

    def test_notRunning(self) -> None:
        """
        Nothing goes out before start.
        """
        publisher = PresencePublisher(self.clock, self.source,
                                      lambda *a: self.fail("sent"), SERVER)  # fmt: skip
        self.source.set(ALICE, UserPresence())
        publisher.aorsChanged([ALICE], [])
        self.assertRaises(ValueError, PresencePublisher, self.clock, self.source,
                          lambda *a: None, SERVER, expires=0)  # fmt: skip
