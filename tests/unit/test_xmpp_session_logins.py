"""
Tests for the login queue, L{sipxmpp.xmpp.logins.LoginPacer}
(first come first served, a bound in flight, a rate), the timeout from
leaving the queue to logged in, and XEP-0352 C{inactive} after login.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from zope.interface import implementer

# Not imported by name: trial would run the module's tests here again.
import tests.unit.test_xmpp_session as base
from sipxmpp.xmpp.logins import LoginPacer
from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from tests.unit.test_xmpp_session import HEADER, PASSWORD, FakeEndpoint, Server

SETTINGS = SessionSettings(requireTLS=False, loginTimeout=30.0)


class LoginPacerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.served: list[int] = []
        self.releases: dict[int, Callable[[], None]] = {}

    def ask(self, pacer: LoginPacer, who: int) -> Deferred[Callable[[], None]]:
        def granted(release: Callable[[], None]) -> Callable[[], None]:
            self.served.append(who)
            self.releases[who] = release
            return release

        return pacer.acquire().addCallback(granted)

    def test_firstComeFirstServed(self) -> None:
        """
        At most C{concurrency} logins are in flight; a freed place goes to
        the login that waited longest.
        """
        pacer = LoginPacer(self.clock, 2, 0)
        for who in range(5):
            self.ask(pacer, who)
        self.assertEqual((self.served, pacer.inFlight, pacer.waiting), ([0, 1], 2, 3))
        self.releases[1]()
        self.assertEqual(self.served, [0, 1, 2])
        self.releases[0]()
        self.releases[2]()
        self.assertEqual(self.served, [0, 1, 2, 3, 4])
        self.assertEqual(pacer.waiting, 0)

    def test_releaseTwice(self) -> None:
        """
        Releasing a place twice frees it once.
        """
        pacer = LoginPacer(self.clock, 1, 0)
        for who in range(3):
            self.ask(pacer, who)
        self.releases[0]()
        self.releases[0]()
        self.assertEqual((self.served, pacer.inFlight), ([0, 1], 1))

    def test_rate(self) -> None:
        """
        Logins start at most C{rate} per second, in order, even with free
        places.
        """
        pacer = LoginPacer(self.clock, 10, 2.0)
        for who in range(4):
            self.ask(pacer, who)
        self.assertEqual(self.served, [0])
        self.clock.advance(0.5)
        self.assertEqual(self.served, [0, 1])
        self.clock.advance(0.4)
        self.assertEqual(self.served, [0, 1])
        self.clock.advance(0.1)
        self.assertEqual(self.served, [0, 1, 2])
        self.clock.advance(0.5)
        self.assertEqual(self.served, [0, 1, 2, 3])
        self.clock.advance(10)
        # After a quiet spell the next login starts at once, not in a burst
        # of the credit saved meanwhile.
        self.ask(pacer, 4)
        self.ask(pacer, 5)
        self.assertEqual(self.served, [0, 1, 2, 3, 4])

    def test_cancelWhileWaiting(self) -> None:
        """
        A cancelled wait leaves the queue; the next one gets the place.
        """
        pacer = LoginPacer(self.clock, 1, 0)
        self.ask(pacer, 0)
        waiting = self.ask(pacer, 1)
        self.ask(pacer, 2)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.releases[0]()
        self.assertEqual(self.served, [0, 2])

    def test_badConcurrency(self) -> None:
        self.assertRaises(ValueError, LoginPacer, self.clock, 0, 10)

    def test_heldServerProbedOnceASecond(self) -> None:
        """
        Once a connect to a server fails, its logins wait in order; one at
        a time probes it, one a second; when a probe gets through, the
        rest go at once.
        """
        pacer = LoginPacer(self.clock, 5, 0)
        self.ask(pacer, 0)
        for who in range(1, 5):
            self.ask(pacer, who)
        self.assertEqual(self.served, [0, 1, 2, 3, 4])
        for who in range(5, 9):
            self.ask(pacer, who)
        pacer.serverDown("", 0.0)
        self.assertTrue(pacer.held())
        for who in range(5):
            self.releases[who]()
        self.assertEqual((self.served[5:], pacer.waiting), ([], 4))
        self.clock.advance(0.9)
        self.assertEqual(self.served[5:], [])
        self.clock.advance(0.1)
        self.assertEqual(self.served[5:], [5])
        # The probe fails too: the next one, a second after it started.
        pacer.serverDown("", 1.0)
        self.releases[5]()
        self.clock.advance(0.9)
        self.assertEqual(self.served[5:], [5])
        self.clock.advance(0.1)
        self.assertEqual(self.served[5:], [5, 6])
        pacer.serverUp("")
        self.assertEqual(self.served[5:], [5, 6, 7, 8])
        self.assertFalse(pacer.held())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nextProbeAfterAFailedOne(self) -> None:
        """
        A login that comes back (after its backoff) before the next probe
        is due, with nobody else waiting, still probes when it is due.
        """
        pacer = LoginPacer(self.clock, 10, 0)
        self.ask(pacer, 0)
        pacer.serverDown("", 0.0)
        self.releases[0]()
        self.clock.advance(1.5)
        self.ask(pacer, 1)
        self.assertEqual(self.served, [0, 1])
        pacer.serverDown("", 1.5)
        self.releases[1]()
        self.clock.advance(0.2)
        self.ask(pacer, 2)
        self.assertEqual(self.served, [0, 1])
        self.clock.advance(0.8)
        self.assertEqual(self.served, [0, 1, 2])

    def test_probeStillOutNoSecondProbe(self) -> None:
        """
        A probe still connecting (a slow server) is not joined by another.
        """
        pacer = LoginPacer(self.clock, 10, 0)
        self.ask(pacer, 0)
        pacer.serverDown("", 0.0)
        self.releases[0]()
        for who in range(1, 4):
            self.ask(pacer, who)
        self.clock.advance(1.0)
        self.clock.advance(5.0)
        self.assertEqual(self.served, [0, 1])
        self.releases[1]()
        self.assertEqual(self.served, [0, 1, 2])

    def test_otherServersNotHeld(self) -> None:
        """
        Logins to another server go on while one server is held.
        """
        pacer = LoginPacer(self.clock, 10, 0)
        pacer.acquire("down.test").addCallback(lambda release: None)
        pacer.serverDown("down.test", 0.0)
        waiting = pacer.acquire("down.test")
        served = []
        pacer.acquire("up.test").addCallback(served.append)
        self.assertEqual(len(served), 1)
        self.assertNoResult(waiting)
        self.clock.advance(1.0)
        self.successResultOf(waiting)

    def test_olderFailureAfterSuccessIgnored(self) -> None:
        """
        A connect that started before the server was found up and fails
        after it does not hold the server again.
        """
        pacer = LoginPacer(self.clock, 10, 0)
        self.clock.advance(5)
        pacer.serverUp("")
        pacer.serverDown("", 4.0)
        self.assertFalse(pacer.held())
        pacer.serverDown("", 5.0)
        self.assertTrue(pacer.held())

    def test_cancelWhileHeld(self) -> None:
        pacer = LoginPacer(self.clock, 10, 0)
        pacer.serverDown("", 0.0)
        waiting = self.ask(pacer, 0)
        self.ask(pacer, 1)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.clock.advance(1.0)
        self.assertEqual((self.served, pacer.waiting), ([1], 0))


@implementer(IStreamClientEndpoint)
class StalledEndpoint:
    """
    A TCP connect that never completes (a full accept queue).
    """

    def __init__(self) -> None:
        self.attempts: list[Deferred[IProtocol]] = []
        self.cancelled = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def cancel(d: Deferred[IProtocol]) -> None:
            self.cancelled += 1

        d: Deferred[IProtocol] = Deferred(cancel)
        self.attempts.append(d)
        return d


@implementer(IStreamClientEndpoint)
class RestartingServerEndpoint(FakeEndpoint):
    """
    A server that refuses connections until C{up} is set.
    """

    def __init__(self) -> None:
        super().__init__()
        self.up = False
        self.refused = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        if not self.up:
            self.refused += 1
            return fail(ConnectionRefusedError())
        return super().connect(factory)


class SessionQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.helper = base.SessionTests("test_login")
        self.clock = self.helper.clock = Clock()
        self.helper.events = []
        self.pacer = LoginPacer(self.clock, 1, 0)

    def session(self, endpoint: Any, user: str = "alice",
                settings: SessionSettings = SETTINGS) -> XMPPSession:  # fmt: skip
        return XMPPSession(self.clock, JID(f"{user}@example.test"), PASSWORD, settings,
                           tlsOptions=object(),  # type: ignore[arg-type]
                           endpoint=endpoint, jitter=lambda: 0.5, pacer=self.pacer)  # fmt: skip

    def login(self, endpoint: FakeEndpoint, index: int = -1) -> Server:
        protocol, transport = endpoint.connections[index]
        server = Server(protocol, transport)
        server.authenticate()
        server.bind()
        return server

    def test_queuedUntilLoggedIn(self) -> None:
        """
        With one place, the second session connects only once the first
        is logged in.
        """
        first, second = FakeEndpoint(), FakeEndpoint()
        self.session(first, "alice").start()
        bob = self.session(second, "bob")
        bob.start()
        self.assertEqual((len(first.connections), len(second.connections)), (1, 0))
        self.assertEqual(bob.state, "connecting")
        self.login(first)
        self.assertEqual(len(second.connections), 1)

    def test_failedLoginFreesThePlace(self) -> None:
        first, second = FakeEndpoint(), FakeEndpoint()
        self.session(first, "alice").start()
        self.session(second, "bob").start()
        protocol, transport = first.connections[0]
        Server(protocol, transport).lose()
        self.assertEqual(len(second.connections), 1)

    def test_stalledConnectDropped(self) -> None:
        """
        A TCP connect still pending after C{loginTimeout} is cancelled, the
        place freed, a warning logged, and the login retried with backoff.
        """
        events: list[dict[str, Any]] = []
        observer: ILogObserver = events.append  # type: ignore[assignment]
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        stalled, other = StalledEndpoint(), FakeEndpoint()
        alice = self.session(stalled, "alice")
        alice.start()
        self.session(other, "bob").start()
        self.clock.advance(29.9)
        self.assertEqual((stalled.cancelled, len(other.connections)), (0, 0))
        self.clock.advance(0.1)
        self.assertEqual((stalled.cancelled, len(other.connections)), (1, 1))
        self.assertIn("not done after 30.0 s",
                      "\n".join(formatEvent(e) for e in events))  # fmt: skip
        # bob holds the place; alice retries after her backoff and waits.
        self.clock.advance(1.0)
        self.assertEqual(len(stalled.attempts), 1)
        self.login(other)
        self.assertEqual(len(stalled.attempts), 2)

    def test_stalledLoginDropped(self) -> None:
        """
        A server that accepted the connection but never finishes the login
        has the connection aborted after C{loginTimeout}.
        """
        endpoint = FakeEndpoint()
        session = self.session(endpoint)
        session.start()
        protocol, transport = endpoint.connections[0]
        Server(protocol, transport).say(HEADER)
        self.assertEqual(session.state, "authenticating")
        self.clock.advance(30)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pacer.inFlight, 0)

    def test_timedOutLoginIsNotAFailure(self) -> None:
        """
        A login dropped by the timeout (or a connection lost mid-login) is
        retried after the reconnection backoff, not marked failed for
        C{failedRetryDelay}.
        """
        endpoint = FakeEndpoint()
        session = self.session(endpoint)
        session.start()
        protocol, transport = endpoint.connections[0]
        Server(protocol, transport).say(HEADER)
        self.clock.advance(30)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(session.failure)
        self.assertTrue(session.state.startswith("reconnecting"), session.state)
        self.clock.advance(1.0)
        self.assertEqual(len(endpoint.connections), 2)

    def test_noTimeoutOnceLoggedIn(self) -> None:
        endpoint = FakeEndpoint()
        session = self.session(endpoint)
        session.start()
        server = self.login(endpoint)
        self.clock.advance(45)
        self.assertFalse(server.transport.disconnecting)
        self.assertEqual(session.state, "connected")

    def test_refusingServerProbed(self) -> None:
        """
        While the server refuses connections (restarting), the sessions
        wait in the queue instead of each failing and backing off: one
        probe a second. When it is back, all connect at once, oldest first.
        """
        self.pacer = LoginPacer(self.clock, 100, 0)
        endpoint = RestartingServerEndpoint()
        sessions = [self.session(endpoint, f"user{n}") for n in range(20)]
        for session in sessions:
            session.start()
        self.assertEqual(endpoint.refused, 1)
        self.clock.pump([0.5] * 60)
        # 30 s down: about one probe a second, not one per session per
        # backoff step.
        self.assertLessEqual(endpoint.refused, 32)
        self.assertGreaterEqual(endpoint.refused, 25)
        # The others wait in the queue (those whose probe failed are in
        # their backoff meanwhile).
        self.assertGreaterEqual(self.pacer.waiting, 17)
        endpoint.up = True
        self.clock.advance(1.0)
        # Those in the queue at once; the last prober after its backoff.
        self.assertGreaterEqual(len(endpoint.connections), 18)
        self.clock.advance(2.0)
        self.assertEqual(len(endpoint.connections), 20)
        self.assertFalse(self.pacer.held(f"{SETTINGS.server} example.test"))

    def test_stopWhileQueued(self) -> None:
        """
        A session stopped while it waits leaves the queue.
        """
        first, second, third = FakeEndpoint(), FakeEndpoint(), FakeEndpoint()
        self.session(first, "alice").start()
        bob = self.session(second, "bob")
        bob.start()
        self.session(third, "carol").start()
        self.successResultOf(bob.stop())
        self.login(first)
        self.assertEqual((len(second.connections), len(third.connections)), (0, 1))


CSI_BIND = (
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    "<csi xmlns='urn:xmpp:csi:0'/></stream:features>"
)


class ClientStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.helper = base.SessionTests("test_login")
        self.helper.clock = Clock()
        self.helper.events = []

    def sentAfterLogin(self, settings: SessionSettings, offered: bool) -> str:
        session, endpoint = self.helper.session(settings=settings)
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        if offered:
            self.patch(base, "BIND", CSI_BIND)
        server.authenticate()
        server.bind()
        self.assertEqual(session.state, "connected")
        return server.heard()

    def test_inactiveWhenOffered(self) -> None:
        sent = self.sentAfterLogin(SessionSettings(requireTLS=False, clientStateInactive=True),
                                   offered=True)  # fmt: skip
        self.assertIn("<inactive xmlns='urn:xmpp:csi:0'/>", sent)

    def test_notWhenNotOffered(self) -> None:
        sent = self.sentAfterLogin(SessionSettings(requireTLS=False, clientStateInactive=True),
                                   offered=False)  # fmt: skip
        self.assertNotIn("csi", sent)

    def test_notByDefault(self) -> None:
        sent = self.sentAfterLogin(SessionSettings(requireTLS=False), offered=True)
        self.assertNotIn("csi", sent)
