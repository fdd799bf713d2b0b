"""
Tests for L{sipxmpp.xmpp.session}: login, failure handling, backoff,
keepalive and logout, with a fake endpoint, a StringTransport and a Clock.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import scramp  # type: ignore[import-untyped]
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from zope.interface import implementer

from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from sipxmpp.xmpp.tls import describeCertificateFailure

PASSWORD = "Tr0ub4dor&3-very-secret"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='s1' version='1.0'>"
)
MECHANISMS = (
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
)
BIND = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return defer.succeed(protocol)


class Server:
    """
    The server side of one connection, scripted.
    """

    def __init__(self, protocol: Any, transport: StringTransport, password: str = PASSWORD) -> None:
        self.protocol = protocol
        self.transport = transport
        mechanism = scramp.ScramMechanism("SCRAM-SHA-1")
        info = mechanism.make_auth_info(password, iteration_count=4096)
        self.scram = mechanism.make_server(lambda username: info)

    def say(self, xml: str) -> None:
        self.protocol.dataReceived(xml.encode())

    def heard(self) -> str:
        data = self.transport.value().decode()
        self.transport.clear()
        return data

    def payload(self) -> str:
        text = re.findall(r">([A-Za-z0-9+/=]+)</", self.heard())[-1]
        return base64.b64decode(text).decode()

    def sasl(self, name: str, data: str) -> None:
        encoded = base64.b64encode(data.encode()).decode()
        self.say(f"<{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{encoded}</{name}>")

    def authenticate(self) -> None:
        """
        Run SCRAM-SHA-1; raise if the client's proof is wrong.
        """
        self.say(HEADER + MECHANISMS)
        self.scram.set_client_first(self.payload())
        self.sasl("challenge", self.scram.get_server_first())
        self.scram.set_client_final(self.payload())
        self.sasl("success", self.scram.get_server_final())

    def bind(self) -> None:
        self.heard()
        self.say(HEADER + BIND)
        ident = re.search(r"<iq [^>]*id=['\"]([^'\"]+)", self.heard())
        assert ident is not None
        self.say(
            f"<iq type='result' id='{ident.group(1)}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<jid>alice@example.test/sipxmpp</jid></bind></iq>"
        )

    def lose(self, reason: Failure | None = None) -> None:
        self.protocol.connectionLost(reason or Failure(ConnectionDone()))


class SessionTests(SynchronousTestCase):
    settings = SessionSettings(requireTLS=False, failedRetryDelay=600, reconnectMaxDelay=60,
                               pingInterval=60, pingTimeout=20)  # fmt: skip

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        observer: ILogObserver = self.events.append  # type: ignore[assignment]
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def session(self, user: str = "alice", password: str = PASSWORD,
                settings: SessionSettings | None = None) -> tuple[XMPPSession, FakeEndpoint]:  # fmt: skip
        endpoint = FakeEndpoint()
        session = XMPPSession(
            self.clock, JID(f"{user}@example.test"), password, settings or self.settings,
            tlsOptions=object(),  # type: ignore[arg-type]
            endpoint=endpoint, jitter=lambda: 0.5,
        )  # fmt: skip
        return session, endpoint

    def connected(self, password: str = PASSWORD) -> tuple[XMPPSession, Server]:
        session, endpoint = self.session(password=password)
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.authenticate()
        server.bind()
        return session, server

    def logText(self) -> str:
        texts = []
        for event in self.events:
            texts.append(formatEvent(event))
            if "log_failure" in event:
                texts.append(event["log_failure"].getTraceback())
            texts.append(repr(event))
        return "\n".join(texts)

    def test_login(self) -> None:
        session, server = self.connected()
        self.assertTrue(session.ready)
        self.assertEqual(session.state, "connected")
        self.assertEqual(session.jid.full(), "alice@example.test/sipxmpp")

    def test_keysDerivedWhereSaid(self) -> None:
        """
        A session given C{deriveKeys} has its SCRAM keys derived there (the
        gateway's own thread) and logs in once that is done; its factory
        logs no line of its own per connection.
        """
        runs: list[Deferred[None]] = []

        def deriveKeys(function: Any) -> Deferred[None]:
            function()
            d: Deferred[None] = Deferred()
            runs.append(d)
            return d

        endpoint = FakeEndpoint()
        session = XMPPSession(
            self.clock, JID("carol@example.test"), PASSWORD, self.settings,
            tlsOptions=object(),  # type: ignore[arg-type]
            endpoint=endpoint, jitter=lambda: 0.5, deriveKeys=deriveKeys,
        )  # fmt: skip
        self.assertFalse(session.factory.noisy)
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.say(HEADER + MECHANISMS)
        server.scram.set_client_first(server.payload())
        server.sasl("challenge", server.scram.get_server_first())
        [done] = runs
        self.assertEqual(server.heard(), "")
        done.callback(None)
        server.scram.set_client_final(server.payload())
        server.sasl("success", server.scram.get_server_final())
        server.bind()
        self.assertEqual(session.state, "connected")

    def test_wrongPassword(self) -> None:
        """
        A refused login marks the session failed with the reason, logs it
        without the secret, and retries only after failedRetryDelay.
        """
        session, endpoint = self.session(password="wrong-" + PASSWORD)
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.say(HEADER + MECHANISMS)
        server.heard()
        server.say(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
            "<text>bad credentials</text></failure>"
        )
        self.assertFalse(session.ready)
        self.assertEqual(
            session.state,
            "failed: authentication: the server refused SCRAM-SHA-1: not-authorized (bad credentials)",
        )
        self.assertIn("</stream:stream>", server.heard())
        self.assertTrue(transport.disconnecting)
        server.lose()
        self.assertTrue(session.state.startswith("failed: authentication"))
        [retry] = self.clock.getDelayedCalls()
        self.assertEqual(retry.getTime(), 450.0)  # 600 with equal jitter at 0.5
        text = self.logText()
        self.assertIn("not-authorized", text)
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn(base64.b64encode(PASSWORD.encode()).decode(), text)
        # The retry connects again; a good login clears the failure.
        self.clock.advance(450)
        self.assertEqual(len(endpoint.connections), 2)

    def test_failureDoesNotTouchOthers(self) -> None:
        """
        One user's refused login leaves another user's session working.
        """
        bad, badEndpoint = self.session("mallory", "wrong")
        bad.start()
        good, goodServer = self.connected()
        [(protocol, transport)] = badEndpoint.connections
        badServer = Server(protocol, transport)
        badServer.say(HEADER + MECHANISMS)
        badServer.say("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>")
        badServer.lose()
        self.assertTrue(bad.state.startswith("failed:"))
        self.assertEqual(good.state, "connected")
        self.assertTrue(good.ready)

    def test_plainRefusedWithoutTLS(self) -> None:
        session, endpoint = self.session()
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.heard()
        server.say(
            HEADER + "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            "<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
        )
        self.assertIn("failed: authentication: the server offers PLAIN", session.state)
        self.assertNotIn("PLAIN", "".join(re.findall(r"mechanism=.(\w+)", server.heard())))

    def test_tlsRequired(self) -> None:
        session, endpoint = self.session(settings=SessionSettings(requireTLS=True))
        session.start()
        [(protocol, transport)] = endpoint.connections
        Server(protocol, transport).say(HEADER + MECHANISMS)
        self.assertTrue(session.state.startswith("failed: TLS"), session.state)

    def test_certificateRefused(self) -> None:
        """
        A connection lost because the certificate was refused fails loudly
        instead of reconnecting at once.
        """
        session, endpoint = self.session()
        session.start()
        [(protocol, transport)] = endpoint.connections
        reason = Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))
        Server(protocol, transport).lose(reason)
        self.assertEqual(session.state, "failed: certificate refused: certificate verify failed")
        [retry] = self.clock.getDelayedCalls()
        self.assertEqual(retry.getTime(), 450.0)
        self.assertIn("certificate verify failed", self.logText())

    def test_describeCertificateFailure(self) -> None:
        mismatch = describeCertificateFailure(Failure(VerificationError(errors=["wrong name"])))
        self.assertIsNotNone(mismatch)
        assert mismatch is not None
        self.assertTrue(mismatch.startswith("certificate does not match"))
        self.assertIsNone(describeCertificateFailure(Failure(ConnectionDone())))

    def test_backoff(self) -> None:
        """
        Reconnection delays grow exponentially up to the cap, with jitter.
        """
        session, _ = self.session()
        delays = [session._retryDelay(n) for n in range(1, 10)]
        self.assertEqual(delays, [0.75, 1.5, 3.0, 6.0, 12.0, 24.0, 45.0, 45.0, 45.0])
        session._jitter = lambda: 0.0
        self.assertEqual(session._retryDelay(1), 30.0)

    def test_backoffResetsOnLogin(self) -> None:
        session, endpoint = self.session()
        for n in range(5):
            session._retryDelay(n)
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.authenticate()
        server.bind()
        server.lose()
        [retry] = self.clock.getDelayedCalls()
        self.assertEqual(retry.getTime(), 0.75)
        self.assertTrue(session.state.startswith("reconnecting"), session.state)

    def test_keepAliveDeadLink(self) -> None:
        session, server = self.connected()
        server.heard()
        self.clock.advance(60)
        self.assertIn("urn:xmpp:ping", server.heard())
        self.clock.advance(19)
        self.assertFalse(server.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(server.transport.disconnecting)

    def test_keepAliveAnswered(self) -> None:
        session, server = self.connected()
        server.heard()
        self.clock.advance(60)
        ident = re.search(r"id=['\"]([^'\"]+)", server.heard())
        assert ident is not None
        server.say(f"<iq type='result' id='{ident.group(1)}' from='example.test'/>")
        self.clock.advance(30)
        self.assertFalse(server.transport.disconnecting)

    def test_lostStreamLetGo(self) -> None:
        """
        Once the link is lost, no handler keeps the old stream (and with it
        its TLS connection) until the next one comes: across an XMPP server
        restart that doubled the sessions' memory.
        """
        session, server = self.connected()
        handlers = list(session.streamManager)
        self.assertIn(session.keepAlive, handlers)
        self.assertIsNotNone(session.keepAlive.xmlstream)
        server.lose()
        self.assertEqual([h for h in handlers if h.xmlstream is not None], [])

    def test_gracefulStop(self) -> None:
        session, server = self.connected()
        server.heard()
        d = session.stop()
        sent = server.heard()
        self.assertIn("unavailable", sent)
        self.assertIn("</stream:stream>", sent)
        server.lose()
        self.successResultOf(d)
        self.assertEqual(session.state, "stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sendRequestNotReady(self) -> None:
        from twisted.words.xish import domish

        from sipxmpp.xmpp.session import NotConnected

        session, _ = self.session()
        self.failureResultOf(session.sendRequest(domish.Element((None, "iq"))), NotConnected)
        self.assertFalse(session.send(domish.Element((None, "presence"))))
