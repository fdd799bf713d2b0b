"""
Tests for L{sipxmpp.ops.xmppreport}: the C{sipxmpp_xmpp_*} metrics and the
users' last events, fed by the publisher's and the session's hooks.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.sasl import SASLAuthError

from sipxmpp.ops.metrics import Metrics
from sipxmpp.ops.xmppreport import XMPPReport, countSessions
from sipxmpp.xmpp.callpresence import RESOURCE_SETTLE
from sipxmpp.xmpp.publisher import Publisher
from sipxmpp.xmpp.remote import NODE_SET_STATUS
from sipxmpp.xmpp.session import IXMPPReport, NullReport, SessionSettings, XMPPSession
from tests.unit.test_xmpp_publisher import AOR, PSI, PublisherTestsMixin, S
from tests.unit.xmppstreams import FakeSession, commandAnswer, itemsAnswer, presenceXML, rcForm

LATENCY = "sipxmpp_xmpp_presence_latency_seconds"


class ReportingPublisherTests(PublisherTestsMixin, SynchronousTestCase):
    """
    The publisher tells the report what it does.
    """

    def setUp(self) -> None:
        super().setUp()
        self.metrics = Metrics()
        self.report = XMPPReport(self.clock, self.metrics, lambda: self.publisher.sessionStates())
        self.publisher.stopService()
        self.publisher = Publisher(self.clock, self.settings, self.accounts, self.makeSession,
                                   report=self.report)  # fmt: skip
        self.publisher.startService()

    def runCommand(self, session: FakeSession, form: str | None = None) -> None:
        [execute] = session.iqs()
        session.answer(execute, commandAnswer(NODE_SET_STATUS, "executing", None, form or rcForm()))
        [submit] = session.iqs()
        session.answer(submit, commandAnswer(NODE_SET_STATUS, "completed", None))

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, **labels)

    def test_provides(self) -> None:
        self.assertTrue(IXMPPReport.providedBy(self.report))
        self.assertTrue(IXMPPReport.providedBy(NullReport()))

    def test_shownOnClientAndRestored(self) -> None:
        """
        A call shown on Psi: a set-status sent and answered, then a restore
        sent and answered; presence latency measured from each telephony
        change to the client's answer.
        """
        session = self.login()
        session.receive(presenceXML(PSI, status="working", priority=5, caps="psi-ver"))
        [disco] = session.iqs()
        session.answer(disco, itemsAnswer(PSI, [NODE_SET_STATUS]))
        session.answerDiscoInfos()
        self.change(S.ON_THE_PHONE)
        self.clock.advance(0.2)
        self.runCommand(session)
        session.receive(presenceXML(PSI, "dnd", self.settings.statusText, 5, "psi-ver"))
        self.change(S.ONLINE)
        self.clock.advance(0.3)
        self.runCommand(session, rcForm("dnd", "5", self.settings.statusText))
        self.assertEqual(self.counter("sipxmpp_xmpp_commands_sent_total", command="set-status"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_commands_sent_total", command="restore"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_command_results_total",
                                      command="set-status", result="answered"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_command_results_total",
                                      command="restore", result="answered"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_restores_total"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_fallbacks_total"), 0)
        self.assertEqual(self.metrics.histogramCount(LATENCY, via="client"), 2)
        text = self.metrics.render()
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_bucket{via="client",le="0.1"} 0',
                      text)
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_bucket{via="client",le="0.25"} 1',
                      text)
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_bucket{via="client",le="0.5"} 2',
                      text)
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_sum{via="client"} 0.5', text)
        texts = [e.text for e in self.report.events(AOR)]
        self.assertIn("telephony on-the-phone", texts)
        self.assertIn(f"status of {PSI} restored", texts)

    def test_fallbackWhenRefused(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        [execute] = session.iqs()
        session.answer(
            execute,
            "<error type='cancel'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            kind="error",
        )
        self.assertEqual(self.counter("sipxmpp_xmpp_command_results_total",
                                      command="set-status", result="refused"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_fallbacks_total"), 1)
        self.assertEqual(self.metrics.histogramCount(LATENCY, via="own-resource"), 1)
        self.assertIn("call shown on the gateway's own resource (fallback)",
                      [e.text for e in self.report.events(AOR)])

    def test_fallbackOnTimeout(self) -> None:
        session = self.login()
        self.psiOnline(session)
        self.change(S.ON_THE_PHONE)
        session.iqs()
        self.clock.advance(11)
        self.assertEqual(self.counter("sipxmpp_xmpp_command_results_total",
                                      command="set-status", result="timeout"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_fallbacks_total"), 1)
        # From the change to the presence on the own resource: the timeout.
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_bucket{via="own-resource",le="10"} 0',
                      self.metrics.render())
        self.assertEqual(self.metrics.histogramCount(LATENCY, via="own-resource"), 1)

    def test_latencyIncludesLogin(self) -> None:
        """
        A call while the session is not up yet: the latency runs until the
        presence goes out after login.
        """
        self.change(S.ON_THE_PHONE)
        [session] = self.sessions
        self.clock.advance(2)
        session.connect()
        self.clock.advance(RESOURCE_SETTLE)
        self.assertEqual(self.metrics.histogramCount(LATENCY, via="own-resource"), 1)
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_bucket{via="own-resource",le="1"} 0',
                      self.metrics.render())

    def test_noLatencyWithoutPresenceToSend(self) -> None:
        """
        Online to offline and back changes no presence: nothing measured,
        and the next call is measured from its own change.
        """
        session = self.login()
        self.change(S.OFFLINE)
        self.clock.advance(100)
        self.change(S.ONLINE)
        self.assertEqual(self.metrics.histogramCount(LATENCY, via="own-resource"), 0)
        self.change(S.ON_THE_PHONE)
        session.presences()
        self.assertIn('sipxmpp_xmpp_presence_latency_seconds_bucket{via="own-resource",le="0.01"} 1',
                      self.metrics.render())

    def test_sessionStates(self) -> None:
        """
        The session's state changes reach the report with the failure's
        kind; C{sipxmpp_xmpp_sessions} counts the sessions by state.
        """
        self.change(S.ONLINE)
        [session] = self.sessions
        session.failureReason = "authentication"  # type: ignore[attr-defined]
        session.onStateChanged("failed: authentication: not-authorized")
        session.state = "failed: authentication: not-authorized"
        self.assertEqual(self.counter("sipxmpp_xmpp_login_failures_total",
                                      reason="authentication"), 1)
        self.assertIn('sipxmpp_xmpp_sessions{state="failed"} 1', self.metrics.render())
        self.assertIn('sipxmpp_xmpp_sessions{state="connected"} 0', self.metrics.render())
        session.onStateChanged("connected")
        session.onStateChanged("reconnecting: Connection lost")
        self.assertEqual(self.counter("sipxmpp_xmpp_logins_total"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_disconnects_total"), 1)
        self.assertEqual([e.text for e in self.report.events(AOR)][-1],
                         "XMPP session reconnecting: Connection lost")
        # XEP-0198: a resumed stream is no login; one that could not be
        # resumed, one disconnect.
        session.onStateChanged("connected")
        session.onStateChanged("resuming: Connection lost")
        session.state = "resuming: Connection lost"
        self.assertIn('sipxmpp_xmpp_sessions{state="resuming"} 1', self.metrics.render())
        session.onStateChanged("connected")
        self.assertEqual(self.counter("sipxmpp_xmpp_logins_total"), 2)
        self.assertEqual(self.counter("sipxmpp_xmpp_resumptions_total"), 1)
        self.assertEqual(self.counter("sipxmpp_xmpp_disconnects_total"), 2)
        session.onStateChanged("resuming: Connection lost")
        session.onStateChanged("reconnecting: the stream was not resumed in time")
        self.assertEqual(self.counter("sipxmpp_xmpp_disconnects_total"), 3)


class ReportTests(SynchronousTestCase):
    def test_eventsBounded(self) -> None:
        clock = Clock()
        report = XMPPReport(clock, Metrics())
        for n in range(20):
            clock.advance(1)
            report.telephonyChanged(AOR, f"s{n}")
        events = report.events(AOR)
        self.assertEqual(len(events), 10)
        self.assertEqual((events[0].time, events[0].text), (11, "telephony s10"))
        self.assertEqual(report.events("sip:other@example.test"), [])

    def test_countSessions(self) -> None:
        self.assertEqual(
            countSessions({"a": "connected", "b": "failed: TLS: x", "c": "reconnecting: y"}),
            {"stopped": 0, "connecting": 0, "authenticating": 0, "connected": 1,
             "resuming": 0, "reconnecting": 1, "failed": 1},
        )

    def test_zeroSeriesShown(self) -> None:
        """
        The counters and histogram series are there before anything
        happened, so that dashboards and rate() see them.
        """
        text = Metrics()
        XMPPReport(Clock(), text)
        rendered = text.render()
        for line in ("sipxmpp_xmpp_logins_total 0", "sipxmpp_xmpp_fallbacks_total 0",
                     "sipxmpp_xmpp_restores_total 0",
                     'sipxmpp_xmpp_presence_latency_seconds_count{via="client"} 0'):
            self.assertIn(line, rendered)


class SessionFailureReasonTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        """
        A failed login records its kind beside its text, and a successful
        one clears it.
        """
        session = XMPPSession(MemoryReactorClock(), JID("alice@example.test"), "pw",
                              SessionSettings(), tlsOptions=object())  # type: ignore[arg-type]
        seen: list[str] = []
        session.onStateChanged = seen.append
        session._initFailed(Failure(SASLAuthError("not-authorized")))
        self.assertEqual(session.failureReason, "authentication")
        self.assertTrue(seen[-1].startswith("failed: authentication"), seen)
        session._initFailed(Failure(RuntimeError("boom")))
        self.assertEqual(session.failureReason, "other")
