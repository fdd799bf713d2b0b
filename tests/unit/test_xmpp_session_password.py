"""
Tests for L{XMPPSession.updatePassword}: a password replaced by the
administrator is used by the next login, at once by a failed session.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

# Not imported by name: trial would run the module's tests here again.
import tests.unit.test_xmpp_session as base
from tests.unit.test_xmpp_session import HEADER, MECHANISMS, PASSWORD, Server


class UpdatePasswordTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.helper = base.SessionTests("test_login")
        self.clock = self.helper.clock = Clock()
        self.helper.events = []

    def test_failedSessionRetriesAtOnce(self) -> None:
        session, endpoint = self.helper.session(password="wrong")
        session.start()
        [(protocol, transport)] = endpoint.connections
        server = Server(protocol, transport)
        server.say(HEADER + MECHANISMS)
        server.heard()
        server.say("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>")
        server.lose()
        self.assertTrue(session.state.startswith("failed:"))
        session.updatePassword(PASSWORD)
        self.assertEqual(len(endpoint.connections), 2)
        self.assertEqual(session.state, "authenticating")
        # The failed attempt's retry is gone; only the new attempt's login
        # timeout is pending.
        self.assertEqual([c.func.__name__ for c in self.clock.getDelayedCalls()],
                         ["_loginTimedOut"])
        protocol, transport = endpoint.connections[1]
        again = Server(protocol, transport)
        again.authenticate()
        again.bind()
        self.assertEqual(session.state, "connected")
        self.assertIsNone(session.failure)

    def test_connectedSessionKeepsItsStream(self) -> None:
        session, server = self.helper.connected()
        session.updatePassword("next")
        self.assertEqual(session.state, "connected")
        self.assertTrue(session.ready)
        self.assertEqual(session.factory.authenticator.password, "next")

    def test_stoppedSessionStaysStopped(self) -> None:
        session, endpoint = self.helper.session(password="wrong")
        session.updatePassword(PASSWORD)
        self.assertEqual((session.state, endpoint.connections), ("stopped", []))
