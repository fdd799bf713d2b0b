"""
Tests for L{sipxmpp.xmpp.activity}: XEP-0108 user activity on a stream stub.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.telephony.events import TelephonyState
from sipxmpp.xmpp.activity import (
    NS_ACTIVITY,
    NS_PUBSUB,
    ActivityRetractions,
    UserActivityPublisher,
)
from sipxmpp.xmpp.callpresence import CallTexts
from tests.unit.xmppstreams import FakeSession, child

S = TelephonyState
TEXTS = CallTexts(ringing="ringing", onThePhone="on the phone", onHold="on hold")


class UserActivityPublisherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.session = FakeSession(Clock())
        self.activity = UserActivityPublisher("sip:alice@example.test", self.session, TEXTS, 10)
        self.session.addHandler(self.activity)

    def published(self) -> list[str | None]:
        """
        Answer the activities published so far; return their texts (None
        for an empty activity: no call).
        """
        texts: list[str | None] = []
        for iq in self.session.iqs():
            self.assertEqual(iq["type"], "set")
            pubsub = child(iq, "pubsub", NS_PUBSUB)
            assert pubsub is not None, iq.toXml()
            publish = child(pubsub, "publish")
            assert publish is not None
            self.assertEqual(publish["node"], NS_ACTIVITY)
            item = child(publish, "item")
            assert item is not None
            activity = child(item, "activity", NS_ACTIVITY)
            assert activity is not None
            text = child(activity, "text")
            if text is None:
                self.assertEqual(list(activity.elements()), [])
            else:
                talking = child(activity, "talking")
                assert talking is not None
                self.assertIsNotNone(child(talking, "on_the_phone"))
            texts.append(str(text) if text is not None else None)
            self.session.answer(iq)
        return texts

    def test_callAndHold(self) -> None:
        self.session.connect()
        # A new handler does not know what the server holds: it retracts.
        self.assertEqual(self.published(), [None])
        self.activity.setTelephony(S.RINGING)
        self.assertEqual(self.published(), [])
        self.activity.setTelephony(S.ON_THE_PHONE)
        self.activity.setTelephony(S.ON_HOLD)
        self.activity.setTelephony(S.ON_HOLD)
        self.activity.setTelephony(S.ONLINE)
        self.assertEqual(self.published(), ["on the phone", "on hold", None])

    def test_whileDisconnected(self) -> None:
        """
        Nothing is sent while the session is down; a call still going on
        when it is back is published on the new stream.
        """
        self.activity.setTelephony(S.ON_THE_PHONE)
        self.assertEqual(self.session.sent, [])
        self.session.connect()
        self.assertEqual(self.published(), ["on the phone"])
        self.session.disconnect()
        self.session.connect()
        self.assertEqual(self.published(), ["on the phone"])

    def test_retractedAtStartAfterRestart(self) -> None:
        """
        PEP keeps the item across our restarts: a new handler (the gateway
        restarted, the call ended meanwhile) publishes the empty activity on
        its first session; once that is acknowledged, a reconnect without a
        call publishes nothing.
        """
        self.session.connect()
        self.assertEqual(self.published(), [None])
        self.session.disconnect()
        self.session.connect()
        self.assertEqual(self.published(), [])

    def test_callEndedWhileDisconnected(self) -> None:
        """
        The call was published, the stream went away, the call ended: the
        empty activity is published once the session is back.
        """
        self.session.connect()
        self.published()
        self.activity.setTelephony(S.ON_THE_PHONE)
        self.assertEqual(self.published(), ["on the phone"])
        self.session.disconnect()
        self.activity.setTelephony(S.ONLINE)
        self.assertEqual(self.session.iqs(), [])
        self.session.connect()
        self.assertEqual(self.published(), [None])

    def test_unansweredRetractionRepeated(self) -> None:
        """
        The empty activity went out but the stream broke before the server
        answered: it is published again on the next stream.
        """
        self.session.connect()
        self.published()
        self.activity.setTelephony(S.ON_THE_PHONE)
        self.published()
        self.activity.setTelephony(S.ONLINE)
        [iq] = self.session.iqs()  # never answered
        self.session.disconnect()
        self.session.connect()
        self.assertEqual(self.published(), [None])

    def test_refusedRetractionRepeated(self) -> None:
        self.session.connect()
        [iq] = self.session.iqs()
        self.session.answer(iq, "<error type='wait'><resource-constraint "
                                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                            kind="error")  # fmt: skip
        self.session.disconnect()
        self.session.connect()
        self.assertEqual(self.published(), [None])

    def test_refusedIsLogged(self) -> None:
        self.session.connect()
        self.published()
        self.activity.setTelephony(S.ON_THE_PHONE)
        [iq] = self.session.iqs()
        events: list[dict[str, object]] = []
        self.patch(UserActivityPublisher, "log", Logger(observer=events.append))
        self.session.answer(
            iq,
            "<error type='cancel'><feature-not-implemented "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            kind="error",
        )
        [event] = events
        self.assertEqual(event["log_format"], "{aor}: user activity not published: {e}")


class PendingTests(SynchronousTestCase):
    """
    What the handler tells C{onPending}: the store keeps it, so that a
    call left in the activity is retracted even for a user the gateway
    never logs in again.
    """

    def setUp(self) -> None:
        self.session = FakeSession(Clock())
        self.told: list[bool] = []

    def handler(self, showCalls: bool = True) -> UserActivityPublisher:
        activity = UserActivityPublisher("sip:alice@example.test", self.session, TEXTS, 10,
                                         showCalls=showCalls)  # fmt: skip
        activity.onPending = self.told.append
        self.session.addHandler(activity)
        return activity

    def answerAll(self) -> None:
        for iq in self.session.iqs():
            self.session.answer(iq)

    def test_callThenRetracted(self) -> None:
        """
        Pending from the moment a call is sent (the server may hold it even
        if the answer never comes) until the empty activity is
        acknowledged.
        """
        activity = self.handler()
        self.session.connect()
        self.answerAll()
        self.assertEqual(self.told, [False])
        activity.setTelephony(S.ON_THE_PHONE)
        self.assertEqual(self.told, [False, True])
        activity.setTelephony(S.ON_HOLD)
        self.answerAll()
        activity.setTelephony(S.ONLINE)
        self.assertEqual(self.told, [False, True, True])
        [retract] = self.session.iqs()
        self.session.disconnect()  # unanswered: still pending
        self.assertEqual(self.told, [False, True, True])
        self.session.connect()
        self.answerAll()
        self.assertEqual(self.told, [False, True, True, False])

    def test_retractOnly(self) -> None:
        """
        With C{showCalls} off (only a call of before is to go), a call is
        never published; the empty activity is.
        """
        activity = self.handler(showCalls=False)
        activity.setTelephony(S.ON_THE_PHONE)
        self.session.connect()
        [iq] = self.session.iqs()
        publish = child(child(iq, "pubsub", NS_PUBSUB), "publish")  # type: ignore[arg-type]
        item = child(publish, "item")  # type: ignore[arg-type]
        assert item is not None
        activity_ = child(item, "activity", NS_ACTIVITY)
        assert activity_ is not None
        self.assertEqual(list(activity_.elements()), [])
        self.session.answer(iq)
        self.assertEqual(self.told, [False])
        activity.setTelephony(S.ON_HOLD)
        self.assertEqual(self.session.iqs(), [])


class ActivityRetractionsTests(SynchronousTestCase):
    """
    Logins just to retract: bounded, each ended by the retraction, a
    failed login or the timeout, and tried a bounded number of times.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.logins: list[str] = []
        self.busy: set[str] = set()
        self.timedOut: list[str] = []
        self.retractions = ActivityRetractions(self.clock, self.logins.append,
                                               lambda aor: aor in self.busy, concurrency=2,
                                               timeout=30, attempts=2)  # fmt: skip
        self.retractions.onTimedOut = self.timedOut.append

    def test_concurrencyBound(self) -> None:
        self.retractions.add(["a", "b", "c", "d"])
        self.assertEqual(self.logins, ["a", "b"])
        self.assertTrue(self.retractions.pending("a", False))
        self.assertEqual(self.logins, ["a", "b", "c"])
        self.retractions.ended("b")  # its login failed
        self.assertEqual(self.logins, ["a", "b", "c", "d"])
        self.assertEqual(self.retractions.stale, {"b", "c", "d"})

    def test_loggedInAnywaySkipped(self) -> None:
        """
        A user logged in anyway retracts on its own session.
        """
        self.busy.add("a")
        self.retractions.add(["a", "b"])
        self.assertEqual(self.logins, ["b"])
        self.assertFalse(self.retractions.pending("a", False))
        self.assertEqual(self.retractions.stale, {"b"})

    def test_timeoutAndAttempts(self) -> None:
        """
        A login that does not retract in time ends (the publisher logs the
        user out, which queues it again): after C{attempts} the user waits
        for the next start.
        """
        self.retractions.add(["a"])
        self.clock.advance(30)
        self.assertEqual(self.timedOut, ["a"])
        self.assertFalse(self.retractions.retracting("a"))
        self.retractions.queue("a")
        self.assertEqual(self.logins, ["a", "a"])
        self.clock.advance(30)
        self.retractions.queue("a")
        self.assertEqual(self.logins, ["a", "a"])
        self.assertEqual(self.retractions.stale, {"a"})

    def test_notStaleNotQueued(self) -> None:
        self.retractions.queue("a")
        self.assertEqual(self.logins, [])

    def test_stop(self) -> None:
        self.retractions.add(["a", "b", "c"])
        self.retractions.stop()
        self.retractions.ended("a")
        self.assertEqual(self.logins, ["a", "b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
