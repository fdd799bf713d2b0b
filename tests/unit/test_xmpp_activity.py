"""
Tests for L{sipxmpp.xmpp.activity}: XEP-0108 user activity on a stream stub.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.telephony.events import TelephonyState
from sipxmpp.xmpp.activity import NS_ACTIVITY, NS_PUBSUB, UserActivityPublisher
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
